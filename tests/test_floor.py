"""The floor's pure transitions (server/floor.py): examples, then random sequences of
operations that must keep its invariants whatever net control and members do."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yahaml_voice.core.config import RoomConfig
from yahaml_voice.server import floor
from yahaml_voice.server.errors import ApiError
from yahaml_voice.server.floor import FloorDoc

PEOPLE = [f"p{i}" for i in range(6)]
# p5 joined as a listener.
LISTENER = "p5"


def room(**kw: Any) -> RoomConfig:
    return RoomConfig(id="net", floor="directed", **kw)


def req(
    doc: FloorDoc, r: RoomConfig, pid: str, kind: Any = "comment", now: float = 0.0
) -> FloorDoc:
    return floor.request(doc, r, pid, pid.upper(), kind, pid != LISTENER, now)


def grant(doc: FloorDoc, r: RoomConfig, pid: str | None, now: float = 0.0) -> FloorDoc:
    if pid is None:
        head = floor.head(doc)
        pid = head.participant_id if head else None
    return floor.grant(doc, r, pid, (pid or "").upper(), pid != LISTENER, now)


def queue(doc: FloorDoc) -> list[str]:
    return [e.participant_id for e in doc.queue]


def holders(doc: FloorDoc, paused: bool | None = None) -> list[str]:
    return [h.participant_id for h in doc.holders if paused is None or h.paused == paused]


def test_queue_order_priority_first_then_time_unless_reordered() -> None:
    r = room()
    doc = FloorDoc()
    doc = req(doc, r, "p0", "checkin", 1)
    doc = req(doc, r, "p1", "traffic", 2)
    doc = req(doc, r, "p2", "priority", 3)
    assert queue(doc) == ["p2", "p0", "p1"]
    doc = req(doc, r, "p0", "traffic", 4)  # a second request keeps the place
    assert queue(doc) == ["p2", "p0", "p1"] and doc.queue[1].kind == "traffic"
    doc = req(doc, r, "p1", "priority", 5)  # ... unless it became priority
    assert queue(doc) == ["p2", "p1", "p0"]
    doc = floor.reorder(doc, r, ["p0"])
    assert queue(doc) == ["p0", "p2", "p1"]
    doc = req(doc, r, "p3", "priority", 6)  # after the explicit order, priority first
    assert queue(doc) == ["p0", "p2", "p1", "p3"]
    with pytest.raises(ApiError) as info:
        floor.reorder(doc, r, ["p4"])
    assert (info.value.status, info.value.code) == (404, "not_queued")
    doc = floor.clear(doc, r)
    assert queue(doc) == [] and doc.order == []


def test_grant_passes_the_floor_at_capacity() -> None:
    r = room(max_talkers=2)
    doc = FloorDoc()
    for i, pid in enumerate(("p0", "p1", "p2")):
        doc = req(doc, r, pid, now=i)
    doc = grant(doc, r, None, 10)
    doc = grant(doc, r, None, 11)
    assert holders(doc) == ["p0", "p1"] and queue(doc) == ["p2"]
    doc = grant(doc, r, None, 12)  # the longest holder (p0) is released, not requeued
    assert holders(doc) == ["p1", "p2"] and queue(doc) == []
    with pytest.raises(ApiError) as info:
        grant(doc, r, None)
    assert info.value.code == "queue_empty"
    doc = grant(doc, r, "p4", 13)  # not queued: fine
    assert holders(doc) == ["p2", "p4"]
    with pytest.raises(ApiError) as info:
        grant(doc, r, LISTENER)
    assert (info.value.status, info.value.code) == (403, "cannot_publish")
    doc = floor.revoke(doc, r, None)
    assert holders(doc) == []


def test_listener_never_requests() -> None:
    with pytest.raises(ApiError) as info:
        req(FloorDoc(), room(), LISTENER)
    assert (info.value.status, info.value.code) == (403, "cannot_publish")


def test_priority_break_in_pauses_and_resumes() -> None:
    r = room(priority_break_in=True)
    doc = req(FloorDoc(), r, "p0", now=1)
    doc = grant(doc, r, None, 2)
    doc = req(doc, r, "p1", "priority", 3)
    assert holders(doc, paused=False) == ["p1"] and holders(doc, paused=True) == ["p0"]
    doc = floor.release(doc, r, "p1")
    assert holders(doc, paused=False) == ["p0"] and holders(doc, paused=True) == []


def test_bans_and_reset() -> None:
    r = room()
    doc = floor.ban(FloorDoc(), r, "n0call", 0, now=100)
    doc = floor.ban(doc, r, "W1AW", 200, now=100)
    assert doc.banned_until("N0CALL", 150) == 0 and doc.banned_until("w1aw", 150) == 200
    assert doc.banned_until("W1AW", 250) is None
    doc = floor.mute(doc, r, "p1", True)
    fresh = floor.reset(doc, now=150)
    assert fresh.version > doc.version
    assert fresh.bans == {"W1AW": 200} and fresh.muted == []
    with pytest.raises(ApiError) as info:
        floor.unban(fresh, r, "N0CALL", 150)
    assert info.value.code == "not_banned"


def test_bans_per_room_are_bounded() -> None:
    r = room()
    doc = FloorDoc()
    for i in range(floor.MAX_BANS):
        doc = floor.ban(doc, r, f"K{i}BAN", 0, now=0)
    with pytest.raises(ApiError) as info:
        floor.ban(doc, r, "N0MORE", 0, now=0)
    assert info.value.status == 409 and info.value.code == "too_many_bans"
    # Renewing a ban already held, or banning once some expired, still works.
    doc = floor.ban(doc, r, "K0BAN", 500, now=0)
    doc = floor.ban(doc, r, "K1BAN", 10, now=0)
    assert floor.ban(doc, r, "N0MORE", 0, now=20).banned_until("N0MORE", 20) == 0


def test_talkers_for_the_worker() -> None:
    r = room(max_talkers=1, priority_break_in=True)
    doc = grant(req(FloorDoc(), r, "p0"), r, None)
    doc = req(doc, r, "p1", "priority")
    doc = floor.mute(doc, r, "p2", True)
    frame = floor.talkers(r, doc, ["ncs"], ["p0", "p1", "p2", "p3"])
    assert frame.talkers == ["p1", "ncs"] and frame.muted == ["p2"] and frame.exempt == ["ncs"]
    assert frame.directed and frame.courtesy is not None
    opened = floor.talkers(r, floor.set_open(doc, r, True), ["ncs"], ["p0", "p1", "p2", "p3"])
    assert opened.talkers == ["p1", "ncs", "p0", "p3"]
    wire = floor.to_wire(r, doc)
    assert wire.version == doc.version and [h.participantId for h in wire.holders] == ["p0", "p1"]
    assert FloorDoc.from_dict(doc.to_dict()) == doc


# ------------------------------------------------------------------------- properties

PIDS = st.sampled_from(PEOPLE)
KINDS = st.sampled_from(["checkin", "traffic", "comment", "priority"])
OPS = st.one_of(
    st.tuples(st.just("request"), PIDS, KINDS),
    st.tuples(st.just("release"), PIDS),
    st.tuples(st.just("grant"), st.one_of(st.none(), PIDS)),
    st.tuples(st.just("revoke"), st.one_of(st.none(), PIDS)),
    st.tuples(st.just("reorder"), st.lists(PIDS, max_size=4, unique=True)),
    st.tuples(st.just("clear")),
    st.tuples(st.just("open"), st.booleans()),
    st.tuples(st.just("mute"), PIDS, st.booleans()),
    st.tuples(st.just("forget"), PIDS),
    st.tuples(st.just("reset")),
)


def apply(doc: FloorDoc, r: RoomConfig, op: tuple[Any, ...], now: float) -> FloorDoc:
    name, *args = op
    if name == "request":
        return req(doc, r, args[0], args[1], now)
    if name == "release":
        return floor.release(doc, r, args[0])
    if name == "grant":
        return grant(doc, r, args[0], now)
    if name == "revoke":
        return floor.revoke(doc, r, args[0])
    if name == "reorder":
        return floor.reorder(doc, r, args[0])
    if name == "clear":
        return floor.clear(doc, r)
    if name == "open":
        return floor.set_open(doc, r, args[0])
    if name == "mute":
        return floor.mute(doc, r, args[0], args[1])
    if name == "forget":
        return floor.forget(doc, r, args[0])
    return floor.reset(doc, now)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(OPS, max_size=40),
    max_talkers=st.integers(1, 3),
    break_in=st.booleans(),
)
def test_invariants_hold_for_any_sequence(
    ops: list[tuple[Any, ...]], max_talkers: int, break_in: bool
) -> None:
    r = room(max_talkers=max_talkers, priority_break_in=break_in)
    doc = FloorDoc()
    for step, op in enumerate(ops):
        before = doc
        try:
            doc = apply(doc, r, op, float(step))
        except ApiError as exc:
            assert exc.status in (400, 403, 404, 409)
            assert doc is before
            continue
        assert doc.version > before.version
        assert before == FloorDoc.from_dict(before.to_dict())  # transitions never mutate
        assert len(doc.active()) <= max_talkers
        assert LISTENER not in holders(doc) and LISTENER not in queue(doc)
        assert len(set(queue(doc))) == len(doc.queue)
        assert len(set(holders(doc))) == len(doc.holders)
        assert not set(queue(doc)) & set(holders(doc))
        if doc.holders and not any(h.kind == "priority" for h in doc.holders):
            assert not holders(doc, paused=True)
        if not doc.order:
            kinds = [e.kind == "priority" for e in doc.queue]
            assert kinds == sorted(kinds, reverse=True)
        assert set(doc.order) <= set(queue(doc))
