"""The hot path: tap publishers' Opus RTP and send it on to subscribers without decoding.

aiortc would push every received packet through a jitter buffer (~80 ms) and an Opus
decoder, and its senders would re-encode; a forwarder needs neither. The tap replaces a
publisher receiver's `_handle_rtp_packet` (after SRTP unprotect and parsing, before the
jitter buffer), so the decoder never sees a packet. Sending bypasses the subscriber's
`RTCRtpSender`: the forwarder writes the RTP header itself and calls the subscriber's
SRTP `protect` and UDP `sendto` directly. Python glue dominates the cost, so the work
per subscriber is just those two calls; everything that can be shared is done once per
*group* of subscribers.

A group is the subscribers of one slot that want byte-identical packets: same payload
type and header-extension ids (the "layout", fixed at negotiation) and the same
sequence/timestamp offsets. Offsets are constant while a slot carries one source, so
loss stays visible downstream, and are rebased when the slot's source changes so both
numbers stay monotonic for every subscriber. A publisher never receives its own audio:
while it is a slot's source its output of that slot sits in its own paused group.

Given the native fan-out (native.py), the per-subscriber loop over direct UDP sinks is
one C call per group instead; TURN-relayed and test sinks stay in Python. Both loops send
the same bytes (tests/test_sfu_native.py).

The private names of aiortc, aioice and pylibsrtp this needs (the receiver tap, the
sender's counters, the transport's SRTP context and socket) live in `aiortc_private.py`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Iterable
from typing import Any

from aiortc import RTCRtpSender, clock
from aiortc.rtp import RtcpSdesPacket, RtcpSourceInfo, RtpPacket

from yahaml_voice.core.aio import cancel_and_wait, every

from .aiortc_private import (
    OPUS_RATE,
    AnySink,
    FastSink,
    Sink,
    record_sender_report,
    send_rtcp,
    sender_cname,
    srtp_ffi,
    srtp_protect,
)
from .native import Batch, Fanout, NativeSink
from .recording import RecordTap

logger = logging.getLogger(__name__)

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
OPUS_FRAME = 960  # 20 ms at 48 kHz: the smallest timestamp step after a source change
# Sender Reports per output: the first about a second after it starts, then about every
# 5 s (libwebrtc's audio interval), each spread by +-50 % (RFC 3550 6.2).
FIRST_REPORT = 1.0
REPORT_INTERVAL = 5.0
REPORT_TICK = 0.2
_SR = struct.Struct("!BBHIIIIII")  # V/RC, PT 200, length 6, SSRC, NTP (2), RTP ts, counts

_HEADER = struct.Struct("!BBHII")
_NTP_PER_SECOND = 1 << 32

# libsrtp's largest trailer (tag + MKI) on top of an MTU-sized packet.
_SCRATCH = 1500 + 16 + 128


def _ext_block(elements: bytes) -> bytes:
    """An RFC 8285 one-byte-header extension block (empty when there are no elements)."""
    if not elements:
        return b""
    elements += b"\0" * (-len(elements) % 4)
    return struct.pack("!HH", 0xBEDE, len(elements) // 4) + elements


class Layout:
    """What one subscriber's slot negotiated: Opus payload type and extension ids.

    The extension block for every possible audio-level byte is built once, so a packet
    header is one struct pack plus two concatenations.
    """

    __slots__ = ("ext_by_level", "ext_none", "key", "pt")

    def __init__(self, pt: int, level_id: Any, mid_id: Any, mid: str | None) -> None:
        self.pt = pt
        self.key = (pt, level_id, mid_id, mid)
        prefix = b""
        if mid_id and mid and 1 <= mid_id <= 14 and 1 <= len(mid.encode()) <= 16:
            raw = mid.encode()
            prefix = bytes([(mid_id << 4) | (len(raw) - 1)]) + raw
        self.ext_none = _ext_block(prefix)
        if level_id and 1 <= level_id <= 14:
            self.ext_by_level = tuple(
                _ext_block(prefix + bytes([level_id << 4, value])) for value in range(256)
            )
        else:
            self.ext_by_level = (self.ext_none,) * 256

    @classmethod
    def from_parameters(cls, pt: int, extensions: Iterable[Any], mid: str | None) -> Layout:
        """From a transceiver's negotiated RTCRtpHeaderExtensionParameters."""
        ids = {ext.uri: ext.id for ext in extensions}
        return cls(pt, ids.get(AUDIO_LEVEL_URI), ids.get(MID_URI), mid)


class _Group:
    """Subscribers of one slot that receive byte-identical packets."""

    __slots__ = (
        "fast",
        "last_seq",
        "last_time",
        "last_ts",
        "layout",
        "native",
        "octets",
        "outputs",
        "packets",
        "paused",
        "rebase",
        "seq_off",
        "sinks",
        "ts_off",
    )

    def __init__(self, layout: Layout, clone: _Group | None = None, paused: bool = False) -> None:
        self.layout = layout
        self.fast: list[FastSink] = []
        self.sinks: list[Sink] = []
        self.native: Batch | None = None
        self.outputs: list[Output] = []
        self.paused = paused
        self.packets = 0
        self.octets = 0
        # Lower half of the sequence space: see aiortc's random_sequence_number.
        self.seq_off: int = 0
        self.ts_off: int = 0
        self.last_seq: int = random.randrange(1 << 15)
        self.last_ts: int = random.getrandbits(32)
        self.last_time: float = time.monotonic()
        self.rebase: bool = True
        if clone is not None:
            self.seq_off, self.ts_off = clone.seq_off, clone.ts_off
            self.last_seq, self.last_ts = clone.last_seq, clone.last_ts
            self.last_time, self.rebase = clone.last_time, clone.rebase

    def rebase_to(self, seq: int, ts: int, now: float) -> None:
        """Offsets so the next packet follows the last one sent, timestamp by wall time."""
        step = max(OPUS_FRAME, int((now - self.last_time) * OPUS_RATE))
        self.seq_off = (self.last_seq + 1 - seq) & 0xFFFF
        self.ts_off = (self.last_ts + step - ts) & 0xFFFFFFFF
        self.rebase = False


class Output:
    """One subscriber's slot: its sink, its sender (for Sender Reports) and counters."""

    __slots__ = (
        "acc_octets",
        "acc_packets",
        "base_octets",
        "base_packets",
        "group",
        "index",
        "layout",
        "native",
        "next_report",
        "sdes",
        "sender",
        "sink",
        "subscriber",
    )

    def __init__(
        self,
        subscriber: str,
        index: int,
        layout: Layout,
        sink: AnySink,
        sender: RTCRtpSender | None,
    ) -> None:
        self.subscriber = subscriber
        self.index = index
        self.layout = layout
        self.sink = sink
        self.sender = sender
        self.native: NativeSink | None = None
        self.group: _Group | None = None
        self.acc_packets = self.acc_octets = 0
        self.base_packets = self.base_octets = 0
        self.next_report = time.monotonic() + FIRST_REPORT * (0.5 + random.random())
        self.sdes: bytes | None = None

    def counts(self) -> tuple[int, int]:
        """Packets and payload octets sent to this subscriber on this slot so far."""
        group = self.group
        if group is None:
            return self.acc_packets, self.acc_octets
        return (
            self.acc_packets + group.packets - self.base_packets,
            self.acc_octets + group.octets - self.base_octets,
        )


class _Slot:
    __slots__ = ("groups", "index", "source", "ssrc")

    def __init__(self, index: int) -> None:
        self.index = index
        self.source: str | None = None
        # One SSRC per room slot, shared by every subscriber's sender of that slot (each
        # has its own SRTP session), so subscribers can share prepared packets.
        self.ssrc = random.getrandbits(32) or 1
        self.groups: list[_Group] = []


class Forwarder:
    """Forwards the sources of one room's slots to every subscriber's outputs."""

    def __init__(self, slots: int, fanout: Fanout | None = None) -> None:
        self.slots = [_Slot(i) for i in range(slots)]
        # The native fan-out for direct UDP sinks, or None: the Python loop for all.
        self.fanout = fanout
        self._slot_of: dict[str, _Slot] = {}
        self._outputs: dict[tuple[str, int], Output] = {}
        self._task: asyncio.Task[None] | None = None
        self._layouts: dict[tuple[Any, ...], Layout] = {}
        self._scratch = srtp_ffi.new("char[]", _SCRATCH)
        self._scratch_buffer = srtp_ffi.buffer(self._scratch)
        self._scratch_view = memoryview(self._scratch_buffer)
        self._length = srtp_ffi.new("int *")
        self.packets_in = 0
        self.packets_out = 0
        self.send_errors = 0
        # A recorded room's tap (recording.py): each forwarded packet is queued there too.
        self.recording: RecordTap | None = None
        # Outputs that `send_to` is feeding now (a parrot playback).
        self._sending: set[tuple[str, int]] = set()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            reports = every(
                REPORT_TICK,
                self._send_due_reports,
                what="sender reports",
                log=logger,
                wait_first=True,
            )
            self._task = asyncio.get_running_loop().create_task(reports)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for out in list(self._outputs.values()):
            self.remove_output(out.subscriber, out.index)

    # ------------------------------------------------------------ control (not hot)

    def layout(self, pt: int, extensions: Iterable[Any], mid: str | None) -> Layout:
        """The (shared) Layout of a negotiated transceiver."""
        ids = {ext.uri: ext.id for ext in extensions}
        key = (pt, ids.get(AUDIO_LEVEL_URI), ids.get(MID_URI), mid)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = Layout(*key)
        return layout

    def ssrc(self, index: int) -> int:
        return self.slots[index].ssrc

    @property
    def output_count(self) -> int:
        return len(self._outputs)

    def source(self, index: int) -> str | None:
        return self.slots[index].source

    def set_source(self, index: int, participant_id: str | None) -> None:
        """Put `participant_id` (or nobody) into slot `index`; rebase every group."""
        slot = self.slots[index]
        old = slot.source
        if old == participant_id:
            return
        if old is not None and self._slot_of.get(old) is slot:
            del self._slot_of[old]
        if participant_id is not None:
            previous = self._slot_of.get(participant_id)
            if previous is not None and previous is not slot:
                self.set_source(previous.index, None)
            self._slot_of[participant_id] = slot
        slot.source = participant_id
        for group in slot.groups:
            group.paused = False
            group.rebase = True
        if participant_id is not None:
            own = self._outputs.get((participant_id, index))
            if own is not None and own.group is not None:
                self._move(own, _Group(own.layout, clone=own.group, paused=True))
        self._prune(slot)

    def rebase(self, index: int) -> None:
        """The source of slot `index` jumped in its numbering (a relayed stream restarted):
        continue every group's numbering from where it was, as on a source change."""
        for group in self.slots[index].groups:
            group.rebase = True

    def add_output(
        self,
        subscriber: str,
        index: int,
        layout: Layout,
        sink: AnySink,
        sender: RTCRtpSender | None = None,
        first: bool = False,
    ) -> Output:
        """Start sending slot `index` to a subscriber (replacing an older output). `first`:
        in a group of its own, served before every other group of the slot (an edge
        worker's link: its listeners should not wait for this worker's whole fan-out)."""
        self.remove_output(subscriber, index)
        slot = self.slots[index]
        out = Output(subscriber, index, layout, sink, sender)
        if self.fanout is not None and len(sink) == 5:
            try:
                out.native = NativeSink(sink)
            except OSError as exc:  # no fd to spare: this output takes the Python loop
                logger.warning("native sink for %s: %s", subscriber, exc)
        if slot.source == subscriber or first:
            group = _Group(layout, paused=slot.source == subscriber)
        else:
            candidates = [g for g in slot.groups if not g.paused and g.layout.key == layout.key]
            group = max(candidates, key=lambda g: len(g.outputs)) if candidates else _Group(layout)
        self._move(out, group, first)
        self._outputs[(subscriber, index)] = out
        return out

    def repoint(self, subscriber: str, index: int, sink: AnySink) -> bool:
        """Send an output on another path (its connection restarted ICE): the same output
        in the same group, so numbering, counts and Sender Reports go on. False: no such
        output."""
        out = self._outputs.get((subscriber, index))
        if out is None:
            return False
        group = out.group
        if group is not None:
            self._leave(out)
        if out.native is not None:
            out.native.close()
            out.native = None
        out.sink = sink
        if self.fanout is not None and len(sink) == 5:
            try:
                out.native = NativeSink(sink)
            except OSError as exc:
                logger.warning("native sink for %s: %s", subscriber, exc)
        if group is not None:
            self._move(out, group)
        return True

    def remove_output(self, subscriber: str, index: int) -> None:
        out = self._outputs.pop((subscriber, index), None)
        if out is not None and out.group is not None:
            self._leave(out)
            self._prune(self.slots[index])
        if out is not None and out.native is not None:
            out.native.close()

    def remove_subscriber(self, subscriber: str) -> None:
        for index in range(len(self.slots)):
            self.remove_output(subscriber, index)

    def outputs(self) -> list[Output]:
        return list(self._outputs.values())

    def _move(self, out: Output, group: _Group, first: bool = False) -> None:
        slot = self.slots[out.index]
        if out.group is not None:
            self._leave(out)
        if group not in slot.groups:
            if first:
                slot.groups.insert(0, group)
            else:
                slot.groups.append(group)
        out.group = group
        out.base_packets, out.base_octets = group.packets, group.octets
        group.outputs.append(out)
        if out.native is not None:
            if group.native is None:
                assert self.fanout is not None
                group.native = self.fanout.batch()
            group.native.add(out.native)
        elif len(out.sink) == 5:
            group.fast.append(out.sink)
        else:
            group.sinks.append(out.sink)

    @staticmethod
    def _leave(out: Output) -> None:
        group = out.group
        assert group is not None
        out.acc_packets += group.packets - out.base_packets
        out.acc_octets += group.octets - out.base_octets
        group.outputs.remove(out)
        if out.native is not None and group.native is not None:
            group.native.remove(out.native)
        sinks: list[Any] = group.fast if len(out.sink) == 5 else group.sinks
        for index, sink in enumerate(sinks):
            if sink is out.sink:
                del sinks[index]
                break
        out.group = None

    @staticmethod
    def _prune(slot: _Slot) -> None:
        slot.groups = [g for g in slot.groups if g.outputs]

    def inject(self, index: int, source: str, packet: RtpPacket) -> None:
        """Send a synthetic source's packet (a courtesy tone) in slot `index`.

        The synthetic source takes the slot over (its previous source's packets are no
        longer forwarded there) and gets the usual per-group rewriting, so numbering stays
        monotonic for every subscriber; give the slot back with `set_source`. `source`
        must not be a participant id.
        """
        if self.slots[index].source != source:
            self.set_source(index, source)
        self.forward(source, packet)

    # ------------------------------------------------------------ hot path

    def forward(self, source: str, packet: RtpPacket) -> None:
        """Send one publisher packet to every subscriber of the slot it occupies."""
        self.packets_in += 1
        slot = self._slot_of.get(source)
        if slot is None:
            return
        payload = packet.payload
        level = packet.extensions.audio_level
        level_byte = -1 if level is None else ((0x80 if level[0] else 0) | level[1])
        seq = packet.sequence_number
        ts = packet.timestamp
        marker = packet.marker << 7
        now = time.monotonic()
        tap = self.recording
        if tap is not None:  # one bounded append; the writer thread does the rest
            items = tap.items
            if len(items) < tap.limit:
                items.append((slot.index, source, ts, now, level_byte, payload))
            else:
                tap.overflow()
        self._send(slot.groups, slot.ssrc, seq, ts, marker, level_byte, payload, now)

    def send_to(self, subscriber: str, index: int, packet: RtpPacket) -> None:
        """Send a packet to ONE subscriber's output of slot `index` (a parrot room's
        playback), with that output's numbering continued; other subscribers see nothing.

        The output leaves its shared group for one of its own (cloned numbering, rebased
        at the first packet), so the packets others get stay byte-identical among them.
        """
        out = self._outputs.get((subscriber, index))
        group = out.group if out is not None else None
        if out is None or group is None:
            return
        if len(group.outputs) > 1 or group.paused:
            private = _Group(out.layout, clone=group)
            self._move(out, private)
            self._prune(self.slots[index])
            group = private
        if (subscriber, index) not in self._sending:  # a new run: continue the numbering
            self._sending.add((subscriber, index))
            group.rebase = True
        level = packet.extensions.audio_level
        level_byte = -1 if level is None else ((0x80 if level[0] else 0) | level[1])
        self._send(
            [group],
            self.slots[index].ssrc,
            packet.sequence_number,
            packet.timestamp,
            packet.marker << 7,
            level_byte,
            packet.payload,
            time.monotonic(),
        )

    def end_send_to(self, subscriber: str, index: int) -> None:
        """The packets `send_to` gave this output are over: whatever comes next in the
        slot continues its numbering from them (as after a source change)."""
        self._sending.discard((subscriber, index))
        out = self._outputs.get((subscriber, index))
        if out is not None and out.group is not None:
            out.group.rebase = True

    def _send(
        self,
        groups: list[_Group],
        ssrc: int,
        seq: int,
        ts: int,
        marker: int,
        level_byte: int,
        payload: bytes,
        now: float,
    ) -> None:
        """Rewrite one packet per group and send it to every output of the group."""
        pack = _HEADER.pack
        scratch, scratch_buffer, view, length = (
            self._scratch,
            self._scratch_buffer,
            self._scratch_view,
            self._length,
        )
        protect = srtp_protect
        sent = errors = 0
        fanout = self.fanout
        if fanout is not None:
            fanout.errors[0] = 0
        for group in groups:
            if group.paused or not group.outputs:
                continue
            if group.rebase:
                group.rebase_to(seq, ts, now)
            out_seq = (seq + group.seq_off) & 0xFFFF
            out_ts = (ts + group.ts_off) & 0xFFFFFFFF
            layout = group.layout
            ext = layout.ext_none if level_byte < 0 else layout.ext_by_level[level_byte]
            data = pack(0x90 if ext else 0x80, marker | layout.pt, out_seq, out_ts, ssrc)
            data += ext
            data += payload
            size = len(data)
            if size > 1500:
                continue  # larger than an MTU: not an Opus packet we forward
            batch = group.native
            if batch is not None and batch.count and fanout is not None:
                # Every direct subscriber of the group in one C call (native.py).
                fanout.send(data, size, batch.array, batch.count, fanout.scratch, fanout.errors)
            # Per subscriber: copy in, protect in place, send. Nothing else.
            for context, sendto, addr, _owner, _sock in group.fast:
                scratch_buffer[0:size] = data
                length[0] = size
                if protect(context, scratch, length):
                    errors += 1
                    continue
                try:
                    sendto(view[0 : length[0]], addr)
                except OSError:  # a full socket buffer: this subscriber loses this packet
                    errors += 1
            for protect_one, send_one, addr in group.sinks:
                try:
                    send_one(protect_one(data), addr)
                except Exception:
                    errors += 1
            sent += len(group.outputs)
            if (out_seq - group.last_seq) & 0xFFFF < 0x8000:
                group.last_seq = out_seq
                group.last_ts = out_ts
            group.last_time = now
            group.packets += 1
            group.octets += len(payload)
        if fanout is not None:
            errors += fanout.errors[0]
        self.send_errors += errors
        self.packets_out += sent

    # ------------------------------------------------------------ Sender Reports

    async def _send_due_reports(self) -> None:
        """Send each output's SR (+ SDES) about every 5 s with truthful counters."""
        now = time.monotonic()
        due = [o for o in self._outputs.values() if o.next_report <= now]
        for out in due:
            out.next_report = now + REPORT_INTERVAL * (0.5 + random.random())
            try:
                await self._report(out, now)
            except (ConnectionError, OSError):
                pass
            except Exception:
                logger.exception("sender report for %s failed", out.subscriber)

    async def _report(self, out: Output, now: float) -> None:
        """An SR for what this subscriber got on this slot, as of now (RFC 3550 6.4.1).

        The RTP timestamp is the last packet's extrapolated to the report's NTP time, so
        the pair describes one instant; counts are this subscriber's own.
        """
        sender, group = out.sender, out.group
        if sender is None or group is None:
            return
        packets, octets = out.counts()
        if not packets:
            return
        ssrc = self.slots[out.index].ssrc
        ntp = clock.current_ntp_time()
        rtp_ts = (group.last_ts + int((now - group.last_time) * OPUS_RATE)) & 0xFFFFFFFF
        data = _SR.pack(
            0x80,
            200,
            6,
            ssrc,
            ntp >> 32,
            ntp & 0xFFFFFFFF,
            rtp_ts,
            packets & 0xFFFFFFFF,
            octets & 0xFFFFFFFF,
        )
        if out.sdes is None:
            cname = sender_cname(sender)
            out.sdes = (
                bytes(
                    RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=ssrc, items=[(1, cname.encode())])])
                )
                if cname
                else b""
            )
        data += out.sdes
        # Keep the sender's own view (getStats, RTT from receiver reports) consistent.
        record_sender_report(sender, packets, octets, ntp, rtp_ts)
        sink = out.sink
        if len(sink) == 5:
            _context, sendto, addr, session, _sock = sink
            sendto(session.protect_rtcp(data), addr)
        else:
            await send_rtcp(sender, data)
