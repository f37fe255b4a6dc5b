"""Signaling load: 2,000 WebSocket clients, 20 rooms; signals on the socket vs over REST;
in memory and through Redis (1 vs 2 server processes).

Every client is a tests/voiceclient.py VoiceClient without media: it logs in, opens /ws on
its server process (round robin over the processes) and joins its room there. Then two
phases of targeted ICE-candidate signals per path, each a `signal` frame on the sender's
open socket (`ws`, answered by an ack) or a POST /signal (`rest`) on the sender's server,
routed through the store and the bus to the target's socket, possibly on the other
process:

- saturation (`--duration` s): `--concurrency` signals in flight per load process, each
  sender posting again as soon as its last one returned: the most signals/s it routes;
- steady (`--steady-duration` s): signals started at `--rate` per second in all, whether
  or not earlier ones returned: the latency a net would see under a normal load.

Measured in each: signals/s delivered on targets' WebSockets; latency from the start of the
POST to the frame on the target's socket (p50/p99); server CPU per signal: user+system
seconds of all server processes over the phase divided by the signals delivered (also with
the processes' idle cost, measured just before, subtracted); how long the server waited
for a core (schedstat: this machine's other jobs); Redis's CPU separately; and
scaling: saturation signals/s with 2 processes over 1 (best of repeated runs).

The load generator runs on the same machine (in `--procs` processes), so the figures
are bounded by its cores as much as by the servers'; the result file records the core
count and the load average.

    python -m bench signaling [--clients 2000] [--rooms 20] [--duration 20] [--rate 40]
                              [--ws-rate 2000] [--paths ws,rest] [--stores memory,redis]
                              [--nodes 1,2]   (memory mode runs one process only)
                              [--main-root PATH]  (REST A/B against that checkout's server)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.redis_fixture import RedisServer
from tests.servers import TEST_SECRET, ServerProcess
from tests.voiceclient import VoiceClient

RESULTS = Path(__file__).resolve().parent / "results"
CANDIDATE = "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host"
SETUP_CONCURRENCY = 40
IDLE_SECONDS = 3.0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def callsign(n: int) -> str:
    """A distinct valid callsign per client: W<digit><three letters>."""
    letters = "".join(chr(65 + (n // 26**k) % 26) for k in (2, 1, 0))
    return f"W{n % 10}{letters}"


class Recorder:
    """Where the latencies of received signals go; None between measurements."""

    def __init__(self) -> None:
        self.sink: list[float] | None = None


class LoadClient(VoiceClient):
    """A VoiceClient that timestamps the signals it receives instead of keeping them."""

    def __init__(
        self, base_url: str, recorder: Recorder, http: httpx.AsyncClient, **kw: Any
    ) -> None:
        super().__init__(base_url, auto_media=False, publish=False, http=http, **kw)
        self.recorder = recorder

    async def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "signal":
            sink = self.recorder.sink
            if sink is not None:
                data = event["data"]["message"].get("data") or {}
                sent = data.get("usernameFragment")
                if sent:
                    sink.append(time.time() - float(sent))
            self.events.clear()
        elif len(self.events) > 64:
            del self.events[:-8]


async def _retry(call: Callable[[], Awaitable[Any]], attempts: int = 4) -> Any:
    """Setup requests survive a keep-alive connection the server closed just then."""
    for attempt in range(attempts):
        try:
            return await call()
        except httpx.TransportError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))


class Phase:
    """Counts of one measured phase in one load process."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.sent = 0
        self.errors = 0
        self.elapsed = 0.0

    def report(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "errors": self.errors,
            "elapsed": self.elapsed,
            "lat": self.latencies,
        }


async def _generate(
    urls: list[str], rooms: list[str], clients: int, first: int, args: dict[str, Any], pipe: Any
) -> None:
    recorder = Recorder()
    members: dict[str, list[LoadClient]] = {room: [] for room in rooms}
    everyone: list[LoadClient] = []
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    limits = httpx.Limits(max_connections=2 * args["concurrency"] + SETUP_CONCURRENCY)
    https = {url: httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) for url in urls}

    async def setup(i: int) -> None:
        n = first + i
        url = urls[n % len(urls)]
        client = LoadClient(url, recorder, https[url])
        everyone.append(client)
        room = rooms[i % len(rooms)]
        async with gate:
            await _retry(lambda: client.login(callsign(n)))
            await client.connect(timeout=60)
            await _retry(
                lambda: client.request(
                    "POST", f"/api/voice-rooms/{room}/join", {"joinMode": "operator"}
                )
            )
            client.room_id = room
            members[room].append(client)

    groups: list[list[LoadClient]] = []

    async def one_signal(phase: Phase) -> None:
        group = random.choice(groups)
        a, b = random.randrange(len(group)), random.randrange(len(group) - 1)
        source, target = group[a], group[b + (b >= a)]  # two distinct members
        data = {"candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0}
        data["usernameFragment"] = repr(time.time())
        try:
            await source.signal("ice-candidate", data, to=target.participant_id)
            phase.sent += 1
        except Exception:
            phase.errors += 1

    async def saturate(phase: Phase) -> None:
        """Closed loop: `concurrency` signals in flight, each sender sends again at once."""
        stop_at = time.monotonic() + args["duration"]

        async def sender() -> None:
            while time.monotonic() < stop_at:
                await one_signal(phase)

        await asyncio.gather(*(sender() for _ in range(args["concurrency"])))

    async def steady(phase: Phase) -> None:
        """Open loop: signals started at a fixed rate whether or not earlier ones returned."""
        rate = args["ws_rate"] if everyone and everyone[0].ws_signals else args["rate"]
        interval = args["procs"] / rate
        stop_at = time.monotonic() + args["steady_duration"]
        tasks: set[asyncio.Task[None]] = set()
        due = time.monotonic()
        while due < stop_at:
            task = asyncio.create_task(one_signal(phase))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await asyncio.gather(*tasks)

    try:
        await asyncio.gather(*(setup(i) for i in range(clients)))
        groups.extend(m for m in members.values() if len(m) >= 2)
        pipe.send(("ready", len(everyone)))
        for path, name, run in [
            (path, name, run)
            for path in args["paths"].split(",")
            for name, run in (("saturation", saturate), ("steady", steady))
        ]:
            pipe.recv()  # go
            for client in everyone:
                client.ws_signals = path == "ws"
            phase = Phase()
            recorder.sink = phase.latencies
            started = time.monotonic()
            await run(phase)
            phase.elapsed = time.monotonic() - started
            await asyncio.sleep(2.0)  # let the last deliveries land
            recorder.sink = None
            pipe.send((name, phase.report()))
    finally:
        await asyncio.gather(*(c.close() for c in everyone), return_exceptions=True)
        for http in https.values():
            await http.aclose()


def _generator_main(
    urls: list[str], rooms: list[str], clients: int, first: int, args: dict[str, Any], pipe: Any
) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_generate(urls, rooms, clients, first, args, pipe))


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def _runqueue_wait(pids: list[int]) -> float:
    """Seconds the processes' threads were runnable but waited for a core (schedstat):
    what a shared machine's other load costs them, which CPU time does not show."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _phase(
    pipes: list[Any],
    server_pids: list[int],
    redis_pid: int | None,
    gen_pids: list[int],
    idle: float,
) -> dict[str, Any]:
    """Run one phase in every load process; its figures and the processes' CPU."""
    redis_pids = [redis_pid] if redis_pid else []
    cpu_before, redis_before, gen_before = _cpu(server_pids), _cpu(redis_pids), _cpu(gen_pids)
    wait_before = _runqueue_wait(server_pids)
    load_avg = os.getloadavg()
    started = time.monotonic()
    for pipe in pipes:
        pipe.send("go")
    reports = [pipe.recv()[1] for pipe in pipes]
    wall = time.monotonic() - started
    cpu = _cpu(server_pids) - cpu_before
    redis_cpu = _cpu(redis_pids) - redis_before
    gen_cpu = _cpu(gen_pids) - gen_before
    wait = _runqueue_wait(server_pids) - wait_before
    latencies = [lat for r in reports for lat in r["lat"]]
    delivered = len(latencies) or 1
    elapsed = max(r["elapsed"] for r in reports)
    net_cpu = max(0.0, cpu - idle * wall)
    return {
        "duration_s": round(elapsed, 2),
        "signals_sent": sum(r["sent"] for r in reports),
        "signals_delivered": len(latencies),
        "errors": sum(r["errors"] for r in reports),
        "signals_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": {
            "p50": _ms(percentile(latencies, 50)),
            "p90": _ms(percentile(latencies, 90)),
            "p99": _ms(percentile(latencies, 99)),
            "max": _ms(max(latencies)) if latencies else None,
        },
        "server_cpu_ms_per_signal": round(cpu / delivered * 1000, 3),
        "server_cpu_ms_per_signal_net_of_idle": round(net_cpu / delivered * 1000, 3),
        "server_cpu_utilisation": round(cpu / wall, 2),
        # Per second of the phase, how long the server was runnable but not running.
        "server_runqueue_wait_s_per_s": round(wait / wall, 3),
        "redis_cpu_ms_per_signal": round(redis_cpu / delivered * 1000, 3),
        "load_generator_cpu_utilisation": round(gen_cpu / wall, 2),
        "load_average_before": [round(x, 2) for x in load_avg],
    }


def run_once(
    nodes: int, store: str, args: argparse.Namespace, workdir: Path, main_root: str | None = None
) -> dict[str, Any]:
    """One server set-up; with `main_root`, that checkout's server (its .venv) instead."""
    other: dict[str, Any] = {}
    if main_root:
        root = Path(main_root)
        other = {"command": [str(root / ".venv/bin/python"), "-m", "yahaml_voice"], "cwd": root}
    rooms = [f"r{i:02d}" for i in range(args.rooms)]
    config = {
        "server": {"log_level": "warning", "grace_period": "30s"},
        "rooms": [
            {"id": room, "max_participants": 1000, "sfu_threshold": 100000} for room in rooms
        ],
        # Load clients trickle candidates only, never an offer: keep their seats. The
        # steady WS phase offers 2,000 signals/s from 2,000 senders: lift the per-
        # participant signal rate (the limit is not what is measured).
        "limits": {"media_timeout": 0, "signals_per_second": 1000, "signal_burst": 1000},
    }
    with contextlib.ExitStack() as stack:
        env = {"YAHAML_VOICE_AUTH__SECRET": TEST_SECRET}
        redis_pid: int | None = None
        if store == "redis":
            redis = stack.enter_context(RedisServer())
            env["YAHAML_VOICE_REDIS__URL"] = redis.url
            assert redis._proc is not None
            redis_pid = redis._proc.pid
        servers = [
            ServerProcess(workdir, config, env=env, name=f"{store}-n{nodes}-{i}", **other)
            for i in range(nodes)
        ]
        procs: list[Any] = []
        pipes: list[Any] = []
        phases: dict[str, Any] = {}
        try:
            for server in servers:
                server.start(timeout=60)
            urls = [s.url for s in servers]
            per = args.clients // args.procs
            ctx = mp.get_context("spawn")
            for p in range(args.procs):
                parent, child = ctx.Pipe()
                mine = [r for i, r in enumerate(rooms) if i % args.procs == p]
                proc = ctx.Process(
                    target=_generator_main,
                    args=(urls, mine, per, p * per, vars(args), child),
                    daemon=True,
                )
                proc.start()
                procs.append(proc)
                pipes.append(parent)
            setup_started = time.monotonic()
            connected = sum(pipe.recv()[1] for pipe in pipes)
            setup_seconds = time.monotonic() - setup_started
            server_pids = [s.proc.pid for s in servers if s.proc]
            gen_pids = [p.pid for p in procs if p.pid is not None]
            # Idle cost (sweeps, heartbeats) of the same processes with everyone connected.
            time.sleep(1.0)
            idle_before = _cpu(server_pids)
            time.sleep(IDLE_SECONDS)
            idle = (_cpu(server_pids) - idle_before) / IDLE_SECONDS
            for path in args.paths.split(","):
                saturation = _phase(pipes, server_pids, redis_pid, gen_pids, idle)
                steady = _phase(pipes, server_pids, redis_pid, gen_pids, idle)
                steady["offered_per_s"] = args.ws_rate if path == "ws" else args.rate
                phases[path] = {"saturation": saturation, "steady": steady}
        finally:
            for proc in procs:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
            for server in servers:
                server.stop()
    return {
        "server": "main" if main_root else "this",
        "store": store,
        "server_processes": nodes,
        "clients": connected,
        "rooms": args.rooms,
        "setup_seconds": round(setup_seconds, 1),
        "server_idle_cpu_per_s": round(idle, 3),
        "paths": phases,
    }


def rows(run: dict[str, Any]) -> list[str]:
    out = []
    for path, phase in run["paths"].items():
        sat, steady = phase["saturation"], phase["steady"]
        out.append(
            f"{run.get('server', 'this'):>6} {run['store']:>6} {run['server_processes']:>5} {path:>5} {sat['signals_per_s']:>10} "
            f"{sat['latency_ms']['p50']:>8} {sat['latency_ms']['p99']:>8} "
            f"{steady['offered_per_s']:>7g} {steady['signals_per_s']:>8} "
            f"{steady['latency_ms']['p50']:>8} {steady['latency_ms']['p99']:>8} "
            f"{sat['server_cpu_ms_per_signal']:>8} {sat['server_cpu_ms_per_signal_net_of_idle']:>8} "
            f"{sat['redis_cpu_ms_per_signal']:>8}"
        )
    return out


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'':>25} {'max':>10} {'at max':>17} {'steady (offered)':>34} "
        f"{'server CPU ms/sig':>17} {'redis':>8}"
    )
    print(
        f"{'server':>6} {'store':>6} {'procs':>5} {'path':>5} {'signals/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'offered':>7} {'got/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'all':>8} {'net':>8} "
        f"{'ms/sig':>8}"
    )
    for run in result["runs"]:
        for line in rows(run):
            print(line)
    if result.get("scaling_1_to_2") is not None:
        print(f"scaling 1 -> 2 processes (redis, rest, best runs): x{result['scaling_1_to_2']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench signaling", description=__doc__)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument(
        "--concurrency", type=int, default=32, help="in-flight signals per load process"
    )
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--rate", type=float, default=40.0, help="offered signals/s of the steady phase"
    )
    parser.add_argument(
        "--ws-rate", type=float, default=2000.0, help="offered signals/s of the steady WS phase"
    )
    parser.add_argument("--steady-duration", type=float, default=15.0)
    parser.add_argument("--paths", default="ws,rest", help="signal paths to measure: ws, rest")
    parser.add_argument("--stores", default="memory,redis", help="memory, redis")
    parser.add_argument(
        "--nodes",
        default="1,2",
        help="server process counts to run in Redis mode, in order (e.g. 1,2,1,2)",
    )
    parser.add_argument(
        "--main-root",
        default=None,
        help="also run the REST path against this checkout's server (its .venv): an A/B",
    )
    parser.add_argument("--output", default=str(RESULTS / "signaling_load.json"))
    args = parser.parse_args(argv)
    # A SIGTERM (e.g. from `timeout`) unwinds through the finally blocks that stop servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for store in args.stores.split(","):
            counts = [int(n) for n in args.nodes.split(",")] if store == "redis" else [1]
            for nodes in counts:
                print(f"-- {store}: {nodes} server process(es), {args.clients} clients ...")
                runs.append(run_once(nodes, store, args, Path(tmp)))
                for line in rows(runs[-1]):
                    print(line, flush=True)
                if args.main_root:
                    # The same set-up against the other checkout's server, REST only
                    # (the path both have), right after: the same machine state.
                    print(f"-- {store}: {nodes} process(es) of {args.main_root} ...")
                    ab = argparse.Namespace(**{**vars(args), "paths": "rest"})
                    runs.append(run_once(nodes, store, ab, Path(tmp), args.main_root))
                    for line in rows(runs[-1]):
                        print(line, flush=True)
    # With --nodes 1,2,1,2 each count runs twice; the best run of each is compared (the
    # machine's other load only ever makes a run slower).
    by_nodes: dict[int, float] = {}
    for r in runs:
        path = "rest" if "rest" in r["paths"] else next(iter(r["paths"]))
        if r["store"] == "redis" and r.get("server") != "main":
            rate = r["paths"][path]["saturation"]["signals_per_s"]
            by_nodes[r["server_processes"]] = max(rate, by_nodes.get(r["server_processes"], 0))
    scaling = None
    if 1 in by_nodes and 2 in by_nodes:
        scaling = round(by_nodes[2] / by_nodes[1], 2)
    result = {
        "benchmark": "signaling_load",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "runs": runs,
        "scaling_1_to_2": scaling,
        "notes": "targeted ice-candidate signals: a signal frame on the sender's socket (ws, "
        "acked) or a REST POST (rest) on the sender's server -> store check -> bus (memory or "
        "Redis pub/sub) -> target's WebSocket (on either process); load generator, servers "
        "and Redis share this machine's cores",
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0
