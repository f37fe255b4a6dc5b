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
    AckData,
    AckFrame,
    ConnectedData,
    ConnectedFrame,
    JsonError,
    PongFrame,
    RevokeData,
    SignalRequest,
    SubscribedData,
    SubscribedFrame,
    UnsubscribedFrame,
    WsClientFrame,
    WsSignalFrame,
    control_error,
    describe,
    error_frame,
    parse_json,
    wire,
)
from yahaml_voice.core.tokens import Identity

from .errors import ApiError
from .limits import Limits, RateLimited
from .store import StoreError, Subscription

log = logging.getLogger(__name__)

SEND_QUEUE = 256
# Room for an SDP of the 64 KiB signals may carry (MAX_SDP_BYTES) and its envelope, so
# that an SDP too large is refused by the signal rules (413 too_large, with the id).
MAX_FRAME_BYTES = 96 * 1024
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

    def charged_elsewhere(self, frame: dict[str, Any]) -> bool:
        """Whether `frame` is rate-limited by its handler instead of the frame rate."""
        return False

    def _over_rate(self) -> bool:
        """Charge one frame; when over the rate: the error frame, the close, True."""
        if self.admit_frame():
            return False
        self.send(self.error("rate_limited", "too many frames; slow down"))
        self.close(4429, "too many frames")
        return True

    async def _reader(self) -> None:
        while True:
            # Quart hands an empty binary frame over as None (quart/asgi.py: `bytes or text`).
            raw = await self.socket.receive() or b""
            if len(raw) > MAX_FRAME_BYTES:
                if self._over_rate():
                    return
                self.send(self.error("too_large", "frame larger than 96 KiB"))
                continue
            try:
                frame = parse_json(raw)
            except JsonError as exc:
                if self._over_rate():
                    return
                self.send(self.error(exc.code, f"frames must be JSON objects: {exc.message}"))
                continue
            if not isinstance(frame, dict):
                if self._over_rate():
                    return
                self.send(self.error("bad_frame", "frames must be JSON objects"))
                continue
            if not self.charged_elsewhere(frame) and self._over_rate():
                return
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


# Routes a signal for a participant (Signalling.signal): how many it went to, or ApiError.
SignalRouter = Callable[[Identity, str, SignalRequest], Awaitable[int]]


def request_id(frame: dict[str, Any]) -> str | None:
    """The `id` of a client request, if usable, even when the rest of the frame is not
    (its error frame names it)."""
    value = frame.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


class ClientConnection(Connection):
    """A participant's socket on /ws.

    Its token was verified once, at the upgrade: frames on it speak for that identity
    until the token expires (the socket closes then) or its session is revoked (a
    `_revoke` notice on the bus closes it, and `revoked` refuses what is still queued
    behind it). Every signal still checks the seat in the store, so a removed seat stops
    signalling at once, on any process."""

    def __init__(
        self,
        socket: Socket,
        identity: Identity,
        limits: Limits | None = None,
        signals: SignalRouter | None = None,
    ) -> None:
        super().__init__(socket)
        self.identity = identity
        self.subscribed = True
        self.room_filter: str | None = None
        self.roster_batch = False
        self.revoked = False
        self._limits = limits
        self._signals = signals

    def admit_frame(self) -> bool:
        return self._limits is None or self._limits.frame(self.id)

    def charged_elsewhere(self, frame: dict[str, Any]) -> bool:
        # A signal is charged to the participant's signal bucket (the REST path's), not to
        # the frame rate; only a refused or malformed one costs a frame as well.
        return self._signals is not None and frame.get("type") == "signal"

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
        if message.get("type") == "rosterBatch" and isinstance(data, dict):
            self._roster(message, data)
            return
        self.send(message)

    def _roster(self, message: dict[str, Any], data: dict[str, Any]) -> None:
        """A coalesced roster change (delivery.py): as it is to a socket that asked for
        it, else the frames it holds one by one, less those about this participant (the
        frames it stands for were never sent to their subject)."""
        if self.roster_batch:
            self.send(message)
            return
        me = self.identity.participant_id
        for frame in data.get("frames") or ():
            inner = frame.get("data") or {}
            subject = inner.get("participantId") or (inner.get("participant") or {}).get("id")
            if subject != me:
                self.send(frame)

    def _revoked(self, data: RevokeData) -> None:
        """Logout or removal (RoomService.close_sockets): the error frame, then 4401."""
        if data.session is not None and data.session != self.identity.session_id:
            return
        self.revoked = True
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
        if self._signals is not None and frame.get("type") == "signal":
            await self._signal(frame)
            return
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
            if msg.rosterBatch is not None:
                self.roster_batch = msg.rosterBatch
            room = (msg.filters or {}).get("roomId")
            self.room_filter = room if isinstance(room, str) else None
            self.send(wire(SubscribedFrame(data=SubscribedData(filters=msg.filters or {}))))
        elif msg.type == "unsubscribe":
            self.subscribed = False
            self.send(wire(UnsubscribedFrame()))

    def _refuse(self, request: str | None, exc: ApiError) -> None:
        self.send(wire(error_frame(exc.code, exc.message, request, exc.status)))

    async def _signal(self, frame: dict[str, Any]) -> None:
        """A signal frame: POST .../signal's rules and limit, answered `ack` or `error`
        with its id. Handled in the reader, so one socket's signals are routed in order."""
        assert self._signals is not None
        request = request_id(frame)
        try:
            msg = WsSignalFrame.model_validate(frame)
        except ValidationError as exc:
            if not self._over_rate():
                self._refuse(request, ApiError(400, "bad_request", describe(exc, root="frame")))
            return
        if self.revoked:
            self._refuse(request, ApiError(401, "revoked", "token revoked: log in again"))
            return
        try:
            if self._limits is not None:
                self._limits.signal(self.identity.participant_id)
            delivered = await self._signals(self.identity, msg.data.roomId, msg.data)
        except RateLimited as exc:
            if not self._over_rate():
                self._refuse(request, exc)
            return
        except ApiError as exc:
            self._refuse(request, exc)
            return
        except StoreError as exc:
            log.warning("signal on socket %s: store error %s", self.id, exc)
            self._refuse(
                request, ApiError(503, "unavailable", "the state store is unavailable; retry")
            )
            return
        except Exception:
            # A bug, not the client's doing: logged; the socket and its other signals go on.
            log.exception("signal on socket %s failed", self.id)
            self._refuse(request, ApiError(500, "internal", "internal error; it has been logged"))
            return
        self.send(wire(AckFrame(id=msg.id, data=AckData(delivered=delivered))))


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
