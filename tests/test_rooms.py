"""Room rules over the real API: seats, grace periods, capacity, events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from tests.servers import ServerProcess
from tests.voiceclient import ApiFailure, VoiceClient


async def _client(
    server: ServerProcess, make: Callable[..., VoiceClient], call: str
) -> VoiceClient:
    client = make(server.url, auto_media=False)
    await client.login(call)
    await client.connect()
    return client


async def test_full_room_is_409_and_rejoin_keeps_the_seat(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    server = server_factory({"rooms": [{"id": "tiny", "max_participants": 2}]})
    a = await _client(server, client_factory, "W1AW")
    b = await _client(server, client_factory, "K1ABC")
    c = await _client(server, client_factory, "N0CALL")
    first = await a.join("tiny")
    await b.join("tiny")
    with pytest.raises(ApiFailure) as info:
        await c.join("tiny")
    assert info.value.status == 409 and info.value.body["error"] == "room_full"
    again = await a.join("tiny")  # idempotent: same seat, no second participantJoined
    assert again["participant"]["id"] == first["participant"]["id"]
    await asyncio.sleep(0.3)
    joined = [e for e in b.events if e["type"] == "participantJoined"]
    assert joined == []
    detail = await a.request("GET", "/api/voice-rooms/tiny")
    assert detail["participantCount"] == 2
    assert sorted(p["displayName"] for p in detail["participants"]) == ["K1ABC", "W1AW"]


async def test_grace_period_keeps_a_seat_across_a_reconnect(
    server: ServerProcess, client_factory: Callable[..., VoiceClient]
) -> None:
    # The `server` fixture has a 2 s grace period.
    a = await _client(server, client_factory, "W1AW")
    b = await _client(server, client_factory, "K1ABC")
    await a.join("shack")
    await b.join("shack")

    await b.ws.close()  # a drop...
    await asyncio.sleep(0.5)
    await b.connect()  # ...and a reconnect inside the grace period
    await asyncio.sleep(2.5)
    assert not [e for e in a.events if e["type"] == "participantLeft"]

    await b.ws.close()  # gone for good
    started = time.monotonic()
    left = await a.wait_event("participantLeft", timeout=10)
    assert left["data"]["participantId"] == b.participant_id
    assert time.monotonic() - started >= 1.5
    detail = await a.request("GET", "/api/voice-rooms/shack")
    assert [p["id"] for p in detail["participants"]] == [a.participant_id]


async def test_server_drop_closes_socket_and_seat_survives(
    server: ServerProcess, client_factory: Callable[..., VoiceClient]
) -> None:
    a = await _client(server, client_factory, "W1AW")
    await a.join("shack")
    httpx.post(f"{server.url}/api/test/drop-sockets/{a.participant_id}").raise_for_status()
    closed = await a.wait_event("_closed")
    assert closed["data"]["code"] == 4000
    await a.connect()
    detail = await a.request("GET", "/api/voice-rooms/shack")
    assert [p["id"] for p in detail["participants"]] == [a.participant_id]


async def test_leave_mute_and_subscription_filters(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    server = server_factory({"rooms": [{"id": "shack"}, {"id": "net"}]})
    a = await _client(server, client_factory, "W1AW")
    b = await _client(server, client_factory, "K1ABC")
    await a.join("shack")
    await a.join("net")
    await b.join("shack")
    await b.join("net")
    # Only shack's events from now on.
    await a.send_ws({"type": "subscribe", "channel": "voice", "filters": {"roomId": "shack"}})
    await a.wait_event("subscribed")
    mark = len(a.events)
    b.room_id = "net"
    await b.set_muted(True)
    b.room_id = "shack"
    await b.set_muted(True)
    muted = await a.wait_event("participantMuteChanged")
    assert muted["data"] == {"roomId": "shack", "participantId": b.participant_id, "isMuted": True}
    await b.leave()
    left = await a.wait_event("participantLeft")
    assert left["data"]["roomId"] == "shack"
    await asyncio.sleep(0.2)
    assert all((e.get("data") or {}).get("roomId") != "net" for e in a.events[mark:])
    await a.send_ws({"type": "unsubscribe", "channel": "voice"})
    await a.wait_event("unsubscribed")


def test_healthz_openapi_metrics_and_client(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    spec = httpx.get(server.url + "/openapi.json").json()
    for path in (
        "/api/sessions",
        "/api/ice-servers",
        "/api/voice-rooms",
        "/api/voice-rooms/{room_id}",
        "/api/voice-rooms/{room_id}/join",
        "/api/voice-rooms/{room_id}/leave",
        "/api/voice-rooms/{room_id}/signal",
        "/api/voice-rooms/{room_id}/mute",
    ):
        assert path in spec["paths"], path
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert "yahaml_voice_participants" in server.metrics()


def test_ice_servers_carry_fresh_turn_credentials(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(
        {
            "ice": {
                "stun_urls": ["stun:turn.example.org:3478"],
                "turn": {
                    "urls": [
                        "turn:turn.example.org:3478?transport=udp",
                        "turn:turn.example.org:3478?transport=tcp",
                        "turns:turn.example.org:5349?transport=tcp",
                    ],
                    "secret": "turn-secret-0123456789",
                    "ttl": "10m",
                },
                "force_relay": True,
            }
        }
    )
    token = httpx.post(server.url + "/api/sessions", json={"callsign": "W1AW"}).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    # TURN credentials are for participants holding a seat (tests/test_limits.py has more).
    before = httpx.get(server.url + "/api/ice-servers", headers=headers)
    assert before.status_code == 403 and before.json()["error"] == "not_in_room"
    joined = httpx.post(server.url + "/api/voice-rooms/shack/join", json={}, headers=headers).json()
    ice = httpx.get(server.url + "/api/ice-servers", headers=headers).json()
    assert ice["iceTransportPolicy"] == "relay" and ice["ttl"] == 600
    stun, turn = ice["iceServers"]
    assert stun == {"urls": ["stun:turn.example.org:3478"], "username": None, "credential": None}
    expiry, user = turn["username"].split(":", 1)
    assert user.startswith("p-") and 590 <= int(expiry) - time.time() <= 610
    assert any(u.startswith("turns:") for u in turn["urls"])
    assert joined["iceServers"][1]["urls"] == turn["urls"]
    assert joined["iceTransportPolicy"] == "relay"
