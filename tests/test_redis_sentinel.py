"""Redis high availability: two server processes follow a Sentinel failover, and the
store and bus leave a demoted master for the new one.

Real processes throughout: a redis-server primary and its replica, three sentinels (the
same binary with --sentinel), two `yahaml-voice serve` processes that know only the
sentinels (`redis.sentinels`), and aiortc peers from tests/voiceclient.py in a mesh room
spanning both. The primary is SIGKILLed; the sentinels promote the replica and the servers
follow it without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from websockets.exceptions import InvalidStatus

from tests.redis_fixture import SentinelGroup
from tests.servers import TEST_SECRET, ServerProcess, mint
from tests.voiceclient import ApiFailure, VoiceClient
from yahaml_voice.server.redis_bus import RedisBus
from yahaml_voice.server.redis_client import Sentinels
from yahaml_voice.server.redis_store import RedisStore
from yahaml_voice.server.store import StoreUnavailable

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

CONFIG: dict[str, Any] = {
    "server": {"grace_period": "10s"},
    "rooms": [{"id": "net", "max_participants": 20}],
}


@pytest.fixture
def sentinels() -> Iterator[SentinelGroup]:
    with SentinelGroup() as group:
        yield group


async def retry_503(action: Callable[[], Any], timeout: float = 30.0) -> float:
    """Run `action` until it stops answering 503 (the store unavailable); the seconds taken."""
    start = time.monotonic()
    while True:
        try:
            await action()
            return time.monotonic() - start
        except (ApiFailure, InvalidStatus) as exc:
            status = exc.status if isinstance(exc, ApiFailure) else exc.response.status_code
            if status != 503 or time.monotonic() - start > timeout:
                raise
        await asyncio.sleep(0.1)


async def resubscribed(*servers: ServerProcess, timeout: float = 30.0) -> None:
    """Until every server's /healthz says its pub/sub came back after the failover."""
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            states = []
            for server in servers:
                try:
                    states.append((await http.get(server.url + "/healthz")).json()["bus"])
                except (httpx.HTTPError, ValueError, KeyError):
                    states.append({})
            if all(s.get("connected") and s.get("reconnects", 0) >= 1 for s in states):
                return
            assert time.monotonic() - start < timeout, f"pub/sub never came back: {states}"
            await asyncio.sleep(0.1)


async def members(client: VoiceClient) -> list[str]:
    detail = await client.request("GET", "/api/voice-rooms/net")
    return sorted(p["id"] for p in detail["participants"])


async def test_servers_follow_a_failover(
    sentinels: SentinelGroup,
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    env = {
        "YAHAML_VOICE_REDIS__SENTINELS": json.dumps(sentinels.addresses),
        "YAHAML_VOICE_REDIS__SERVICE_NAME": sentinels.service,
        "YAHAML_VOICE_AUTH__SECRET": TEST_SECRET,
    }
    a = server_factory(CONFIG, env=env, name="node0", workers=0)
    b = server_factory(CONFIG, env=env, name="node1", workers=0)

    ncs = client_factory(a.url, tone=440)
    ncs.use_token(mint("W1AW", role="ncs"))
    await ncs.connect()
    await ncs.join("net")
    bob = client_factory(b.url, tone=660)
    await bob.login("G4ABC")
    await bob.connect()
    await bob.join("net")
    assert ncs.participant_id and bob.participant_id
    await ncs.wait_audio(bob.participant_id, frames=10)
    opened = await ncs.request("POST", "/api/voice-rooms/net/net/open", {"name": "Failover Net"})
    await bob.request("POST", "/api/voice-rooms/net/net/checkin", {"traffic": True})

    old_port = sentinels.primary.port
    sentinels.primary.kill()
    killed = time.monotonic()

    # The servers follow: both re-subscribe on the new master (a signal published before a
    # process has re-subscribed is lost for it, as in any Redis pub/sub outage)...
    await resubscribed(a, b)
    # ...and a newcomer on A joins (503 until they do) and negotiates with Bob on B, offer
    # and answer through the new master's pub/sub.
    carol = client_factory(a.url, tone=550)
    await retry_503(lambda: carol.login("K1ABC"))
    await retry_503(carol.connect)
    await retry_503(lambda: carol.join("net"))
    joined_after = time.monotonic() - killed
    assert carol.participant_id
    assert sentinels.master_port() == sentinels.replica.port != old_port
    await carol.wait_audio(bob.participant_id, frames=15)
    await bob.wait_audio(carol.participant_id, frames=15)
    await ncs.wait_audio(carol.participant_id, frames=15)

    # Existing seats continued: both processes list the same three members, nobody was
    # disconnected or told that someone left.
    everyone = sorted([ncs.participant_id, bob.participant_id, carol.participant_id])
    assert await members(ncs) == await members(bob) == everyone
    events = ncs.events + bob.events
    assert not [e for e in events if e["type"] in ("_closed", "participantLeft")]

    # The open net and its log are on the new master, and it takes new lines.
    state = await bob.request("GET", "/api/voice-rooms/net/net")
    assert state["net"]["id"] == opened["net"]["id"] and state["net"]["closedAt"] is None
    assert [c["callsign"] for c in state["checkins"]] == ["G4ABC"]
    state = await carol.request("POST", "/api/voice-rooms/net/net/checkin")
    assert [c["callsign"] for c in state["checkins"]] == ["G4ABC", "K1ABC"]
    print(f"failover: a newcomer joined {joined_after:.1f}s after the primary was killed")


async def until(condition: Callable[[], Any], timeout: float = 20.0) -> None:
    """Await `condition()` until it is true; StoreUnavailable counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(StoreUnavailable):
            if await condition():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        await asyncio.sleep(0.1)


async def test_a_demoted_master_is_left_for_the_new_one(sentinels: SentinelGroup) -> None:
    where = Sentinels(tuple(("127.0.0.1", p) for p in sentinels.sentinel_ports), sentinels.service)
    store, bus = RedisStore("redis://", "t:", where), RedisBus("redis://", "t:", where)
    # A replica answers writes with READONLY: an outage (503), never a 500.
    replica = RedisStore(sentinels.replica.url, "t:")
    await store.start()
    await bus.start()
    await replica.start()
    try:
        with pytest.raises(StoreUnavailable, match="read only replica"):
            await replica.revoke("direct", time.time() + 60)
        sub = await bus.subscribe("p:x")
        await store.revoke("before", time.time() + 60)

        # Planned: the old primary keeps running and keeps its clients until Sentinel
        # reconfigures it (about 10 s later); writes sent there meanwhile would be lost.
        sentinels.failover()

        await until(lambda: asyncio.to_thread(sentinels.promoted), timeout=10)
        written = 0

        async def on_new_master() -> bool:
            nonlocal written
            written += 1
            await store.revoke(f"after-{written}", time.time() + 60)
            with redis.Redis(port=sentinels.replica.port) as new:
                return bool(new.exists(f"t:revoked:after-{written}"))

        # Within MASTER_CHECK (1 s) of the promotion, writes go to the new master.
        await until(on_new_master, timeout=5)
        assert await store.is_revoked("before")

        async def delivered() -> bool:
            await bus.publish("p:x", {"n": 1})
            try:
                return bool(await asyncio.wait_for(sub.queue.get(), 0.5))
            except TimeoutError:
                return False

        await until(delivered, timeout=5)
    finally:
        await replica.stop()
        await bus.stop()
        await store.stop()
