"""SFU forwarding benchmark: one publisher, N listeners, several forwarders, one run.

For each N the same load (one speaker sending 20 ms Opus, N listeners on loopback that
count packets without decoding) goes through our worker (`ours`; `ours-py` with its
Python fan-out loop; `ours-rec` recording the room, issue 15), aiortc's MediaRelay
(`relay`) and Janus's VideoRoom (`janus`). Every forwarder runs alone on CPU 0 (when
there is more than one CPU); publisher and listeners run in their own processes on the
other CPUs, and their CPU is measured too so a starved load generator is visible.

Reported per forwarder and N: CPU microseconds of the forwarder process per delivered
packet (process CPU time over the window / packets the listeners received), streams per
core (1e6 / (that x 50 packets/s)), packets lost, and added latency p50/p99: publisher
send to listener receive, minus the same percentile on the direct path (publisher
straight to one listener, same processes and network). MediaRelay re-encodes, so its packets lose the
send-time mark: no latency for it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench import janus as janus_mod

RESULTS = Path(__file__).resolve().parent / "results"
PACKETS_PER_SECOND = 50
LISTENERS_PER_PROCESS = 100
# Our worker with each of its fan-out loops (sfu/native.py): forwarder name -> --fanout.
# `ours-rec` is `ours` recording the room (sfu/recording.py: Ogg Opus files written by its
# writer thread, whose CPU counts in the worker process's).
FANOUTS = {"ours": "native", "ours-py": "python", "ours-rec": "native"}
RECORDED = {"ours-rec"}


@dataclass
class Result:
    forwarder: str
    listeners: int
    window_s: float
    sent: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    forwarder_cpu_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    loadgen_processes: int = 0
    us_per_packet: float | None = None
    streams_per_core: float | None = None
    forwarder_cores: float = 0.0
    loadgen_cores: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    errors: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Lab:
    """Where the benchmark's media flows: a network namespace of its own, else loopback.

    Janus (libnice) never gathers loopback candidates, and the machine's own network is
    off limits, so when we may (root, iproute2) everything runs in a fresh namespace
    whose only address sits on a veth pair; inside it that address is local, so the
    traffic takes the loopback path like 127.0.0.1 would. Every forwarder runs in it.
    """

    ADDRESS = "10.213.77.1"
    INTERFACE = "v0"

    def __init__(self, nice: int = 0) -> None:
        self.name = f"yvbench-{os.getpid()}"
        self.active = False
        self.nice = nice if os.geteuid() == 0 or nice >= 0 else 0

    @property
    def prefix(self) -> list[str]:
        """Run a benchmark process in the lab (and at the benchmark's priority)."""
        netns = ["ip", "netns", "exec", self.name] if self.active else []
        return [*netns, "nice", "-n", str(self.nice)] if self.nice else netns

    @property
    def address(self) -> str:
        return self.ADDRESS if self.active else "127.0.0.1"

    def __enter__(self) -> Lab:
        if os.geteuid() != 0 or not shutil.which("ip"):
            print("not root or no iproute2: benchmarking on 127.0.0.1, without Janus")
            return self
        steps = [
            ["ip", "netns", "add", self.name],
            [*self._in, "ip", "link", "set", "lo", "up"],
            [*self._in, "ip", "link", "add", self.INTERFACE, "type", "veth", "peer", "name", "v1"],
            [*self._in, "ip", "addr", "add", f"{self.ADDRESS}/24", "dev", self.INTERFACE],
            [*self._in, "ip", "link", "set", self.INTERFACE, "up"],
            [*self._in, "ip", "link", "set", "v1", "up"],
        ]
        try:
            for step in steps:
                subprocess.run(step, check=True, capture_output=True)
            self.active = True
        except subprocess.CalledProcessError as exc:
            print(f"no network namespace ({exc.stderr.decode().strip()}): using 127.0.0.1")
            self._delete()
        return self

    @property
    def _in(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def udp_counters(self) -> dict[str, int]:
        """The lab's UDP counters (/proc/net/snmp): where packets were dropped, if at all
        (RcvbufErrors: a receiver's socket buffer overflowed; empty outside a namespace,
        where the machine's other traffic counts too)."""
        if not self.active:
            return {}
        snmp = subprocess.run(
            [*self._in, "cat", "/proc/net/snmp"], capture_output=True, text=True
        ).stdout
        names, values = [line.split()[1:] for line in snmp.splitlines() if line.startswith("Udp:")]
        return dict(zip(names, map(int, values), strict=True))

    def _delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            self._delete()
            self.active = False


class Role:
    """A `bench.sfu_roles` child (or another module's: the soak's members) speaking JSON lines."""

    def __init__(
        self,
        args: list[str],
        log: Path,
        cpus: set[int] | None,
        lab: Lab | None = None,
        module: str = "bench.sfu_roles",
    ) -> None:
        self.log = open(log, "ab")
        prefix, address = (lab.prefix, lab.address) if lab is not None else ([], "127.0.0.1")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", module, *args, "--ice", address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            cwd=Path(__file__).resolve().parent.parent,
            bufsize=0,  # unbuffered: select() must see every line that is not read yet
        )
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.proc.pid, cpus)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def read(self, timeout: float = 120.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"role {self.proc.args} silent for {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"role {self.proc.args} exited ({self.proc.poll()}); see {self.log.name}"
            )
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send({"cmd": "exit"})
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def host_info(lab: Lab) -> dict[str, Any]:
    """Where a run happened, for its JSON: the machine, its load, the network used."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "load_avg": os.getloadavg(),
        "network": f"netns {lab.name}, {Lab.ADDRESS}" if lab.active else "127.0.0.1",
        "nice": lab.nice,
    }


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def cpu_split() -> tuple[set[int] | None, set[int] | None]:
    """CPU 0 for the forwarder, the rest for the load generator (if there is a rest)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def placement(workers: int, shared: bool) -> tuple[list[set[int] | None], set[int] | None]:
    """The CPUs of each forwarder process and of the load generator.

    Alone (`shared` false, one forwarder): `cpu_split`. Shared: worker k on CPU k and the
    load generator free on all of them, as on a host whose every core runs a worker
    (bench/sfu_cascade.py); its CPU is measured, so a starved generator shows.
    """
    if workers == 1 and not shared:
        fwd, gen = cpu_split()
        return [fwd], gen
    cpus = sorted(os.sched_getaffinity(0))
    return [{cpus[k % len(cpus)]} for k in range(workers)], set(cpus)


def listener_plan(n: int, workers: int) -> list[tuple[int, int]]:
    """(worker, listeners) per listener process: n split evenly over the workers (as
    placement with sfu.max_listeners_per_worker = n / workers would), at most
    LISTENERS_PER_PROCESS per process."""
    plan: list[tuple[int, int]] = []
    for k in range(workers):
        share = n // workers + (1 if k < n % workers else 0)
        processes = math.ceil(share / LISTENERS_PER_PROCESS)
        plan += [
            (k, share // processes + (1 if i < share % processes else 0)) for i in range(processes)
        ]
    return plan


def percentiles_ms(latencies: np.ndarray) -> dict[str, float | None]:
    """p50 and p99 of latencies in ns, in ms (None without any)."""
    if not latencies.size:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(latencies, [50, 99])
    return {"p50": round(float(p50) / 1e6, 3), "p99": round(float(p99) / 1e6, 3)}


def worker_id(k: int) -> str:
    """Worker k's id; worker 0 is the origin of the room (it holds the publisher)."""
    return f"w{k}"


def measure(
    target: str,
    n: int,
    workdir: Path,
    warmup: float,
    window: float,
    direct: Result | None,
    lab: Lab,
    workers: int = 1,
    shared: bool = False,
) -> Result:
    """One forwarder (or, for our worker, one room over `workers` worker processes: the
    first the origin with the publisher, each other an edge) under N listeners."""
    assert workers == 1 or target in FANOUTS, "only our worker spans workers"
    fwd_cpus, gen_cpus = placement(workers, shared)
    roles: list[Role] = []
    janus_proc: janus_mod.JanusProcess | None = None
    result = Result(forwarder=target, listeners=n, window_s=window)
    tag = f"{target}-{n}" + (f"x{workers}" if workers > 1 else "")
    try:
        extra: list[str] = []
        forwarders: list[Role] = []  # our worker processes (origin first) or the relay
        forwarder_pids: list[int] = []
        if target in FANOUTS or target == "relay":
            for k in range(workers):
                if target in FANOUTS:
                    args = ["ours", "--fanout", FANOUTS[target], "--worker-id", worker_id(k)]
                    if target in RECORDED and k == 0:  # the origin records; edges never do
                        args += ["--record", str(workdir / f"{tag}-rec")]
                else:
                    args = [target]
                log = workdir / f"{tag}-forwarder{k if workers > 1 else ''}.log"
                forwarders.append(Role(args, log, fwd_cpus[k], lab))
            roles += forwarders
            ports = [str(fwd.read()["ready"]) for fwd in forwarders]
            extra = ["--port", ports[0]]
            forwarder_pids = [fwd.pid for fwd in forwarders]
        elif target == "janus":
            from tests.servers import free_port

            cpus = fwd_cpus[0]
            pin = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
            janus_proc = janus_mod.JanusProcess(
                workdir / tag,
                free_port(),
                interface=lab.INTERFACE if lab.active else "lo",
                prefix=[*lab.prefix, *pin],
            ).start()
            forwarder_pids = [janus_proc.pid]
            extra = ["--janus", janus_proc.url, "--room", "4242"]
        kind = "ours" if target in FANOUTS else target  # what publisher and listeners see
        publisher = Role(
            ["publisher", "--target", kind, *extra],
            workdir / f"{tag}-publisher.log",
            gen_cpus,
            lab,
        )
        roles.append(publisher)
        first = publisher.read()
        if "publisher_id" in first:
            extra += ["--publisher-id", str(first["publisher_id"])]
            first = publisher.read()
        if target == "direct":
            extra = ["--port", str(first["ready"])]
        listeners: list[tuple[int, Role]] = []  # (worker, role)
        for i, (k, count) in enumerate(listener_plan(n, workers)):
            # An edge's listeners offer to it, naming the room's origin.
            where = extra if k == 0 else ["--port", ports[k], "--origin", worker_id(0)]
            role = Role(
                [
                    "listeners",
                    "--target",
                    kind,
                    "--count",
                    str(count),
                    "--prefix",
                    f"p{i}l",
                    *where,
                ],
                workdir / f"{tag}-listeners{i}.log",
                gen_cpus,
                lab,
            )
            roles.append(role)
            listeners.append((k, role))
        for _, role in listeners:
            role.read(timeout=300)
        # Relay each edge's cascadeReady to the origin as cascadeLink, as the server does.
        for k in sorted({k for k, _ in listeners if k > 0}):
            ready = forwarders[k].read()["frame"]["data"]
            link = {"roomId": ready["roomId"], "edge": worker_id(k)}
            link |= {key: ready[key] for key in ("host", "ports", "key")}
            forwarders[0].send({"cmd": "frame", "frame": {"type": "cascadeLink", "data": link}})
            forwarders[0].read()
        generators = [publisher, *(role for _, role in listeners)]
        result.loadgen_processes = len(generators)
        publisher.send({"cmd": "go"})
        time.sleep(warmup)
        t0 = time.monotonic_ns()
        fwd_cpu0 = [cpu_seconds(pid) for pid in forwarder_pids]
        gen_cpu0 = sum(cpu_seconds(r.pid) for r in generators)
        udp0 = lab.udp_counters()
        time.sleep(window)
        t1 = time.monotonic_ns()
        fwd_cpu1 = [cpu_seconds(pid) for pid in forwarder_pids]
        gen_cpu1 = sum(cpu_seconds(r.pid) for r in generators)
        udp1 = lab.udp_counters()
        result.extra["udp"] = {
            k: udp1[k] - udp0[k]
            for k in ("InDatagrams", "RcvbufErrors", "SndbufErrors")
            if k in udp1
        }
        time.sleep(0.5)  # let the window's last packets arrive
        publisher.send({"cmd": "stop"})
        publisher.send({"cmd": "report", "window": [t0, t1]})
        result.sent = publisher.read()["sent"]
        latencies: list[np.ndarray] = []
        delivered = [0] * workers
        result.extra["listener_processes"] = []
        for i, (k, role) in enumerate(listeners):
            path = workdir / f"{tag}-latency{i}.npy"
            role.send({"cmd": "report", "window": [t0, t1], "latency_file": str(path)})
            report = role.read()
            delivered[k] += sum(report["received"])
            result.errors += report["errors"]
            latencies.append(np.load(path))
            # Per process: a starved one shows as its own loss and latency.
            result.extra["listener_processes"].append(
                {
                    "worker": k,
                    "received": sum(report["received"]),
                    "expected": result.sent * len(report["received"]),
                    **percentiles_ms(latencies[-1]),
                }
            )
        result.delivered = sum(delivered)
        seconds = (t1 - t0) / 1e9
        result.window_s = round(seconds, 3)
        result.expected = result.sent * n
        result.lost = result.expected - result.delivered
        cpu = [b - a for a, b in zip(fwd_cpu0, fwd_cpu1, strict=True)]
        result.forwarder_cpu_s = round(sum(cpu), 4)
        result.loadgen_cpu_s = round(gen_cpu1 - gen_cpu0, 4)
        result.forwarder_cores = round(result.forwarder_cpu_s / seconds, 3)
        result.loadgen_cores = round(result.loadgen_cpu_s / seconds, 3)
        if forwarder_pids and result.delivered:
            us = result.forwarder_cpu_s * 1e6 / result.delivered
            result.us_per_packet = round(us, 2)
            result.streams_per_core = round(1e6 / (us * PACKETS_PER_SECOND))
        if target in FANOUTS:
            result.extra["workers"] = []
            for k, fwd in enumerate(forwarders):
                fwd.send({"cmd": "stats", "window": [t0, t1]})
                stats = fwd.read()
                while "frame" in stats:  # a frame emitted since the link (kept, not relayed)
                    result.extra.setdefault("late_frames", []).append(stats["frame"])
                    stats = fwd.read()
                share = [count for w, count in listener_plan(n, workers) if w == k]
                result.extra["workers"].append(
                    {
                        "id": worker_id(k),
                        "role": "edge" if k else "origin" if workers > 1 else "alone",
                        "cpus": sorted(fwd_cpus[k] or []),
                        "listeners": sum(share),
                        "delivered": delivered[k],
                        "cpu_s": round(cpu[k], 4),
                        "cores": round(cpu[k] / seconds, 3),
                        # CPU per packet its own listeners got (the origin's include the
                        # publisher's receive path and one send per edge).
                        "us_per_packet": (
                            round(cpu[k] * 1e6 / delivered[k], 2) if delivered[k] else None
                        ),
                        "latency_ms": percentiles_ms(
                            np.concatenate(
                                [latencies[i] for i, (w, _) in enumerate(listeners) if w == k]
                            )
                        ),
                        **stats,
                    }
                )
        lat = np.concatenate(latencies) if latencies else np.array([])
        if target != "relay" and lat.size:
            p50, p99 = (float(x) / 1e6 for x in np.percentile(lat, [50, 99]))
            result.latency_p50_ms, result.latency_p99_ms = round(p50, 3), round(p99, 3)
            if direct is not None and direct.latency_p50_ms is not None:
                assert direct.latency_p99_ms is not None
                # Percentile by percentile: what the forwarder adds to the direct path.
                result.added_p50_ms = round(p50 - direct.latency_p50_ms, 3)
                result.added_p99_ms = round(p99 - direct.latency_p99_ms, 3)
        if target == "relay":
            result.note = "re-encodes: no latency mark"
        notes = [result.note] if result.note else []
        if result.loadgen_cores > 0.9 * max(1, len(gen_cpus or {0})):
            notes.append("load generator saturated")
        machine = len(os.sched_getaffinity(0))
        if result.forwarder_cores + result.loadgen_cores > 0.9 * machine:
            notes.append("every CPU busy")
        result.note = "; ".join(notes)
    finally:
        for role in reversed(roles):
            role.close()
        if janus_proc is not None:
            janus_proc.stop()
    if target in RECORDED:
        # The recording ran the whole time (a failed one would flatter the figure).
        indexes = list((workdir / f"{tag}-rec").rglob("index.json"))
        state = json.loads(indexes[0].read_text())["recording"] if indexes else {}
        files = list((workdir / f"{tag}-rec").rglob("*.opus"))
        result.extra["recording"] = {
            "state": state.get("state"),
            "reason": state.get("reason"),
            "bytes": sum(f.stat().st_size for f in files),
        }
        if state.get("state") != "stopped":
            result.note = (result.note + "; " if result.note else "") + "recording failed"
    return result


def table(results: list[Result]) -> str:
    head = (
        f"{'forwarder':<9} {'N':>4} {'us/pkt':>8} {'streams/core':>12} {'lost':>7} "
        f"{'p50+ms':>7} {'p99+ms':>7} {'fwd cores':>9} {'gen cores':>9}  note"
    )
    lines = [head, "-" * len(head)]

    def f(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for r in results:
        lost = f"{r.lost}" if r.expected else "-"
        lines.append(
            f"{r.forwarder:<9} {r.listeners:>4} {f(r.us_per_packet, '.1f'):>8} "
            f"{f(r.streams_per_core, '.0f'):>12} {lost:>7} {f(r.added_p50_ms, '.2f'):>7} "
            f"{f(r.added_p99_ms, '.2f'):>7} {r.forwarder_cores:>9.3f} {r.loadgen_cores:>9.3f}  {r.note}"
        )
    return "\n".join(lines)


def ratios(results: list[Result]) -> list[dict[str, Any]]:
    """Per N: ours (and ours-py) over each other forwarder, the median of the ratios of
    each round (the forwarders of a round ran in adjacent slices, so drift of a shared
    machine cancels), with every round's ratio listed."""
    out = []
    rounds: dict[tuple[str, int], list[Result]] = {}
    for r in results:
        rounds.setdefault((r.forwarder, r.listeners), []).append(r)
    for n in sorted({r.listeners for r in results if r.forwarder in FANOUTS}):
        row: dict[str, Any] = {"listeners": n}
        for mine in FANOUTS:
            for other in ("ours", "ours-py", "relay", "janus"):
                if other == mine:
                    continue
                pairs = [
                    a.us_per_packet / b.us_per_packet
                    for a, b in zip(
                        rounds.get((mine, n), []), rounds.get((other, n), []), strict=False
                    )
                    if a.us_per_packet and b.us_per_packet
                ]
                if pairs:
                    key = f"{mine.replace('-', '_')}_over_{other.replace('-', '_')}"
                    row[key] = round(float(np.median(pairs)), 3)
                    row[key + "_rounds"] = [round(x, 3) for x in pairs]
        out.append(row)
    return out


def recording_costs(workdir: Path, packets: int = 20000) -> dict[str, float]:
    """What recording adds per packet, measured in this process, apart from the noise of a
    whole run: the hot path's share (Forwarder.forward with and without a RecordTap, no
    outputs, so nothing else varies) and the writer's (Recording.step over queued
    packets: three Ogg files written, thread CPU time)."""
    import asyncio

    from aiortc.rtp import RtpPacket

    from yahaml_voice.sfu.forwarder import Forwarder
    from yahaml_voice.sfu.recording import Recording, RecordTap

    payload = bytes([0xFC]) + bytes(range(79))  # an 80-byte, 20 ms Opus packet
    stream = []
    for n in range(packets):
        packet = RtpPacket(payload_type=111, sequence_number=n & 0xFFFF, timestamp=960 * n)
        packet.payload = payload
        packet.extensions.audio_level = (True, 30)
        stream.append(packet)

    def forward_ns(tap: RecordTap | None) -> float:
        forwarder = Forwarder(1)
        forwarder.set_source(0, "alice")
        forwarder.recording = tap
        best = math.inf
        for _ in range(5):
            if tap is not None:
                tap.items.clear()
            start = time.perf_counter_ns()
            for packet in stream:
                forwarder.forward("alice", packet)
            best = min(best, (time.perf_counter_ns() - start) / len(stream))
        return best

    async def measure() -> dict[str, float]:
        recording = Recording(
            directory=str(workdir / "costs"),
            room_id="bench",
            recording_id="20260101T000000Z-c0575a",
            net_id=None,
            slots=3,
            limit=packets,
            callsign_of=str,
            emit=lambda frame: None,
            detach=lambda tap: None,
        )
        plain = forward_ns(None)
        tapped = forward_ns(recording.tap)
        t0 = time.monotonic()
        recording.step(t0)  # opens the files
        items = recording.tap.items
        items.clear()
        for n, packet in enumerate(stream):  # one continuous transmission, real time stamps
            items.append((0, "alice", packet.timestamp, t0 + 0.02 * n, 30, payload))
        cpu = time.thread_time()
        recording.step(t0)
        writer_us = (time.thread_time() - cpu) * 1e6 / len(stream)
        recording.stop()
        recording.step(t0 + 0.02 * len(stream))
        return {
            "forward_ns_without_tap": round(plain, 1),
            "forward_ns_with_tap": round(tapped, 1),
            "tap_ns_per_packet": round(tapped - plain, 1),
            "writer_us_per_packet": round(writer_us, 2),
        }

    return asyncio.run(measure())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sfu", description=__doc__)
    parser.add_argument("--listeners", default="50,100,200,400")
    parser.add_argument("--forwarders", default="ours,ours-rec,ours-py,janus,relay")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds per N; each runs every forwarder once, in rotated order",
    )
    parser.add_argument(
        "--relay-max", type=int, default=100, help="largest N for MediaRelay (it saturates early)"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="niceness of every benchmark process, forwarders and load generators alike "
        "(default -10 as root: other load on a shared machine should not show up as "
        "forwarding latency; 0 to disable)",
    )
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument(
        "--output", help="JSON file (default: bench/results/sfu-forwarding-<time>.json)"
    )
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.listeners.split(",") if x]
    forwarders = [x for x in args.forwarders.split(",") if x]
    if "janus" in forwarders and not janus_mod.available():
        print("janus is not installed: skipping it", file=sys.stderr)
        forwarders.remove("janus")
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="yv-bench-") as tmp, Lab(args.nice) as lab:
        workdir = Path(tmp)
        if "janus" in forwarders and not lab.active:
            forwarders.remove("janus")
        costs = recording_costs(workdir) if any(f in RECORDED for f in forwarders) else {}
        if costs:
            print(f"recording, per packet: {costs}", flush=True)
        direct = measure("direct", 1, workdir, args.warmup, args.window, None, lab)
        direct.extra["load_avg"] = os.getloadavg()
        results.append(direct)
        print(
            f"direct path: p50 {direct.latency_p50_ms} ms, p99 {direct.latency_p99_ms} ms",
            flush=True,
        )
        for n in sizes:
            order = [t for t in forwarders if not (t == "relay" and n > args.relay_max)]
            for target in (
                order[(i + k) % len(order)] for k in range(args.rounds) for i in range(len(order))
            ):
                started = time.monotonic()
                try:
                    r = measure(target, n, workdir, args.warmup, args.window, direct, lab)
                except Exception as exc:
                    r = Result(forwarder=target, listeners=n, window_s=0, note=f"failed: {exc}")
                    r.extra["logs"] = {
                        p.name: p.read_text(errors="replace")[-1500:]
                        for p in workdir.rglob("*.log")
                        if f"{target}-{n}" in str(p)
                    }
                r.extra["wall_s"] = round(time.monotonic() - started, 1)
                r.extra["load_avg_1m"] = round(os.getloadavg()[0], 2)
                results.append(r)
                print(table([r]).splitlines()[-1], flush=True)
        logs = {
            p.name: p.read_text(errors="replace")[-2000:]
            for p in workdir.glob("*.log")
            if p.stat().st_size
        }
    report = {
        "benchmark": "sfu-forwarding",
        "time": datetime.datetime.now(datetime.UTC).isoformat(),
        "host": host_info(lab),
        "settings": vars(args),
        "direct": asdict(direct),
        "results": [asdict(r) for r in results],
        "ratios": ratios(results),
        # Recording (issue 15): per packet in, the tap on the hot path and the writer thread.
        "recording_costs": costs,
        "log_tails": {k: v for k, v in logs.items() if "Traceback" in v or "rror" in v},
    }
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(args.output) if args.output else RESULTS / f"sfu-forwarding-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print()
    print(table(results))
    print()
    for row in report["ratios"]:
        print(
            f"N={row['listeners']}: CPU per packet, median of rounds: "
            f"ours/Janus = {row.get('ours_over_janus', '-')}, "
            f"ours-py/Janus = {row.get('ours_py_over_janus', '-')}, "
            f"ours/ours-py = {row.get('ours_over_ours_py', '-')}, "
            f"ours/MediaRelay = {row.get('ours_over_relay', '-')}, "
            f"ours-rec/ours (recording on/off) = {row.get('ours_rec_over_ours', '-')}"
        )
    print(f"\nresults: {path}")
    return 0
