"""REST routes of the admin API (docs/admin.md), on the API blueprint: rooms at runtime,
invites, the live overview. Every route needs a token with the role `admin` (403
`admin_only` otherwise); importing this module adds them (app.py does).

A room travels as a `rooms:` entry of the configuration file (RoomConfig, snake_case
keys, durations in seconds or as "90s"), so what an admin types and what a sysadmin
writes in the file are the same thing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from pydantic import TypeAdapter, ValidationError
from quart import request
from quart_schema import (
    document_headers,
    document_response,
    tag,
    validate_request,
    validate_response,
)

from yahaml_voice.core.config import RoomConfig
from yahaml_voice.core.protocol import (
    AdminOverview,
    InviteId,
    InviteInfo,
    InviteList,
    InviteMinted,
    InviteRequest,
    Success,
)

from .admin import require_admin
from .api import AuthHeaders, authenticated, blueprint, errors, identity
from .context import services
from .errors import ApiError

P = ParamSpec("P")
R = TypeVar("R")

# The statuses an admin route answers besides its success, each as {error, message}.
ADMIN_ERRORS = (400, 401, 403, 404, 409, 413, 429, 503)


def admin_only(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Authenticated, role admin, rate-limited with the caller's signals."""

    @wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ident = identity()
        require_admin(ident)
        services().limits.signal(ident.participant_id)
        return await func(*args, **kwargs)

    return authenticated(wrapper)


def _base_url() -> str:
    public = services().config.server.public_url
    return (public or request.host_url).rstrip("/")


_INVITE_ID: TypeAdapter[str] = TypeAdapter(InviteId)


def _invite_id(invite_id: str) -> str:
    """404 for anything that is not an invite id (never a 500, never a lookup)."""
    try:
        return _INVITE_ID.validate_python(invite_id)
    except ValidationError:
        raise ApiError(404, "invite_not_found", "no such invite") from None


@blueprint.get("/admin/rooms")
@tag(["admin"])
@document_headers(AuthHeaders)
@document_response(list[RoomConfig])
@errors(*ADMIN_ERRORS)
@admin_only
async def admin_rooms() -> list[dict[str, Any]]:
    """Every room definition, in order (the catalog: the file's rooms and the admin's)."""
    return [room.model_dump(mode="json") for room in services().config.rooms]


@blueprint.post("/admin/rooms")
@tag(["admin"])
@document_headers(AuthHeaders)
@validate_request(RoomConfig)
@validate_response(RoomConfig, 201)
@errors(*ADMIN_ERRORS)
@admin_only
async def admin_create_room(data: RoomConfig) -> tuple[RoomConfig, int]:
    """Add a room (409 `room_exists`, `too_many_rooms`); every server process has it within
    a few seconds, and it survives restarts."""
    return await services().admin.create_room(identity(), data), 201


@blueprint.put("/admin/rooms/<room_id>")
@tag(["admin"])
@document_headers(AuthHeaders)
@validate_request(RoomConfig)
@validate_response(RoomConfig)
@errors(*ADMIN_ERRORS)
@admin_only
async def admin_update_room(room_id: str, data: RoomConfig) -> RoomConfig:
    """Replace a room's definition (same id). `floor`, `kind` and `record` change only
    while the room is empty (409 `room_occupied`); the rest applies at once."""
    return await services().admin.update_room(identity(), room_id, data)


@blueprint.delete("/admin/rooms/<room_id>")
@tag(["admin"])
@document_headers(AuthHeaders)
@validate_response(Success)
@errors(*ADMIN_ERRORS)
@admin_only
async def admin_delete_room(room_id: str) -> Success:
    """Remove a room: its members get participantLeft (about themselves) with reason
    `room_closed` and lose their seats; it leaves its SFU worker."""
    await services().admin.delete_room(identity(), room_id)
    return Success()


@blueprint.get("/admin/invites")
@tag(["admin"])
@document_headers(AuthHeaders)
@validate_response(InviteList)
@errors(*ADMIN_ERRORS)
@admin_only
async def admin_invites() -> InviteList:
    """The invites minted here, newest first (active, expired and revoked)."""
    return services().admin.invites()


@blueprint.post("/admin/invites")
@tag(["admin"])
@document_headers(AuthHeaders)
@validate_request(InviteRequest)
@validate_response(InviteMinted, 201)
@errors(*ADMIN_ERRORS)
@admin_only
async def admin_mint_invite(data: InviteRequest) -> tuple[InviteMinted, int]:
    """Mint an invite link for a callsign, a room (or "*") and a role; the token is in
    the answer only (409 `too_many_invites`)."""
    return await services().admin.mint_invite(identity(), data, _base_url()), 201


@blueprint.post("/admin/invites/<invite_id>/revoke")
@tag(["admin"])
@document_headers(AuthHeaders)
@validate_response(InviteInfo)
@errors(*ADMIN_ERRORS)
@admin_only
async def admin_revoke_invite(invite_id: str) -> InviteInfo:
    """Revoke one invite: its token is refused from now on (REST and WebSocket, every
    process), its seats are freed (reason `revoked`), its sockets closed (error frame
    `revoked`, 4401). Revoking again changes nothing."""
    return await services().admin.revoke_invite(identity(), _invite_id(invite_id))


@blueprint.get("/admin/overview")
@tag(["admin"])
@document_headers(AuthHeaders)
@validate_response(AdminOverview)
@errors(*ADMIN_ERRORS)
@admin_only
async def admin_overview() -> AdminOverview:
    """The live view: rooms with their people, mode and worker; SFU workers with load."""
    return await services().admin.overview()
