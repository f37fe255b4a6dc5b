"""A restart of the signaling server (an upgrade) on one host with Redis: seats and SFU rooms
survive it.

Real processes: a redis-server, `yahaml-voice serve --workers 0`, one `yahaml-voice sfu`
worker and two aiortc clients (tests/voiceclient.py) talking in an SFU room. The server gets
SIGTERM and a new process starts on the same port, as `systemctl restart` does on an
upgrade. Media flows client <-> worker, which never stopped, so the room must stay where it
is: no roomModeChanged, no participantLeft, the same epoch; the clients reconnect their
sockets and the worker its control connection to the new process. The longest silence a
listener hears across the restart is printed (no timed assertion: the machine is shared).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.redis_fixture import RedisServer
from tests.servers import ServerProcess
from tests.test_multinode import (
    WorkerProcess,
    _env,
    ready,
    redis_server,
    room_ids,
    shared,
    until,
    worker_factory,
)
from tests.voiceclient import SFU, VoiceClient
from yahaml_voice.server.redis_store import RedisStore

__all__ = ["redis_server", "shared", "worker_factory"]  # fixtures, used by name

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

CONFIG: dict[str, Any] = {
    # The seats' grace period, and how long a worker of a stopped process stays registered.
    "server": {"grace_period": "8s"},
    "sfu": {"ice_addresses": ["127.0.0.1"]},
    "rooms": [{"id": "net", "max_participants": 10, "sfu_threshold": 2}],
}


class Reconnector:
    """What a client app does: reopen the socket (and rejoin) whenever it closes, retrying
    every 0.1 s; counts the sockets it opened and when."""

    def __init__(self, client: VoiceClient) -> None:
        self.client = client
        self.opened: list[float] = []
        self.refused = 0
        self._seen = len(client.events)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.client.wait_event("_closed", since=self._seen, timeout=3600)
            self._seen = len(self.client.events)
            while True:
                try:
                    await self.client.reconnect(timeout=3.0)
                except Exception:  # refused, reset, 503: what a real client retries
                    self.refused += 1
                    self._seen = len(self.client.events)
                    await asyncio.sleep(0.1)
                    continue
                self.opened.append(time.monotonic())
                break

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class GapMeter:
    """The longest time without a loud frame of `tone` at `client` (sampled every 10 ms)."""

    def __init__(self, client: VoiceClient, tone: float) -> None:
        self.client, self.tone = client, tone
        self.last = time.monotonic()
        self.longest = 0.0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        count = self.client.heard_tone(self.tone)
        while True:
            await asyncio.sleep(0.01)
            now, heard = time.monotonic(), self.client.heard_tone(self.tone)
            if heard > count:
                self.longest = max(self.longest, now - self.last)
                self.last, count = now, heard

    async def stop(self) -> float:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return max(self.longest, time.monotonic() - self.last)


def _after(client: VoiceClient, since: float, type_: str) -> list[dict[str, Any]]:
    return [
        e
        for e, at in zip(client.events, client.event_times, strict=False)
        if at >= since and e.get("type") == type_
    ]


async def _talking(
    redis_server: RedisServer,
    server_factory: Callable[..., ServerProcess],
    worker_factory: Callable[[str, ServerProcess], WorkerProcess],
    client_factory: Callable[..., VoiceClient],
) -> tuple[ServerProcess, WorkerProcess, VoiceClient, VoiceClient]:
    server = server_factory(CONFIG, env=_env(redis_server), name="node", workers=0)
    worker = worker_factory("w1", server)
    server.wait_healthy(timeout=30, workers=1)
    alice = await ready(client_factory(server.url, tone=440), "W1AW", "net")
    bob = await ready(client_factory(server.url, tone=660), "G4ABC", "net")
    await until(lambda: SFU in alice.peers and SFU in bob.peers, what="both on the SFU")
    await bob.wait_tone(440, frames=25)
    await alice.wait_tone(660, frames=25)
    return server, worker, alice, bob


def _restart(server: ServerProcess) -> tuple[float, float]:
    """SIGTERM, wait for the exit, start again on the same port: (stopped, healthy) seconds."""
    started = time.monotonic()
    server.stop()
    stopped = time.monotonic()
    server.start(timeout=30)
    return stopped - started, time.monotonic() - stopped


async def test_a_server_restart_keeps_seats_and_the_sfu_room(
    redis_server: RedisServer,
    server_factory: Callable[..., ServerProcess],
    worker_factory: Callable[[str, ServerProcess], WorkerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
    shared: RedisStore,
) -> None:
    server, worker, alice, bob = await _talking(
        redis_server, server_factory, worker_factory, client_factory
    )
    ids = sorted([alice.participant_id or "", bob.participant_id or ""])
    before = await shared.room_state("net")
    assert (before.mode, before.worker_id) == ("sfu", "w1")
    reconnectors = [Reconnector(alice), Reconnector(bob)]
    meters = [GapMeter(bob, 440), GapMeter(alice, 660)]
    t0 = time.monotonic()
    stopping, starting = await asyncio.to_thread(_restart, server)
    await until(lambda: all(r.opened for r in reconnectors), timeout=20, what="reconnected")
    reconnected = max(r.opened[0] for r in reconnectors) - t0
    # The worker's control connection comes back to the new process too.
    await until(
        lambda: worker.log_path.read_text().count("connected to") >= 2,
        timeout=20,
        what="the worker reconnected",
    )
    worker_back = time.monotonic() - t0
    # Audio after the restart, then the silence it caused (listener side, both ways).
    await bob.wait_tone(440, frames=50)
    await alice.wait_tone(660, frames=50)
    gaps = [await m.stop() for m in meters]
    for r in reconnectors:
        await r.stop()
    mode_changes = _after(alice, t0, "roomModeChanged") + _after(bob, t0, "roomModeChanged")
    print(
        f"\nserver stop {stopping:.2f} s, new server healthy {starting:.2f} s later, clients "
        f"reconnected {reconnected:.2f} s, the worker {worker_back:.2f} s after SIGTERM "
        f"(refused attempts "
        f"{[r.refused for r in reconnectors]}, sockets opened {[len(r.opened) for r in reconnectors]}); "
        f"roomModeChanged: {[e['data'] for e in mode_changes]}; longest audio gap "
        f"{max(gaps) * 1000:.0f} ms (per listener {[round(g * 1000) for g in gaps]})"
    )
    # Seats kept: same participants, nobody left.
    assert room_ids(server, "net") == ids
    assert not _after(alice, t0, "participantLeft") and not _after(bob, t0, "participantLeft")
    # The room never moved: same worker, same epoch, nobody told to offer again.
    after = await shared.room_state("net")
    assert (after.mode, after.worker_id, after.epoch) == ("sfu", "w1", before.epoch)
    assert not mode_changes
    assert (alice.epoch, bob.epoch) == (before.epoch, before.epoch)
    # The stopping process took no new sockets: each client opened exactly one, on the new one.
    assert [len(r.opened) for r in reconnectors] == [1, 1]


async def test_a_worker_dead_across_the_restart_is_replaced_by_the_liveness_check(
    redis_server: RedisServer,
    server_factory: Callable[..., ServerProcess],
    worker_factory: Callable[[str, ServerProcess], WorkerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
    shared: RedisStore,
) -> None:
    server, worker, alice, bob = await _talking(
        redis_server, server_factory, worker_factory, client_factory
    )
    reconnectors = [Reconnector(alice), Reconnector(bob)]
    t0 = time.monotonic()
    await asyncio.to_thread(server.stop)
    worker.kill()  # dies while no server process runs: nobody saw its socket close
    await asyncio.to_thread(server.start, 30)
    # Its registration expires (grace period) and the worker check re-places the room:
    # no worker left, so back to mesh (as when the last worker dies, tests/test_sfu_drain.py).
    await until(
        lambda: any(e["data"]["mode"] == "mesh" for e in _after(alice, t0, "roomModeChanged")),
        timeout=30,
        what="the room re-placed off the dead worker",
    )
    state = await shared.room_state("net")
    assert (state.mode, state.worker_id) == ("mesh", None)
    await until(lambda: alice.mode == "mesh" and bob.mode == "mesh", what="both told")
    print(f"\nre-placed off the dead worker {time.monotonic() - t0:.2f} s after SIGTERM")
    for r in reconnectors:
        await r.stop()
    assert not _after(alice, t0, "participantLeft") and not _after(bob, t0, "participantLeft")


async def test_embedded_workers_die_with_the_server_and_their_rooms_move_at_once(
    redis_server: RedisServer,
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
    shared: RedisStore,
) -> None:
    """`serve --workers 1`: the worker is the server's child and stops with it, so its
    rooms are not held for it; the new process's own worker takes the room."""
    server = server_factory(CONFIG, env=_env(redis_server), name="node", workers=1)
    server.wait_healthy(timeout=30, workers=1)
    alice = await ready(client_factory(server.url, tone=440), "W1AW", "net")
    bob = await ready(client_factory(server.url, tone=660), "G4ABC", "net")
    await bob.wait_tone(440, frames=25)
    old = await shared.room_state("net")
    reconnectors = [Reconnector(alice), Reconnector(bob)]
    await asyncio.to_thread(server.stop)
    # Re-placed as the worker died, before the process exited (no worker left: mesh).
    assert (await shared.room_state("net")).mode == "mesh"
    await asyncio.to_thread(server.start, 30)
    await until(
        lambda: SFU in bob.peers and bob.epoch > old.epoch, timeout=30, what="on the new worker"
    )
    new = await shared.room_state("net")
    assert new.mode == "sfu" and new.worker_id != old.worker_id
    await bob.wait_tone(440, frames=25)
    await alice.wait_tone(660, frames=25)
    for r in reconnectors:
        await r.stop()
