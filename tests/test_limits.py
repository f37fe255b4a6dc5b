"""Per-client limits against real server processes: each abuse of issue 10 reproduced.

Every test client comes from 127.0.0.1; the tests of per-address limits either count that
one address or make the server trust 127.0.0.1 as a proxy and name addresses in
X-Forwarded-For (TEST-NET-2 strings only: nothing is routed).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets

from tests.redis_fixture import RedisServer
from tests.servers import TEST_SECRET, ServerProcess
from tests.voiceclient import ApiFailure, VoiceClient
from yahaml_voice.core.config import load_config
from yahaml_voice.server.limits import Limits, TokenBuckets


def metrics_text(server: ServerProcess) -> str:
    """/metrics as Prometheus text (the one place that knows how to read it)."""
    return server.metrics()


def limited(server: ServerProcess, limit: str) -> float:
    """yahaml_voice_limited_total{limit=...} of this server process."""
    pattern = rf'^yahaml_voice_limited_total\{{limit="{limit}"\}} (\S+)$'
    match = re.search(pattern, metrics_text(server), re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def new_session(
    server: ServerProcess, callsign: str, forwarded: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return httpx.post(
        server.url + "/api/sessions", json={"callsign": callsign}, headers=headers, timeout=5.0
    )


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "rate_limited" and response.json()["message"]
    assert int(response.headers["Retry-After"]) >= 1


async def _client(
    server: ServerProcess, make: Callable[..., VoiceClient], call: str, **kw: Any
) -> VoiceClient:
    client = make(server.url, **kw)
    await client.login(call)
    await client.connect()
    return client


# --- the limiter itself (no server) ------------------------------------------------------


def test_token_buckets_refill_and_forget_the_least_recent_keys() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3, max_keys=100)
    assert [buckets.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", now=0.0) == pytest.approx(0.5)
    assert buckets.take("a", now=0.5) == 0.0  # one token back after 0.5 s at 2/s
    # An attacker with many keys only evicts: memory stays at max_keys.
    for i in range(10_000):
        buckets.take(f"k{i}", now=1.0)
    assert len(buckets) == 100


def test_client_address_believes_forwarded_for_only_from_trusted_proxies() -> None:
    config = load_config(environ={}, overrides={"server.trusted_proxies": ["10.0.0.0/8", "::1"]})
    limits = Limits(config)
    assert limits.client_address("192.0.2.5", ["198.51.100.1"]) == "192.0.2.5"
    assert limits.client_address("10.1.2.3", ["198.51.100.1"]) == "198.51.100.1"
    # Right-most untrusted: trusted hops are skipped, spoofed left entries are not reached.
    assert limits.client_address("10.1.2.3", ["6.6.6.6, 198.51.100.1, 10.9.9.9"]) == (
        "198.51.100.1"
    )
    assert limits.client_address("::1", ["198.51.100.1", "198.51.100.2"]) == "198.51.100.2"
    assert limits.client_address("10.1.2.3", ["[2001:db8::1]:4711"]) == "2001:db8::1"
    assert limits.client_address("10.1.2.3", ["unknown"]) == "10.1.2.3"
    assert limits.client_address("10.1.2.3", []) == "10.1.2.3"
    assert limits.client_address("::ffff:192.0.2.9", []) == "192.0.2.9"


# --- sessions per source address ---------------------------------------------------------


def test_sessions_per_address_per_minute(server_factory: Callable[..., ServerProcess]) -> None:
    """Open-mode sessions were free and unlimited (514/s): now N per minute per address."""
    server = server_factory({"limits": {"sessions_per_minute": 3}})
    for i in range(3):
        assert new_session(server, f"W{i}AW").status_code == 201
    refused = new_session(server, "W9AW")
    assert_rate_limited(refused)
    # Without trusted proxies, X-Forwarded-For is the client's word and changes nothing.
    assert_rate_limited(new_session(server, "W8AW", forwarded="198.51.100.20"))
    assert limited(server, "sessions_per_address") == 2


def test_forwarded_for_counts_only_from_a_trusted_proxy(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(
        {
            "server": {"trusted_proxies": ["127.0.0.1/32", "::1"]},
            "limits": {"sessions_per_minute": 2},
        }
    )
    a, b = "198.51.100.1", "198.51.100.2"
    assert new_session(server, "W1AW", forwarded=a).status_code == 201
    assert new_session(server, "W2AW", forwarded=a).status_code == 201
    assert_rate_limited(new_session(server, "W3AW", forwarded=a))
    # Another client behind the same proxy has its own allowance...
    assert new_session(server, "W4AW", forwarded=b).status_code == 201
    # ...and entries a client prepends itself prove nothing: the right-most one counts.
    assert_rate_limited(new_session(server, "W5AW", forwarded=f"192.0.2.77, {a}"))
    assert new_session(server, "W6AW", forwarded=f"{a}, {b}").status_code == 201
    assert_rate_limited(new_session(server, "W7AW", forwarded=f"{a}, {b}"))


# --- sockets per participant -------------------------------------------------------------


async def _open(url: str) -> tuple[Any, dict[str, Any]]:
    ws = await websockets.connect(url, open_timeout=10)
    first = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return ws, first


async def test_sockets_per_participant_are_capped(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """One participant held 4,000 sockets (+430 MB): now at most N, then an error frame."""
    server = server_factory({"limits": {"sockets_per_participant": 3}})
    token = new_session(server, "W1AW").json()["token"]
    url = f"{server.ws_url}/ws?token={token}"
    held = []
    for _ in range(3):
        ws, first = await _open(url)
        assert first["type"] == "connected"
        held.append(ws)
    # A burst of 30 more, concurrently: every one refused with a frame and a 4429 close.
    results = await asyncio.gather(*(_open(url) for _ in range(30)))
    for ws, first in results:
        assert first["type"] == "error" and first["data"]["code"] == "too_many_sockets"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 4429
    assert limited(server, "sockets_per_participant") == 30
    # Closing one makes room for one.
    await held.pop().close()
    await asyncio.sleep(0.3)
    ws, first = await _open(url)
    assert first["type"] == "connected"
    held.append(ws)
    for ws in held:
        await ws.close()


@pytest.mark.redis
async def test_sockets_per_participant_count_across_processes(
    server_factory: Callable[..., ServerProcess],
) -> None:
    with RedisServer() as redis:
        env = {"YAHAML_VOICE_REDIS__URL": redis.url, "YAHAML_VOICE_AUTH__SECRET": TEST_SECRET}
        config = {"limits": {"sockets_per_participant": 2}}
        a = server_factory(config, env=env, name="node-a")
        b = server_factory(config, env=env, name="node-b")
        token = new_session(a, "W1AW").json()["token"]
        first, hello = await _open(f"{a.ws_url}/ws?token={token}")
        second, hello2 = await _open(f"{b.ws_url}/ws?token={token}")
        assert hello["type"] == hello2["type"] == "connected"
        third, refused = await _open(f"{a.ws_url}/ws?token={token}")
        assert refused["data"]["code"] == "too_many_sockets"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(third.recv(), 10)
        assert third.close_code == 4429
        for ws in (first, second):
            await ws.close()
        a.stop()
        b.stop()


# --- joins and signals per participant ---------------------------------------------------


async def test_join_and_signal_token_buckets(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    server = server_factory(
        {
            "limits": {
                "joins_per_second": 0.05,
                "join_burst": 3,
                "signals_per_second": 0.05,
                "signal_burst": 5,
            }
        }
    )
    a = await _client(server, client_factory, "W1AW", auto_media=False)
    b = await _client(server, client_factory, "K1ABC", auto_media=False)
    for _ in range(3):
        await a.join("shack")
    with pytest.raises(ApiFailure) as info:
        await a.join("shack")
    assert info.value.status == 429 and info.value.body["error"] == "rate_limited"
    await b.join("shack")
    for _ in range(5):
        await a.signal("ice-candidate", None, to=b.participant_id)
    with pytest.raises(ApiFailure) as info:
        await a.signal("ice-candidate", None, to=b.participant_id)
    assert info.value.status == 429
    # Only a's bucket ran dry.
    await b.signal("ice-candidate", None, to=a.participant_id)
    assert limited(server, "joins_per_participant") == 1
    assert limited(server, "signals_per_participant") == 1


async def test_a_mesh_call_never_hits_the_default_limits(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    """Two aiortc peers with the shipped defaults (the media timeout shortened): they hear
    each other, keep their seats past the media timeout, and nothing is refused."""
    server = server_factory({"limits": {"media_timeout": "5s"}})
    alice = await _client(server, client_factory, "W1AW", tone=440)
    bob = await _client(server, client_factory, "G4ABC", tone=660)
    await alice.join("shack")
    await bob.join("shack")
    await alice.wait_audio(bob.participant_id, frames=25)
    await bob.wait_audio(alice.participant_id, frames=25)
    await asyncio.sleep(7.0)
    detail = await alice.request("GET", "/api/voice-rooms/shack")
    assert detail["participantCount"] == 2
    await alice.wait_audio(bob.participant_id, frames=10)
    text = metrics_text(server)
    counts = re.findall(r"^yahaml_voice_limited_total\{limit=\"(\w+)\"\} (\S+)$", text, re.M)
    assert counts and all(float(value) == 0 for _, value in counts), counts


# --- participants per source address -----------------------------------------------------


async def test_participants_per_address(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(
        {
            "server": {"trusted_proxies": ["127.0.0.1"]},
            "limits": {"participants_per_address": 2},
            "rooms": [{"id": "shack"}, {"id": "net"}],
        }
    )
    club, other = "198.51.100.50", "198.51.100.51"

    async def seat(call: str, room: str, address: str) -> httpx.Response:
        token = new_session(server, call, forwarded=address).json()["token"]
        async with httpx.AsyncClient(base_url=server.url) as http:
            return await http.post(
                f"/api/voice-rooms/{room}/join",
                json={},
                headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": address},
            )

    first = await seat("W1AW", "shack", club)
    assert first.status_code == 200
    assert (await seat("W2AW", "net", club)).status_code == 200
    refused = await seat("W3AW", "shack", club)
    assert_rate_limited(refused)
    assert (await seat("W4AW", "shack", other)).status_code == 200
    # A seat given up is a seat for someone else from that address.
    token = first.request.headers["Authorization"]
    left = httpx.post(server.url + "/api/voice-rooms/shack/leave", headers={"Authorization": token})
    assert left.status_code == 200
    assert (await seat("W5AW", "shack", club)).status_code == 200
    assert limited(server, "participants_per_address") == 1


# --- seats without media -----------------------------------------------------------------


async def test_idle_sockets_no_longer_keep_a_room_full(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    """5 idle participants (join + open socket, never signal) made a 5-seat room "full"
    (409) forever; now their seats go after limits.media_timeout. A lone participant, and
    two listeners (nothing to send each other in mesh), keep theirs."""
    server = server_factory(
        {
            "limits": {"media_timeout": "2s"},
            "rooms": [
                {"id": "small", "max_participants": 5},
                {"id": "solo"},
                {"id": "listeners"},
            ],
        }
    )
    squatters = [
        await _client(server, client_factory, f"W{i}SQ", auto_media=False) for i in range(5)
    ]
    for squatter in squatters:
        await squatter.join("small")
    lone = await _client(server, client_factory, "K1LON", auto_media=False)
    await lone.join("solo")
    ears = [await _client(server, client_factory, f"K{i}EAR", auto_media=False) for i in (1, 2)]
    for ear in ears:
        await ear.join("listeners", join_mode="listener")
    newcomer = await _client(server, client_factory, "N0NEW")
    with pytest.raises(ApiFailure) as info:
        await newcomer.join("small")
    assert info.value.status == 409
    for squatter in squatters:
        gone = await squatter.wait_event(
            "participantLeft",
            lambda e, s=squatter: e["data"]["participantId"] == s.participant_id,
            timeout=15,
        )
        assert gone["data"]["reason"] == "no_media"
    await newcomer.join("small")
    assert (await lone.request("GET", "/api/voice-rooms/solo"))["participantCount"] == 1
    assert (await lone.request("GET", "/api/voice-rooms/listeners"))["participantCount"] == 2
    assert limited(server, "media_timeout") == 5
