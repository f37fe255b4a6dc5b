"""REST routes of recordings (docs/protocol.md "Recording"), on the API blueprint: the
list, net control's start and stop, "say again" (a member replays the last transmissions)
and net control's downloads of a whole recording. Importing this module adds them
(app.py does, before registering the blueprint).

Files are served with Range support (an <audio> element seeks with it) and the usual
token. The own client fetches them with the Authorization header and plays a blob: url
(a token in a URL ends up in access logs); `?token=` still works, as on every route, for
clients that can only give an <audio src>, and the proxy role logs no query strings.
Which file is read is decided by recording_files.py from ids and a fixed list of names,
never from a path in the URL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

from quart import Response, send_file

from yahaml_voice.core.protocol import RecordingList, RecordingState, TransmissionList
from yahaml_voice.core.tokens import Identity

from .api import identity, net_route
from .api_netlog import FileAnswer
from .context import services
from .errors import ApiError
from .recording_files import net_file_type
from .recordings import to_wire
from .views import check_access

GROUP = "recordings"


class OggFile(FileAnswer):
    """Ogg Opus audio (RFC 7845); `Range` requests are answered 206."""

    media_type: ClassVar[str] = "audio/ogg"


class RecordingFile(FileAnswer):
    """A file of a whole recording: audio/ogg (`net.opus`, `mixed.opus`, `slot<i>.opus`),
    application/json (`index.json`) or text/vtt (`chapters.vtt`); Range requests are
    answered 206."""

    media_types: ClassVar[tuple[str, ...]] = ("audio/ogg", "application/json", "text/vtt")


def _limit() -> None:
    """Counted with the caller's signals, like the floor routes."""
    services().limits.signal(identity().participant_id)


async def _member(ident: Identity, room_id: str) -> None:
    """403 `not_in_room` unless the caller holds a seat in the room (or is its net
    control): replays are for who was there."""
    svc = services()
    check_access(svc.config, ident, room_id)
    if await svc.store.participant(room_id, ident.participant_id) is not None:
        return
    try:
        await svc.rooms.net.require_ncs(ident, room_id)
    except ApiError:
        raise ApiError(
            403, "not_in_room", f"replays are for members of room {room_id!r}; join it first"
        ) from None


def _not_found(what: str) -> ApiError:
    return ApiError(404, "recording_not_found", f"no such {what} in this room")


async def _send(path: Path, media_type: str) -> Response:
    response = await send_file(path, mimetype=media_type, conditional=True)
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["Accept-Ranges"] = "bytes"
    return response


@net_route("recordings", RecordingList, method="GET", group=GROUP)
async def list_recordings(room_id: str) -> RecordingList:
    """The room's recordings, newest first (members of the room and net control)."""
    await _member(identity(), room_id)
    found = await services().rooms.recordings.listed(room_id)
    return RecordingList(roomId=room_id, recordings=found)


@net_route("recording/start", RecordingState, group=GROUP)
async def start_recording(room_id: str) -> RecordingState:
    """Net control starts recording a `record: ncs` room (409 `not_recordable` in other
    rooms, `already_recording`, `not_placed` before the room is on a worker)."""
    _limit()
    svc = services()
    room = await svc.rooms.net.require_ncs(identity(), room_id)
    doc = await svc.rooms.recordings.start_by(room, identity().callsign)
    return to_wire(room_id, doc)


@net_route("recording/stop", RecordingState, group=GROUP)
async def stop_recording(room_id: str) -> RecordingState:
    """Net control stops recording a `record: ncs` room (409 `not_recording`)."""
    _limit()
    svc = services()
    room = await svc.rooms.net.require_ncs(identity(), room_id)
    doc = await svc.rooms.recordings.stop_by(room, identity().callsign)
    return to_wire(room_id, doc)


@net_route("recordings/<recording_id>/transmissions", TransmissionList, method="GET", group=GROUP)
async def transmissions(room_id: str, recording_id: str) -> TransmissionList:
    """The recording's last `recording.replay_last` transmissions, oldest first, with the
    url to replay each (members of the room; 403 `not_in_room`)."""
    await _member(identity(), room_id)
    recordings = services().rooms.recordings
    if recordings.files.recording_dir(room_id, recording_id) is None:
        raise _not_found("recording")
    found = await asyncio.to_thread(recordings.transmissions, room_id, recording_id)
    return TransmissionList(roomId=room_id, recordingId=recording_id, transmissions=found)


@net_route(
    "recordings/<recording_id>/transmissions/<index>",
    OggFile,
    method="GET",
    group=GROUP,
    validate=False,
)
async def transmission_file(room_id: str, recording_id: str, index: str) -> Any:
    """One transmission as Ogg Opus ("say again"; members of the room; 403
    `not_in_room`). The own client sends the Authorization header; `?token=` is taken
    too (an <audio src> sends no header)."""
    await _member(identity(), room_id)
    files = services().rooms.recordings.files
    path = await asyncio.to_thread(files.transmission_file, room_id, recording_id, index)
    if path is None:
        raise _not_found("transmission")
    return await _send(path, "audio/ogg")


@net_route(
    "recordings/<recording_id>/files/<name>",
    RecordingFile,
    method="GET",
    group=GROUP,
    validate=False,
)
async def recording_file(room_id: str, recording_id: str, name: str) -> Any:
    """A whole recording's file, for net control: `net.opus` (the floor in time order),
    `slot<i>.opus` (one track per speaker slot), `mixed.opus` (once mixed), `index.json`,
    `chapters.vtt`. 404 for any other name."""
    await services().rooms.net.require_ncs(identity(), room_id)
    files = services().rooms.recordings.files
    path = await asyncio.to_thread(files.net_file, room_id, recording_id, name)
    media_type = net_file_type(name)
    if path is None or media_type is None:
        raise _not_found("file")
    return await _send(path, media_type)
