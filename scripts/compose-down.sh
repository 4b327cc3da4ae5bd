#!/usr/bin/env bash
# Stops the docker-compose cluster that scripts/compose-up.sh started: removes its
# containers and network. Run as root.
#   scripts/compose-down.sh             keep the volumes (the apiserver's store and each
#                                       node's containerd), so the next compose-up resumes
#   scripts/compose-down.sh --volumes   remove them too: the next compose-up starts afresh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/compose/lib.sh
source deploy/compose/lib.sh

args=(down --remove-orphans --timeout 20)
case "${1:-}" in
    "") ;;
    -v | --volumes) args+=(--volumes) ;;
    *) die "usage: $0 [--volumes]" ;;
esac
[[ "$(id -u)" -eq 0 ]] || die "must run as root: sudo $0 $*"

start=$SECONDS
compose "${args[@]}" >"$COMPOSE_WORK/down.log" 2>&1 || {
    cat "$COMPOSE_WORK/down.log" >&2
    die "docker-compose down failed"
}
rm -f "$HOST_KUBECONFIG"
timing "compose-down" "$start"
