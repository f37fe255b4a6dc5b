"""Recording (issue 15): the worker writes Ogg Opus from the packets it forwards.

Real aiortc talkers with distinct tones in a room on an in-process worker (as in
tests/test_sfu_worker.py); the files are then decoded with PyAV and compared with what a
listener of the room was sent. The worker itself never decodes or encodes: every Opus
codec instantiated during the run is traced to the peer that owns it.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCRtpSender
from aiortc.codecs import opus
from aiortc.rtp import RtpPacket
from mutagen.ogg import OggPage

from tests.test_sfu_worker import ROOM, Frames, Participant, wait_for
from tests.voiceclient import dominant_tone
from yahaml_voice.core.config import Config, load_config
from yahaml_voice.sfu import mixdown, ogg
from yahaml_voice.sfu.recording import FELL_BEHIND, RecordingWriter
from yahaml_voice.sfu.worker import Worker

REC_ID = "20261130T200000Z-0a1b2c"
ALICE_HZ, BOB_HZ = 500, 1000
SFU_DIR = Path(__file__).resolve().parent.parent / "sfu"


# ---------------------------------------------------------------- the Ogg writer


def test_ogg_opus_pages_granules_and_crc(tmp_path: Path) -> None:
    path = str(tmp_path / "t.opus")
    writer = ogg.OggOpusWriter(path, {"TITLE": "x"})
    code3 = bytes([0x1B, 3]) + b"\0" * 30  # SILK NB 60 ms frames, code 3, count 3
    assert ogg.packet_samples(code3) == 3 * 2880
    assert ogg.packet_samples(b"\xfd" + b"\0" * 10) == 2 * 960  # CELT FB 20 ms, code 1
    assert ogg.packet_samples(b"\xf8") == 960
    writer.write(0, b"\xf8\x01\x02")
    writer.write(48000, b"\xf9" + b"\x05" * 300)  # 1 s later (silence before), 2 frames
    writer.write(48000 + 100, b"\xf8\x01\x02")  # late: right after the previous one
    writer.close()
    data = Path(path).read_bytes()
    pages = []
    stream = io.BytesIO(data)
    with contextlib.suppress(EOFError):
        while True:
            pages.append(OggPage(stream))
    # Every page's CRC is right (mutagen recomputes it when writing the page again).
    assert b"".join(page.write() for page in pages) == data
    assert pages[0].first and pages[0].packets[0].startswith(b"OpusHead")
    assert pages[0].packets[0][9] == ogg.CHANNELS and pages[0].position == 0
    assert pages[1].packets[0].startswith(b"OpusTags") and b"TITLE=x" in pages[1].packets[0]
    assert pages[-1].last and [p.sequence for p in pages] == list(range(len(pages)))
    audio = [packet for page in pages[2:] for packet in page.packets]
    assert audio[0] == b"\xf8\x01\x02" and audio[-1] == b"\xf8\x01\x02"
    # Granule positions: 48 kHz samples at each page's end, from the TOC bytes.
    assert pages[-1].position == 48000 + 2 * 960 + 960
    total = 0
    for page in pages[2:]:
        total += sum(ogg.packet_samples(p) for p in page.packets)
        assert page.position == total


def test_silence_packets_decode_to_silence(tmp_path: Path) -> None:
    path = str(tmp_path / "s.opus")
    writer = ogg.OggOpusWriter(path)
    writer.silence(48000 + 960)
    writer.close()
    samples, peak = 0, 0.0
    with av.open(path) as container:
        for frame in container.decode(audio=0):
            samples += frame.samples
            peak = max(peak, float(np.abs(frame.to_ndarray()).max()))
    assert samples == 48000 + 960 and peak == 0.0


# ---------------------------------------------------------------- helpers


def decode(path: Path) -> np.ndarray:
    """A file's first channel as float, 48 kHz (PyAV, outside the worker)."""
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            assert frame.sample_rate == 48000
            chunks.append(frame.to_ndarray().reshape(len(frame.layout.channels), -1)[0])
    return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros(0)


def tone_at(pcm: np.ndarray, second: float, span: float = 0.2) -> int:
    """The dominant frequency (10 Hz steps) around `second`, 0 for silence."""
    window = pcm[int((second - span / 2) * 48000) : int((second + span / 2) * 48000)]
    if len(window) == 0 or np.abs(window).max() < 0.01:
        return 0
    return dominant_tone(window, 1, 48000)


class Listener(Participant):
    """A listener that notes when each slot's loud packets arrived."""

    def __init__(self, pid: str) -> None:
        super().__init__(pid, False)
        self.loud_times: list[list[float]] = [[], [], []]

    def _count(self, index: int, packet: RtpPacket) -> None:
        super()._count(index, packet)
        level = packet.extensions.audio_level
        if level is not None and level[1] < 50:
            self.loud_times[index].append(time.monotonic())


class CodecWatch:
    """Every Opus encoder/decoder created while active, with the aiortc sender or the
    receiver decoder queue that owns it (found on the creating stack)."""

    def __init__(self) -> None:
        self.created: list[tuple[str, object | None]] = []

    @contextlib.contextmanager
    def active(self) -> Iterator[CodecWatch]:
        classes: list[Any] = [opus.OpusEncoder, opus.OpusDecoder]
        originals: dict[Any, Any] = {cls: cls.__init__ for cls in classes}

        def traced(cls: Any) -> Any:
            original = originals[cls]

            def init(codec: Any, *args: Any, **kw: Any) -> None:
                self.created.append((cls.__name__, self._owner()))
                original(codec, *args, **kw)

            return init

        for cls in originals:
            cls.__init__ = traced(cls)
        try:
            yield self
        finally:
            for cls, original in originals.items():
                cls.__init__ = original

    @staticmethod
    def _owner() -> object | None:
        frame = sys._getframe(2)
        while frame is not None:
            local = frame.f_locals
            if isinstance(local.get("self"), RTCRtpSender):
                return local["self"]
            if frame.f_code.co_name == "decoder_worker":
                return local.get("input_q")
            frame = frame.f_back  # type: ignore[assignment]
        return None


def worker_codec_owners(worker: Worker) -> set[int]:
    """ids of the worker's senders and of its receivers' decoder queues."""
    owners: set[int] = set()
    for room in worker.rooms.values():
        for peer in room.peers.values():
            if peer.pc is None:
                continue
            for transceiver in peer.pc.getTransceivers():
                owners.add(id(transceiver.sender))
                owners.add(id(transceiver.receiver._RTCRtpReceiver__decoder_queue))  # type: ignore[attr-defined]
    return owners


def rec_config(directory: Path, **recording: Any) -> Config:
    overrides = {"sfu.slot_hold": "0.5s", "recording.dir": str(directory)}
    overrides |= {f"recording.{k}": v for k, v in recording.items()}
    return load_config(environ={}, overrides=overrides)


class Rig:
    def __init__(self, directory: Path, **recording: Any) -> None:
        self.frames = Frames()
        self.directory = directory
        self.worker = Worker(rec_config(directory, **recording), "w-rec", self.frames.emit)
        self.people: list[Participant] = []

    async def record(self, recording_id: str | None) -> None:
        await self.worker.handle(
            {"type": "record", "data": {"roomId": ROOM, "recordingId": recording_id}}
        )

    def path(self, recording_id: str = REC_ID) -> Path:
        return self.directory / ROOM / recording_id

    async def close(self) -> None:
        for person in self.people:
            await person.pc.close()
            if person.track:
                person.track.stop()
        await self.worker.stop()


@pytest.fixture
async def make_rig(loopback_ice: None) -> AsyncIterator[Any]:
    rigs: list[Rig] = []

    def make(directory: Path, **recording: Any) -> Rig:
        rig = Rig(directory, **recording)
        rigs.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in rigs:
            await rig.close()


async def _talkers(rig: Rig) -> tuple[Participant, Participant, Listener]:
    alice, bob, carol = Participant("alice", True), Participant("bob", True), Listener("carol")
    assert alice.track is not None and bob.track is not None
    alice.track.frequency, bob.track.frequency = ALICE_HZ, BOB_HZ
    rig.people += [alice, bob, carol]
    for person in rig.people:
        await person.join(rig.worker, rig.frames)
    await wait_for(lambda: all(p.pc.connectionState == "connected" for p in rig.people))
    return alice, bob, carol


# ---------------------------------------------------------------- recording a room


async def test_talkers_in_turn_and_overlapping_are_recorded_without_transcoding(
    make_rig: Any, tmp_path: Path
) -> None:
    rig = make_rig(tmp_path / "rec")
    watch = CodecWatch()
    with watch.active():
        alice, bob, carol = await _talkers(rig)
        await rig.record(REC_ID)
        started = await rig.frames.wait("recording", lambda d: d["state"] == "recording")
        assert started == {
            "roomId": ROOM,
            "recordingId": REC_ID,
            "state": "recording",
            "reason": None,
            "bytes": 0,
        }
        recording = rig.worker.rooms[ROOM].recording
        assert recording is not None
        t0 = recording.t0
        # In turn: alice, then bob; then overlapping: alice, and bob over her.
        script = [(alice, 0.2, 1.4), (bob, 1.9, 3.1), (alice, 3.6, 5.0), (bob, 4.2, 5.6)]
        events = [(on, p, True) for p, on, _ in script] + [(off, p, False) for p, _, off in script]
        events.sort(key=lambda e: e[0])
        for at, person, on in events:
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            person.speak(on)
        await asyncio.sleep(max(0.0, t0 + 6.0 - time.monotonic()))
        owners = worker_codec_owners(rig.worker)
        await rig.record(None)
        stopped = await rig.frames.wait("recording", lambda d: d["state"] == "stopped")
        length = time.monotonic() - t0

    # No Opus codec was created for any of the worker's senders or receivers; the watch
    # saw the talkers' own encoders, so it does see codecs being created.
    assert [kind for kind, _ in watch.created].count("OpusEncoder") >= 2
    assert all(owner is not None for _, owner in watch.created), watch.created
    assert not [c for c in watch.created if id(c[1]) in owners], watch.created

    path = rig.path()
    index = json.loads((path / "index.json").read_text())
    assert index["recording"]["state"] == "stopped" and index["slots"] == 3
    assert index["recording"]["id"] == REC_ID and index["recording"]["endedAt"]
    assert stopped["bytes"] == sum(f.stat().st_size for f in path.rglob("*.opus"))
    txs = index["transmissions"]
    frames = [d["transmission"] for k, d in rig.frames.items if k == "transmission"]
    assert all(t.pop("url") is None for t in frames)  # the server sets it
    assert sorted(frames, key=lambda t: t["index"]) == txs
    assert [t["participantId"] for t in txs] == ["alice", "bob", "alice", "bob"]
    assert [t["callsign"] for t in txs] == ["ALICE", "BOB", "ALICE", "BOB"]
    assert [t["index"] for t in txs] == [0, 1, 2, 3]
    for tx, (_, spoke, quiet) in zip(txs, script, strict=True):
        # Each file lasts what carol was sent of it (loud packets of 20 ms), +-100 ms,
        # and about what the talker said (the slot is taken within a selector tick).
        sent = [
            t
            for t in carol.loud_times[tx["slot"]]
            if t0 + tx["offset"] - 0.3 <= t <= t0 + tx["offset"] + tx["duration"] + 0.3
        ]
        pcm = decode(path / "tx" / f"{tx['index']:06d}.opus")
        assert abs(len(pcm) / 48000 - tx["duration"]) < 0.03
        assert abs(tx["duration"] - len(sent) * 0.02) < 0.1, (tx, len(sent))
        assert abs(tx["duration"] - (quiet - spoke)) < 0.3, (tx, spoke, quiet)
        assert abs(tx["offset"] - spoke) < 0.3, (tx, spoke)
        hz = ALICE_HZ if tx["participantId"] == "alice" else BOB_HZ
        assert tone_at(pcm, tx["duration"] / 2) == hz
    # Slot tracks and the net recording share the recording's time base.
    net = decode(path / "net.opus")
    assert abs(len(net) / 48000 - length) < 0.15
    for slot in range(3):
        pcm = decode(path / f"slot{slot}.opus")
        assert abs(len(pcm) / 48000 - length) < 0.15
        for tx in (t for t in txs if t["slot"] == slot):
            hz = ALICE_HZ if tx["participantId"] == "alice" else BOB_HZ
            assert tone_at(pcm, tx["offset"] + tx["duration"] / 2) == hz
    # In turn the net recording has alice then bob; while both talk, the lower slot.
    first, second, third, fourth = txs
    assert tone_at(net, first["offset"] + 0.5) == ALICE_HZ
    assert tone_at(net, second["offset"] + 0.5) == BOB_HZ
    assert third["slot"] != fourth["slot"]
    low = third if third["slot"] < fourth["slot"] else fourth
    both = (fourth["offset"] + third["offset"] + third["duration"]) / 2  # mid-overlap
    assert tone_at(net, both) == (ALICE_HZ if low is third else BOB_HZ)
    assert tone_at(net, 1.7) == 0  # between the first two transmissions: silence
    vtt = (path / "chapters.vtt").read_text()
    assert vtt.startswith("WEBVTT\n") and vtt.count(" --> ") == 4 and "BOB" in vtt
    # The mixdown (a separate process in production; here in the test's) of these tracks.
    mixed = decode(Path(mixdown.mix(str(path))))
    assert abs(len(mixed) / 48000 - length) < 0.15
    assert tone_at(mixed, first["offset"] + 0.5) == ALICE_HZ
    assert tone_at(mixed, second["offset"] + 0.5) == BOB_HZ


async def test_a_writer_that_falls_behind_fails_the_recording_not_forwarding(
    make_rig: Any, tmp_path: Path
) -> None:
    rig = make_rig(tmp_path / "rec", queue=16)
    rig.worker.recorder = RecordingWriter(poll=60.0)  # a writer stuck on a slow disk
    alice, _, carol = await _talkers(rig)
    alice.speak(True)
    await rig.record(REC_ID)
    failed = await rig.frames.wait("recording", lambda d: d["state"] == "failed")
    assert failed["reason"] == FELL_BEHIND
    assert rig.worker.rooms[ROOM].forwarder.recording is None
    heard = carol.loud[0]
    await wait_for(lambda: carol.loud[0] >= heard + 25)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only, as CI runs), unmounted at the end."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_fails_the_recording_and_forwarding_goes_on(
    make_rig: Any, small_disk: Path
) -> None:
    rig = make_rig(small_disk)
    alice, _, carol = await _talkers(rig)
    alice.speak(True)
    await rig.record(REC_ID)
    await rig.frames.wait("recording", lambda d: d["state"] == "recording")
    failed = await rig.frames.wait("recording", lambda d: d["state"] == "failed", timeout=20)
    assert "No space left on device" in failed["reason"]
    assert rig.worker.rooms[ROOM].forwarder.recording is None
    heard = carol.loud[0]
    await wait_for(lambda: carol.loud[0] >= heard + 25)
    assert not [d for k, d in rig.frames.items if k == "recording" and d["state"] == "stopped"]


async def test_edges_never_record_and_a_new_id_replaces_the_old(
    make_rig: Any, tmp_path: Path
) -> None:
    rig = make_rig(tmp_path / "rec")
    dave = Participant("dave", False, False)
    rig.people.append(dave)
    await dave.join(rig.worker, rig.frames, origin="w-origin")
    await rig.record(REC_ID)
    assert rig.worker.rooms[ROOM].recording is None
    await rig.worker.handle({"type": "roomClosed", "data": {"roomId": ROOM}})

    alice = Participant("alice", True)
    rig.people.append(alice)
    await rig.record(REC_ID)  # before the room's first peer: kept for it
    await alice.join(rig.worker, rig.frames)
    await rig.frames.wait("recording", lambda d: d["state"] == "recording")
    other = "20261130T200100Z-ffffff"
    await rig.record(REC_ID)  # the same id goes on
    await rig.record(other)
    await rig.frames.wait("recording", lambda d: d["state"] == "stopped")
    await rig.frames.wait("recording", lambda d: d["recordingId"] == other)
    await rig.worker.handle({"type": "roomClosed", "data": {"roomId": ROOM}})
    await rig.frames.wait(
        "recording", lambda d: d["recordingId"] == other and d["state"] == "stopped"
    )
    for rec in (REC_ID, other):
        assert json.loads((rig.path(rec) / "index.json").read_text())["recording"]["state"] == (
            "stopped"
        )


def test_the_recorder_modules_import_no_codec() -> None:
    """What runs in the worker for recordings cannot decode or encode: no av, no codecs."""
    for name in ("recording.py", "ogg.py", "forwarder.py", "worker.py"):
        modules: set[str] = set()
        for node in ast.walk(ast.parse((SFU_DIR / name).read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                modules.add(node.module or "")
        assert not {m for m in modules if m == "av" or m.startswith(("av.", "aiortc.codecs"))}


async def test_a_stopped_recording_is_never_reopened(tmp_path: Path) -> None:
    """The same id again (e.g. the room re-placed here) fails instead of overwriting."""
    from yahaml_voice.sfu.recording import Recording

    writer = RecordingWriter(poll=0.01)
    frames = Frames()

    def start() -> Recording:
        recording = Recording(
            directory=str(tmp_path),
            room_id=ROOM,
            recording_id=REC_ID,
            net_id="n-1",
            slots=2,
            limit=64,
            callsign_of=lambda pid: pid.upper(),
            emit=frames.emit,
            detach=lambda tap: None,
        )
        writer.add(recording)
        return recording

    try:
        first = start()
        await frames.wait("recording", lambda d: d["state"] == "recording")
        first.tap.items.append((1, "alice", 1000, time.monotonic(), 30, b"\xf8\xff\xfe"))
        first.stop()
        assert await asyncio.wait_for(first.done, 5) == "stopped"
        index = json.loads((tmp_path / ROOM / REC_ID / "index.json").read_text())
        assert index["recording"]["netId"] == "n-1" and index["slots"] == 2
        assert [t["callsign"] for t in index["transmissions"]] == ["ALICE"]
        second = start()
        assert await asyncio.wait_for(second.done, 5) == "failed"
        failed = await frames.wait("recording", lambda d: d["state"] == "failed")
        assert "exists already" in failed["reason"]
        assert json.loads((tmp_path / ROOM / REC_ID / "index.json").read_text()) == index
    finally:
        await writer.stop()
