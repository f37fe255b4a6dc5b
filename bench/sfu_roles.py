"""The processes of the SFU benchmark: forwarders under test, the publisher, listeners.

Each role runs as its own process (`python -m bench.sfu_roles ROLE ...`) so the
forwarder's CPU time and the load generator's can be measured apart; the orchestrator
(bench/sfu_forwarding.py) talks to them with JSON lines on stdin/stdout.

- `ours`: the real `sfu.worker.Worker`, fed offers over a tiny JSON-lines TCP control
  port instead of the server's WebSocket (same `handle()`/`emit` path). For a room that
  spans workers (bench/sfu_cascade.py) it prints the `cascadeReady` frames it emits and
  takes server frames (`cascadeLink`) on stdin: the orchestrator relays like the server.
- `relay`: aiortc's MediaRelay (decode once, re-encode per listener), the baseline.
- `publisher`: one speaker sending real 20 ms Opus frames whose Opus padding carries a
  counter and the send time (CLOCK_MONOTONIC, shared by all processes), so listeners
  can count loss and latency without decoding. With `--direct` it serves one listener
  itself: the direct path that forwarding latency is measured against.
- `listeners`: N aiortc peers that read packets straight off their UDP socket (SRTP
  unprotect, header skip, no jitter buffer, no decoder) and record what arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import math
import os
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket

from tests.voiceclient import tap_rtp
from yahaml_voice.core.config import load_config
from yahaml_voice.core.protocol import WorkerFrame, wire
from yahaml_voice.sfu.aiortc_private import (
    make_sink,
    negotiated_layout,
    quiet_sender,
    restrict_ice_addresses,
    set_sender_ssrc,
)
from yahaml_voice.sfu.forwarder import Forwarder, Layout
from yahaml_voice.sfu.worker import Worker

logger = logging.getLogger(__name__)

MAGIC = b"YVB1"
MARK = struct.Struct("!4sIQ")  # magic, counter, send time (ns, CLOCK_MONOTONIC)
SLOTS = 3
FRAME = 960
OPUS_BITRATE = 32000
RECORDING_ID = "20260101T000000Z-0be7c0"


# ---------------------------------------------------------------- helpers


def say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def read_command() -> dict[str, Any]:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        return {"cmd": "exit"}
    result: dict[str, Any] = json.loads(line)
    return result


def opus_frames(count: int = 50) -> list[bytes]:
    """`count` real Opus packets (20 ms, 32 kb/s mono) of a 440 Hz tone."""
    import av

    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = OPUS_BITRATE
    codec.layout = "mono"
    codec.sample_rate = 48000
    codec.format = "s16"
    codec.time_base = fractions.Fraction(1, 48000)
    packets: list[bytes] = []
    pts = 0
    while len(packets) < count:
        t = (np.arange(FRAME) + pts) / 48000
        samples = (0.3 * 32767 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, 48000)
        pts += FRAME
        packets += [bytes(p) for p in codec.encode(frame)]
    return packets[:count]


def pad_opus(frame: bytes, extra: bytes) -> bytes:
    """The same Opus frame as a code-3 packet whose padding (ignored by decoders) is `extra`."""
    assert len(extra) < 255
    return bytes([frame[0] | 0x03, 0x41, len(extra)]) + frame[1:] + extra


def read_mark(payload: bytes) -> tuple[int, int] | None:
    if len(payload) < MARK.size:
        return None
    magic, counter, sent = MARK.unpack_from(payload, len(payload) - MARK.size)
    return (counter, sent) if magic == MAGIC else None


def loopback(address: str) -> None:
    """ICE host candidates on `address` only (127.0.0.1, or the bench namespace's)."""
    restrict_ice_addresses([address])
    assert aioice.ice.get_host_addresses(True, True) == [address]


def offer_message(pid: str, kind: str, sdp: str, origin: str = "") -> dict[str, Any]:
    """An offer for a forwarder's control port; `origin`: the room's origin worker, when
    the receiving worker is one of its edges."""
    message = {"id": pid, "kind": kind, "sdp": sdp}
    return {**message, "origin": origin} if origin else message


class ControlClient:
    """JSON-lines client of a forwarder's control port (ours, relay, direct)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
            assert self._reader is not None
            self._writer.write(json.dumps(message).encode() + b"\n")
            await self._writer.drain()
            line = await self._reader.readline()
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()


async def serve_control(handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> int:
    """Serve JSON-lines requests on a free loopback port; returns the port."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = await handler(json.loads(line))
                except Exception as exc:
                    logger.exception("control request failed")
                    answer = {"error": str(exc)}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    return port


async def wait_connected(pc: RTCPeerConnection, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            raise ConnectionError(f"peer connection {pc.connectionState}")
        await asyncio.sleep(0.02)


async def run_until_exit() -> None:
    while (await read_command()).get("cmd") != "exit":
        pass


# ---------------------------------------------------------------- forwarders


class Arrivals:
    """When marked packets reach this process's forwarder: publisher send to `forward()`,
    so added latency splits into the way in (publisher to origin, origin to edge) and
    the fan-out after it."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.delay: list[int] = []

    def percentiles(self, t0: int, t1: int) -> dict[str, float | None]:
        delays = [d for s, d in zip(self.sent, self.delay, strict=True) if t0 <= s < t1]
        if not delays:
            return {"arrival_p50_ms": None, "arrival_p99_ms": None}
        p50, p99 = (float(x) / 1e6 for x in np.percentile(delays, [50, 99]))
        return {"arrival_p50_ms": round(p50, 3), "arrival_p99_ms": round(p99, 3)}


def time_arrivals() -> Arrivals:
    """Record every marked packet `Forwarder.forward` gets in this process (once per
    packet and worker: 50 a second, not per listener)."""
    arrivals = Arrivals()
    forward = Forwarder.forward
    clock = time.monotonic_ns

    def timed(self: Forwarder, source: str, packet: RtpPacket) -> None:
        mark = read_mark(packet.payload)
        if mark is not None:
            arrivals.sent.append(mark[1])
            arrivals.delay.append(clock() - mark[1])
        forward(self, source, packet)

    Forwarder.forward = timed  # type: ignore[method-assign]
    return arrivals


async def role_ours(args: argparse.Namespace) -> None:
    """The real worker core behind a JSON-lines control port."""
    loopback(args.ice)
    overrides: dict[str, Any] = {"sfu.slots": SLOTS, "sfu.native": args.fanout == "native"}
    if args.record:
        overrides["recording.dir"] = args.record
    config = load_config(environ={}, overrides=overrides)
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def emit(frame: WorkerFrame) -> None:
        kind, data = frame.type, wire(frame)["data"]
        if kind == "signal" and data["type"] == "answer" and data["to"] in waiting:
            waiting.pop(data["to"]).set_result(data["data"])
        elif kind == "cascadeReady":  # for the orchestrator to relay, as the server would
            say({"frame": wire(frame)})

    worker = Worker(config, args.worker_id, emit)
    arrivals = time_arrivals()
    if args.record:  # record the room from its first peer on (sfu/recording.py)
        await worker.handle(
            {"type": "record", "data": {"roomId": "bench", "recordingId": RECORDING_ID}}
        )

    def stats(window: list[int] | None = None) -> dict[str, Any]:
        room = worker.rooms.get("bench")
        fwd = room.forwarder if room else None
        edge = room.edge if room else None
        return {
            "fanout": worker.load().fanout,
            "packets_out": fwd.packets_out if fwd else 0,
            "packets_in": fwd.packets_in if fwd else 0,
            "send_errors": fwd.send_errors if fwd else 0,
            "recording": fwd is not None and fwd.recording is not None,
            "links": sorted(room.links) if room else [],
            "cascade_received": edge.received if edge else None,
            "cascade_dropped": edge.dropped if edge else None,
            **(arrivals.percentiles(*window) if window else {}),
        }

    async def handler(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("stats"):
            return stats()
        pid = request["id"]
        future = waiting[pid] = asyncio.get_running_loop().create_future()
        await worker.handle(
            {
                "type": "signal",
                "data": {
                    "roomId": "bench",
                    "from": pid,
                    "role": "operator" if request["kind"] == "publisher" else "listener",
                    "canPublish": request["kind"] == "publisher",
                    "callsign": pid,
                    "type": "offer",
                    "data": {"type": "offer", "sdp": request["sdp"]},
                    "origin": request.get("origin"),
                },
            }
        )
        answer = await asyncio.wait_for(future, 30)
        return {"id": pid, "sdp": answer["sdp"]}

    say({"ready": await serve_control(handler)})
    profile = None
    if os.environ.get("YV_BENCH_PROFILE"):  # where the worker's time goes (cProfile)
        import cProfile

        profile = cProfile.Profile(time.process_time)
        after = float(os.environ.get("YV_BENCH_PROFILE_AFTER", "0"))  # skip the set-up
        asyncio.get_running_loop().call_later(after, profile.enable)
    try:
        while (command := await read_command())["cmd"] != "exit":
            if command["cmd"] == "frame":  # a server frame (cascadeLink), applied in order
                await worker.handle(command["frame"])
                say({"handled": command["frame"]["type"]})
            elif command["cmd"] == "stats":
                say(stats(command.get("window")))
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(os.environ["YV_BENCH_PROFILE"])
        await worker.stop()


async def role_relay(args: argparse.Namespace) -> None:
    """aiortc MediaRelay: decode the publisher once, re-encode for every listener."""
    loopback(args.ice)
    relay = MediaRelay()
    source: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    pcs: list[RTCPeerConnection] = []

    async def handler(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("stats"):
            return {}
        pc = RTCPeerConnection()
        pcs.append(pc)
        if request["kind"] == "publisher":

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                if not source.done():
                    source.set_result(track)

        await pc.setRemoteDescription(RTCSessionDescription(request["sdp"], "offer"))
        transceivers = pc.getTransceivers()
        for t in transceivers:
            t.direction = "inactive"
        if request["kind"] == "publisher":
            transceivers[-1].direction = "recvonly"
        else:
            track = await asyncio.wait_for(asyncio.shield(source), 30)
            transceivers[0].sender.replaceTrack(relay.subscribe(track, buffered=False))
            transceivers[0].direction = "sendonly"
        await pc.setLocalDescription(await pc.createAnswer())
        return {"id": request["id"], "sdp": pc.localDescription.sdp}

    say({"ready": await serve_control(handler)})
    try:
        await run_until_exit()
    finally:
        for pc in pcs:
            await pc.close()


# ---------------------------------------------------------------- publisher


class Publisher:
    """Sends padded Opus frames every 20 ms through a one-slot forwarder of its own."""

    def __init__(self) -> None:
        self.frames = opus_frames()
        self.forwarder = Forwarder(1)
        self.forwarder.set_source(0, "me")
        self.sent: list[int] = []  # send times (ns), index = counter
        self.tasks: set[asyncio.Task[None]] = set()
        self.pcs: list[RTCPeerConnection] = []

    def attach(self, pc: RTCPeerConnection, transceiver: RTCRtpTransceiver, name: str) -> None:
        sink = make_sink(transceiver.sender.transport, self.tasks)
        assert sink is not None, "publisher transport not connected"
        layout = Layout.from_parameters(*negotiated_layout(transceiver), transceiver.mid)
        self.forwarder.add_output(name, 0, layout, sink, transceiver.sender)

    async def run(self, stop: asyncio.Event) -> None:
        self.forwarder.start()
        seq, ts = 1000, 123456
        start = time.monotonic()
        counter = 0
        while not stop.is_set():
            due = start + counter * 0.02
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now_ns = time.monotonic_ns()
            payload = pad_opus(
                self.frames[counter % len(self.frames)], MARK.pack(MAGIC, counter, now_ns)
            )
            packet = RtpPacket(payload_type=0, sequence_number=seq, timestamp=ts, payload=payload)
            packet.extensions.audio_level = (True, 20)
            self.forwarder.forward("me", packet)
            self.sent.append(now_ns)
            counter += 1
            seq = (seq + 1) & 0xFFFF
            ts = (ts + FRAME) & 0xFFFFFFFF
        await self.forwarder.stop()


def new_sender_transceiver(pc: RTCPeerConnection, ssrc: int) -> RTCRtpTransceiver:
    transceiver = pc.addTransceiver("audio", direction="sendonly")
    set_sender_ssrc(transceiver.sender, ssrc)
    quiet_sender(transceiver.sender)
    return transceiver


async def role_publisher(args: argparse.Namespace) -> None:
    loopback(args.ice)
    pub = Publisher()
    ssrc = pub.forwarder.ssrc(0)
    if args.target == "direct":
        # Serve one listener ourselves: the path without any forwarder.
        connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def handler(request: dict[str, Any]) -> dict[str, Any]:
            if request.get("stats"):
                return {}
            pc = RTCPeerConnection()
            pub.pcs.append(pc)
            await pc.setRemoteDescription(RTCSessionDescription(request["sdp"], "offer"))
            transceivers = pc.getTransceivers()
            for t in transceivers:
                t.direction = "inactive"
            transceivers[0].direction = "sendonly"
            set_sender_ssrc(transceivers[0].sender, ssrc)
            quiet_sender(transceivers[0].sender)
            await pc.setLocalDescription(await pc.createAnswer())

            async def attach() -> None:
                await wait_connected(pc)
                pub.attach(pc, transceivers[0], request["id"])
                connected.set_result(None)

            task = asyncio.ensure_future(attach())
            pub.tasks.add(task)  # type: ignore[arg-type]
            return {"id": request["id"], "sdp": pc.localDescription.sdp}

        say({"ready": await serve_control(handler)})
        await connected
    else:
        pc = RTCPeerConnection()
        pub.pcs.append(pc)
        if args.target == "janus":
            from bench.janus import JanusClient

            transceiver = new_sender_transceiver(pc, ssrc)
            await pc.setLocalDescription(await pc.createOffer())
            janus = JanusClient(args.janus)
            await janus.start()
            await janus.create_room(args.room)
            answer = await janus.publish(args.room, pc.localDescription.sdp)
        else:
            for _ in range(SLOTS if args.target == "ours" else 0):
                pc.addTransceiver("audio", direction="recvonly")
            transceiver = new_sender_transceiver(pc, ssrc)
            await pc.setLocalDescription(await pc.createOffer())
            control = ControlClient(args.port)
            reply = await control.request(
                offer_message("pub", "publisher", pc.localDescription.sdp, args.origin)
            )
            answer = reply["sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await wait_connected(pc)
        pub.attach(pc, transceiver, "sfu")
        if args.target == "janus":
            say({"publisher_id": janus.publisher_id})
        say({"ready": 0})
    stop = asyncio.Event()
    runner: asyncio.Task[None] | None = None
    while True:
        command = await read_command()
        if command["cmd"] == "go":
            runner = asyncio.ensure_future(pub.run(stop))
        elif command["cmd"] == "stop":
            stop.set()
            if runner:
                await runner
        elif command["cmd"] == "report":
            t0, t1 = command["window"]
            say({"sent": sum(1 for t in pub.sent if t0 <= t < t1), "total": len(pub.sent)})
        elif command["cmd"] == "exit":
            break
    for pc in pub.pcs:
        await pc.close()


# ---------------------------------------------------------------- listeners


class Listener:
    """A peer that reads its packets off the socket: unprotect, skip header, record."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pc = RTCPeerConnection()
        self.counters: list[int] = []
        self.sent: list[int] = []
        self.received: list[int] = []
        self.errors = 0
        self.other: list[int] = []  # arrival times of packets without our mark (re-encoded)

    def tap(self) -> None:
        """Take RTP before aioice's queue and aiortc's receiver ever see it."""
        unprotect = self.pc.getTransceivers()[0].receiver.transport._rx_srtp.unprotect
        counters, sent, received = self.counters, self.sent, self.received
        clock = time.monotonic_ns

        def on_rtp(data: bytes) -> None:
            now = clock()
            try:
                plain = unprotect(data)
            except Exception:
                self.errors += 1
                return
            mark = read_mark(plain)
            if mark is None:
                self.other.append(now)
                return
            counters.append(mark[0])
            sent.append(mark[1])
            received.append(now)

        tap_rtp(self.pc, on_rtp)

    def window(self, t0: int, t1: int) -> tuple[int, list[int]]:
        """Unique packets sent in [t0, t1) that arrived, and their latencies (ns).

        Packets without our mark (MediaRelay re-encodes) are counted by arrival time.
        """
        if self.other and not self.counters:
            return sum(1 for t in self.other if t0 <= t < t1), []
        seen: set[int] = set()
        latencies: list[int] = []
        for counter, sent, received in zip(self.counters, self.sent, self.received, strict=True):
            if t0 <= sent < t1 and counter not in seen:
                seen.add(counter)
                latencies.append(received - sent)
        return len(seen), latencies


async def connect_listener(
    listener: Listener, args: argparse.Namespace, control: Any, janus: Any
) -> None:
    pc = listener.pc
    if args.target == "janus":
        offer = await janus.subscribe(args.room, args.publisher_id, listener.name)
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await janus.start_subscriber(listener.name, pc.localDescription.sdp)
    else:
        for _ in range(SLOTS):
            pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        reply = await control.request(
            offer_message(listener.name, "listener", pc.localDescription.sdp, args.origin)
        )
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
    await wait_connected(pc)
    listener.tap()


async def role_listeners(args: argparse.Namespace) -> None:
    loopback(args.ice)
    listeners = [Listener(f"{args.prefix}{i}") for i in range(args.count)]
    control = ControlClient(args.port) if args.target != "janus" else None
    janus = None
    if args.target == "janus":
        from bench.janus import JanusClient

        janus = JanusClient(args.janus)
        await janus.start()
    gate = asyncio.Semaphore(8)

    async def one(listener: Listener) -> None:
        async with gate:
            await connect_listener(listener, args, control, janus)

    await asyncio.gather(*(one(listener) for listener in listeners))
    say({"ready": len(listeners)})
    while True:
        command = await read_command()
        if command["cmd"] == "report":
            t0, t1 = command["window"]
            counts, all_latencies = [], []
            for listener in listeners:
                count, latencies = listener.window(t0, t1)
                counts.append(count)
                all_latencies += latencies
            np.save(command["latency_file"], np.asarray(all_latencies, dtype=np.int64))
            say(
                {
                    "received": counts,
                    "errors": sum(x.errors for x in listeners),
                    "other": sum(len(x.other) for x in listeners),
                }
            )
        elif command["cmd"] == "exit":
            break
    for listener in listeners:
        await listener.pc.close()
    if janus is not None:
        await janus.close()
    if control is not None:
        await control.close()


ROLES: dict[str, Callable[[argparse.Namespace], Awaitable[None]]] = {
    "ours": role_ours,
    "relay": role_relay,
    "publisher": role_publisher,
    "listeners": role_listeners,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sfu_roles")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--target", choices=["ours", "relay", "janus", "direct"], default="ours")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--janus", default="")
    parser.add_argument("--room", type=int, default=0)
    parser.add_argument("--publisher-id", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--prefix", default="l")
    parser.add_argument("--ice", default="127.0.0.1", help="the one ICE host address")
    parser.add_argument(
        "--fanout", choices=["native", "python"], default="native", help="ours: fan-out loop"
    )
    parser.add_argument("--record", default="", help="ours: record the room into this dir")
    parser.add_argument("--worker-id", default="bench", help="ours: the worker's id")
    parser.add_argument(
        "--origin",
        default="",
        help="publisher, listeners: the room's origin worker (the target worker is an edge)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(ROLES[args.role](args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
