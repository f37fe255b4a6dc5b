# Shared settings of the multi-host container test (sourced by the scripts in this directory).
# podman on this machine's kernel (hybrid cgroups) needs runc (crun fails) and cgroupfs,
# and explicit ulimits (the defaults it would copy are refused by runc here).
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
RUN_LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
# The base image is built from Debian packages (no registry is reachable) and cached by tag:
# a new tag when what goes into it changes.
YV_IMAGE=${YV_IMAGE:-localhost/yahaml-voice-host:bookworm-1}
YV_SUITE=bookworm
YV_MIRROR=${YV_MIRROR:-http://deb.debian.org/debian}
# What a fresh Debian cloud host has besides minbase, and what Ansible needs on a host.
YV_IMAGE_PACKAGES=python3,python3-apt,ca-certificates,iproute2,procps,iputils-ping,netbase
# Downloads kept between runs (apt archives per host, pip cache shared).
YV_CACHE=${YV_CACHE:-/var/cache/yahaml-voice-podman}
