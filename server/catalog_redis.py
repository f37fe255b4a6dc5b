"""The catalog (catalog.py) in Redis: every server process of a deployment shares the
room definitions and invites, and they survive a restart of the servers.

Layout, under the store's prefix (default `yv:`):

    catalog:rooms     hash id -> JSON room doc      catalog:invites  hash id -> JSON invite
    catalog:seeded    set of ids ever seeded        catalog:version  bumped by every change

Each change is one MULTI (or a Lua script for the seeding, which must not re-add an id
two processes starting together both see as new). Like the net log, the catalog lives as
long as Redis keeps its data; if Redis restarts empty, the first process to notice
(catalog.py polls the version) writes back the copy it holds.
"""

from __future__ import annotations

import json
from typing import Any

from .catalog import CatalogData
from .redis_client import (
    Sentinels,
    blocking_client,
    close_pool,
    describe,
    dumps,
    guard,
    wait_for_redis,
)

POOL_SIZE = 4

_SEED = """
local added = 0
for i = 1, #ARGV, 2 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
    added = added + 1
  end
end
if added > 0 then redis.call('INCR', KEYS[3]) end
return added
"""


class RedisCatalog:
    name = "redis"

    def __init__(self, url: str, prefix: str = "yv:", sentinels: Sentinels | None = None) -> None:
        self._where = describe(url, sentinels)
        self._pool, self._client = blocking_client(url, sentinels, POOL_SIZE)
        self.rooms_key = f"{prefix}catalog:rooms"
        self.invites_key = f"{prefix}catalog:invites"
        self.seeded_key = f"{prefix}catalog:seeded"
        self.version_key = f"{prefix}catalog:version"
        self._seed = self._client.register_script(_SEED)

    async def start(self) -> None:
        await wait_for_redis(self._client, self._where)

    async def stop(self) -> None:
        await self._client.aclose()
        await close_pool(self._pool)

    async def load(self) -> CatalogData:
        with guard("catalog load"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(self.rooms_key)
                pipe.hgetall(self.invites_key)
                pipe.smembers(self.seeded_key)
                pipe.get(self.version_key)
                rooms, invites, seeded, version = await pipe.execute()
        return CatalogData(
            rooms={k: json.loads(v) for k, v in rooms.items()},
            invites={k: json.loads(v) for k, v in invites.items()},
            seeded=set(seeded),
            version=int(version or 0),
        )

    async def version(self) -> int:
        with guard("catalog version"):
            return int(await self._client.get(self.version_key) or 0)

    async def seed(self, rooms: list[dict[str, Any]]) -> int:
        args: list[str] = []
        for doc in rooms:
            args += [doc["room"]["id"], dumps(doc)]
        keys = [self.rooms_key, self.seeded_key, self.version_key]
        with guard("catalog seed"):
            return int(await self._seed(keys=keys, args=args))

    async def put_room(self, room_id: str, doc: dict[str, Any], create: bool) -> bool:
        with guard("catalog put_room"):
            async with self._client.pipeline(transaction=True) as pipe:
                if create:
                    pipe.hsetnx(self.rooms_key, room_id, dumps(doc))
                else:
                    pipe.hset(self.rooms_key, room_id, dumps(doc))
                pipe.incr(self.version_key)
                written, _ = await pipe.execute()
        return bool(written) or not create

    async def delete_room(self, room_id: str) -> bool:
        with guard("catalog delete_room"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(self.rooms_key, room_id)
                pipe.incr(self.version_key)
                deleted, _ = await pipe.execute()
        return bool(deleted)

    async def put_invite(self, invite_id: str, doc: dict[str, Any]) -> None:
        with guard("catalog put_invite"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self.invites_key, invite_id, dumps(doc))
                pipe.incr(self.version_key)
                await pipe.execute()

    async def delete_invites(self, invite_ids: list[str]) -> None:
        with guard("catalog delete_invites"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(self.invites_key, *invite_ids)
                pipe.incr(self.version_key)
                await pipe.execute()

    async def restore(self, data: CatalogData) -> None:
        with guard("catalog restore"):
            async with self._client.pipeline(transaction=True) as pipe:
                if data.rooms:
                    pipe.hset(self.rooms_key, mapping={k: dumps(v) for k, v in data.rooms.items()})
                if data.invites:
                    mapping: dict[Any, Any] = {k: dumps(v) for k, v in data.invites.items()}
                    pipe.hset(self.invites_key, mapping=mapping)
                if data.seeded:
                    pipe.sadd(self.seeded_key, *data.seeded)
                pipe.set(self.version_key, max(1, data.version))
                await pipe.execute()
