"""Room rules: who may join, speak and signal whom; grace periods; mesh/SFU switching.

RoomService holds no state of its own beyond its background tasks: membership, room
mode and worker placement live in the Store, delivery goes through the Bus, so any
number of server processes can run this same code against one Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from yahaml_voice.core.aio import cancel_and_wait, every
from yahaml_voice.core.config import Config, RoomConfig
from yahaml_voice.core.protocol import (
    MAX_SDP_BYTES,
    SFU_PEER,
    AudioSource,
    IceCandidate,
    LeaveReason,
    Mode,
    MuteChangedData,
    MuteChangedFrame,
    Participant,
    ParticipantJoinedData,
    ParticipantJoinedFrame,
    ParticipantLeftData,
    ParticipantLeftFrame,
    Peer,
    RevokeData,
    RevokeNotice,
    RoomDetail,
    RoomModeChangedData,
    RoomModeChangedFrame,
    RoomSummary,
    ServerFrame,
    SessionDescription,
    SignalData,
    SignalFrame,
    SignalMessage,
    SignalRequest,
    SignalType,
    SlotAssignment,
    SpeakerSlotsData,
    SpeakerSlotsFrame,
    ToWorkerParticipantLeft,
    ToWorkerParticipantLeftFrame,
    ToWorkerRoomClosed,
    ToWorkerRoomClosedFrame,
    ToWorkerSignal,
    ToWorkerSignalFrame,
    VolumeChangedData,
    VolumeChangedFrame,
    wire,
)
from yahaml_voice.core.timestamps import iso as _iso
from yahaml_voice.core.tokens import Identity

from .errors import ApiError as RoomError  # a request the rules refuse
from .limits import MEDIA, SEATS, SOCKETS, Limits, RateLimited
from .placement import choose_worker
from .sdp import sends_media
from .store import (
    AddressFull,
    Bus,
    ParticipantRecord,
    RoomFull,
    RoomState,
    Store,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0
# Every this many sweeps, also look for participants marked connected whose sockets are all
# gone: their server process died without closing them (its node stopped heartbeating).
ORPHAN_CHECK_EVERY = 5


def participant_view(record: ParticipantRecord) -> Participant:
    return Participant(
        id=record.id,
        displayName=record.callsign,
        role=record.role,
        joinedAt=_iso(record.joined_at),
        isActive=record.disconnected_at is None,
        isMuted=record.is_muted,
        volume=record.volume,
        audioSourceType=record.audio_source,
        canPublish=record.can_publish,
    )


def peer_view(record: ParticipantRecord) -> Peer:
    return Peer(
        id=record.id,
        displayName=record.callsign,
        audioSourceType=record.audio_source,
        role=record.role,
        isMuted=record.is_muted,
        canPublish=record.can_publish,
    )


def _leave_reason(why: str) -> LeaveReason:
    """The `reason` of participantLeft: left, logout, removed, no_media or timeout."""
    reasons: dict[str, LeaveReason] = {
        "left": "left",
        "logout": "logout",
        "removed": "removed",
        "no_media": "no_media",
    }
    return reasons.get(why, "timeout")


def participant_channel(participant_id: str) -> str:
    return f"p:{participant_id}"


def worker_channel(worker_id: str) -> str:
    return f"w:{worker_id}"


@dataclass
class Joined:
    participant: ParticipantRecord
    peers: list[ParticipantRecord]
    state: RoomState


class RoomService:
    def __init__(
        self, config: Config, store: Store, bus: Bus, limits: Limits | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.bus = bus
        self.limits = limits or Limits(config)
        # room id -> (epoch, when this process first saw it): a mode switch restarts the
        # media clock of everyone in the room (they negotiate anew).
        self._epoch_seen: dict[str, tuple[int, float]] = {}
        self.started_at = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        # Serialises mode changes of a room within this process; across processes the
        # store's compare-and-set on the epoch decides.
        self._mode_locks: dict[str, asyncio.Lock] = {}
        self._sweeps = 0

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        sweeps = every(
            SWEEP_INTERVAL,
            self.sweep,
            what="sweep",
            log=log,
            quiet=(StoreUnavailable,),
            wait_first=True,
        )
        self._tasks.append(asyncio.create_task(sweeps, name="rooms-sweep"))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()

    # lookups ---------------------------------------------------------------------------
    def room_config(self, room_id: str) -> RoomConfig:
        room = self.config.room(room_id)
        if room is None:
            raise RoomError(404, "room_not_found", f"no room {room_id!r}")
        return room

    def check_access(self, identity: Identity, room_id: str) -> RoomConfig:
        room = self.room_config(room_id)
        if not identity.may_enter(room_id):
            raise RoomError(403, "forbidden", f"your token does not admit you to room {room_id!r}")
        return room

    async def summary(self, room: RoomConfig) -> RoomSummary:
        count = await self.store.count(room.id)
        state = await self.store.room_state(room.id)
        return RoomSummary(
            id=room.id,
            name=room.name,
            description=room.description,
            participantCount=count,
            maxParticipants=room.max_participants,
            createdAt=_iso(self.started_at),
            isActive=True,
            mode=state.mode,
            sfuThreshold=room.sfu_threshold,
            ptt=room.ptt,
        )

    async def list_rooms(self, identity: Identity) -> list[RoomSummary]:
        return [
            await self.summary(room) for room in self.config.rooms if identity.may_enter(room.id)
        ]

    async def detail(self, identity: Identity, room_id: str) -> RoomDetail:
        room = self.check_access(identity, room_id)
        summary = await self.summary(room)
        records = await self.store.participants(room_id)
        records.sort(key=lambda r: r.joined_at)
        return RoomDetail(
            **summary.model_dump(), participants=[participant_view(r) for r in records]
        )

    # membership ------------------------------------------------------------------------
    async def join(
        self,
        identity: Identity,
        room_id: str,
        audio_source: AudioSource,
        join_mode: str,
        address: str = "",
    ) -> Joined:
        room = self.check_access(identity, room_id)
        can_publish = identity.can_publish and join_mode != "listener"
        connected = await self.store.socket_count(identity.participant_id) > 0
        now = time.time()
        record = ParticipantRecord(
            id=identity.participant_id,
            callsign=identity.callsign,
            role=identity.role,
            joined_at=now,
            can_publish=can_publish,
            audio_source=audio_source,
            disconnected_at=None if connected else now,
            session_id=identity.session_id,
            session_expires_at=identity.expires_at,
            address=address,
        )
        per_address = self.config.limits.participants_per_address
        try:
            result = await self.store.join(room_id, record, room.max_participants, per_address)
        except RoomFull as exc:
            raise RoomError(
                409, "room_full", f"room {room_id!r} is full ({room.max_participants} participants)"
            ) from exc
        except AddressFull as exc:
            self.limits.refuse(SEATS)
            raise RateLimited(
                SEATS,
                f"participants from your address already hold {per_address} seats; "
                "leave a room first",
                max(self.config.server.grace_period, 5.0),
            ) from exc
        participant = result.participant
        if not result.created:
            # A rejoin keeps the seat; refresh what the client may have changed.
            updated = await self.store.update(
                room_id,
                participant.id,
                can_publish=can_publish,
                audio_source=audio_source,
                disconnected_at=None if connected else participant.disconnected_at or now,
                session_id=identity.session_id,
                session_expires_at=identity.expires_at,
            )
            participant = updated or participant
        else:
            log.info(
                "join room=%s participant=%s callsign=%s role=%s count=%d",
                room_id,
                participant.id,
                participant.callsign,
                participant.role,
                result.count,
            )
            await self.broadcast(
                room_id,
                ParticipantJoinedFrame(
                    data=ParticipantJoinedData(
                        roomId=room_id, participant=participant_view(participant)
                    )
                ),
                exclude=participant.id,
            )
        state = await self.maybe_switch(room, result.count)
        peers = [p for p in await self.store.participants(room_id) if p.id != participant.id]
        peers.sort(key=lambda r: r.joined_at)
        return Joined(participant, peers, state)

    async def leave(self, identity: Identity, room_id: str) -> bool:
        self.room_config(room_id)
        record = await self.store.leave(room_id, identity.participant_id)
        if record is None:
            return False
        await self._after_leave(room_id, record, "left")
        return True

    async def logout(self, identity: Identity) -> None:
        """Deny the token's session until it expires, leave every room, close its sockets.

        Denied first, so that nothing done with the token meanwhile (a rejoin) outlives
        the logout."""
        if identity.session_id:
            await self.store.revoke(identity.session_id, identity.expires_at)
        for room_id in await self.store.rooms_of(identity.participant_id):
            record = await self.store.leave(room_id, identity.participant_id)
            if record is not None:
                await self._after_leave(room_id, record, "logout")
        await self.close_sockets(
            identity.participant_id,
            "revoked",
            "you logged out; log in again",
            session_id=identity.session_id,
        )

    async def remove(self, identity: Identity, room_id: str, participant_id: str) -> None:
        """Net control removes a participant: its session revoked, out of the room."""
        self.check_access(identity, room_id)
        if identity.role != "ncs":
            raise RoomError(403, "forbidden", "only net control (role ncs) can remove participants")
        if participant_id == identity.participant_id:
            raise RoomError(400, "bad_request", "use leave to leave the room yourself")
        seated = await self.store.participant(room_id, participant_id)
        if seated is None:
            raise RoomError(
                404, "participant_not_found", f"no participant {participant_id!r} in this room"
            )
        if seated.session_id:
            until = seated.session_expires_at or time.time() + self.config.auth.session_ttl
            await self.store.revoke(seated.session_id, until)
        record = await self.store.leave(room_id, participant_id)
        if record is not None:
            await self._after_leave(room_id, record, "removed")
        log.info("room=%s participant=%s removed by %s", room_id, participant_id, identity.callsign)
        await self.close_sockets(
            participant_id,
            "removed",
            f"net control {identity.callsign} removed you from room {room_id!r}",
        )

    async def close_sockets(
        self, participant_id: str, code: str, message: str, session_id: str | None = None
    ) -> None:
        """Close the participant's sockets on every process (only those opened with
        `session_id`'s token, if given): an `error` frame `code`, then 4401."""
        await self.bus.publish(
            participant_channel(participant_id),
            wire(RevokeNotice(data=RevokeData(session=session_id, code=code, message=message))),
        )

    async def _after_leave(self, room_id: str, record: ParticipantRecord, why: str) -> None:
        log.info("leave room=%s participant=%s why=%s", room_id, record.id, why)
        reason = _leave_reason(why)
        await self.broadcast(
            room_id,
            ParticipantLeftFrame(
                data=ParticipantLeftData(roomId=room_id, participantId=record.id, reason=reason)
            ),
        )
        state = await self.store.room_state(room_id)
        if state.mode == "sfu" and state.worker_id:
            await self.bus.publish(
                worker_channel(state.worker_id),
                wire(
                    ToWorkerParticipantLeftFrame(
                        data=ToWorkerParticipantLeft(
                            roomId=room_id, participantId=record.id, reason=reason
                        )
                    )
                ),
            )
        room = self.config.room(room_id)
        if room is not None:
            await self.maybe_switch(room, await self.store.count(room_id))

    async def set_muted(self, identity: Identity, room_id: str, muted: bool) -> None:
        pid = await self._change(identity, room_id, is_muted=muted)
        data = MuteChangedData(roomId=room_id, participantId=pid, isMuted=muted)
        await self.broadcast(room_id, MuteChangedFrame(data=data))

    async def set_volume(self, identity: Identity, room_id: str, volume: int) -> None:
        pid = await self._change(identity, room_id, volume=volume)
        data = VolumeChangedData(roomId=room_id, participantId=pid, volume=volume)
        await self.broadcast(room_id, VolumeChangedFrame(data=data))

    async def _change(self, identity: Identity, room_id: str, **change: Any) -> str:
        """Update one field of the caller's seat (the caller tells the room); its id."""
        self.check_access(identity, room_id)
        record = await self.store.update(room_id, identity.participant_id, **change)
        if record is None:
            raise RoomError(403, "not_in_room", f"you have not joined room {room_id!r}")
        return record.id

    # presence --------------------------------------------------------------------------
    async def socket_opened(self, participant_id: str, socket_id: str, node_id: str) -> None:
        """Record the socket; RateLimited (and nothing recorded) beyond
        limits.sockets_per_participant, counted across server processes."""
        count = await self.store.socket_opened(participant_id, socket_id, node_id)
        cap = self.config.limits.sockets_per_participant
        if cap and count > cap:
            await self.store.socket_closed(participant_id, socket_id)
            self.limits.refuse(SOCKETS)
            raise RateLimited(
                SOCKETS, f"this participant already has {cap} sockets open; close one", 5.0
            )
        for room_id in await self.store.rooms_of(participant_id):
            await self.store.update(room_id, participant_id, disconnected_at=None)

    async def socket_closed(self, participant_id: str, socket_id: str) -> None:
        remaining = await self.store.socket_closed(participant_id, socket_id)
        if remaining:
            return
        now = time.time()
        for room_id in await self.store.rooms_of(participant_id):
            await self.store.update(room_id, participant_id, disconnected_at=now)

    async def sweep(self) -> None:
        """Remove participants whose grace period ran out (any process may do it).

        Every few sweeps, participants who look connected but have no live socket left
        (their server process died) start their grace period here instead."""
        now = time.time()
        cutoff = now - self.config.server.grace_period
        self._sweeps += 1
        orphans = self._sweeps % ORPHAN_CHECK_EVERY == 0
        for room in self.config.rooms:
            records = await self.store.participants(room.id)
            await self._release_silent(room, records, now)
            for record in records:
                if record.disconnected_at is None:
                    if orphans and not await self.store.socket_count(record.id):
                        log.info(
                            "room=%s participant=%s lost its server; grace starts",
                            room.id,
                            record.id,
                        )
                        await self.store.update(room.id, record.id, disconnected_at=now)
                    continue
                if record.disconnected_at > cutoff:
                    continue
                if await self.store.socket_count(record.id):
                    # A socket opened elsewhere before it could clear the mark.
                    await self.store.update(room.id, record.id, disconnected_at=None)
                    continue
                removed = await self.store.leave_if_gone(room.id, record.id, cutoff)
                if removed is not None:
                    await self._after_leave(room.id, removed, "grace period expired")

    async def _release_silent(
        self, room: RoomConfig, records: list[ParticipantRecord], now: float
    ) -> None:
        """Free the seats of connected participants who, in company, never sent an offer or
        answer within limits.media_timeout: idle sockets must not keep a room full.

        A lone participant has nobody to negotiate with and keeps its seat; in mesh mode two
        listeners have nothing to send each other, so only a publisher on either side makes
        company. The clock starts when the company arrived (or the room changed mode)."""
        timeout = self.config.limits.media_timeout
        if timeout <= 0 or len(records) < 2:
            return
        if all(r.media_started or r.disconnected_at is not None for r in records):
            return
        state = await self.store.room_state(room.id)
        seen = self._epoch_seen.get(room.id)
        if seen is None or seen[0] != state.epoch:
            seen = (state.epoch, now)
            self._epoch_seen[room.id] = seen
        for record in records:
            if record.media_started or record.disconnected_at is not None:
                continue
            company = [
                other.joined_at
                for other in records
                if other.id != record.id
                and (state.mode == "sfu" or record.can_publish or other.can_publish)
            ]
            if not company:
                continue
            since = max(record.joined_at, min(company), seen[1])
            if now - since < timeout:
                continue
            current = await self.store.participant(room.id, record.id)
            if current is None or current.media_started:
                continue
            removed = await self.store.leave(room.id, record.id)
            if removed is None:
                continue
            self.limits.refuse(MEDIA)
            await self.bus.publish(
                participant_channel(record.id),
                wire(
                    ParticipantLeftFrame(
                        data=ParticipantLeftData(
                            roomId=room.id, participantId=record.id, reason="no_media"
                        )
                    )
                ),
            )
            await self._after_leave(room.id, removed, "no_media")

    # delivery --------------------------------------------------------------------------
    async def broadcast(self, room_id: str, frame: ServerFrame, exclude: str | None = None) -> int:
        message = wire(frame)
        # One batch (one bus round trip), not one publish per member.
        items = [
            (participant_channel(record.id), message)
            for record in await self.store.participants(room_id)
            if record.id != exclude
        ]
        await self.bus.publish_many(items)
        return len(items)

    async def signal(self, identity: Identity, room_id: str, request: SignalRequest) -> int:
        """Route a signal from `identity`; returns how many participants it was sent to."""
        self.check_access(identity, room_id)
        problem = request.check_payload()
        if problem:
            raise RoomError(400, "bad_signal", problem)
        data = request.data
        sdp = data.sdp if isinstance(data, SessionDescription) else ""
        if len(sdp.encode()) > MAX_SDP_BYTES:
            raise RoomError(413, "too_large", "the SDP is larger than 64 KiB")
        sender = await self.store.participant(room_id, identity.participant_id)
        if sender is None:
            raise RoomError(403, "not_in_room", f"you have not joined room {room_id!r}")
        if request.to == sender.id:
            raise RoomError(400, "bad_signal", "a signal cannot be addressed to yourself")
        if request.type in ("offer", "answer") and not sender.media_started:
            # Negotiating media: this seat is in use (see limits.media_timeout).
            await self.store.update(room_id, sender.id, media_started=True)
        if request.to == SFU_PEER:
            await self._signal_sfu(sender, room_id, request.type, data)
            return 1
        if not sender.can_publish and request.type in ("offer", "answer"):
            # Mesh media never passes the server: refuse what would let a listener send.
            if sends_media(sdp):
                raise RoomError(
                    403,
                    "cannot_publish",
                    "you joined as a listener: offer and answer audio as recvonly (or inactive)",
                )
        message = SignalMessage(
            type=request.type,
            from_=sender.id,
            to=request.to,
            data=data,
            timestamp=_iso(time.time()),
        )
        frame = SignalFrame(data=SignalData(roomId=room_id, message=message))
        if request.to is None:
            return await self.broadcast(room_id, frame, exclude=sender.id)
        if await self.store.participant(room_id, request.to) is None:
            raise RoomError(404, "peer_not_found", f"no participant {request.to!r} in this room")
        await self.bus.publish(participant_channel(request.to), wire(frame))
        return 1

    async def _signal_sfu(
        self,
        sender: ParticipantRecord,
        room_id: str,
        type_: SignalType,
        data: SessionDescription | IceCandidate | None,
    ) -> None:
        state = await self.store.room_state(room_id)
        if state.mode != "sfu" or not state.worker_id:
            raise RoomError(409, "not_sfu", f"room {room_id!r} is in mesh mode; signal your peers")
        await self.bus.publish(
            worker_channel(state.worker_id),
            wire(
                ToWorkerSignalFrame(
                    data=ToWorkerSignal(
                        roomId=room_id,
                        from_=sender.id,
                        role=sender.role,
                        canPublish=sender.can_publish,
                        callsign=sender.callsign,
                        type=type_,
                        data=data,
                    )
                )
            ),
        )

    # from SFU workers ------------------------------------------------------------------
    async def worker_signal(
        self,
        worker_id: str,
        room_id: str,
        to: str,
        type_: SignalType,
        data: SessionDescription | IceCandidate | None,
    ) -> bool:
        """Deliver a worker's answer/candidate as a signal `from: 'sfu'`."""
        state = await self.store.room_state(room_id)
        if state.worker_id != worker_id or self.config.room(room_id) is None:
            return False
        if await self.store.participant(room_id, to) is None:
            return False
        message = SignalMessage(
            type=type_, from_=SFU_PEER, to=to, data=data, timestamp=_iso(time.time())
        )
        await self.bus.publish(
            participant_channel(to),
            wire(SignalFrame(data=SignalData(roomId=room_id, message=message))),
        )
        return True

    async def worker_slots(
        self, worker_id: str, room_id: str, slots: list[SlotAssignment], speaking: list[str]
    ) -> bool:
        state = await self.store.room_state(room_id)
        if state.worker_id != worker_id or self.config.room(room_id) is None:
            return False
        data = SpeakerSlotsData(roomId=room_id, slots=slots, speaking=speaking)
        await self.broadcast(room_id, SpeakerSlotsFrame(data=data))
        return True

    async def worker_holds(self, worker_id: str, room_id: str) -> bool:
        """Whether the room a worker reports (roomState) is placed on it; when not, the
        caller sends it roomClosed (a reconnected worker may hold rooms re-placed while
        it was away, whose roomClosed went to nobody)."""
        state = await self.store.room_state(room_id)
        return state.worker_id == worker_id and self.config.room(room_id) is not None

    # mesh <-> sfu ----------------------------------------------------------------------
    def _lock(self, room_id: str) -> asyncio.Lock:
        return self._mode_locks.setdefault(room_id, asyncio.Lock())

    async def maybe_switch(self, room: RoomConfig, count: int) -> RoomState:
        """Apply the thresholds (with hysteresis) and return the room's state."""
        state = await self.store.room_state(room.id)
        mesh_at = room.mesh_threshold if room.mesh_threshold is not None else 1
        if state.mode == "mesh" and count >= room.sfu_threshold:
            return await self.place(room.id, reason=f"{count} participants")
        if state.mode == "sfu" and count <= mesh_at:
            return await self.to_mesh(room.id, reason=f"{count} participants")
        return state

    async def place(self, room_id: str, reason: str, avoid: str | None = None) -> RoomState:
        """Put the room on the least-loaded live worker (a new epoch) and tell everyone."""
        async with self._lock(room_id):
            state = await self.store.room_state(room_id)
            workers = [w for w in await self.store.workers() if w.id != avoid]
            worker = choose_worker(workers)
            if worker is None:
                if state.mode == "sfu" and state.worker_id == avoid:
                    log.warning("room=%s: no SFU worker left; back to mesh", room_id)
                    return await self._set_mode(room_id, state, "mesh", None)
                log.warning(
                    "room=%s should move to SFU (%s) but no worker is live", room_id, reason
                )
                return state
            log.info("room=%s placed on worker=%s (%s)", room_id, worker.id, reason)
            return await self._set_mode(room_id, state, "sfu", worker.id)

    async def to_mesh(self, room_id: str, reason: str) -> RoomState:
        async with self._lock(room_id):
            state = await self.store.room_state(room_id)
            if state.mode != "sfu":
                return state
            log.info("room=%s back to mesh (%s)", room_id, reason)
            return await self._set_mode(room_id, state, "mesh", None)

    async def _set_mode(
        self, room_id: str, state: RoomState, mode: Mode, worker_id: str | None
    ) -> RoomState:
        new = RoomState(mode=mode, worker_id=worker_id, epoch=state.epoch + 1)
        if not await self.store.set_room_state(room_id, new, state.epoch):
            # Another process changed the room first; its state stands.
            return await self.store.room_state(room_id)
        if state.worker_id and state.worker_id != worker_id:
            await self.bus.publish(
                worker_channel(state.worker_id),
                wire(ToWorkerRoomClosedFrame(data=ToWorkerRoomClosed(roomId=room_id))),
            )
        data = RoomModeChangedData(roomId=room_id, mode=mode, epoch=new.epoch)
        await self.broadcast(room_id, RoomModeChangedFrame(data=data))
        return new

    async def worker_lost(self, worker_id: str) -> None:
        """Re-place every room of a worker that died or stopped reporting."""
        for room in self.config.rooms:
            state = await self.store.room_state(room.id)
            if state.mode == "sfu" and state.worker_id == worker_id:
                await self.place(room.id, reason=f"worker {worker_id} lost", avoid=worker_id)

    async def check_workers(self) -> None:
        """Re-place rooms whose worker's registration expired (no heartbeat)."""
        live = {w.id for w in await self.store.workers()}
        for room in self.config.rooms:
            state = await self.store.room_state(room.id)
            if state.mode == "sfu" and state.worker_id and state.worker_id not in live:
                await self.place(
                    room.id, reason=f"worker {state.worker_id} silent", avoid=state.worker_id
                )
            elif state.mode == "mesh":
                count = await self.store.count(room.id)
                if count >= room.sfu_threshold:
                    # A room that could not be placed earlier (no worker yet).
                    await self.place(room.id, reason=f"{count} participants, worker available")
