"""Net control over the real API (docs/protocol.md "Net control"): the floor, moderation
and bans, on real server processes (one in memory; two sharing a real redis-server),
with a fake SFU worker socket to read the `floor` frames the server sends it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.redis_fixture import RedisServer
from tests.servers import TEST_SECRET, ServerProcess, mint
from tests.test_revocation import closed_with
from tests.test_worker_identity import FakeWorker, fake_workers  # noqa: F401 (fixture)
from tests.voiceclient import ApiFailure, VoiceClient

ROOMS: dict[str, Any] = {
    "server": {"grace_period": "2s"},
    "rooms": [
        {"id": "net", "max_participants": 20, "floor": "directed", "ban_time": 0},
        {
            "id": "pri",
            "max_participants": 20,
            "floor": "directed",
            "max_talkers": 2,
            "priority_break_in": True,
        },
        {"id": "shack", "max_participants": 20},
    ],
}

Make = Callable[..., VoiceClient]


async def member(
    server: ServerProcess,
    make: Make,
    call: str,
    room: str,
    role: str | None = None,
    join_mode: str = "operator",
) -> VoiceClient:
    client = make(server.url, auto_media=False)
    if role is None:
        await client.login(call)
    else:
        client.use_token(mint(call, role=role))
    await client.connect()
    await client.join(room, join_mode)
    return client


async def refused(call: Any, status: int, code: str) -> None:
    with pytest.raises(ApiFailure) as info:
        await call
    assert (info.value.status, info.value.body["error"]) == (status, code), info.value.body


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["participantId"] for e in entries]


async def test_floor_queue_grant_revoke_and_refusals(
    server_factory: Callable[..., ServerProcess],
    client_factory: Make,
    fake_workers: Callable[..., FakeWorker],  # noqa: F811
) -> None:
    server = server_factory(ROOMS)
    worker = await fake_workers(server, "w-net").connect()
    await asyncio.to_thread(server.wait_healthy, 10, 1)
    ncs = await member(server, client_factory, "W1AW", "net", role="ncs")
    # A directed room is on an SFU worker from its first join, and the worker hears whom
    # to forward (net control only, so far).
    assert ncs.join_answer and ncs.join_answer["mode"] == "sfu"
    first = await ncs.wait_floor(lambda f: f["roomId"] == "net")
    assert first["floor"] == "directed" and first["holders"] == [] and first["maxTalkers"] == 1
    a = await member(server, client_factory, "K1AAA", "net")
    b = await member(server, client_factory, "K1BBB", "net")
    c = await member(server, client_factory, "K1CCC", "net")
    lis = await member(server, client_factory, "K1LIS", "net", join_mode="listener")
    await a.wait_floor(lambda f: True)  # a joiner gets the floor right after its join

    await a.request_floor("checkin")
    await b.request_floor("traffic")
    state = await c.request_floor("priority")
    assert ids(state["queue"]) == [c.participant_id, a.participant_id, b.participant_id]
    assert [e["kind"] for e in state["queue"]] == ["priority", "checkin", "traffic"]
    await refused(lis.request_floor(), 403, "cannot_publish")
    await refused(a.grant(b.participant_id), 403, "not_net_control")
    await refused(a.floor_action("clear"), 403, "not_net_control")

    state = await ncs.floor_action("queue", {"order": [b.participant_id]})
    assert ids(state["queue"]) == [b.participant_id, c.participant_id, a.participant_id]
    await refused(ncs.floor_action("queue", {"order": ["p-nobody"]}), 404, "not_queued")

    state = await ncs.grant()  # the head of the queue
    assert ids(state["holders"]) == [b.participant_id]
    seen = await a.wait_floor(lambda f: ids(f["holders"]) == [b.participant_id])
    assert ids(seen["queue"]) == [c.participant_id, a.participant_id]
    assert (await lis.floor())["version"] == state["version"]
    forwarded = await _worker_floor(worker, lambda f: b.participant_id in f["talkers"])
    assert forwarded["roomId"] == "net" and forwarded["directed"]
    assert set(forwarded["talkers"]) == {b.participant_id, ncs.participant_id}
    assert forwarded["exempt"] == [ncs.participant_id]

    state = await ncs.grant(a.participant_id)  # max_talkers 1: passes the floor
    assert ids(state["holders"]) == [a.participant_id]
    assert ids(state["queue"]) == [c.participant_id]
    await refused(ncs.grant(lis.participant_id), 403, "cannot_publish")
    await refused(a.request_floor(), 409, "holds_floor")

    state = await a.floor_action("release")
    assert state["holders"] == []
    await refused(a.floor_action("release"), 404, "not_queued")
    await ncs.grant(b.participant_id)
    state = await ncs.revoke()
    assert state["holders"] == []
    await refused(ncs.revoke(b.participant_id), 404, "not_holding")
    state = await ncs.floor_action("clear")
    assert state["queue"] == []
    await refused(ncs.grant(), 409, "queue_empty")

    state = await ncs.floor_action("open")
    assert state["open"]
    opened = await _worker_floor(
        worker, lambda f: f["talkers"] and b.participant_id in f["talkers"]
    )
    assert lis.participant_id not in opened["talkers"]
    assert not (await ncs.floor_action("close"))["open"]

    # The worker's time-out timer cut a talker: the room hears it. After a reconnect the
    # worker reports its rooms (roomState) and learns the floor again.
    cut = {"roomId": "net", "participantId": b.participant_id, "state": "cut", "reason": "tot"}
    await worker.ws.send(json.dumps({"type": "talker", "data": cut}))
    heard = await a.wait_event("talkerCut")
    assert heard["data"] == {
        "roomId": "net",
        "participantId": b.participant_id,
        "reason": "tot",
        "resetAfter": 2.0,
    }
    before = len(worker.of("floor"))
    await worker.ws.send(
        json.dumps({"type": "roomState", "data": {"roomId": "net", "audioFrom": []}})
    )
    await _worker_floor(worker, lambda f: len(worker.of("floor")) > before)

    # Rejoining as a listener leaves the queue; leaving the room too.
    await c.request_floor()
    await c.join("net", "listener")
    assert c.participant_id not in ids((await ncs.floor())["queue"])
    await c.join("net")

    # A participant who leaves is forgotten by the floor.
    await c.request_floor()
    await c.leave()
    assert c.participant_id not in ids((await ncs.floor())["queue"])


async def _worker_floor(
    worker: FakeWorker, check: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            for frame in reversed(worker.of("floor")):
                if check(frame):
                    return frame
            await asyncio.sleep(0.05)


async def test_priority_break_in_and_pass_the_floor(
    server_factory: Callable[..., ServerProcess], client_factory: Make
) -> None:
    server = server_factory(ROOMS)
    ncs = await member(server, client_factory, "W1AW", "pri", role="ncs")
    a, b, c, d = [
        await member(server, client_factory, call, "pri")
        for call in ("K1AAA", "K1BBB", "K1CCC", "K1DDD")
    ]
    for who in (a, b, c):
        await who.request_floor()
    await ncs.grant()
    state = await ncs.grant()
    assert ids(state["holders"]) == [a.participant_id, b.participant_id]
    state = await ncs.grant()  # max_talkers 2: the longest holder (a) goes
    assert ids(state["holders"]) == [b.participant_id, c.participant_id]

    state = await d.request_floor("priority")  # break-in: granted at once, others paused
    holders = {h["participantId"]: h["paused"] for h in state["holders"]}
    assert holders == {b.participant_id: True, c.participant_id: True, d.participant_id: False}
    state = await d.floor_action("release")
    assert {h["participantId"]: h["paused"] for h in state["holders"]} == {
        b.participant_id: False,
        c.participant_id: False,
    }


async def test_appointment_and_mute(
    server_factory: Callable[..., ServerProcess], client_factory: Make
) -> None:
    server = server_factory(ROOMS)
    ncs = await member(server, client_factory, "W1AW", "shack", role="ncs")
    a = await member(server, client_factory, "K1AAA", "shack")
    b = await member(server, client_factory, "K1BBB", "shack")

    await refused(a.moderate("mute", {"participantId": b.participant_id}), 403, "not_net_control")
    await ncs.moderate("appoint", {"participantId": a.participant_id, "role": "ncs"})
    appointed = await b.wait_event("moderation", lambda e: e["data"]["action"] == "appoint")
    assert appointed["data"]["participantId"] == a.participant_id
    assert appointed["data"]["role"] == "ncs" and appointed["data"]["by"] == "W1AW"
    state = await b.wait_floor(lambda f: f["appointed"] == {a.participant_id: "ncs"})
    assert state["floor"] == "open"

    # The appointee is net control now: it mutes b, who cannot unmute itself.
    await a.moderate("mute", {"participantId": b.participant_id, "muted": True})
    muted = await b.wait_event("participantMuteChanged")
    assert muted["data"] == {"roomId": "shack", "participantId": b.participant_id, "isMuted": True}
    await b.wait_floor(lambda f: f["muted"] == [b.participant_id])
    await refused(b.set_muted(False), 403, "muted_by_ncs")
    await b.set_muted(True)  # muting oneself further is fine
    await ncs.moderate("mute", {"participantId": b.participant_id, "muted": False})
    await b.set_muted(False)

    await ncs.moderate("appoint", {"participantId": a.participant_id, "role": "logger"})
    await refused(a.moderate("mute", {"participantId": b.participant_id}), 403, "not_net_control")
    await ncs.moderate("appoint", {"participantId": a.participant_id, "role": None})
    dismissed = await b.wait_event("moderation", lambda e: e["data"]["action"] == "dismiss")
    assert dismissed["data"]["participantId"] == a.participant_id
    await refused(
        ncs.moderate("appoint", {"participantId": "p-nobody", "role": "ncs"}),
        404,
        "participant_not_found",
    )


async def test_removal_bans_the_callsign_and_unban(
    server_factory: Callable[..., ServerProcess], client_factory: Make
) -> None:
    server = server_factory(ROOMS)
    ncs = await member(server, client_factory, "W1AW", "shack", role="ncs")
    a = await member(server, client_factory, "K1AAA", "shack")
    b = await member(server, client_factory, "K1BBB", "shack")

    await ncs.moderate("remove", {"participantId": a.participant_id, "reason": "jamming"})
    await closed_with(a, "removed")
    removed = await b.wait_event("moderation", lambda e: e["data"]["action"] == "remove")
    assert removed["data"]["callsign"] == "K1AAA" and removed["data"]["reason"] == "jamming"
    assert removed["data"]["until"] is None  # ban_time 0: until the net ends
    await refused(a.join("shack"), 401, "revoked")  # the same token
    fresh = client_factory(server.url, auto_media=False)
    await fresh.login("K1AAA")
    await fresh.connect()
    await refused(fresh.join("shack"), 403, "banned")  # a fresh token of the callsign
    await fresh.join("net")  # another room is not affected

    await ncs.moderate("unban", {"callsign": "k1aaa"})
    await fresh.join("shack")
    await refused(ncs.moderate("unban", {"callsign": "K1AAA"}), 404, "not_banned")

    # A ban by callsign removes whoever holds a seat under it, for `duration` seconds.
    await ncs.moderate("ban", {"callsign": "K1BBB", "duration": 600, "reason": "qrm"})
    await closed_with(b, "removed")
    banned = await ncs.wait_event("moderation", lambda e: e["data"]["action"] == "ban")
    assert banned["data"]["until"] is not None
    again = client_factory(server.url, auto_media=False)
    await again.login("K1BBB")
    with pytest.raises(ApiFailure) as info:
        await again.join("shack")
    assert info.value.body["error"] == "banned" and "until" in info.value.body["message"]

    # The old remove route is the same removal (and ban).
    await ncs.request("POST", f"/api/voice-rooms/shack/participants/{fresh.participant_id}/remove")
    await closed_with(fresh, "removed")
    other = client_factory(server.url, auto_media=False)
    await other.login("K1AAA")
    await refused(other.join("shack"), 403, "banned")
    # ... until the net ends: the room empties, room-scoped bans go, timed ones stay.
    await ncs.leave()
    await other.join("shack")
    await refused(again.join("shack"), 403, "banned")


@pytest.mark.redis
@pytest.mark.timeout(120)
async def test_two_processes_share_the_floor(
    server_factory: Callable[..., ServerProcess],
    client_factory: Make,
    fake_workers: Callable[..., FakeWorker],  # noqa: F811
) -> None:
    with RedisServer() as redis:
        env = {"YAHAML_VOICE_REDIS__URL": redis.url, "YAHAML_VOICE_AUTH__SECRET": TEST_SECRET}
        nodes = [server_factory(ROOMS, env=env, name=f"node{i}", workers=0) for i in range(2)]
        worker = await fake_workers(nodes[0], "w-shared").connect()
        await asyncio.to_thread(nodes[0].wait_healthy, 10, 1)
        ncs = await member(nodes[0], client_factory, "W1AW", "net", role="ncs")
        far = await member(nodes[1], client_factory, "K1FAR", "net")
        assert far.join_answer and far.join_answer["mode"] == "sfu"
        await far.request_floor("traffic")
        state = await ncs.grant()
        assert ids(state["holders"]) == [far.participant_id]
        seen = await far.wait_floor(lambda f: ids(f["holders"]) == [far.participant_id])
        assert seen["version"] == state["version"]
        frame = await _worker_floor(worker, lambda f: far.participant_id in f["talkers"])
        assert frame["roomId"] == "net" and ncs.participant_id in frame["talkers"]

        # Concurrent grants through both processes: one holder, never two.
        rivals = [await member(nodes[i % 2], client_factory, f"K{i}RIV", "net") for i in range(4)]
        for rival in rivals:
            await rival.request_floor()
        nc2 = client_factory(nodes[1].url, auto_media=False)
        nc2.use_token(ncs.token or "")
        nc2.room_id = "net"
        results = await asyncio.gather(
            *(
                client.grant(rival.participant_id)
                for client, rival in zip((ncs, nc2, ncs, nc2), rivals, strict=True)
            )
        )
        final = await far.floor()
        assert len(final["holders"]) == 1
        assert len({r["version"] for r in results}) == 4

        # A burst of requests as a net starts, through both processes: every one lands
        # (none runs out of compare-and-set retries), each once in the queue.
        crowd = await asyncio.gather(
            *(member(nodes[i % 2], client_factory, f"N{i}CRW", "net") for i in range(12))
        )
        await asyncio.gather(*(c.request_floor("checkin") for c in crowd))
        queue = ids((await far.floor())["queue"])
        assert sorted(c.participant_id for c in crowd) == sorted(
            p for p in queue if p in {c.participant_id for c in crowd}
        )
        assert len(queue) == len(set(queue))
        await asyncio.sleep(0.3)
        assert httpx.get(nodes[1].url + "/healthz").status_code == 200
