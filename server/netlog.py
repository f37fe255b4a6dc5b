"""The records of the net log: a net, its check-ins, the lines of its log.

A `NetDoc` (the net's header and its check-in list) is one document with a version,
changed by read -> pure transition -> compare-and-set like the floor (netcontrol.py), so
two server processes never lose each other's check-in. The log's lines are appended
separately (a net of three hours has thousands; rewriting them per change would not
scale). Nothing here does I/O: the records, the rules that change a net (pure
transitions, below) and their wire views; `nets.py` applies the rules, `netlog_store.py`
keeps them.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from yahaml_voice.core.protocol import (
    CheckIn,
    CheckInAdd,
    CheckInEdit,
    CheckInFields,
    CheckInStatus,
    CheckInVia,
    NetEvent,
    NetEventKind,
    NetInfo,
)
from yahaml_voice.core.timestamps import iso

from .errors import ApiError


@dataclass
class CheckInRecord:
    id: str
    callsign: str
    participant_id: str | None
    at: float
    by: str
    via: CheckInVia = "page"
    status: CheckInStatus = "new"
    name: str = ""
    location: str = ""
    remarks: str = ""
    traffic: bool = False
    short_time: bool = False
    mobile: bool = False
    emergency: bool = False


@dataclass
class NetEventRecord:
    at: float
    kind: NetEventKind
    by: str | None = None
    callsign: str | None = None
    text: str = ""
    duration: float | None = None
    # Assigned by the store when appended (1, 2, ... per net).
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetEventRecord:
        return cls(**data)


@dataclass
class NetDoc:
    id: str
    room_id: str
    name: str
    opened_at: float
    opened_by: str
    preamble: str = ""
    closed_at: float | None = None
    ncs: list[str] = field(default_factory=list)
    loggers: list[str] = field(default_factory=list)
    checkins: list[CheckInRecord] = field(default_factory=list)
    version: int = 0
    # Lines in the log: filled in by the store when it reads the net (the log is kept
    # apart and is not part of the version; a stored value is ignored).
    event_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetDoc:
        data = dict(data)
        data["checkins"] = [CheckInRecord(**c) for c in data.get("checkins", [])]
        return cls(**data)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


# ------------------------------------------------------------------------- rules
# Pure transitions (like floor.py): the net in, a new net out with the version increased
# by one, or an ApiError. The caller (nets.py) passes everything they need to know: ids,
# the time, the caller's callsign and net role, the configured bounds.

NetActor = Literal["ncs", "logger", "member"]


def _next(doc: NetDoc) -> NetDoc:
    new = copy.deepcopy(doc)
    new.version = doc.version + 1
    return new


def _credit(doc: NetDoc, role: NetActor, callsign: str) -> None:
    """Net control and loggers who act on the net are named in its header."""
    names = doc.ncs if role == "ncs" else doc.loggers if role == "logger" else None
    if names is not None and callsign and callsign not in names:
        names.append(callsign)


def credited(doc: NetDoc, role: NetActor, callsign: str) -> bool:
    """Whether `callsign` is already named in the header for `role` (members never are)."""
    if role == "ncs":
        return callsign in doc.ncs
    if role == "logger":
        return callsign in doc.loggers
    return True


def credit(doc: NetDoc, role: NetActor, callsign: str) -> NetDoc:
    """Name `callsign` in the header (net control or logger who acted, e.g. with a note)."""
    new = _next(doc)
    _credit(new, role, callsign)
    return new


def _require_open(doc: NetDoc) -> None:
    if not doc.is_open:
        raise ApiError(404, "no_net", "no net is open in this room")


def entry(doc: NetDoc, checkin_id: str) -> CheckInRecord:
    found = next((c for c in doc.checkins if c.id == checkin_id), None)
    if found is None:
        raise ApiError(404, "checkin_not_found", f"no check-in {checkin_id!r} in this net")
    return found


def by_callsign(doc: NetDoc, callsign: str) -> CheckInRecord | None:
    return next((c for c in doc.checkins if c.callsign == callsign), None)


def own(doc: NetDoc, participant_id: str, callsign: str) -> CheckInRecord | None:
    """A member's own entry: the one with its participant id, else the one with its callsign."""
    found = next((c for c in doc.checkins if c.participant_id == participant_id), None)
    return found or by_callsign(doc, callsign)


def _room_for(doc: NetDoc, max_checkins: int) -> None:
    if len(doc.checkins) >= max_checkins:
        raise ApiError(409, "net_full", f"this net already has {max_checkins} check-ins")


def _fields(record: CheckInRecord, fields: CheckInFields) -> None:
    record.name = fields.name
    record.location = fields.location
    record.remarks = fields.remarks
    record.traffic = fields.traffic
    record.short_time = fields.shortTime
    record.mobile = fields.mobile
    record.emergency = fields.emergency


def open_net(net_id: str, room_id: str, name: str, preamble: str, by: str, now: float) -> NetDoc:
    """A new open net (version 1), net control `by` named in it."""
    return NetDoc(
        id=net_id,
        room_id=room_id,
        name=name.strip() or name,
        preamble=preamble,
        opened_at=now,
        opened_by=by,
        ncs=[by] if by else [],
        version=1,
    )


def update(doc: NetDoc, name: str | None, preamble: str | None, role: NetActor, by: str) -> NetDoc:
    """Rename the net and/or change its preamble (None: unchanged)."""
    _require_open(doc)
    new = _next(doc)
    if name is not None:
        new.name = name.strip() or name
    if preamble is not None:
        new.preamble = preamble
    _credit(new, role, by)
    return new


def close(doc: NetDoc, role: NetActor, by: str, now: float) -> NetDoc:
    _require_open(doc)
    new = _next(doc)
    # To the millisecond: the wire's closedAt then names exactly this time, so that it
    # pages the archive (`before`) without repeating this net.
    new.closed_at = round(max(now, doc.opened_at), 3)
    _credit(new, role, by)
    return new


def check_in_self(
    doc: NetDoc,
    checkin_id: str,
    participant_id: str,
    callsign: str,
    fields: CheckInFields,
    now: float,
    max_checkins: int,
) -> NetDoc:
    """A member checks in from the page. Again: its own entry (by participant id, else by
    callsign: a station entered by hand is claimed) takes the new remarks and flags, keeps
    its place and status, and a `checked_out` entry is back to `new`."""
    _require_open(doc)
    new = _next(doc)
    record = own(new, participant_id, callsign)
    if record is None:
        _room_for(doc, max_checkins)
        record = CheckInRecord(
            id=checkin_id,
            callsign=callsign,
            participant_id=participant_id,
            at=now,
            by=callsign,
            via="page",
        )
        new.checkins.append(record)
    else:
        record.participant_id = participant_id
        record.via = "page"
        if record.status == "checked_out":
            record.status = "new"
    _fields(record, fields)
    return new


def check_out(doc: NetDoc, participant_id: str, callsign: str) -> NetDoc:
    """A member checks out: its own entry's status becomes `checked_out`."""
    _require_open(doc)
    if own(doc, participant_id, callsign) is None:
        raise ApiError(404, "not_checked_in", "you have not checked in to this net")
    new = _next(doc)
    record = own(new, participant_id, callsign)
    assert record is not None
    record.status = "checked_out"
    return new


def add(
    doc: NetDoc,
    checkin_id: str,
    data: CheckInAdd,
    callsign: str,
    role: NetActor,
    by: str,
    now: float,
    max_checkins: int,
) -> NetDoc:
    """Net control or a logger enters a station by hand (`callsign` normalised by the
    caller). 409 `already_checked_in` when the callsign is in the list."""
    _require_open(doc)
    if by_callsign(doc, callsign) is not None:
        raise ApiError(409, "already_checked_in", f"{callsign} is already in the check-ins")
    _room_for(doc, max_checkins)
    new = _next(doc)
    record = CheckInRecord(
        id=checkin_id,
        callsign=callsign,
        participant_id=None,
        at=now,
        by=by,
        via=data.via,
        status=data.status,
    )
    _fields(record, data)
    new.checkins.append(record)
    _credit(new, role, by)
    return new


def edit(
    doc: NetDoc,
    checkin_id: str,
    data: CheckInEdit,
    callsign: str | None,
    role: NetActor,
    by: str,
) -> NetDoc:
    """Change an entry's fields (None: unchanged; `callsign` normalised by the caller)."""
    _require_open(doc)
    entry(doc, checkin_id)
    if callsign is not None:
        other = by_callsign(doc, callsign)
        if other is not None and other.id != checkin_id:
            raise ApiError(409, "already_checked_in", f"{callsign} is already in the check-ins")
    new = _next(doc)
    record = entry(new, checkin_id)
    if callsign is not None:
        record.callsign = callsign
    for wire, attr in EDITABLE.items():
        value = getattr(data, wire)
        if value is not None:
            setattr(record, attr, value)
    _credit(new, role, by)
    return new


# CheckInEdit's fields -> CheckInRecord's (but the callsign, normalised apart).
EDITABLE = {
    "name": "name",
    "location": "location",
    "remarks": "remarks",
    "traffic": "traffic",
    "shortTime": "short_time",
    "mobile": "mobile",
    "emergency": "emergency",
    "via": "via",
    "status": "status",
}


def remove(doc: NetDoc, checkin_id: str, role: NetActor, by: str) -> NetDoc:
    _require_open(doc)
    entry(doc, checkin_id)
    new = _next(doc)
    new.checkins = [c for c in new.checkins if c.id != checkin_id]
    _credit(new, role, by)
    return new


def reorder(doc: NetDoc, order: list[str], role: NetActor, by: str) -> NetDoc:
    """These entries first, in this order; the rest after in their current order. Unknown
    ids (an entry removed meanwhile) and repeats are ignored."""
    _require_open(doc)
    new = _next(doc)
    known = {c.id: c for c in new.checkins}
    first = [known[i] for i in dict.fromkeys(order) if i in known]
    chosen = {c.id for c in first}
    new.checkins = first + [c for c in new.checkins if c.id not in chosen]
    _credit(new, role, by)
    return new


# ------------------------------------------------------------------------- views


def flags(record: CheckInRecord) -> list[str]:
    """The flags set on an entry, in the order of the exports."""
    names = [("traffic", record.traffic), ("short time", record.short_time)]
    names += [("mobile", record.mobile), ("emergency", record.emergency)]
    return [name for name, on in names if on]


def checkin_view(record: CheckInRecord) -> CheckIn:
    return CheckIn(
        id=record.id,
        callsign=record.callsign,
        participantId=record.participant_id,
        name=record.name,
        location=record.location,
        remarks=record.remarks,
        traffic=record.traffic,
        shortTime=record.short_time,
        mobile=record.mobile,
        emergency=record.emergency,
        via=record.via,
        status=record.status,
        at=iso(record.at),
        by=record.by,
    )


def net_view(doc: NetDoc) -> NetInfo:
    return NetInfo(
        id=doc.id,
        roomId=doc.room_id,
        name=doc.name,
        preamble=doc.preamble,
        openedAt=iso(doc.opened_at),
        closedAt=iso(doc.closed_at) if doc.closed_at is not None else None,
        openedBy=doc.opened_by,
        ncs=list(doc.ncs),
        loggers=list(doc.loggers),
        version=doc.version,
        checkinCount=len(doc.checkins),
        trafficCount=sum(1 for c in doc.checkins if c.traffic),
        eventCount=doc.event_count,
    )


def event_view(event: NetEventRecord) -> NetEvent:
    return NetEvent(
        seq=event.seq,
        at=iso(event.at),
        kind=event.kind,
        by=event.by,
        callsign=event.callsign,
        text=event.text,
        duration=event.duration,
    )
