"""A room spanning SFU workers on two hosts (issue 14): two network namespaces, a server
and its worker in each, one Redis. A listener placed on the other host's worker hears the
speaker through the origin's SRTP link between the hosts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.natlab.hosts import HOST_A, HOST_B, TwoHosts
from tests.natlab.lab import WEB_PORT
from tests.natlab.netns import NetnsLoop, unavailable_reason
from tests.natlab.services import AUTH_SECRET, LabServer
from tests.voiceclient import SFU, VoiceClient

pytestmark = pytest.mark.natlab

ROOM = "net"


def _remote_host(client: VoiceClient) -> str:
    """The worker address the client's SFU connection uses (its nominated pair)."""
    transport = client.peers[SFU].pc.getTransceivers()[0].sender.transport.transport
    return str(transport._connection._nominated[1].remote_candidate.host)


async def _scenario(url: str) -> dict[str, Any]:
    """Runs on host A: a speaker and three listeners join; who is where, who hears."""
    from tests.test_sfu_cascade import speaker_and_listeners

    clients: list[VoiceClient] = []

    def make(url: str, **kw: Any) -> VoiceClient:
        client = VoiceClient(url, **kw)
        clients.append(client)
        return client

    try:
        alice, listeners = await speaker_and_listeners(make, url, 3, AUTH_SECRET)
        return {
            "speaker": _remote_host(alice),
            "listeners": [_remote_host(c) for c in listeners],
        }
    finally:
        for client in clients:
            await client.close()


async def _both_workers(url: str) -> None:
    import asyncio

    import httpx

    async with httpx.AsyncClient(timeout=2.0) as http:
        for _ in range(150):
            if (await http.get(url + "/healthz")).json().get("workers", 0) >= 2:
                return
            await asyncio.sleep(0.2)
    raise TimeoutError("the two hosts' workers did not both register")


async def test_a_room_spans_workers_on_two_hosts() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    hosts = TwoHosts()
    loops: list[NetnsLoop] = []
    servers: list[LabServer] = []
    try:
        hosts.build()
        loop_a, loop_b = NetnsLoop(hosts.ns_a).start(), NetnsLoop(hosts.ns_b).start()
        loops += [loop_a, loop_b]
        redis_url = hosts.start_redis(loop_a)
        for ns, host, loop in ((hosts.ns_a, HOST_A, loop_a), (hosts.ns_b, HOST_B, loop_b)):
            server = LabServer(
                None,
                WEB_PORT,
                turn=False,
                workers=1,
                rooms=[{"id": ROOM, "sfu_threshold": 2, "max_participants": 20}],
                ns=ns,
                host=host,
                extra={
                    "redis": {"url": redis_url},
                    "ice": {"stun_urls": []},
                    "sfu": {"max_listeners_per_worker": 1, "cascade_host": host},
                },
            )
            servers.append(server)
            server.start(loop)
        # Both workers registered in the shared store before anyone joins.
        await loop_a.call(_both_workers(servers[0].url), timeout=30)
        try:
            result = await loop_a.call(_scenario(servers[0].url), timeout=120)
            logs = servers[0].log_tail(400) + servers[1].log_tail(400)
        except BaseException:
            for server in servers:
                print(f"--- {server.ns}\n{server.log_tail(200)}")
            raise
    finally:
        for loop in loops:
            loop.stop()
        for server in servers:
            server.terminate()
        for server in servers:
            server.stop()
        hosts.teardown()
    speaker, listeners = result["speaker"], result["listeners"]
    assert speaker in (HOST_A, HOST_B)
    far = [host for host in listeners if host != speaker]
    # At least one listener's connection is on the other host's worker, and it heard the
    # speaker (every listener waited for 25 loud frames).
    assert far, result
    # The link between the hosts is SRTP (plain RTP only on loopback).
    assert "feeding edge" in logs and "SRTP" in logs, logs
