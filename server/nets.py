"""The net log as a service (docs/protocol.md "Net log"): nets opened and closed by net
control, check-ins, the log's lines, the archive and its exports.

Every change of a net is read -> pure rule (netlog.py) -> compare-and-set on its version
in the NetLogStore, retried when another process won (like the floor in netcontrol.py);
then every member of the room gets `netChanged`, and each line appended to the log
`netLogged`. Lines written on their own while a net is open come from NetControl through
the NetObserver hooks: floor grants, transmissions (a holder's floor ended, with its
duration), time-out cuts and moderation.

A full log (netlog.max_events lines) takes a last `note` saying so; later lines are
dropped (logged once per net and process at warning level).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

from yahaml_voice.core.config import Config, RoomConfig
from yahaml_voice.core.protocol import (
    CheckInAdd,
    CheckInEdit,
    CheckInSelf,
    ModerationData,
    NetArchive,
    NetChange,
    NetChangedData,
    NetChangedFrame,
    NetEvent,
    NetEventKind,
    NetLoggedData,
    NetLoggedFrame,
    NetLogPage,
    NetRecord,
    NetState,
    RecordingState,
)
from yahaml_voice.core.tokens import Identity

from . import netlog
from .callsign import CallsignError, normalize_callsign
from .delivery import Delivery
from .errors import ApiError
from .floor import FloorDoc, Holder
from .netcontrol import CAS_RETRIES, NetControl
from .netlog import NetActor, NetDoc, NetEventRecord
from .netlog_store import NetLogStore
from .store import ParticipantRecord, Store, StoreError
from .views import check_access

log = logging.getLogger(__name__)

NetTransition = Callable[[NetDoc], NetDoc]

# The most lines one GET .../net/log answers, and nets one GET .../nets.
MAX_LOG_PAGE = 1000
MAX_ARCHIVE_PAGE = 100
LOG_FULL = "log full: later lines of this net are not kept"


def _callsign(text: str) -> str:
    try:
        return normalize_callsign(text)
    except CallsignError as exc:
        raise ApiError(400, "bad_callsign", str(exc)) from exc


def _own_callsign(text: str) -> str:
    """A member's callsign as its token names it (a host application may mint odd ones)."""
    try:
        return normalize_callsign(text)
    except CallsignError:
        return text.strip().upper()


def _summary(record: netlog.CheckInRecord) -> str:
    parts = netlog.flags(record)
    parts += [text for text in (record.name, record.location, record.remarks) if text]
    return ", ".join(parts)


class NetLogService:
    def __init__(
        self,
        config: Config,
        store: Store,
        nets: NetLogStore,
        delivery: Delivery,
        net: NetControl,
    ) -> None:
        self.config = config
        self.store = store
        self.nets = nets
        self.delivery = delivery
        self.net = net
        # Nets whose log this process found full (warned once).
        self._full: set[str] = set()
        # The changes this process makes to one room's net go one at a time: fifty
        # members checking in at once would otherwise mostly lose the compare-and-set
        # to each other and run out of retries (the CAS still settles other processes).
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @property
    def limits(self) -> tuple[int, int]:
        return self.config.netlog.max_checkins, self.config.netlog.max_events

    # who may ----------------------------------------------------------------------------
    async def _role(self, identity: Identity, room_id: str) -> tuple[RoomConfig, NetActor]:
        """The caller's part in the room's net: net control (token role or appointed and
        seated), logger (appointed and seated), or a member."""
        room = check_access(self.config, identity, room_id)
        if identity.role == "ncs":
            return room, "ncs"
        floor = await self.store.floor(room_id)
        appointed = floor.appointed.get(identity.participant_id)
        if appointed is not None and (
            await self.store.participant(room_id, identity.participant_id) is not None
        ):
            return room, appointed
        return room, "member"

    async def _logger(self, identity: Identity, room_id: str) -> tuple[RoomConfig, NetActor]:
        room, role = await self._role(identity, room_id)
        if role == "member":
            raise ApiError(403, "not_logger", "only net control or a logger can do that")
        return room, role

    async def _seated(self, identity: Identity, room_id: str) -> ParticipantRecord:
        check_access(self.config, identity, room_id)
        record = await self.store.participant(room_id, identity.participant_id)
        if record is None:
            raise ApiError(403, "not_in_room", f"you have not joined room {room_id!r}")
        return record

    # the write path ------------------------------------------------------------------------
    async def _current(self, room_id: str) -> NetDoc:
        doc = await self.nets.current(room_id)
        if doc is None:
            raise ApiError(404, "no_net", "no net is open in this room")
        return doc

    async def _update(self, room_id: str, transition: NetTransition) -> NetDoc | None:
        """read -> rule -> compare-and-set, retried; the new net (None: nothing changed)."""
        async with self._locks[room_id]:
            for _ in range(CAS_RETRIES):
                doc = await self._current(room_id)
                new = transition(doc)
                if new is doc:
                    return None
                if await self.nets.set_net(new, doc.version):
                    new.event_count = doc.event_count
                    return new
        raise StoreError(f"the net of room {room_id} kept changing; gave up")

    async def _changed(
        self,
        room_id: str,
        change: NetChange,
        doc: NetDoc | None,
        *,
        checkin: str | None = None,
        removed: str | None = None,
    ) -> None:
        record = netlog.entry(doc, checkin) if doc is not None and checkin else None
        data = NetChangedData(
            roomId=room_id,
            change=change,
            net=netlog.net_view(doc) if doc is not None else None,
            checkin=netlog.checkin_view(record) if record else None,
            checkinId=removed,
            order=[c.id for c in doc.checkins] if doc is not None and change == "order" else None,
        )
        await self.delivery.broadcast(room_id, NetChangedFrame(data=data))

    async def _log(
        self,
        room_id: str,
        net_id: str,
        kind: NetEventKind,
        by: str | None,
        callsign: str | None = None,
        text: str = "",
        duration: float | None = None,
        at: float | None = None,
    ) -> NetEvent | None:
        """Append a line and tell every member (None: the log is full or the net closed)."""
        _, max_events = self.limits
        line = NetEventRecord(
            at=time.time() if at is None else at,
            kind=kind,
            by=by,
            callsign=callsign,
            text=text[:500],
            duration=duration,
        )
        stored = await self.nets.append_event(net_id, line, max_events - 1)
        if stored is None:
            if net_id in self._full:
                return None
            # One place is kept for this line (a net closed meanwhile refuses it too).
            note = NetEventRecord(at=line.at, kind="note", by=None, text=LOG_FULL)
            stored = await self.nets.append_event(net_id, note, max_events)
            if stored is None:
                return None
            self._full.add(net_id)
            log.warning(
                "room=%s net=%s log full (%d lines): later lines dropped",
                room_id,
                net_id,
                max_events,
            )
        event = netlog.event_view(stored)
        frame = NetLoggedFrame(data=NetLoggedData(roomId=room_id, netId=net_id, event=event))
        await self.delivery.broadcast(room_id, frame)
        return event

    async def _credit(self, room_id: str, doc: NetDoc, role: NetActor, callsign: str) -> None:
        """Name net control or a logger in the header the first time it acts."""
        if netlog.credited(doc, role, callsign):
            return
        new = await self._update(
            room_id,
            lambda d: d if netlog.credited(d, role, callsign) else netlog.credit(d, role, callsign),
        )
        if new is not None:
            await self._changed(room_id, "updated", new)

    def _state(self, room_id: str, doc: NetDoc | None) -> NetState:
        return NetState(
            roomId=room_id,
            net=netlog.net_view(doc) if doc is not None else None,
            checkins=[netlog.checkin_view(c) for c in doc.checkins] if doc is not None else [],
        )

    # the open net -------------------------------------------------------------------------
    async def state(self, identity: Identity, room_id: str) -> NetState:
        check_access(self.config, identity, room_id)
        return self._state(room_id, await self.nets.current(room_id))

    async def open(self, identity: Identity, room_id: str, name: str, preamble: str) -> NetState:
        room = await self.net.require_ncs(identity, room_id)
        if await self.nets.current(room.id) is not None:
            raise ApiError(409, "net_open", "a net is already open in this room; close it first")
        doc = netlog.open_net(
            f"n-{uuid.uuid4().hex[:16]}", room.id, name, preamble, identity.callsign, time.time()
        )
        if not await self.nets.open_net(doc):
            raise ApiError(409, "net_open", "a net is already open in this room; close it first")
        log.info("room=%s net %s opened by %s: %s", room.id, doc.id, identity.callsign, doc.name)
        await self._changed(room.id, "opened", doc)
        await self._log(room.id, doc.id, "opened", identity.callsign, text=doc.name)
        return await self.state(identity, room.id)

    async def update(
        self, identity: Identity, room_id: str, name: str | None, preamble: str | None
    ) -> NetState:
        room = await self.net.require_ncs(identity, room_id)
        new = await self._update(
            room.id, lambda d: netlog.update(d, name, preamble, "ncs", identity.callsign)
        )
        assert new is not None
        await self._changed(room.id, "updated", new)
        what = [f"name: {new.name}"] if name is not None else []
        what += ["preamble changed"] if preamble is not None else []
        await self._log(room.id, new.id, "updated", identity.callsign, text="; ".join(what))
        return self._state(room.id, new)

    async def close(self, identity: Identity, room_id: str) -> NetRecord:
        room = await self.net.require_ncs(identity, room_id)
        keep = self.config.netlog.keep
        doc = await self._current(room.id)
        # The last line goes in while the net is open (a closed net's log takes none).
        await self._log(room.id, doc.id, "closed", identity.callsign)
        async with self._locks[room.id]:
            for _ in range(CAS_RETRIES):
                doc = await self._current(room.id)
                new = netlog.close(doc, "ncs", identity.callsign, time.time())
                if await self.nets.close_net(new, doc.version, keep):
                    break
            else:
                raise StoreError(f"the net of room {room.id} kept changing; gave up")
        log.info("room=%s net %s closed by %s", room.id, new.id, identity.callsign)
        self._full.discard(new.id)
        await self._changed(room.id, "closed", None)
        return await self._record(new.id)

    # check-ins ------------------------------------------------------------------------------
    async def check_in(self, identity: Identity, room_id: str, data: CheckInSelf) -> NetState:
        me = await self._seated(identity, room_id)
        call = _own_callsign(me.callsign)
        max_checkins, _ = self.limits
        new_id = f"c-{uuid.uuid4().hex[:12]}"
        before: list[netlog.CheckInRecord | None] = []

        def rule(doc: NetDoc) -> NetDoc:
            before[:] = [netlog.own(doc, me.id, call)]
            return netlog.check_in_self(doc, new_id, me.id, call, data, time.time(), max_checkins)

        new = await self._update(room_id, rule)
        assert new is not None
        record = netlog.own(new, me.id, call)
        assert record is not None
        await self._changed(room_id, "checkin", new, checkin=record.id)
        old = before[0] if before else None
        again = old is not None and old.status != "checked_out"
        kind: NetEventKind = "checkin_edited" if again else "checkin"
        await self._log(room_id, new.id, kind, call, call, _summary(record))
        return self._state(room_id, new)

    async def check_out(self, identity: Identity, room_id: str) -> NetState:
        me = await self._seated(identity, room_id)
        call = _own_callsign(me.callsign)
        new = await self._update(room_id, lambda d: netlog.check_out(d, me.id, call))
        assert new is not None
        record = netlog.own(new, me.id, call)
        assert record is not None
        await self._changed(room_id, "checkin", new, checkin=record.id)
        await self._log(room_id, new.id, "checkin_edited", call, call, "checked out")
        return self._state(room_id, new)

    async def add(self, identity: Identity, room_id: str, data: CheckInAdd) -> NetState:
        room, role = await self._logger(identity, room_id)
        call = _callsign(data.callsign)
        max_checkins, _ = self.limits
        new_id = f"c-{uuid.uuid4().hex[:12]}"
        by = identity.callsign
        new = await self._update(
            room.id,
            lambda d: netlog.add(d, new_id, data, call, role, by, time.time(), max_checkins),
        )
        assert new is not None
        await self._changed(room.id, "checkin", new, checkin=new_id)
        record = netlog.entry(new, new_id)
        text = f"via {record.via}" + (f"; {_summary(record)}" if _summary(record) else "")
        await self._log(room.id, new.id, "checkin", by, call, text)
        return self._state(room.id, new)

    async def edit(
        self, identity: Identity, room_id: str, checkin_id: str, data: CheckInEdit
    ) -> NetState:
        room, role = await self._logger(identity, room_id)
        call = _callsign(data.callsign) if data.callsign is not None else None
        by = identity.callsign
        new = await self._update(
            room.id, lambda d: netlog.edit(d, checkin_id, data, call, role, by)
        )
        assert new is not None
        await self._changed(room.id, "checkin", new, checkin=checkin_id)
        record = netlog.entry(new, checkin_id)
        changed = data.model_dump(exclude_none=True, exclude_unset=True)
        text = "; ".join(f"{key}: {value}" for key, value in changed.items())
        await self._log(room.id, new.id, "checkin_edited", by, record.callsign, text)
        return self._state(room.id, new)

    async def remove(self, identity: Identity, room_id: str, checkin_id: str) -> NetState:
        room, role = await self._logger(identity, room_id)
        by = identity.callsign
        gone: list[str] = []

        def rule(doc: NetDoc) -> NetDoc:
            gone[:] = [netlog.entry(doc, checkin_id).callsign]
            return netlog.remove(doc, checkin_id, role, by)

        new = await self._update(room.id, rule)
        assert new is not None
        await self._changed(room.id, "checkinRemoved", new, removed=checkin_id)
        await self._log(room.id, new.id, "checkin_removed", by, gone[0])
        return self._state(room.id, new)

    async def reorder(self, identity: Identity, room_id: str, order: list[str]) -> NetState:
        room, role = await self._logger(identity, room_id)
        by = identity.callsign
        new = await self._update(room.id, lambda d: netlog.reorder(d, order, role, by))
        assert new is not None
        await self._changed(room.id, "order", new)
        calls = " ".join(c.callsign for c in new.checkins[:20])
        await self._log(room.id, new.id, "checkins_reordered", by, text=calls)
        return self._state(room.id, new)

    async def note(self, identity: Identity, room_id: str, text: str) -> NetEvent:
        room, role = await self._logger(identity, room_id)
        doc = await self._current(room.id)
        event = await self._log(room.id, doc.id, "note", identity.callsign, text=text.strip())
        if event is None:
            raise ApiError(409, "log_full", "this net's log is full")
        await self._credit(room.id, doc, role, identity.callsign)
        return event

    # reading ---------------------------------------------------------------------------------
    async def log_page(
        self, identity: Identity, room_id: str, after: int, limit: int
    ) -> NetLogPage:
        check_access(self.config, identity, room_id)
        doc = await self._current(room_id)
        events = await self.nets.events(doc.id, after, min(limit, MAX_LOG_PAGE))
        return NetLogPage(
            netId=doc.id,
            events=[netlog.event_view(e) for e in events],
            next=events[-1].seq if events else after,
        )

    async def archive(
        self, identity: Identity, room_id: str, limit: int, before: float | None
    ) -> NetArchive:
        check_access(self.config, identity, room_id)
        docs = await self.nets.archive(room_id, min(limit, MAX_ARCHIVE_PAGE), before)
        return NetArchive(roomId=room_id, nets=[netlog.net_view(d) for d in docs])

    async def find(self, identity: Identity, room_id: str, net_id: str) -> NetDoc:
        check_access(self.config, identity, room_id)
        doc = await self.nets.get(net_id) if len(net_id) <= 64 else None
        if doc is None or doc.room_id != room_id:
            raise ApiError(404, "net_not_found", f"no net {net_id!r} in this room")
        return doc

    async def events(self, doc: NetDoc) -> list[NetEventRecord]:
        _, max_events = self.limits
        return await self.nets.events(doc.id, 0, max_events)

    async def record(self, identity: Identity, room_id: str, net_id: str) -> NetRecord:
        doc = await self.find(identity, room_id, net_id)
        return await self._record(doc.id, doc)

    async def _record(self, net_id: str, doc: NetDoc | None = None) -> NetRecord:
        doc = doc or await self.nets.get(net_id)
        if doc is None:
            raise ApiError(404, "net_not_found", f"no net {net_id!r}")
        return NetRecord(
            net=netlog.net_view(doc),
            checkins=[netlog.checkin_view(c) for c in doc.checkins],
            events=[netlog.event_view(e) for e in await self.events(doc)],
        )

    # NetObserver (NetControl tells us) ----------------------------------------------------
    async def floor_changed(
        self, room: RoomConfig, old: FloorDoc, new: FloorDoc, by: str | None
    ) -> None:
        before = {h.participant_id: h for h in old.holders}
        after = {h.participant_id: h for h in new.holders}

        def gone(h: Holder, other: dict[str, Holder]) -> bool:
            kept = other.get(h.participant_id)
            return kept is None or kept.since != h.since

        ended = [h for h in old.holders if gone(h, after)]
        started = [h for h in new.holders if gone(h, before)]
        if not ended and not started:
            return
        doc = await self.nets.current(room.id)
        if doc is None:
            return
        now = time.time()
        for h in ended:
            duration = round(max(0.0, now - h.since), 1)
            await self._log(room.id, doc.id, "transmission", None, h.callsign, h.kind, duration)
        for h in started:
            text = h.kind if by else f"{h.kind} (break-in)"
            await self._log(room.id, doc.id, "granted", by, h.callsign, text, at=h.since)
        if by and started:
            await self._credit(room.id, doc, "ncs", by)

    async def moderated(self, room: RoomConfig, data: ModerationData) -> None:
        doc = await self.nets.current(room.id)
        if doc is None:
            return
        parts = [p for p in (data.role or "", data.reason) if p]
        if data.until:
            parts.append(f"until {data.until}")
        await self._log(room.id, doc.id, data.action, data.by, data.callsign, "; ".join(parts))
        await self._credit(room.id, doc, "ncs", data.by)

    # RecordingObserver (RecordingService tells us) ------------------------------------------
    async def recording_changed(
        self, room: RoomConfig, recording: RecordingState, by: str | None
    ) -> None:
        doc = await self.nets.current(room.id)
        if doc is None:
            return
        what = "started" if recording.state == "recording" else recording.state
        text = f"recording {what}" + (f": {recording.reason}" if recording.reason else "")
        await self._log(room.id, doc.id, "recording", by, text=f"{text} ({recording.id})")

    async def talker_cut(self, room: RoomConfig, participant_id: str) -> None:
        doc = await self.nets.current(room.id)
        if doc is None:
            return
        record = await self.store.participant(room.id, participant_id)
        call = record.callsign if record else participant_id
        await self._log(room.id, doc.id, "talker_cut", None, call, f"time-out ({room.tot:g} s)")
