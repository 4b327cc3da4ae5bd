#!/usr/bin/env bash
# Builds rkube's images from this checkout and starts the docker-compose cluster of
# deploy/compose (apiserver, scheduler, controller-manager, cluster DNS, three nodes with
# the kubelet and rkube-proxy), then waits until the apiserver answers and every node is
# Ready. Run as root.
#   scripts/compose-up.sh            build (cargo, images) and start
#   scripts/compose-up.sh --no-build start the images built last time
# No image is pulled: the Debian base image is made with debootstrap when Docker lacks it
# (scripts/base-image), the binaries are the host's release build (cargo build --release,
# incremental) copied into the images, and the pause and busybox images are the OCI
# archives of scripts/build-images, imported into each node's containerd at its start.
# The host's kubectl then reaches the apiserver on 127.0.0.1:$RKUBE_COMPOSE_PORT with the
# kubeconfig written to target/compose/kubeconfig (printed last).
# Settings: RKUBE_COMPOSE_PORT (6443), RKUBE_COMPOSE_WAIT (seconds to wait for Ready
# nodes, 180), and those listed at the top of deploy/compose/docker-compose.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/compose/lib.sh
source deploy/compose/lib.sh

build=1
case "${1:-}" in
    "") ;;
    --no-build) build=0 ;;
    *) die "usage: $0 [--no-build]" ;;
esac
[[ "$(id -u)" -eq 0 ]] || die "must run as root (debootstrap, docker): sudo $0 $*"
command -v docker >/dev/null 2>&1 || die "docker is missing"
[[ -x "$KUBECTL" ]] || die "kubectl is missing at $KUBECTL"

t0=$SECONDS
if ((build)); then
    phase_start=$SECONDS
    base="$(scripts/base-image | tail -n 1)"
    timing "base image" "$phase_start"

    phase_start=$SECONDS
    cargo build --release --quiet -p rkube-apiserver -p rkube-scheduler -p rkube-controller-manager \
        -p rkube-kubelet -p rkube-proxy -p rkube-dns
    timing "cargo build --release" "$phase_start"

    phase_start=$SECONDS
    mapfile -t archives < <(scripts/build-images 2>/dev/null)
    ((${#archives[@]} == 2)) || die "scripts/build-images did not print two archives"

    # Build contexts with only what each image needs (the target dir is many GB).
    release="$TARGET/release"
    ctx="$COMPOSE_WORK/context"
    rm -rf "$ctx"
    mkdir -p "$ctx/control/bin" "$ctx/node/bin" "$ctx/node/images"
    # Without the line tables of the release profile: a fifth of the size.
    stage() { strip --strip-debug -o "$2/$1" "$release/$1" || cp -p "$release/$1" "$2/$1"; }
    for daemon in rkube-apiserver rkube-scheduler rkube-controller-manager rkube-dns; do
        stage "$daemon" "$ctx/control/bin"
    done
    for daemon in rkube-kubelet rkube-proxy; do
        stage "$daemon" "$ctx/node/bin"
    done
    cp -p "${archives[@]}" "$ctx/node/images/"
    cp -p deploy/compose/rkube-kubeconfig "$ctx/control/"
    cp -p deploy/compose/rkube-kubeconfig deploy/compose/node-entrypoint "$ctx/node/"
    # The node container's paths: the root (so the overlayfs snapshots) on the node's
    # volume, never on the container's own overlay (or fuse-overlayfs) file system; the
    # state on the /run tmpfs, new at every container start.
    scripts/containerd-config /var/lib/rkube/containerd /run/containerd \
        /run/containerd/containerd.sock /etc/cni/net.d /etc/containerd/certs.d >"$ctx/node/containerd.toml"
    for image in control node; do
        docker build --build-arg "BASE=$base" --label "$IMAGE_LABEL" \
            -t "rkube.local/rkube-$image:$RKUBE_COMPOSE_TAG" \
            -f "deploy/compose/$image.Dockerfile" "$ctx/$image" >"$COMPOSE_WORK/build-$image.log" 2>&1 || {
            tail -n 30 "$COMPOSE_WORK/build-$image.log" >&2
            die "building rkube.local/rkube-$image:$RKUBE_COMPOSE_TAG failed (log: $COMPOSE_WORK/build-$image.log)"
        }
    done
    # The images these replaced, now untagged.
    docker image prune --force --filter "label=$IMAGE_LABEL" >/dev/null 2>&1 || true
    timing "images (pause, busybox, control, node)" "$phase_start"
fi
for image in control node; do
    docker image inspect "rkube.local/rkube-$image:$RKUBE_COMPOSE_TAG" >/dev/null 2>&1 ||
        die "no image rkube.local/rkube-$image:$RKUBE_COMPOSE_TAG: run $0 without --no-build"
done

phase_start=$SECONDS
up_epoch="$(date +%s)"
compose up --detach --remove-orphans >"$COMPOSE_WORK/up.log" 2>&1 || {
    cat "$COMPOSE_WORK/up.log" >&2
    die "docker-compose up failed"
}
timing "docker-compose up" "$phase_start"

phase_start=$SECONDS
write_host_kubeconfig 60
wait_for "the apiserver to answer /readyz" 60 apiserver_ready
timing "apiserver ready" "$phase_start"

phase_start=$SECONDS
wait_for "3 Ready nodes" "${RKUBE_COMPOSE_WAIT:-180}" nodes_ready 3 "$up_epoch"
timing "3 nodes Ready" "$phase_start"
"$KUBECTL" --kubeconfig "$HOST_KUBECONFIG" get nodes -o wide >&2
timing "compose-up in all" "$t0"
echo "compose-up: export KUBECONFIG=$HOST_KUBECONFIG" >&2
echo "$HOST_KUBECONFIG"
