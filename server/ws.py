"""WebSocket endpoints: `/ws` for participants, `/sfu/ws` for SFU workers."""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import ValidationError
from quart import Blueprint, abort, websocket

from .auth import WORKER_ROLE, AuthError, bearer, verify_token
from .connections import ClientConnection, WorkerConnection, error_frame
from .context import services
from .origins import origin_allowed
from .protocol import (
    WORKER_FRAMES,
    WorkerHello,
    WorkerLoad,
    WorkerSignal,
    WorkerSlots,
    describe,
    parse_json,
)
from .rooms import participant_channel, worker_channel
from .store import WorkerRecord

log = logging.getLogger(__name__)

blueprint = Blueprint("ws", __name__)

HELLO_TIMEOUT = 5.0


def _check_origin() -> None:
    svc = services()
    origin = websocket.headers.get("Origin")
    if not origin_allowed(origin, websocket.headers.get("Host"), svc.config.server.allowed_origins):
        log.warning("websocket refused: origin %s not allowed", origin)
        abort(403)


@blueprint.websocket("/ws")
async def client_socket() -> None:
    svc = services()
    _check_origin()
    token = websocket.args.get("token") or bearer(websocket.headers.get("Authorization"))
    try:
        identity = verify_token(svc.config, token)
        if identity.role == WORKER_ROLE:
            raise AuthError("worker tokens belong on /sfu/ws")
    except AuthError as exc:
        # Accept so that a browser learns why (a refused upgrade tells it nothing).
        await websocket.accept()
        code = "token_expired" if "expired" in str(exc) else "unauthorized"
        await websocket.send_json(error_frame(code, str(exc)))
        await websocket.close(4401, str(exc)[:100])
        return
    await websocket.accept()
    conn = ClientConnection(websocket, identity)
    subscription = await svc.bus.subscribe(participant_channel(identity.participant_id))
    svc.local_sockets[conn.id] = conn
    try:
        await svc.rooms.socket_opened(identity.participant_id, conn.id, svc.node_id)
        conn.send(conn.hello())
        await conn.serve(subscription, deadline=identity.expires_at)
    finally:
        svc.local_sockets.pop(conn.id, None)
        await svc.rooms.socket_closed(identity.participant_id, conn.id)


@blueprint.websocket("/sfu/ws")
async def worker_socket() -> None:
    svc = services()
    token = bearer(websocket.headers.get("Authorization")) or websocket.args.get("token")
    try:
        identity = verify_token(svc.config, token)
    except AuthError:
        abort(401)
    if identity.role != WORKER_ROLE:
        abort(403)
    await websocket.accept()
    try:
        first = await _receive_hello()
    except ValueError as exc:
        await websocket.send_json(
            {"type": "error", "data": {"code": "bad_hello", "message": str(exc)}}
        )
        await websocket.close(4400, "expected hello")
        return
    hello = first
    ttl = svc.config.sfu.heartbeat_timeout
    record = WorkerRecord(
        id=hello.workerId,
        slots=hello.slots,
        last_seen=time.time(),
        info={"pid": hello.pid, "host": hello.host},
    )

    async def handle(type_: str, data: dict[str, Any]) -> None:
        if type_ == "error":
            # The worker refused one of our frames; it is logged there too. Not answered.
            log.warning("sfu worker %s reports: %.200s", record.id, data)
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
        if isinstance(message, WorkerLoad):
            record.load = message.model_dump()
            record.last_seen = time.time()
            await svc.store.worker_seen(record, ttl)
        elif isinstance(message, WorkerSignal):
            await svc.rooms.worker_signal(
                record.id, message.roomId, message.to, message.type, message.data
            )
        elif isinstance(message, WorkerSlots):
            await svc.rooms.worker_slots(
                record.id,
                message.roomId,
                {
                    "slots": [s.model_dump() for s in message.slots],
                    "speaking": message.speaking,
                },
            )

    conn = WorkerConnection(websocket, handle)
    subscription = await svc.bus.subscribe(worker_channel(record.id))
    await svc.store.worker_seen(record, ttl)
    svc.local_sockets[conn.id] = conn
    log.info("sfu worker %s registered (slots=%d pid=%s)", record.id, record.slots, hello.pid)
    try:
        await conn.serve(subscription, deadline=None)
    finally:
        svc.local_sockets.pop(conn.id, None)
        log.warning("sfu worker %s disconnected", record.id)
        if await svc.store.remove_worker(record.id):
            await svc.rooms.worker_lost(record.id)


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
