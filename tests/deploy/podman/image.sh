#!/usr/bin/env bash
# Build the hosts' base image (Debian bookworm, minbase + python3 for Ansible) with
# debootstrap and `podman import`, unless the tag exists already. No registry needed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

if "${PODMAN[@]}" image exists "$YV_IMAGE"; then
  echo "image: $YV_IMAGE cached"
  exit 0
fi
ROOTFS=$(mktemp -d /var/tmp/yv-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
mkdir -p "$YV_CACHE/apt"
echo "image: debootstrap $YV_SUITE into $ROOTFS"
debootstrap --variant=minbase --include="$YV_IMAGE_PACKAGES" --cache-dir="$YV_CACHE/apt" \
  "$YV_SUITE" "$ROOTFS" "$YV_MIRROR" >"$ROOTFS.log" 2>&1 || { tail -n 30 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"
cat >"$ROOTFS/etc/apt/sources.list" <<SRC
deb $YV_MIRROR $YV_SUITE main
deb $YV_MIRROR $YV_SUITE-updates main
deb http://security.debian.org/debian-security $YV_SUITE-security main
SRC
# Keep downloaded packages (the archive directory is shared between containers and runs).
echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' >"$ROOTFS/etc/apt/apt.conf.d/90keep"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
: >"$ROOTFS/etc/machine-id"
tar -C "$ROOTFS" -c . | "${PODMAN[@]}" import \
  --change 'CMD ["/bin/sleep", "infinity"]' --change 'ENV LANG=C.UTF-8' - "$YV_IMAGE" >/dev/null
echo "image: built $YV_IMAGE"
