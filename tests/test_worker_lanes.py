"""Worker frames are handled off the /sfu/ws read loop: per room in order, rooms independent.

Unit tests drive `Lanes` with real handlers; the end-to-end test sends a burst of
`slots` frames for one room (each a broadcast through Redis) followed by signals for
another room, from a fake worker to a real server process: the other room's signals must
not wait for the burst (as they did when every frame was handled inline, in arrival order).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.redis_fixture import RedisServer
from tests.servers import ServerProcess
from tests.test_worker_identity import FakeWorker, room_mode, until, workers_listed
from tests.voiceclient import SFU, VoiceClient
from yahaml_voice.server.worker_lanes import Lanes

# ---------------------------------------------------------------------------- Lanes alone


async def test_lanes_keep_order_per_key_and_do_not_wait_for_each_other() -> None:
    release = asyncio.Event()
    handled: list[tuple[str | None, int]] = []

    async def handle(item: tuple[str | None, int]) -> None:
        if item[0] == "slow":
            await release.wait()
        handled.append(item)

    lanes: Lanes[tuple[str | None, int]] = Lanes("test", handle)
    for i in range(5):
        assert lanes.submit("slow", ("slow", i))
        assert lanes.submit("fast", ("fast", i))
        assert lanes.submit(None, (None, i))
    await until(lambda: len(handled) == 10, timeout=2)
    # The slow room holds nothing up but itself.
    assert [i for k, i in handled if k == "fast"] == list(range(5))
    assert [i for k, i in handled if k is None] == list(range(5))
    release.set()
    await until(lambda: len(handled) == 15, timeout=2)
    assert [i for k, i in handled if k == "slow"] == list(range(5))
    # Lanes that ran dry are gone (no idle task per room).
    await asyncio.sleep(0)
    assert len(lanes) == 0 and not lanes._tasks
    await lanes.stop()


async def test_a_full_lane_drops_counts_and_reports_each_episode_once() -> None:
    release = asyncio.Event()
    handled: list[int] = []
    drops: list[tuple[str | None, bool]] = []

    async def handle(item: int) -> None:
        await release.wait()
        handled.append(item)

    lanes: Lanes[int] = Lanes("test", handle, lambda k, first: drops.append((k, first)), limit=3)
    accepted = [lanes.submit("r", i) for i in range(6)]
    await asyncio.sleep(0)  # the lane's task takes item 0: room for one more
    accepted.append(lanes.submit("r", 6))
    accepted.append(lanes.submit("r", 7))
    assert accepted == [True, True, True, False, False, False, True, False]
    assert drops == [("r", True), ("r", False), ("r", False), ("r", False)]
    assert lanes.dropped == 4
    # Another room is not affected by this one's backlog.
    assert lanes.submit("other", 100)
    release.set()
    await until(lambda: len(handled) == 5, timeout=2)
    assert [i for i in handled if i < 100] == [0, 1, 2, 6]
    # Caught up: the next overflow is a new episode, reported again.
    release.clear()
    for i in range(5):
        lanes.submit("r", i)
    assert drops[4:] == [("r", True), ("r", False)]
    await lanes.stop()


async def test_the_number_of_lanes_is_bounded() -> None:
    never = asyncio.Event()

    async def handle(item: int) -> None:
        await never.wait()

    lanes: Lanes[int] = Lanes("test", handle, max_lanes=2)
    assert lanes.submit("a", 1) and lanes.submit("b", 1)
    assert not lanes.submit("c", 1)
    assert lanes.submit("a", 2)  # existing lanes still take frames
    await lanes.stop()


async def test_stop_cancels_and_awaits_running_handlers() -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def handle(item: int) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            finished.set()

    lanes: Lanes[int] = Lanes("test", handle)
    lanes.submit("r", 1)
    lanes.submit("r", 2)
    await asyncio.wait_for(started.wait(), 2)
    await lanes.stop()
    assert finished.is_set()
    assert len(lanes) == 0 and not lanes._tasks


async def test_a_failing_handler_does_not_end_its_lane() -> None:
    handled: list[int] = []

    async def handle(item: int) -> None:
        if item == 1:
            raise RuntimeError("a bug in one frame's handling")
        handled.append(item)

    lanes: Lanes[int] = Lanes("test", handle)
    for i in range(3):
        lanes.submit("r", i)
    await until(lambda: handled == [0, 2], timeout=2)
    await lanes.stop()


# ------------------------------------------------------------- a real server and worker

BURST = 800  # below LANE_LIMIT: nothing is dropped
SIGNALS = 5


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def fake_workers() -> AsyncIterator[Callable[..., FakeWorker]]:
    made: list[FakeWorker] = []

    def make(server: ServerProcess, worker_id: str) -> FakeWorker:
        made.append(FakeWorker(server, worker_id))
        return made[-1]

    try:
        yield make
    finally:
        for worker in made:
            await worker.close()


@pytest.mark.redis
async def test_a_busy_room_does_not_delay_another_rooms_signals(
    redis_server: RedisServer,
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    fake_workers: Callable[..., FakeWorker],
) -> None:
    rooms = [{"id": "busy", "sfu_threshold": 2}, {"id": "quiet", "sfu_threshold": 2}]
    server = server_factory({"rooms": rooms, "redis": {"url": redis_server.url}})
    worker = await fake_workers(server, "w-lanes").connect()
    await until(lambda: workers_listed(server) == 1)
    members: dict[str, list[VoiceClient]] = {"busy": [], "quiet": []}
    calls = iter(["W1AW", "G4ABC", "K1ABC", "N0CALL"])
    for room in members:
        for _ in range(2):
            client = client_factory(server.url, auto_media=False)
            await client.login(next(calls))
            await client.connect()
            await client.join(room)
            members[room].append(client)
    token = str(members["busy"][0].token)
    for room in members:
        await until(lambda room=room: room_mode(server, token, room) == "sfu")
    watcher, target = members["busy"][0], members["quiet"][0]

    def slots(client: VoiceClient) -> list[tuple[float, int]]:
        return [
            (at, int(e["data"]["speaking"][0]))
            for e, at in zip(client.events, client.event_times, strict=True)
            if e.get("type") == "speakerSlots" and e["data"].get("roomId") == "busy"
        ]

    def answers(client: VoiceClient) -> list[tuple[float, int]]:
        return [
            (at, int(e["data"]["message"]["data"]["sdp"].split("s=seq")[1].split("\r")[0]))
            for e, at in zip(client.events, client.event_times, strict=True)
            if e.get("type") == "signal" and e["data"]["message"]["from"] == SFU
        ]

    # A burst of broadcasts for one room, then signals for the other, in one stream.
    frames: list[dict[str, Any]] = [
        {
            "type": "slots",
            "data": {"roomId": "busy", "slots": [{"index": 0}], "speaking": [str(i)]},
        }
        for i in range(BURST)
    ]
    frames += [
        {
            "type": "signal",
            "data": {
                "roomId": "quiet",
                "to": target.participant_id,
                "type": "answer",
                # The sequence number rides in the session name (signal data is strict).
                "data": {"type": "answer", "sdp": f"v=0\r\ns=seq{i}\r\n"},
            },
        }
        for i in range(SIGNALS)
    ]
    for frame in frames:
        await worker.ws.send(json.dumps(frame))
    await until(lambda: len(slots(watcher)) == BURST and len(answers(target)) == SIGNALS, 60)

    # Each room's frames arrived in the order the worker sent them, none lost.
    assert [seq for _, seq in slots(watcher)] == list(range(BURST))
    assert [seq for _, seq in answers(target)] == list(range(SIGNALS))
    # The quiet room's signals went out while the busy room's burst was still being
    # handled; inline, they waited for all of it.
    last_answer = answers(target)[-1][0]
    before = sum(1 for at, _ in slots(watcher) if at < last_answer)
    assert before < BURST // 2, f"{before} of {BURST} broadcasts went out before the signals"
    assert not worker.of("error")
