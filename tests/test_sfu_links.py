"""Who cannot reach the SFU is told to the rest of the room (`links` -> `sfuLinks`).

A real server with a real worker child and aiortc clients. A participant whose own SFU
connection cannot come up (its offer names a port nobody listens on, and it never applies
the answer) is listed as not connected on another participant's socket within a few
seconds, also to one who joins later; the entry goes when it connects after all, and when
it leaves.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import psutil

from tests.servers import TEST_SECRET, ServerProcess
from tests.test_sfu_cascade import _worker_of
from tests.voiceclient import SFU, VoiceClient
from yahaml_voice.core.config import load_config
from yahaml_voice.core.tokens import issue_token

ROOM = "net"
# The worker looks at its links once a second; this leaves room for a loaded CI machine.
REPORTED_WITHIN = 10.0


def _server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    server = server_factory(
        {
            "server": {"grace_period": "2s"},
            "rooms": [{"id": ROOM, "sfu_threshold": 2, "max_participants": 10}],
            "sfu": {"slots": 3, "ice_addresses": ["127.0.0.1"]},
        },
        workers=1,
    )
    server.wait_healthy(timeout=60, workers=1)
    return server


def _on_sfu(client: VoiceClient) -> bool:
    peer = client.peers.get(SFU)
    return client.mode == "sfu" and peer is not None and peer.pc.connectionState == "connected"


def not_connected(client: VoiceClient) -> dict[str, str]:
    """The union of the latest `sfuLinks` per source the client received (as a page keeps it)."""
    latest: dict[str, dict[str, str]] = {}
    for event in client.events:
        if event.get("type") == "roomModeChanged":
            latest.clear()
        elif event.get("type") == "sfuLinks" and event["data"].get("roomId") == ROOM:
            latest[event["data"]["source"]] = event["data"]["notConnected"]
    union: dict[str, str] = {}
    for down in latest.values():
        union.update(down)
    return union


async def _until(condition: Callable[[], Any], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def blocked_offer(client: VoiceClient, slots: int = 3) -> None:
    """An SFU offer whose candidates point at the discard port, answer never applied: the
    worker's connection to it checks and fails, like a browser whose path is blocked."""
    peer = client._new_pc(SFU)
    for _ in range(slots):
        peer.pc.addTransceiver("audio", direction="recvonly")
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    sdp = re.sub(
        r"(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1) \d+", r"\1 9", peer.pc.localDescription.sdp
    )
    await client.signal("offer", {"type": "offer", "sdp": sdp}, to=SFU)


async def test_a_participant_without_an_sfu_path_is_reported_to_the_others(
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    server = _server(server_factory)
    watcher = client_factory(server.url)
    await watcher.login("W1WCH")
    await watcher.connect()
    await watcher.join(ROOM)
    # Media by hand for the blocked ones (auto_media would connect them properly).
    blocked, third = (
        client_factory(server.url, auto_media=False),
        client_factory(server.url, auto_media=False),
    )
    for client, call in ((blocked, "B1BLK"), (third, "T1THR")):
        await client.login(call)
        await client.connect()
        await client.join(ROOM)
    assert blocked.participant_id and third.participant_id and watcher.participant_id
    await _until(lambda: _on_sfu(watcher), 30, "the watcher on the SFU")

    started = time.monotonic()
    await asyncio.gather(blocked_offer(blocked), blocked_offer(third))
    both = {blocked.participant_id, third.participant_id}
    await _until(
        lambda: set(not_connected(watcher)) == both, REPORTED_WITHIN, "B1BLK and T1THR reported"
    )
    print(f"\nreported after {time.monotonic() - started:.2f}s: {not_connected(watcher)}")
    assert set(not_connected(watcher).values()) <= {"new", "connecting", "failed"}
    # Someone who joins later hears it too (the worker repeats its list for a newcomer).
    late = client_factory(server.url)
    await late.login("L1LTE")
    await late.connect()
    await late.join(ROOM)
    await _until(lambda: set(not_connected(late)) == both, REPORTED_WITHIN, "L1LTE told")

    # B1BLK connects after all, T1THR leaves: both entries go.
    old = blocked.peers.pop(SFU)
    await old.pc.close()
    blocked.auto_media = True
    await blocked.connect_sfu()
    await third.leave()
    await _until(
        lambda: not not_connected(watcher) and not not_connected(late),
        REPORTED_WITHIN,
        "both cleared",
    )
    # The blocked participant's own socket got the same frames (it is a room member too).
    assert any(e.get("type") == "sfuLinks" for e in blocked.events)


async def test_an_edge_worker_reports_its_own_peers(
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    """A room across two workers (cascade): the blocked listener is on the edge, the
    watcher on the origin; the edge's report reaches the watcher all the same, and is
    dropped when the edge dies."""
    server = server_factory(
        {
            "server": {"grace_period": "2s"},
            "rooms": [{"id": ROOM, "sfu_threshold": 2, "max_participants": 10}],
            "sfu": {"slots": 3, "ice_addresses": ["127.0.0.1"], "max_listeners_per_worker": 2},
        },
        workers=2,
    )
    server.wait_healthy(timeout=60, workers=2)
    config = load_config(environ={}, overrides={"auth.secret": TEST_SECRET})
    watcher = client_factory(server.url)
    await watcher.login("W1WCH")
    await watcher.connect()
    await watcher.join(ROOM)
    listener = client_factory(server.url, publish=False)
    listener.use_token(issue_token(config, "K0SWL", role="listener")[0])
    await listener.connect()
    await listener.join(ROOM)
    await _until(lambda: _on_sfu(watcher) and _on_sfu(listener), 30, "both on the origin")
    # The origin is full (2): the next listener is placed on the other worker.
    blocked = client_factory(server.url, publish=False, auto_media=False)
    blocked.use_token(issue_token(config, "B1SWL", role="listener")[0])
    await blocked.connect()
    await blocked.join(ROOM)
    await blocked_offer(blocked)
    await _until(
        lambda: blocked.participant_id in not_connected(watcher), REPORTED_WITHIN, "B1SWL reported"
    )
    assert 'yahaml_voice_room_sfu_workers{room="net"} 2.0' in server.metrics()
    sources = {
        e["data"]["source"]
        for e in watcher.events
        if e.get("type") == "sfuLinks" and blocked.participant_id in e["data"]["notConnected"]
    }
    assert len(sources) == 1, sources
    # The edge dies: the server says its list is void (the watcher keeps its epoch).
    assert server.proc is not None
    workers = [
        p for p in psutil.Process(server.proc.pid).children(recursive=True) if "sfu" in p.cmdline()
    ]
    origin = _worker_of(watcher, workers)
    edge = next(p for p in workers if p.pid != origin.pid)
    epoch = watcher.epoch
    os.kill(edge.pid, signal.SIGKILL)
    await _until(lambda: not not_connected(watcher), REPORTED_WITHIN, "the edge's list dropped")
    assert watcher.epoch == epoch
