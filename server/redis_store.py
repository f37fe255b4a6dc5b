"""Redis Store and Bus: several server processes (and their SFU workers) share rooms.

Layout, every name under `redis.prefix` (default `yv:`):

    r:<room>:p        hash  participant id -> JSON ParticipantRecord
    r:<room>:state    JSON RoomState (compare-and-set on its epoch)
    p:<pid>:rooms     set   rooms the participant holds a seat in
    a:<address>       set   seats ("<room>|<pid>") taken from a source address
    s:<pid>           hash  socket id -> node id (the server process holding it)
    n:<node>          node liveness, expires unless the node heartbeats (`node_alive`)
    workers           zset  worker id scored by its expiry (Redis clock, ms)
    workers:rec       hash  worker id -> JSON WorkerRecord
    wclaim:<worker>   the connection that registered a live worker id (expires unless renewed)
    revoked:<jti>     a logged-out or removed token session, expiring with the token
    <channel>         pub/sub channel of the bus (`p:<pid>`, `w:<worker>`)

Multi-key rules run as Lua scripts so they are atomic without locks. A socket only
counts while its node's key lives, so the clients of a server process that died get
their grace period and are then reaped by any other process.

Redis without persistence may restart empty. The store notices (its node key is gone or
was recreated by someone else, checked with every heartbeat and every room read) and puts
back what this process owns from a small local copy: its sockets, the seats of the
participants connected through it, the room states it last saw (epochs never go back).
Then it calls `on_reconnect` for anything else. The bus reconnects with backoff and
resubscribes its channels by itself. A Redis outage never escapes as anything but
`StoreUnavailable` (a `StoreError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from yahaml_voice.core.config import Config

from .store import (
    AddressFull,
    JoinResult,
    LocalSubscription,
    ParticipantRecord,
    RoomFull,
    RoomState,
    StoreError,
    StoreUnavailable,
    WorkerRecord,
)

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]

# Store connections per process; callers beyond that wait for a free one.
POOL_SIZE = 32
# How long start() waits for Redis before giving up (later outages are waited out).
START_TIMEOUT = 10.0
# Node TTL used when a socket opens before the node's first heartbeat.
DEFAULT_NODE_TTL = 10.0
# The pub/sub connection pings when idle and is replaced when a ping goes unanswered.
PING_EVERY = 5.0
DEAD_AFTER = 3 * PING_EVERY
# Reconnect backoff of the pub/sub reader (seconds).
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
# Publishes sent to Redis in one pipeline round trip at most.
PUBLISH_BATCH = 256
# Expired workers stay listed for remove_worker() this long, then are pruned (ms).
WORKER_KEEP_MS = 3_600_000
# Seats put back after a Redis restart are not refused for capacity: they existed.
RESTORE_LIMIT = 1_000_000_000
# Optimistic update retries before giving up (only concurrent writers of one record race).
UPDATE_RETRIES = 50

_OUTAGE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)


@contextlib.contextmanager
def _guard(what: str) -> Iterator[None]:
    try:
        yield
    except _OUTAGE as exc:
        raise StoreUnavailable(f"redis unavailable during {what}: {exc}") from exc


def _pool(cls: type[ConnectionPool], url: str, **kwargs: Any) -> ConnectionPool:
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


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


# Counts a participant's sockets whose node is alive, forgetting those of dead nodes.
_LIVE = """
local function live(key, nodeprefix)
  local all = redis.call('HGETALL', key)
  local n = 0
  for i = 1, #all, 2 do
    if redis.call('EXISTS', nodeprefix .. all[i + 1]) == 1 then
      n = n + 1
    else
      redis.call('HDEL', key, all[i])
    end
  end
  return n
end
"""

# KEYS room hash, rooms-of set, address set; ARGV pid, record json, limit, room id,
# address ('' = none), address limit (0 = none)
_JOIN = """
local n = redis.call('HLEN', KEYS[1])
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  redis.call('SADD', KEYS[2], ARGV[4])
  return {0, existing, n}
end
if n >= tonumber(ARGV[3]) then
  return {-1, '', n}
end
local seat = ARGV[4] .. '|' .. ARGV[1]
if ARGV[5] ~= '' then
  local limit = tonumber(ARGV[6])
  if limit > 0 and redis.call('SCARD', KEYS[3]) >= limit then
    return {-2, '', n}
  end
  redis.call('SADD', KEYS[3], seat)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
return {1, ARGV[2], n + 1}
"""

# Frees the seat's entry in its source address's set (records carry the address).
_UNSEAT = """
local function unseat(raw, room, pid, aprefix)
  local address = cjson.decode(raw)['address']
  if type(address) == 'string' and address ~= '' then
    redis.call('SREM', aprefix .. address, room .. '|' .. pid)
  end
end
"""

# KEYS room hash, rooms-of set; ARGV pid, room id, address key prefix
_LEAVE = (
    _UNSEAT
    + """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if not existing then
  return false
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
unseat(existing, ARGV[2], ARGV[1], ARGV[3])
return existing
"""
)

# KEYS room hash, rooms-of set, sockets hash; ARGV pid, cutoff, room id, node prefix,
# address key prefix
_LEAVE_IF_GONE = (
    _LIVE
    + _UNSEAT
    + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return false
end
local since = cjson.decode(raw)['disconnected_at']
if since == nil or since == cjson.null or tonumber(since) > tonumber(ARGV[2]) then
  return false
end
if live(KEYS[3], ARGV[4]) > 0 then
  return false
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[3])
unseat(raw, ARGV[3], ARGV[1], ARGV[5])
return raw
"""
)

# KEYS room hash; ARGV pid, expected json, new json. 1 written, 0 changed meanwhile, -1 gone
_UPDATE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return -1
end
if raw ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# KEYS sockets hash, node key; ARGV socket id, node id, node ttl ms, node prefix
_SOCKET_OPENED = (
    _LIVE
    + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], '0', 'PX', ARGV[3], 'NX')
return live(KEYS[1], ARGV[4])
"""
)

# KEYS sockets hash; ARGV socket id (may be empty), node prefix
_SOCKET_CLOSED = (
    _LIVE
    + """
if ARGV[1] ~= '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return live(KEYS[1], ARGV[2])
"""
)

# KEYS state key; ARGV new json, expected epoch
_ROOM_CAS = """
local current = redis.call('GET', KEYS[1])
local epoch = 0
if current then
  epoch = tonumber(cjson.decode(current)['epoch'])
end
if epoch ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS zset, records hash; ARGV worker id, json, ttl ms
_WORKER_SEEN = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""
)

# KEYS zset, records hash; ARGV keep ms
_WORKERS = (
    _NOW_MS
    + """
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
for _, id in ipairs(old) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
if #ids == 0 then
  return {}
end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""
)

# KEYS zset, records hash; ARGV worker id
_REMOVE_WORKER = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


# KEYS claim key; ARGV owner, ttl ms
_CLAIM_WORKER = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS claim key; ARGV owner
_RELEASE_WORKER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class _Hooks:
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def _wait_for_redis(client: Redis, url_for_log: str) -> None:
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
        except _OUTAGE as exc:
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


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


class _Shadow:
    """What this process owns, kept to put back into a Redis that restarted empty.

    The sockets it holds, the seats of the participants connected through it (as last
    read or written, at most a sweep old) and the room states it last saw (so epochs never
    go backwards). A recovery copy only: Redis stays the authority while it has the data.
    """

    def __init__(self) -> None:
        self.sockets: dict[str, dict[str, str]] = {}
        self.seats: dict[str, dict[str, ParticipantRecord]] = {}
        self.states: dict[str, RoomState] = {}

    def socket_opened(self, participant_id: str, socket_id: str, node_id: str) -> None:
        self.sockets.setdefault(participant_id, {})[socket_id] = node_id

    def socket_closed(self, participant_id: str, socket_id: str) -> None:
        sockets = self.sockets.get(participant_id)
        if sockets is None:
            return
        sockets.pop(socket_id, None)
        if not sockets:
            del self.sockets[participant_id]
            for seats in self.seats.values():
                seats.pop(participant_id, None)

    def seat(self, room_id: str, record: ParticipantRecord) -> None:
        if record.id in self.sockets:
            self.seats.setdefault(room_id, {})[record.id] = record

    def unseat(self, room_id: str, participant_id: str) -> None:
        self.seats.get(room_id, {}).pop(participant_id, None)

    def room(self, room_id: str, records: list[ParticipantRecord]) -> None:
        self.seats[room_id] = {r.id: r for r in records if r.id in self.sockets}


class RedisStore:
    """Store over Redis; see the module docstring for the key layout."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "yv:") -> None:
        self.url = url
        self.prefix = prefix
        self._shadow = _Shadow()
        # Set when a restore could not finish; the next heartbeat tries again.
        self._restore_pending = False
        self._hooks = _Hooks("store", first=self._restore)
        # Async callables run after Redis lost what this process wrote (restart, flush, or
        # this node's liveness lapsed), once the store has put back its sockets, the seats
        # of its connected participants and the room states: for anything else to rebuild.
        self.on_reconnect: list[Hook] = self._hooks.callbacks
        self._pool = _pool(
            BlockingConnectionPool,
            url,
            max_connections=POOL_SIZE,
            timeout=10,
            decode_responses=True,
        )
        self._client = Redis(connection_pool=self._pool)
        # Proves to node_alive that the node key is still the one this process wrote.
        self._token = uuid.uuid4().hex
        self._node_ttl: dict[str, float] = {}
        # The node this process heartbeats (set by node_alive); its key proves Redis still
        # holds what we wrote.
        self._node: str | None = None
        self._left_while_restoring: set[tuple[str, str]] = set()
        self._join = self._client.register_script(_JOIN)
        self._leave = self._client.register_script(_LEAVE)
        self._leave_if_gone = self._client.register_script(_LEAVE_IF_GONE)
        self._update = self._client.register_script(_UPDATE)
        self._socket_opened = self._client.register_script(_SOCKET_OPENED)
        self._socket_closed = self._client.register_script(_SOCKET_CLOSED)
        self._room_cas = self._client.register_script(_ROOM_CAS)
        self._worker_seen = self._client.register_script(_WORKER_SEEN)
        self._workers = self._client.register_script(_WORKERS)
        self._remove_worker = self._client.register_script(_REMOVE_WORKER)
        self._claim_worker = self._client.register_script(_CLAIM_WORKER)
        self._release_worker = self._client.register_script(_RELEASE_WORKER)

    # keys ------------------------------------------------------------------------------
    def _room(self, room_id: str) -> str:
        return f"{self.prefix}r:{room_id}:p"

    def _state(self, room_id: str) -> str:
        return f"{self.prefix}r:{room_id}:state"

    def _rooms_of(self, participant_id: str) -> str:
        return f"{self.prefix}p:{participant_id}:rooms"

    @property
    def _address_prefix(self) -> str:
        return f"{self.prefix}a:"

    def _join_call(
        self, room_id: str, record: ParticipantRecord, limit: int, address_limit: int
    ) -> Any:
        return self._join(
            keys=[
                self._room(room_id),
                self._rooms_of(record.id),
                self._address_prefix + record.address,
            ],
            args=[
                record.id,
                _dumps(record.to_dict()),
                limit,
                room_id,
                record.address,
                address_limit,
            ],
        )

    def _sockets(self, participant_id: str) -> str:
        return f"{self.prefix}s:{participant_id}"

    @property
    def _node_prefix(self) -> str:
        return f"{self.prefix}n:"

    def _worker_keys(self) -> list[str]:
        return [f"{self.prefix}workers", f"{self.prefix}workers:rec"]

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await _wait_for_redis(self._client, _redact(self.url))
        log.info("redis store at %s (prefix %r)", _redact(self.url), self.prefix)

    async def stop(self) -> None:
        await self._hooks.stop()
        await self._client.aclose()
        await self._pool.disconnect()

    # participants ----------------------------------------------------------------------
    async def join(
        self, room_id: str, record: ParticipantRecord, limit: int, address_limit: int = 0
    ) -> JoinResult:
        with _guard("join"):
            status, raw, count = await self._join_call(room_id, record, limit, address_limit)
        if int(status) == -2:
            raise AddressFull(record.address)
        if int(status) < 0:
            raise RoomFull(room_id)
        joined = ParticipantRecord.from_dict(json.loads(raw))
        self._shadow.seat(room_id, joined)
        return JoinResult(joined, int(status) == 1, int(count))

    async def leave(self, room_id: str, participant_id: str) -> ParticipantRecord | None:
        self._unseat(room_id, participant_id)
        with _guard("leave"):
            raw = await self._leave(
                keys=[self._room(room_id), self._rooms_of(participant_id)],
                args=[participant_id, room_id, self._address_prefix],
            )
        return ParticipantRecord.from_dict(json.loads(raw)) if raw else None

    async def leave_if_gone(
        self, room_id: str, participant_id: str, disconnected_before: float
    ) -> ParticipantRecord | None:
        with _guard("leave_if_gone"):
            raw = await self._leave_if_gone(
                keys=[
                    self._room(room_id),
                    self._rooms_of(participant_id),
                    self._sockets(participant_id),
                ],
                args=[
                    participant_id,
                    repr(float(disconnected_before)),
                    room_id,
                    self._node_prefix,
                    self._address_prefix,
                ],
            )
        if not raw:
            return None
        self._unseat(room_id, participant_id)
        return ParticipantRecord.from_dict(json.loads(raw))

    async def participant(self, room_id: str, participant_id: str) -> ParticipantRecord | None:
        with _guard("participant"):
            raw = await self._client.hget(self._room(room_id), participant_id)
        return ParticipantRecord.from_dict(json.loads(raw)) if raw else None

    async def participants(self, room_id: str) -> list[ParticipantRecord]:
        with _guard("participants"):
            intact, raws = await self._checked_read("hvals", self._room(room_id))
        records = [ParticipantRecord.from_dict(json.loads(raw)) for raw in raws]
        # Hash order is arbitrary; joining order is what callers expect (as in memory).
        records.sort(key=lambda r: (r.joined_at, r.id))
        if intact:
            self._shadow.room(room_id, records)
        return records

    async def address_seats(self, address: str) -> int:
        with _guard("address_seats"):
            return int(await self._client.scard(self._address_prefix + address))

    async def count(self, room_id: str) -> int:
        with _guard("count"):
            return int(await self._client.hlen(self._room(room_id)))

    async def update(
        self, room_id: str, participant_id: str, **changes: Any
    ) -> ParticipantRecord | None:
        fields = ParticipantRecord.__dataclass_fields__
        for key in changes:
            if key not in fields:
                raise AttributeError(key)
        key = self._room(room_id)
        # Compare-and-set of this one record: only writers of the same participant retry.
        for _ in range(UPDATE_RETRIES):
            with _guard("update"):
                raw = await self._client.hget(key, participant_id)
                if raw is None:
                    return None
                data = json.loads(raw)
                data.update(changes)
                record = ParticipantRecord.from_dict(data)
                status = int(
                    await self._update(
                        keys=[key], args=[participant_id, raw, _dumps(record.to_dict())]
                    )
                )
            if status == 1:
                self._shadow.seat(room_id, record)
                return record
            if status < 0:
                return None
        raise StoreError(f"update of {participant_id} in {room_id} kept racing; gave up")

    async def rooms_of(self, participant_id: str) -> list[str]:
        with _guard("rooms_of"):
            rooms = await self._client.smembers(self._rooms_of(participant_id))
        return sorted(r if isinstance(r, str) else r.decode() for r in rooms)

    # presence --------------------------------------------------------------------------
    async def socket_opened(self, participant_id: str, socket_id: str, node_id: str) -> int:
        self._shadow.socket_opened(participant_id, socket_id, node_id)
        with _guard("socket_opened"):
            return await self._open_socket(participant_id, socket_id, node_id)

    async def _open_socket(self, participant_id: str, socket_id: str, node_id: str) -> int:
        ttl = self._node_ttl.get(node_id, DEFAULT_NODE_TTL)
        return int(
            await self._socket_opened(
                keys=[self._sockets(participant_id), self._node_prefix + node_id],
                args=[socket_id, node_id, int(ttl * 1000), self._node_prefix],
            )
        )

    async def socket_closed(self, participant_id: str, socket_id: str) -> int:
        self._shadow.socket_closed(participant_id, socket_id)
        with _guard("socket_closed"):
            return await self._close_socket(participant_id, socket_id)

    async def _close_socket(self, participant_id: str, socket_id: str) -> int:
        return int(
            await self._socket_closed(
                keys=[self._sockets(participant_id)], args=[socket_id, self._node_prefix]
            )
        )

    async def socket_count(self, participant_id: str) -> int:
        with _guard("socket_count"):
            return await self._close_socket(participant_id, "")

    async def node_alive(self, node_id: str, ttl: float) -> None:
        """Refresh the node key; if it was missing or not ours, Redis lost our state."""
        with _guard("node_alive"):
            previous = await self._client.set(
                self._node_prefix + node_id, self._token, px=max(1, int(ttl * 1000)), get=True
            )
        known = node_id in self._node_ttl
        self._node_ttl[node_id] = ttl
        self._node = node_id
        if known and previous != self._token:
            self._lapsed("expired or flushed" if previous is None else "recreated by a socket")
        elif self._restore_pending and not self._hooks.running:
            self._hooks.fire()

    # rooms -----------------------------------------------------------------------------
    async def room_state(self, room_id: str) -> RoomState:
        with _guard("room_state"):
            intact, raw = await self._checked_read("get", self._state(room_id))
        if not raw:
            return RoomState()
        state = RoomState(**json.loads(raw))
        if intact:
            self._shadow.states[room_id] = state
        return state

    async def set_room_state(self, room_id: str, state: RoomState, expect_epoch: int) -> bool:
        with _guard("set_room_state"):
            done = await self._room_cas(
                keys=[self._state(room_id)], args=[_dumps(state.to_dict()), expect_epoch]
            )
        if int(done) == 1:
            self._shadow.states[room_id] = dataclasses.replace(state)
            return True
        return False

    # recovery --------------------------------------------------------------------------
    async def _checked_read(self, command: str, key: str) -> tuple[bool, Any]:
        """Run one read together with a look at our node key (one round trip).

        False when the data cannot be trusted to refresh the shadow: Redis lost our node
        key (it restarted empty) or a restore is still putting things back."""
        node = self._node
        if node is None:
            return True, await getattr(self._client, command)(key)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.get(self._node_prefix + node)
            getattr(pipe, command)(key)
            mark, value = await pipe.execute()
        if mark != self._token:
            self._lapsed("missing" if mark is None else "recreated by a socket")
            return False, value
        return not self._restore_pending, value

    def _lapsed(self, why: str) -> None:
        if self._restore_pending:
            # Already on it; a restore that fails is retried by the next heartbeat.
            return
        log.warning("redis lost this node's state (node key %s); restoring what it owns", why)
        self._restore_pending = True
        self._hooks.fire()

    def _unseat(self, room_id: str, participant_id: str) -> None:
        self._shadow.unseat(room_id, participant_id)
        if self._restore_pending:
            self._left_while_restoring.add((room_id, participant_id))

    async def _restore(self) -> None:
        """Put back this process's sockets, its connected participants' seats and the room
        states it knew, into a Redis that lost them; then the on_reconnect hooks run."""
        node = self._node
        if node is None:
            return
        self._restore_pending = True
        shadow = self._shadow
        with _guard("restore"):
            await self._client.set(
                self._node_prefix + node,
                self._token,
                px=max(1, int(self._node_ttl.get(node, DEFAULT_NODE_TTL) * 1000)),
            )
            sockets = [
                (pid, sid, nid)
                for pid, socks in shadow.sockets.items()
                for sid, nid in socks.items()
            ]
            for pid, sid, nid in sockets:
                await self._open_socket(pid, sid, nid)
            seats = [(room, rec) for room, recs in shadow.seats.items() for rec in recs.values()]
            for room_id, record in seats:
                await self._join_call(room_id, record, RESTORE_LIMIT, 0)
            states = 0
            for room_id, state in list(shadow.states.items()):
                if state.epoch > 0:
                    states += int(
                        await self._room_cas(
                            keys=[self._state(room_id)], args=[_dumps(state.to_dict()), 0]
                        )
                    )
            # Sockets that closed and seats given up while we were putting them back.
            for pid, sid, _ in sockets:
                if sid not in shadow.sockets.get(pid, {}):
                    await self._close_socket(pid, sid)
            for room_id, pid in list(self._left_while_restoring):
                await self._leave(
                    keys=[self._room(room_id), self._rooms_of(pid)],
                    args=[pid, room_id, self._address_prefix],
                )
        self._left_while_restoring.clear()
        self._restore_pending = False
        log.info(
            "restored into redis: %d sockets, %d seats, %d room states",
            len(sockets),
            len(seats),
            states,
        )

    # SFU workers -----------------------------------------------------------------------
    async def worker_seen(self, record: WorkerRecord, ttl: float) -> None:
        with _guard("worker_seen"):
            await self._worker_seen(
                keys=self._worker_keys(),
                args=[record.id, _dumps(record.to_dict()), max(1, int(ttl * 1000))],
            )

    async def workers(self) -> list[WorkerRecord]:
        with _guard("workers"):
            raws = await self._workers(keys=self._worker_keys(), args=[WORKER_KEEP_MS])
        return [WorkerRecord(**json.loads(raw)) for raw in raws if raw]

    async def remove_worker(self, worker_id: str) -> bool:
        with _guard("remove_worker"):
            return int(await self._remove_worker(keys=self._worker_keys(), args=[worker_id])) == 1

    async def claim_worker(self, worker_id: str, owner: str, ttl: float) -> bool:
        with _guard("claim_worker"):
            done = await self._claim_worker(
                keys=[f"{self.prefix}wclaim:{worker_id}"], args=[owner, max(1, int(ttl * 1000))]
            )
        return int(done) == 1

    async def release_worker(self, worker_id: str, owner: str) -> bool:
        with _guard("release_worker"):
            done = await self._release_worker(
                keys=[f"{self.prefix}wclaim:{worker_id}"], args=[owner]
            )
        return int(done) == 1

    # revocation ------------------------------------------------------------------------
    async def revoke(self, session_id: str, until: float) -> None:
        ttl_ms = int((until - time.time()) * 1000)
        if ttl_ms <= 0:
            return
        with _guard("revoke"):
            await self._client.set(f"{self.prefix}revoked:{session_id}", "1", px=ttl_ms)

    async def is_revoked(self, session_id: str) -> bool:
        with _guard("is_revoked"):
            return bool(await self._client.exists(f"{self.prefix}revoked:{session_id}"))


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
    costs one round trip. Subscribing: one pub/sub connection per process whose reader
    task fans each message out to the local subscriptions of its channel; channels are
    added and dropped as local subscribers come and go, and all of them are subscribed
    again after a reconnect.
    """

    def __init__(self, url: str, prefix: str = "yv:") -> None:
        self.url = url
        self.prefix = prefix
        self._hooks = _Hooks("bus")
        # Async callables run after the pub/sub connection came back from an outage.
        self.on_reconnect: list[Hook] = self._hooks.callbacks
        self._pub_pool = _pool(BlockingConnectionPool, url, max_connections=1, timeout=None)
        self._pub = Redis(connection_pool=self._pub_pool)
        self._sub_pool = _pool(ConnectionPool, url, socket_timeout=None)
        self._outbox: asyncio.Queue[tuple[str, bytes, asyncio.Future[None]]] | None = None
        self._subs: dict[str, set[RedisSubscription]] = {}
        # Futures of subscribe() calls waiting for Redis to confirm, per channel, in order.
        self._pending: dict[str, list[asyncio.Future[None]]] = {}
        self._conn: AbstractConnection | None = None
        self._write_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _channel(self, channel: str) -> str:
        return self.prefix + channel

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await _wait_for_redis(self._pub, _redact(self.url))
        self._outbox = asyncio.Queue(maxsize=10_000)
        self._tasks = [
            asyncio.create_task(self._publisher(), name="redis-bus-publisher"),
            asyncio.create_task(self._reader(), name="redis-bus-reader"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), START_TIMEOUT)

    async def stop(self) -> None:
        await self._hooks.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for subs in list(self._subs.values()):
            for sub in list(subs):
                await sub.close()
        if self._outbox is not None:
            while not self._outbox.empty():
                _, _, future = self._outbox.get_nowait()
                if not future.done():
                    future.set_exception(StoreUnavailable("bus stopped"))
        await self._pub.aclose()
        await self._pub_pool.disconnect()
        await self._sub_pool.disconnect()

    # publishing ------------------------------------------------------------------------
    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        if self._outbox is None:
            raise StoreUnavailable("bus not started")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._outbox.put((self._channel(channel), _dumps(message).encode(), future))
        await future

    async def _publisher(self) -> None:
        assert self._outbox is not None
        outbox = self._outbox
        failing = False
        while True:
            batch = [await outbox.get()]
            while len(batch) < PUBLISH_BATCH and not outbox.empty():
                batch.append(outbox.get_nowait())
            error: Exception | None = None
            try:
                async with self._pub.pipeline(transaction=False) as pipe:
                    for channel, data, _ in batch:
                        pipe.publish(channel, data)
                    await pipe.execute()
            except asyncio.CancelledError:
                for _, _, future in batch:
                    future.cancel()
                raise
            except (*_OUTAGE, redis_errors.RedisError) as exc:
                error = exc
            except Exception as exc:
                # A bug, not an outage: fail these callers, keep publishing for the rest.
                log.exception("redis bus: publishing a batch failed")
                error = exc
            for _, _, future in batch:
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
            except _OUTAGE as exc:
                log.debug("redis bus: %s failed: %s", args[0], exc)
                await conn.disconnect(nowait=True)
                return False
        return True

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
                    log.info("redis bus: reconnected; %d channels subscribed again", len(channels))
                    self._hooks.fire()
                connected_before = True
                delay = BACKOFF_MIN
                await self._read(conn)
            except asyncio.CancelledError:
                raise
            except (*_OUTAGE, redis_errors.RedisError) as exc:
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
            delay = min(delay * 2, BACKOFF_MAX)

    def _release_pending(self) -> None:
        # The reconnect subscribes these channels again; their subscribe() need not wait.
        for futures in self._pending.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self._pending.clear()

    async def _read(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        heard = loop.time()
        prefix = self.prefix.encode()
        while True:
            response = await conn.read_response(timeout=PING_EVERY)
            if response is None:
                if loop.time() - heard > DEAD_AFTER:
                    raise redis_errors.ConnectionError("pub/sub connection stopped answering")
                await self._send(conn, "PING")
                continue
            heard = loop.time()
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


def make_redis_store(config: Config) -> tuple[RedisStore, RedisBus]:
    """The Store and Bus of one server process for `redis.url`."""
    url = config.redis.url
    if not url:
        raise ValueError("redis.url is not set")
    return RedisStore(url, config.redis.prefix), RedisBus(url, config.redis.prefix)
