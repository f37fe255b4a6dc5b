"""The records of the net log: a net, its check-ins, the lines of its log.

A `NetDoc` (the net's header and its check-in list) is one document with a version,
changed by read -> pure transition -> compare-and-set like the floor (netcontrol.py), so
two server processes never lose each other's check-in. The log's lines are appended
separately (a net of three hours has thousands; rewriting them per change would not
scale). Nothing here does I/O; `nets.py` applies the rules, `netlog_store.py` keeps them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from yahaml_voice.core.protocol import CheckInStatus, CheckInVia, NetEventKind


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
