"""In-memory Store for the embedded default (one server process); its bus is memory_bus.py.

All methods run without awaiting in between their reads and writes, so on one event loop
each is atomic, which is what the Store contract asks for.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Any

from .floor import FloorDoc
from .store import (
    AddressFull,
    JoinResult,
    ParticipantRecord,
    RecordingDoc,
    RoomFull,
    RoomState,
    WorkerRecord,
)

# Revoked sessions kept at most; beyond it the soonest to expire go first (a bound on
# memory; a token revoked that way still dies at its own expiry).
MAX_REVOKED = 100_000


class MemoryStore:
    name = "memory"

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, ParticipantRecord]] = defaultdict(dict)
        self._sockets: dict[str, set[str]] = defaultdict(set)
        self._states: dict[str, RoomState] = {}
        self._floors: dict[str, dict[str, Any]] = {}
        self._recordings: dict[str, dict[str, Any]] = {}
        self._workers: dict[str, tuple[WorkerRecord, float]] = {}
        # worker id -> (owner, monotonic expiry)
        self._claims: dict[str, tuple[str, float]] = {}
        # session id -> unix time until which it is denied
        self._revoked: dict[str, float] = {}
        # source address -> seats ("room|participant") taken from it
        self._addresses: dict[str, set[str]] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    @staticmethod
    def _copy(record: ParticipantRecord) -> ParticipantRecord:
        return dataclasses.replace(record)

    async def join(
        self, room_id: str, record: ParticipantRecord, limit: int, address_limit: int = 0
    ) -> JoinResult:
        room = self._rooms[room_id]
        existing = room.get(record.id)
        if existing is not None:
            return JoinResult(self._copy(existing), False, len(room))
        if len(room) >= limit:
            raise RoomFull(room_id)
        seats = self._addresses.get(record.address, set()) if record.address else set()
        if address_limit > 0 and len(seats) >= address_limit:
            raise AddressFull(record.address)
        room[record.id] = self._copy(record)
        if record.address:
            self._addresses.setdefault(record.address, set()).add(f"{room_id}|{record.id}")
        return JoinResult(self._copy(record), True, len(room))

    async def address_seats(self, address: str) -> int:
        return len(self._addresses.get(address, ()))

    async def leave(self, room_id: str, participant_id: str) -> ParticipantRecord | None:
        record = self._rooms[room_id].pop(participant_id, None)
        if record is None:
            return None
        seats = self._addresses.get(record.address)
        if seats is not None:
            seats.discard(f"{room_id}|{participant_id}")
            if not seats:
                del self._addresses[record.address]
        return self._copy(record)

    async def leave_if_gone(
        self, room_id: str, participant_id: str, disconnected_before: float
    ) -> ParticipantRecord | None:
        record = self._rooms[room_id].get(participant_id)
        if record is None or record.disconnected_at is None:
            return None
        if record.disconnected_at > disconnected_before or self._sockets.get(participant_id):
            return None
        return await self.leave(room_id, participant_id)

    async def participant(self, room_id: str, participant_id: str) -> ParticipantRecord | None:
        record = self._rooms[room_id].get(participant_id)
        return self._copy(record) if record else None

    async def participants(self, room_id: str) -> list[ParticipantRecord]:
        return [self._copy(r) for r in self._rooms[room_id].values()]

    async def count(self, room_id: str) -> int:
        return len(self._rooms[room_id])

    async def update(
        self, room_id: str, participant_id: str, **changes: Any
    ) -> ParticipantRecord | None:
        record = self._rooms[room_id].get(participant_id)
        if record is None:
            return None
        for key, value in changes.items():
            if not hasattr(record, key):
                raise AttributeError(key)
            setattr(record, key, value)
        return self._copy(record)

    async def rooms_of(self, participant_id: str) -> list[str]:
        return [room_id for room_id, room in self._rooms.items() if participant_id in room]

    async def socket_opened(self, participant_id: str, socket_id: str, node_id: str) -> int:
        self._sockets[participant_id].add(socket_id)
        return len(self._sockets[participant_id])

    async def socket_closed(self, participant_id: str, socket_id: str) -> int:
        sockets = self._sockets.get(participant_id, set())
        sockets.discard(socket_id)
        if not sockets:
            self._sockets.pop(participant_id, None)
        return len(sockets)

    async def socket_count(self, participant_id: str) -> int:
        return len(self._sockets.get(participant_id, ()))

    async def node_alive(self, node_id: str, ttl: float) -> None:
        return None

    async def room_state(self, room_id: str) -> RoomState:
        state = self._states.get(room_id) or RoomState()
        return dataclasses.replace(state, edges=list(state.edges))

    async def set_room_state(self, room_id: str, state: RoomState, expect_epoch: int) -> bool:
        current = self._states.get(room_id) or RoomState()
        if current.epoch != expect_epoch:
            return False
        self._states[room_id] = dataclasses.replace(state, edges=list(state.edges))
        return True

    async def floor(self, room_id: str) -> FloorDoc:
        raw = self._floors.get(room_id)
        return FloorDoc.from_dict(raw) if raw else FloorDoc()

    async def set_floor(self, room_id: str, doc: FloorDoc, expected_version: int) -> bool:
        current = self._floors.get(room_id)
        if (current["version"] if current else 0) != expected_version:
            return False
        self._floors[room_id] = doc.to_dict()
        return True

    async def recording(self, room_id: str) -> RecordingDoc | None:
        raw = self._recordings.get(room_id)
        return RecordingDoc.from_dict(raw) if raw else None

    async def set_recording(self, room_id: str, doc: RecordingDoc, expected_version: int) -> bool:
        current = self._recordings.get(room_id)
        if (current["version"] if current else 0) != expected_version:
            return False
        self._recordings[room_id] = doc.to_dict()
        return True

    async def worker_seen(self, record: WorkerRecord, ttl: float) -> None:
        self._workers[record.id] = (dataclasses.replace(record), time.monotonic() + ttl)

    async def workers(self) -> list[WorkerRecord]:
        now = time.monotonic()
        return [dataclasses.replace(r) for r, expires in self._workers.values() if expires > now]

    async def remove_worker(self, worker_id: str) -> bool:
        return self._workers.pop(worker_id, None) is not None

    async def claim_worker(self, worker_id: str, owner: str, ttl: float) -> bool:
        now = time.monotonic()
        for other, (_, expires) in list(self._claims.items()):
            if expires <= now:
                del self._claims[other]
        held = self._claims.get(worker_id)
        if held is not None and held[0] != owner:
            return False
        self._claims[worker_id] = (owner, now + ttl)
        return True

    async def release_worker(self, worker_id: str, owner: str) -> bool:
        held = self._claims.get(worker_id)
        if held is None or held[0] != owner:
            return False
        del self._claims[worker_id]
        return True

    async def revoke(self, session_id: str, until: float) -> None:
        now = time.time()
        if until <= now:
            return
        self._revoked[session_id] = max(until, self._revoked.get(session_id, 0.0))
        if len(self._revoked) > MAX_REVOKED:
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        while len(self._revoked) > MAX_REVOKED:
            del self._revoked[min(self._revoked, key=self._revoked.__getitem__)]

    async def is_revoked(self, session_id: str) -> bool:
        until = self._revoked.get(session_id)
        if until is None:
            return False
        if until <= time.time():
            del self._revoked[session_id]
            return False
        return True
