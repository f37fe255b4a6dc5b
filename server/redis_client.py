"""Talking to Redis, shared by the Redis store and bus.

Pools that always speak RESP2, the one translation of an outage into `StoreUnavailable`,
waiting for Redis at start, and the runner of `on_reconnect` hooks. A Redis outage never
escapes the store or the bus as anything but `StoreUnavailable` (a `StoreError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
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

OUTAGE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Turn a lost connection during `what` into StoreUnavailable."""
    try:
        yield
    except OUTAGE as exc:
        raise StoreUnavailable(f"redis unavailable during {what}: {exc}") from exc


def make_pool(cls: type[ConnectionPool], url: str, **kwargs: Any) -> ConnectionPool:
    """A pool for `url`, whose query string may add options (TLS: `ssl_ca_certs`,
    `ssl_cert_reqs`, ...), but always speaking RESP2: Lua `false` is a nil and pub/sub
    messages are plain arrays, whatever the URL says."""
    options: dict[str, Any] = {
        "socket_connect_timeout": 5.0,
        "socket_timeout": 10.0,
        "socket_keepalive": True,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        "retry_on_error": [redis_errors.ConnectionError, redis_errors.TimeoutError],
        "client_name": "yahaml-voice",
    }
    pool = cls.from_url(url, **{**options, **kwargs})
    pool.connection_kwargs["protocol"] = 2
    return pool


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
