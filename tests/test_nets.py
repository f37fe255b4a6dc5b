"""The net log's pure rules (server/netlog.py) and exports (server/net_export.py): no I/O,
every refusal an ApiError, every change exactly one version; Hypothesis over random
sequences of operations for the invariants."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yahaml_voice.core.protocol import CheckInAdd, CheckInEdit, CheckInSelf
from yahaml_voice.server import net_export, netlog
from yahaml_voice.server.errors import ApiError
from yahaml_voice.server.netlog import NetDoc, NetEventRecord

T0 = 1_714_590_000.0  # 2024-05-01T19:00:00Z


def opened(**kw: Any) -> NetDoc:
    return netlog.open_net("n-1", "net", "Sunday Net", "Welcome", "W1AW", kw.get("at", T0))


def refused(status: int, code: str) -> Any:
    class Check:
        def __enter__(self) -> None:
            return None

        def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
            assert isinstance(exc, ApiError), exc
            assert (exc.status, exc.code) == (status, code), (exc.status, exc.code)
            return True

    return Check()


def test_open_update_close() -> None:
    doc = opened()
    assert (doc.version, doc.ncs, doc.opened_by, doc.is_open) == (1, ["W1AW"], "W1AW", True)
    new = netlog.update(doc, "Monday Net", None, "ncs", "K1NCS")
    assert (new.version, new.name, new.preamble, new.ncs) == (
        2,
        "Monday Net",
        "Welcome",
        ["W1AW", "K1NCS"],
    )
    assert doc.name == "Sunday Net" and doc.version == 1  # the input is never changed
    closed = netlog.close(new, "ncs", "W1AW", T0 + 60)
    assert (closed.version, closed.closed_at, closed.is_open) == (3, T0 + 60, False)
    with refused(404, "no_net"):
        netlog.update(closed, "x", None, "ncs", "W1AW")
    with refused(404, "no_net"):
        netlog.check_in_self(closed, "c-1", "p-1", "K1ABC", CheckInSelf(), T0, 10)


def test_self_check_in_updates_its_own_entry_and_comes_back_after_checking_out() -> None:
    doc = netlog.check_in_self(opened(), "c-1", "p-1", "K1ABC", CheckInSelf(traffic=True), T0, 10)
    assert [(c.id, c.callsign, c.participant_id, c.via, c.traffic) for c in doc.checkins] == [
        ("c-1", "K1ABC", "p-1", "page", True)
    ]
    doc = netlog.edit(doc, "c-1", CheckInEdit(status="acknowledged"), None, "logger", "G4LOG")
    assert doc.loggers == ["G4LOG"]
    again = netlog.check_in_self(doc, "c-2", "p-1", "K1ABC", CheckInSelf(mobile=True), T0 + 5, 10)
    [entry] = again.checkins
    assert (entry.id, entry.status, entry.traffic, entry.mobile, entry.at) == (
        "c-1",
        "acknowledged",
        False,
        True,
        T0,
    )
    out = netlog.check_out(again, "p-1", "K1ABC")
    assert out.checkins[0].status == "checked_out" and out.version == again.version + 1
    back = netlog.check_in_self(out, "c-3", "p-1", "K1ABC", CheckInSelf(), T0 + 9, 10)
    assert [(c.id, c.status) for c in back.checkins] == [("c-1", "new")]
    with refused(404, "not_checked_in"):
        netlog.check_out(back, "p-2", "K1XYZ")


def test_a_station_entered_by_hand_is_claimed_by_its_own_check_in() -> None:
    doc = netlog.add(opened(), "c-1", CheckInAdd(callsign="K1ABC"), "K1ABC", "ncs", "W1AW", T0, 10)
    assert doc.checkins[0].participant_id is None and doc.checkins[0].via == "rf"
    doc = netlog.check_in_self(doc, "c-2", "p-9", "K1ABC", CheckInSelf(name="Al"), T0, 10)
    assert [(c.id, c.participant_id, c.via, c.name) for c in doc.checkins] == [
        ("c-1", "p-9", "page", "Al")
    ]


def test_add_edit_remove_reorder_and_their_refusals() -> None:
    doc = opened()
    for i, call in enumerate(["K1AAA", "K1BBB", "K1CCC"]):
        doc = netlog.add(doc, f"c-{i}", CheckInAdd(callsign=call), call, "ncs", "W1AW", T0, 3)
    assert doc.version == 4
    with refused(409, "already_checked_in"):
        netlog.add(doc, "c-x", CheckInAdd(callsign="K1AAA"), "K1AAA", "ncs", "W1AW", T0, 10)
    with refused(409, "net_full"):
        netlog.add(doc, "c-x", CheckInAdd(callsign="K1DDD"), "K1DDD", "ncs", "W1AW", T0, 3)
    with refused(409, "net_full"):
        netlog.check_in_self(doc, "c-x", "p-1", "K1DDD", CheckInSelf(), T0, 3)
    with refused(409, "already_checked_in"):
        netlog.edit(doc, "c-1", CheckInEdit(callsign="K1AAA"), "K1AAA", "ncs", "W1AW")
    with refused(404, "checkin_not_found"):
        netlog.edit(doc, "c-9", CheckInEdit(name="x"), None, "ncs", "W1AW")
    with refused(404, "checkin_not_found"):
        netlog.remove(doc, "c-9", "ncs", "W1AW")
    edited = netlog.edit(
        doc, "c-1", CheckInEdit(callsign="K1BBB", traffic=True), "K1BBB", "ncs", "W1AW"
    )
    assert edited.checkins[1].traffic and edited.checkins[1].callsign == "K1BBB"
    edited = netlog.edit(doc, "c-1", CheckInEdit(callsign="K1ZZZ"), "K1ZZZ", "ncs", "W1AW")
    assert [c.callsign for c in edited.checkins] == ["K1AAA", "K1ZZZ", "K1CCC"]
    order = netlog.reorder(edited, ["c-2", "nope", "c-2", "c-0"], "logger", "G4LOG")
    assert [c.id for c in order.checkins] == ["c-2", "c-0", "c-1"]
    assert order.loggers == ["G4LOG"]
    gone = netlog.remove(order, "c-0", "ncs", "W1AW")
    assert [c.id for c in gone.checkins] == ["c-2", "c-1"] and gone.version == order.version + 1


def test_credit_names_each_callsign_once() -> None:
    doc = opened()
    assert netlog.credited(doc, "ncs", "W1AW") and not netlog.credited(doc, "logger", "W1AW")
    assert netlog.credited(doc, "member", "K1ABC")
    doc = netlog.credit(doc, "logger", "G4LOG")
    doc = netlog.update(doc, None, "x", "logger", "G4LOG")
    assert doc.loggers == ["G4LOG"] and doc.ncs == ["W1AW"]


# ---------------------------------------------------------------- random sequences

CALLS = ["K1AAA", "K1BBB", "K1CCC", "G4XYZ", "VE3ABC", "W1AW"]
MAX = 4
operations = st.lists(
    st.one_of(
        st.tuples(st.just("self"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("out"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("add"), st.sampled_from(CALLS), st.booleans()),
        st.tuples(st.just("edit"), st.integers(0, 9), st.sampled_from([*CALLS, None])),
        st.tuples(st.just("remove"), st.integers(0, 9), st.booleans()),
        st.tuples(st.just("order"), st.lists(st.integers(0, 12), max_size=6), st.booleans()),
        st.tuples(st.just("update"), st.text(min_size=1, max_size=5), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=operations)
def test_random_sequences_keep_the_invariants(ops: list[tuple[Any, Any, Any]]) -> None:
    doc = opened()
    made = 0
    for op, a, b in ops:
        ids = [c.id for c in doc.checkins]
        try:
            if op == "self":
                new = netlog.check_in_self(
                    doc, f"c-{made}", f"p-{a}", CALLS[a], CheckInSelf(traffic=b), T0, MAX
                )
            elif op == "out":
                new = netlog.check_out(doc, f"p-{a}", CALLS[a])
            elif op == "add":
                new = netlog.add(
                    doc, f"c-{made}", CheckInAdd(callsign=a), a, "ncs", "W1AW", T0, MAX
                )
            elif op == "edit":
                target = ids[a % len(ids)] if ids else "c-none"
                new = netlog.edit(
                    doc, target, CheckInEdit(callsign=b, mobile=True), b, "logger", "G4LOG"
                )
            elif op == "remove":
                target = ids[a % len(ids)] if ids else "c-none"
                new = netlog.remove(doc, target, "ncs", "W1AW")
            elif op == "order":
                order = [ids[i] if i < len(ids) else f"c-x{i}" for i in a]
                new = netlog.reorder(doc, order, "logger", "G4LOG")
                chosen = list(dict.fromkeys(i for i in order if i in ids))
                assert [c.id for c in new.checkins] == chosen + [i for i in ids if i not in chosen]
            else:
                new = netlog.update(doc, a, None, "ncs", "K1NCS")
        except ApiError as exc:
            assert exc.status in (404, 409), exc.code
            continue
        made += 1
        assert new.version == doc.version + 1
        new_ids = [c.id for c in new.checkins]
        assert len(set(new_ids)) == len(new_ids)
        calls = [c.callsign for c in new.checkins]
        assert len(set(calls)) == len(calls), calls
        assert len(new.checkins) <= MAX
        if op in ("order", "edit", "out", "update"):
            assert sorted(new_ids) == sorted(ids)  # a permutation of the same entries
        assert len(set(new.ncs)) == len(new.ncs) and len(set(new.loggers)) == len(new.loggers)
        # Round trip through the stored JSON shape.
        assert NetDoc.from_dict(json.loads(json.dumps(new.to_dict()))) == new
        doc = new


# ---------------------------------------------------------------- exports


def archived() -> tuple[NetDoc, list[NetEventRecord]]:
    doc = opened()
    doc = netlog.check_in_self(
        doc,
        "c-1",
        "p-1",
        "K1ABC",
        CheckInSelf(name="Alice", location="FN42", traffic=True, mobile=True),
        T0 + 60,
        10,
    )
    doc = netlog.add(
        doc,
        "c-2",
        CheckInAdd(callsign="G4XYZ", remarks="=HYPERLINK(1)", via="phone", shortTime=True),
        "G4XYZ",
        "logger",
        "G4LOG",
        T0 + 120,
        10,
    )
    doc = netlog.edit(doc, "c-1", CheckInEdit(status="traffic_passed"), None, "ncs", "W1AW")
    doc = netlog.close(doc, "ncs", "W1AW", T0 + 42 * 60)
    events = [
        NetEventRecord(at=T0, kind="opened", by="W1AW", text="Sunday Net", seq=1),
        NetEventRecord(
            at=T0 + 61, kind="granted", by="W1AW", callsign="K1ABC", text="checkin", seq=2
        ),
        NetEventRecord(at=T0 + 73.25, kind="transmission", callsign="K1ABC", duration=12.3, seq=3),
        NetEventRecord(at=T0 + 80, kind="note", by="W1AW", text="-5 dB, @all", seq=4),
    ]
    return doc, events


def test_checkins_csv_is_exact_and_formula_safe() -> None:
    doc, _ = archived()
    text = net_export.checkins_csv(doc).decode("utf-8")
    assert text.splitlines() == [
        "number,callsign,name,location,traffic,short_time,mobile,emergency,status,via,checked_in_at,remarks",
        "1,K1ABC,Alice,FN42,yes,no,yes,no,traffic_passed,page,2024-05-01T19:01:00Z,",
        "2,G4XYZ,,,no,yes,no,no,new,phone,2024-05-01T19:02:00Z,'=HYPERLINK(1)",
    ]
    assert "\r\n" in text  # RFC 4180 line ends
    rows = list(csv.reader(io.StringIO(text)))
    assert [r[1] for r in rows[1:]] == ["K1ABC", "G4XYZ"]


def test_log_csv_and_json() -> None:
    _, events = archived()
    text = net_export.log_csv(events).decode()
    assert text.splitlines() == [
        "seq,at,kind,by,callsign,duration,text",
        "1,2024-05-01T19:00:00Z,opened,W1AW,,,Sunday Net",
        "2,2024-05-01T19:01:01Z,granted,W1AW,K1ABC,,checkin",
        "3,2024-05-01T19:01:13Z,transmission,,K1ABC,12.3,",
        '4,2024-05-01T19:01:20Z,note,W1AW,,,"\'-5 dB, @all"',
    ]
    listed = json.loads(net_export.log_json(events))
    assert [e["kind"] for e in listed] == ["opened", "granted", "transmission", "note"]
    assert listed[2]["duration"] == 12.3 and listed[2]["at"] == "2024-05-01T19:01:13.250000Z"
    doc, _ = archived()
    assert [c["callsign"] for c in json.loads(net_export.checkins_json(doc))] == ["K1ABC", "G4XYZ"]


def test_report_text() -> None:
    doc, _ = archived()
    assert net_export.report(doc, "Net Room").decode() == (
        "Sunday Net\n"
        "Net Room — 2024-05-01\n"
        "Net control: W1AW      Logger(s): G4LOG\n"
        "Opened 19:00 UTC   Closed 19:42 UTC (42 min)\n"
        "Check-ins: 2   With traffic: 1\n"
        "\n"
        "  1. K1ABC        Alice, FN42   [traffic] [mobile]   (traffic passed)\n"
        "  2. G4XYZ        =HYPERLINK(1)   [short time]\n"
    )
    empty = netlog.close(opened(), "ncs", "W1AW", T0 + 86400 + 60)
    report = net_export.report(empty, "Net Room").decode()
    assert "Closed 2024-05-02 19:01 UTC (1441 min)" in report and "(no check-ins)" in report


@pytest.mark.parametrize(
    "name, expected",
    [("Sunday Net", "sunday-net"), ("ARES / RACES ♦ weekly!", "ares-races-weekly"), ("♦♦", "net")],
)
def test_file_names(name: str, expected: str) -> None:
    doc = netlog.open_net("n-1", "net", name, "", "W1AW", T0)
    assert net_export.filename(doc, "log.csv") == f"net-2024-05-01-{expected}-log.csv"
