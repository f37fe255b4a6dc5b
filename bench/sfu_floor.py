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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench floor", description=__doc__)
    parser.add_argument("--listeners", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--packets", type=int, default=400, help="per block")
    parser.add_argument("--output", help="JSON file (default: bench/results/sfu-floor.json)")
    args = parser.parse_args(argv)
    room, publisher, outsider, _keep = build(args.listeners)
    n, packets = args.listeners, args.packets
    per_packet: dict[str, list[float]] = {"off": [], "on": [], "dropped": []}
    seq = 0
    block(publisher, packets, seq)  # warm-up
    for round_ in range(args.rounds):
        modes = ("off", "on") if round_ % 2 == 0 else ("on", "off")
        for mode in modes:
            (floor_on if mode == "on" else floor_off)(room)
            seq += packets
            cpu = block(publisher, packets, seq)
            per_packet[mode].append(cpu * 1e6 / (packets * n))  # us per delivered packet
        floor_on(room)
        seq += packets
        cpu = block(outsider, packets, seq)  # not a talker: dropped at the gate
        per_packet["dropped"].append(cpu * 1e6 / packets)  # us per received packet
    floor_off(room)
    sent_check = room.forwarder.packets_out
    off = statistics.median(per_packet["off"])
    on = statistics.median(per_packet["on"])
    dropped = statistics.median(per_packet["dropped"])
    result = {
        "benchmark": "sfu_floor",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "listeners": n,
        "rounds": args.rounds,
        "packets_per_block": packets,
        "us_per_delivered_packet_off": round(off, 4),
        "us_per_delivered_packet_on": round(on, 4),
        "on_over_off": round(on / off, 4),
        "us_per_dropped_packet": round(dropped, 3),
        "us_per_received_packet_off": round(off * n, 2),
        "us_per_received_packet_on": round(on * n, 2),
        "packets_out": sent_check,
        "load_avg": os.getloadavg(),
        "samples": {k: [round(x, 4) for x in v] for k, v in per_packet.items()},
    }
    print(
        f"{n} listeners: off {off:.3f} us/pkt, on {on:.3f} us/pkt, on/off {on / off:.3f}; "
        f"a dropped non-talker packet {dropped:.2f} us"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = Path(args.output) if args.output else RESULTS / "sfu-floor.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0
