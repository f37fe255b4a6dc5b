"""The state store and message bus interfaces.

Everything more than one server process would need to agree on lives behind `Store`;
everything that must reach a socket held by some process goes through `Bus`. The
embedded default implements both in memory (`memory_store.py`), a deployment of several
processes in Redis (`redis_store.py`, `redis_bus.py`). Both pass the same test-suite.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from yahaml_voice.core.protocol import AudioSource, Mode, Role

from .floor import FloorDoc


class StoreError(Exception):
    """Base of the errors a store raises on purpose."""


class StoreUnavailable(StoreError):
    """The shared store cannot be reached right now (handlers answer 503; loops retry)."""


class RoomFull(StoreError):
    """The room has reached max_participants (409)."""


class AddressFull(StoreError):
    """Participants from this source address already hold limits.participants_per_address
    seats (429)."""


@dataclass
class ParticipantRecord:
    id: str
    callsign: str
    role: Role
    joined_at: float
    can_publish: bool = True
    is_muted: bool = False
    volume: int = 100
    audio_source: AudioSource = "microphone"
    # When the participant's last socket closed (None while one is open). A sweeper removes
    # participants whose grace period ran out.
    disconnected_at: float | None = None
    # The session (`jti`) of the token that joined, and when that token expires: removing
    # the participant revokes that session until then.
    session_id: str = ""
    session_expires_at: float = 0.0
    # Source address the seat was taken from (counted by limits.participants_per_address).
    address: str = ""
    # Set by the first offer/answer the participant sends: seats that never start media
    # while in company are released after limits.media_timeout.
    media_started: bool = False
    # The SFU worker the participant's connection was last routed to (a room spanning
    # workers puts listeners on its edges; sfu.max_listeners_per_worker).
    sfu_worker: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParticipantRecord:
        return cls(**data)


@dataclass
class RoomState:
    mode: Mode = "mesh"
    worker_id: str | None = None
    # Increases with every change of the room's workers: a client told of a newer epoch
    # offers the SFU afresh (all of them on a placement; an edge's listeners when it dies).
    epoch: int = 0
    # Edge workers of a room spanning several (issue 14): each fans the origin's
    # (`worker_id`'s) slot streams out to its own listeners.
    edges: list[str] = field(default_factory=list)

    @property
    def workers(self) -> list[str]:
        """The origin, then the edges (empty in mesh mode)."""
        return [self.worker_id, *self.edges] if self.worker_id else []

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RecordingDoc:
    """A room's latest recording (docs/protocol.md "Recording"), kept in the store so every
    server process agrees on whether the room is being recorded; changed by compare-and-set
    on `version`. Finished recordings stay on disk (`recording.dir`), not here."""

    id: str
    state: str  # recording | stopped | failed
    started_at: float
    # The worker told to record it (the room's origin then): frames of others are ignored.
    worker_id: str
    ended_at: float | None = None
    reason: str | None = None
    net_id: str | None = None
    bytes: int = 0
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordingDoc:
        return cls(**data)


@dataclass
class WorkerRecord:
    id: str
    slots: int
    last_seen: float
    load: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    # Set by the worker's `draining` frame (SIGTERM): it gets no new rooms and its rooms
    # move away. In the record, so every server process sees it.
    draining: bool = False

    @property
    def score(self) -> float:
        """Lower is less loaded: forwarded streams first, then peers."""
        return float(self.load.get("streams", 0)) + 0.1 * float(self.load.get("peers", 0))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class JoinResult:
    participant: ParticipantRecord
    # False when the participant already held the seat (a rejoin within the grace period).
    created: bool
    count: int


class Store(Protocol):
    """Shared state. Every method is atomic with respect to the others."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    # participants ------------------------------------------------------------------
    async def join(
        self, room_id: str, record: ParticipantRecord, limit: int, address_limit: int = 0
    ) -> JoinResult:
        """Add (or find) the participant; RoomFull when `limit` is reached, AddressFull when
        `record.address` already holds `address_limit` seats in all rooms (0: no limit).
        A rejoin of a seat holder is never refused."""
        ...

    async def address_seats(self, address: str) -> int:
        """Seats held in all rooms by participants who joined from `address`."""
        ...

    async def leave(self, room_id: str, participant_id: str) -> ParticipantRecord | None:
        """Remove; the record if this call removed it, None if it was not there."""
        ...

    async def leave_if_gone(
        self, room_id: str, participant_id: str, disconnected_before: float
    ) -> ParticipantRecord | None:
        """Remove only if still disconnected since before the given time (grace expiry)."""
        ...

    async def participant(self, room_id: str, participant_id: str) -> ParticipantRecord | None: ...

    async def participants(self, room_id: str) -> list[ParticipantRecord]: ...

    async def count(self, room_id: str) -> int: ...

    async def update(
        self, room_id: str, participant_id: str, **changes: Any
    ) -> ParticipantRecord | None: ...

    async def rooms_of(self, participant_id: str) -> list[str]: ...

    # presence ------------------------------------------------------------------------
    async def socket_opened(self, participant_id: str, socket_id: str, node_id: str) -> int:
        """Record an open socket; returns the participant's open socket count."""
        ...

    async def socket_closed(self, participant_id: str, socket_id: str) -> int:
        """Forget a socket; returns how many the participant still has open."""
        ...

    async def socket_count(self, participant_id: str) -> int: ...

    async def node_alive(self, node_id: str, ttl: float) -> None:
        """Heartbeat of a server process; sockets of nodes that stop beating stop counting."""
        ...

    # rooms -----------------------------------------------------------------------------
    async def room_state(self, room_id: str) -> RoomState: ...

    async def set_room_state(self, room_id: str, state: RoomState, expect_epoch: int) -> bool:
        """Compare-and-set on the epoch: False if someone else changed the room first."""
        ...

    # net control -----------------------------------------------------------------------
    async def floor(self, room_id: str) -> FloorDoc:
        """The room's floor document (an empty one at version 0 if none was stored)."""
        ...

    async def set_floor(self, room_id: str, doc: FloorDoc, expected_version: int) -> bool:
        """Compare-and-set on the version: False if someone else changed the floor first."""
        ...

    # recordings ------------------------------------------------------------------------
    async def recording(self, room_id: str) -> RecordingDoc | None:
        """The room's latest recording (None if it never had one)."""
        ...

    async def set_recording(self, room_id: str, doc: RecordingDoc, expected_version: int) -> bool:
        """Compare-and-set on the version (0: none stored): False if someone else changed
        it first."""
        ...

    # SFU workers -----------------------------------------------------------------------
    async def worker_seen(self, record: WorkerRecord, ttl: float) -> None: ...

    async def workers(self) -> list[WorkerRecord]: ...

    async def remove_worker(self, worker_id: str) -> bool:
        """True if this call removed it (so exactly one process handles its failover)."""
        ...

    async def claim_worker(self, worker_id: str, owner: str, ttl: float) -> bool:
        """Claim a worker id for `ttl` seconds, or renew the claim `owner` already holds.

        False while another owner's claim lives: a live worker id cannot be registered
        twice, whichever server process the second registration reaches."""
        ...

    async def release_worker(self, worker_id: str, owner: str) -> bool:
        """Drop the claim if `owner` holds it; True if this call dropped it."""
        ...

    # revocation ------------------------------------------------------------------------
    async def revoke(self, session_id: str, until: float) -> None:
        """Deny a token's session (`jti`) until unix time `until` (the token's expiry)."""
        ...

    async def is_revoked(self, session_id: str) -> bool: ...


class Subscription(Protocol):
    # True once messages were lost because the consumer fell too far behind.
    overflowed: bool

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    async def close(self) -> None: ...


# Messages a slow local consumer may have waiting before its stream is ended.
QUEUE_LIMIT = 1024


class LocalSubscription:
    """One local consumer's queue of a channel's messages, shared by both buses.

    A consumer that falls QUEUE_LIMIT messages behind has its stream ended (after what it
    already has), so its socket is closed and the client resynchronises on reconnect,
    instead of silently missing a message in the middle.
    """

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_LIMIT)
        self.overflowed = False

    def put(self, message: dict[str, Any]) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True

    def end(self) -> None:
        """Make the iterator return once the queue is drained."""
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.overflowed = True

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            if self.overflowed and self.queue.empty():
                return
            message = await self.queue.get()
            if message is None:
                return
            yield message


class Bus(Protocol):
    """Delivery to channels `p:<participant>` and `w:<worker>`, in order per publisher."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...

    async def publish_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Publish each (channel, message) in order, as one batch (one round trip to a
        shared bus): what a room broadcast uses. An empty list does nothing; an outage
        raises StoreUnavailable as publish() does."""
        ...

    async def subscribe(self, channel: str) -> Subscription: ...

    def health(self) -> dict[str, Any]:
        """{connected, reconnects}: whether this process receives messages now."""
        ...
