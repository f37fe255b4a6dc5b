"""REST routes: YAHAML's voice-room API (same paths and shapes) plus sessions and ICE."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError
from quart import Blueprint, g, request
from quart_schema import (
    document_headers,
    document_querystring,
    document_request,
    document_response,
    tag,
    validate_request,
    validate_response,
)

from yahaml_voice.core.protocol import (
    DropNotice,
    ErrorAnswer,
    FloorOrder,
    FloorRequestBody,
    FloorState,
    FloorTarget,
    IceConfigAnswer,
    JoinAnswer,
    JoinRequest,
    ModerationAppoint,
    ModerationBan,
    ModerationMute,
    ModerationRemove,
    ModerationUnban,
    MuteRequest,
    RoomDetail,
    RoomSummary,
    SessionAnswer,
    SessionInfo,
    SessionRequest,
    SfuInfo,
    SignalAnswer,
    SignalRequest,
    Success,
    VolumeRequest,
    describe,
)
from yahaml_voice.core.timestamps import iso
from yahaml_voice.core.tokens import Identity, ice_config, issue_token

from .auth import authenticate
from .callsign import CallsignError, normalize_callsign
from .context import services
from .errors import ApiError
from .limits import Limits
from .views import participant_view, peer_view

blueprint = Blueprint("api", __name__, url_prefix="/api")

P = ParamSpec("P")
R = TypeVar("R")


class AuthHeaders(BaseModel):
    authorization: str


def authenticated(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Require `Authorization: Bearer <token>` (or `?token=` as YAHAML allows); an
    AuthError is answered 401 (app.py)."""

    @wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        svc = services()
        g.identity = await authenticate(
            svc.config, svc.store, request.headers.get("Authorization"), request.args.get("token")
        )
        return await func(*args, **kwargs)

    return wrapper


M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

# The error statuses a participant route can answer, each as {error, message} (so the
# OpenAPI document, and schemathesis checking against it, knows them all).
ROOM_ERRORS = (400, 401, 403, 404, 409, 413, 429, 503)
SESSION_ERRORS = (400, 403, 413, 429, 503)


def errors(*statuses: int) -> Callable[[F], F]:
    """Document ErrorAnswer for each status (the handlers in app.py produce them)."""

    def decorate(func: F) -> F:
        for status in statuses:
            func = document_response(ErrorAnswer, status)(func)
        return func

    return decorate


async def optional_body(model: type[M]) -> M:
    """Validate a JSON body that may be left out entirely."""
    raw = await request.get_data()
    if not raw.strip():
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(400, "bad_request", describe(exc)) from exc


def query_args(model: type[M]) -> M:
    """Validate the query string (after authentication: an unknown caller learns nothing
    from a 400); any other parameter (`token`) is ignored."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise ApiError(400, "bad_request", describe(exc)) from exc


def client_address(limits: Limits) -> str:
    """The source address limits are keyed by (see server.trusted_proxies)."""
    return limits.client_address(request.remote_addr, request.headers.getlist("X-Forwarded-For"))


def identity() -> Identity:
    found = g.identity
    assert isinstance(found, Identity)
    return found


# ---------------------------------------------------------------------------- sessions


@blueprint.post("/sessions")
@tag(["sessions"])
@errors(*SESSION_ERRORS)
@validate_request(SessionRequest)
@validate_response(SessionAnswer, 201)
async def create_session(data: SessionRequest) -> tuple[SessionAnswer, int]:
    """Open mode: a fresh participant id and a signed token for a callsign."""
    svc = services()
    if svc.config.auth.mode != "open":
        raise ApiError(
            403,
            "sessions_disabled",
            "this server issues tokens by invitation only; ask your net control for an invite link",
        )
    svc.limits.session(client_address(svc.limits))
    try:
        callsign = normalize_callsign(data.callsign)
    except CallsignError as exc:
        raise ApiError(400, "bad_callsign", str(exc)) from exc
    token, ident = issue_token(svc.config, callsign, role="operator", rooms="*")
    answer = SessionAnswer(
        token=token,
        expiresAt=iso(ident.expires_at),
        sessionId=ident.session_id,
        participantId=ident.participant_id,
        callsign=ident.callsign,
        role=ident.role,
    )
    return answer, 201


@blueprint.get("/sessions/me")
@tag(["sessions"])
@document_headers(AuthHeaders)
@validate_response(SessionInfo)
@errors(*ROOM_ERRORS)
@authenticated
async def whoami() -> SessionInfo:
    """Who the presented token speaks for (an invite link's page uses it)."""
    ident = identity()
    return SessionInfo(
        participantId=ident.participant_id,
        callsign=ident.callsign,
        role=ident.role,
        rooms=ident.rooms if ident.rooms == "*" else list(ident.rooms),
        expiresAt=iso(ident.expires_at),
        sessionId=ident.session_id,
    )


@blueprint.post("/sessions/logout")
@tag(["sessions"])
@document_headers(AuthHeaders)
@validate_response(Success)
@errors(*ROOM_ERRORS)
@authenticated
async def logout() -> Success:
    """Leave every room and revoke this token (every server process refuses it from now
    on, until it would have expired); its open WebSockets get an error frame `revoked`
    and close with 4401."""
    await services().rooms.logout(identity())
    return Success()


# ---------------------------------------------------------------------------- ICE


@blueprint.get("/ice-servers")
@tag(["ice"])
@document_headers(AuthHeaders)
@validate_response(IceConfigAnswer)
@errors(*ROOM_ERRORS)
@authenticated
async def ice_servers() -> IceConfigAnswer:
    """STUN/TURN servers with fresh time-limited TURN credentials, for participants who hold
    a seat in a room (clients renew them here before `ttl` runs out)."""
    svc = services()
    ident = identity()
    if not await svc.store.rooms_of(ident.participant_id):
        raise ApiError(
            403, "not_in_room", "TURN credentials are for participants in a room; join one first"
        )
    return ice_config(svc.config, ident.participant_id)


# ---------------------------------------------------------------------------- voice rooms


@blueprint.get("/voice-rooms")
@tag(["voice-rooms"])
@document_headers(AuthHeaders)
@document_response(list[RoomSummary])
@errors(*ROOM_ERRORS)
@authenticated
async def list_rooms() -> list[dict[str, Any]]:
    rooms: list[RoomSummary] = await services().rooms.list_rooms(identity())
    return [r.model_dump() for r in rooms]


@blueprint.get("/voice-rooms/<room_id>")
@tag(["voice-rooms"])
@document_headers(AuthHeaders)
@validate_response(RoomDetail)
@errors(*ROOM_ERRORS)
@authenticated
async def get_room(room_id: str) -> RoomDetail:
    return await services().rooms.detail(identity(), room_id)


@blueprint.post("/voice-rooms/<room_id>/join")
@tag(["voice-rooms"])
@document_headers(AuthHeaders)
@document_request(JoinRequest)
@validate_response(JoinAnswer)
@errors(*ROOM_ERRORS)
@authenticated
async def join_room(room_id: str) -> JoinAnswer:
    """Join (or rejoin within the grace period); returns peers, mode and ICE servers.

    The body is optional (all its fields have defaults), as in YAHAML.
    """
    svc = services()
    ident = identity()
    data = await optional_body(JoinRequest)
    svc.limits.join(ident.participant_id)
    joined = await svc.rooms.join(
        ident, room_id, data.audioSourceType, data.joinMode, client_address(svc.limits)
    )
    ice = ice_config(svc.config, ident.participant_id)
    return JoinAnswer(
        participant=participant_view(joined.participant),
        peers=[peer_view(p) for p in joined.peers],
        mode=joined.state.mode,
        epoch=joined.state.epoch,
        iceServers=ice.iceServers,
        iceTransportPolicy=ice.iceTransportPolicy,
        sfu=SfuInfo(slots=svc.config.sfu.slots),
        gracePeriod=svc.config.server.grace_period,
        iceTtl=ice.ttl,
        recording=await svc.rooms.recordings.current(room_id),
    )


@blueprint.post("/voice-rooms/<room_id>/leave")
@tag(["voice-rooms"])
@document_headers(AuthHeaders)
@validate_response(Success)
@errors(*ROOM_ERRORS)
@authenticated
async def leave_room(room_id: str) -> Success:
    await services().rooms.leave(identity(), room_id)
    return Success()


@blueprint.post("/voice-rooms/<room_id>/participants/<participant_id>/remove")
@tag(["voice-rooms"])
@document_headers(AuthHeaders)
@validate_response(Success)
@errors(*ROOM_ERRORS)
@authenticated
async def remove_participant(room_id: str, participant_id: str) -> Success:
    """Net control (role `ncs`) removes a participant: participantLeft with reason
    `removed`, its token's session revoked, its sockets closed (error frame `removed`, 4401)."""
    await services().rooms.remove(identity(), room_id, participant_id)
    return Success()


@blueprint.post("/voice-rooms/<room_id>/signal")
@tag(["voice-rooms"])
@document_headers(AuthHeaders)
@validate_request(SignalRequest)
@validate_response(SignalAnswer)
@errors(*ROOM_ERRORS)
@authenticated
async def signal(room_id: str, data: SignalRequest) -> SignalAnswer:
    """Relay an offer/answer/candidate to one peer (`to`), the room, or `sfu`."""
    svc = services()
    svc.limits.signal(identity().participant_id)
    delivered = await svc.rooms.signals.signal(identity(), room_id, data)
    return SignalAnswer(delivered=delivered)


@blueprint.post("/voice-rooms/<room_id>/mute")
@tag(["voice-rooms"])
@document_headers(AuthHeaders)
@validate_request(MuteRequest)
@validate_response(Success)
@errors(*ROOM_ERRORS)
@authenticated
async def mute(room_id: str, data: MuteRequest) -> Success:
    await services().rooms.set_muted(identity(), room_id, data.isMuted)
    return Success()


@blueprint.post("/voice-rooms/<room_id>/volume")
@tag(["voice-rooms"])
@document_headers(AuthHeaders)
@validate_request(VolumeRequest)
@validate_response(Success)
@errors(*ROOM_ERRORS)
@authenticated
async def volume(room_id: str, data: VolumeRequest) -> Success:
    await services().rooms.set_volume(identity(), room_id, data.volume)
    return Success()


# ---------------------------------------------------------------------------- net control
# docs/protocol.md "Net control". Floor routes answer the new FloorState (every member
# also gets it as floorChanged); moderation routes answer success (and a `moderation`
# frame goes to every member). Rate-limited with the signals of the caller.


def _net_limit() -> None:
    svc = services()
    svc.limits.signal(identity().participant_id)


Handler = Callable[..., Awaitable[Any]]


def net_route(
    path: str,
    answer: Any,
    *,
    body: type[BaseModel] | None = None,
    optional: type[BaseModel] | None = None,
    method: str = "POST",
    group: str = "net-control",
    query: type[BaseModel] | None = None,
    validate: bool = True,
) -> Callable[[Handler], Handler]:
    """One net-control (or net-log, `group`) route: authenticated, documented, its answer
    validated.

    `body` is a required, validated JSON body (passed as `data`); `optional` a body the
    handler reads itself with optional_body(), `query` query parameters it reads with
    query_args() (both documented only)."""

    def wrap(handler: Handler) -> Handler:
        route = authenticated(handler)
        route = errors(*ROOM_ERRORS)(route)
        if validate:
            route = validate_response(answer)(route)
        else:
            route = document_response(answer)(route)
        if body is not None:
            route = validate_request(body)(route)
        if optional is not None:
            route = document_request(optional)(route)
        if query is not None:
            route = document_querystring(query)(route)
        route = document_headers(AuthHeaders)(route)
        route = tag([group])(route)
        return blueprint.route(f"/voice-rooms/<room_id>/{path}", methods=[method])(route)

    return wrap


@net_route("floor", FloorState, method="GET")
async def get_floor(room_id: str) -> FloorState:
    """Who holds the floor, who waits (in order), who is muted or appointed."""
    return await services().rooms.net.state(identity(), room_id)


@net_route("floor/request", FloorState, optional=FloorRequestBody)
async def floor_request(room_id: str) -> FloorState:
    """Ask for the floor (`kind`, default comment); asking again changes the kind. 403
    `cannot_publish` for listeners; 409 `holds_floor` for a holder."""
    data = await optional_body(FloorRequestBody)
    _net_limit()
    return await services().rooms.net.request(identity(), room_id, data.kind)


@net_route("floor/release", FloorState)
async def floor_release(room_id: str) -> FloorState:
    """Leave the queue and/or give up the floor; 404 `not_queued` if neither."""
    _net_limit()
    return await services().rooms.net.release(identity(), room_id)


@net_route("floor/grant", FloorState, optional=FloorTarget)
async def floor_grant(room_id: str) -> FloorState:
    """Net control gives the floor to `participantId` (null or no body: the head of the
    queue; 409 `queue_empty`). At maxTalkers the longest holder is released."""
    data = await optional_body(FloorTarget)
    _net_limit()
    return await services().rooms.net.grant(identity(), room_id, data.participantId)


@net_route("floor/revoke", FloorState, optional=FloorTarget)
async def floor_revoke(room_id: str) -> FloorState:
    """Net control takes the floor from `participantId` (null or no body: every holder)."""
    data = await optional_body(FloorTarget)
    _net_limit()
    return await services().rooms.net.revoke(identity(), room_id, data.participantId)


@net_route("floor/queue", FloorState, body=FloorOrder)
async def floor_queue(room_id: str, data: FloorOrder) -> FloorState:
    """Net control puts these queued participants first, in this order."""
    _net_limit()
    return await services().rooms.net.reorder(identity(), room_id, data.order)


@net_route("floor/clear", FloorState)
async def floor_clear(room_id: str) -> FloorState:
    """Net control empties the queue (holders keep the floor)."""
    _net_limit()
    return await services().rooms.net.clear(identity(), room_id)


@net_route("floor/open", FloorState)
async def floor_open(room_id: str) -> FloorState:
    """Net control opens the floor (roll call): every member who may publish talks."""
    _net_limit()
    return await services().rooms.net.set_open(identity(), room_id, True)


@net_route("floor/close", FloorState)
async def floor_close(room_id: str) -> FloorState:
    """Net control closes the floor again: only holders and net control talk."""
    _net_limit()
    return await services().rooms.net.set_open(identity(), room_id, False)


@net_route("moderation/mute", Success, body=ModerationMute)
async def moderation_mute(room_id: str, data: ModerationMute) -> Success:
    """Net control mutes (or lets unmute) a participant; the muted cannot unmute
    themselves (403 `muted_by_ncs`)."""
    _net_limit()
    await services().rooms.net.mute(identity(), room_id, data.participantId, data.muted)
    return Success()


@net_route("moderation/remove", Success, body=ModerationRemove)
async def moderation_remove(room_id: str, data: ModerationRemove) -> Success:
    """Net control removes a participant (session revoked, sockets closed) and bans its
    callsign for the room's ban_time (0: until the room empties)."""
    _net_limit()
    await services().rooms.remove(identity(), room_id, data.participantId, data.reason)
    return Success()


@net_route("moderation/ban", Success, body=ModerationBan)
async def moderation_ban(room_id: str, data: ModerationBan) -> Success:
    """Net control bans a callsign (joins answer 403 `banned`); a member under it is
    removed."""
    _net_limit()
    await services().rooms.net.ban(identity(), room_id, data.callsign, data.duration, data.reason)
    return Success()


@net_route("moderation/unban", Success, body=ModerationUnban)
async def moderation_unban(room_id: str, data: ModerationUnban) -> Success:
    """Net control lifts a ban; 404 `not_banned`."""
    _net_limit()
    await services().rooms.net.unban(identity(), room_id, data.callsign)
    return Success()


@net_route("moderation/appoint", Success, body=ModerationAppoint)
async def moderation_appoint(room_id: str, data: ModerationAppoint) -> Success:
    """Net control appoints a participant `ncs` or `logger` for this net (null: dismiss)."""
    _net_limit()
    await services().rooms.net.appoint(identity(), room_id, data.participantId, data.role)
    return Success()


# ---------------------------------------------------------------------------- test hooks

test_blueprint = Blueprint("test_hooks", __name__, url_prefix="/api/test")


@test_blueprint.post("/drop-sockets/<participant_id>")
@tag(["test"])
async def drop_sockets(participant_id: str) -> dict[str, Any]:
    """Close every socket of a participant (only when server.test_hooks is on)."""
    await services().rooms.delivery.to_participant(participant_id, DropNotice())
    return {"success": True, "at": time.time()}


__all__ = ["ApiError", "ErrorAnswer", "blueprint", "test_blueprint"]
