#!/usr/bin/env bash
# The podman connection plugin (containers.podman.podman) comes with the `ansible` package
# on PyPI (Ansible Galaxy is not reachable from here). The project's venv has only
# ansible-core, so the pinned `ansible` wheel is downloaded once and only the
# containers.podman collection is unpacked into the cache; prints the collections path.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"
PY=${PY:-$HERE/../../../.venv/bin/python}
ANSIBLE_PKG=ansible==11.13.0  # the community package built for ansible-core 2.18
DEST=$YV_CACHE/collections
if [ -f "$DEST/ansible_collections/containers/podman/plugins/connection/podman.py" ]; then
  echo "$DEST"
  exit 0
fi
mkdir -p "$YV_CACHE/wheels" "$DEST"
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  -d "$YV_CACHE/wheels" "$ANSIBLE_PKG" >&2
WHEEL=$(ls "$YV_CACHE"/wheels/ansible-11.13.0-*.whl)
"$PY" - "$WHEEL" "$DEST" <<'PY'
import sys
import zipfile

wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("ansible_collections/containers/podman/")]
    z.extractall(dest, names)
PY
echo "$DEST"
