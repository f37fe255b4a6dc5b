"""Draining an SFU worker (SIGTERM): its rooms move to another worker before it exits.

A real server, real `yahaml-voice sfu` worker processes and real aiortc clients; with the
embedded store and with two server processes on one Redis (the worker that drains talks
to one process, the clients and the other worker to the other).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import psutil
import pytest
import websockets

from tests.redis_fixture import RedisServer
from tests.servers import TEST_SECRET, TEST_SFU_SECRET, ServerProcess
from tests.test_multinode import WorkerProcess
from tests.test_sfu_cascade import _worker_of, speaker_and_listeners
from tests.voiceclient import SFU, VoiceClient
from yahaml_voice.core.config import load_config
from yahaml_voice.core.processes import kill_process, stop_process
from yahaml_voice.core.tokens import issue_worker_token
from yahaml_voice.server.placement import choose_worker
from yahaml_voice.server.store import WorkerRecord
from yahaml_voice.sfu.worker import Worker, _drain

pytestmark = pytest.mark.timeout(90)

CONFIG: dict[str, Any] = {
    "server": {"grace_period": "5s"},
    "rooms": [{"id": "net", "sfu_threshold": 2, "max_participants": 10}],
    "sfu": {"ice_addresses": ["127.0.0.1"], "slot_hold": "0.5s"},
}


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[[str, ServerProcess], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(worker_id: str, server: ServerProcess) -> WorkerProcess:
        started.append(
            WorkerProcess(tmp_path, worker_id, server, {"YAHAML_VOICE_SFU__DRAIN_TIMEOUT": "15s"})
        )
        return started[-1]

    try:
        yield start
    finally:
        for worker in started:
            if worker.proc.poll() is None:
                stop_process(worker.proc, 1, group=True)
                kill_process(worker.proc, group=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


async def until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def exited(worker: WorkerProcess, timeout: float) -> int:
    await until(lambda: worker.proc.poll() is not None, timeout, f"{worker.id} exits")
    code = worker.proc.returncode
    assert code is not None
    return code


def sfu_up(client: VoiceClient) -> bool:
    peer = client.peers.get(SFU)
    return client.mode == "sfu" and peer is not None and peer.pc.connectionState == "connected"


async def seat(client: VoiceClient, callsign: str) -> VoiceClient:
    await client.login(callsign)
    await client.connect()
    await client.join("net")
    return client


async def two_on_the_sfu(
    server: ServerProcess, client_factory: Callable[..., VoiceClient]
) -> tuple[VoiceClient, VoiceClient]:
    """Alice (440 Hz) and Bob (660 Hz) in `net` on a worker, each hearing the other."""
    alice = await seat(client_factory(server.url, tone=440), "W1AW")
    bob = await seat(client_factory(server.url, tone=660), "G4ABC")
    await until(lambda: sfu_up(alice) and sfu_up(bob), 30, "both on the SFU")
    await alice.wait_tone(660, frames=10)
    await bob.wait_tone(440, frames=10)
    return alice, bob


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> str:
    """The store of the servers; requested before server_factory, so a Redis outlives them."""
    if request.param == "redis":
        request.getfixturevalue("redis_server")
    return str(request.param)


async def test_sigterm_moves_the_room_to_the_other_worker_then_exits_0(
    store: str,
    request: pytest.FixtureRequest,
    server_factory: Callable[..., ServerProcess],
    worker_factory: Callable[[str, ServerProcess], WorkerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    if store == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        env = {"YAHAML_VOICE_REDIS__URL": redis.url, "YAHAML_VOICE_AUTH__SECRET": TEST_SECRET}
        one = server_factory(CONFIG, env=env, name="node0")
        two = server_factory(CONFIG, env=env, name="node1")
    else:
        one = two = server_factory(CONFIG)
    # w1 starts alone so the room lands on it; w2 joins before the drain.
    w1 = worker_factory("w1", one)
    one.wait_healthy(timeout=30, workers=1)
    alice, bob = await two_on_the_sfu(two, client_factory)
    assert w1.udp_sockets() > 0
    w2 = worker_factory("w2", two)
    two.wait_healthy(timeout=30, workers=2)
    seats = (alice.participant_id, bob.participant_id)
    epoch = bob.epoch

    gone: list[float] = []

    async def watch_exit() -> None:
        await asyncio.to_thread(w1.proc.wait)
        gone.append(time.monotonic())

    os.kill(w1.proc.pid, signal.SIGTERM)
    sigterm = time.monotonic()
    watcher = asyncio.create_task(watch_exit())
    await until(lambda: alice.epoch > epoch and bob.epoch > epoch, 5, "a new epoch")
    moved_while_running = w1.proc.poll() is None
    epoch_ms = (time.monotonic() - sigterm) * 1000
    await until(lambda: sfu_up(alice) and sfu_up(bob), 10, "both on the SFU again")
    since = time.monotonic()
    await until(
        lambda: alice.heard_tone(660, since) >= 1 and bob.heard_tone(440, since) >= 1,
        10,
        "audio through w2",
    )
    moved_ms = (time.monotonic() - sigterm) * 1000
    assert await exited(w1, 10) == 0
    await watcher
    exit_ms = (gone[0] - sigterm) * 1000
    await bob.wait_tone(440, frames=25, timeout=5)
    await alice.wait_tone(660, frames=25, timeout=5)
    print(
        f"[{store}] SIGTERM -> new epoch at the clients {epoch_ms:.0f} ms (w1 running: "
        f"{moved_while_running}), audio through w2 {moved_ms:.0f} ms, w1 exited {exit_ms:.0f} ms"
    )

    assert w2.proc.poll() is None and w2.udp_sockets() > 0, "the room is on w2"
    assert "drained in" in w1.log(), w1.log()[-2000:]
    assert moved_while_running or "drained in" in w1.log()
    # Seats kept: the same participant ids, nobody left.
    assert (alice.participant_id, bob.participant_id) == seats
    assert not [e for e in alice.events if e.get("type") == "participantLeft"]
    assert moved_ms < 5000, f"audio through w2 after {moved_ms:.0f} ms"


async def test_a_single_worker_exits_at_once_and_the_room_goes_to_mesh(
    server_factory: Callable[..., ServerProcess],
    worker_factory: Callable[[str, ServerProcess], WorkerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    server = server_factory(CONFIG)
    w1 = worker_factory("w1", server)
    server.wait_healthy(timeout=30, workers=1)
    alice, bob = await two_on_the_sfu(server, client_factory)
    os.kill(w1.proc.pid, signal.SIGTERM)
    sigterm = time.monotonic()
    assert await exited(w1, 5) == 0
    took = time.monotonic() - sigterm
    print(f"single worker exited {took * 1000:.0f} ms after SIGTERM")
    assert took < 3.0
    # Nowhere to move to: the room went to mesh as when its last worker dies.
    await until(lambda: alice.mode == "mesh" and bob.mode == "mesh", 5, "back to mesh")


async def test_a_second_sigterm_exits_at_once(
    server_factory: Callable[..., ServerProcess],
    worker_factory: Callable[[str, ServerProcess], WorkerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    server = server_factory(CONFIG)
    w1 = worker_factory("w1", server)
    server.wait_healthy(timeout=30, workers=1)
    await two_on_the_sfu(server, client_factory)
    assert server.proc is not None
    # A stopped server never answers the drain: the worker would wait sfu.drain_timeout.
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        os.kill(w1.proc.pid, signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert w1.proc.poll() is None, "draining: still running"
        os.kill(w1.proc.pid, signal.SIGTERM)
        second = time.monotonic()
        assert await exited(w1, 5) == 0
        took = time.monotonic() - second
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    print(f"second SIGTERM: exited after {took * 1000:.0f} ms")
    assert took < 3.0
    assert "second SIGTERM" in w1.log()


class ControlSocket:
    """The control side of a worker on /sfu/ws (hello, load, draining): what the server
    makes of a `draining` frame, without waiting for a real worker to exit."""

    def __init__(self, server: ServerProcess, worker_id: str) -> None:
        config = load_config(environ={}, overrides={"sfu.secret": TEST_SFU_SECRET})
        self.url = server.ws_url + "/sfu/ws"
        self.token = issue_worker_token(config)
        self.worker_id = worker_id
        self.ws: Any = None

    async def send(self, kind: str, data: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"type": kind, "data": data}))

    async def open(self) -> ControlSocket:
        headers = {"Authorization": f"Bearer {self.token}"}
        self.ws = await websockets.connect(self.url, additional_headers=headers)
        await self.send("hello", {"workerId": self.worker_id, "slots": 3})
        await self.send("load", {"rooms": 0, "peers": 0, "streams": 0, "cpu": 0.0})
        return self


@pytest.fixture
async def control() -> AsyncIterator[Callable[[ServerProcess, str], ControlSocket]]:
    made: list[ControlSocket] = []

    def make(server: ServerProcess, worker_id: str) -> ControlSocket:
        made.append(ControlSocket(server, worker_id))
        return made[-1]

    yield make
    for socket in made:
        if socket.ws is not None:
            await socket.ws.close()


async def test_metrics_show_a_draining_worker_and_no_room_is_placed_on_it(
    server_factory: Callable[..., ServerProcess],
    control: Callable[[ServerProcess, str], ControlSocket],
    client_factory: Callable[..., VoiceClient],
) -> None:
    server = server_factory(CONFIG)
    worker = await control(server, "w-drain").open()
    server.wait_healthy(timeout=10, workers=1)
    await worker.send("draining", {"timeout": 20})
    await until(lambda: "yahaml_voice_sfu_workers_draining 1.0" in server.metrics(), 5, "metric")
    assert 'yahaml_voice_sfu_worker_draining{worker="w-drain"} 1.0' in server.metrics()
    # Bad input is a 4xx-like error frame, never a crash: a negative timeout.
    await worker.send("draining", {"timeout": -1})
    frame = json.loads(await asyncio.wait_for(worker.ws.recv(), 5))
    assert frame["type"] == "error" and frame["data"]["code"] == "bad_frame"
    # Two participants: the room is due on a worker, but the only one drains.
    alice = await seat(client_factory(server.url, auto_media=False), "W1AW")
    await seat(client_factory(server.url, auto_media=False), "G4ABC")
    await asyncio.sleep(0.5)
    assert alice.mode == "mesh"
    placed = re.search(
        r'yahaml_voice_placements_total\{result="no_worker"\} (\S+)', server.metrics()
    )
    assert placed and float(placed.group(1)) >= 1


async def test_draining_an_edge_moves_only_its_listeners(
    server_factory: Callable[..., ServerProcess],
    worker_factory: Callable[[str, ServerProcess], WorkerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    config = {**CONFIG, "sfu": {**CONFIG["sfu"], "max_listeners_per_worker": 2}}
    server = server_factory(config)
    workers = [worker_factory(name, server) for name in ("w1", "w2")]
    server.wait_healthy(timeout=30, workers=2)
    alice, listeners = await speaker_and_listeners(client_factory, server.url, 3, TEST_SECRET)
    procs = [psutil.Process(w.proc.pid) for w in workers]
    origin = _worker_of(alice, procs)
    edge = next(w for w in workers if w.proc.pid != origin.pid)
    on_edge = [c for c in listeners if _worker_of(c, procs).pid == edge.proc.pid]
    on_origin = [c for c in listeners if c not in on_edge]
    assert on_edge and on_origin
    epochs = {c.callsign: c.epoch for c in listeners}

    os.kill(edge.proc.pid, signal.SIGTERM)
    sigterm = time.monotonic()
    for client in on_edge:
        await until(lambda c=client: c.epoch > epochs[c.callsign], 5, "a new epoch")
        await client.wait_audio(SFU, frames=5, timeout=max(0.1, 5 - (time.monotonic() - sigterm)))
    moved_ms = (time.monotonic() - sigterm) * 1000
    assert await exited(edge, 10) == 0
    # The origin's listeners were told nothing and kept hearing.
    for client in on_origin:
        assert client.epoch == epochs[client.callsign]
        await client.wait_audio(SFU, frames=5, timeout=2)
    print(f"edge drained: its listeners heard the origin again {moved_ms:.0f} ms after SIGTERM")


def test_placement_skips_draining_workers() -> None:
    idle = WorkerRecord(id="a", slots=3, last_seen=0.0, draining=True)
    busy = WorkerRecord(id="b", slots=3, last_seen=0.0, load={"streams": 40})
    assert choose_worker([idle, busy]) is busy
    assert choose_worker([idle]) is None


async def test_a_drain_gives_up_after_the_timeout_and_stops_at_once_when_disconnected() -> None:
    """The worker's side alone: rooms that never move (the server does not answer) hold
    the drain for sfu.drain_timeout, not longer; without a control connection, not at all."""
    sent: list[Any] = []
    worker = Worker(
        load_config(environ={}, overrides={"sfu.drain_timeout": "0.3s"}), "w", sent.append
    )
    worker.rooms["net"] = cast(Any, object())  # a room nobody moves
    drain, connected, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    drain.set()
    connected.set()
    started = time.monotonic()
    await _drain(worker, drain, connected, stop)
    took = time.monotonic() - started
    assert stop.is_set() and 0.3 <= took < 1.0, took
    assert [frame.type for frame in sent] == ["draining"] and sent[0].data.timeout == 0.3
    connected.clear()
    stop.clear()
    started = time.monotonic()
    await _drain(worker, drain, connected, stop)
    assert stop.is_set() and time.monotonic() - started < 0.1
