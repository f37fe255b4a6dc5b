"""The floor of a room (who may talk in a directed net, who waits) and its pure transitions.

One `FloorDoc` per room lives in the Store with a version; every change is read ->
transition here -> compare-and-set on the version (netcontrol.py), so two server
processes can never both grant the last place. Transitions take the document and what
they need to know (the room's config, the caller's facts, the time) and return a new
document with the version increased, or raise ApiError: nothing here does I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from yahaml_voice.core.config import RoomConfig
from yahaml_voice.core.protocol import (
    CourtesyTone,
    FloorEntry,
    FloorHolder,
    FloorKind,
    FloorState,
    NetRole,
    ToWorkerFloor,
)
from yahaml_voice.core.timestamps import iso

from .errors import ApiError


@dataclass
class Holder:
    participant_id: str
    callsign: str
    kind: FloorKind
    since: float
    # Paused by a priority break-in (not forwarded) until no priority holder remains.
    paused: bool = False


@dataclass
class Entry:
    participant_id: str
    callsign: str
    kind: FloorKind
    at: float


# Callsigns one room may ban at once (the floor document travels whole on every change).
MAX_BANS = 500


@dataclass
class FloorDoc:
    """A room's floor, moderation and bans (JSON in the Store)."""

    version: int = 0
    # Roll call: every member who may publish talks.
    open: bool = False
    holders: list[Holder] = field(default_factory=list)
    # Kept in wire order (see `_sort`).
    queue: list[Entry] = field(default_factory=list)
    # Net control's explicit order: these (queued) participants first, in this order.
    order: list[str] = field(default_factory=list)
    appointed: dict[str, NetRole] = field(default_factory=dict)
    muted: list[str] = field(default_factory=list)
    # Callsign -> unix time the ban ends; 0: until the room empties.
    bans: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FloorDoc:
        data = dict(data)
        data["holders"] = [Holder(**h) for h in data.get("holders", [])]
        data["queue"] = [Entry(**e) for e in data.get("queue", [])]
        return cls(**data)

    # lookups -------------------------------------------------------------------------
    def holder(self, participant_id: str) -> Holder | None:
        return next((h for h in self.holders if h.participant_id == participant_id), None)

    def entry(self, participant_id: str) -> Entry | None:
        return next((e for e in self.queue if e.participant_id == participant_id), None)

    def active(self) -> list[Holder]:
        """Holders not paused: those the SFU forwards."""
        return [h for h in self.holders if not h.paused]

    def banned_until(self, callsign: str, now: float) -> float | None:
        """When the callsign's ban ends (0: when the room empties), None if not banned."""
        until = self.bans.get(callsign.upper())
        if until is None or (until and until <= now):
            return None
        return until


# ------------------------------------------------------------------------- helpers


def _next(doc: FloorDoc) -> FloorDoc:
    new = copy.deepcopy(doc)
    new.version = doc.version + 1
    return new


def _sort(doc: FloorDoc) -> None:
    """Queue order: net control's explicit order first, then priority, then request time."""
    queued = {e.participant_id for e in doc.queue}
    doc.order = [pid for pid in dict.fromkeys(doc.order) if pid in queued]
    rank = {pid: i for i, pid in enumerate(doc.order)}
    first = len(rank)
    doc.queue.sort(key=lambda e: (rank.get(e.participant_id, first), e.kind != "priority", e.at))


def _settle(doc: FloorDoc, room: RoomConfig) -> None:
    """Resume paused holders once no priority holder remains (oldest first, up to
    max_talkers; any left over go back to the head of the queue), then sort the queue."""
    paused = sorted((h for h in doc.holders if h.paused), key=lambda h: h.since)
    if paused and not any(h.kind == "priority" for h in doc.holders):
        for holder in paused:
            if len(doc.active()) < room.max_talkers:
                holder.paused = False
            else:
                doc.holders.remove(holder)
                doc.queue.append(
                    Entry(holder.participant_id, holder.callsign, holder.kind, holder.since)
                )
    _sort(doc)


def _take(doc: FloorDoc, participant_id: str) -> Entry | None:
    entry = doc.entry(participant_id)
    if entry is not None:
        doc.queue.remove(entry)
    return entry


def _prune_bans(doc: FloorDoc, now: float) -> None:
    doc.bans = {c: u for c, u in doc.bans.items() if not u or u > now}


# ------------------------------------------------------------------------- transitions


def request(
    doc: FloorDoc,
    room: RoomConfig,
    participant_id: str,
    callsign: str,
    kind: FloorKind,
    can_publish: bool,
    now: float,
) -> FloorDoc:
    """Ask for the floor (again: change the kind, keeping the place unless it became
    priority). With priority_break_in a priority request takes the floor at once."""
    if not can_publish:
        raise ApiError(403, "cannot_publish", "listeners cannot ask for the floor")
    if doc.holder(participant_id) is not None:
        raise ApiError(409, "holds_floor", "you hold the floor already")
    new = _next(doc)
    entry = new.entry(participant_id)
    if entry is not None:
        if kind == "priority" and entry.kind != "priority":
            # Behind the priority requests made before it, out of net control's order.
            new.order = [pid for pid in new.order if pid != participant_id]
            entry.at = now
        entry.kind = kind
    else:
        entry = Entry(participant_id, callsign, kind, now)
        new.queue.append(entry)
    if kind == "priority" and room.priority_break_in:
        breaking = [h for h in new.active() if h.kind == "priority"]
        if len(breaking) < room.max_talkers:
            _take(new, participant_id)
            for holder in new.holders:
                if holder.kind != "priority":
                    holder.paused = True
            new.holders.append(Holder(participant_id, callsign, kind, now))
    _settle(new, room)
    return new


def release(doc: FloorDoc, room: RoomConfig, participant_id: str) -> FloorDoc:
    """Leave the queue and/or give up the floor."""
    if doc.holder(participant_id) is None and doc.entry(participant_id) is None:
        raise ApiError(404, "not_queued", "you neither hold the floor nor wait for it")
    new = _next(doc)
    new.holders = [h for h in new.holders if h.participant_id != participant_id]
    _take(new, participant_id)
    _settle(new, room)
    return new


def grant(
    doc: FloorDoc,
    room: RoomConfig,
    participant_id: str | None,
    callsign: str,
    can_publish: bool,
    now: float,
) -> FloorDoc:
    """Give the floor to a participant (None: the head of the queue; the caller passes
    that one's facts, see `head`). At max_talkers the longest holder is released."""
    if participant_id is None:
        raise ApiError(409, "queue_empty", "nobody is waiting for the floor")
    if not can_publish:
        raise ApiError(403, "cannot_publish", "a listener cannot hold the floor")
    held = doc.holder(participant_id)
    if held is not None and not held.paused:
        raise ApiError(409, "holds_floor", f"{callsign} holds the floor already")
    new = _next(doc)
    new.holders = [h for h in new.holders if h.participant_id != participant_id]
    entry = _take(new, participant_id)
    kind: FloorKind = entry.kind if entry is not None else "comment"
    active = sorted(new.active(), key=lambda h: h.since)
    while active and len(active) >= room.max_talkers:
        new.holders.remove(active.pop(0))
    new.holders.append(Holder(participant_id, callsign, kind, now))
    _settle(new, room)
    return new


def head(doc: FloorDoc) -> Entry | None:
    """Who a grant without a participant goes to."""
    return doc.queue[0] if doc.queue else None


def revoke(doc: FloorDoc, room: RoomConfig, participant_id: str | None) -> FloorDoc:
    """Take the floor from one holder (None: from every holder)."""
    if participant_id is not None and doc.holder(participant_id) is None:
        raise ApiError(404, "not_holding", f"{participant_id!r} does not hold the floor")
    new = _next(doc)
    if participant_id is None:
        new.holders = []
    else:
        new.holders = [h for h in new.holders if h.participant_id != participant_id]
    _settle(new, room)
    return new


def reorder(doc: FloorDoc, room: RoomConfig, order: list[str]) -> FloorDoc:
    """Net control puts these queued participants first, in this order."""
    if len(set(order)) != len(order):
        raise ApiError(400, "bad_request", "the order names a participant twice")
    missing = [pid for pid in order if doc.entry(pid) is None]
    if missing:
        raise ApiError(404, "not_queued", f"not in the queue: {', '.join(missing[:5])}")
    new = _next(doc)
    new.order = list(order)
    _settle(new, room)
    return new


def clear(doc: FloorDoc, room: RoomConfig) -> FloorDoc:
    new = _next(doc)
    new.queue = []
    new.order = []
    return new


def set_open(doc: FloorDoc, room: RoomConfig, is_open: bool) -> FloorDoc:
    new = _next(doc)
    new.open = is_open
    return new


def mute(doc: FloorDoc, room: RoomConfig, participant_id: str, muted: bool) -> FloorDoc:
    new = _next(doc)
    rest = [pid for pid in new.muted if pid != participant_id]
    new.muted = [*rest, participant_id] if muted else rest
    return new


def appoint(doc: FloorDoc, room: RoomConfig, participant_id: str, role: NetRole | None) -> FloorDoc:
    new = _next(doc)
    if role is None:
        new.appointed.pop(participant_id, None)
    else:
        new.appointed[participant_id] = role
    return new


def ban(doc: FloorDoc, room: RoomConfig, callsign: str, until: float, now: float) -> FloorDoc:
    """Keep a callsign out until `until` (0: until the room empties)."""
    new = _next(doc)
    _prune_bans(new, now)
    if callsign.upper() not in new.bans and len(new.bans) >= MAX_BANS:
        # The document is read and written whole on every floor change: keep it small.
        raise ApiError(409, "too_many_bans", f"this room already bans {MAX_BANS} callsigns")
    new.bans[callsign.upper()] = until
    return new


def unban(doc: FloorDoc, room: RoomConfig, callsign: str, now: float) -> FloorDoc:
    if doc.banned_until(callsign, now) is None:
        raise ApiError(404, "not_banned", f"{callsign} is not banned from this room")
    new = _next(doc)
    new.bans.pop(callsign.upper(), None)
    _prune_bans(new, now)
    return new


def forget(doc: FloorDoc, room: RoomConfig, participant_id: str) -> FloorDoc:
    """A participant left: out of the floor and the queue. Its mute and appointment stay
    (leaving and rejoining must not lift a mute) until the room empties."""
    new = _next(doc)
    new.holders = [h for h in new.holders if h.participant_id != participant_id]
    _take(new, participant_id)
    _settle(new, room)
    return new


def reset(doc: FloorDoc, now: float) -> FloorDoc:
    """The room emptied (the net ended): a fresh floor; only timed bans survive."""
    bans = {c: u for c, u in doc.bans.items() if u and u > now}
    return FloorDoc(version=doc.version + 1, bans=bans)


# ------------------------------------------------------------------------- views


def to_wire(room: RoomConfig, doc: FloorDoc) -> FloorState:
    return FloorState(
        roomId=room.id,
        version=doc.version,
        floor=room.floor,
        open=doc.open,
        maxTalkers=room.max_talkers,
        holders=[
            FloorHolder(
                participantId=h.participant_id,
                callsign=h.callsign,
                kind=h.kind,
                since=iso(h.since),
                paused=h.paused,
            )
            for h in doc.holders
        ],
        queue=[
            FloorEntry(
                participantId=e.participant_id, callsign=e.callsign, kind=e.kind, at=iso(e.at)
            )
            for e in doc.queue
        ],
        appointed=dict(doc.appointed),
        muted=list(doc.muted),
    )


def talkers(
    room: RoomConfig, doc: FloorDoc, ncs_ids: Iterable[str], publishers: Iterable[str] = ()
) -> ToWorkerFloor:
    """What the room's SFU worker forwards: holders not paused and net control (and every
    publisher while the floor is open), never the muted."""
    ncs = list(dict.fromkeys(ncs_ids))
    who = [h.participant_id for h in doc.active()] + ncs
    if doc.open:
        who += list(publishers)
    muted = set(doc.muted)
    return ToWorkerFloor(
        roomId=room.id,
        directed=room.directed,
        talkers=[pid for pid in dict.fromkeys(who) if pid not in muted],
        muted=list(doc.muted),
        tot=room.tot,
        totReset=room.tot_reset,
        courtesy=CourtesyTone(hz=room.courtesy_tone_hz, ms=room.courtesy_tone_ms)
        if room.courtesy
        else None,
        exempt=ncs,
    )
