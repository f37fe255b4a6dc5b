"""A net's exports (docs/protocol.md "Net log"): its check-ins and its log as CSV and
JSON, and a plain-text report a club pastes into an email or its section report.

Pure functions of the records; every time is UTC and says so. CSV is RFC 4180 (the csv
module, CRLF line ends, UTF-8 without a byte order mark) and safe to open in a
spreadsheet: a cell starting with = + - @ (or a tab or carriage return) is prefixed with
a `'` so that it is never taken for a formula.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from .netlog import CheckInRecord, NetDoc, NetEventRecord, checkin_view, event_view, flags

CHECKIN_COLUMNS = (
    "number",
    "callsign",
    "name",
    "location",
    "traffic",
    "short_time",
    "mobile",
    "emergency",
    "status",
    "via",
    "checked_in_at",
    "remarks",
)
LOG_COLUMNS = ("seq", "at", "kind", "by", "callsign", "duration", "text")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# file name tail -> (media type, what it holds)
FILES = {
    "checkins.csv": "text/csv; charset=utf-8",
    "checkins.json": "application/json",
    "log.csv": "text/csv; charset=utf-8",
    "log.json": "application/json",
    "report.txt": "text/plain; charset=utf-8",
}


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _time(ts: float) -> str:
    """ISO 8601 UTC to the second, with a Z."""
    return _utc(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def safe_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
    return out.getvalue().encode("utf-8")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def checkins_csv(doc: NetDoc) -> bytes:
    return _csv(
        CHECKIN_COLUMNS,
        (
            (
                number,
                c.callsign,
                c.name,
                c.location,
                _yes(c.traffic),
                _yes(c.short_time),
                _yes(c.mobile),
                _yes(c.emergency),
                c.status,
                c.via,
                _time(c.at),
                c.remarks,
            )
            for number, c in enumerate(doc.checkins, 1)
        ),
    )


def log_csv(events: Sequence[NetEventRecord]) -> bytes:
    return _csv(
        LOG_COLUMNS,
        (
            (
                e.seq,
                _time(e.at),
                e.kind,
                e.by or "",
                e.callsign or "",
                "" if e.duration is None else f"{e.duration:g}",
                e.text,
            )
            for e in events
        ),
    )


def _json(items: list[Any]) -> bytes:
    return (json.dumps(items, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def checkins_json(doc: NetDoc) -> bytes:
    return _json([checkin_view(c).model_dump() for c in doc.checkins])


def log_json(events: Sequence[NetEventRecord]) -> bytes:
    return _json([event_view(e).model_dump() for e in events])


def _entry_line(number: int, c: CheckInRecord) -> str:
    details = ", ".join(t for t in (c.name, c.location, c.remarks) if t)
    marks = " ".join(f"[{f}]" for f in flags(c))
    status = f"({c.status.replace('_', ' ')})" if c.status != "new" else ""
    parts = [f"{number:>3}. {c.callsign:<10}", details, marks, status]
    return "   ".join(p for p in parts if p).rstrip()


def report(doc: NetDoc, room_name: str) -> bytes:
    """The plain-text report (times in UTC; the preamble is left out)."""
    opened = _utc(doc.opened_at)
    lines = [doc.name, f"{room_name} — {opened:%Y-%m-%d}"]
    people = f"Net control: {', '.join(doc.ncs) or '-'}"
    if doc.loggers:
        people += f"      Logger(s): {', '.join(doc.loggers)}"
    lines.append(people)
    when = f"Opened {opened:%H:%M} UTC"
    if doc.closed_at is None:
        when += "   (still open)"
    else:
        closed = _utc(doc.closed_at)
        day = "" if closed.date() == opened.date() else f"{closed:%Y-%m-%d} "
        minutes = round((doc.closed_at - doc.opened_at) / 60)
        when += f"   Closed {day}{closed:%H:%M} UTC ({minutes} min)"
    lines.append(when)
    traffic = sum(1 for c in doc.checkins if c.traffic)
    lines.append(f"Check-ins: {len(doc.checkins)}   With traffic: {traffic}")
    lines.append("")
    lines += [_entry_line(n, c) for n, c in enumerate(doc.checkins, 1)] or ["  (no check-ins)"]
    return ("\n".join(lines) + "\n").encode("utf-8")


def slug(name: str) -> str:
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text[:40].rstrip("-") or "net"


def filename(doc: NetDoc, tail: str) -> str:
    """`<room>-<UTC date>-<slug of the name>-<tail>`, e.g. net-2024-05-01-sunday-net-log.csv."""
    return f"{doc.room_id}-{_utc(doc.opened_at):%Y-%m-%d}-{slug(doc.name)}-{tail}"


def export(
    doc: NetDoc, events: Sequence[NetEventRecord], room_name: str, tail: str
) -> tuple[bytes, str, str]:
    """(body, media type, file name) of one of FILES."""
    if tail == "checkins.csv":
        body = checkins_csv(doc)
    elif tail == "checkins.json":
        body = checkins_json(doc)
    elif tail == "log.csv":
        body = log_csv(events)
    elif tail == "log.json":
        body = log_json(events)
    elif tail == "report.txt":
        body = report(doc, room_name)
    else:
        raise ValueError(f"no export {tail!r}")
    return body, FILES[tail], filename(doc, tail)
