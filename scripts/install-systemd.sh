#!/usr/bin/env bash
# Installs rkube's daemons as systemd services on a machine of a cluster (Debian 12, or any
# distribution with systemd 252+, containerd 1.6+ and the CNI plugins in /usr/lib/cni).
#
#   install-systemd.sh control-plane [--bind-address IP] [--with-kubelet [--node-ip IP]
#                                    [--node-name NAME]] [OPTIONS]
#       rkube-apiserver, rkube-scheduler, rkube-controller-manager and the cluster DNS,
#       rkube-dns, run as the system user rkube. On first start the apiserver makes the
#       cluster CA and certificates under /var/lib/rkube/apiserver/pki and writes the admin
#       kubeconfig /var/lib/rkube/apiserver/kubeconfig, which the other three use.
#       --bind-address goes into a new apiserver.env: for a cluster of several machines it
#       must be this machine's IP before the first start (the serving certificate names it).
#       --with-kubelet makes this machine a node too (as `worker` does), its kubelet and
#       rkube-proxy using the apiserver's kubeconfig. A new dns.env gets --node-ip, else
#       --bind-address (an IPv4 address other than 0.0.0.0 and 127.x), as the address
#       rkube-dns listens on and publishes as Service kube-system/kube-dns; with neither,
#       rkube-dns publishes nothing until RKUBE_DNS_PUBLISH_ADDRESS is set there.
#   install-systemd.sh worker --kubeconfig FILE [--apiserver https://HOST:6443]
#                             [--node-ip IP] [--node-name NAME] [OPTIONS]
#       rkube-kubelet and rkube-proxy (as root), the distribution's containerd configured
#       for rkube (a drop-in points containerd.service at /etc/rkube/containerd.toml) and
#       the images rkube.local/pause:1.0 and rkube.local/busybox:1.0 imported into it. A new
#       proxy.env takes the kubeconfig, node name and cluster CIDR of kubelet.env. FILE is
#       the control plane's /var/lib/rkube/apiserver/kubeconfig, copied here by the
#       operator (scp); it becomes /etc/rkube/kubeconfig (mode 0600), its server replaced
#       by --apiserver if given (a name or address the serving certificate holds). FILE
#       may be left out when /etc/rkube/kubeconfig is already there (an upgrade).
#   install-systemd.sh uninstall [--purge] [OPTIONS]
#       stops and removes the units, the containerd drop-in, binaries and images; keeps
#       /etc/rkube and the data (cluster state, pod volumes) unless --purge. On a node it
#       also removes the network rules the stopped daemons leave in place on purpose:
#       rkube-proxy's table (`rkube-proxy --cleanup`) and the kubelet's pod network (table ip
#       rkube-podnet, iptables chain RKUBE-PODNET, routes of protocol 66); not with --root
#       or --no-start. Containers the kubelet left running stay in containerd (delete the
#       pods or drain the node first).
#
# OPTIONS
#   --root DIR      install into DIR instead of / (packaging, tests): units are enabled
#                   offline, nothing is started, and this machine's tools are not checked
#   --no-start      install and enable, but start and restart nothing (and import no
#                   images): says what to run instead
#   --bin-dir DIR   where the binaries are; default ${CARGO_TARGET_DIR:-target}/release.
#                   Build them with `cargo build --release -p rkube-apiserver -p
#                   rkube-scheduler -p rkube-controller-manager -p rkube-dns -p
#                   rkube-kubelet -p rkube-proxy`
#   --images DIR    where pause.tar (and busybox.tar) are; default
#                   ${RKUBE_IMAGES_DIR:-target/images}, as scripts/build-images makes them
#
# Where things go: binaries in /usr/local/bin; units (and the containerd drop-in) in
# /usr/local/lib/systemd/system; the sysusers.d entry for user rkube in
# /usr/local/lib/sysusers.d; image archives in /usr/local/share/rkube/images; settings in
# /etc/rkube: one <daemon>.env per unit, containerd.toml and (workers) kubeconfig. Existing
# env files and containerd.toml are never overwritten (upgrades keep the operator's
# settings); binaries, units and images always are. Running it again with the same
# arguments upgrades. docs/operations.md walks through a whole cluster.
#
# Must run as root.
set -euo pipefail

die() { echo "install-systemd: $*" >&2; exit 1; }
say() { echo "install-systemd: $*" >&2; }
usage() {
    sed -n '2,/^# Must run as root/{s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}

repo="$(cd "$(dirname "$0")/.." && pwd)"
deploy="$repo/deploy/systemd"

# Relative paths given by the caller are relative to the caller's directory.
absolute() { realpath -m -- "$1"; }

[[ $# -ge 1 ]] || usage
role="$1"
shift
case "$role" in
    control-plane | worker | uninstall) ;;
    -h | --help | help) usage ;;
    *) die "unknown command '$role': control-plane, worker or uninstall (--help says more)" ;;
esac

root=/
no_start=0
with_kubelet=0
purge=0
bind_address=""
node_ip=""
node_name=""
kubeconfig=""
apiserver=""
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    bin_dir="$(absolute "$CARGO_TARGET_DIR/release")"
else
    bin_dir="$repo/target/release"
fi
images_dir="${RKUBE_IMAGES_DIR:-target/images}"
[[ "$images_dir" == /* ]] || images_dir="$repo/$images_dir"

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) need_value "$@"; root="$(absolute "$2")"; shift 2 ;;
        --no-start) no_start=1; shift ;;
        --bin-dir) need_value "$@"; bin_dir="$(absolute "$2")"; shift 2 ;;
        --images) need_value "$@"; images_dir="$(absolute "$2")"; shift 2 ;;
        --bind-address) need_value "$@"; bind_address="$2"; shift 2 ;;
        --with-kubelet) with_kubelet=1; shift ;;
        --node-ip) need_value "$@"; node_ip="$2"; shift 2 ;;
        --node-name) need_value "$@"; node_name="$2"; shift 2 ;;
        --kubeconfig) need_value "$@"; kubeconfig="$(absolute "$2")"; shift 2 ;;
        --apiserver) need_value "$@"; apiserver="$2"; shift 2 ;;
        --purge) purge=1; shift ;;
        -h | --help) usage ;;
        *) die "unknown option '$1' (--help lists them)" ;;
    esac
done

# Which options go with which command.
only_for() {
    local option="$1" value="$2"
    shift 2
    local r
    [[ -n "$value" && "$value" != 0 ]] || return 0
    for r in "$@"; do
        [[ "$role" == "$r" ]] && return 0
    done
    die "$option is not an option of '$role'"
}
only_for --bind-address "$bind_address" control-plane
only_for --with-kubelet "$with_kubelet" control-plane
only_for --kubeconfig "$kubeconfig" worker
only_for --apiserver "$apiserver" worker
only_for --purge "$purge" uninstall
node=0
[[ "$role" == worker || "$with_kubelet" == 1 ]] && node=1
if [[ "$node" == 0 ]]; then
    only_for --node-ip "$node_ip" worker
    only_for --node-name "$node_name" worker
fi

is_ip() { [[ "$1" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ || "$1" =~ ^[0-9a-fA-F:]+:[0-9a-fA-F:.]*$ ]]; }
[[ -z "$bind_address" ]] || is_ip "$bind_address" || die "--bind-address $bind_address is not an IP address"
[[ -z "$node_ip" ]] || is_ip "$node_ip" || die "--node-ip $node_ip is not an IP address"
[[ -z "$apiserver" || "$apiserver" =~ ^https://[^/[:space:]]+$ ]] ||
    die "--apiserver $apiserver is not of the form https://HOST:PORT"

[[ "$(id -u)" -eq 0 ]] || die "must run as root (it installs into /usr/local and /etc, and runs systemctl): sudo $0 $role ..."

# In a staging root nothing runs; on this machine, starting needs a running systemd.
on_host=1
[[ "$root" == / ]] || on_host=0
[[ "$on_host" == 1 ]] || no_start=1
if [[ "$on_host" == 1 && "$no_start" == 0 && ! -d /run/systemd/system ]]; then
    die "systemd is not running on this machine (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)): use --no-start, or --root DIR"
fi
systemd_up=0
[[ "$on_host" == 1 && -d /run/systemd/system ]] && systemd_up=1

# DIR under the target root.
at() { if [[ "$root" == / ]]; then echo "$1"; else echo "$root$1"; fi; }

BIN=/usr/local/bin
UNITS=/usr/local/lib/systemd/system
DROPIN=/usr/local/lib/systemd/system/containerd.service.d/rkube.conf
SYSUSERS=/usr/local/lib/sysusers.d/rkube.conf
IMAGES=/usr/local/share/rkube/images
ETC=/etc/rkube
APISERVER_KUBECONFIG=/var/lib/rkube/apiserver/kubeconfig
ALL_UNITS=(rkube-apiserver rkube-scheduler rkube-controller-manager rkube-dns rkube-kubelet rkube-proxy)

systemctl_() {
    if [[ "$on_host" == 1 ]]; then systemctl "$@"; else systemctl --root="$root" "$@"; fi
}

# remove_node_network: deletes what rkube-proxy and the kubelet keep in this machine's
# network and leave in place when they stop (so that pods and connections through cluster
# IPs survive their restarts): rkube-proxy's table, through `rkube-proxy --cleanup` while
# its binary is there, and the kubelet's pod network, by the names it owns
# (docs/networking.md). Only on this machine, with both daemons stopped.
remove_node_network() {
    local out
    if command -v nft >/dev/null 2>&1; then
        if ! nft list table ip rkube-proxy >/dev/null 2>&1; then
            :
        elif [[ -x "$BIN/rkube-proxy" ]]; then
            if out="$(NO_COLOR=1 "$BIN/rkube-proxy" --cleanup 2>&1)"; then
                say "removed rkube-proxy's rules ($BIN/rkube-proxy --cleanup)"
            else
                say "warning: $BIN/rkube-proxy --cleanup failed: $out"
                say "  remove its rules with: nft delete table ip rkube-proxy"
            fi
        else
            nft delete table ip rkube-proxy && say "removed rkube-proxy's rules (table ip rkube-proxy)"
        fi
        if nft list table ip rkube-podnet >/dev/null 2>&1; then
            nft delete table ip rkube-podnet && say "removed the kubelet's masquerade rules (table ip rkube-podnet)"
        fi
    fi
    if command -v iptables >/dev/null 2>&1 && iptables -w 5 -S RKUBE-PODNET >/dev/null 2>&1; then
        while iptables -w 5 -D FORWARD -j RKUBE-PODNET 2>/dev/null; do :; done
        iptables -w 5 -F RKUBE-PODNET && iptables -w 5 -X RKUBE-PODNET &&
            say "removed the kubelet's forward chain (iptables RKUBE-PODNET)"
    fi
    if command -v ip >/dev/null 2>&1 && [[ -n "$(ip -4 route show table main proto 66 2>/dev/null)" ]]; then
        ip -4 route flush table main proto 66 && say "removed the kubelet's routes to other nodes' pods (proto 66)"
    fi
}

# ---------------------------------------------------------------------------------------
# uninstall

if [[ "$role" == uninstall ]]; then
    kubelet_root="$(at /var/lib/rkube-kubelet)"
    # Pods still running hold mounts (memory emptyDirs) under the kubelet's root: purging
    # would remove their volumes from under them, so refuse before changing anything.
    if [[ "$purge" == 1 && "$on_host" == 1 ]] &&
        awk -v d="$kubelet_root/" 'index($5, d) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        die "pods still run here (their volumes are mounted under $kubelet_root): delete them or drain the node first (kubectl drain NODE --ignore-daemonsets --delete-emptydir-data), then run uninstall --purge again"
    fi
    units=()
    for u in "${ALL_UNITS[@]}"; do
        [[ -e "$(at "$UNITS/$u.service")" ]] && units+=("$u.service")
    done
    if ((${#units[@]})); then
        if [[ "$systemd_up" == 1 && "$no_start" == 0 ]]; then
            say "stopping and disabling ${units[*]}"
            systemctl disable --now "${units[@]}"
        else
            systemctl_ disable "${units[@]}"
        fi
    fi
    # The node's network rules, while rkube-proxy's binary is still there to remove its own.
    # Never in a staging root (--root), whose units never ran on this machine.
    node_units=0
    for u in "${units[@]}"; do
        [[ "$u" == rkube-kubelet.service || "$u" == rkube-proxy.service ]] && node_units=1
    done
    if [[ "$on_host" == 1 && "$node_units" == 1 ]]; then
        if [[ "$no_start" == 0 ]]; then
            remove_node_network
        else
            say "nothing was stopped (--no-start), so the node's network rules stay; once rkube-proxy and rkube-kubelet are stopped, remove them as docs/networking.md says (nft delete table ip rkube-proxy; nft delete table ip rkube-podnet; ...)"
        fi
    fi
    for u in "${units[@]}"; do
        rm -f "$(at "$UNITS/$u")"
    done
    for b in "${ALL_UNITS[@]}"; do
        rm -f "$(at "$BIN/$b")"
    done
    had_dropin=0
    if [[ -e "$(at "$DROPIN")" ]]; then
        had_dropin=1
        rm -f "$(at "$DROPIN")"
        rmdir "$(dirname "$(at "$DROPIN")")" 2>/dev/null || true
    fi
    rm -f "$(at "$SYSUSERS")"
    rm -rf "$(at "$IMAGES")"
    rmdir "$(dirname "$(at "$IMAGES")")" 2>/dev/null || true
    if [[ "$systemd_up" == 1 && "$no_start" == 0 ]]; then
        systemctl daemon-reload
        if [[ "$had_dropin" == 1 ]] && systemctl is-active --quiet containerd.service; then
            say "restarting containerd with its own configuration again"
            systemctl restart containerd.service
        fi
    fi
    if [[ "$purge" == 1 ]]; then
        say "purging $(at "$ETC"), $(at /var/lib/rkube) (the cluster state), $kubelet_root and user rkube"
        rm -rf "$(at "$ETC")" "$(at /var/lib/rkube)" "$kubelet_root" "$(at /etc/cni/net.d/10-rkube.conflist)"
        if grep -q '^rkube:' "$(at /etc/passwd)" 2>/dev/null; then
            if [[ "$on_host" == 1 ]]; then userdel rkube; else userdel --root "$root" rkube; fi
        fi
    else
        say "kept $(at "$ETC") and the data under $(at /var/lib/rkube) and $(at /var/lib/rkube-kubelet) (uninstall --purge removes them)"
    fi
    say "uninstalled from $root; images stay in containerd (ctr -n k8s.io images rm rkube.local/pause:1.0 rkube.local/busybox:1.0)"
    exit 0
fi

# ---------------------------------------------------------------------------------------
# control-plane, worker: check what is needed before changing anything

binaries=()
[[ "$role" == control-plane ]] && binaries+=(rkube-apiserver rkube-scheduler rkube-controller-manager rkube-dns)
[[ "$node" == 1 ]] && binaries+=(rkube-kubelet rkube-proxy)
missing=()
for b in "${binaries[@]}"; do
    [[ -x "$bin_dir/$b" ]] || missing+=("$b")
done
if ((${#missing[@]})); then
    die "missing in $bin_dir: ${missing[*]}: build them first with
    cargo build --release$(printf ' -p %s' "${missing[@]}")
(or point --bin-dir at them)"
fi

if [[ "$node" == 1 ]]; then
    [[ -f "$images_dir/pause.tar" ]] ||
        die "no $images_dir/pause.tar (rkube.local/pause:1.0, which every pod needs): run scripts/build-images first (it needs gcc, umoci and busybox-static), or point --images at the archives"
    if [[ "$role" == worker && -z "$kubeconfig" && ! -f "$(at "$ETC/kubeconfig")" ]]; then
        die "a worker needs --kubeconfig FILE: the control plane's $APISERVER_KUBECONFIG, copied to this machine"
    fi
    if [[ -n "$kubeconfig" ]]; then
        [[ -r "$kubeconfig" ]] || die "cannot read --kubeconfig $kubeconfig"
        if ! grep -q '^kind: Config' "$kubeconfig" || ! grep -q '^ *server: ' "$kubeconfig"; then
            die "$kubeconfig does not look like a kubeconfig (no 'kind: Config' and 'server:')"
        fi
    fi
    if [[ "$on_host" == 1 ]]; then
        # nft: rkube-proxy's rules and the kubelet's masquerade.
        for tool in containerd ctr runc mount ip nft; do
            command -v "$tool" >/dev/null 2>&1 ||
                die "$tool is missing: apt-get install containerd runc containernetworking-plugins iproute2 nftables"
        done
        [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap ]] ||
            die "the CNI plugins are missing from /usr/lib/cni: apt-get install containernetworking-plugins"
        [[ -x /usr/bin/containerd ]] || die "containerd is not /usr/bin/containerd, which the containerd drop-in runs"
        systemctl cat containerd.service >/dev/null 2>&1 ||
            die "there is no containerd.service: apt-get install containerd"
    fi
fi
command -v systemd-sysusers >/dev/null 2>&1 || die "systemd-sysusers is missing (package systemd)"

# ---------------------------------------------------------------------------------------
# install

# install_file MODE SRC DEST: copies SRC to DEST (under the root) through a temporary file
# and a rename, so a running binary is replaced, never written over.
install_file() {
    local mode="$1" src="$2" dest
    dest="$(at "$3")"
    mkdir -p "$(dirname "$dest")"
    install -m "$mode" "$src" "$dest.rkube-new"
    mv -f "$dest.rkube-new" "$dest"
}

# set_env FILE KEY VALUE: KEY=VALUE in FILE, in place of its line (or commented-out line)
# for KEY, else appended.
set_env() {
    local file="$1" key="$2" value="$3"
    awk -v key="$key" -v value="$value" '
        !done && ($0 ~ "^" key "=" || $0 ~ "^#" key "=") { print key "=" value; done = 1; next }
        { print }
        END { if (!done) print key "=" value }
    ' "$file" >"$file.rkube-new"
    mv -f "$file.rkube-new" "$file"
}

# env_value FILE KEY: the value FILE sets for KEY (its last KEY= line), or nothing.
env_value() {
    awk -v key="$2" 'index($0, key "=") == 1 { value = substr($0, length(key) + 2) } END { print value }' "$1"
}

# install_config SRC DEST [KEY=VALUE...]: installs SRC as DEST (mode 0644) with the
# settings, unless DEST exists: then it is kept, and settings it lacks are reported.
install_config() {
    local src="$1" dest
    dest="$(at "$2")"
    shift 2
    local kv
    if [[ -e "$dest" ]]; then
        say "kept $dest"
        for kv in "$@"; do
            grep -qxF -- "$kv" "$dest" || say "  note: $dest does not say $kv (as asked); edit it if it should"
        done
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    install -m 0644 "$src" "$dest.rkube-new"
    for kv in "$@"; do
        set_env "$dest.rkube-new" "${kv%%=*}" "${kv#*=}"
    done
    mv -f "$dest.rkube-new" "$dest"
    say "wrote $dest"
}

units=()
for b in "${binaries[@]}"; do
    install_file 0755 "$bin_dir/$b" "$BIN/$b"
    install_file 0644 "$deploy/$b.service" "$UNITS/$b.service"
    units+=("$b.service")
done
say "installed ${binaries[*]} into $(at "$BIN"), the units into $(at "$UNITS")"
mkdir -p "$(at "$ETC")"
chmod 0755 "$(at "$ETC")"

if [[ "$role" == control-plane ]]; then
    install_file 0644 "$deploy/sysusers.d/rkube.conf" "$SYSUSERS"
    # The staging root gets its own /etc/passwd and /etc/group with the user.
    mkdir -p "$(at /etc)"
    systemd-sysusers --root="$root" rkube.conf
    settings=()
    [[ -z "$bind_address" ]] || settings+=("RKUBE_BIND_ADDRESS=$bind_address")
    install_config "$deploy/env/apiserver.env" "$ETC/apiserver.env" "${settings[@]}"
    install_config "$deploy/env/scheduler.env" "$ETC/scheduler.env"
    install_config "$deploy/env/controller-manager.env" "$ETC/controller-manager.env"
    # rkube-dns listens on and publishes the address pods reach this machine at: the node
    # IP, else the apiserver's address. Listening on that address rather than 0.0.0.0
    # matters on a machine with several addresses (dns.env says why). rkube-proxy is
    # IPv4 only, so only an IPv4 address will do.
    dns_address=""
    for a in "$node_ip" "$bind_address"; do
        if [[ "$a" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ && "$a" != 0.0.0.0 && "$a" != 127.* ]]; then
            dns_address="$a"
            break
        fi
    done
    settings=()
    if [[ -n "$dns_address" ]]; then
        settings+=("RKUBE_DNS_LISTEN=$dns_address:53" "RKUBE_DNS_PUBLISH_ADDRESS=$dns_address")
    elif [[ ! -e "$(at "$ETC/dns.env")" ]]; then
        say "note: no --node-ip or --bind-address to publish rkube-dns at: until RKUBE_DNS_PUBLISH_ADDRESS (and RKUBE_DNS_LISTEN) are set in $(at "$ETC/dns.env"), pods get no cluster DNS"
    fi
    install_config "$deploy/env/dns.env" "$ETC/dns.env" "${settings[@]}"
fi

if [[ "$node" == 1 ]]; then
    settings=()
    [[ "$role" == control-plane ]] && settings+=("RKUBE_KUBECONFIG=$APISERVER_KUBECONFIG")
    [[ -z "$node_ip" ]] || settings+=("RKUBE_NODE_IP=$node_ip")
    [[ -z "$node_name" ]] || settings+=("RKUBE_NODE_NAME=$node_name")
    install_config "$deploy/env/kubelet.env" "$ETC/kubelet.env" "${settings[@]}"
    grep -q '^RKUBE_CLUSTER_DNS=' "$(at "$ETC/kubelet.env")" ||
        say "  note: $(at "$ETC/kubelet.env") sets no RKUBE_CLUSTER_DNS, so pods use the host's resolv.conf; set RKUBE_CLUSTER_DNS=10.96.0.10 for rkube-dns"
    # rkube-proxy must name the node, reach the apiserver and see the pod network as the
    # kubelet does: a new proxy.env takes those from kubelet.env (new or kept).
    settings=()
    for key in RKUBE_KUBECONFIG RKUBE_NODE_NAME RKUBE_CLUSTER_CIDR; do
        value="$(env_value "$(at "$ETC/kubelet.env")" "$key")"
        [[ -z "$value" ]] || settings+=("$key=$value")
    done
    install_config "$deploy/env/proxy.env" "$ETC/proxy.env" "${settings[@]}"
    # containerd is restarted only when its configuration changes: a restart is brief and
    # spares running containers, but stalls every CRI call meanwhile.
    containerd_changed=0
    [[ -e "$(at "$ETC/containerd.toml")" ]] || containerd_changed=1
    cmp -s "$deploy/containerd/rkube.conf" "$(at "$DROPIN")" || containerd_changed=1
    # The distribution's paths: root, state and socket are containerd's defaults.
    rendered="$(mktemp)"
    "$repo/scripts/containerd-config" /var/lib/containerd /run/containerd \
        /run/containerd/containerd.sock /etc/cni/net.d /etc/containerd/certs.d >"$rendered"
    install_config "$rendered" "$ETC/containerd.toml"
    rm -f "$rendered"
    install_file 0644 "$deploy/containerd/rkube.conf" "$DROPIN"
    mkdir -p "$(at /etc/cni/net.d)"
    install_file 0644 "$images_dir/pause.tar" "$IMAGES/pause.tar"
    if [[ -f "$images_dir/busybox.tar" ]]; then
        install_file 0644 "$images_dir/busybox.tar" "$IMAGES/busybox.tar"
    fi
    say "installed the containerd drop-in $(at "$DROPIN") and the images into $(at "$IMAGES")"
fi

# agree FILE:KEY...: warns when those of the env files here that set their KEY disagree
# (settings of different daemons that must be the same).
agree() {
    local pair file value first="" first_pair=""
    for pair in "$@"; do
        file="$(at "$ETC/${pair%%:*}")"
        [[ -e "$file" ]] || continue
        value="$(env_value "$file" "${pair#*:}")"
        [[ -n "$value" ]] || continue
        if [[ -z "$first_pair" ]]; then
            first="$value"
            first_pair="$pair"
        elif [[ "$value" != "$first" ]]; then
            say "warning: ${pair%%:*} says ${pair#*:}=$value, ${first_pair%%:*} says ${first_pair#*:}=$first: they must be the same"
        fi
    done
}
agree controller-manager.env:RKUBE_CLUSTER_CIDR kubelet.env:RKUBE_CLUSTER_CIDR proxy.env:RKUBE_CLUSTER_CIDR
agree dns.env:RKUBE_DNS_SERVICE_IP kubelet.env:RKUBE_CLUSTER_DNS
agree dns.env:RKUBE_CLUSTER_DOMAIN kubelet.env:RKUBE_CLUSTER_DOMAIN

if [[ "$role" == worker ]]; then
    dest="$(at "$ETC/kubeconfig")"
    if [[ -n "$kubeconfig" ]]; then
        install -m 0600 "$kubeconfig" "$dest.rkube-new"
        mv -f "$dest.rkube-new" "$dest"
        say "wrote $dest from $kubeconfig"
    fi
    if [[ -n "$apiserver" ]]; then
        awk -v url="$apiserver" '!done && $1 == "server:" { sub(/server:.*/, "server: " url); done = 1 } { print }' \
            "$dest" >"$dest.rkube-new"
        chmod 0600 "$dest.rkube-new"
        mv -f "$dest.rkube-new" "$dest"
        say "$dest: server $apiserver"
    fi
fi

# ---------------------------------------------------------------------------------------
# enable, start

[[ "$systemd_up" == 0 ]] || systemctl daemon-reload
systemctl_ enable --quiet "${units[@]}"
say "enabled ${units[*]} (they start at boot)"

if [[ "$no_start" == 1 ]]; then
    say "not started (--no-start or --root). To start:"
    if [[ "$node" == 1 ]]; then
        [[ "$containerd_changed" == 0 ]] || say "  systemctl daemon-reload && systemctl restart containerd"
        for image in pause busybox; do
            if [[ -f "$(at "$IMAGES/$image.tar")" ]]; then
                say "  ctr -n k8s.io images import --base-name rkube.local/$image $IMAGES/$image.tar"
            fi
        done
    fi
    say "  systemctl restart ${units[*]}"
    exit 0
fi

if [[ "$node" == 1 ]]; then
    # The drop-in and /etc/rkube/containerd.toml take effect only with a restart; running
    # containers survive it (containerd.service has KillMode=process).
    if [[ "$containerd_changed" == 1 ]]; then
        say "restarting containerd with $ETC/containerd.toml"
        systemctl enable --quiet containerd.service
        systemctl restart containerd.service
    else
        systemctl enable --quiet --now containerd.service
    fi
    for image in pause busybox; do
        archive="$IMAGES/$image.tar"
        [[ -f "$archive" ]] || continue
        ctr -n k8s.io images import --base-name "rkube.local/$image" "$archive" >/dev/null ||
            die "importing $archive into containerd failed (journalctl -u containerd)"
        say "imported rkube.local/$image:1.0 into containerd (namespace k8s.io)"
    done
fi

say "starting ${units[*]}"
if ! systemctl restart "${units[@]}"; then
    for u in "${units[@]}"; do
        systemctl is-active --quiet "$u" || journalctl -u "$u" -n 10 --no-pager >&2
    done
    die "starting ${units[*]} failed (above; journalctl -u UNIT for more)"
fi

if [[ "$role" == control-plane ]]; then
    # The apiserver writes its kubeconfig once it has its certificates and is bound.
    deadline=$((SECONDS + 30))
    until [[ -s "$APISERVER_KUBECONFIG" ]] && systemctl is-active --quiet rkube-apiserver.service; do
        if ((SECONDS >= deadline)); then
            journalctl -u rkube-apiserver.service -n 20 --no-pager >&2 || true
            die "rkube-apiserver did not write $APISERVER_KUBECONFIG within 30 s (journalctl -u rkube-apiserver)"
        fi
        sleep 0.2
    done
    server="$(awk '$1 == "server:" { print $2; exit }' "$APISERVER_KUBECONFIG")"
    say "the apiserver runs at $server; admin kubeconfig: $APISERVER_KUBECONFIG"
    say "  here:    KUBECONFIG=$APISERVER_KUBECONFIG kubectl get nodes"
    say "  workers: copy it to each worker and run there"
    say "           $0 worker --kubeconfig FILE"
fi
for u in "${units[@]}"; do
    systemctl is-active --quiet "$u" || say "warning: $u is $(systemctl is-active "$u" || true): journalctl -u $u"
done
say "done; logs: journalctl -u ${units[0]%.service} (and the other units)"
