//! Daemon processes: started in a process group of their own with their output in a log
//! file and their pid in a pid file; found again, signalled and waited for by pid.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use rustix::process::{Pid, Signal};

/// Starts `binary` with `args`, appending its output to `log` and writing its pid to
/// `pid_file`. The process leads a process group of its own, so a Ctrl-C meant for `rkube`
/// does not reach it.
pub fn spawn(
    binary: &Path,
    args: &[OsString],
    log: &Path,
    pid_file: &Path,
) -> anyhow::Result<tokio::process::Child> {
    for dir in [log.parent(), pid_file.parent()].into_iter().flatten() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let child = tokio::process::Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id().context("the started process has no pid")?;
    std::fs::write(pid_file, format!("{pid}\n"))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    Ok(child)
}

/// The pid in `pid_file`, if that process still runs `binary_name` (a pid file can outlive
/// its process, and the pid be reused).
pub fn running(pid_file: &Path, binary_name: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    runs(pid, binary_name).then_some(pid)
}

/// Whether process `pid` is alive (not a zombie) and runs a binary called `binary_name`.
pub fn runs(pid: u32, binary_name: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let name = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
    if name != binary_name.as_bytes() {
        return false;
    }
    // A zombie keeps its cmdline until reaped (empty on Linux, but check the state too).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: u32, signal: Signal) -> anyhow::Result<()> {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        anyhow::bail!("{pid} is not a pid");
    };
    match rustix::process::kill_process(p, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("signalling pid {pid}")),
    }
}

/// Stops `pid` (running `binary_name`): SIGTERM, then SIGKILL if it still runs after
/// `grace`. Returns whether it had to be killed.
pub async fn stop(pid: u32, binary_name: &str, grace: Duration) -> anyhow::Result<bool> {
    signal(pid, Signal::TERM)?;
    if wait_gone(pid, binary_name, grace).await {
        return Ok(false);
    }
    signal(pid, Signal::KILL)?;
    if wait_gone(pid, binary_name, Duration::from_secs(10)).await {
        Ok(true)
    } else {
        anyhow::bail!("{binary_name} (pid {pid}) still runs after SIGKILL")
    }
}

/// Waits up to `deadline` for `pid` to stop running `binary_name`.
async fn wait_gone(pid: u32, binary_name: &str, deadline: Duration) -> bool {
    let start = Instant::now();
    loop {
        if !runs(pid, binary_name) {
            return true;
        }
        if start.elapsed() >= deadline {
            return false;
        }
        // No notification exists for another process's exit (it is not our child once
        // `rkube up` has returned): poll /proc.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `n` lines of `log`, for an error message.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spawned_process_is_found_by_its_pid_file_and_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/sleep.log");
        let pid_file = dir.path().join("run/sleep.pid");
        let mut child = spawn(Path::new("sleep"), &["600".into()], &log, &pid_file).unwrap();
        // Until it has exec'd, the child's cmdline is still this test's.
        let start = Instant::now();
        let pid = loop {
            if let Some(pid) = running(&pid_file, "sleep") {
                break pid;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "sleep never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(Some(pid), child.id());
        // The name must match: a reused pid running something else is not ours.
        assert_eq!(running(&pid_file, "rkube-apiserver"), None);
        let reaper = tokio::spawn(async move { child.wait().await });
        let killed = stop(pid, "sleep", Duration::from_secs(5)).await.unwrap();
        assert!(!killed, "sleep stops on SIGTERM");
        assert!(!reaper.await.unwrap().unwrap().success());
        assert_eq!(running(&pid_file, "sleep"), None);
    }

    #[tokio::test]
    async fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn(
            Path::new("sh"),
            &[
                "-c".into(),
                "trap '' TERM; echo trapped; while :; do sleep 1; done".into(),
            ],
            &dir.path().join("sh.log"),
            &dir.path().join("sh.pid"),
        )
        .unwrap();
        let pid = child.id().unwrap();
        // The trap is set once it printed.
        let log = dir.path().join("sh.log");
        let start = Instant::now();
        while !tail(&log, 1).contains("trapped") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sh never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reaper = tokio::spawn(async move { child.wait().await });
        let killed = stop(pid, "sh", Duration::from_millis(300)).await.unwrap();
        assert!(killed);
        reaper.await.unwrap().unwrap();
        signal(pid, Signal::TERM).expect("a gone process is not an error");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&log, 2), "b\nc");
        assert_eq!(tail(&dir.path().join("missing"), 2), "");
    }
}
