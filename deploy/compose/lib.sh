# Shared by scripts/compose-up.sh, scripts/compose-down.sh and scripts/e2e-compose (sourced
# from the repository root): the compose command, the paths, and small waiting helpers.
# shellcheck shell=bash

KUBECTL="${KUBECTL:-/usr/bin/kubectl}"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
COMPOSE_WORK="$TARGET/compose"
HOST_KUBECONFIG="$COMPOSE_WORK/kubeconfig"
COMPOSE_FILE_PATH="$PWD/deploy/compose/docker-compose.yml"
# The label of the images compose-up.sh builds (to prune the ones they replace).
export IMAGE_LABEL="org.rkube.compose=1"
: "${RKUBE_COMPOSE_PORT:=6443}"
: "${RKUBE_COMPOSE_TAG:=dev}"
: "${RKUBE_COMPOSE_PROJECT:=rkube}"
export RKUBE_COMPOSE_PORT RKUBE_COMPOSE_TAG
mkdir -p "$COMPOSE_WORK"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
note() { echo "$(basename "$0"): $*" >&2; }

# timing LABEL START_SECONDS: one line "time: LABEL: N s" on stderr.
timing() { echo "$(basename "$0"): time: $1: $((SECONDS - $2)) s" >&2; }

# compose ARGS...: docker-compose (v1) or `docker compose` (v2) on rkube's compose file.
compose() {
    if command -v docker-compose >/dev/null 2>&1; then
        docker-compose -p "$RKUBE_COMPOSE_PROJECT" -f "$COMPOSE_FILE_PATH" "$@"
    elif docker compose version >/dev/null 2>&1; then
        docker compose -p "$RKUBE_COMPOSE_PROJECT" -f "$COMPOSE_FILE_PATH" "$@"
    else
        die "neither docker-compose nor the docker compose plugin is installed"
    fi
}

# k ARGS...: the host's kubectl on the compose cluster.
k() { "$KUBECTL" --kubeconfig "$HOST_KUBECONFIG" --request-timeout=10s "$@"; }

# wait_for WHAT SECONDS COMMAND...: runs COMMAND every 0.5 s until it succeeds; fails
# naming WHAT and COMMAND's last output when SECONDS pass first.
wait_for() {
    local what="$1" limit="$2" deadline out
    shift 2
    deadline=$((SECONDS + limit))
    until out="$("$@" 2>&1)"; do
        if ((SECONDS >= deadline)); then
            note "gave up waiting for $what after $limit s; last seen:"
            printf '%s\n' "$out" | sed 's/^/    | /' >&2
            return 1
        fi
        sleep 0.5
    done
}

# write_host_kubeconfig SECONDS: copies the admin kubeconfig out of the apiserver container
# once it is there, naming 127.0.0.1:$RKUBE_COMPOSE_PORT (the published port).
write_host_kubeconfig() {
    local tmp="$HOST_KUBECONFIG.tmp"
    wait_for "the apiserver's kubeconfig" "$1" \
        docker exec rkube-apiserver grep -q client-key-data /var/lib/rkube/apiserver/kubeconfig
    docker exec rkube-apiserver cat /var/lib/rkube/apiserver/kubeconfig |
        sed -E "s#^( *server: ).*#\\1https://127.0.0.1:$RKUBE_COMPOSE_PORT#" >"$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$HOST_KUBECONFIG"
}

apiserver_ready() { k get --raw /readyz; }

# nodes_ready N [SINCE]: whether exactly N nodes are registered and all Ready, and (with
# SINCE, seconds since the epoch) each node's kubelet renewed its Lease since then, so a
# Ready left over from before a restart does not count.
nodes_ready() {
    local want="$1" since="${2:-}" lines ready name renew
    lines="$(k get nodes --no-headers 2>&1)" || { echo "$lines"; return 1; }
    ready="$(awk '$2 == "Ready"' <<<"$lines" | wc -l)"
    echo "$lines"
    [[ "$(wc -l <<<"$lines")" -eq "$want" && "$ready" -eq "$want" ]] || return 1
    [[ -n "$since" ]] || return 0
    while read -r name renew; do
        [[ "$renew" != "<none>" && "$(date -d "$renew" +%s)" -ge "$since" ]] || {
            echo "the Lease of $name was last renewed at $renew"
            return 1
        }
    done < <(k get leases -n kube-node-lease --no-headers -o custom-columns=N:.metadata.name,R:.spec.renewTime)
}
