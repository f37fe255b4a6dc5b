"""The net log in Redis: every server process of a deployment sees the same nets.

Built like the Redis store and bus, from the same settings:
`RedisNetLog(url, prefix, sentinels)` (see stores.py), with a small pool of its own
(`make_pool`, RESP2, the same timeouts and retries); start() waits for Redis like the
store does, stop() closes the pool. A Redis outage surfaces as `StoreUnavailable`.

Layout, under the same prefix as redis_scripts.py's (default `yv:`):

    net:open:<room>   the id of the room's open net (absent: none open)
    net:<id>          JSON NetDoc, open or archived (its `event_count` is not trusted:
                      it is filled in from the log's length on every read)
    net:<id>:log      list of JSON NetEventRecord, oldest first; a line's seq is its
                      position (1-based), so it is not stored in the line
    nets:<room>       zset of the room's closed net ids, scored by closed_at

Opening, compare-and-set, closing (with the archive trimmed to `keep`, the trimmed
nets' docs and logs deleted) and appending (seq, bound, net still open) are Lua scripts,
atomic without locks; reads of a doc with its log length are scripts too. The scripts
never re-encode JSON (cjson would round timestamps to 14 digits): they compare the
version decoded from the stored doc and store the text Python wrote.

Nets live only as long as Redis keeps its data: a deployment without Redis persistence
loses its net log when Redis restarts (the room state is rebuilt by its owners, a log
cannot be), so give Redis an AOF or RDB if the archive matters.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from .netlog import NetDoc, NetEventRecord
from .redis_client import (
    Sentinels,
    blocking_client,
    close_pool,
    describe,
    dumps,
    guard,
    wait_for_redis,
)

log = logging.getLogger(__name__)

# Net log connections per process (requests of net control and loggers, a few per second).
POOL_SIZE = 8


@dataclass(frozen=True)
class NetKeys:
    """The key names of the layout above, under one prefix."""

    prefix: str

    @property
    def open_prefix(self) -> str:
        return f"{self.prefix}net:open:"

    def open(self, room_id: str) -> str:
        return self.open_prefix + room_id

    @property
    def net_prefix(self) -> str:
        return f"{self.prefix}net:"

    def net(self, net_id: str) -> str:
        return self.net_prefix + net_id

    def log(self, net_id: str) -> str:
        return f"{self.net_prefix}{net_id}:log"

    def archive(self, room_id: str) -> str:
        return f"{self.prefix}nets:{room_id}"


# True if the net is the room's open one at the expected version.
_CHECK = """
local function check(openkey, netkey, id, expected)
  if redis.call('GET', openkey) ~= id then
    return false
  end
  local raw = redis.call('GET', netkey)
  if not raw then
    return false
  end
  return tonumber(cjson.decode(raw)['version']) == tonumber(expected)
end
"""

# KEYS open key, net key, log key; ARGV id, json. 1 opened, 0 room has one (or id taken)
_OPEN = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3])
return 1
"""

# KEYS open key, net key; ARGV id, json, expected version
_SET = (
    _CHECK
    + """
if not check(KEYS[1], KEYS[2], ARGV[1], ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
)

# KEYS open key, net key, archive zset; ARGV id, json, expected version, closed_at,
# keep, net key prefix
_CLOSE = (
    _CHECK
    + """
if not check(KEYS[1], KEYS[2], ARGV[1], ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
local extra = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[5])
if extra > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[3], 0, extra - 1)) do
    redis.call('DEL', ARGV[6] .. old, ARGV[6] .. old .. ':log')
    redis.call('ZREM', KEYS[3], old)
  end
end
return 1
"""
)

# KEYS net key, log key; ARGV id, line json, limit, open key prefix.
# The new seq (the log's length), 0 if the net is not open or its log is full.
_APPEND = """
local raw = redis.call('GET', KEYS[1])
if not raw then
  return 0
end
local room = cjson.decode(raw)['room_id']
if redis.call('GET', ARGV[4] .. room) ~= ARGV[1] then
  return 0
end
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[3]) then
  return 0
end
return redis.call('RPUSH', KEYS[2], ARGV[2])
"""

# KEYS net key, log key. {json, log length} or nil
_READ = """
local raw = redis.call('GET', KEYS[1])
if not raw then
  return false
end
return {raw, redis.call('LLEN', KEYS[2])}
"""

# KEYS open key; ARGV net key prefix. {json, log length} of the open net, or nil
_CURRENT = """
local id = redis.call('GET', KEYS[1])
if not id then
  return false
end
local raw = redis.call('GET', ARGV[1] .. id)
if not raw then
  return false
end
return {raw, redis.call('LLEN', ARGV[1] .. id .. ':log')}
"""

# KEYS archive zset; ARGV max score ('+inf' or '(<before>'), limit, net key prefix.
# {json, log length, json, log length, ...}, newest first
_ARCHIVE = """
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local raw = redis.call('GET', ARGV[3] .. id)
  if raw then
    out[#out + 1] = raw
    out[#out + 1] = redis.call('LLEN', ARGV[3] .. id .. ':log')
  end
end
return out
"""


def _doc(raw: str, event_count: Any) -> NetDoc:
    doc = NetDoc.from_dict(json.loads(raw))
    doc.event_count = int(event_count)
    return doc


def _score(value: float) -> str:
    return repr(float(value))


class RedisNetLog:
    """NetLogStore over Redis; see the module docstring for the layout."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "yv:", sentinels: Sentinels | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self._where = describe(url, sentinels)
        self._pool, self._client = blocking_client(url, sentinels, POOL_SIZE)
        self._keys = NetKeys(prefix)
        client = self._client
        self._open = client.register_script(_OPEN)
        self._set = client.register_script(_SET)
        self._close = client.register_script(_CLOSE)
        self._append = client.register_script(_APPEND)
        self._read = client.register_script(_READ)
        self._current = client.register_script(_CURRENT)
        self._archive = client.register_script(_ARCHIVE)

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await wait_for_redis(self._client, self._where)
        log.info("net log in redis at %s (prefix %r)", self._where, self.prefix)

    async def stop(self) -> None:
        await self._client.aclose()
        await close_pool(self._pool)

    # NetLogStore -----------------------------------------------------------------------
    async def open_net(self, doc: NetDoc) -> bool:
        if doc.closed_at is not None:
            raise ValueError("open_net: the net is closed")
        k = self._keys
        with guard("open_net"):
            done = await self._open(
                keys=[k.open(doc.room_id), k.net(doc.id), k.log(doc.id)],
                args=[doc.id, dumps(doc.to_dict())],
            )
        return int(done) == 1

    async def current(self, room_id: str) -> NetDoc | None:
        k = self._keys
        with guard("current"):
            found = await self._current(keys=[k.open(room_id)], args=[k.net_prefix])
        return _doc(*found) if found else None

    async def get(self, net_id: str) -> NetDoc | None:
        with guard("get"):
            found = await self._read(keys=[self._keys.net(net_id), self._keys.log(net_id)])
        return _doc(*found) if found else None

    async def set_net(self, doc: NetDoc, expected_version: int) -> bool:
        if doc.closed_at is not None:
            raise ValueError("set_net cannot close a net; use close_net")
        k = self._keys
        with guard("set_net"):
            done = await self._set(
                keys=[k.open(doc.room_id), k.net(doc.id)],
                args=[doc.id, dumps(doc.to_dict()), expected_version],
            )
        return int(done) == 1

    async def close_net(self, doc: NetDoc, expected_version: int, keep: int) -> bool:
        if doc.closed_at is None:
            raise ValueError("close_net: doc.closed_at is not set")
        k = self._keys
        with guard("close_net"):
            done = await self._close(
                keys=[k.open(doc.room_id), k.net(doc.id), k.archive(doc.room_id)],
                args=[
                    doc.id,
                    dumps(doc.to_dict()),
                    expected_version,
                    _score(doc.closed_at),
                    max(0, keep),
                    k.net_prefix,
                ],
            )
        return int(done) == 1

    async def append_event(
        self, net_id: str, event: NetEventRecord, limit: int
    ) -> NetEventRecord | None:
        data = event.to_dict()
        data.pop("seq", None)
        k = self._keys
        with guard("append_event"):
            seq = int(
                await self._append(
                    keys=[k.net(net_id), k.log(net_id)],
                    args=[net_id, dumps(data), limit, k.open_prefix],
                )
            )
        if seq <= 0:
            return None
        return NetEventRecord.from_dict({**data, "seq": seq})

    async def events(self, net_id: str, after: int = 0, limit: int = 1000) -> list[NetEventRecord]:
        if limit <= 0:
            return []
        after = max(0, after)
        with guard("events"):
            raws = await self._client.lrange(self._keys.log(net_id), after, after + limit - 1)
        events = []
        for i, raw in enumerate(raws):
            event = NetEventRecord.from_dict(json.loads(raw))
            event.seq = after + i + 1
            events.append(event)
        return events

    async def archive(
        self, room_id: str, limit: int = 50, before: float | None = None
    ) -> list[NetDoc]:
        if limit <= 0:
            return []
        top = "+inf" if before is None else "(" + _score(before)
        k = self._keys
        with guard("archive"):
            found = await self._archive(keys=[k.archive(room_id)], args=[top, limit, k.net_prefix])
        return [_doc(found[i], found[i + 1]) for i in range(0, len(found), 2)]
