"""Join storm: N participants join one room within a few seconds (a net at 20:00).

Each participant is a tests/voiceclient.py VoiceClient without media (logged in and on
/ws beforehand). Joins start on a uniform schedule over `--spread` seconds. Measured:
join latency (POST .../join, p50/p95), time from the last join's answer until every
member's roster (join answer + participantJoined/rosterBatch frames) is exactly the
room's membership, WebSocket frames received in all, and the server processes' CPU.
Run with roster coalescing on (the default, `server.roster_batch_above`) and off, so the
frame count shows what coalescing saves: off, it grows with N². `main` runs the same storm
against the server of another checkout (`--main-root`, e.g. a worktree of main with its
own .venv) in the same invocation: an A/B on the same machine state.

With `--sfu` every server process runs one SFU worker child, the room moves onto a worker
at its second member (`sfu_threshold` 2), and every joiner negotiates its SFU connection
(a listener: `publish=False`, packets counted off the socket, never decoded). The joiners
then live in `--procs` load-generator processes (300 aiortc peers doing DTLS are too much
for one event loop), which share CLOCK_MONOTONIC with this one. Measured on top: per joiner
the time from its join request until its SFU connection is `connected` (p50/p95, and how
many got there), the workers' CPU and the load generators' CPU (a starved generator shows).

    python -m bench storm [--participants 300] [--spread 30] [--store memory|redis]
                          [--nodes 1] [--batch on,off[,main]] [--main-root PATH]
                          [--sfu [--procs 3]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.sfu_roles import loopback
from bench.signaling_load import _runqueue_wait, callsign, percentile
from tests.redis_fixture import RedisServer
from tests.servers import TEST_SECRET, ServerProcess
from tests.voiceclient import SFU, VoiceClient

RESULTS = Path(__file__).resolve().parent / "results"
ROOM = "net"
SETTLE_TIMEOUT = 60.0  # seconds after the last scheduled join to wait for rosters and media


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):  # a worker that died: its CPU is gone
            total += sum(psutil.Process(pid).cpu_times()[:2])
    return total


class Counting(VoiceClient):
    """Keeps no events (only counts frames); the roster is tracked by VoiceClient."""

    frames = 0
    # sfuLinks frames (who is not connected to the SFU): a healthy storm should see none.
    links_frames = 0

    async def _on_event(self, event: dict[str, Any]) -> None:
        self.frames += 1
        if event.get("type") == "sfuLinks":
            self.links_frames += 1
        self.events.clear()
        self.event_times.clear()


async def _storm(urls: list[str], args: argparse.Namespace, batch: bool) -> dict[str, Any]:
    n = args.participants
    https = {
        url: httpx.AsyncClient(base_url=url, timeout=60.0, limits=httpx.Limits(max_connections=100))
        for url in urls
    }
    clients = [
        Counting(
            urls[i % len(urls)],
            auto_media=False,
            publish=False,
            http=https[urls[i % len(urls)]],
            roster_batch=batch,
        )
        for i in range(n)
    ]
    gate = asyncio.Semaphore(40)

    async def ready(i: int) -> None:
        async with gate:
            await clients[i].login(callsign(i))
            await clients[i].connect(timeout=60)

    try:
        await asyncio.gather(*(ready(i) for i in range(n)))
        latencies: list[float] = []
        started = time.monotonic()

        async def join(i: int) -> None:
            await asyncio.sleep(args.spread * i / n)
            t0 = time.monotonic()
            await clients[i].join(ROOM)
            latencies.append(time.monotonic() - t0)

        await asyncio.gather(*(join(i) for i in range(n)))
        last_join = time.monotonic()
        everyone = {str(c.participant_id) for c in clients}
        deadline = last_join + 60
        while time.monotonic() < deadline:
            if all(c.roster == everyone - {c.participant_id} for c in clients):
                break
            await asyncio.sleep(0.05)
        complete = all(c.roster == everyone - {c.participant_id} for c in clients)
        rosters_at = max(c.roster_at for c in clients)
        return {
            "participants": n,
            "joins_seconds": round(last_join - started, 2),
            "join_ms": {
                "p50": round(percentile(latencies, 50) * 1000, 1),
                "p95": round(percentile(latencies, 95) * 1000, 1),
                "max": round(max(latencies) * 1000, 1),
            },
            "rosters_complete": complete,
            "rosters_complete_after_last_join_s": round(max(0.0, rosters_at - last_join), 3),
            "frames_received": sum(c.frames for c in clients),
        }
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        for http in https.values():
            await http.aclose()


class MediaJoiner(Counting):
    """A listener that negotiates its SFU connection (packets counted, never decoded) and
    notes when its join request was answered (`join()` goes on to send the SFU offer)."""

    joined_at: float | None = None

    async def request(self, method: str, path: str, json_body: Any = None, **kw: Any) -> Any:
        answer = await super().request(method, path, json_body, **kw)
        if method == "POST" and path.endswith("/join") and self.joined_at is None:
            self.joined_at = time.monotonic()
        return answer

    async def _on_event(self, event: dict[str, Any]) -> None:
        await VoiceClient._on_event(self, event)  # signals, roomModeChanged: the SFU link
        await super()._on_event(event)

    def sfu_state(self) -> str:
        peer = self.peers.get(SFU)
        return peer.pc.connectionState if peer is not None else "none"


async def _generate(
    urls: list[str], indices: list[int], args: dict[str, Any], batch: bool, pipe: Any
) -> None:
    """One load-generator process: its joiners log in and open /ws, report their ids; on
    `go` each joins at its slot of the common schedule; then, once every roster of this
    process is complete and every SFU link settled (or after SETTLE_TIMEOUT), the report."""
    loopback("127.0.0.1")
    n = args["participants"]
    https = {
        url: httpx.AsyncClient(base_url=url, timeout=60.0, limits=httpx.Limits(max_connections=100))
        for url in urls
    }
    clients = {
        i: MediaJoiner(
            urls[i % len(urls)],
            publish=False,
            count_only=True,
            http=https[urls[i % len(urls)]],
            roster_batch=batch,
        )
        for i in indices
    }
    gate = asyncio.Semaphore(20)
    errors: list[str] = []

    async def ready(i: int) -> None:
        async with gate:
            await clients[i].login(callsign(i))
            await clients[i].connect(timeout=60)

    try:
        await asyncio.gather(*(ready(i) for i in indices))
        pipe.send({str(i): c.participant_id for i, c in clients.items()})
        start_at, everyone_list = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        everyone = set(everyone_list)
        started: dict[int, float] = {}

        async def join(i: int) -> None:
            await asyncio.sleep(max(0.0, start_at + args["spread"] * i / n - time.monotonic()))
            started[i] = time.monotonic()
            try:
                await clients[i].join(ROOM)
            except Exception as exc:  # reported, not fatal: the others go on
                errors.append(f"join {i}: {type(exc).__name__}: {exc}")

        await asyncio.gather(*(join(i) for i in indices))

        def settled(c: MediaJoiner) -> bool:
            return c.roster == everyone - {c.participant_id} and c.sfu_state() in (
                "connected",
                "failed",
                "closed",
            )

        deadline = start_at + args["spread"] + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            if all(settled(c) for c in clients.values()):
                break
            await asyncio.sleep(0.05)
        pipe.send(
            [
                {
                    "index": i,
                    "started": started.get(i),
                    "joined": c.joined_at,
                    "connected": c.media_at,
                    "state": c.sfu_state(),
                    "roster_complete": c.roster == everyone - {c.participant_id},
                    "roster_at": c.roster_at,
                    "frames": c.frames,
                    "links_frames": c.links_frames,
                }
                for i, c in clients.items()
            ]
            + [{"errors": errors}]
        )
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # close
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)
        for http in https.values():
            await http.aclose()


def _generator_main(
    urls: list[str], indices: list[int], args: dict[str, Any], batch: bool, pipe: Any
) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_generate(urls, indices, args, batch, pipe))


def _dist(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {
        "p50": round(percentile(values, 50) * 1000, 1),
        "p95": round(percentile(values, 95) * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


def _sfu_storm(
    urls: list[str],
    args: argparse.Namespace,
    batch: bool,
    server_pids: list[int],
    redis_pids: list[int],
) -> dict[str, Any]:
    """The storm with SFU negotiation, joiners spread over `args.procs` processes."""
    n = args.participants
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    pipes: list[Any] = []
    try:
        for p in range(args.procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_generator_main,
                args=(urls, list(range(p, n, args.procs)), vars(args), batch, child),
                daemon=True,
            )
            proc.start()
            child.close()  # a generator that dies shows as EOF here
            procs.append(proc)
            pipes.append(parent)
        ids: dict[str, str] = {}
        for pipe in pipes:
            if not pipe.poll(300):
                raise TimeoutError("a load generator did not get ready in 300 s")
            ids.update(pipe.recv())
        worker_pids = [
            c.pid for pid in server_pids for c in psutil.Process(pid).children(recursive=True)
        ]
        gen_pids = [p.pid for p in procs if p.pid is not None]
        cpu0 = {
            "server": _cpu(server_pids),
            "worker": _cpu(worker_pids),
            "generator": _cpu(gen_pids),
            "redis": _cpu(redis_pids),
        }
        wait0 = _runqueue_wait(server_pids + worker_pids)
        load_average = [round(x, 2) for x in os.getloadavg()]
        worker0 = [_cpu([pid]) for pid in worker_pids]
        t0 = time.monotonic()
        start_at = t0 + 0.5
        for pipe in pipes:
            pipe.send((start_at, sorted(ids.values())))
        rows: list[dict[str, Any]] = []
        errors: list[str] = []
        for pipe in pipes:
            if not pipe.poll(args.spread + SETTLE_TIMEOUT + 120):
                raise TimeoutError("a load generator did not report")
            part = pipe.recv()
            errors += part[-1]["errors"]
            rows += part[:-1]
        wall = time.monotonic() - t0
        each_worker = [
            round(_cpu([pid]) - before, 2) for pid, before in zip(worker_pids, worker0, strict=True)
        ]
        cpu = {
            "server": _cpu(server_pids) - cpu0["server"],
            "worker": _cpu(worker_pids) - cpu0["worker"],
            "generator": _cpu(gen_pids) - cpu0["generator"],
            "redis": _cpu(redis_pids) - cpu0["redis"],
        }
        wait = _runqueue_wait(server_pids + worker_pids) - wait0
        for pipe in pipes:
            pipe.send("close")
        for proc in procs:
            proc.join(60)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    joined = [r for r in rows if r["joined"] is not None]
    last_join = max(r["joined"] for r in joined) if joined else t0
    connected = [r for r in joined if r["connected"] is not None]
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    complete = len(joined) == n and all(r["roster_complete"] for r in rows)
    rosters_at = max((r["roster_at"] for r in rows), default=last_join)
    return {
        "participants": n,
        "joins_seconds": round(last_join - start_at, 2),
        "joined": len(joined),
        "join_ms": _dist([r["joined"] - r["started"] for r in joined]),
        "rosters_complete": complete,
        "rosters_complete_count": sum(1 for r in rows if r["roster_complete"]),
        "rosters_complete_after_last_join_s": round(max(0.0, rosters_at - last_join), 3),
        # Per joiner: when its roster became complete, after the last join's answer.
        "roster_after_last_join_ms": _dist(
            [max(0.0, r["roster_at"] - last_join) for r in rows if r["roster_complete"]]
        ),
        "frames_received": sum(r["frames"] for r in rows),
        "sfu_links_frames_received": sum(r.get("links_frames", 0) for r in rows),
        "sfu_connected": len(connected),
        "sfu_states_at_end": states,
        "join_to_connected_ms": _dist([r["connected"] - r["started"] for r in connected]),
        "errors": errors[:20],
        "error_count": len(errors),
        "load_generator_processes": args.procs,
        "worker_processes": len(worker_pids),
        "server_cpu_s": round(cpu["server"], 2),
        "server_cpu_utilisation": round(cpu["server"] / wall, 2),
        "worker_cpu_s": round(cpu["worker"], 2),
        "worker_cpu_utilisation": round(cpu["worker"] / wall, 2),
        "worker_cpu_s_each": each_worker,  # the room lives on one of them
        "generator_cpu_s": round(cpu["generator"], 2),
        "generator_cpu_utilisation": round(cpu["generator"] / wall, 2),
        "redis_cpu_s": round(cpu["redis"], 2),
        # Per second, how long servers and workers were runnable but waited for a core
        # (the other load of this shared machine), and the load average before the storm.
        "server_worker_runqueue_wait_s_per_s": round(wait / wall, 3),
        "load_average_before": load_average,
        "wall_s": round(wall, 2),
    }


def run_once(mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    batch = mode == "on"
    settings: dict[str, Any] = {"log_level": "warning", "grace_period": "30s"}
    other: dict[str, Any] = {}  # another checkout's server: its command and directory
    if mode == "main":
        if not args.main_root:
            raise SystemExit("--batch main needs --main-root")
        root = Path(args.main_root)
        other = {"command": [str(root / ".venv/bin/python"), "-m", "yahaml_voice"], "cwd": root}
    else:
        settings["roster_batch_above"] = 32 if batch else 0
    config: dict[str, Any] = {
        "server": settings,
        "rooms": [{"id": ROOM, "max_participants": 1000, "sfu_threshold": 100000}],
        "limits": {"media_timeout": 0, "participants_per_address": 1000},
    }
    workers = 0
    if args.sfu:
        # On a worker from the second member on; one worker child per server process.
        config["rooms"][0]["sfu_threshold"] = 2
        config["sfu"] = {"ice_addresses": ["127.0.0.1"]}
        workers = 1
    with contextlib.ExitStack() as stack:
        env = {"YAHAML_VOICE_AUTH__SECRET": TEST_SECRET}
        redis_pids: list[int] = []
        if args.store == "redis":
            redis = stack.enter_context(RedisServer())
            env["YAHAML_VOICE_REDIS__URL"] = redis.url
            redis_pids = [redis._proc.pid] if redis._proc else []
        servers = [
            ServerProcess(workdir, config, env=env, workers=workers, name=f"storm-{i}", **other)
            for i in range(args.nodes)
        ]
        try:
            for server in servers:
                server.start(timeout=60)
            for server in servers:
                server.wait_healthy(timeout=60, workers=workers or None)
            pids = [s.proc.pid for s in servers if s.proc]
            urls = [s.url for s in servers]
            if args.sfu:
                result = _sfu_storm(urls, args, batch, pids, redis_pids)
            else:
                cpu0, t0 = _cpu(pids), time.monotonic()
                result = asyncio.run(_storm(urls, args, batch))
                wall = time.monotonic() - t0
                cpu = _cpu(pids) - cpu0
                result["server_cpu_s"] = round(cpu, 2)
                result["server_cpu_utilisation"] = round(cpu / wall, 2)
        finally:
            for server in servers:
                server.stop()
    result.update(
        {
            "server": "main" if mode == "main" else "this",
            "roster_batching": batch,
            "store": args.store,
            "server_processes": args.nodes,
            "sfu": args.sfu,
        }
    )
    return result


def row(r: dict[str, Any]) -> str:
    return (
        f"{r.get('server', 'this'):>6} {'on' if r['roster_batching'] else 'off':>6} "
        f"{r['store']:>6} {r['server_processes']:>5} {r['participants']:>5} "
        f"{r['joins_seconds']:>7} {r['join_ms']['p50']:>8} {r['join_ms']['p95']:>8} "
        f"{r['rosters_complete']!s:>9} {r['rosters_complete_after_last_join_s']:>9} "
        f"{r['frames_received']:>9} {r['server_cpu_s']:>7}"
    )


def sfu_row(r: dict[str, Any]) -> str:
    return (
        f"  SFU: {r['sfu_connected']}/{r['participants']} connected "
        f"({r['sfu_states_at_end']}), join->connected p50/p95 "
        f"{r['join_to_connected_ms']['p50']}/{r['join_to_connected_ms']['p95']} ms; "
        f"sfuLinks frames {r['sfu_links_frames_received']}; CPU s: server {r['server_cpu_s']}, workers {r['worker_cpu_s']}, "
        f"redis {r['redis_cpu_s']}, load generators {r['generator_cpu_s']} "
        f"({r['generator_cpu_utilisation']} cores); run-queue wait "
        f"{r['server_worker_runqueue_wait_s_per_s']} s/s; "
        f"errors {r['error_count']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench storm", description=__doc__)
    parser.add_argument("--participants", type=int, default=300)
    parser.add_argument(
        "--spread", type=float, default=30.0, help="seconds the joins start over (issue: <= 60)"
    )
    parser.add_argument("--store", choices=["memory", "redis"], default="memory")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument(
        "--batch", default="on,off", help="roster coalescing: on, off; main: --main-root's server"
    )
    parser.add_argument("--main-root", default=None, help="checkout with .venv for `main`")
    parser.add_argument(
        "--sfu", action="store_true", help="SFU workers; every joiner negotiates its SFU link"
    )
    parser.add_argument("--procs", type=int, default=3, help="load generator processes (--sfu)")
    parser.add_argument("--output", default=None, help="default: results/join_storm[-sfu].json")
    args = parser.parse_args(argv)
    output = args.output or str(
        RESULTS / ("join_storm-sfu.json" if args.sfu else "join_storm.json")
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    header = (
        f"{'server':>6} {'batch':>6} {'store':>6} {'procs':>5} {'N':>5} {'joins s':>7} {'join p50':>8} {'join p95':>8} "
        f"{'complete':>9} {'after s':>9} {'frames':>9} {'cpu s':>7}"
    )
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.batch.split(","):
            runs.append(run_once(mode, args, Path(tmp)))
            print(header if len(runs) == 1 else "", end="\n" if len(runs) == 1 else "")
            print(row(runs[-1]), flush=True)
            if args.sfu:
                print(sfu_row(runs[-1]), flush=True)
    result = {
        "benchmark": "join_storm",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "runs": runs,
        "notes": (
            "every joiner negotiates its SFU connection (listener, packets counted, not "
            "decoded); load generators, servers and workers share the cores"
            if args.sfu
            else "no media (no SFU negotiation); load generator and servers share the cores"
        ),
    }
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(result, indent=2) + "\n")
    ok = all(r["rosters_complete"] for r in runs)
    if args.sfu:  # and every joiner's SFU connection came up
        ok = ok and all(r["sfu_connected"] == r["participants"] for r in runs)
    return 0 if ok else 1
