"""Several server processes and SFU workers sharing rooms through one real redis-server.

Every process here is real: `yahaml-voice serve` (two of them, `--workers 0`), `yahaml-voice
sfu` workers registering with one server or the other, aiortc peers from tests/voiceclient.py
and a redis-server on a free loopback port. Clients and workers gather ICE on 127.0.0.1
only.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.redis_fixture import RedisServer
from tests.servers import ROOT, TEST_SECRET, TEST_SFU_SECRET, ServerProcess
from tests.test_sfu_links import blocked_offer, not_connected
from tests.voiceclient import SFU, VoiceClient
from yahaml_voice.core.processes import kill_process, stop_process
from yahaml_voice.server.redis_store import RedisStore

pytestmark = [pytest.mark.redis, pytest.mark.timeout(240)]

PREFIX = "yv:"
SFU_CLI = [sys.executable, "-m", "yahaml_voice", "sfu"]
CONFIG: dict[str, Any] = {
    "server": {"grace_period": "3s"},
    "sfu": {"ice_addresses": ["127.0.0.1"]},
    "rooms": [
        {"id": "shack", "max_participants": 100},
        {"id": "net", "max_participants": 100, "sfu_threshold": 3},
    ],
}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def shared(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    """The test's own view of the shared state (same Redis, same prefix)."""
    store = RedisStore(redis_server.url, PREFIX)
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


def _env(redis_server: RedisServer) -> dict[str, str]:
    return {
        "YAHAML_VOICE_REDIS__URL": redis_server.url,
        "YAHAML_VOICE_AUTH__SECRET": TEST_SECRET,
    }


@pytest.fixture
def nodes(
    redis_server: RedisServer, server_factory: Callable[..., ServerProcess], loopback_ice: None
) -> Callable[[int], list[ServerProcess]]:
    """Start server processes on one Redis (set up first, so it is torn down last)."""

    def start(n: int = 2) -> list[ServerProcess]:
        return [
            server_factory(CONFIG, env=_env(redis_server), name=f"node{i}", workers=0)
            for i in range(n)
        ]

    return start


class WorkerProcess:
    """`yahaml-voice sfu --server ws://...` as a child in its own process group."""

    def __init__(
        self,
        workdir: Path,
        worker_id: str,
        server: ServerProcess,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.id = worker_id
        self.log_path = workdir / f"worker-{worker_id}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("YAHAML_VOICE_")}
        env.update(
            {
                # A worker holds only the workers' secret, never auth.secret.
                "YAHAML_VOICE_SFU__SECRET": TEST_SFU_SECRET,
                "YAHAML_VOICE_SFU__ICE_ADDRESSES": '["127.0.0.1"]',
                "PYTHONUNBUFFERED": "1",
                **(extra_env or {}),
            }
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*SFU_CLI, "--server", server.ws_url, "--id", worker_id],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        kill_process(self.proc, group=True)

    def stop(self) -> None:
        stop_process(self.proc, 10, group=True)

    def udp_sockets(self) -> int:
        return len(psutil.Process(self.proc.pid).net_connections(kind="udp"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[[str, ServerProcess], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(worker_id: str, server: ServerProcess) -> WorkerProcess:
        worker = WorkerProcess(tmp_path, worker_id, server)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


async def until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> float:
    """Poll `condition` (sync or async) until truthy; returns the seconds it took."""
    start = time.monotonic()
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.05)


def room_ids(server: ServerProcess, room: str) -> list[str]:
    """Participant ids of a room as that server process reports them (REST)."""
    token = httpx.post(server.url + "/api/sessions", json={"callsign": "N0CALL"}).json()["token"]
    detail = httpx.get(
        f"{server.url}/api/voice-rooms/{room}", headers={"Authorization": f"Bearer {token}"}
    ).json()
    return sorted(p["id"] for p in detail["participants"])


async def ready(client: VoiceClient, callsign: str, room: str | None = None) -> VoiceClient:
    await client.login(callsign)
    await client.connect()
    if room:
        await client.join(room)
    return client


def sfu_loud(client: VoiceClient) -> int:
    peer = client.peers.get(SFU)
    return peer.loud_frames() if peer else 0


# ---------------------------------------------------------------------------------------


async def test_mesh_across_two_servers(
    nodes: Callable[[int], list[ServerProcess]],
    client_factory: Callable[..., VoiceClient],
    shared: RedisStore,
) -> None:
    a, b = nodes(2)
    alice = await ready(client_factory(a.url, tone=440), "W1AW", "shack")
    bob = await ready(client_factory(b.url, tone=660), "G4ABC", "shack")
    assert alice.participant_id and bob.participant_id
    # Bob's offer went B -> Redis -> A; Alice's answer came back the other way.
    await alice.wait_audio(bob.participant_id, frames=25)
    await bob.wait_audio(alice.participant_id, frames=25)
    joined = await alice.wait_event("participantJoined")
    assert joined["data"]["participant"]["id"] == bob.participant_id
    expected = sorted([alice.participant_id, bob.participant_id])
    assert room_ids(a, "shack") == room_ids(b, "shack") == expected


async def test_sfu_placement_and_worker_failover(
    nodes: Callable[[int], list[ServerProcess]],
    worker_factory: Callable[[str, ServerProcess], WorkerProcess],
    client_factory: Callable[..., VoiceClient],
    shared: RedisStore,
) -> None:
    a, b = nodes(2)
    workers = {"w1": worker_factory("w1", a), "w2": worker_factory("w2", b)}
    a.wait_healthy(timeout=30, workers=2)
    b.wait_healthy(timeout=30, workers=2)

    speaker = await ready(client_factory(a.url, tone=440), "W1AW", "net")
    listeners = [
        await ready(client_factory(b.url, publish=False), "G4ABC", "net"),
        await ready(client_factory(a.url, publish=False), "DL1XYZ", "net"),
    ]
    # The third participant crossed sfu_threshold=3: the room is on exactly one worker.
    await until(lambda: all(c.mode == "sfu" for c in [speaker, *listeners]), what="sfu mode")
    state = await shared.room_state("net")
    assert state.mode == "sfu" and state.worker_id in workers
    placed, other = state.worker_id, next(w for w in workers if w != state.worker_id)
    for listener in listeners:
        await until(lambda c=listener: sfu_loud(c) >= 25, what="audio through the SFU")

    async def peers_on(worker_id: str) -> int:
        found = [w for w in await shared.workers() if w.id == worker_id]
        return int(found[0].load.get("peers", 0)) if found else -1

    await until(lambda: peers_on(placed), what="load report of the placed worker")
    assert await peers_on(other) == 0

    # Kill the worker that carries the room: it is re-placed on the other one.
    epoch = state.epoch
    killed_at = time.monotonic()
    workers[placed].kill()

    async def back(client: VoiceClient) -> float:
        await until(lambda: client.epoch > epoch and sfu_loud(client) >= 10, timeout=30)
        return time.monotonic() - killed_at

    gaps = await asyncio.gather(*(back(c) for c in listeners))
    state = await shared.room_state("net")
    assert state.worker_id == other and state.epoch > epoch
    print(f"worker failover: audio back after {max(gaps):.2f}s")
    assert max(gaps) < 5.0, f"audio came back after {max(gaps):.2f}s"


async def test_killed_server_clients_move_to_the_other(
    nodes: Callable[[int], list[ServerProcess]],
    client_factory: Callable[..., VoiceClient],
    shared: RedisStore,
) -> None:
    a, b = nodes(2)
    alice = await ready(client_factory(a.url, tone=440), "W1AW", "shack")
    bob = await ready(client_factory(b.url, tone=660), "G4ABC", "shack")
    # Dave's machine dies with server A: he never comes back and must be reaped.
    dave = await ready(client_factory(a.url, tone=880), "DL1XYZ", "shack")
    assert alice.participant_id and bob.participant_id and dave.participant_id
    await alice.wait_audio(bob.participant_id, frames=10)
    await bob.wait_audio(alice.participant_id, frames=10)
    everyone = sorted([alice.participant_id, bob.participant_id, dave.participant_id])
    assert room_ids(b, "shack") == everyone

    a.kill()
    await dave.close()
    await alice.wait_event("_closed")
    answer = await alice.reconnect(b.url)
    # Same seat, nobody doubled, and nobody told that Alice left or joined again.
    assert answer["participant"]["id"] == alice.participant_id
    assert room_ids(b, "shack") == everyone
    await bob.wait_audio(alice.participant_id, frames=25)
    await alice.wait_audio(bob.participant_id, frames=25)

    # Signaling for Alice now runs through B: a newcomer reaches her.
    carol = await ready(client_factory(b.url, tone=550), "K1ABC", "shack")
    assert carol.participant_id
    await alice.wait_audio(carol.participant_id, frames=25)
    await carol.wait_audio(alice.participant_id, frames=25)

    # Dave's sockets died with A's heartbeat; after the grace period he is gone.
    left = await bob.wait_event(
        "participantLeft",
        lambda e: e["data"]["participantId"] == dave.participant_id,
        timeout=30,
    )
    assert left
    assert room_ids(b, "shack") == sorted(
        [alice.participant_id, bob.participant_id, carol.participant_id]
    )
    lefts = [e["data"]["participantId"] for e in bob.events if e["type"] == "participantLeft"]
    joins = [e["data"]["participant"]["id"] for e in bob.events if e["type"] == "participantJoined"]
    assert lefts == [dave.participant_id]
    assert sorted(joins) == sorted([dave.participant_id, carol.participant_id])


async def test_redis_restart_is_survived(
    nodes: Callable[[int], list[ServerProcess]],
    worker_factory: Callable[[str, ServerProcess], WorkerProcess],
    client_factory: Callable[..., VoiceClient],
    redis_server: RedisServer,
    shared: RedisStore,
) -> None:
    a, b = nodes(2)
    worker_factory("w1", b)
    b.wait_healthy(timeout=30, workers=1)
    alice = await ready(client_factory(a.url, tone=440), "W1AW", "shack")
    bob = await ready(client_factory(b.url, tone=660), "G4ABC", "shack")
    assert alice.participant_id and bob.participant_id
    await alice.wait_audio(bob.participant_id, frames=10)
    expected = sorted([alice.participant_id, bob.participant_id])

    redis_server.restart()  # SIGKILL, back on the same port with nothing in it

    async def rebuilt() -> bool:
        try:
            ids = sorted(p.id for p in await shared.participants("shack"))
            return ids == expected and [w.id for w in await shared.workers()] == ["w1"]
        except Exception:
            return False

    await until(rebuilt, timeout=30, what="servers and worker to rebuild their state")
    assert room_ids(a, "shack") == room_ids(b, "shack") == expected
    # Nobody was disconnected, and a newcomer on A reaches Bob on B through the new Redis.
    assert not [e for e in alice.events + bob.events if e["type"] == "_closed"]
    carol = await ready(client_factory(a.url, tone=550), "K1ABC", "shack")
    assert carol.participant_id
    await carol.wait_audio(bob.participant_id, frames=25)
    await bob.wait_audio(carol.participant_id, frames=25)
    await alice.wait_audio(carol.participant_id, frames=25)


async def test_sfu_links_reach_a_participant_on_the_other_server(
    nodes: Callable[[int], list[ServerProcess]],
    worker_factory: Callable[[str, ServerProcess], WorkerProcess],
    client_factory: Callable[..., VoiceClient],
    shared: RedisStore,
) -> None:
    """The worker reports to server A that B1BLK's connection is not up; the watcher on
    server B hears it through Redis (the room's ordinary broadcast)."""
    a, b = nodes(2)
    worker_factory("w1", a)
    a.wait_healthy(timeout=30, workers=1)
    b.wait_healthy(timeout=30, workers=1)
    watcher = await ready(client_factory(b.url), "W1WCH", "net")
    await ready(client_factory(a.url, publish=False), "G4ABC", "net")
    blocked = await ready(client_factory(a.url, auto_media=False), "B1BLK", "net")
    await until(lambda: watcher.mode == "sfu", what="sfu mode")
    await blocked_offer(blocked)
    await until(lambda: blocked.participant_id in not_connected(watcher), what="B1BLK reported")
    await blocked.leave()
    await until(lambda: not not_connected(watcher), what="B1BLK cleared")
