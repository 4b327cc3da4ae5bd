# The control-plane image: rkube-apiserver, rkube-scheduler, rkube-controller-manager and
# rkube-dns, built on the host (scripts/compose-up.sh copies them into the build context)
# and run on the locally made Debian base image. One image; the compose service picks the
# daemon.
ARG BASE=rkube.local/debian:bookworm
FROM ${BASE}
COPY rkube-kubeconfig /usr/local/bin/
COPY bin/ /usr/local/bin/
CMD ["rkube-apiserver"]
