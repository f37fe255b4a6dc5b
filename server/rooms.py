"""Room rules: who may join, leave, mute and be removed; what the room is told.

RoomService holds no state of its own beyond its parts' background tasks: membership,
room mode and worker placement live in the Store, delivery goes through the Bus, so any
number of server processes can run this same code against one Redis. Its parts, each
a module: `delivery` (channels, broadcasts), `signals` (signal routing, worker frames),
`presence` (sockets, grace periods, idle seats), `modes` (mesh <-> SFU), `net` (net
control: the floor, moderation, bans), `netlog` (nets, check-ins and their log, kept in
`nets`), `recordings` (when the origin worker records the room).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from yahaml_voice.core.config import Config, RoomConfig
from yahaml_voice.core.protocol import (
    AudioSource,
    MuteChangedData,
    MuteChangedFrame,
    ParticipantJoinedData,
    ParticipantJoinedFrame,
    ParticipantLeftData,
    ParticipantLeftFrame,
    RevokeData,
    RevokeNotice,
    RoomDetail,
    RoomSummary,
    ToWorkerParticipantLeft,
    ToWorkerParticipantLeftFrame,
    VolumeChangedData,
    VolumeChangedFrame,
)
from yahaml_voice.core.timestamps import iso
from yahaml_voice.core.tokens import Identity

from .cascade import routed_to
from .delivery import Delivery
from .errors import ApiError
from .floor import FloorDoc
from .limits import SEATS, Limits, RateLimited
from .modes import RoomModes
from .netcontrol import NetControl
from .netlog_store import NetLogStore
from .nets import NetLogService
from .presence import Presence
from .recordings import RecordingService
from .signalling import Signalling
from .store import AddressFull, Bus, ParticipantRecord, RoomFull, RoomState, Store
from .stores import make_netlog
from .views import check_access, leave_reason, participant_view, room_config

log = logging.getLogger(__name__)


@dataclass
class Joined:
    participant: ParticipantRecord
    peers: list[ParticipantRecord]
    state: RoomState


class RoomService:
    def __init__(
        self,
        config: Config,
        store: Store,
        bus: Bus,
        limits: Limits | None = None,
        nets: NetLogStore | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.bus = bus
        self.limits = limits or Limits(config)
        self.started_at = time.time()
        self.delivery = Delivery(
            store, bus, config.server.roster_batch_above, config.server.roster_batch_window
        )
        self.modes = RoomModes(config, store, self.delivery)
        self.signals = Signalling(config, store, self.delivery, self.modes)
        self.presence = Presence(config, store, self.delivery, self.limits, self.after_leave)
        self.net = NetControl(config, store, self.delivery, self._evict)
        self.modes.on_placed = self._placed
        # Started and stopped with the app (app.py), like the store.
        self.nets = nets or make_netlog(config)
        self.netlog = NetLogService(config, store, self.nets, self.delivery, self.net)
        self.net.observer = self.netlog
        self.recordings = RecordingService(config, store, self.delivery, self.nets)
        self.recordings.observer = self.netlog
        self.modes.on_leaving = self.recordings.leaving

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self.presence.start()
        await self.recordings.start()

    async def stop(self) -> None:
        await self.recordings.stop()
        await self.presence.stop()
        await self.delivery.stop()

    async def _placed(self, room_id: str, worker_id: str) -> None:
        """A room landed on a worker: it learns whom to forward, then what to record."""
        await self.net.tell_worker(room_id, worker_id)
        await self.recordings.placed(room_id, worker_id)

    # lookups ---------------------------------------------------------------------------
    def room_config(self, room_id: str) -> RoomConfig:
        return room_config(self.config, room_id)

    def check_access(self, identity: Identity, room_id: str) -> RoomConfig:
        return check_access(self.config, identity, room_id)

    async def summary(self, room: RoomConfig) -> RoomSummary:
        count = await self.store.count(room.id)
        state = await self.store.room_state(room.id)
        recording = await self.store.recording(room.id) if room.record else None
        return RoomSummary(
            id=room.id,
            name=room.name,
            description=room.description,
            participantCount=count,
            maxParticipants=room.max_participants,
            createdAt=iso(self.started_at),
            isActive=True,
            mode=state.mode,
            sfuThreshold=room.sfu_threshold,
            ptt=room.ptt,
            tot=room.tot,
            record=room.record,
            recording=recording is not None and recording.state == "recording",
            kind=room.kind,
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
        await self.net.check_ban(room, identity)
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
            raise ApiError(
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
            joined = ParticipantJoinedData(
                roomId=room_id, participant=participant_view(participant)
            )
            await self.delivery.roster(room_id, ParticipantJoinedFrame(data=joined), result.count)
        state = await self.modes.maybe_switch(room, result.count)
        await self.net.joined(room, participant)
        if state.mode == "sfu":
            await self.recordings.joined(room, state.worker_id)
        peers = [p for p in await self.store.participants(room_id) if p.id != participant.id]
        peers.sort(key=lambda r: r.joined_at)
        return Joined(participant, peers, state)

    async def leave(self, identity: Identity, room_id: str) -> bool:
        self.room_config(room_id)
        record = await self.store.leave(room_id, identity.participant_id)
        if record is None:
            return False
        await self.after_leave(room_id, record, "left")
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
                await self.after_leave(room_id, record, "logout")
        await self.close_sockets(
            identity.participant_id,
            "revoked",
            "you logged out; log in again",
            session_id=identity.session_id,
        )

    async def remove(
        self, identity: Identity, room_id: str, participant_id: str, reason: str = ""
    ) -> None:
        """Net control removes a participant: its callsign banned for the room's ban_time,
        its session revoked, out of the room."""
        room = await self.net.require_ncs(identity, room_id)
        if participant_id == identity.participant_id:
            raise ApiError(400, "bad_request", "use leave to leave the room yourself")
        seated = await self.store.participant(room_id, participant_id)
        if seated is None:
            raise ApiError(
                404, "participant_not_found", f"no participant {participant_id!r} in this room"
            )
        await self.net.removed(room, identity, seated, reason)
        await self._evict(room_id, seated, identity.callsign)

    async def _evict(self, room_id: str, seated: ParticipantRecord, by: str) -> None:
        """Revoke the seat's session, free the seat, close its sockets."""
        if seated.session_id:
            until = seated.session_expires_at or time.time() + self.config.auth.session_ttl
            await self.store.revoke(seated.session_id, until)
        record = await self.store.leave(room_id, seated.id)
        if record is not None:
            await self.after_leave(room_id, record, "removed")
        log.info("room=%s participant=%s removed by %s", room_id, seated.id, by)
        await self.close_sockets(
            seated.id, "removed", f"net control {by} removed you from room {room_id!r}"
        )

    async def close_sockets(
        self, participant_id: str, code: str, message: str, session_id: str | None = None
    ) -> None:
        """Close the participant's sockets on every process (only those opened with
        `session_id`'s token, if given): an `error` frame `code`, then 4401."""
        notice = RevokeNotice(data=RevokeData(session=session_id, code=code, message=message))
        await self.delivery.to_participant(participant_id, notice)

    async def close_room(self, room: RoomConfig, by: str) -> int:
        """An admin removed the room (it is out of the catalog already, so nobody joins
        again): each member is told (participantLeft about itself, reason room_closed) and
        loses its seat; the room leaves its worker. How many were seated."""
        closed = 0
        # Twice: a join that passed its room check just before the removal may land late.
        for _ in range(2):
            for seated in await self.store.participants(room.id):
                gone = ParticipantLeftData(
                    roomId=room.id, participantId=seated.id, reason="room_closed"
                )
                await self.delivery.to_participant(seated.id, ParticipantLeftFrame(data=gone))
                record = await self.store.leave(room.id, seated.id)
                if record is not None:
                    closed += 1
                    await self.after_leave(room.id, record, "room_closed", room)
        await self.modes.to_mesh(room.id, reason=f"room closed by {by}")
        # A room added again later with this id starts without this one's floor and bans.
        doc = await self.store.floor(room.id)
        await self.store.set_floor(room.id, FloorDoc(version=doc.version + 1), doc.version)
        return closed

    async def after_leave(
        self, room_id: str, record: ParticipantRecord, why: str, closed: RoomConfig | None = None
    ) -> None:
        """Tell the room and its worker; apply the room's rules to the new count (`closed`:
        the definition of a room just removed from the catalog)."""
        log.info("leave room=%s participant=%s why=%s", room_id, record.id, why)
        reason = leave_reason(why)
        count = await self.store.count(room_id)
        left = ParticipantLeftData(roomId=room_id, participantId=record.id, reason=reason)
        await self.delivery.roster(room_id, ParticipantLeftFrame(data=left), count, wait=False)
        state = await self.store.room_state(room_id)
        worker = routed_to(state, record) if state.mode == "sfu" else None
        if worker:
            gone = ToWorkerParticipantLeft(roomId=room_id, participantId=record.id, reason=reason)
            await self.delivery.to_worker(worker, ToWorkerParticipantLeftFrame(data=gone))
        room = closed or self.config.room(room_id)
        if room is not None:
            if closed is None:
                await self.modes.maybe_switch(room, count)
            await self.net.left(room, record, count)
            if count == 0:
                await self.recordings.emptied(room)

    async def set_muted(self, identity: Identity, room_id: str, muted: bool) -> None:
        if not muted:
            await self.net.check_unmute(identity, room_id)
        pid = await self._change(identity, room_id, is_muted=muted)
        data = MuteChangedData(roomId=room_id, participantId=pid, isMuted=muted)
        await self.delivery.broadcast(room_id, MuteChangedFrame(data=data))

    async def set_volume(self, identity: Identity, room_id: str, volume: int) -> None:
        pid = await self._change(identity, room_id, volume=volume)
        data = VolumeChangedData(roomId=room_id, participantId=pid, volume=volume)
        await self.delivery.broadcast(room_id, VolumeChangedFrame(data=data))

    async def _change(self, identity: Identity, room_id: str, **change: Any) -> str:
        """Update one field of the caller's seat (the caller tells the room); its id."""
        self.check_access(identity, room_id)
        record = await self.store.update(room_id, identity.participant_id, **change)
        if record is None:
            raise ApiError(403, "not_in_room", f"you have not joined room {room_id!r}")
        return record.id
