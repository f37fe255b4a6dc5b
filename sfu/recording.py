"""Recording a room from the packets its forwarder forwards: no decoding, off the hot path.

The forwarder's hot path does one thing per packet of a recorded room: append a small
tuple to that recording's bounded deque (`RecordTap`), after the floor gate and slot
selection, so a recording holds exactly what listeners were sent. One writer thread per
worker (`RecordingWriter`) drains every recording's deque about 20 times a second and
writes the files the server serves (docs/protocol.md "Recording"), under
`<recording.dir>/<room>/<recording id>/`:

- `slot<i>.opus`: what speaker slot i carried, on the recording's time base (sample 0 is
  the recording's start; time without a transmission is Opus silence packets);
- `net.opus`: the floor in time order, same time base; where transmissions in several
  slots overlap, the lowest slot whose talker spoke within NET_HOLD wins;
- `tx/<index>.opus`: each transmission alone; `index.json` and `chapters.vtt` list them.

A transmission is one source's stretch of speech in one slot: it starts with a speech
packet (RFC 6464 level, as the slot selector reads it) and ends when another source's
packet arrives in that slot or after TX_GAP without speech from it; the silent packets
after its last speech are dropped, so a transmission lasts as long as the talker spoke.
Courtesy tones (synthetic sources) are not recorded.

A writer that cannot keep up (the deque is full) or a disk error (ENOSPC) fails that
recording with a reason; the forwarder goes on either way, and the hot path never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from yahaml_voice.core.protocol import (
    RecordingState,
    Transmission,
    WorkerFrame,
    WorkerRecording,
    WorkerRecordingFrame,
    WorkerTransmission,
    WorkerTransmissionFrame,
)
from yahaml_voice.core.timestamps import iso

from .ogg import RATE, OggOpusWriter, packet_samples, write_atomically
from .slots import SPEECH_LEVEL

logger = logging.getLogger(__name__)

# A transmission ends after this long without a speech packet from its source.
TX_GAP = 1.0
# net.opus stays with a transmission while its talker spoke this recently.
NET_HOLD = 0.25
# The writer thread wakes this often (it is a recorder: latency does not matter).
POLL = 0.05
# How long a stopping room waits for its files to be closed.
STOP_WAIT = 10.0

# What the hot path queues: slot, source, RTP timestamp, time.monotonic(), audio-level
# byte (-1: none) and the Opus payload.
Item = tuple[int, str, int, float, int, bytes]
State = Literal["recording", "stopped", "failed"]
FELL_BEHIND = "the recording writer fell behind (queue full): recording stopped"


class RecordTap:
    """The hot path's view of a recording: a deque bounded by `limit` and what to do
    when it is full. `deque.append` and `popleft` are atomic: no lock on the hot path."""

    __slots__ = ("items", "limit", "overflow")

    def __init__(self, limit: int, overflow: Callable[[], None]) -> None:
        self.items: deque[Item] = deque()
        self.limit = limit
        self.overflow = overflow


class _Tx:
    """One transmission being written (writer thread only)."""

    __slots__ = (
        "base",
        "callsign",
        "end",
        "file",
        "index",
        "last_loud",
        "pending",
        "ref_pos",
        "ref_ts",
        "slot",
        "source",
    )

    def __init__(
        self, index: int, slot: int, source: str, callsign: str, pos: int, ts: int, now: float
    ) -> None:
        self.index = index
        self.slot = slot
        self.source = source
        self.callsign = callsign
        self.base = pos  # its start on the recording's time base (samples)
        self.ref_pos, self.ref_ts = pos, ts  # RTP timestamp -> position
        self.end = pos
        self.last_loud = now
        self.pending: list[tuple[int, bytes]] = []  # silent packets since its last speech
        self.file: OggOpusWriter | None = None

    def position(self, ts: int, wall: int) -> int:
        """A packet's position from its RTP timestamp (gaps, DTX and loss kept as time);
        re-anchored on the wall clock if the two disagree by more than a second."""
        delta = (ts - self.ref_ts) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 1 << 32
        pos = self.ref_pos + delta
        if abs(pos - wall) > RATE:
            self.ref_pos, self.ref_ts = wall, ts
            return wall
        return pos


class Recording:
    """One room's recording. Loop side: `tap`, `stop`, the frames; writer side: `step`."""

    def __init__(
        self,
        *,
        directory: str,
        room_id: str,
        recording_id: str,
        net_id: str | None,
        slots: int,
        limit: int,
        callsign_of: Callable[[str], str],
        emit: Callable[[WorkerFrame], None],
        detach: Callable[[RecordTap], None],
    ) -> None:
        self.room_id = room_id
        self.id = recording_id
        self.net_id = net_id
        self.slot_count = slots
        self.path = os.path.join(directory, room_id, recording_id)
        self.callsign_of = callsign_of
        self._emit = emit
        self._detach = detach
        self.tap = RecordTap(limit, self._overflow)
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[State] = self.loop.create_future()
        self.t0 = time.monotonic()
        self.started_at = time.time()
        self.ended_at: float | None = None
        # Set by the loop (read by the writer): stop as `state` with `reason`, at `stop_at`.
        self.request: tuple[State, str | None, float] | None = None
        self._reported: State | None = None  # the final frame went out (loop side)
        # Writer side.
        self.bytes = 0
        self._opened = False
        self._slots: list[OggOpusWriter] = []
        self._net: OggOpusWriter | None = None
        self._active: list[_Tx | None] = [None] * slots
        self._net_owner: _Tx | None = None
        self._next_index = 0
        self.transmissions: list[Transmission] = []

    # ------------------------------------------------------------ loop side

    def stop(self, state: State = "stopped", reason: str | None = None) -> None:
        """Detach from the hot path and have the writer close the files."""
        self._detach(self.tap)
        if self.request is None:
            self.request = (state, reason, time.monotonic())

    def _overflow(self) -> None:
        """The deque is full (on the hot path): fail now, say so now."""
        logger.warning("recording %s of %s: %s", self.id, self.room_id, FELL_BEHIND)
        self.stop("failed", FELL_BEHIND)
        self._report("failed", FELL_BEHIND)

    def _report(self, state: State, reason: str | None = None) -> None:
        if self._reported is not None and self._reported != "recording":
            return
        self._reported = state
        data = WorkerRecording(
            roomId=self.room_id, recordingId=self.id, state=state, reason=reason, bytes=self.bytes
        )
        self._emit(WorkerRecordingFrame(data=data))

    def _finished(self, state: State, reason: str | None) -> None:
        self._detach(self.tap)
        self._report(state, reason)
        if not self.done.done():
            self.done.set_result(state)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        """Run `callback` on the event loop (from the writer thread)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self.loop.call_soon_threadsafe(callback, *args)

    # ------------------------------------------------------------ writer side

    def step(self, now: float) -> bool:
        """Write what was queued; True when the recording is over (files closed)."""
        request = self.request  # read first: everything queued before it is in the deque
        try:
            if not self._opened:
                self._open()
            items = self.tap.items
            while items:
                self._packet(*items.popleft())
            for tx in self._active:
                if tx is not None and now - tx.last_loud > TX_GAP:
                    self._end(tx)
            if request is not None:
                self._finish(*request)
                return True
        except OSError as exc:
            self._fail(exc)
            return True
        return False

    def _position(self, now: float) -> int:
        return max(0, round((now - self.t0) * RATE))

    def _open(self) -> None:
        self._opened = True
        if os.path.exists(os.path.join(self.path, "index.json")):
            # Never overwrite a recording (the same id sent again after it stopped).
            raise FileExistsError(errno.EEXIST, "this recording exists already", self.path)
        os.makedirs(os.path.join(self.path, "tx"), exist_ok=True)
        tags = {"TITLE": f"{self.room_id} {self.id}"}
        self._slots = [
            OggOpusWriter(os.path.join(self.path, f"slot{i}.opus"), tags)
            for i in range(self.slot_count)
        ]
        self._net = OggOpusWriter(os.path.join(self.path, "net.opus"), tags)
        self._write_index("recording", None)
        self._call(self._report, "recording")
        logger.info("recording %s of %s in %s", self.id, self.room_id, self.path)

    def _packet(
        self, slot: int, source: str, ts: int, now: float, level: int, payload: bytes
    ) -> None:
        if source.startswith("\0"):
            return  # a courtesy tone or another synthetic source
        tx = self._active[slot]
        if tx is not None and (tx.source != source or now - tx.last_loud > TX_GAP):
            self._end(tx)
            tx = None
        loud = level < 0 or (level & 0x7F) <= SPEECH_LEVEL
        if tx is None:
            if not loud:
                return
            tx = self._begin(slot, source, ts, now)
        pos = tx.position(ts, self._position(now))
        if not loud:
            tx.pending.append((pos, payload))
            return
        for at, data in tx.pending:
            self._write(tx, at, data, now)
        tx.pending.clear()
        self._write(tx, pos, payload, now)
        tx.last_loud = now

    def _begin(self, slot: int, source: str, ts: int, now: float) -> _Tx:
        index = self._next_index
        self._next_index += 1
        callsign = self.callsign_of(source)
        tx = _Tx(index, slot, source, callsign, self._position(now), ts, now)
        path = os.path.join(self.path, "tx", f"{index:06d}.opus")
        tx.file = OggOpusWriter(path, {"ARTIST": callsign, "TITLE": f"{self.room_id} #{index}"})
        self._active[slot] = tx
        return tx

    def _write(self, tx: _Tx, pos: int, payload: bytes, now: float) -> None:
        assert tx.file is not None and self._net is not None
        tx.file.write(pos - tx.base, payload)
        self._slots[tx.slot].write(pos, payload)
        owner = self._net_owner
        if owner is not tx and (
            owner is None or owner.slot > tx.slot or now - owner.last_loud > NET_HOLD
        ):
            self._net_owner = owner = tx
        if owner is tx:
            self._net.write(pos, payload)
        tx.end = max(tx.end, pos + packet_samples(payload))

    def _end(self, tx: _Tx) -> None:
        self._active[tx.slot] = None
        if self._net_owner is tx:
            self._net_owner = None
        file, tx.file = tx.file, None
        assert file is not None
        file.close()
        self.bytes += file.bytes
        start = tx.base / RATE
        transmission = Transmission(
            index=tx.index,
            slot=tx.slot,
            participantId=tx.source,
            callsign=tx.callsign,
            start=iso(self.started_at + start),
            end=iso(self.started_at + start + file.position / RATE),
            offset=round(start, 3),
            duration=round(file.position / RATE, 3),
        )
        self.transmissions.append(transmission)
        self._write_index("recording", None)
        frame = WorkerTransmissionFrame(
            data=WorkerTransmission(
                roomId=self.room_id, recordingId=self.id, transmission=transmission
            )
        )
        self._call(self._emit, frame)

    def _finish(self, state: State, reason: str | None, stop_at: float) -> None:
        for tx in self._active:
            if tx is not None:
                self._end(tx)
        end = self._position(stop_at)
        for writer in [*self._slots, self._net]:
            assert writer is not None
            writer.pad_to(end)
            writer.close()
            self.bytes += writer.bytes
        self.ended_at = self.started_at + end / RATE
        self._write_index(state, reason)
        logger.info("recording %s of %s %s (%d bytes)", self.id, self.room_id, state, self.bytes)
        self._call(self._finished, state, reason)

    def _fail(self, exc: OSError) -> None:
        reason = f"recording failed: {exc.strerror or exc}"[:300]
        logger.error("recording %s of %s: %s", self.id, self.room_id, reason)
        for tx in self._active:
            if tx is not None and tx.file is not None:
                tx.file.abandon()
        for writer in [*self._slots, self._net]:
            if writer is not None:
                self.bytes += writer.bytes
                writer.abandon()
        self.ended_at = time.time()
        if not isinstance(exc, FileExistsError):
            with contextlib.suppress(OSError):  # the disk may still be full
                self._write_index("failed", reason)
        self._call(self._finished, "failed", reason)

    def crashed(self) -> None:
        """A bug in the writer: fail this recording (the thread goes on for the others)."""
        self._call(self._finished, "failed", "internal error")

    def state(self, state: State, reason: str | None) -> RecordingState:
        return RecordingState(
            id=self.id,
            roomId=self.room_id,
            state=state,
            startedAt=iso(self.started_at),
            endedAt=iso(self.ended_at) if self.ended_at is not None else None,
            reason=reason,
            netId=self.net_id,
        )

    def _write_index(self, state: State, reason: str | None) -> None:
        transmissions = sorted(self.transmissions, key=lambda t: t.index)
        index = {
            "recording": self.state(state, reason).model_dump(mode="json"),
            "slots": self.slot_count,
            "transmissions": [t.model_dump(mode="json", exclude={"url"}) for t in transmissions],
        }
        data = json.dumps(index, indent=1).encode()
        write_atomically(os.path.join(self.path, "index.json"), data)
        write_atomically(os.path.join(self.path, "chapters.vtt"), chapters(transmissions).encode())


def _vtt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def chapters(transmissions: list[Transmission]) -> str:
    """WebVTT chapters: one cue per transmission, the callsign over its span in net.opus."""
    lines = ["WEBVTT", ""]
    for t in transmissions:
        lines += [
            str(t.index + 1),
            f"{_vtt_time(t.offset)} --> {_vtt_time(t.offset + t.duration)}",
            t.callsign or t.participantId,
            "",
        ]
    return "\n".join(lines)


class RecordingWriter:
    """The worker's one writer thread: every recording's files, off the event loop."""

    def __init__(self, poll: float = POLL) -> None:
        self.poll = poll
        self._recordings: list[Recording] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def add(self, recording: Recording) -> None:
        self._recordings.append(recording)
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="recording-writer", daemon=True)
            self._thread.start()

    @property
    def active(self) -> int:
        return len(self._recordings)

    def _run(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            for recording in list(self._recordings):
                if stopping and recording.request is None:
                    recording.request = ("stopped", None, time.monotonic())
                try:
                    over = recording.step(time.monotonic())
                except Exception:  # a bug must not leave the thread dead for other rooms
                    logger.exception("recording %s failed", recording.id)
                    over = True
                    recording.crashed()
                if over:
                    self._recordings.remove(recording)
            if stopping:
                return
            self._stopping.wait(self.poll)

    async def stop(self) -> None:
        """Close every recording still open and end the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            await asyncio.to_thread(thread.join, STOP_WAIT)
