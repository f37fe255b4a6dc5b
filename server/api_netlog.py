"""REST routes of the net log (docs/protocol.md "Net log"), on the API blueprint: the
open net and its check-ins, its log, the archive and the exports. Importing this module
adds them (app.py does, before registering the blueprint)."""

from __future__ import annotations

import inspect
import math
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, Field, RootModel
from quart import Response
from quart_schema.openapi import OpenAPIProvider

from yahaml_voice.core.protocol import (
    CheckIn,
    CheckInAdd,
    CheckInEdit,
    CheckInOrder,
    CheckInSelf,
    NetArchive,
    NetEvent,
    NetLogPage,
    NetNote,
    NetOpen,
    NetRecord,
    NetState,
    NetUpdate,
)

from . import net_export
from .api import identity, net_route, optional_body, query_args
from .context import services
from .errors import ApiError
from .nets import NetLogService

GROUP = "net-log"


def _limit() -> None:
    """Counted with the caller's signals, like the floor routes."""
    services().limits.signal(identity().participant_id)


def _netlog() -> NetLogService:
    return services().rooms.netlog


class LogQuery(BaseModel):
    # Lines with seq greater than this.
    after: int = Field(default=0, ge=0, le=2**53)
    limit: int = Field(default=1000, ge=1, le=1000)


class ArchiveQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=100)
    # Only nets closed before this: ISO 8601 time or unix seconds (paging: the last
    # closedAt of the previous page).
    before: str | None = Field(default=None, max_length=40)


def parse_time(text: str) -> float:
    """Unix seconds or an ISO 8601 time (a time without a zone is UTC); 400 otherwise."""
    try:
        value = float(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(
                400, "bad_request", f"before: {text!r} is neither an ISO time nor unix seconds"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    if not math.isfinite(value):
        raise ApiError(400, "bad_request", "before: not a finite number")
    return value


# ---------------------------------------------------------------- files in the OpenAPI document


class FileAnswer(RootModel[str]):
    """A file (Content-Disposition: attachment)."""

    media_type: ClassVar[str] = "application/octet-stream"


class CsvFile(FileAnswer):
    """A CSV file (RFC 4180, UTF-8), sent as an attachment."""

    media_type: ClassVar[str] = "text/csv"


class TextFile(FileAnswer):
    """A plain-text file (UTF-8), sent as an attachment."""

    media_type: ClassVar[str] = "text/plain"


class OpenAPI(OpenAPIProvider):
    """quart-schema's document, with FileAnswer bodies under their own media type."""

    def build_response_object(
        self, model: Any, headers_model: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if inspect.isclass(model) and issubclass(model, FileAnswer):
            types = getattr(model, "media_types", (model.media_type,))
            content = {media: {"schema": {"type": "string"}} for media in types}
            return {"content": content, "description": inspect.getdoc(model) or ""}, {}
        return super().build_response_object(model, headers_model)


# ---------------------------------------------------------------- the open net


@net_route("net", NetState, method="GET", group=GROUP)
async def get_net(room_id: str) -> NetState:
    """The room's open net (`net` null when none) and its check-ins, in net order."""
    return await _netlog().state(identity(), room_id)


@net_route("net/open", NetState, body=NetOpen, group=GROUP)
async def net_open(room_id: str, data: NetOpen) -> NetState:
    """Net control opens a net; 409 `net_open` when one is open already."""
    _limit()
    return await _netlog().open(identity(), room_id, data.name, data.preamble)


@net_route("net/update", NetState, body=NetUpdate, group=GROUP)
async def net_update(room_id: str, data: NetUpdate) -> NetState:
    """Net control renames the open net or changes its preamble; 404 `no_net`."""
    _limit()
    return await _netlog().update(identity(), room_id, data.name, data.preamble)


@net_route("net/close", NetRecord, group=GROUP)
async def net_close(room_id: str) -> NetRecord:
    """Net control closes the open net: it is archived; the answer is its whole record."""
    _limit()
    return await _netlog().close(identity(), room_id)


@net_route("net/checkin", NetState, optional=CheckInSelf, group=GROUP)
async def net_checkin(room_id: str) -> NetState:
    """A member of the room checks in (again: updates its own entry; a checked-out entry
    is back to `new`). 403 `not_in_room`, 409 `net_full`."""
    data = await optional_body(CheckInSelf)
    _limit()
    return await _netlog().check_in(identity(), room_id, data)


@net_route("net/checkout", NetState, group=GROUP)
async def net_checkout(room_id: str) -> NetState:
    """A member checks out (its entry's status: checked_out). 404 `not_checked_in`."""
    _limit()
    return await _netlog().check_out(identity(), room_id)


@net_route("net/checkins", NetState, body=CheckInAdd, group=GROUP)
async def net_add(room_id: str, data: CheckInAdd) -> NetState:
    """Net control or a logger enters a station by hand. 400 `bad_callsign`, 409
    `already_checked_in`, 409 `net_full`."""
    _limit()
    return await _netlog().add(identity(), room_id, data)


@net_route("net/checkins/order", NetState, body=CheckInOrder, group=GROUP)
async def net_order(room_id: str, data: CheckInOrder) -> NetState:
    """Net control or a logger puts these entries first, in this order (unknown ids are
    ignored)."""
    _limit()
    return await _netlog().reorder(identity(), room_id, data.order)


@net_route("net/checkins/<checkin_id>", NetState, body=CheckInEdit, group=GROUP)
async def net_edit(room_id: str, checkin_id: str, data: CheckInEdit) -> NetState:
    """Net control or a logger edits an entry. 404 `checkin_not_found`, 409
    `already_checked_in` (the new callsign is another entry's)."""
    _limit()
    return await _netlog().edit(identity(), room_id, checkin_id, data)


@net_route("net/checkins/<checkin_id>", NetState, method="DELETE", group=GROUP)
async def net_remove(room_id: str, checkin_id: str) -> NetState:
    """Net control or a logger removes an entry. 404 `checkin_not_found`."""
    _limit()
    return await _netlog().remove(identity(), room_id, checkin_id)


@net_route("net/notes", NetEvent, body=NetNote, group=GROUP)
async def net_note(room_id: str, data: NetNote) -> NetEvent:
    """Net control or a logger adds a line to the log; the answer is that line."""
    _limit()
    return await _netlog().note(identity(), room_id, data.text)


@net_route("net/log", NetLogPage, method="GET", group=GROUP, query=LogQuery)
async def net_log(room_id: str) -> NetLogPage:
    """The open net's log: lines with seq > `after`, oldest first, at most `limit`
    (1-1000). 404 `no_net`."""
    query = query_args(LogQuery)
    return await _netlog().log_page(identity(), room_id, query.after, query.limit)


# ---------------------------------------------------------------- the archive


@net_route("nets", NetArchive, method="GET", group=GROUP, query=ArchiveQuery)
async def nets(room_id: str) -> NetArchive:
    """The room's closed nets, newest first: at most `limit` (1-100, default 50), closed
    before `before` (ISO time or unix seconds) when given."""
    query = query_args(ArchiveQuery)
    before = parse_time(query.before) if query.before else None
    return await _netlog().archive(identity(), room_id, query.limit, before)


@net_route("nets/<net_id>", NetRecord, method="GET", group=GROUP)
async def net_record(room_id: str, net_id: str) -> NetRecord:
    """One net of this room (open or archived) with its check-ins and whole log. 404
    `net_not_found`."""
    return await _netlog().record(identity(), room_id, net_id)


def _file_route(tail: str, answer: Any) -> None:
    async def download(room_id: str, net_id: str) -> Response:
        _limit()
        svc = services()
        doc = await svc.rooms.netlog.find(identity(), room_id, net_id)
        events = await svc.rooms.netlog.events(doc) if tail.startswith("log") else []
        room = svc.config.room(room_id)
        name = room.name if room else room_id
        body, media, filename = net_export.export(doc, events, name, tail)
        headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
        return Response(body, status=200, content_type=media, headers=headers)

    download.__name__ = "net_export_" + tail.replace(".", "_")
    download.__doc__ = f"The net's {tail} (an attachment named <room>-<date>-<name>-{tail})."
    net_route(f"nets/<net_id>/{tail}", answer, method="GET", group=GROUP, validate=False)(download)


for _tail, _answer in {
    "checkins.csv": CsvFile,
    "checkins.json": list[CheckIn],
    "log.csv": CsvFile,
    "log.json": list[NetEvent],
    "report.txt": TextFile,
}.items():
    _file_route(_tail, _answer)
