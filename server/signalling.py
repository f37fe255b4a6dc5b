"""Routing WebRTC signals: participant to participant (mesh), participant to the room's
SFU worker, and the worker's answers, candidates and speaker slots back to the room.

The server reads only what its rules need (SDP size, and in mesh mode whether a
listener's SDP would send); media never passes through it.
"""

from __future__ import annotations

import asyncio
import time
import weakref

from yahaml_voice.core.config import Config
from yahaml_voice.core.protocol import (
    MAX_SDP_BYTES,
    SFU_PEER,
    IceCandidate,
    SessionDescription,
    SfuLinksData,
    SfuLinksFrame,
    SignalData,
    SignalFrame,
    SignalMessage,
    SignalRequest,
    SignalType,
    SlotAssignment,
    SpeakerSlotsData,
    SpeakerSlotsFrame,
    ToWorkerAnnounce,
    ToWorkerAnnounceFrame,
    ToWorkerSignal,
    ToWorkerSignalFrame,
    WorkerLinks,
)
from yahaml_voice.core.timestamps import iso
from yahaml_voice.core.tokens import Identity

from . import cascade
from .delivery import Delivery
from .errors import ApiError
from .modes import RoomModes, links_source
from .sdp import sends_media
from .store import ParticipantRecord, RoomState, Store
from .views import check_access

# The payload of a signal: an SDP, an ICE candidate, or none (end of candidates).
SignalPayload = SessionDescription | IceCandidate | None


class Signalling:
    def __init__(self, config: Config, store: Store, delivery: Delivery, modes: RoomModes) -> None:
        self.config = config
        self.store = store
        self.delivery = delivery
        self.modes = modes
        # One SFU routing decision at a time per participant in this process, so a
        # candidate sent right behind an offer follows it to the same worker.
        # (Weak values: a lock lives while someone holds or awaits it.)
        self._routing: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def signal(self, identity: Identity, room_id: str, request: SignalRequest) -> int:
        """Route a signal from `identity`; returns how many participants it was sent to."""
        check_access(self.config, identity, room_id)
        problem = request.check_payload()
        if problem:
            raise ApiError(400, "bad_signal", problem)
        data = request.data
        sdp = data.sdp if isinstance(data, SessionDescription) else ""
        if len(sdp.encode()) > MAX_SDP_BYTES:
            raise ApiError(413, "too_large", "the SDP is larger than 64 KiB")
        sender = await self.store.participant(room_id, identity.participant_id)
        if sender is None:
            raise ApiError(403, "not_in_room", f"you have not joined room {room_id!r}")
        if request.to == sender.id:
            raise ApiError(400, "bad_signal", "a signal cannot be addressed to yourself")
        if request.type in ("offer", "answer") and not sender.media_started:
            # Negotiating media: this seat is in use (see limits.media_timeout).
            await self.store.update(room_id, sender.id, media_started=True)
        if request.to == SFU_PEER:
            await self._to_sfu(sender, room_id, request.type, data)
            return 1
        room = self.config.room(room_id)
        if room is not None and room.kind == "parrot":
            # An echo test plays you back to yourself alone: members never meet in a mesh.
            raise ApiError(
                409, "echo_room", "an echo test room has no peers to signal; use the SFU"
            )
        if not sender.can_publish and request.type in ("offer", "answer"):
            # Mesh media never passes the server: refuse what would let a listener send.
            if sends_media(sdp):
                raise ApiError(
                    403,
                    "cannot_publish",
                    "you joined as a listener: offer and answer audio as recvonly (or inactive)",
                )
        message = SignalMessage(
            type=request.type, from_=sender.id, to=request.to, data=data, timestamp=iso(time.time())
        )
        frame = SignalFrame(data=SignalData(roomId=room_id, message=message))
        if request.to is None:
            return await self.delivery.broadcast(room_id, frame, exclude=sender.id)
        if await self.store.participant(room_id, request.to) is None:
            raise ApiError(404, "peer_not_found", f"no participant {request.to!r} in this room")
        await self.delivery.to_participant(request.to, frame)
        return 1

    async def _to_sfu(
        self, sender: ParticipantRecord, room_id: str, type_: SignalType, data: SignalPayload
    ) -> None:
        lock = self._routing.get(sender.id)
        if lock is None:
            lock = self._routing[sender.id] = asyncio.Lock()
        async with lock:
            state = await self.store.room_state(room_id)
            if state.mode != "sfu" or not state.worker_id:
                raise ApiError(
                    409, "not_sfu", f"room {room_id!r} is in mesh mode; signal your peers"
                )
            worker: str
            if type_ == "offer":
                worker, state = await self._place(room_id, state, sender)
            else:
                if state.edges:  # where the offer just before this went (the lock)
                    sender = await self.store.participant(room_id, sender.id) or sender
                worker = cascade.routed_to(state, sender) or ""
            signal = ToWorkerSignal(
                roomId=room_id,
                from_=sender.id,
                role=sender.role,
                canPublish=sender.can_publish,
                callsign=sender.callsign,
                type=type_,
                data=data,
                origin=state.worker_id if worker != state.worker_id else None,
                parrot=self._parrot(room_id),
            )
            await self.delivery.to_worker(worker, ToWorkerSignalFrame(data=signal))

    def _parrot(self, room_id: str) -> bool:
        room = self.config.room(room_id)
        return room is not None and room.kind == "parrot"

    async def _place(
        self, room_id: str, state: RoomState, sender: ParticipantRecord
    ) -> tuple[str, RoomState]:
        """The worker for an offer: the origin, unless the room is (or must become) wider
        than one worker (sfu.max_listeners_per_worker)."""
        cap = self.config.sfu.max_listeners_per_worker
        worker = state.worker_id
        assert worker is not None
        if not sender.can_publish and cap > 0:
            if state.edges or sender.sfu_worker or await self.store.count(room_id) > cap:
                records = await self.store.participants(room_id)
                worker = cascade.assign(state, records, sender, cap)
                if worker == cascade.NEW_EDGE:
                    state = await self.modes.add_edge(room_id)
                    worker = cascade.assign(state, records, sender, cap)
                    if worker == cascade.NEW_EDGE:  # no worker to add: the emptiest
                        worker = cascade.least_loaded(state, records)
        if sender.sfu_worker != worker:
            await self.store.update(room_id, sender.id, sfu_worker=worker)
        return worker, state

    # from SFU workers ------------------------------------------------------------------
    async def worker_holds(self, worker_id: str, room_id: str) -> bool:
        """Whether the room a worker reports (roomState) is placed on it; when not, the
        caller sends it roomClosed (a reconnected worker may hold rooms re-placed while
        it was away, whose roomClosed went to nobody)."""
        state = await self.store.room_state(room_id)
        return worker_id in state.workers and self.config.room(room_id) is not None

    async def is_origin(self, worker_id: str, room_id: str) -> bool:
        """Whether the worker holds the room's publishers (its slots and talkers count)."""
        state = await self.store.room_state(room_id)
        return state.worker_id == worker_id and self.config.room(room_id) is not None

    async def worker_signal(
        self, worker_id: str, room_id: str, to: str, type_: SignalType, data: SignalPayload
    ) -> bool:
        """Deliver a worker's answer/candidate as a signal `from: 'sfu'`."""
        if not await self.worker_holds(worker_id, room_id):
            return False
        if await self.store.participant(room_id, to) is None:
            return False
        message = SignalMessage(
            type=type_, from_=SFU_PEER, to=to, data=data, timestamp=iso(time.time())
        )
        frame = SignalFrame(data=SignalData(roomId=room_id, message=message))
        await self.delivery.to_participant(to, frame)
        if type_ == "answer" and not await self.is_origin(worker_id, room_id):
            # A listener joins on an edge: the origin announces the slots for it.
            state = await self.store.room_state(room_id)
            if state.worker_id:
                announce = ToWorkerAnnounceFrame(data=ToWorkerAnnounce(roomId=room_id))
                await self.delivery.to_worker(state.worker_id, announce)
        return True

    async def worker_links(self, worker_id: str, links: WorkerLinks) -> bool:
        """Pass a worker's not-connected peers to its room (any worker holding it: in a
        cascade each speaks for its own peers; clients keep one entry per `source`)."""
        if not await self.worker_holds(worker_id, links.roomId):
            return False
        data = SfuLinksData(
            roomId=links.roomId, source=links_source(worker_id), notConnected=links.notConnected
        )
        await self.delivery.broadcast(links.roomId, SfuLinksFrame(data=data))
        return True

    async def worker_slots(
        self, worker_id: str, room_id: str, slots: list[SlotAssignment], speaking: list[str]
    ) -> bool:
        """Broadcast the origin worker's speaker slots to its room."""
        if not await self.is_origin(worker_id, room_id):
            return False
        data = SpeakerSlotsData(roomId=room_id, slots=slots, speaking=speaking)
        await self.delivery.broadcast(room_id, SpeakerSlotsFrame(data=data))
        return True
