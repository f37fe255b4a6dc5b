"""Bounds on every client connection, where hypercorn and Quart leave them open-ended.

Measured before these existed: a client that never reads, sending 1 MiB frames, grew the
server by a gigabyte (Quart's inbound queue is unbounded, and closing waited for ever on
the peer's full TCP window); WebSockets closed at once still cost ~130 KB each for ~20 s
(permessage-deflate state held by hypercorn's ping task).

What this module guarantees:
- inbound frames wait in a small bounded queue; a handler that stops reading stops the
  connection reading (TCP backpressure), and a connection whose application has not taken
  its data for `stall_timeout` is aborted;
- a write that the peer does not take within `write_timeout` aborts the connection (like
  nginx's `send_timeout`), and closing never waits longer than `close_timeout`;
- a disconnect always reaches the application, even when its queue is full;
- permessage-deflate is off: our frames are small JSON, and each compressor costs more
  memory than a whole idle connection.

Every access to hypercorn's private names lives here, checked against the pinned version.
Timeouts use `asyncio.timeout`, not `wait_for`: on 3.11 a `wait_for` cancelled just as
its inner future completes swallows the cancellation (CPython gh-86296), which once left
a socket's writer blocked after its task was cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any

from quart.asgi import ASGIWebsocketConnection

PINNED_HYPERCORN = "0.18.0"
# Frames a WebSocket handler may have waiting; the reader takes them as they come.
INBOUND_FRAMES = 8
# Largest WebSocket message hypercorn assembles (bigger ones: close 1009). Our handlers
# answer frames above MAX_FRAME_BYTES (64 KiB) with an error frame.
MAX_MESSAGE_BYTES = 128 * 1024
# Events hypercorn queues towards the application per stream (request body chunks, frames).
APP_QUEUE = 4


@dataclass
class Limits:
    write_timeout: float = 10.0
    stall_timeout: float = 10.0
    close_timeout: float = 2.0


LIMITS = Limits()


class BoundedWebsocketConnection(ASGIWebsocketConnection):
    """Quart's WebSocket glue with a bounded inbound queue (its own is unbounded)."""

    def __init__(self, app: Any, scope: Any) -> None:
        super().__init__(app, scope)
        self.queue = asyncio.Queue(INBOUND_FRAMES)


def _closed_event(stream: Any) -> asyncio.Event:
    event = getattr(stream, "_yv_closed", None)
    if event is None:
        event = asyncio.Event()
        stream._yv_closed = event
    assert isinstance(event, asyncio.Event)
    return event


def check_version() -> None:
    found = importlib.metadata.version("hypercorn")
    if found != PINNED_HYPERCORN:
        raise RuntimeError(
            f"server/transport.py patches hypercorn {PINNED_HYPERCORN}; {found} is installed"
        )


_installed = False


def install(write_timeout: float, stall_timeout: float, close_timeout: float) -> None:
    """Patch hypercorn's connection handling (process-wide, idempotent)."""
    global _installed
    LIMITS.write_timeout = write_timeout
    LIMITS.stall_timeout = stall_timeout
    LIMITS.close_timeout = close_timeout
    if _installed:
        return
    check_version()
    from hypercorn.asyncio import tcp_server
    from hypercorn.events import Closed, RawData
    from hypercorn.protocol import ws_stream
    from hypercorn.protocol.events import StreamClosed
    from wsproto import connection as wsproto_connection
    from wsproto import events as wsproto_events
    from wsproto.frame_protocol import CloseReason

    TCPServer = tcp_server.TCPServer
    original_send = TCPServer.protocol_send

    def _abort(server: Any) -> None:
        with contextlib.suppress(Exception):
            server.writer.transport.abort()

    async def protocol_send(self: Any, event: Any) -> None:
        if not isinstance(event, RawData):
            await original_send(self, event)
            return
        async with self.send_lock:
            try:
                self.writer.write(event.data)
                async with asyncio.timeout(LIMITS.write_timeout):
                    await self.writer.drain()
            except TimeoutError:
                # The peer takes nothing: cut it off instead of buffering for it.
                _abort(self)
                await self.protocol.handle(Closed())
            except (ConnectionError, RuntimeError):
                await self.protocol.handle(Closed())

    async def _read_data(self: Any) -> None:
        while not self.reader.at_eof():
            try:
                data = await asyncio.wait_for(
                    self.reader.read(tcp_server.MAX_RECV), self.config.read_timeout
                )
            except (ConnectionError, OSError, TimeoutError, tcp_server.SSLError):
                break
            try:
                async with asyncio.timeout(LIMITS.stall_timeout):
                    await self.protocol.handle(RawData(data))
            except TimeoutError:
                # The application has not taken this connection's data for a while.
                _abort(self)
                break
        await self.protocol.handle(Closed())

    async def _close(self: Any) -> None:
        with contextlib.suppress(NotImplementedError, OSError, RuntimeError):
            self.writer.write_eof()
        try:
            self.writer.close()
            async with asyncio.timeout(LIMITS.close_timeout):
                await self.writer.wait_closed()
        except TimeoutError:
            _abort(self)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            await self.idle_task.stop()

    setattr(TCPServer, "protocol_send", protocol_send)  # noqa: B010
    setattr(TCPServer, "_read_data", _read_data)  # noqa: B010
    setattr(TCPServer, "_close", _close)  # noqa: B010

    WSStream = ws_stream.WSStream
    original_handle = WSStream.handle

    async def handle(self: Any, event: Any) -> None:
        if isinstance(event, StreamClosed) and not self.closed and self.app_put is not None:
            queue = getattr(self.app_put, "__self__", None)
            if isinstance(queue, asyncio.Queue):
                # The client is gone: frames nobody took are dropped so that the
                # disconnect gets through without waiting for room in the queue.
                self.closed = True
                closed_states = {
                    ws_stream.ASGIWebsocketState.HTTPCLOSED,
                    ws_stream.ASGIWebsocketState.CLOSED,
                }
                code = 1000 if self.state in closed_states else 1006
                while queue.full():
                    queue.get_nowait()
                queue.put_nowait({"type": "websocket.disconnect", "code": code})
                _closed_event(self).set()
                return
        await original_handle(self, event)

    async def _send_pings(self: Any) -> None:
        # hypercorn's sleeps out the whole interval, keeping a closed stream alive for it.
        closed = _closed_event(self)
        while not self.closed:
            await self._send_wsproto_event(wsproto_events.Ping())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.websocket_ping_interval):
                    await closed.wait()

    setattr(WSStream, "_send_pings", _send_pings)  # noqa: B010

    setattr(WSStream, "handle", handle)  # noqa: B010

    async def _handle_events(self: Any) -> None:
        # hypercorn's, except that a message over the limit ends the connection: its own
        # keeps appending every later chunk to the message buffer (it never clears it).
        for event in self.connection.events():
            if isinstance(event, wsproto_events.Message):
                if self.buffer.length + len(event.data) > self.buffer.max_length:
                    self.buffer.clear()
                    await self._send_wsproto_event(
                        wsproto_events.CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                    )
                    await self.send(StreamClosed(stream_id=self.stream_id))
                    return
                self.buffer.extend(event)
                if event.message_finished:
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, wsproto_events.Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, wsproto_events.CloseConnection):
                if self.connection.state == wsproto_connection.ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))

    setattr(WSStream, "_handle_events", _handle_events)  # noqa: B010

    class Handshake(ws_stream.Handshake):
        """permessage-deflate off, whatever the client offers."""

        def __init__(self, headers: Any, http_version: str) -> None:
            super().__init__(headers, http_version)
            self.extensions = None

    setattr(ws_stream, "Handshake", Handshake)  # noqa: B010
    _installed = True


def hypercorn_settings(hconf: Any) -> None:
    """The hypercorn config values that bound a connection."""
    hconf.websocket_max_message_size = MAX_MESSAGE_BYTES
    hconf.max_app_queue_size = APP_QUEUE
