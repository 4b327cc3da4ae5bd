/*
 * pause: the infrastructure process of an rkube pod sandbox.
 *
 * It holds the sandbox's namespaces open and does nothing else: as PID 1 of the pod it
 * reaps any zombie children handed to it (SIGCHLD), exits 0 on SIGINT or SIGTERM, and
 * otherwise sleeps in pause() forever.
 *
 * Build: gcc -static -Os -o pause pause.c   (scripts/build-images does this)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    int saved = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static void handle(int sig, void (*fn)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = (sig == SIGCHLD) ? SA_NOCLDSTOP | SA_RESTART : SA_RESTART;
    if (sigaction(sig, &sa, NULL) < 0) {
        perror("pause: sigaction");
        _exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("pause (rkube) 1.0");
        return 0;
    }
    if (getpid() != 1) {
        fputs("pause: warning: not running as pid 1\n", stderr);
    }
    handle(SIGINT, on_stop);
    handle(SIGTERM, on_stop);
    handle(SIGCHLD, on_child);
    for (;;) {
        pause();
    }
}
