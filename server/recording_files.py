"""The recordings on disk, as the server reads and prunes them (the worker writes them).

Layout (docs/protocol.md "Recording"): `<recording.dir>/<room>/<recording id>/` holding
`index.json`, `net.opus`, `slot<i>.opus`, `tx/<index:06d>.opus`, `chapters.vtt` and,
once mixed, `mixed.opus`. Every path this module hands out is built from a configured
room id, a recording id matching RECORDING_ID and a name from a fixed list: nothing a
request sends becomes part of a path unchecked, so `..` or an absolute name can never
reach outside the directory.

Retention (`prune`) goes by the recording's start time, which its id carries, oldest
first: first whatever is older than `recording.keep`, then more until all recordings
take at most `recording.max_bytes`. A running recording is never deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
from calendar import timegm
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECORDING_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
_ROOM_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SLOT_FILE = re.compile(r"^slot(1[0-5]|[0-9])\.opus$")
_INDEX = re.compile(r"^\d{1,6}$")
# What net control may download of a whole recording, and as what.
NET_FILES = {
    "net.opus": "audio/ogg",
    "mixed.opus": "audio/ogg",
    "index.json": "application/json",
    "chapters.vtt": "text/vtt",
}
# index.json is read whole; a bigger one is not ours (a net of 10 000 transmissions is ~3 MB).
MAX_INDEX_BYTES = 16 * 2**20


def net_file_type(name: str) -> str | None:
    """The media type of a whole-recording file net control may fetch; None: not one."""
    if _SLOT_FILE.match(name):
        return "audio/ogg"
    return NET_FILES.get(name)


def started_at(recording_id: str) -> float:
    """Unix time a recording started (from its id, `YYYYmmddTHHMMSSZ-xxxxxx`)."""
    return float(timegm(time.strptime(recording_id[:16], "%Y%m%dT%H%M%SZ")))


def new_id(now: float, tag: str) -> str:
    """A recording id for a start at `now` (UTC) with a random hex tag of 6 digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + tag


@dataclass(frozen=True)
class Stored:
    room_id: str
    recording_id: str
    path: Path
    bytes: int

    @property
    def started_at(self) -> float:
        return started_at(self.recording_id)


class RecordingFiles:
    """Read-only views and pruning of `recording.dir` (created lazily by the worker)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def recording_dir(self, room_id: str, recording_id: str) -> Path | None:
        """The directory of one recording, if both ids are well-formed and it exists."""
        if not _ROOM_ID.match(room_id) or not RECORDING_ID.match(recording_id):
            return None
        path = self.root / room_id / recording_id
        return path if path.is_dir() else None

    def ids(self, room_id: str) -> list[str]:
        """The room's recordings on disk, newest first."""
        if not _ROOM_ID.match(room_id):
            return []
        try:
            names = [p.name for p in (self.root / room_id).iterdir() if p.is_dir()]
        except OSError:
            return []
        return sorted((n for n in names if RECORDING_ID.match(n)), reverse=True)

    def index(self, room_id: str, recording_id: str) -> dict[str, Any] | None:
        """index.json of a recording (None: missing, unreadable or not an object)."""
        folder = self.recording_dir(room_id, recording_id)
        if folder is None:
            return None
        try:
            path = folder / "index.json"
            if path.stat().st_size > MAX_INDEX_BYTES:
                log.warning("%s is larger than %d bytes; not read", path, MAX_INDEX_BYTES)
                return None
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def transmission_file(self, room_id: str, recording_id: str, index: str) -> Path | None:
        """tx/<index>.opus of a recording (`index` as the route got it: digits only)."""
        folder = self.recording_dir(room_id, recording_id)
        if folder is None or not _INDEX.match(index):
            return None
        path = folder / "tx" / f"{int(index):06d}.opus"
        return path if path.is_file() else None

    def net_file(self, room_id: str, recording_id: str, name: str) -> Path | None:
        """One of the whole-recording files (NET_FILES, slot<i>.opus) if it exists."""
        folder = self.recording_dir(room_id, recording_id)
        if folder is None or net_file_type(name) is None:
            return None
        path = folder / name
        return path if path.is_file() else None

    # ---------------------------------------------------------------- retention

    def stored(self) -> list[Stored]:
        """Every recording under the root (any room), oldest first."""
        found: list[Stored] = []
        try:
            rooms = [p for p in self.root.iterdir() if p.is_dir() and _ROOM_ID.match(p.name)]
        except OSError:
            return []
        for room in rooms:
            for folder in room.iterdir():
                if folder.is_dir() and RECORDING_ID.match(folder.name):
                    found.append(Stored(room.name, folder.name, folder, _size(folder)))
        found.sort(key=lambda s: (s.recording_id, s.room_id))
        return found

    def prune(
        self, now: float, keep: float, max_bytes: int, running: Iterable[tuple[str, str]] = ()
    ) -> list[Stored]:
        """Delete recordings older than `keep` seconds (0: no age limit), then the oldest
        until the rest take at most `max_bytes` (0: no cap); never one in `running`
        ((room, id) pairs). What was deleted, oldest first."""
        spare = set(running)
        stored = self.stored()
        total = sum(s.bytes for s in stored)
        deleted: list[Stored] = []
        for item in stored:
            if (item.room_id, item.recording_id) in spare:
                continue
            too_old = keep > 0 and now - item.started_at > keep
            too_big = max_bytes > 0 and total > max_bytes
            if not (too_old or too_big):
                continue
            shutil.rmtree(item.path, ignore_errors=True)
            total -= item.bytes
            deleted.append(item)
            log.info(
                "recording %s/%s deleted (%s, %d bytes)",
                item.room_id,
                item.recording_id,
                "older than recording.keep" if too_old else "recording.max_bytes reached",
                item.bytes,
            )
        for room in {item.path.parent for item in deleted}:
            with contextlib.suppress(OSError):
                room.rmdir()  # only if empty
        return deleted


def _size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total
