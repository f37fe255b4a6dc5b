"""Net control: who may talk in a directed net, moderation, bans (docs/protocol.md
"Net control").

The rules are the pure transitions of floor.py; this service reads the room's floor
document, applies one, writes it back with a compare-and-set on its version (retrying a
few times when another process changed it first) and then tells everyone: `floorChanged`
to every member, `moderation` for what net control did, and `floor` to the room's SFU
worker, which forwards only the talkers it names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from yahaml_voice.core.config import Config, RoomConfig
from yahaml_voice.core.protocol import (
    FloorChangedData,
    FloorChangedFrame,
    FloorKind,
    FloorState,
    ModerationAction,
    ModerationData,
    ModerationFrame,
    MuteChangedData,
    MuteChangedFrame,
    NetRole,
    TalkerCutData,
    TalkerCutFrame,
    ToWorkerFloorFrame,
    WorkerTalker,
)
from yahaml_voice.core.timestamps import iso
from yahaml_voice.core.tokens import Identity

from . import floor
from .delivery import Delivery
from .errors import ApiError
from .floor import FloorDoc
from .store import ParticipantRecord, Store, StoreError
from .views import check_access, room_config

log = logging.getLogger(__name__)

# Compare-and-set attempts before a change gives up (only concurrent changes of one
# room's floor race; each retry re-reads and re-applies the rule).
CAS_RETRIES = 8

# Removes a seated participant (RoomService: revoke, leave, close sockets); args: room id,
# the record, who did it.
Evict = Callable[[str, ParticipantRecord, str], Awaitable[None]]
Transition = Callable[[FloorDoc], FloorDoc]


class NetObserver(Protocol):
    """Told what happened on the floor after it happened (the net log, nets.py, writes its
    automatic lines from these). Failures are logged here and never undo the change."""

    async def floor_changed(
        self, room: RoomConfig, old: FloorDoc, new: FloorDoc, by: str | None
    ) -> None:
        """A floor change went through: `old` is what it was applied to; `by` the callsign
        of net control when it granted."""
        ...

    async def moderated(self, room: RoomConfig, data: ModerationData) -> None: ...

    async def talker_cut(self, room: RoomConfig, participant_id: str) -> None: ...


async def update_floor(
    store: Store, room_id: str, transition: Transition, retries: int = CAS_RETRIES
) -> FloorDoc:
    """read -> transition -> compare-and-set on the version, retried when another writer
    won: the rule is applied again to what that writer left (so of two grants of the last
    place, the second sees the first). An ApiError of the rule passes through."""
    for _ in range(retries):
        doc = await store.floor(room_id)
        new = transition(doc)
        if await store.set_floor(room_id, new, doc.version):
            return new
    raise StoreError(f"floor of room {room_id} kept changing; gave up")


class NetControl:
    def __init__(self, config: Config, store: Store, delivery: Delivery, evict: Evict) -> None:
        self.config = config
        self.store = store
        self.delivery = delivery
        self.evict = evict
        # The net log (RoomService sets it): told of grants, transmissions, moderation.
        self.observer: NetObserver | None = None
        # One floor change at a time per room in this process: a burst (80 stations asking
        # for the floor as a net starts) would otherwise exhaust the compare-and-set
        # retries against itself; between processes the compare-and-set still settles it.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # the one write path ------------------------------------------------------------------
    async def change(
        self, room: RoomConfig, transition: Transition, by: str | None = None
    ) -> FloorDoc:
        """Apply a transition (update_floor), then floorChanged + the worker's frame, then
        tell the observer (`by`: net control's callsign, for a grant)."""
        applied: list[FloorDoc] = []

        def tracked(doc: FloorDoc) -> FloorDoc:
            applied.append(doc)
            return transition(doc)

        async with self._locks[room.id]:
            new = await update_floor(self.store, room.id, tracked)
        await self.announce(room, new)
        if self.observer is not None:
            # The last document the transition was applied to is the one the CAS replaced.
            old = applied[-1]
            await self._observe(self.observer.floor_changed(room, old, new, by))
        return new

    @staticmethod
    async def _observe(call: Awaitable[None]) -> None:
        try:
            await call
        except Exception as exc:  # the floor changed anyway; the log is second
            log.warning("net log not written: %s", exc)

    async def announce(self, room: RoomConfig, doc: FloorDoc) -> None:
        frame = FloorChangedFrame(data=FloorChangedData(floor=floor.to_wire(room, doc)))
        await self.delivery.broadcast(room.id, frame)
        await self.tell_worker(room.id, doc=doc)

    async def tell_worker(
        self, room_id: str, worker_id: str | None = None, doc: FloorDoc | None = None
    ) -> None:
        """Send the room's SFU worker (or `worker_id`, placing it) whom to forward."""
        room = self.config.room(room_id)
        if room is None:
            return
        if worker_id is None:
            state = await self.store.room_state(room_id)
            if state.mode != "sfu" or not state.worker_id:
                return
            worker_id = state.worker_id
        doc = doc or await self.store.floor(room_id)
        members = await self.store.participants(room_id)
        ncs = [r.id for r in members if self._is_ncs(r.id, r.role, doc)]
        publishers = [r.id for r in members if r.can_publish]
        data = floor.talkers(room, doc, ncs, publishers)
        await self.delivery.to_worker(worker_id, ToWorkerFloorFrame(data=data))

    # who is net control -----------------------------------------------------------------
    @staticmethod
    def _is_ncs(participant_id: str, role: str, doc: FloorDoc) -> bool:
        return role == "ncs" or doc.appointed.get(participant_id) == "ncs"

    async def require_ncs(self, identity: Identity, room_id: str) -> RoomConfig:
        """The room, if the caller is its net control: an `ncs` token, or appointed `ncs`
        (and seated) in this room."""
        room = check_access(self.config, identity, room_id)
        if identity.role == "ncs":
            return room
        doc = await self.store.floor(room_id)
        if doc.appointed.get(identity.participant_id) == "ncs" and (
            await self.store.participant(room_id, identity.participant_id) is not None
        ):
            return room
        raise ApiError(403, "not_net_control", "only net control can do that in this room")

    async def _member(self, room_id: str, participant_id: str) -> ParticipantRecord:
        record = await self.store.participant(room_id, participant_id)
        if record is None:
            raise ApiError(
                404, "participant_not_found", f"no participant {participant_id!r} in this room"
            )
        return record

    async def _seated(self, identity: Identity, room_id: str) -> ParticipantRecord:
        check_access(self.config, identity, room_id)
        record = await self.store.participant(room_id, identity.participant_id)
        if record is None:
            raise ApiError(403, "not_in_room", f"you have not joined room {room_id!r}")
        return record

    # the floor --------------------------------------------------------------------------
    async def state(self, identity: Identity, room_id: str) -> FloorState:
        room = check_access(self.config, identity, room_id)
        return floor.to_wire(room, await self.store.floor(room_id))

    async def request(self, identity: Identity, room_id: str, kind: FloorKind) -> FloorState:
        me = await self._seated(identity, room_id)
        room = room_config(self.config, room_id)
        now = time.time()
        doc = await self.change(
            room,
            lambda d: floor.request(d, room, me.id, me.callsign, kind, me.can_publish, now),
        )
        log.info("room=%s floor request %s by %s", room_id, kind, me.callsign)
        return floor.to_wire(room, doc)

    async def release(self, identity: Identity, room_id: str) -> FloorState:
        me = await self._seated(identity, room_id)
        room = room_config(self.config, room_id)
        doc = await self.change(room, lambda d: floor.release(d, room, me.id))
        return floor.to_wire(room, doc)

    async def grant(self, identity: Identity, room_id: str, target: str | None) -> FloorState:
        room = await self.require_ncs(identity, room_id)
        members = {r.id: r for r in await self.store.participants(room_id)}
        now = time.time()

        def grant(d: FloorDoc) -> FloorDoc:
            pid = target
            if pid is None:
                first = floor.head(d)
                pid = first.participant_id if first else None
                if pid is None:
                    return floor.grant(d, room, None, "", False, now)
            record = members.get(pid)
            if record is None:
                raise ApiError(404, "participant_not_found", f"no participant {pid!r} here")
            return floor.grant(d, room, pid, record.callsign, record.can_publish, now)

        doc = await self.change(room, grant, by=identity.callsign)
        log.info("room=%s floor granted by %s: %s", room_id, identity.callsign, _holders(doc))
        return floor.to_wire(room, doc)

    async def revoke(self, identity: Identity, room_id: str, target: str | None) -> FloorState:
        room = await self.require_ncs(identity, room_id)
        doc = await self.change(room, lambda d: floor.revoke(d, room, target))
        log.info("room=%s floor revoked by %s (%s)", room_id, identity.callsign, target or "all")
        return floor.to_wire(room, doc)

    async def reorder(self, identity: Identity, room_id: str, order: list[str]) -> FloorState:
        room = await self.require_ncs(identity, room_id)
        doc = await self.change(room, lambda d: floor.reorder(d, room, order))
        return floor.to_wire(room, doc)

    async def clear(self, identity: Identity, room_id: str) -> FloorState:
        room = await self.require_ncs(identity, room_id)
        doc = await self.change(room, lambda d: floor.clear(d, room))
        return floor.to_wire(room, doc)

    async def set_open(self, identity: Identity, room_id: str, is_open: bool) -> FloorState:
        room = await self.require_ncs(identity, room_id)
        doc = await self.change(room, lambda d: floor.set_open(d, room, is_open))
        log.info(
            "room=%s floor %s by %s", room_id, "opened" if is_open else "closed", identity.callsign
        )
        return floor.to_wire(room, doc)

    # moderation -------------------------------------------------------------------------
    async def moderation(
        self,
        room: RoomConfig,
        identity: Identity,
        action: ModerationAction,
        *,
        record: ParticipantRecord | None = None,
        callsign: str | None = None,
        reason: str = "",
        until: float | None = None,
        role: NetRole | None = None,
    ) -> None:
        """Tell every member (and the log) what net control did."""
        data = ModerationData(
            roomId=room.id,
            action=action,
            by=identity.callsign,
            participantId=record.id if record else None,
            callsign=record.callsign if record else callsign,
            reason=reason,
            until=iso(until) if until else None,
            role=role,
        )
        log.info(
            "room=%s moderation %s by %s: %s %s",
            room.id,
            action,
            identity.callsign,
            data.callsign,
            reason,
        )
        await self.delivery.broadcast(room.id, ModerationFrame(data=data))
        if self.observer is not None:
            await self._observe(self.observer.moderated(room, data))

    async def mute(self, identity: Identity, room_id: str, target: str, muted: bool) -> None:
        room = await self.require_ncs(identity, room_id)
        record = await self._member(room_id, target)
        await self.change(room, lambda d: floor.mute(d, room, target, muted))
        if muted and not record.is_muted:
            await self.store.update(room_id, target, is_muted=True)
            data = MuteChangedData(roomId=room_id, participantId=target, isMuted=True)
            await self.delivery.broadcast(room_id, MuteChangedFrame(data=data))
        await self.moderation(room, identity, "mute" if muted else "unmute", record=record)

    async def appoint(
        self, identity: Identity, room_id: str, target: str, role: NetRole | None
    ) -> None:
        room = await self.require_ncs(identity, room_id)
        record = await self._member(room_id, target)
        await self.change(room, lambda d: floor.appoint(d, room, target, role))
        action: ModerationAction = "appoint" if role else "dismiss"
        await self.moderation(room, identity, action, record=record, role=role)

    def _until(self, room: RoomConfig, duration: float | None, now: float) -> float:
        seconds = room.ban_time if duration is None else duration
        return now + seconds if seconds > 0 else 0.0

    async def ban(
        self,
        identity: Identity,
        room_id: str,
        callsign: str,
        duration: float | None,
        reason: str,
    ) -> None:
        """Keep a callsign out; whoever holds a seat under it now is removed."""
        room = await self.require_ncs(identity, room_id)
        call = callsign.strip().upper()
        if call == identity.callsign.upper():
            raise ApiError(400, "bad_request", "net control cannot ban its own callsign")
        now = time.time()
        until = self._until(room, duration, now)
        await self.change(room, lambda d: floor.ban(d, room, call, until, now))
        await self.moderation(room, identity, "ban", callsign=call, reason=reason, until=until)
        for record in await self.store.participants(room_id):
            if record.callsign.upper() == call and record.id != identity.participant_id:
                await self.evict(room_id, record, identity.callsign)

    async def unban(self, identity: Identity, room_id: str, callsign: str) -> None:
        room = await self.require_ncs(identity, room_id)
        call = callsign.strip().upper()
        now = time.time()
        await self.change(room, lambda d: floor.unban(d, room, call, now))
        await self.moderation(room, identity, "unban", callsign=call)

    async def removed(
        self, room: RoomConfig, identity: Identity, record: ParticipantRecord, reason: str
    ) -> None:
        """Net control removes `record`: its callsign is banned for the room's ban_time
        (before it leaves, so that no rejoin slips in between)."""
        now = time.time()
        until = self._until(room, None, now)
        call = record.callsign.upper()
        await self.change(room, lambda d: floor.ban(d, room, call, until, now))
        await self.moderation(room, identity, "remove", record=record, reason=reason, until=until)

    # hooks of RoomService -------------------------------------------------------------
    async def check_ban(self, room: RoomConfig, identity: Identity) -> None:
        doc = await self.store.floor(room.id)
        until = doc.banned_until(identity.callsign, time.time())
        if until is None:
            return
        when = f"until {iso(until)}" if until else "until this net ends"
        raise ApiError(
            403, "banned", f"net control banned {identity.callsign} from this room {when}"
        )

    async def check_unmute(self, identity: Identity, room_id: str) -> None:
        doc = await self.store.floor(room_id)
        if identity.participant_id in doc.muted:
            raise ApiError(
                403, "muted_by_ncs", "net control muted you; only net control can unmute you"
            )

    async def joined(self, room: RoomConfig, record: ParticipantRecord) -> None:
        """A joiner gets the floor at once; the worker learns the member's rights (a
        rejoin may change them: joinMode listener)."""
        doc = await self.store.floor(room.id)
        if not record.can_publish and (doc.holder(record.id) or doc.entry(record.id)):
            # Rejoined as a listener: a listener never holds or waits for the floor.
            doc = await self.change(room, lambda d: floor.forget(d, room, record.id))
        frame = FloorChangedFrame(data=FloorChangedData(floor=floor.to_wire(room, doc)))
        await self.delivery.to_participant(record.id, frame)
        await self.tell_worker(room.id, doc=doc)

    async def left(self, room: RoomConfig, record: ParticipantRecord, count: int) -> None:
        """Forget who left; when the room is empty, the net is over: a fresh floor."""
        doc = await self.store.floor(room.id)
        if count == 0:
            fresh = floor.reset(doc, time.time())
            fresh.version = doc.version
            if fresh != doc:
                await self.change(room, lambda d: floor.reset(d, time.time()))
            return
        if doc.holder(record.id) or doc.entry(record.id):
            await self.change(room, lambda d: floor.forget(d, room, record.id))
        else:
            await self.tell_worker(room.id, doc=doc)

    async def worker_talker(self, message: WorkerTalker) -> None:
        """The worker's time-out timer cut a talker off (or its lockout ended)."""
        room = self.config.room(message.roomId)
        if room is None:
            return
        log.info(
            "room=%s talker %s %s (%s)",
            room.id,
            message.participantId,
            message.state,
            message.reason,
        )
        if message.state == "cut":
            data = TalkerCutData(
                roomId=room.id,
                participantId=message.participantId,
                reason=message.reason,
                resetAfter=room.tot_reset,
            )
            await self.delivery.broadcast(room.id, TalkerCutFrame(data=data))
            if self.observer is not None:
                await self._observe(self.observer.talker_cut(room, message.participantId))


def _holders(doc: FloorDoc) -> list[Any]:
    return [h.callsign for h in doc.holders]
