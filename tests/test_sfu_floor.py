"""Net control on the SFU (issue 12) with real aiortc peers: the floor frame decides who is
forwarded, the time-out timer cuts long transmissions, the courtesy tone follows an over.

Each station sends its own tone frequency, so "heard" means the listener's decoded audio
carries that frequency, not just that packets arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from aiortc.rtp import RtpPacket

from tests.test_sfu_courtesy import dominant_hz
from tests.test_sfu_worker import ROOM, Frames, Participant, rig, wait_for
from yahaml_voice.sfu.worker import Worker

__all__ = ["rig"]  # the fixture

Rig = tuple[Worker, Frames, list[Participant]]


class Station(Participant):
    """A participant with its own tone that also keeps what each slot brought (time,
    level, payload)."""

    def __init__(self, pid: str, publish: bool, hz: float = 440.0) -> None:
        super().__init__(pid, publish)
        if self.track is not None:
            self.track.frequency = hz
        self.got: list[list[tuple[float, int, bytes]]] = [[], [], []]

    def _count(self, index: int, packet: RtpPacket) -> None:
        super()._count(index, packet)
        level = packet.extensions.audio_level
        self.got[index].append(
            (time.monotonic(), 127 if level is None else level[1], packet.payload)
        )

    def loud_since(self, index: int, since: float) -> list[bytes]:
        return [p for t, level, p in self.got[index] if t >= since and level < 50]

    def total_loud(self) -> int:
        return sum(self.loud)


def floor(
    directed: bool = False,
    talkers: Iterable[str] = (),
    muted: Iterable[str] = (),
    tot: float = 0.0,
    tot_reset: float = 0.0,
    courtesy: dict[str, int] | None = None,
    exempt: Iterable[str] = (),
) -> dict[str, Any]:
    return {
        "type": "floor",
        "data": {
            "roomId": ROOM,
            "directed": directed,
            "talkers": list(talkers),
            "muted": list(muted),
            "tot": tot,
            "totReset": tot_reset,
            "courtesy": courtesy,
            "exempt": list(exempt),
        },
    }


def ever_in_slots(frames: Frames, pid: str) -> bool:
    return any(
        pid in [s["participantId"] for s in data["slots"]] or pid in data["speaking"]
        for kind, data in frames.items
        if kind == "slots"
    )


async def slot_of(frames: Frames, pid: str) -> int:
    """The slot `pid` occupies in the latest mapping (waiting for one that has it)."""
    await wait_for(lambda: pid in frames.last_slots())
    return frames.last_slots().index(pid)


async def hears(listener: Station, index: int, hz: float, packets: int = 25) -> None:
    """`listener` gets loud packets in slot `index` that decode to `hz`."""
    since = time.monotonic()
    await wait_for(lambda: len(listener.loud_since(index, since)) >= packets)
    assert abs(dominant_hz(listener.loud_since(index, since)) - hz) < 30


async def silent_for(listener: Station, seconds: float) -> None:
    before = listener.total_loud()
    await asyncio.sleep(seconds)
    assert listener.total_loud() == before


async def test_directed_room_forwards_only_talkers(rig: Rig) -> None:
    worker, frames, people = rig
    alice, bob = Station("alice", True, 440), Station("bob", True, 660)
    carol = Station("carol", False)
    people += [alice, bob, carol]
    # The room is placed (floor frame) before anyone joins.
    await worker.handle(floor(directed=True, talkers=["alice"]))
    for person in people:
        await person.join(worker, frames)
    bob.speak(True)  # not a talker: keeps sending, nobody hears it
    await wait_for(lambda: worker.rooms[ROOM].peers["bob"].last_audio > 0)
    await asyncio.sleep(1.5)
    assert carol.total_loud() == 0 and alice.total_loud() == 0
    assert not ever_in_slots(frames, "bob")  # its packets cannot take a speaker slot
    alice.speak(True)
    await hears(carol, await slot_of(frames, "alice"), 440)
    # Granted: heard at its own frequency.
    await worker.handle(floor(directed=True, talkers=["alice", "bob"]))
    index = await slot_of(frames, "bob")
    await hears(carol, index, 660)
    await hears(alice, index, 660)
    # Revoked: silence again in its slot (alice still heard).
    await worker.handle(floor(directed=True, talkers=["alice"]))
    await asyncio.sleep(0.3)
    before = len(carol.loud_since(index, 0))
    await asyncio.sleep(1.0)
    assert len(carol.loud_since(index, 0)) == before
    await hears(carol, await slot_of(frames, "alice"), 440)


async def test_muted_talker_is_not_heard_in_an_open_room(rig: Rig) -> None:
    worker, frames, people = rig
    alice, bob = Station("alice", True, 440), Station("bob", True, 660)
    carol = Station("carol", False)
    people += [alice, bob, carol]
    for person in people:
        await person.join(worker, frames)
    # Before any floor frame the room is open: bob is heard.
    bob.speak(True)
    await hears(carol, await slot_of(frames, "bob"), 660)
    await worker.handle(floor(muted=["bob"]))
    await asyncio.sleep(0.3)
    await silent_for(carol, 1.0)
    # Its slot is released like a silent one: alice takes a slot, bob never speaks.
    alice.speak(True)
    await hears(carol, await slot_of(frames, "alice"), 440)
    speaking = await frames.wait("slots", lambda d: "alice" in d["speaking"])
    assert "bob" not in speaking["speaking"]
    # Unmuted: heard again.
    await worker.handle(floor(muted=[]))
    await hears(carol, await slot_of(frames, "bob"), 660)


async def test_time_out_timer_cuts_locks_out_and_resets(rig: Rig) -> None:
    worker, frames, people = rig
    alice, ncs = Station("alice", True, 440), Station("ncs", True, 880)
    carol = Station("carol", False)
    people += [alice, ncs, carol]
    await worker.handle(floor(tot=1.0, tot_reset=0.5, exempt=["ncs"]))
    for person in people:
        await person.join(worker, frames)

    async def cut_frame() -> tuple[dict[str, Any], float]:
        data = await frames.wait("talker", lambda d: d["participantId"] == "alice")
        return data, time.monotonic()

    watch = asyncio.create_task(cut_frame())
    alice.speak(True)
    ncs.speak(True)
    started = time.monotonic()
    index = await slot_of(frames, "alice")
    await hears(carol, index, 440, packets=10)
    cut, cut_at = await watch
    assert cut == {"roomId": ROOM, "participantId": "alice", "state": "cut", "reason": "tot"}
    assert 0.9 <= cut_at - started <= 1.6
    # Locked out while it keeps transmitting; net control (exempt) is not cut.
    await asyncio.sleep(0.3)
    before = len(carol.loud_since(index, 0))
    await asyncio.sleep(1.0)
    assert len(carol.loud_since(index, 0)) == before
    await hears(carol, await slot_of(frames, "ncs"), 880)
    assert not [d for k, d in frames.items if k == "talker" and d["participantId"] == "ncs"]
    assert not [d for k, d in frames.items if k == "talker" and d["state"] == "reset"]
    # Silent for tot_reset: reset, and heard again.
    alice.speak(False)
    silent = time.monotonic()
    await frames.wait("talker", lambda d: d["state"] == "reset", timeout=3)
    assert time.monotonic() - silent >= 0.45
    alice.speak(True)
    await hears(carol, await slot_of(frames, "alice"), 440, packets=10)


async def test_courtesy_tone_follows_an_over(rig: Rig) -> None:
    worker, frames, people = rig
    alice, bob = Station("alice", True, 440), Station("bob", False)
    carol = Station("carol", False)
    people += [alice, bob, carol]
    await worker.handle(floor(courtesy={"hz": 1000, "ms": 300}))
    for person in people:
        await person.join(worker, frames)
    alice.speak(True)
    index = await slot_of(frames, "alice")
    await hears(carol, index, 440)
    alice.speak(False)
    unkeyed = time.monotonic()
    since = unkeyed + 0.2  # after the over's last packets
    for listener in (bob, carol):
        await wait_for(lambda listener=listener: len(listener.loud_since(index, since)) >= 14)
        assert abs(dominant_hz(listener.loud_since(index, since)) - 1000) < 30
    first = next(t for t, level, _ in carol.got[index] if t >= since and level < 50)
    assert 0.25 <= first - unkeyed <= 1.0
    # Exactly one tone (15-16 packets of 20 ms), then the slot is back to alice's silence.
    await asyncio.sleep(1.0)
    assert len(carol.loud_since(index, since)) <= 16
    assert len(carol.got[index]) > len(carol.loud_since(index, 0))


async def test_floor_frames_are_kept_per_room_until_closed(rig: Rig) -> None:
    worker, frames, _ = rig
    await worker.handle(floor(directed=True, talkers=["alice"]))
    assert worker.floors[ROOM].talkers == ["alice"] and ROOM not in worker.rooms
    await worker.handle({"type": "floor", "data": {"roomId": ROOM, "directed": True}})
    assert frames.items[-1][0] == "error"  # a bad floor frame changes nothing
    assert worker.floors[ROOM].talkers == ["alice"]
    await worker.handle({"type": "roomClosed", "data": {"roomId": ROOM}})
    assert ROOM not in worker.floors
