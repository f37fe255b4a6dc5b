"""Net control's cost on the SFU hot path: CPU per forwarded packet, floor checks on vs off.

Drives the worker's real receive path in-process: a publisher `Peer`'s tap callback
(`_on_packet`: floor gate, time-out timer, slot levels, `Forwarder.forward`) for one
publisher and N subscribers, each with its own libsrtp context and a real UDP `sendto`
on loopback (to a socket nobody reads: the kernel drops what overflows, the send cost is
the same). `off` is a room that never got a floor frame (today's behaviour); `on` is a
directed room with the publisher among the talkers, a time-out timer, a courtesy tone and
a muted list, so every packet takes every check. The two alternate in short blocks so
machine noise hits both alike; medians are reported. A third figure is the cost of a
dropped (non-talker) packet.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session

from yahaml_voice.core.config import load_config
from yahaml_voice.core.protocol import CourtesyTone, ToWorkerFloor
from yahaml_voice.sfu.forwarder import Layout
from yahaml_voice.sfu.worker import Peer, Room, Worker

RESULTS = Path(__file__).resolve().parent / "results"
PAYLOAD = bytes(range(80))  # a typical 32 kbit/s 20 ms Opus frame's size


def build(listeners: int) -> tuple[Room, Peer, Peer, list[Any]]:
    worker = Worker(load_config(environ={}), "bench", lambda frame: None)
    room = Room(worker, "bench")  # not started: no ticks, no Sender Reports
    publisher, outsider = Peer(room, "pub"), Peer(room, "outsider")
    room.peers.update(pub=publisher, outsider=outsider)
    for peer in (publisher, outsider):
        room.selector.add(peer.id)
    room.forwarder.set_source(0, "pub")
    sink_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink_socket.bind(("127.0.0.1", 0))
    send_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    send_socket.setblocking(False)
    address = sink_socket.getsockname()
    layout = Layout(111, 1, 4, "0")
    keep: list[Any] = [sink_socket, send_socket]
    for index in range(listeners):
        policy = Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND)
        session = Session(policy=policy)
        keep.append(session)
        sink = (session._srtp[0], send_socket.sendto, address, session)
        room.forwarder.add_output(f"l{index}", 0, layout, sink)
    return room, publisher, outsider, keep


def floor_on(room: Room) -> None:
    room.set_floor(
        ToWorkerFloor(
            roomId=room.id,
            directed=True,
            talkers=["pub", "ncs"],
            muted=["someone"],
            tot=3600.0,
            totReset=5.0,
            courtesy=CourtesyTone(hz=1000, ms=200),
            exempt=["ncs"],
        )
    )


def floor_off(room: Room) -> None:
    room.floor = None
    for peer in room.peers.values():
        peer.apply_floor()


def block(peer: Peer, packets: int, start: int) -> float:
    """CPU seconds for `packets` packets through the tap callback."""
    on_packet = peer._on_packet
    made = []
    for i in range(start, start + packets):
        packet = RtpPacket(
            payload_type=111,
            sequence_number=i & 0xFFFF,
            timestamp=(i * 960) & 0xFFFFFFFF,
            ssrc=1234,
            payload=PAYLOAD,
        )
        packet.extensions.audio_level = (True, 20)
        made.append(packet)
    gc.collect()
    t0 = time.process_time()
    for packet in made:
        on_packet(packet)
    return time.process_time() - t0


def compare(listeners: int, rounds: int, packets: int) -> dict[str, Any]:
    """Alternating off/on blocks (order flipped each round) plus dropped-packet blocks."""
    room, publisher, outsider, _keep = build(listeners)
    samples: dict[str, list[float]] = {"off": [], "on": [], "dropped": []}
    seq = 0
    block(publisher, packets, seq)  # warm-up
    for round_ in range(rounds):
        for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
            (floor_on if mode == "on" else floor_off)(room)
            seq += packets
            samples[mode].append(block(publisher, packets, seq) * 1e6 / packets)
        floor_on(room)
        seq += packets
        samples["dropped"].append(block(outsider, packets, seq) * 1e6 / packets)
    floor_off(room)
    expected = (2 * rounds + 1) * packets * listeners
    assert room.forwarder.packets_out == expected, "every forwarded packet reached everyone"
    pairs = [on / off for off, on in zip(samples["off"], samples["on"], strict=True)]
    return {
        "listeners": listeners,
        "rounds": rounds,
        "packets_per_block": packets,
        # CPU microseconds per *received* packet (a packet sent to N listeners).
        "us_per_received_packet": {
            mode: {"median": round(statistics.median(v), 3), "min": round(min(v), 3)}
            for mode, v in samples.items()
        },
        "on_over_off_median_of_pairs": round(statistics.median(pairs), 4),
        "samples": {k: [round(x, 3) for x in v] for k, v in samples.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench floor", description=__doc__)
    parser.add_argument("--listeners", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--packets", type=int, default=200, help="per block")
    parser.add_argument("--output", help="JSON file (default: bench/results/sfu-floor.json)")
    args = parser.parse_args(argv)
    n = args.listeners
    # The checks cost the same per received packet whatever the fan-out; with one listener
    # that cost is a larger share and measured more precisely: it bounds the overhead at N.
    one = compare(1, args.rounds, args.packets * 10)
    many = compare(n, args.rounds, args.packets)
    off_n = many["us_per_received_packet"]["off"]["median"]
    gate = (
        one["us_per_received_packet"]["on"]["median"]
        - one["us_per_received_packet"]["off"]["median"]
    )
    result = {
        "benchmark": "sfu_floor",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
        "listeners": n,
        "us_per_delivered_packet_off": round(off_n / n, 4),
        "us_per_delivered_packet_on": round(many["us_per_received_packet"]["on"]["median"] / n, 4),
        "on_over_off_measured": many["on_over_off_median_of_pairs"],
        "floor_checks_us_per_received_packet": round(gate, 3),
        "on_over_off_from_check_cost": round(1 + gate / off_n, 4),
        "us_per_dropped_packet": many["us_per_received_packet"]["dropped"]["median"],
        "runs": [one, many],
    }
    print(
        f"{n} listeners: off {off_n / n:.3f} us per delivered packet; floor checks on/off "
        f"{result['on_over_off_measured']:.3f} (median of paired blocks); the checks cost "
        f"{gate:.3f} us per received packet (1 listener) = "
        f"{100 * gate / off_n:+.2f} % at {n}; a dropped non-talker packet "
        f"{result['us_per_dropped_packet']:.2f} us"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = Path(args.output) if args.output else RESULTS / "sfu-floor.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0
