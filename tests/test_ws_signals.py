"""Signals on the open /ws socket, and roster batches.

Real server processes and real WebSockets; the media test uses real aiortc peers. The
parsing property test drives ClientConnection with a queue-pair socket (as aiortc's
tests fake transports) and a router that records what reached it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import ServerProcess
from tests.voiceclient import ApiFailure, VoiceClient
from yahaml_voice.core.protocol import SignalRequest
from yahaml_voice.core.tokens import Identity
from yahaml_voice.server.connections import ClientConnection

CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0"}


async def _joined(
    factory: Callable[..., VoiceClient],
    server: ServerProcess,
    call: str,
    room: str = "shack",
    **kw: Any,
) -> VoiceClient:
    client = factory(server.url, **kw)
    await client.login(call)
    await client.connect()
    await client.join(room)
    return client


async def _reply(client: VoiceClient, frame: dict[str, Any] | str) -> dict[str, Any]:
    """Send a raw frame; the next ack/error frame (the socket's reader keeps them)."""
    since = len(client.events)
    await client.send_ws(frame)
    for _ in range(200):
        for event in client.events[since:]:
            if event.get("type") in ("ack", "error"):
                return event
        await asyncio.sleep(0.02)
    raise AssertionError("no reply")


async def test_two_peers_negotiate_and_hear_each_other_over_the_socket(
    server: ServerProcess, client_factory: Callable[..., VoiceClient], loopback_ice: None
) -> None:
    alice = await _joined(client_factory, server, "W1AW", tone=440)
    bob = await _joined(client_factory, server, "G4ABC", tone=660)
    await alice.wait_tone(660)
    await bob.wait_tone(440)
    # Offer and answer went as frames (the clients count their requests); no REST signal.
    assert alice._next_request + bob._next_request >= 2
    # Candidates, and the end-of-candidates null, are acknowledged with the count.
    answer = await alice.signal("ice-candidate", CANDIDATE, to=bob.participant_id)
    assert answer == {"success": True, "delivered": 1}
    assert (await alice.signal("ice-candidate", None, to=bob.participant_id))["delivered"] == 1
    got = await bob.wait_event(
        "signal",
        lambda e: (
            e["data"]["message"]["data"]
            == {**CANDIDATE, "sdpMLineIndex": None, "usernameFragment": None}
        ),
    )
    assert got["data"]["message"]["from"] == alice.participant_id


async def test_bad_signals_get_an_error_with_their_id_and_the_socket_stays(
    server: ServerProcess, client_factory: Callable[..., VoiceClient]
) -> None:
    alice = await _joined(client_factory, server, "W1AW", auto_media=False)
    bob = await _joined(client_factory, server, "G4ABC", auto_media=False)
    other = {"roomId": "shack", "type": "ice-candidate", "to": bob.participant_id}
    cases: list[tuple[Any, str, int]] = [
        ({"data": {"roomId": "shack", "type": "offer"}}, "bad_signal", 400),
        ({"data": {"roomId": "shack", "type": "shout", "data": None}}, "bad_request", 400),
        ({"data": {**other, "data": "candidate"}}, "bad_request", 400),
        ({"data": {**other, "extra": 1}}, "bad_request", 400),
        ({"data": {**other, "roomId": "Not A Room"}}, "bad_request", 400),
        ({"data": {**other, "roomId": "nowhere"}}, "room_not_found", 404),
        ({"data": {**other, "to": "p-nobody"}}, "peer_not_found", 404),
        ({"data": {**other, "to": alice.participant_id}}, "bad_signal", 400),
        ({"data": {**other, "to": "sfu"}}, "not_sfu", 409),
        (
            {"data": {"roomId": "shack", "type": "offer", "data": {"type": "answer", "sdp": "x"}}},
            "bad_signal",
            400,
        ),
        (
            {
                "data": {
                    "roomId": "shack",
                    "type": "offer",
                    "data": {"type": "offer", "sdp": "v" * 70_000},
                }
            },
            "too_large",
            413,
        ),
        ({"data": other, "extra": True}, "bad_request", 400),
        ({}, "bad_request", 400),
    ]
    for n, (frame, code, status) in enumerate(cases):
        request = f"bad-{n}"
        reply = await _reply(alice, {"type": "signal", "id": request, **frame})
        assert reply["type"] == "error", (frame, reply)
        assert (reply["id"], reply["data"]["code"], reply["data"]["status"]) == (
            request,
            code,
            status,
        ), frame
    # An id that cannot be one: the error still comes, with a null id.
    for bad_id in (7, "", "x" * 65, None):
        reply = await _reply(alice, {"type": "signal", "id": bad_id, "data": other})
        assert reply["type"] == "error" and reply["id"] is None
    # The socket is still open and still routes.
    assert (await alice.signal("ice-candidate", CANDIDATE, to=bob.participant_id))["delivered"] == 1
    assert not [e for e in alice.events if e.get("type") == "_closed"]
    # Not in the room: 403 on the socket as on REST.
    carol = client_factory(server.url, auto_media=False)
    await carol.login("K1ABC")
    await carol.connect()
    carol.room_id = "shack"
    with pytest.raises(ApiFailure) as info:
        await carol.signal("ice-candidate", CANDIDATE, to=alice.participant_id)
    assert (info.value.status, info.value.body["error"]) == (403, "not_in_room")


async def test_the_signal_rate_limit_is_shared_with_rest_and_does_not_close(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    limits = {
        "signals_per_second": 0.05,
        "signal_burst": 4,
        "frames_per_second": 0.05,
        "frame_burst": 20,
    }
    server = server_factory({"limits": limits})
    alice = await _joined(client_factory, server, "W1AW", auto_media=False)
    bob = await _joined(client_factory, server, "G4ABC", auto_media=False)
    for _ in range(3):
        await alice.signal("ice-candidate", None, to=bob.participant_id)
    alice.ws_signals = False  # the fourth over REST: the same bucket
    await alice.signal("ice-candidate", None, to=bob.participant_id)
    alice.ws_signals = True
    with pytest.raises(ApiFailure) as info:
        await alice.signal("ice-candidate", None, to=bob.participant_id)
    assert (info.value.status, info.value.body["error"]) == (429, "rate_limited")
    # Within the frame rate, refusals leave the socket open; bob's bucket is his own.
    await alice.send_ws({"type": "ping"})
    await alice.wait_event("pong")
    await bob.signal("ice-candidate", None, to=alice.participant_id)
    # Who keeps on past the limit spends the frame rate too, and is closed with 4429.
    for _ in range(25):
        await alice.send_ws(
            {"type": "signal", "id": "x", "data": {"roomId": "shack", "type": "ice-candidate"}}
        )
    closed = await alice.wait_event("_closed")
    assert closed["data"]["code"] == 4429


async def test_revocation_and_a_lost_seat_stop_the_socket_signals(
    server: ServerProcess, client_factory: Callable[..., VoiceClient]
) -> None:
    alice = await _joined(client_factory, server, "W1AW", auto_media=False)
    bob = await _joined(client_factory, server, "G4ABC", auto_media=False)
    # The seat given up: refused at once although the token is still good.
    await alice.request("POST", "/api/voice-rooms/shack/leave")
    with pytest.raises(ApiFailure) as info:
        await alice.signal("ice-candidate", None, to=bob.participant_id)
    assert info.value.body["error"] == "not_in_room"
    await alice.join("shack")
    assert (await alice.signal("ice-candidate", None, to=bob.participant_id))["delivered"] == 1
    # Logout with the same token: the socket gets `revoked` and 4401, nothing routes after.
    await alice.request("POST", "/api/sessions/logout")
    error = await alice.wait_event("error", lambda e: e["data"]["code"] == "revoked")
    assert error["id"] is None
    assert (await alice.wait_event("_closed"))["data"]["code"] == 4401
    # The socket is gone; a signal now can only go over REST, which refuses the token.
    with pytest.raises(ApiFailure) as info:
        await alice.signal("ice-candidate", None, to=bob.participant_id)
    assert info.value.status == 401


# ---------------------------------------------------------------------------- roster batches


async def test_every_member_ends_with_the_exact_roster(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    """A burst of joins and leaves in a room over the batch threshold: batches and single
    frames alike leave each member with exactly the room's membership."""
    server = server_factory(
        {
            "server": {"roster_batch_above": 4, "roster_batch_window": "300ms"},
            "rooms": [{"id": "net", "max_participants": 100, "sfu_threshold": 1000}],
        }
    )
    calls = [f"W{n % 10}{chr(65 + n // 26)}{chr(65 + n % 26)}" for n in range(24)]
    clients = [
        client_factory(server.url, auto_media=False, roster_batch=n % 2 == 0) for n in range(24)
    ]
    for client, call in zip(clients, calls, strict=True):
        await client.login(call)
        await client.connect()
    await asyncio.gather(*(c.join("net") for c in clients[:4]))
    await asyncio.gather(*(c.join("net") for c in clients[4:]))
    leaving = clients[5:9]
    await asyncio.gather(*(c.request("POST", "/api/voice-rooms/net/leave") for c in leaving))
    staying = [c for c in clients if c not in leaving]
    members = {str(c.participant_id) for c in staying}
    # Any broadcast to the room flushes a pending batch first; a mute is one.
    await staying[0].set_muted(True)
    for client in staying:
        await client.wait_event("participantMuteChanged")

    for client in staying:
        assert client.roster == members - {client.participant_id}, client.callsign
    batched = [c for c in staying if c.roster_batch]
    single = [c for c in staying if not c.roster_batch]
    # Opted-in sockets got batches (some holding several changes); the others never did,
    # and never a frame about themselves.
    assert any(
        len(e["data"]["frames"]) > 1
        for c in batched
        for e in c.events
        if e.get("type") == "rosterBatch"
    )
    for client in single:
        assert not [e for e in client.events if e.get("type") == "rosterBatch"]
        about_me = [
            e
            for e in client.events
            if e.get("type") == "participantJoined"
            and e["data"]["participant"]["id"] == client.participant_id
        ]
        assert about_me == []


async def test_a_small_room_gets_single_frames_at_once(
    server: ServerProcess, client_factory: Callable[..., VoiceClient]
) -> None:
    alice = await _joined(client_factory, server, "W1AW", auto_media=False, roster_batch=True)
    await _joined(client_factory, server, "G4ABC", auto_media=False)
    await alice.wait_event("participantJoined")
    assert not [e for e in alice.events if e.get("type") == "rosterBatch"]


async def test_a_quiet_big_room_sends_its_first_change_at_once(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    """Over the batch threshold, the first change of a quiet room goes at once as the
    plain frame; the next one within the window waits for it and comes as a batch."""
    server = server_factory({"server": {"roster_batch_above": 2, "roster_batch_window": "5s"}})
    alice = await _joined(client_factory, server, "W1AW", auto_media=False, roster_batch=True)
    bob, carol = (client_factory(server.url, auto_media=False) for _ in range(2))
    for client, call in ((bob, "G4ABC"), (carol, "DL1XYZ")):
        await client.login(call)
        await client.connect()
    await bob.join("shack")
    joined = await alice.wait_event("participantJoined")
    assert joined["data"]["participant"]["id"] == bob.participant_id
    await carol.join("shack")
    batch = await alice.wait_event("rosterBatch")
    assert [f["data"]["participant"]["id"] for f in batch["data"]["frames"]] == [
        carol.participant_id
    ]
    await bob.wait_event("participantJoined")
    assert alice.roster == {bob.participant_id, carol.participant_id}


# ---------------------------------------------------------------------------- parsing


class _Socket:
    """A queue pair standing in for quart's websocket."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> str | bytes:
        raise ConnectionError

    async def send(self, data: str | bytes) -> None:
        self.sent.append(json.loads(data))

    async def close(self, code: int, reason: str = "") -> None:
        pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "roomId": st.sampled_from(["shack", "x", "", "Bad Room", 3]),
        "type": st.sampled_from(["offer", "answer", "ice-candidate", "shout", None]),
        "to": st.one_of(st.none(), st.text(max_size=70), st.just("sfu")),
        "data": st.one_of(JSON, st.just({"type": "offer", "sdp": "v=0"}), st.just(CANDIDATE)),
        "from": JSON,
    },
)


@settings(
    max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(
    request=st.one_of(st.text(min_size=1, max_size=64), JSON),
    data=st.one_of(FIELDS, JSON),
    extra=st.dictionaries(st.sampled_from(["channel", "filters", "x"]), JSON, max_size=1),
)
def test_any_signal_frame_gets_exactly_one_reply(
    request: Any, data: Any, extra: dict[str, Any]
) -> None:
    routed: list[SignalRequest] = []

    async def route(identity: Identity, room_id: str, signal: SignalRequest) -> int:
        routed.append(signal)
        return 1

    async def run() -> list[dict[str, Any]]:
        socket = _Socket()
        identity = Identity("p-1", "W1AW", "operator", "*", 2e9, "s-1")
        conn = ClientConnection(socket, identity, None, route)
        await conn.handle({"type": "signal", "id": request, "data": data, **extra})
        return [conn.queue.get_nowait() for _ in range(conn.queue.qsize())]

    replies = asyncio.run(run())
    assert len(replies) == 1
    reply = replies[0]
    valid_id = isinstance(request, str) and 0 < len(request) <= 64
    assert reply["id"] == (request if valid_id else None)
    assert reply["type"] == ("ack" if routed else "error")
    if reply["type"] == "error":
        assert reply["data"]["status"] == 400
