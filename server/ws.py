"""WebSocket endpoints: `/ws` for participants, `/sfu/ws` for SFU workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from pydantic import BaseModel, ValidationError
from quart import Blueprint, abort, websocket

from yahaml_voice.core.protocol import (
    WORKER_FRAMES,
    WS_SUBPROTOCOL,
    ErrorData,
    ToWorkerRoomClosed,
    ToWorkerRoomClosedFrame,
    WorkerCascadeReady,
    WorkerDraining,
    WorkerHello,
    WorkerLinks,
    WorkerLoad,
    WorkerRecording,
    WorkerRoomState,
    WorkerSignal,
    WorkerSlots,
    WorkerTalker,
    WorkerTransmission,
    control_error,
    describe,
    error_frame,
    parse_json,
    wire,
)
from yahaml_voice.core.tokens import AuthError, verify_worker_token

from .auth import authenticate, ensure_not_revoked, presented_token
from .connections import CLOSE_TIMEOUT, ClientConnection, WorkerConnection
from .context import Services, services
from .delivery import participant_channel, worker_channel
from .errors import ApiError
from .limits import WORKER_BACKLOG, RateLimited
from .origins import origin_allowed
from .store import WorkerRecord
from .worker_lanes import Lanes

log = logging.getLogger(__name__)

blueprint = Blueprint("ws", __name__)

HELLO_TIMEOUT = 5.0


def _check_origin() -> None:
    svc = services()
    origin = websocket.headers.get("Origin")
    if not origin_allowed(origin, websocket.headers.get("Host"), svc.config.server.allowed_origins):
        log.warning("websocket refused: origin %s not allowed", origin)
        abort(403)


def _check_capacity() -> None:
    svc = services()
    if len(svc.local_sockets) >= svc.config.server.max_sockets:
        log.warning(
            "websocket refused: %d sockets open (server.max_sockets)", len(svc.local_sockets)
        )
        raise ApiError(
            503, "server_full", "this server holds as many sockets as it may; retry later"
        )


def _check_running() -> None:
    """A stopping process refuses new sockets before the upgrade: the caller retries and
    reaches the process that replaces it (or another one), not one about to cut it off."""
    if services().stopping:
        raise ApiError(
            503,
            "restarting",
            "this server process is stopping; connect again shortly",
            {"Retry-After": "1"},
        )


def _subprotocol() -> str | None:
    """The subprotocol to accept (the token may travel as another one, see auth.py)."""
    return WS_SUBPROTOCOL if WS_SUBPROTOCOL in websocket.requested_subprotocols else None


@blueprint.websocket("/ws")
async def client_socket() -> None:
    svc = services()
    _check_running()
    _check_origin()
    _check_capacity()
    # An AuthError refuses it before the upgrade: nothing is held for a caller without a
    # valid token (a page learns why from the same 401 on GET /api/sessions/me).
    identity = await authenticate(
        svc.config,
        svc.store,
        websocket.headers.get("Authorization"),
        websocket.args.get("token"),
        websocket.requested_subprotocols,
    )
    await websocket.accept(subprotocol=_subprotocol())
    conn = ClientConnection(websocket, identity, svc.limits, svc.rooms.signals.signal)
    try:
        await svc.rooms.presence.socket_opened(identity.participant_id, conn.id, svc.node_id)
    except RateLimited as exc:
        log.info("websocket refused: participant=%s %s", identity.participant_id, exc.limit)
        with contextlib.suppress(Exception):  # the client may be gone already
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await websocket.send_json(wire(error_frame(exc.code, exc.message)))
                await websocket.close(4429, "too many sockets")
        return
    try:
        subscription = await svc.bus.subscribe(participant_channel(identity.participant_id))
        svc.local_sockets[conn.id] = conn
        conn.send(conn.hello())
        try:
            # Again, now that we are subscribed: a logout in between sent its close
            # to a channel we were not listening on yet.
            await ensure_not_revoked(svc.store, identity)
        except AuthError as exc:
            conn.send(conn.error(exc.code, str(exc)))
            conn.close(4401, str(exc)[:100])
        await conn.serve(subscription, deadline=identity.expires_at)
    finally:
        svc.local_sockets.pop(conn.id, None)
        await svc.rooms.presence.socket_closed(identity.participant_id, conn.id)


@blueprint.websocket("/sfu/ws")
async def worker_socket() -> None:
    svc = services()
    token = presented_token(websocket.headers.get("Authorization"), websocket.args.get("token"))
    try:
        verify_worker_token(svc.config, token)
    except AuthError:
        abort(401)
    _check_running()
    _check_capacity()
    await websocket.accept()
    try:
        first = await _receive_hello()
    except ValueError as exc:
        await websocket.send_json(wire(control_error("bad_hello", str(exc))))
        await websocket.close(4400, "expected hello")
        return
    hello = first
    ttl = svc.config.sfu.heartbeat_timeout
    # Only the connection holding the claim on the worker id may (de)register it.
    owner = uuid.uuid4().hex
    if not await svc.store.claim_worker(hello.workerId, owner, ttl):
        log.warning("sfu worker id %s refused: it is registered and live", hello.workerId)
        taken = f"worker id {hello.workerId!r} is registered and live"
        await websocket.send_json(wire(control_error("worker_id_taken", taken)))
        await websocket.close(4409, "worker id in use")
        return
    record = WorkerRecord(
        id=hello.workerId,
        slots=hello.slots,
        last_seen=time.time(),
        info={"pid": hello.pid, "host": hello.host},
    )

    async def handle(type_: str, data: dict[str, Any]) -> None:
        if type_ == "error":
            # The worker refused one of our frames; it is logged there too. Not answered.
            try:
                error = ErrorData.model_validate(data)
                log.warning(
                    "sfu worker %s reports %s: %.200s", record.id, error.code, error.message
                )
            except ValidationError:
                log.warning("sfu worker %s sent a malformed error frame: %.200s", record.id, data)
            return
        model = WORKER_FRAMES.get(type_)
        if model is None:
            conn.send(conn.error("bad_frame", f"unknown frame type {type_!r}"))
            return
        try:
            message = model.model_validate(data)
        except ValidationError as exc:
            conn.send(conn.error("bad_frame", f"{type_}.{describe(exc, root='data')}"))
            return
        # The read loop only parses: handling (store and bus round trips, broadcasts) runs
        # on the frame's room lane, in order per room, rooms independent of each other.
        lanes.submit(getattr(message, "roomId", None), message)

    def dropped(room: str | None, first: bool) -> None:
        svc.limits.refuse(WORKER_BACKLOG)
        if first:
            conn.send(
                conn.error("overloaded", f"frames of room {room!r} backed up; some were dropped")
            )

    async def process(message: BaseModel) -> None:
        if isinstance(message, WorkerLoad):
            if svc.keep_worker_rooms:
                return  # hold_workers() renewed it for longer; keep that
            if not await svc.store.claim_worker(record.id, owner, ttl):
                conn.send(conn.error("worker_id_taken", "another connection took this worker id"))
                conn.close(4409, "worker id in use")
                return
            record.load = message.model_dump()
            record.last_seen = time.time()
            await svc.store.worker_seen(record, ttl)
        elif isinstance(message, WorkerDraining):
            if not record.draining:
                log.info("sfu worker %s draining (exits within %.0f s)", record.id, message.timeout)
            # In the record every process reads: none of them places a room here again.
            record.draining = True
            await svc.store.worker_seen(record, ttl)
            await svc.rooms.modes.drain(record.id)
        elif isinstance(message, WorkerSignal):
            await svc.rooms.signals.worker_signal(
                record.id, message.roomId, message.to, message.type, message.data
            )
        elif isinstance(message, WorkerSlots):
            await svc.rooms.signals.worker_slots(
                record.id, message.roomId, message.slots, message.speaking
            )
        elif isinstance(message, WorkerRoomState):
            if not await svc.rooms.signals.worker_holds(record.id, message.roomId):
                log.info("sfu worker %s holds room %s placed elsewhere", record.id, message.roomId)
                closed = ToWorkerRoomClosedFrame(data=ToWorkerRoomClosed(roomId=message.roomId))
                conn.send(wire(closed))
            elif await svc.rooms.signals.is_origin(record.id, message.roomId):
                # Reconciled: the worker (re)learns whom to forward and what to record.
                await svc.rooms.net.tell_worker(message.roomId, record.id)
                await svc.rooms.recordings.reconcile(message.roomId, record.id)
        elif isinstance(message, WorkerLinks):
            await svc.rooms.signals.worker_links(record.id, message)
        elif isinstance(message, WorkerTalker):
            if await svc.rooms.signals.is_origin(record.id, message.roomId):
                await svc.rooms.net.worker_talker(message)
        elif isinstance(message, WorkerRecording):
            # Only the worker a recording was started on (the origin then) is heard.
            await svc.rooms.recordings.worker_recording(record.id, message)
        elif isinstance(message, WorkerTransmission):
            await svc.rooms.recordings.worker_transmission(record.id, message)
        elif isinstance(message, WorkerCascadeReady):
            if not await svc.rooms.modes.edge_ready(record.id, message):
                log.info("sfu worker %s is no edge of room %s", record.id, message.roomId)
                closed = ToWorkerRoomClosedFrame(data=ToWorkerRoomClosed(roomId=message.roomId))
                conn.send(wire(closed))

    conn = WorkerConnection(websocket, handle)
    lanes: Lanes[BaseModel] = Lanes(f"sfu worker {record.id}", process, dropped)
    subscription = await svc.bus.subscribe(worker_channel(record.id))
    await svc.store.worker_seen(record, ttl)
    svc.local_sockets[conn.id] = conn
    svc.local_workers[conn.id] = record
    log.info("sfu worker %s registered (slots=%d pid=%s)", record.id, record.slots, hello.pid)
    try:
        await conn.serve(subscription, deadline=None)
    finally:
        # Decided now, before any await: whether the socket closed by this process's stop.
        keep_rooms = svc.keep_worker_rooms and not record.draining
        svc.local_workers.pop(conn.id, None)
        await lanes.stop()
        svc.local_sockets.pop(conn.id, None)
        await _worker_gone(svc, record, owner, keep_rooms)


def _hold_for(svc: Services) -> float:
    """How long a worker of a stopping process stays registered without a connection."""
    return max(svc.config.sfu.heartbeat_timeout, svc.config.server.grace_period)


async def hold_workers(svc: Services) -> None:
    """Before a stopping process closes its worker sockets: renew every (not draining)
    worker's registration for the grace period, so that the next process finds it live
    while it reconnects (the socket's own cleanup may be cut short by the shutdown)."""
    hold = _hold_for(svc)
    for record in list(svc.local_workers.values()):
        if not record.draining:
            await svc.store.worker_seen(record, hold)
            log.info(
                "sfu worker %s: registration held %.0f s for the next process", record.id, hold
            )


async def _worker_gone(svc: Services, record: WorkerRecord, owner: str, keep_rooms: bool) -> None:
    """A worker's control socket closed: re-place its rooms, unless only this process stops.

    A restart or upgrade of the server (SIGTERM, `keep_worker_rooms`) closes every worker
    socket, but the workers run on and media flows client <-> worker without the server. Their
    rooms stay put: the worker reconnects to the next process (or another one sharing the
    store), and its roomState after the hello reconciles. Its registration is renewed for
    the seats' grace period so the new process finds it live meanwhile; a worker that
    never comes back expires then and the worker check (modes.check_workers) re-places its
    rooms as for any silent worker. A draining worker goes for good, and so do the
    embedded ones, stopped before `keep_worker_rooms` is set: their rooms move at once."""
    if not await svc.store.release_worker(record.id, owner):
        log.warning("sfu worker %s disconnected (another connection holds it)", record.id)
        return
    if keep_rooms:
        log.info("sfu worker %s disconnected by this process stopping; its rooms stay", record.id)
        await svc.store.worker_seen(record, _hold_for(svc))
        return
    log.warning("sfu worker %s disconnected", record.id)
    if await svc.store.remove_worker(record.id):
        await svc.rooms.modes.worker_lost(record.id)


async def _receive_hello() -> WorkerHello:
    import asyncio

    try:
        raw = await asyncio.wait_for(websocket.receive(), HELLO_TIMEOUT)
        frame = parse_json(raw or b"")  # an empty binary frame arrives as None
    except (TimeoutError, ValueError) as exc:
        raise ValueError("the first frame must be hello") from exc
    if not isinstance(frame, dict) or frame.get("type") != "hello":
        raise ValueError("the first frame must be hello")
    try:
        return WorkerHello.model_validate(frame.get("data"))
    except ValidationError as exc:
        raise ValueError(describe(exc, root="data")) from exc
