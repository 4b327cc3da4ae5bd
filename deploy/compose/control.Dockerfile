# The control-plane image: rkube-apiserver, rkube-scheduler and rkube-controller-manager,
# built on the host (scripts/compose-up.sh copies them into the build context) and run on
# the locally made Debian base image. One image; the compose service picks the daemon.
ARG BASE=rkube.local/debian:bookworm
FROM ${BASE}
COPY rkube-kubeconfig /usr/local/bin/
COPY bin/rkube-apiserver bin/rkube-scheduler bin/rkube-controller-manager /usr/local/bin/
CMD ["rkube-apiserver"]
