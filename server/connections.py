"""One object per open WebSocket: a reader, a writer draining a bounded queue, and a pump
from the bus. A slow client can only hurt itself: when its queue overflows it is closed
and reconnects (its seat survives the grace period)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import ValidationError

from yahaml_voice.core.aio import cancel_and_wait
from yahaml_voice.core.protocol import (
    CHANNEL,
    PROTOCOL_VERSION,
    ConnectedData,
    ConnectedFrame,
    JsonError,
    PongFrame,
    RevokeData,
    SubscribedData,
    SubscribedFrame,
    UnsubscribedFrame,
    WsClientFrame,
    control_error,
    describe,
    error_frame,
    parse_json,
    wire,
)
from yahaml_voice.core.tokens import Identity

from .limits import Limits
from .store import Subscription

log = logging.getLogger(__name__)

SEND_QUEUE = 256
MAX_FRAME_BYTES = 64 * 1024
# Closing (flushing what is queued, then the close frame) never waits longer than this
# on a peer that does not read; the transport's write timeout then cuts it off.
CLOSE_TIMEOUT = 2.0


class Socket(Protocol):
    """What we need of quart's websocket object (and nothing else)."""

    async def receive(self) -> str | bytes: ...

    async def send(self, data: str | bytes) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...


class Closing(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Connection:
    """Shared machinery of client and worker sockets."""

    def __init__(self, socket: Socket) -> None:
        self.socket = socket
        self.id = uuid.uuid4().hex
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SEND_QUEUE)
        self._closing: Closing | None = None
        self._done = asyncio.Event()
        # The frame the writer took off the queue and is sending: a close cancels the
        # writer, and the flush sends it first so that it is not lost (an error frame
        # must precede its close even when other frames were being written).
        self._inflight: dict[str, Any] | None = None

    def send(self, message: dict[str, Any]) -> None:
        """Queue a frame; a client that cannot keep up is closed, never waited for."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close(1013, "too slow: send queue overflowed; reconnect")

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = Closing(code, reason)
            self._done.set()

    async def _writer(self) -> None:
        while True:
            self._inflight = await self.queue.get()
            await self.socket.send(json.dumps(self._inflight, separators=(",", ":")))
            self._inflight = None

    async def _pump(self, subscription: Subscription) -> None:
        async for message in subscription:
            self.deliver(message)
        if subscription.overflowed:
            self.close(1013, "too slow: messages backed up; reconnect")
        else:
            self.close(1012, "server going away")

    def deliver(self, message: dict[str, Any]) -> None:
        self.send(message)

    def admit_frame(self) -> bool:
        """Whether another inbound frame is within this socket's rate (no limit here)."""
        return True

    async def _reader(self) -> None:
        while True:
            # Quart hands an empty binary frame over as None (quart/asgi.py: `bytes or text`).
            raw = await self.socket.receive() or b""
            if not self.admit_frame():
                self.send(self.error("rate_limited", "too many frames; slow down"))
                self.close(4429, "too many frames")
                return
            if len(raw) > MAX_FRAME_BYTES:
                self.send(self.error("too_large", "frame larger than 64 KiB"))
                continue
            try:
                frame = parse_json(raw)
            except JsonError as exc:
                self.send(self.error(exc.code, f"frames must be JSON objects: {exc.message}"))
                continue
            if not isinstance(frame, dict):
                self.send(self.error("bad_frame", "frames must be JSON objects"))
                continue
            await self.handle(frame)

    def error(self, code: str, message: str) -> dict[str, Any]:
        return wire(error_frame(code, message))

    async def handle(self, frame: dict[str, Any]) -> None:
        raise NotImplementedError

    async def serve(self, subscription: Subscription, deadline: float | None) -> None:
        """Run until the peer goes, the server closes us, or `deadline` (unix time) passes."""
        tasks = [
            asyncio.create_task(self._reader()),
            asyncio.create_task(self._writer()),
            asyncio.create_task(self._pump(subscription)),
        ]
        waiter = asyncio.create_task(self._done.wait())
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        try:
            done, _ = await asyncio.wait(
                [*tasks, waiter], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                # The documented order: an error frame saying why, then the close.
                self.send(self.error("token_expired", "your token expired; log in again"))
                self.close(4401, "token expired")
            for task in done:
                if task is not waiter and not task.cancelled() and task.exception():
                    exc = task.exception()
                    if not isinstance(exc, ConnectionError | asyncio.CancelledError):
                        log.debug("socket %s ended: %r", self.id, exc)
        finally:
            try:
                await cancel_and_wait(*tasks, waiter)
            finally:
                await subscription.close()
        if self._closing is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._flush_and_close(self._closing)

    async def _flush_and_close(self, closing: Closing) -> None:
        """What was queued before the close (e.g. an error frame), then the close frame."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await self.socket.send(json.dumps(inflight, separators=(",", ":")))
        while not self.queue.empty():
            await self.socket.send(json.dumps(self.queue.get_nowait(), separators=(",", ":")))
        await self.socket.close(closing.code, closing.reason)


class ClientConnection(Connection):
    """A participant's socket on /ws."""

    def __init__(self, socket: Socket, identity: Identity, limits: Limits | None = None) -> None:
        super().__init__(socket)
        self.identity = identity
        self.subscribed = True
        self.room_filter: str | None = None
        self._limits = limits

    def admit_frame(self) -> bool:
        return self._limits is None or self._limits.frame(self.id)

    def deliver(self, message: dict[str, Any]) -> None:
        if message.get("type") == "_drop":
            self.close(4000, "dropped by the server")
            return
        if message.get("type") == "_revoke":
            try:
                self._revoked(RevokeData.model_validate(message.get("data")))
            except ValidationError as exc:  # a server process of another version
                log.warning("bad _revoke on the bus: %s", describe(exc, root="data"))
            return
        if not self.subscribed and message.get("channel") == CHANNEL:
            return
        data = message.get("data")
        if (
            self.room_filter
            and isinstance(data, dict)
            and data.get("roomId")
            not in (
                None,
                self.room_filter,
            )
        ):
            return
        self.send(message)

    def _revoked(self, data: RevokeData) -> None:
        """Logout or removal (RoomService.close_sockets): the error frame, then 4401."""
        if data.session is not None and data.session != self.identity.session_id:
            return
        self.send(self.error(data.code, data.message))
        self.close(4401, "token revoked")

    def hello(self) -> dict[str, Any]:
        data = ConnectedData(
            participantId=self.identity.participant_id,
            callsign=self.identity.callsign,
            role=self.identity.role,
            protocolVersion=PROTOCOL_VERSION,
            expiresAt=self.identity.expires_at,
        )
        return wire(ConnectedFrame(data=data))

    async def handle(self, frame: dict[str, Any]) -> None:
        try:
            msg = WsClientFrame.model_validate(frame)
        except ValidationError as exc:
            self.send(self.error("bad_frame", describe(exc, root="frame")))
            return
        if msg.type == "ping":
            self.send(wire(PongFrame(channel=msg.channel or CHANNEL, data=msg.data)))
        elif msg.type == "subscribe":
            if msg.channel not in (None, CHANNEL):
                self.send(self.error("bad_channel", f"unknown channel {msg.channel!r}"))
                return
            self.subscribed = True
            room = (msg.filters or {}).get("roomId")
            self.room_filter = room if isinstance(room, str) else None
            self.send(wire(SubscribedFrame(data=SubscribedData(filters=msg.filters or {}))))
        elif msg.type == "unsubscribe":
            self.subscribed = False
            self.send(wire(UnsubscribedFrame()))


FrameHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


class WorkerConnection(Connection):
    """An SFU worker's control socket on /sfu/ws."""

    def __init__(self, socket: Socket, handler: FrameHandler) -> None:
        super().__init__(socket)
        self._handler = handler

    def error(self, code: str, message: str) -> dict[str, Any]:
        return wire(control_error(code, message))

    async def handle(self, frame: dict[str, Any]) -> None:
        type_ = frame.get("type")
        data = frame.get("data")
        if not isinstance(type_, str) or not isinstance(data, dict):
            self.send(self.error("bad_frame", "frames are {type, data}"))
            return
        await self._handler(type_, data)
