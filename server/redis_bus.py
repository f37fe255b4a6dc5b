"""The Bus over Redis pub/sub: a message published on any server process reaches the
sockets of its channel on every process.

The bus reconnects with backoff and resubscribes its channels by itself; a Redis outage
reaches publishers as `StoreUnavailable`, never as a Redis error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection

from yahaml_voice.core.aio import cancel_and_wait

from .redis_client import (
    BACKOFF_MIN,
    MASTER_CHECK,
    OUTAGE,
    START_TIMEOUT,
    Hook,
    Hooks,
    Sentinels,
    close_pool,
    describe,
    dumps,
    make_pool,
    master_moved,
    wait_for_redis,
)
from .store import LocalSubscription, StoreUnavailable

log = logging.getLogger(__name__)

# The pub/sub connection pings when idle and is replaced when a ping goes unanswered.
PING_EVERY = 5.0
DEAD_AFTER = 3 * PING_EVERY
# Messages sent to Redis in one pipeline round trip, at least (one publish_many call is
# never split, however long).
PUBLISH_BATCH = 256
# The pub/sub connection is tried again at least this often (seconds) while Redis is away:
# what other processes publish before it is back is lost, so it must not wait long after a
# restart or a failover (each try is one connection attempt, or one question to a sentinel).
READER_BACKOFF_MAX = 1.0
# Publish calls waiting for the publisher task at most; callers beyond it wait.
OUTBOX_SIZE = 10_000

# One publish() or publish_many() call: its (channel, payload) pairs and its caller's future.
_Entry = tuple[list[tuple[str, bytes]], asyncio.Future[None]]


class RedisSubscription(LocalSubscription):
    """One local consumer of a channel; the bus's reader task fills its queue."""

    def __init__(self, bus: RedisBus, channel: str) -> None:
        super().__init__(channel)
        self._bus = bus
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._bus._remove(self)
        self.end()


class RedisBus:
    """Pub/sub over Redis.

    Publishing: one connection, fed by one task from a FIFO queue and flushed as pipelines,
    so messages leave in the order publish() was called (per-publisher order) and a burst
    costs one round trip. publish_many() hands a whole list over as one entry: a room
    broadcast is one round trip instead of one per member. Subscribing: one pub/sub connection per process whose reader
    task fans each message out to the local subscriptions of its channel; channels are
    added and dropped as local subscribers come and go, and all of them are subscribed
    again after a reconnect.
    """

    def __init__(self, url: str, prefix: str = "yv:", sentinels: Sentinels | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self._where = describe(url, sentinels)
        self._sentinels = sentinels is not None
        self._hooks = Hooks("bus")
        # Async callables run after the pub/sub connection came back from an outage.
        self.on_reconnect: list[Hook] = self._hooks.callbacks
        self._pub_pool = make_pool(
            BlockingConnectionPool, url, sentinels, max_connections=1, timeout=None
        )
        self._pub = Redis(connection_pool=self._pub_pool)
        self._sub_pool = make_pool(ConnectionPool, url, sentinels, socket_timeout=None)
        self._outbox: asyncio.Queue[_Entry] | None = None
        self._subs: dict[str, set[RedisSubscription]] = {}
        # Futures of subscribe() calls waiting for Redis to confirm, per channel, in order.
        self._pending: dict[str, list[asyncio.Future[None]]] = {}
        self._conn: AbstractConnection | None = None
        self._write_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        # Times the pub/sub connection came back (after an outage or a Sentinel failover).
        self.reconnects = 0
        self._tasks: list[asyncio.Task[None]] = []

    def _channel(self, channel: str) -> str:
        return self.prefix + channel

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await wait_for_redis(self._pub, self._where)
        self._outbox = asyncio.Queue(maxsize=OUTBOX_SIZE)
        self._tasks = [
            asyncio.create_task(self._publisher(), name="redis-bus-publisher"),
            asyncio.create_task(self._reader(), name="redis-bus-reader"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), START_TIMEOUT)

    async def stop(self) -> None:
        await self._hooks.stop()
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        for subs in list(self._subs.values()):
            for sub in list(subs):
                await sub.close()
        if self._outbox is not None:
            while not self._outbox.empty():
                _, future = self._outbox.get_nowait()
                if not future.done():
                    future.set_exception(StoreUnavailable("bus stopped"))
        await self._pub.aclose()
        await close_pool(self._pub_pool)
        await close_pool(self._sub_pool)

    # publishing ------------------------------------------------------------------------
    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self._enqueue([(self._channel(channel), dumps(message).encode())])

    async def publish_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """All of `items` in one pipeline (one round trip), in their order."""
        if not items:
            return
        # A broadcast hands the same message object for every member: encode it once.
        encoded: dict[int, bytes] = {}
        batch = []
        for channel, message in items:
            data = encoded.get(id(message))
            if data is None:
                data = encoded[id(message)] = dumps(message).encode()
            batch.append((self._channel(channel), data))
        await self._enqueue(batch)

    async def _enqueue(self, messages: list[tuple[str, bytes]]) -> None:
        if self._outbox is None:
            raise StoreUnavailable("bus not started")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._outbox.put((messages, future))
        await future

    async def _publisher(self) -> None:
        assert self._outbox is not None
        outbox = self._outbox
        failing = False
        while True:
            batch = [await outbox.get()]
            size = len(batch[0][0])
            while size < PUBLISH_BATCH and not outbox.empty():
                entry = outbox.get_nowait()
                batch.append(entry)
                size += len(entry[0])
            error: Exception | None = None
            try:
                async with self._pub.pipeline(transaction=False) as pipe:
                    for messages, _ in batch:
                        for channel, data in messages:
                            pipe.publish(channel, data)
                    await pipe.execute()
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except (*OUTAGE, redis_errors.RedisError) as exc:
                error = exc
            except Exception as exc:
                # A bug, not an outage: fail these callers, keep publishing for the rest.
                log.exception("redis bus: publishing a batch failed")
                error = exc
            for _, future in batch:
                if future.done():
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(StoreUnavailable(f"publish failed: {error}"))
            if error is not None and not failing:
                log.warning("redis bus: publishing failed (%s); will retry per message", error)
            elif error is None and failing:
                log.info("redis bus: publishing works again")
            failing = error is not None
            if failing:
                await asyncio.sleep(BACKOFF_MIN)

    # subscribing -----------------------------------------------------------------------
    async def subscribe(self, channel: str) -> RedisSubscription:
        sub = RedisSubscription(self, channel)
        subs = self._subs.setdefault(channel, set())
        subs.add(sub)
        if len(subs) == 1:
            await self._send_subscribe(channel)
        elif self._pending.get(channel):
            # Another local subscriber is still waiting for Redis to confirm this channel.
            await asyncio.wait({self._pending[channel][-1]}, timeout=DEAD_AFTER)
        return sub

    async def _send_subscribe(self, channel: str) -> None:
        """SUBSCRIBE and wait for Redis to confirm, so nothing published after we return is missed.

        Without a connection it returns at once: the reader subscribes every channel when it
        reconnects."""
        conn = self._conn
        if conn is None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(channel, []).append(future)
        if not await self._send(conn, "SUBSCRIBE", self._channel(channel)):
            return
        done, _ = await asyncio.wait({future}, timeout=DEAD_AFTER)
        if not done:
            log.warning("redis bus: no confirmation of SUBSCRIBE %s yet", channel)

    async def _remove(self, sub: RedisSubscription) -> None:
        subs = self._subs.get(sub.channel)
        if subs is None:
            return
        subs.discard(sub)
        if subs:
            return
        del self._subs[sub.channel]
        conn = self._conn
        if conn is not None:
            await self._send(conn, "UNSUBSCRIBE", self._channel(sub.channel))

    async def _send(self, conn: AbstractConnection, *args: str) -> bool:
        """Write a command on the pub/sub connection; on failure leave it to the reader."""
        async with self._write_lock:
            if conn is not self._conn or not conn.is_connected:
                return False
            try:
                await conn.send_command(*args, check_health=False)
            except OUTAGE as exc:
                log.debug("redis bus: %s failed: %s", args[0], exc)
                await conn.disconnect(nowait=True)
                return False
        return True

    def health(self) -> dict[str, Any]:
        """For /healthz: whether messages reach this process now (a message published while
        the pub/sub connection is down is lost for it)."""
        return {"connected": self._connected.is_set(), "reconnects": self.reconnects}

    async def _reader(self) -> None:
        delay = BACKOFF_MIN
        connected_before = False
        while True:
            conn = self._sub_pool.make_connection()
            try:
                await conn.connect()
                async with self._write_lock:
                    self._conn = conn
                    channels = [self._channel(c) for c in self._subs]
                    if channels:
                        await conn.send_command("SUBSCRIBE", *channels, check_health=False)
                self._connected.set()
                if connected_before:
                    self.reconnects += 1
                    log.info("redis bus: reconnected; %d channels subscribed again", len(channels))
                    self._hooks.fire()
                connected_before = True
                delay = BACKOFF_MIN
                await self._read(conn)
            except asyncio.CancelledError:
                raise
            except (*OUTAGE, redis_errors.RedisError) as exc:
                if self._connected.is_set():
                    log.warning("redis bus: lost the pub/sub connection (%s); reconnecting", exc)
                else:
                    log.debug("redis bus: reconnect failed: %s", exc)
            except Exception:
                # Never let a surprise end delivery for the whole process: start over.
                log.exception("redis bus: reader failed; reconnecting")
            finally:
                self._connected.clear()
                self._conn = None
                self._release_pending()
                await conn.disconnect(nowait=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, READER_BACKOFF_MAX)

    def _release_pending(self) -> None:
        # The reconnect subscribes these channels again; their subscribe() need not wait.
        for futures in self._pending.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self._pending.clear()

    async def _read(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        heard = pinged = checked = loop.time()
        prefix = self.prefix.encode()
        # With Sentinel, wake up to ask whether the master moved (see SentinelPool).
        wake = MASTER_CHECK if self._sentinels else PING_EVERY
        while True:
            response = await conn.read_response(timeout=wake)
            now = loop.time()
            if self._sentinels and now - checked >= MASTER_CHECK:
                checked = now
                if await master_moved(self._sub_pool, conn):
                    raise redis_errors.ConnectionError("the sentinels name another master")
            if response is None:
                if now - heard > DEAD_AFTER:
                    raise redis_errors.ConnectionError("pub/sub connection stopped answering")
                if now - pinged >= PING_EVERY - 0.01:
                    pinged = now
                    await self._send(conn, "PING")
                continue
            heard = now
            if not isinstance(response, list) or len(response) < 2:
                continue
            kind = response[0]
            if kind == b"message" and len(response) == 3:
                raw_channel = response[1]
                if not raw_channel.startswith(prefix):
                    continue
                channel = raw_channel[len(prefix) :].decode()
                subs = self._subs.get(channel)
                if not subs:
                    continue
                try:
                    message = json.loads(response[2])
                except ValueError:
                    log.warning("redis bus: dropped a non-JSON message on %s", channel)
                    continue
                for sub in list(subs):
                    sub.put(message)
            elif kind == b"subscribe":
                channel = response[1][len(prefix) :].decode()
                futures = self._pending.get(channel)
                if futures:
                    future = futures.pop(0)
                    if not future.done():
                        future.set_result(None)
                    if not futures:
                        del self._pending[channel]
