"""The Store over Redis: several server processes (and their SFU workers) share rooms.

The key layout and the Lua scripts that keep multi-key rules atomic are in
`redis_scripts.py`; putting back what this process owns after Redis restarted empty is in
`redis_restore.py`; the bus is `redis_bus.py`. A Redis outage never escapes as anything
but `StoreUnavailable` (a `StoreError`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from .floor import FloorDoc
from .redis_client import (
    Hook,
    Sentinels,
    blocking_client,
    close_pool,
    describe,
    dumps,
    guard,
    on_failover,
    wait_for_redis,
)
from .redis_restore import Recovery
from .redis_scripts import Keys, Scripts
from .store import (
    AddressFull,
    JoinResult,
    ParticipantRecord,
    RecordingDoc,
    RoomFull,
    RoomState,
    StoreError,
    WorkerRecord,
)

log = logging.getLogger(__name__)

# Store connections per process; callers beyond that wait for a free one.
POOL_SIZE = 32
# Optimistic update retries before giving up (only concurrent writers of one record race).
UPDATE_RETRIES = 50


class RedisStore:
    """Store over Redis; see redis_scripts.py for the key layout."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "yv:", sentinels: Sentinels | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self._where = describe(url, sentinels)
        self._pool, self._client = blocking_client(url, sentinels, POOL_SIZE)
        self._keys = Keys(prefix)
        self._scripts = Scripts(self._client, self._keys)
        self._recovery = Recovery(self._client, self._keys, self._scripts)
        self._shadow = self._recovery.shadow
        # Async callables run after Redis lost what this process wrote (restart, flush, or
        # this node's liveness lapsed), once the store has put back its sockets, the seats
        # of its connected participants and the room states: for anything else to rebuild.
        self.on_reconnect: list[Hook] = self._recovery.hooks.callbacks
        # A failover may have lost our last writes (replication is asynchronous): put back
        # what we own, which only fills in what is missing.
        on_failover(self._pool, self._recovery.failed_over)

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await wait_for_redis(self._client, self._where)
        log.info("redis store at %s (prefix %r)", self._where, self.prefix)

    async def stop(self) -> None:
        await self._recovery.stop()
        await self._client.aclose()
        await close_pool(self._pool)

    # participants ----------------------------------------------------------------------
    async def join(
        self, room_id: str, record: ParticipantRecord, limit: int, address_limit: int = 0
    ) -> JoinResult:
        with guard("join"):
            status, raw, count = await self._scripts.join(room_id, record, limit, address_limit)
        if status == -2:
            raise AddressFull(record.address)
        if status < 0:
            raise RoomFull(room_id)
        joined = ParticipantRecord.from_dict(json.loads(raw))
        self._shadow.seat(room_id, joined)
        return JoinResult(joined, status == 1, count)

    async def leave(self, room_id: str, participant_id: str) -> ParticipantRecord | None:
        self._recovery.unseat(room_id, participant_id)
        with guard("leave"):
            raw = await self._scripts.leave(room_id, participant_id)
        return ParticipantRecord.from_dict(json.loads(raw)) if raw else None

    async def leave_if_gone(
        self, room_id: str, participant_id: str, disconnected_before: float
    ) -> ParticipantRecord | None:
        with guard("leave_if_gone"):
            raw = await self._scripts.leave_if_gone(room_id, participant_id, disconnected_before)
        if not raw:
            return None
        self._recovery.unseat(room_id, participant_id)
        return ParticipantRecord.from_dict(json.loads(raw))

    async def participant(self, room_id: str, participant_id: str) -> ParticipantRecord | None:
        with guard("participant"):
            raw = await self._client.hget(self._keys.room(room_id), participant_id)
        return ParticipantRecord.from_dict(json.loads(raw)) if raw else None

    async def participants(self, room_id: str) -> list[ParticipantRecord]:
        with guard("participants"):
            intact, raws = await self._recovery.checked_read("hvals", self._keys.room(room_id))
        records = [ParticipantRecord.from_dict(json.loads(raw)) for raw in raws]
        # Hash order is arbitrary; joining order is what callers expect (as in memory).
        records.sort(key=lambda r: (r.joined_at, r.id))
        if intact:
            self._shadow.room(room_id, records)
        return records

    async def address_seats(self, address: str) -> int:
        with guard("address_seats"):
            return int(await self._client.scard(self._keys.address(address)))

    async def count(self, room_id: str) -> int:
        with guard("count"):
            return int(await self._client.hlen(self._keys.room(room_id)))

    async def update(
        self, room_id: str, participant_id: str, **changes: Any
    ) -> ParticipantRecord | None:
        fields = ParticipantRecord.__dataclass_fields__
        for key in changes:
            if key not in fields:
                raise AttributeError(key)
        key = self._keys.room(room_id)
        # Compare-and-set of this one record: only writers of the same participant retry.
        for _ in range(UPDATE_RETRIES):
            with guard("update"):
                raw = await self._client.hget(key, participant_id)
                if raw is None:
                    return None
                data = json.loads(raw)
                data.update(changes)
                record = ParticipantRecord.from_dict(data)
                status = await self._scripts.update(
                    room_id, participant_id, raw, dumps(record.to_dict())
                )
            if status == 1:
                self._shadow.seat(room_id, record)
                return record
            if status < 0:
                return None
        raise StoreError(f"update of {participant_id} in {room_id} kept racing; gave up")

    async def rooms_of(self, participant_id: str) -> list[str]:
        with guard("rooms_of"):
            rooms = await self._client.smembers(self._keys.rooms_of(participant_id))
        return sorted(r if isinstance(r, str) else r.decode() for r in rooms)

    # presence --------------------------------------------------------------------------
    async def socket_opened(self, participant_id: str, socket_id: str, node_id: str) -> int:
        self._shadow.socket_opened(participant_id, socket_id, node_id)
        with guard("socket_opened"):
            return await self._scripts.socket_opened(
                participant_id, socket_id, node_id, self._recovery.node_ttl(node_id)
            )

    async def socket_closed(self, participant_id: str, socket_id: str) -> int:
        self._shadow.socket_closed(participant_id, socket_id)
        with guard("socket_closed"):
            return await self._scripts.socket_closed(participant_id, socket_id)

    async def socket_count(self, participant_id: str) -> int:
        with guard("socket_count"):
            return await self._scripts.socket_closed(participant_id, "")

    async def node_alive(self, node_id: str, ttl: float) -> None:
        """Refresh the node key; if it was missing or not ours, Redis lost our state."""
        await self._recovery.heartbeat(node_id, ttl)

    # rooms -----------------------------------------------------------------------------
    async def room_state(self, room_id: str) -> RoomState:
        with guard("room_state"):
            intact, raw = await self._recovery.checked_read("get", self._keys.state(room_id))
        if not raw:
            return RoomState()
        state = RoomState(**json.loads(raw))
        if intact:
            self._shadow.states[room_id] = state
        return state

    async def set_room_state(self, room_id: str, state: RoomState, expect_epoch: int) -> bool:
        with guard("set_room_state"):
            done = await self._scripts.room_cas(room_id, state, expect_epoch)
        if done:
            self._shadow.states[room_id] = dataclasses.replace(state)
        return done

    # net control -----------------------------------------------------------------------
    async def floor(self, room_id: str) -> FloorDoc:
        with guard("floor"):
            intact, raw = await self._recovery.checked_read("get", self._keys.floor(room_id))
        doc = FloorDoc.from_dict(json.loads(raw)) if raw else FloorDoc()
        if intact and raw:
            self._shadow.floors[room_id] = doc
        return doc

    async def set_floor(self, room_id: str, doc: FloorDoc, expected_version: int) -> bool:
        with guard("set_floor"):
            done = await self._scripts.floor_cas(room_id, doc, expected_version)
        if done:
            self._shadow.floors[room_id] = doc
        return done

    # recordings ------------------------------------------------------------------------
    async def recording(self, room_id: str) -> RecordingDoc | None:
        with guard("recording"):
            raw = await self._client.get(self._keys.recording(room_id))
        return RecordingDoc.from_dict(json.loads(raw)) if raw else None

    async def set_recording(self, room_id: str, doc: RecordingDoc, expected_version: int) -> bool:
        with guard("set_recording"):
            return await self._scripts.version_cas(
                self._keys.recording(room_id), doc.to_dict(), expected_version
            )

    # SFU workers -----------------------------------------------------------------------
    async def worker_seen(self, record: WorkerRecord, ttl: float) -> None:
        with guard("worker_seen"):
            await self._scripts.worker_seen(record, ttl)

    async def workers(self) -> list[WorkerRecord]:
        with guard("workers"):
            raws = await self._scripts.workers()
        return [WorkerRecord(**json.loads(raw)) for raw in raws if raw]

    async def remove_worker(self, worker_id: str) -> bool:
        with guard("remove_worker"):
            return await self._scripts.remove_worker(worker_id)

    async def claim_worker(self, worker_id: str, owner: str, ttl: float) -> bool:
        with guard("claim_worker"):
            return await self._scripts.claim_worker(worker_id, owner, ttl)

    async def release_worker(self, worker_id: str, owner: str) -> bool:
        with guard("release_worker"):
            return await self._scripts.release_worker(worker_id, owner)

    # revocation ------------------------------------------------------------------------
    async def revoke(self, session_id: str, until: float) -> None:
        ttl_ms = int((until - time.time()) * 1000)
        if ttl_ms <= 0:
            return
        with guard("revoke"):
            await self._client.set(self._keys.revoked(session_id), "1", px=ttl_ms)

    async def is_revoked(self, session_id: str) -> bool:
        with guard("is_revoked"):
            return bool(await self._client.exists(self._keys.revoked(session_id)))
