"""The Redis key layout and the Lua scripts that keep its multi-key rules atomic.

Layout, every name under `redis.prefix` (default `yv:`):

    r:<room>:p        hash  participant id -> JSON ParticipantRecord
    r:<room>:state    JSON RoomState (compare-and-set on its epoch)
    r:<room>:floor    JSON FloorDoc: floor, queue, mutes, appointments, bans
                      (compare-and-set on its version; reset when the room empties)
    r:<room>:rec      JSON RecordingDoc: the room's latest recording (compare-and-set
                      on its version)
    p:<pid>:rooms     set   rooms the participant holds a seat in
    a:<address>       set   seats ("<room>|<pid>") taken from a source address
    s:<pid>           hash  socket id -> node id (the server process holding it)
    n:<node>          node liveness, expires unless the node heartbeats (`node_alive`)
    workers           zset  worker id scored by its expiry (Redis clock, ms)
    workers:rec       hash  worker id -> JSON WorkerRecord
    wclaim:<worker>   the connection that registered a live worker id (expires unless renewed)
    revoked:<jti>     a logged-out or removed token session, expiring with the token
    net:open:<room>, net:<id>, net:<id>:log, nets:<room>
                      the net log (its layout and scripts are in netlog_redis.py)
    <channel>         pub/sub channel of the bus (`p:<pid>`, `w:<worker>`)

Multi-key rules run as Lua scripts so they are atomic without locks. A socket only
counts while its node's key lives, so the clients of a server process that died get
their grace period and are then reaped by any other process. `Scripts` registers each
script once and calls it with the keys and arguments in the order its comment gives, so
callers pass records and ids, never KEYS/ARGV positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from .floor import FloorDoc
from .redis_client import dumps
from .store import ParticipantRecord, RoomState, WorkerRecord

# Expired workers stay listed for remove_worker() this long, then are pruned (ms).
WORKER_KEEP_MS = 3_600_000


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


@dataclass(frozen=True)
class Keys:
    """Every key name of the layout above, under one prefix."""

    prefix: str

    def room(self, room_id: str) -> str:
        return f"{self.prefix}r:{room_id}:p"

    def state(self, room_id: str) -> str:
        return f"{self.prefix}r:{room_id}:state"

    def floor(self, room_id: str) -> str:
        return f"{self.prefix}r:{room_id}:floor"

    def recording(self, room_id: str) -> str:
        return f"{self.prefix}r:{room_id}:rec"

    def rooms_of(self, participant_id: str) -> str:
        return f"{self.prefix}p:{participant_id}:rooms"

    @property
    def address_prefix(self) -> str:
        return f"{self.prefix}a:"

    def address(self, address: str) -> str:
        return self.address_prefix + address

    def sockets(self, participant_id: str) -> str:
        return f"{self.prefix}s:{participant_id}"

    @property
    def node_prefix(self) -> str:
        return f"{self.prefix}n:"

    def node(self, node_id: str) -> str:
        return self.node_prefix + node_id

    @property
    def workers(self) -> list[str]:
        return [f"{self.prefix}workers", f"{self.prefix}workers:rec"]

    def claim(self, worker_id: str) -> str:
        return f"{self.prefix}wclaim:{worker_id}"

    def revoked(self, session_id: str) -> str:
        return f"{self.prefix}revoked:{session_id}"


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

# KEYS a versioned document's key (floor, recording); ARGV new json, expected version
_FLOOR_CAS = """
local current = redis.call('GET', KEYS[1])
local version = 0
if current then
  version = tonumber(cjson.decode(current)['version'])
end
if version ~= tonumber(ARGV[2]) then
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


class Scripts:
    """The scripts above, registered on one client, called with domain values.

    Raw JSON comes back where the caller decodes it (and may keep the raw text for a
    compare-and-set)."""

    def __init__(self, client: Redis, keys: Keys) -> None:
        self.keys = keys
        self._join = client.register_script(_JOIN)
        self._leave = client.register_script(_LEAVE)
        self._leave_if_gone = client.register_script(_LEAVE_IF_GONE)
        self._update = client.register_script(_UPDATE)
        self._socket_opened = client.register_script(_SOCKET_OPENED)
        self._socket_closed = client.register_script(_SOCKET_CLOSED)
        self._room_cas = client.register_script(_ROOM_CAS)
        self._floor_cas = client.register_script(_FLOOR_CAS)
        self._worker_seen = client.register_script(_WORKER_SEEN)
        self._workers = client.register_script(_WORKERS)
        self._remove_worker = client.register_script(_REMOVE_WORKER)
        self._claim_worker = client.register_script(_CLAIM_WORKER)
        self._release_worker = client.register_script(_RELEASE_WORKER)

    async def join(
        self, room_id: str, record: ParticipantRecord, limit: int, address_limit: int
    ) -> tuple[int, str, int]:
        """(status, record JSON, count): status 1 joined, 0 already seated, -1 room full,
        -2 address full."""
        k = self.keys
        status, raw, count = await self._join(
            keys=[k.room(room_id), k.rooms_of(record.id), k.address(record.address)],
            args=[
                record.id,
                dumps(record.to_dict()),
                limit,
                room_id,
                record.address,
                address_limit,
            ],
        )
        return int(status), raw, int(count)

    async def leave(self, room_id: str, participant_id: str) -> str | None:
        """The removed record's JSON, None if it was not seated."""
        k = self.keys
        raw = await self._leave(
            keys=[k.room(room_id), k.rooms_of(participant_id)],
            args=[participant_id, room_id, k.address_prefix],
        )
        return raw or None

    async def leave_if_gone(
        self, room_id: str, participant_id: str, disconnected_before: float
    ) -> str | None:
        k = self.keys
        raw = await self._leave_if_gone(
            keys=[k.room(room_id), k.rooms_of(participant_id), k.sockets(participant_id)],
            args=[
                participant_id,
                repr(float(disconnected_before)),
                room_id,
                k.node_prefix,
                k.address_prefix,
            ],
        )
        return raw or None

    async def update(
        self, room_id: str, participant_id: str, expected: str | bytes, new: str
    ) -> int:
        """1 written, 0 changed meanwhile, -1 gone."""
        return int(
            await self._update(keys=[self.keys.room(room_id)], args=[participant_id, expected, new])
        )

    async def socket_opened(
        self, participant_id: str, socket_id: str, node_id: str, node_ttl: float
    ) -> int:
        """Record the socket (creating the node key if absent); the live socket count."""
        k = self.keys
        return int(
            await self._socket_opened(
                keys=[k.sockets(participant_id), k.node(node_id)],
                args=[socket_id, node_id, int(node_ttl * 1000), k.node_prefix],
            )
        )

    async def socket_closed(self, participant_id: str, socket_id: str) -> int:
        """Forget the socket (none if `socket_id` is empty); the live socket count."""
        k = self.keys
        return int(
            await self._socket_closed(
                keys=[k.sockets(participant_id)], args=[socket_id, k.node_prefix]
            )
        )

    async def room_cas(self, room_id: str, state: RoomState, expect_epoch: int) -> bool:
        done = await self._room_cas(
            keys=[self.keys.state(room_id)], args=[dumps(state.to_dict()), expect_epoch]
        )
        return int(done) == 1

    async def floor_cas(self, room_id: str, doc: FloorDoc, expect_version: int) -> bool:
        done = await self._floor_cas(
            keys=[self.keys.floor(room_id)], args=[dumps(doc.to_dict()), expect_version]
        )
        return int(done) == 1

    async def version_cas(self, key: str, doc: dict[str, Any], expect_version: int) -> bool:
        """Compare-and-set of any JSON document with a `version` field (0: absent)."""
        done = await self._floor_cas(keys=[key], args=[dumps(doc), expect_version])
        return int(done) == 1

    async def worker_seen(self, record: WorkerRecord, ttl: float) -> None:
        await self._worker_seen(
            keys=self.keys.workers, args=[record.id, dumps(record.to_dict()), _ms(ttl)]
        )

    async def workers(self) -> list[Any]:
        """JSON records of the live workers (expired ones pruned after WORKER_KEEP_MS)."""
        return list(await self._workers(keys=self.keys.workers, args=[WORKER_KEEP_MS]))

    async def remove_worker(self, worker_id: str) -> bool:
        return int(await self._remove_worker(keys=self.keys.workers, args=[worker_id])) == 1

    async def claim_worker(self, worker_id: str, owner: str, ttl: float) -> bool:
        done = await self._claim_worker(keys=[self.keys.claim(worker_id)], args=[owner, _ms(ttl)])
        return int(done) == 1

    async def release_worker(self, worker_id: str, owner: str) -> bool:
        done = await self._release_worker(keys=[self.keys.claim(worker_id)], args=[owner])
        return int(done) == 1
