"""Packet rewriting of the forwarder, with sinks that record instead of sending.

The sink is the forwarder's own seam (protect, sendto, addr); real SRTP and real
sockets are exercised by test_sfu_worker.py with real aiortc peers.
"""

from __future__ import annotations

import itertools
import struct

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from yahaml_voice.sfu.forwarder import AUDIO_LEVEL_URI, MID_URI, Forwarder, Layout, Sink


def layout(pt: int = 111, level_id: int | None = 1, mid_id: int | None = 4) -> Layout:
    return Layout(pt, level_id, mid_id, "0")


def recorder() -> tuple[Sink, list[bytes]]:
    sent: list[bytes] = []
    return (lambda data: data, lambda data, addr: sent.append(data), None), sent


def packet(seq: int, ts: int, level: int | None = 30, payload: bytes = b"\xfc opus") -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, ssrc=1234, payload=payload)
    if level is not None:
        p.extensions.audio_level = (True, level)
    return p


def parse(data: bytes, lay: Layout, level_id: int = 1, mid_id: int = 4) -> RtpPacket:
    ext_map = HeaderExtensionsMap()
    ext_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=level_id, uri=AUDIO_LEVEL_URI),
                RTCRtpHeaderExtensionParameters(id=mid_id, uri=MID_URI),
            ]
        )
    )
    return RtpPacket.parse(data, ext_map)


def test_header_is_rewritten_and_extensions_carried() -> None:
    fwd = Forwarder(3)
    sink, sent = recorder()
    lay = layout()
    fwd.add_output("sub", 1, lay, sink)
    fwd.set_source(1, "pub")
    fwd.forward("pub", packet(1000, 5000, level=33))
    fwd.forward("pub", packet(1001, 5960, level=40))
    fwd.forward("other", packet(7, 7))  # not in a slot: dropped
    assert len(sent) == 2
    first, second = parse(sent[0], lay), parse(sent[1], lay)
    assert first.payload_type == 111 and first.ssrc == fwd.ssrc(1)
    assert first.payload == b"\xfc opus"
    assert first.extensions.audio_level == (True, 33)
    assert first.extensions.mid == "0"
    assert (second.sequence_number - first.sequence_number) & 0xFFFF == 1
    assert (second.timestamp - first.timestamp) & 0xFFFFFFFF == 960
    assert second.extensions.audio_level == (True, 40)
    assert fwd.packets_out == 2


def test_no_extension_when_none_negotiated() -> None:
    fwd = Forwarder(1)
    sink, sent = recorder()
    fwd.add_output("sub", 0, Layout(96, None, None, None), sink)
    fwd.set_source(0, "pub")
    fwd.forward("pub", packet(1, 1))
    assert sent[0][0] == 0x80 and len(sent[0]) == 12 + len(b"\xfc opus")


def test_loss_stays_visible_and_source_change_rebases_monotonically() -> None:
    fwd = Forwarder(1)
    sink, sent = recorder()
    lay = layout()
    fwd.add_output("sub", 0, lay, sink)
    fwd.set_source(0, "a")
    fwd.forward("a", packet(100, 10_000))
    fwd.forward("a", packet(103, 10_000 + 3 * 960))  # two packets lost upstream
    fwd.set_source(0, "b")
    fwd.forward("b", packet(60_000, 4_000_000_000))
    fwd.forward("b", packet(60_001, 4_000_000_960))
    seqs = [parse(d, lay).sequence_number for d in sent]
    stamps = [parse(d, lay).timestamp for d in sent]
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == [0, 3, 4, 5]
    deltas = [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)]
    assert deltas[0] == 3 * 960 and deltas[1] >= 960 and deltas[1] < 48000 and deltas[2] == 960


def test_publisher_never_receives_itself_and_keeps_its_own_numbering() -> None:
    fwd = Forwarder(1)
    lay = layout()
    sink_a, sent_a = recorder()
    sink_b, sent_b = recorder()
    fwd.add_output("a", 0, lay, sink_a)
    fwd.add_output("b", 0, lay, sink_b)
    fwd.set_source(0, "b")
    fwd.forward("b", packet(10, 100))
    assert len(sent_a) == 1 and sent_b == []
    fwd.set_source(0, "a")
    fwd.forward("a", packet(500, 9000))
    fwd.forward("a", packet(501, 9960))
    assert len(sent_a) == 1 and len(sent_b) == 2
    fwd.set_source(0, "b")
    fwd.forward("b", packet(11, 1060))
    a_seqs = [parse(d, lay).sequence_number for d in sent_a]
    b_seqs = [parse(d, lay).sequence_number for d in sent_b]
    assert (a_seqs[1] - a_seqs[0]) & 0xFFFF == 1  # no phantom loss for a
    assert len(b_seqs) == 2 and (b_seqs[1] - b_seqs[0]) & 0xFFFF == 1
    # Sender Report counters are per subscriber.
    counts = {o.subscriber: o.counts() for o in fwd.outputs()}
    assert counts["a"] == (2, 2 * len(b"\xfc opus"))
    assert counts["b"] == (2, 2 * len(b"\xfc opus"))


def test_subscribers_with_different_layouts_get_their_own_headers() -> None:
    fwd = Forwarder(1)
    chrome, aiortc_ = Layout(111, 1, 4, "0"), Layout(96, 2, 1, "0")
    sink1, sent1 = recorder()
    sink2, sent2 = recorder()
    fwd.add_output("s1", 0, chrome, sink1)
    fwd.add_output("s2", 0, aiortc_, sink2)
    fwd.set_source(0, "p")
    fwd.forward("p", packet(1, 1, level=50))
    p1 = parse(sent1[0], chrome)
    p2 = parse(sent2[0], aiortc_, level_id=2, mid_id=1)
    assert p1.payload_type == 111 and p2.payload_type == 96
    assert p1.extensions.audio_level == p2.extensions.audio_level == (True, 50)


def test_removed_and_replaced_outputs() -> None:
    fwd = Forwarder(2)
    sink, sent = recorder()
    lay = layout()
    fwd.add_output("s", 0, lay, sink)
    fwd.add_output("s", 0, lay, sink)  # replaces, does not duplicate
    fwd.set_source(0, "p")
    fwd.forward("p", packet(1, 1))
    assert len(sent) == 1 and fwd.output_count == 1
    fwd.remove_subscriber("s")
    fwd.forward("p", packet(2, 961))
    assert len(sent) == 1 and fwd.output_count == 0


def test_moving_a_source_between_slots_leaves_the_old_slot_empty() -> None:
    fwd = Forwarder(2)
    fwd.set_source(0, "p")
    fwd.set_source(1, "p")
    assert fwd.source(0) is None and fwd.source(1) == "p"


def test_layout_extension_block_is_padded() -> None:
    lay = Layout(111, 1, 4, "10")
    block = lay.ext_by_level[0x85]
    profile, words = struct.unpack("!HH", block[:4])
    assert profile == 0xBEDE and len(block) == 4 + 4 * words
    assert block[4:7] == bytes([(4 << 4) | 1]) + b"10"
    assert block[7:9] == bytes([1 << 4, 0x85])


def test_injected_source_takes_the_slot_and_numbering_stays_monotonic() -> None:
    fwd = Forwarder(1)
    lay = layout()
    sink_a, sent_a = recorder()
    sink_b, sent_b = recorder()
    fwd.add_output("a", 0, lay, sink_a)
    fwd.add_output("b", 0, lay, sink_b)
    fwd.set_source(0, "a")
    fwd.forward("a", packet(100, 10_000))
    fwd.forward("a", packet(101, 10_960))
    # A courtesy tone: a's own further packets are no longer forwarded, a hears the tone.
    fwd.inject(0, "\0tone", packet(7, 70, level=20, payload=b"tone1"))
    fwd.forward("a", packet(102, 11_920))
    fwd.inject(0, "\0tone", packet(8, 1030, level=20, payload=b"tone2"))
    fwd.set_source(0, "a")
    fwd.forward("a", packet(103, 12_880))
    assert [parse(d, lay).payload for d in sent_b] == [b"\xfc opus"] * 2 + [
        b"tone1",
        b"tone2",
        b"\xfc opus",
    ]
    assert [parse(d, lay).payload for d in sent_a] == [b"tone1", b"tone2"]
    for sent in (sent_a, sent_b):
        seqs = [parse(d, lay).sequence_number for d in sent]
        stamps = [parse(d, lay).timestamp for d in sent]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        assert all(0 < (b - a) & 0xFFFFFFFF < 48000 for a, b in itertools.pairwise(stamps))
