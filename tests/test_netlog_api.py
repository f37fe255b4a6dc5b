"""The net log over the real API (docs/protocol.md "Net log"): every route with its
permissions and errors, the frames members see on /ws, the automatic log lines, the
exports, the archive, a restart of the embedded default, and two processes sharing a
real redis-server."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.redis_fixture import RedisServer
from tests.servers import TEST_SECRET, ServerProcess, mint
from tests.test_netcontrol import member, refused
from tests.voiceclient import VoiceClient

ROOMS: dict[str, Any] = {
    "server": {"grace_period": "5s"},
    "rooms": [
        {"id": "net", "name": "Net Room", "max_participants": 20},
        {"id": "other", "max_participants": 20},
    ],
}
Make = Callable[..., VoiceClient]


def path(tail: str, room: str = "net") -> str:
    return f"/api/voice-rooms/{room}/{tail}"


async def call(
    client: VoiceClient, method: str, tail: str, body: Any = None, room: str = "net"
) -> Any:
    return await client.request(method, path(tail, room), body)


def net_frames(client: VoiceClient, type_: str = "netChanged") -> list[dict[str, Any]]:
    return [e["data"] for e in client.events if e.get("type") == type_]


async def wait_frame(
    client: VoiceClient, type_: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    event = await client.wait_event(type_, predicate=lambda e: check(e["data"]), timeout=10)
    data: dict[str, Any] = event["data"]
    return data


async def log_kinds(client: VoiceClient) -> list[tuple[str, str | None]]:
    page = await call(client, "GET", "net/log")
    return [(e["kind"], e["callsign"]) for e in page["events"]]


async def test_routes_permissions_errors_and_frames(
    server_factory: Callable[..., ServerProcess], client_factory: Make
) -> None:
    server = server_factory(ROOMS)
    ncs = await member(server, client_factory, "W1AW", "net", role="ncs")
    alice = await member(server, client_factory, "K1AAA", "net")
    bob = await member(server, client_factory, "K1BBB", "net")
    lis = await member(server, client_factory, "K1LIS", "net", join_mode="listener")
    # Admitted to the room but not seated in it; and a token for another room only.
    away = client_factory(server.url, auto_media=False)
    away.use_token(mint("K1AWY", rooms=["net"]))
    stranger = client_factory(server.url, auto_media=False)
    stranger.use_token(mint("K1STR", rooms=["other"]))

    assert await call(alice, "GET", "net") == {"roomId": "net", "net": None, "checkins": []}
    await refused(call(alice, "POST", "net/open", {"name": "Mine"}), 403, "not_net_control")
    await refused(call(alice, "POST", "net/checkin"), 404, "no_net")
    await refused(call(ncs, "POST", "net/close"), 404, "no_net")
    await refused(call(ncs, "GET", "net/log"), 404, "no_net")
    await refused(call(stranger, "GET", "net"), 403, "forbidden")

    state = await call(ncs, "POST", "net/open", {"name": "Sunday Net", "preamble": "QST"})
    net = state["net"]
    assert (net["name"], net["preamble"], net["ncs"], net["version"]) == (
        "Sunday Net",
        "QST",
        ["W1AW"],
        1,
    )
    assert net["closedAt"] is None and state["checkins"] == []
    await refused(call(ncs, "POST", "net/open", {"name": "Again"}), 409, "net_open")
    await refused(call(ncs, "POST", "net/open", {"name": ""}), 400, "bad_request")
    seen = await wait_frame(bob, "netChanged", lambda d: d["change"] == "opened")
    assert seen["net"]["id"] == net["id"] and seen["roomId"] == "net"
    logged = await wait_frame(bob, "netLogged", lambda d: d["event"]["kind"] == "opened")
    assert logged["netId"] == net["id"] and logged["event"]["by"] == "W1AW"

    await refused(call(alice, "POST", "net/update", {"name": "x"}), 403, "not_net_control")
    state = await call(ncs, "POST", "net/update", {"name": "Sunday Evening Net"})
    assert state["net"]["name"] == "Sunday Evening Net" and state["net"]["preamble"] == "QST"

    # Check-ins from the page: a listener too; again updates the own entry.
    state = await call(lis, "POST", "net/checkin")
    assert [(c["callsign"], c["via"], c["status"]) for c in state["checkins"]] == [
        ("K1LIS", "page", "new")
    ]
    state = await call(alice, "POST", "net/checkin", {"traffic": True, "name": "Alice"})
    state = await call(alice, "POST", "net/checkin", {"traffic": True, "location": "FN42"})
    mine = [c for c in state["checkins"] if c["callsign"] == "K1AAA"]
    assert len(mine) == 1 and (mine[0]["name"], mine[0]["location"]) == ("", "FN42")
    assert mine[0]["participantId"] == alice.participant_id
    state = await call(alice, "POST", "net/checkout")
    assert [c["status"] for c in state["checkins"] if c["callsign"] == "K1AAA"] == ["checked_out"]
    state = await call(alice, "POST", "net/checkin", {"traffic": True})
    assert [c["status"] for c in state["checkins"] if c["callsign"] == "K1AAA"] == ["new"]
    await refused(call(bob, "POST", "net/checkout"), 404, "not_checked_in")
    await refused(call(away, "POST", "net/checkin"), 403, "not_in_room")
    await refused(call(alice, "POST", "net/checkin", {"traffic": "yes"}), 400, "bad_request")
    seen = await wait_frame(
        bob, "netChanged", lambda d: d["change"] == "checkin" and d["checkin"]["traffic"]
    )
    assert seen["checkin"]["callsign"] == "K1AAA"

    # Operators cannot keep the log; an appointed logger can, without floor powers.
    for tail, body in [
        ("net/checkins", {"callsign": "G4XYZ"}),
        ("net/notes", {"text": "hi"}),
        ("net/checkins/order", {"order": []}),
    ]:
        await refused(call(alice, "POST", tail, body), 403, "not_logger")
    await ncs.moderate("appoint", {"participantId": bob.participant_id, "role": "logger"})
    state = await call(bob, "POST", "net/checkins", {"callsign": "g4xyz", "traffic": True})
    manual = state["checkins"][-1]
    assert (manual["callsign"], manual["via"], manual["participantId"], manual["by"]) == (
        "G4XYZ",
        "rf",
        None,
        "K1BBB",
    )
    assert state["net"]["loggers"] == ["K1BBB"] and state["net"]["ncs"] == ["W1AW"]
    await refused(
        call(bob, "POST", "net/checkins", {"callsign": "G4XYZ"}), 409, "already_checked_in"
    )
    await refused(call(bob, "POST", "net/checkins", {"callsign": "NOCALL"}), 400, "bad_callsign")
    await refused(
        call(bob, "POST", "net/checkins/c-nope", {"status": "acknowledged"}),
        404,
        "checkin_not_found",
    )
    await refused(
        call(bob, "POST", f"net/checkins/{manual['id']}", {"callsign": "K1AAA"}),
        409,
        "already_checked_in",
    )
    state = await call(
        bob, "POST", f"net/checkins/{manual['id']}", {"status": "acknowledged", "via": "phone"}
    )
    assert (state["checkins"][-1]["status"], state["checkins"][-1]["via"]) == (
        "acknowledged",
        "phone",
    )
    order = [manual["id"], "c-gone"]
    state = await call(bob, "POST", "net/checkins/order", {"order": order})
    assert [c["callsign"] for c in state["checkins"]] == ["G4XYZ", "K1LIS", "K1AAA"]
    seen = await wait_frame(alice, "netChanged", lambda d: d["change"] == "order")
    assert seen["order"] == [c["id"] for c in state["checkins"]]
    note = await call(bob, "POST", "net/notes", {"text": "  band noise S5 "})
    assert (note["kind"], note["by"], note["text"]) == ("note", "K1BBB", "band noise S5")
    lis_entry = state["checkins"][1]["id"]
    state = await call(bob, "DELETE", f"net/checkins/{lis_entry}")
    assert [c["callsign"] for c in state["checkins"]] == ["G4XYZ", "K1AAA"]
    seen = await wait_frame(alice, "netChanged", lambda d: d["change"] == "checkinRemoved")
    assert seen["checkinId"] == lis_entry and seen["checkin"] is None
    await refused(call(bob, "DELETE", f"net/checkins/{lis_entry}"), 404, "checkin_not_found")
    for tail in ("net/open", "net/update", "net/close"):
        await refused(
            call(bob, "POST", tail, {"name": "x"} if tail != "net/close" else None),
            403,
            "not_net_control",
        )
    await refused(bob.grant(alice.participant_id), 403, "not_net_control")

    # The log, paged.
    kinds = await log_kinds(alice)
    assert kinds == [
        ("opened", None),
        ("updated", None),
        ("checkin", "K1LIS"),
        ("checkin", "K1AAA"),
        ("checkin_edited", "K1AAA"),
        ("checkin_edited", "K1AAA"),
        ("checkin", "K1AAA"),
        ("appoint", "K1BBB"),
        ("checkin", "G4XYZ"),
        ("checkin_edited", "G4XYZ"),
        ("checkins_reordered", None),
        ("note", None),
        ("checkin_removed", "K1LIS"),
    ]
    page = await call(alice, "GET", "net/log?after=3&limit=2")
    assert [e["seq"] for e in page["events"]] == [4, 5] and page["next"] == 5
    page = await call(alice, "GET", "net/log?after=99")
    assert page["events"] == [] and page["next"] == 99
    for query in ("after=x", "after=-1", "limit=0", "limit=1001", "limit=1.5"):
        await refused(call(alice, "GET", f"net/log?{query}"), 400, "bad_request")

    # Versions on the frames: exactly one per change, as a client checks.
    versions = [d["net"]["version"] for d in net_frames(alice) if d["net"]]
    assert versions == list(range(1, len(versions) + 1)), versions
    assert (await call(lis, "GET", "net"))["net"]["version"] == versions[-1]

    record = await call(ncs, "POST", "net/close")
    assert record["net"]["closedAt"] and [c["callsign"] for c in record["checkins"]] == [
        "G4XYZ",
        "K1AAA",
    ]
    assert record["events"][-1]["kind"] == "closed" and record["net"]["eventCount"] == len(
        record["events"]
    )
    seen = await wait_frame(alice, "netChanged", lambda d: d["change"] == "closed")
    assert seen["net"] is None
    assert (await call(alice, "GET", "net"))["net"] is None
    await refused(call(ncs, "POST", "net/close"), 404, "no_net")

    # The archive: newest first, paged with `before`; records only in their own room.
    await call(ncs, "POST", "net/open", {"name": "Second"})
    second = await call(ncs, "POST", "net/close")
    archive = await call(alice, "GET", "nets")
    assert [n["name"] for n in archive["nets"]] == ["Second", "Sunday Evening Net"]
    older = await call(alice, "GET", f"nets?before={second['net']['closedAt']}")
    assert [n["name"] for n in older["nets"]] == ["Sunday Evening Net"]
    assert [n["name"] for n in (await call(alice, "GET", "nets?limit=1"))["nets"]] == ["Second"]
    for query in ("before=yesterday", "limit=0", "limit=101", "before=nan"):
        await refused(call(alice, "GET", f"nets?{query}"), 400, "bad_request")
    got = await call(lis, "GET", f"nets/{record['net']['id']}")
    assert got == record
    await refused(
        call(stranger, "GET", f"nets/{record['net']['id']}", room="other"), 404, "net_not_found"
    )
    await refused(call(alice, "GET", "nets/n-nope"), 404, "net_not_found")
    await refused(call(alice, "GET", "nets/n-nope/report.txt"), 404, "net_not_found")
    assert "Traceback" not in server.log_path.read_text()


async def test_automatic_lines_for_the_floor_and_moderation(
    server_factory: Callable[..., ServerProcess], client_factory: Make
) -> None:
    server = server_factory(ROOMS)
    ncs = await member(server, client_factory, "W1AW", "net", role="ncs")
    alice = await member(server, client_factory, "K1AAA", "net")
    bob = await member(server, client_factory, "K1BBB", "net")
    # Before a net is open nothing is written anywhere.
    await alice.request_floor("checkin")
    await ncs.grant(alice.participant_id)
    await ncs.revoke()
    await call(ncs, "POST", "net/open", {"name": "Net"})
    await alice.request_floor("checkin")
    await bob.request_floor("traffic")
    await ncs.grant()  # alice, the head of the queue
    await asyncio.sleep(0.5)
    await ncs.grant(bob.participant_id)  # max_talkers 1: alice's transmission ends
    await ncs.moderate("mute", {"participantId": alice.participant_id, "muted": True})
    await ncs.moderate("mute", {"participantId": alice.participant_id, "muted": False})
    await ncs.revoke()
    # An appointed net control who grants is named in the net.
    await ncs.moderate("appoint", {"participantId": bob.participant_id, "role": "ncs"})
    await alice.request_floor()
    await bob.grant(alice.participant_id)
    await alice.floor_action("release")
    page = await call(bob, "GET", "net/log")
    lines = [(e["kind"], e["by"], e["callsign"]) for e in page["events"]]
    assert lines == [
        ("opened", "W1AW", None),
        ("granted", "W1AW", "K1AAA"),
        ("transmission", None, "K1AAA"),
        ("granted", "W1AW", "K1BBB"),
        ("mute", "W1AW", "K1AAA"),
        ("unmute", "W1AW", "K1AAA"),
        ("transmission", None, "K1BBB"),
        ("appoint", "W1AW", "K1BBB"),
        ("granted", "K1BBB", "K1AAA"),
        ("transmission", None, "K1AAA"),
    ]
    first = page["events"][2]
    assert 0.4 <= first["duration"] < 5 and first["text"] == "checkin"
    assert (await call(alice, "GET", "net"))["net"]["ncs"] == ["W1AW", "K1BBB"]
    seen = await wait_frame(alice, "netLogged", lambda d: d["event"]["kind"] == "transmission")
    assert seen["event"]["callsign"] == "K1AAA"


async def test_a_full_log_says_so_once(
    server_factory: Callable[..., ServerProcess], client_factory: Make
) -> None:
    server = server_factory({**ROOMS, "netlog": {"max_events": 5, "max_checkins": 2}})
    ncs = await member(server, client_factory, "W1AW", "net", role="ncs")
    alice = await member(server, client_factory, "K1AAA", "net")
    await call(ncs, "POST", "net/open", {"name": "Tiny"})  # line 1
    for i in range(3):  # lines 2-4
        await call(ncs, "POST", "net/notes", {"text": f"note {i}"})
    await call(ncs, "POST", "net/checkins", {"callsign": "G4XYZ"})  # refused: "log full" is 5
    await call(alice, "POST", "net/checkin")  # dropped silently
    await refused(call(ncs, "POST", "net/checkins", {"callsign": "G4ABC"}), 409, "net_full")
    await refused(call(ncs, "POST", "net/notes", {"text": "more"}), 409, "log_full")
    page = await call(alice, "GET", "net/log")
    assert [e["text"] for e in page["events"]][-1].startswith("log full")
    assert len(page["events"]) == 5
    assert server.log_tail(200).count("log full") == 1


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


async def test_exports_are_exact(
    server_factory: Callable[..., ServerProcess], client_factory: Make
) -> None:
    server = server_factory(ROOMS)
    ncs = await member(server, client_factory, "W1AW", "net", role="ncs")
    alice = await member(server, client_factory, "K1AAA", "net")
    bob = await member(server, client_factory, "K1BBB", "net")
    await call(ncs, "POST", "net/open", {"name": "Sunday Net", "preamble": "QST QST"})
    await call(alice, "POST", "net/checkin", {"traffic": True, "name": "Alice", "location": "FN42"})
    await call(bob, "POST", "net/checkin", {"mobile": True, "remarks": "=cmd|' /C calc'!A0"})
    state = await call(
        ncs, "POST", "net/checkins", {"callsign": "G4XYZ", "via": "phone", "shortTime": True}
    )
    ids = {c["callsign"]: c["id"] for c in state["checkins"]}
    await call(ncs, "POST", f"net/checkins/{ids['K1AAA']}", {"status": "traffic_passed"})
    await call(ncs, "POST", "net/checkins/order", {"order": [ids["G4XYZ"]]})
    record = await call(ncs, "POST", "net/close")
    net_id = record["net"]["id"]
    date = record["net"]["openedAt"][:10]

    http = httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {alice.token}"}
    )
    async with http:

        async def download(tail: str) -> httpx.Response:
            answer = await http.get(path(f"nets/{net_id}/{tail}"))
            assert answer.status_code == 200, answer.text
            expected = f'attachment; filename="net-{date}-sunday-net-{tail}"'
            assert answer.headers["content-disposition"] == expected
            return answer

        answer = await download("checkins.csv")
        assert answer.headers["content-type"] == "text/csv; charset=utf-8"
        rows = _rows(answer.text)
        assert rows[0] == [
            "number", "callsign", "name", "location", "traffic", "short_time", "mobile",
            "emergency", "status", "via", "checked_in_at", "remarks",
        ]  # fmt: skip
        without_time = [r[:10] + r[11:] for r in rows[1:]]
        assert without_time == [
            ["1", "G4XYZ", "", "", "no", "yes", "no", "no", "new", "phone", ""],
            ["2", "K1AAA", "Alice", "FN42", "yes", "no", "no", "no", "traffic_passed", "page", ""],
            ["3", "K1BBB", "", "", "no", "no", "yes", "no", "new", "page", "'=cmd|' /C calc'!A0"],
        ]
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r[10]) for r in rows[1:])

        answer = await download("log.csv")
        rows = _rows(answer.text)
        assert rows[0] == ["seq", "at", "kind", "by", "callsign", "duration", "text"]
        assert [(r[0], r[2], r[3], r[4]) for r in rows[1:]] == [
            ("1", "opened", "W1AW", ""),
            ("2", "checkin", "K1AAA", "K1AAA"),
            ("3", "checkin", "K1BBB", "K1BBB"),
            ("4", "checkin", "W1AW", "G4XYZ"),
            ("5", "checkin_edited", "W1AW", "K1AAA"),
            ("6", "checkins_reordered", "W1AW", ""),
            ("7", "closed", "W1AW", ""),
        ]

        checkins = json.loads((await download("checkins.json")).text)
        assert checkins == record["checkins"]
        events = json.loads((await download("log.json")).text)
        assert events == record["events"]

        answer = await download("report.txt")
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        lines = answer.text.splitlines()
        assert lines[:3] == ["Sunday Net", f"Net Room — {date}", "Net control: W1AW"]
        assert re.fullmatch(r"Opened \d\d:\d\d UTC   Closed \d\d:\d\d UTC \(\d+ min\)", lines[3])
        assert lines[4:] == [
            "Check-ins: 3   With traffic: 1",
            "",
            "  1. G4XYZ        [short time]",
            "  2. K1AAA        Alice, FN42   [traffic]   (traffic passed)",
            "  3. K1BBB        =cmd|' /C calc'!A0   [mobile]",
        ]
        assert "QST" not in answer.text
        for tail in ("checkins.csv", "report.txt"):
            other = await http.get(path(f"nets/{net_id}/{tail}", room="other"))
            assert other.status_code == 404 and other.json()["error"] == "net_not_found"


async def test_an_open_net_survives_a_restart(
    server_factory: Callable[..., ServerProcess], client_factory: Make
) -> None:
    server = server_factory(ROOMS)
    ncs = await member(server, client_factory, "W1AW", "net", role="ncs")
    alice = await member(server, client_factory, "K1AAA", "net")
    opened = await call(ncs, "POST", "net/open", {"name": "Kept"})
    await call(alice, "POST", "net/checkin", {"traffic": True})
    before = await call(alice, "GET", "net")
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)
    after = await call(alice, "GET", "net")
    assert after == before and after["net"]["id"] == opened["net"]["id"]
    await alice.reconnect()  # the seats were in memory: rejoin
    state = await call(alice, "POST", "net/checkin", {"traffic": True, "mobile": True})
    assert len(state["checkins"]) == 1 and state["checkins"][0]["mobile"]
    assert state["net"]["version"] == before["net"]["version"] + 1
    await call(ncs, "POST", "net/close")
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)
    archive = await call(alice, "GET", "nets")
    assert [n["id"] for n in archive["nets"]] == [opened["net"]["id"]]


@pytest.mark.redis
@pytest.mark.timeout(120)
async def test_two_processes_share_nets(
    server_factory: Callable[..., ServerProcess], client_factory: Make
) -> None:
    with RedisServer() as redis:
        env = {"YAHAML_VOICE_REDIS__URL": redis.url, "YAHAML_VOICE_AUTH__SECRET": TEST_SECRET}
        nodes = [server_factory(ROOMS, env=env, name=f"node{i}") for i in range(2)]
        ncs = await member(nodes[0], client_factory, "W1AW", "net", role="ncs")
        far = await member(nodes[1], client_factory, "K1FAR", "net")
        state = await call(ncs, "POST", "net/open", {"name": "Shared"})
        seen = await wait_frame(far, "netChanged", lambda d: d["change"] == "opened")
        assert seen["net"]["id"] == state["net"]["id"]
        assert (await call(far, "GET", "net"))["net"]["id"] == state["net"]["id"]
        state = await call(far, "POST", "net/checkin", {"traffic": True})
        seen = await wait_frame(ncs, "netChanged", lambda d: d["change"] == "checkin")
        assert seen["checkin"]["callsign"] == "K1FAR"
        # Net control through the other process edits what the first one holds.
        nc2 = client_factory(nodes[1].url, auto_media=False)
        nc2.use_token(ncs.token or "")
        entry = state["checkins"][0]["id"]
        edits = await asyncio.gather(
            call(nc2, "POST", f"net/checkins/{entry}", {"status": "acknowledged"}),
            call(ncs, "POST", "net/checkins", {"callsign": "G4XYZ"}),
            call(nc2, "POST", "net/checkins", {"callsign": "G4ABC"}),
        )
        assert len({e["net"]["version"] for e in edits}) == 3
        final = await call(ncs, "GET", "net")
        calls = [c["callsign"] for c in final["checkins"]]
        assert calls[0] == "K1FAR" and sorted(calls[1:]) == ["G4ABC", "G4XYZ"]
        assert final["checkins"][0]["status"] == "acknowledged"
        await wait_frame(far, "netLogged", lambda d: d["event"]["callsign"] == "G4ABC")
        record = await call(nc2, "POST", "net/close")
        await wait_frame(ncs, "netChanged", lambda d: d["change"] == "closed")
        archive = await call(ncs, "GET", "nets")
        assert [n["id"] for n in archive["nets"]] == [record["net"]["id"]]
        assert archive["nets"][0]["eventCount"] == len(record["events"])


async def test_many_changes_at_once_all_land(
    server_factory: Callable[..., ServerProcess], client_factory: Make
) -> None:
    """A net's start: everyone checks in within a second. Every change lands (none runs
    out of compare-and-set retries), each with its own version."""
    server = server_factory({**ROOMS, "limits": {"signals_per_second": 0}})
    ncs = await member(server, client_factory, "W1AW", "net", role="ncs")
    await call(ncs, "POST", "net/open", {"name": "Busy"})
    calls = [f"K{i % 10}N{chr(65 + i // 10)}" for i in range(50)]
    states = await asyncio.gather(
        *(call(ncs, "POST", "net/checkins", {"callsign": c}) for c in calls)
    )
    assert len({s["net"]["version"] for s in states}) == len(calls)
    final = await call(ncs, "GET", "net")
    assert sorted(c["callsign"] for c in final["checkins"]) == sorted(calls)
    assert final["net"]["version"] == 1 + len(calls)
