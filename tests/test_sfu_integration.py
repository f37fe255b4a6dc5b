"""The SFU end to end: a real server with real worker children and real aiortc clients.

Everything media runs on 127.0.0.1 (`sfu.ice_addresses` for the workers, the
`loopback_ice` fixture for the clients in this process).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import psutil

from tests.servers import TEST_SECRET, ServerProcess
from tests.voiceclient import SFU, VoiceClient
from yahaml_voice.core.config import load_config
from yahaml_voice.core.tokens import issue_token

ROOM = "net"


def sfu_server(
    server_factory: Callable[..., ServerProcess], threshold: int, workers: int
) -> ServerProcess:
    server = server_factory(
        {
            "server": {"grace_period": "2s"},
            "rooms": [{"id": ROOM, "sfu_threshold": threshold, "max_participants": 20}],
            "sfu": {"slots": 3, "slot_hold": "0.5s", "ice_addresses": ["127.0.0.1"]},
        },
        workers=workers,
    )
    server.wait_healthy(timeout=60, workers=workers)
    return server


async def until(condition: Callable[[], Any], timeout: float, what: str) -> float:
    """Seconds until `condition()` is true; fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def sfu_connected(client: VoiceClient) -> bool:
    peer = client.peers.get(SFU)
    return client.mode == "sfu" and peer is not None and peer.pc.connectionState == "connected"


async def enter(client: VoiceClient, callsign: str, muted: bool = True) -> None:
    assert client.track is not None
    client.track.muted = muted
    await client.login(callsign)
    await client.connect()
    await client.join(ROOM)


async def test_room_switches_to_sfu_everyone_hears_and_slots_follow_the_speaker(
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    server = sfu_server(server_factory, threshold=4, workers=2)
    clients = [client_factory(server.url, tone=300 + 40 * i) for i in range(8)]
    for i, client in enumerate(clients):
        await enter(client, f"K{i}TST")
    await until(lambda: all(sfu_connected(c) for c in clients), 40, "all 8 on the SFU")
    # Mesh connections close once the SFU carries audio (or after 3 s of silence).
    await until(
        lambda: all(not [p for p in c.peers if p != SFU] for c in clients), 10, "mesh closed"
    )

    speaker, others = clients[0], clients[1:]
    assert speaker.track is not None
    speaker.track.muted = False
    for client in others:
        await client.wait_audio(SFU, frames=25, timeout=20)
    await until(
        lambda: all(speaker.participant_id in c.slots.values() for c in clients),
        5,
        "everyone sees the speaker in a slot",
    )
    assert speaker.heard_loud(SFU) == 0  # the SFU never returns a speaker's own voice

    # The speaker changes: the mapping follows within 1 s (the issue's bound).
    second = clients[1]
    assert second.track is not None
    speaker.track.muted = True
    second.track.muted = False
    await until(
        lambda: all(second.participant_id in c.slots.values() for c in clients),
        1.0,
        "the new speaker's slot reached every client",
    )
    for client in [speaker, *clients[2:]]:
        await client.wait_audio(SFU, frames=10, timeout=10)


async def test_a_listener_cannot_publish(
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    server = sfu_server(server_factory, threshold=2, workers=1)
    alice = client_factory(server.url, tone=440)
    await enter(alice, "W1AW")
    config = load_config(environ={}, overrides={"auth.secret": TEST_SECRET})
    token, _ = issue_token(config, "G4ABC", role="listener")
    sneaky = client_factory(server.url, tone=700)
    assert sneaky.track is not None
    sneaky.track.muted = False
    sneaky.use_token(token)
    await sneaky.connect()
    answer = await sneaky.join(ROOM)
    assert answer["participant"]["canPublish"] is False
    await until(lambda: sfu_connected(alice) and sfu_connected(sneaky), 30, "both on the SFU")
    # A doctored client offers its microphone anyway: the worker answers it inactive.
    assert sneaky.join_answer is not None
    sneaky.join_answer["participant"]["canPublish"] = True
    await sneaky.connect_sfu()
    await until(lambda: sfu_connected(sneaky), 15, "doctored connection up")
    transceivers = sneaky.peers[SFU].pc.getTransceivers()
    assert transceivers[-1].currentDirection == "inactive"
    await asyncio.sleep(2.0)
    assert alice.heard_loud(SFU) == 0
    assert sneaky.participant_id not in alice.slots.values()
    # Alice can still be heard by the listener.
    assert alice.track is not None
    alice.track.muted = False
    await sneaky.wait_audio(SFU, frames=25, timeout=20)


def worker_with_most_udp(server: ServerProcess) -> psutil.Process:
    assert server.proc is not None
    workers = [
        p for p in psutil.Process(server.proc.pid).children(recursive=True) if "sfu" in p.cmdline()
    ]
    assert workers, "no worker children"
    return max(workers, key=lambda p: len(p.net_connections(kind="udp")))


async def test_a_killed_worker_is_replaced_and_audio_resumes(
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    server = sfu_server(server_factory, threshold=2, workers=2)
    alice = client_factory(server.url, tone=440)
    bob = client_factory(server.url, tone=660)
    await enter(alice, "W1AW", muted=False)
    await enter(bob, "G4ABC")
    await until(lambda: sfu_connected(alice) and sfu_connected(bob), 30, "both on the SFU")
    await bob.wait_audio(SFU, frames=25, timeout=20)
    epoch = bob.epoch
    host = worker_with_most_udp(server)
    os.kill(host.pid, signal.SIGKILL)
    killed = time.monotonic()
    await until(lambda: bob.epoch > epoch, 5, "a new epoch after the worker died")
    await until(lambda: bob.peers.get(SFU) is not None, 5, "bob renegotiates")
    await bob.wait_audio(SFU, frames=5, timeout=max(0.1, 5 - (time.monotonic() - killed)))
    resumed = time.monotonic() - killed
    print(f"audio resumed {resumed:.2f}s after the worker was killed")
    assert resumed < 5.0, f"audio resumed after {resumed:.1f}s"
