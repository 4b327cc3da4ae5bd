# The node image, as kind's: containerd, runc, the CNI plugins and the netfilter tools from
# Debian (nft for rkube-proxy and the kubelet's masquerade table), rkube-kubelet and
# rkube-proxy built on the host, the pause and busybox OCI archives, and an entrypoint that
# runs and supervises them. The packages come first so the layer stays cached while the
# binaries change.
ARG BASE=rkube.local/debian:bookworm
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends containerd runc containernetworking-plugins \
      iptables nftables iproute2 procps util-linux kmod \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
COPY containerd.toml /etc/containerd/config.toml
COPY images/ /usr/local/share/rkube/images/
COPY rkube-kubeconfig node-entrypoint /usr/local/bin/
COPY bin/ /usr/local/bin/
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/node-entrypoint"]
