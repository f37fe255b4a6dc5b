"""Talking to Redis, shared by the Redis store, bus and net log.

Pools that always speak RESP2, either to the URL's Redis or to the master that Redis
Sentinel names (redis-py's own `Sentinel`; a failover is followed without a restart and
reported to `on_failover`), the one translation of an outage into `StoreUnavailable`,
waiting for Redis at start, and the runner of `on_reconnect` hooks. A Redis outage never
escapes the store or the bus as anything but `StoreUnavailable` (a `StoreError`).

A failover looks like an outage: connections to the dead master fail, a demoted master
answers writes with READONLY, which the Sentinel-managed connection turns into a
`ConnectionError` after dropping itself, so the next try asks the sentinels again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from yahaml_voice.core.aio import cancel_and_wait

from .store import StoreUnavailable

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]

# How long start() waits for Redis before giving up (later outages are waited out).
START_TIMEOUT = 10.0
# Reconnect backoff (seconds).
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0

# Connect and read timeout of a question to one sentinel (seconds); the next one is asked
# after it, so a dead sentinel host costs this much per lookup.
SENTINEL_TIMEOUT = 1.0

# A Sentinel-managed pool in use asks the sentinels for the master this often (seconds).
MASTER_CHECK = 1.0

# A READONLY answer is a master that was demoted (or a URL that points at a replica).
OUTAGE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    OSError,
)


@dataclass(frozen=True)
class Sentinels:
    """Where to find the master: the sentinels' (host, port), the service name they
    monitor it under, and their own password if they have one."""

    addresses: tuple[tuple[str, int], ...]
    service_name: str
    password: str | None = None

    def __str__(self) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.addresses)
        return f"sentinels {hosts} (service {self.service_name})"


class SentinelPool(SentinelConnectionPool):
    """A pool of connections to the master the sentinels name (redis-py's own), which
    asks them again at most every MASTER_CHECK seconds while it is used, drops its
    connections to a former master, and calls `on_failover` with the new address.

    redis-py asks only when it connects; but a master that lost its role without losing
    its connections (a planned failover, a partition that heals) keeps taking writes
    until Sentinel reconfigures it, about 10 s later, and those writes are then lost."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)
        self.on_failover: list[Callable[[str], None]] = []
        # Unlike master_address, not cleared by reset(): the last master we connected to.
        self._followed: Any = None
        self._next_check = 0.0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        await self.check_master()
        return await super().get_connection(*args, **kwargs)

    async def check_master(self) -> Any:
        """The master's address as of at most MASTER_CHECK ago (None: not known yet)."""
        now = asyncio.get_running_loop().time()
        if self._followed is not None and now >= self._next_check:
            self._next_check = now + MASTER_CHECK
            # Sentinels out of reach: keep the master we have; connecting will tell.
            with contextlib.suppress(*OUTAGE):
                await self.get_master_address()
        return self._followed

    async def get_master_address(self) -> Any:
        address = await super().get_master_address()
        if self._followed is None or address == self._followed:
            self._followed = address
            return address
        self._followed = address
        where = f"{address[0]}:{address[1]}"
        log.info("redis: sentinels name a new master for %s: %s", self.service_name, where)
        stale = [
            conn
            for conn in (*self._available_connections, *self._in_use_connections)
            if conn.is_connected
            and (getattr(conn, "host", None), getattr(conn, "port", None)) != tuple(address)
        ]
        for conn in stale:
            # A command in flight on it fails as an outage and is retried on the new master.
            await conn.disconnect()
        for callback in list(self.on_failover):
            callback(where)
        return address


class BlockingSentinelPool(SentinelPool, BlockingConnectionPool):
    """SentinelPool with BlockingConnectionPool's bound: callers past the cap wait."""


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Turn a lost connection during `what` into StoreUnavailable."""
    try:
        yield
    except OUTAGE as exc:
        raise StoreUnavailable(f"redis unavailable during {what}: {exc}") from exc


def make_pool(
    cls: type[ConnectionPool], url: str, sentinels: Sentinels | None = None, **kwargs: Any
) -> ConnectionPool:
    """A pool for `url`, whose query string may add options (TLS: `ssl_ca_certs`,
    `ssl_cert_reqs`, ...), but always speaking RESP2: Lua `false` is a nil and pub/sub
    messages are plain arrays, whatever the URL says.

    With `sentinels`, the pool connects to the master they name (a `SentinelPool`, blocking
    if `cls` is) and the URL gives only the password, db and TLS options."""
    options: dict[str, Any] = {
        "socket_connect_timeout": 5.0,
        "socket_timeout": 10.0,
        "socket_keepalive": True,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        "retry_on_error": [redis_errors.ConnectionError, redis_errors.TimeoutError],
        "client_name": "yahaml-voice",
    }
    if sentinels is not None:
        return _sentinel_pool(cls, url, sentinels, {**options, **kwargs})
    pool = cls.from_url(url, **{**options, **kwargs})
    pool.connection_kwargs["protocol"] = 2
    return pool


def blocking_client(
    url: str, sentinels: Sentinels | None, size: int
) -> tuple[ConnectionPool, Redis]:
    """A store's client: at most `size` connections, a caller waits up to 10 s for one
    (a bound under load instead of a new connection per request), replies decoded."""
    pool = make_pool(
        BlockingConnectionPool,
        url,
        sentinels,
        max_connections=size,
        timeout=10,
        decode_responses=True,
    )
    return pool, Redis(connection_pool=pool)


def _sentinel_pool(
    cls: type[ConnectionPool], url: str, sentinels: Sentinels, options: dict[str, Any]
) -> SentinelPool:
    url_options = parse_url(url)
    url_options.pop("host", None)
    url_options.pop("port", None)
    tls = url_options.pop("connection_class", None) is SSLConnection
    options.update(url_options)
    options["protocol"] = 2
    asked: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT,
        "socket_timeout": SENTINEL_TIMEOUT,
        "protocol": 2,
        "client_name": "yahaml-voice",
        "password": sentinels.password,
    }
    if tls:
        # Sentinels of a TLS deployment speak TLS too, trusted the same way.
        options["ssl"] = True
        asked["ssl"] = True
        asked.update({k: v for k, v in options.items() if k.startswith("ssl_")})
    manager = Sentinel(list(sentinels.addresses), sentinel_kwargs=asked)
    pool_class = BlockingSentinelPool if issubclass(cls, BlockingConnectionPool) else SentinelPool
    client = manager.master_for(sentinels.service_name, connection_pool_class=pool_class, **options)
    pool: SentinelPool = client.connection_pool
    return pool


async def master_moved(pool: ConnectionPool, conn: Any) -> bool:
    """True if the sentinels now name another master than the one `conn` is connected to
    (always False for a pool that is not Sentinel-managed)."""
    if not isinstance(pool, SentinelPool):
        return False
    address = await pool.check_master()
    return address is not None and (conn.host, conn.port) != tuple(address)


def on_failover(pool: ConnectionPool, callback: Callable[[str], None]) -> None:
    """Call `callback(new master address)` when the sentinels name another master (no-op
    for a pool that is not Sentinel-managed)."""
    if isinstance(pool, SentinelPool):
        pool.on_failover.append(callback)


async def close_pool(pool: ConnectionPool) -> None:
    """Close the pool's connections, and its connections to the sentinels if it has any."""
    await pool.disconnect()
    if isinstance(pool, SentinelConnectionPool):
        await pool.sentinel_manager.aclose()


def describe(url: str, sentinels: Sentinels | None = None) -> str:
    """Where Redis is, for logs (without the password)."""
    return str(sentinels) if sentinels is not None else redact(url)


def dumps(data: Any) -> str:
    """Compact JSON, as stored in Redis and sent on the bus."""
    return json.dumps(data, separators=(",", ":"))


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


async def wait_for_redis(client: Redis, url_for_log: str) -> None:
    """Ping until Redis answers or START_TIMEOUT passes; a wrong password fails at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    delay = BACKOFF_MIN
    while True:
        try:
            await client.ping()
            return
        except redis_errors.AuthenticationError as exc:
            raise StoreUnavailable(
                f"redis at {url_for_log} refused our credentials: {exc}"
            ) from exc
        except OUTAGE as exc:
            if isinstance(exc.__cause__ or exc.__context__, ssl.SSLCertVerificationError):
                raise StoreUnavailable(
                    f"redis at {url_for_log}: TLS certificate not trusted "
                    f"({exc.__cause__ or exc.__context__}); see ssl_ca_certs in the URL"
                ) from exc
            if loop.time() + delay > deadline:
                raise StoreUnavailable(f"redis at {url_for_log} is unreachable: {exc}") from exc
            log.warning("redis at %s not reachable yet (%s); retrying", url_for_log, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)


class Hooks:
    """Runs the on_reconnect callbacks one batch at a time, never raising into the caller."""

    def __init__(self, what: str, first: Hook | None = None) -> None:
        self.what = what
        self.callbacks: list[Hook] = []
        self._first = first
        self._task: asyncio.Task[None] | None = None
        self._again = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def fire(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run(), name=f"{self.what}-on-reconnect")

    async def _run(self) -> None:
        while True:
            self._again = False
            for callback in [self._first] if self._first else []:
                try:
                    await callback()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s: restoring after reconnect failed", self.what)
            for callback in list(self.callbacks):
                try:
                    await callback()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s: on_reconnect callback %r failed", self.what, callback)
            if not self._again:
                return

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
