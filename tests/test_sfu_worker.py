"""The worker's core driven in-process by real aiortc peers (no server involved).

`Worker.handle()` takes the frames the server would relay and `emit` collects what the
worker would send back, so these tests cover negotiation, forwarding, slots and roles
with real ICE/DTLS/SRTP on loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtcpSrPacket, RtpPacket

from tests.voiceclient import ToneTrack
from yahaml_voice.core.config import Config, load_config
from yahaml_voice.core.protocol import WorkerFrame, wire
from yahaml_voice.sfu.aiortc_private import tap_receiver
from yahaml_voice.sfu.worker import Worker

ROOM = "net"


class Frames:
    """What the worker emitted, with waiting helpers."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    def emit(self, frame: WorkerFrame) -> None:
        self.items.append((frame.type, wire(frame)["data"]))
        self.changed.set()

    async def wait(
        self, kind: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for k, data in self.items:
                if k == kind and predicate(data):
                    return data
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind} frame matched in {timeout}s")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass

    def last_slots(self) -> list[str | None]:
        for kind, data in reversed(self.items):
            if kind == "slots":
                return [s["participantId"] for s in data["slots"]]
        return []


class Participant:
    """A real aiortc client following the SFU media contract, counting slot packets."""

    def __init__(self, pid: str, publish: bool, can_publish: bool = True) -> None:
        self.id = pid
        self.track = ToneTrack() if publish else None
        if self.track:
            self.track.muted = True
        self.can_publish = can_publish
        self.pc = RTCPeerConnection()
        self.packets = [0, 0, 0]
        self.loud = [0, 0, 0]
        self.answer_sdp = ""

    async def join(
        self, worker: Worker, frames: Frames, slots: int = 3, origin: str | None = None
    ) -> None:
        for _ in range(slots):
            self.pc.addTransceiver("audio", direction="recvonly")
        if self.track is not None:
            self.pc.addTransceiver(self.track, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await worker.handle(
            {
                "type": "signal",
                "data": {
                    "roomId": ROOM,
                    "from": self.id,
                    "role": "operator" if self.can_publish else "listener",
                    "canPublish": self.can_publish,
                    "callsign": self.id.upper(),
                    "type": "offer",
                    "data": {"type": "offer", "sdp": self.pc.localDescription.sdp},
                    "origin": origin,
                },
            }
        )
        answer = await frames.wait("signal", lambda d: d["to"] == self.id and d["type"] == "answer")
        self.answer_sdp = answer["data"]["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(**answer["data"]))
        for index, transceiver in enumerate(self.pc.getTransceivers()[:slots]):
            tap_receiver(
                transceiver.receiver,
                transceiver._codecs[0].payloadType,
                lambda packet, i=index: self._count(i, packet),
            )

    def _count(self, index: int, packet: RtpPacket) -> None:
        self.packets[index] += 1
        level = packet.extensions.audio_level
        if level is not None and level[1] < 50:
            self.loud[index] += 1

    def speak(self, on: bool) -> None:
        assert self.track is not None
        self.track.muted = not on


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def close_all(people: list[Participant], *workers: Worker) -> None:
    """A test's peers hang up, then its workers stop."""
    for person in people:
        await person.pc.close()
        if person.track:
            person.track.stop()
    for worker in workers:
        await worker.stop()


def config(**sfu: Any) -> Config:
    return load_config(environ={}, overrides={f"sfu.{k}": v for k, v in sfu.items()})


@pytest.fixture
async def rig(
    loopback_ice: None, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Worker, Frames, list[Participant]]]:
    frames = Frames()
    native = getattr(request, "param", True)  # the native fan-out where it can be built
    worker = Worker(config(slot_hold="0.5s", native=native), "w-test", frames.emit)
    people: list[Participant] = []
    try:
        yield worker, frames, people
    finally:
        await close_all(people, worker)


async def test_speaker_reaches_everyone_but_itself(
    rig: tuple[Worker, Frames, list[Participant]],
) -> None:
    worker, frames, people = rig
    alice, bob, carol = (
        Participant("alice", True),
        Participant("bob", True),
        Participant("carol", False),
    )
    people += [alice, bob, carol]
    for person in people:
        await person.join(worker, frames)
    # The answer asks for Opus in-band FEC; slots are sendonly, the mic recvonly.
    assert "useinbandfec=1" in alice.answer_sdp
    assert alice.answer_sdp.count("a=sendonly") == 3 and alice.answer_sdp.count("a=recvonly") == 1
    assert carol.answer_sdp.count("a=sendonly") == 3

    alice.speak(True)
    await frames.wait("slots", lambda d: d["slots"][0]["participantId"] == "alice")
    await wait_for(lambda: bob.loud[0] >= 25 and carol.loud[0] >= 25)
    assert alice.packets == [0, 0, 0]  # never hears herself
    assert bob.packets[1:] == [0, 0] and carol.packets[1:] == [0, 0]
    state = await frames.wait("roomState", lambda d: d["audioFrom"] == ["alice", "bob"])
    assert state["roomId"] == ROOM
    # After each (re)connect's hello the worker reports every room it holds.
    worker.report_rooms()
    assert frames.items[-1] == ("roomState", {"roomId": ROOM, "audioFrom": ["alice", "bob"]})
    load = worker.load()
    assert load.rooms == 1 and load.peers == 3 and load.streams == 9


async def test_slot_mapping_follows_a_speaker_change(
    rig: tuple[Worker, Frames, list[Participant]],
) -> None:
    worker, frames, people = rig
    alice, bob, carol = (
        Participant("alice", True),
        Participant("bob", True),
        Participant("carol", False),
    )
    people += [alice, bob, carol]
    for person in people:
        await person.join(worker, frames)
    alice.speak(True)
    await frames.wait("slots", lambda d: d["slots"][0]["participantId"] == "alice")
    alice.speak(False)
    bob.speak(True)
    # The bound: the mapping follows a speaker change within 1 s.
    data = await frames.wait(
        "slots", lambda d: "bob" in [s["participantId"] for s in d["slots"]], timeout=1.0
    )
    assert data["speaking"][0] == "bob"
    bob_slot = [s["participantId"] for s in data["slots"]].index("bob")
    own = bob.packets[bob_slot]
    await wait_for(lambda: carol.loud[bob_slot] >= 10 and alice.loud[bob_slot] >= 10)
    assert bob.packets[bob_slot] == own  # bob's slot never carries bob to bob
    # Bob leaves: his slot is freed at once.
    await worker.handle(
        {"type": "participantLeft", "data": {"roomId": ROOM, "participantId": "bob"}}
    )
    assert "bob" not in frames.last_slots()


async def test_listener_cannot_publish(rig: tuple[Worker, Frames, list[Participant]]) -> None:
    worker, frames, people = rig
    # A listener whose client sends a mic m-line anyway (and speaks into it).
    sneaky = Participant("sneaky", True, can_publish=False)
    alice = Participant("alice", False)
    people += [sneaky, alice]
    await sneaky.join(worker, frames)
    await alice.join(worker, frames)
    assert sneaky.answer_sdp.count("a=inactive") == 1
    sneaky.speak(True)
    await wait_for(lambda: sneaky.pc.connectionState == "connected")
    await asyncio.sleep(1.0)
    assert alice.packets == [0, 0, 0]
    assert all(pid is None for pid in frames.last_slots() or [None])
    assert worker.rooms[ROOM].peers["sneaky"].publishing is False


@pytest.mark.parametrize("rig", [True, False], ids=["native", "python"], indirect=True)
async def test_forwarded_opus_decodes_and_sender_reports_are_truthful(
    rig: tuple[Worker, Frames, list[Participant]],
) -> None:
    worker, frames, people = rig
    alice, bob = Participant("alice", True), Participant("bob", False)
    people += [alice, bob]
    await alice.join(worker, frames)
    await bob.join(worker, frames)
    # Bob's slots go through the fan-out this rig chose (native where it can be built).
    outputs = worker.rooms[ROOM].forwarder.outputs
    await wait_for(lambda: any(o.subscriber == "bob" for o in outputs()))
    assert all((o.native is not None) is (worker.fanout is not None) for o in outputs())
    bob_sender = next(o.sender for o in outputs() if o.subscriber == "bob" and o.index == 0)
    assert bob_sender is not None
    receiver = bob.pc.getTransceivers()[0].receiver
    reports: list[tuple[int, int]] = []  # (SR packet count, packets bob had counted)
    handle_rtcp = receiver._handle_rtcp_packet

    async def on_rtcp(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            reports.append((packet.sender_info.packet_count, bob.packets[0]))
        await handle_rtcp(packet)

    receiver._handle_rtcp_packet = on_rtcp  # type: ignore[method-assign]
    alice.speak(True)
    await wait_for(lambda: bob.loud[0] >= 10)
    await wait_for(lambda: any(count for count, _ in reports), timeout=8)
    # The SR counts exactly what this subscriber was sent (a packet may be in flight).
    count, seen = next((c, s) for c, s in reports if c)
    assert 0 <= count - seen <= 2
    # The forwarded payloads are real Opus: aiortc's own decoder turns them into the tone.
    captured: list[bytes] = []
    counting = receiver._handle_rtp_packet

    async def grab(packet: RtpPacket, arrival_time_ms: int = 0) -> None:
        captured.append(packet.payload)
        await counting(packet, arrival_time_ms)

    receiver._handle_rtp_packet = grab  # type: ignore[method-assign]
    await wait_for(lambda: len(captured) >= 10)
    decoder = get_decoder(bob.pc.getTransceivers()[0]._codecs[0])
    loud = 0
    for payload in captured:
        for frame in decoder.decode(JitterFrame(data=payload, timestamp=0)):
            loud += int(abs(frame.to_ndarray()).max() > 1000)
    assert loud >= 5
    # Bob (a listener) sent Receiver Reports all along (aiortc: about one a second); the
    # worker dropped them unparsed, so its sender never learnt a round-trip time.
    stats = await bob_sender.getStats()
    assert not [s for s in stats.values() if s.type == "remote-inbound-rtp"]


async def test_bad_frames_are_ignored(rig: tuple[Worker, Frames, list[Participant]]) -> None:
    worker, frames, people = rig
    good = {
        "roomId": ROOM,
        "from": "x",
        "role": "operator",
        "canPublish": True,
        "callsign": "X",
        "type": "offer",
    }
    for frame in [
        "not json",
        b"\xff\xfe",
        "[]",
        {"type": "nope", "data": {}},
        {"type": "signal"},
        {"type": "signal", "data": {**good, "roomId": "Bad Room!"}},
        {"type": "signal", "data": {**good, "extra": 1}},
        {"type": "participantLeft", "data": {"roomId": ROOM}},
        {"type": "roomClosed", "data": {"roomId": "nowhere"}},
        {"type": "error", "data": {"message": "whatever"}},
        {"type": "signal", "data": {**good, "data": {"type": "offer", "sdp": "v=0 garbage"}}},
        {"type": "signal", "data": {**good, "data": None}},
        {
            "type": "signal",
            "data": {**good, "type": "ice-candidate", "data": {"candidate": "junk"}},
        },
    ]:
        await worker.handle(frame)  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    assert not [f for f in frames.items if f[0] == "signal"]
    # The worker still works afterwards.
    alice = Participant("alice", True)
    people.append(alice)
    await alice.join(worker, frames)
    await wait_for(lambda: alice.pc.connectionState == "connected")
    await worker.handle({"type": "roomClosed", "data": {"roomId": ROOM}})
    assert worker.rooms == {}
