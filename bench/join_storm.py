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

    python -m bench storm [--participants 300] [--spread 30] [--store memory|redis]
                          [--nodes 1] [--batch on,off[,main]] [--main-root PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.signaling_load import callsign, percentile
from tests.redis_fixture import RedisServer
from tests.servers import TEST_SECRET, ServerProcess
from tests.voiceclient import VoiceClient

RESULTS = Path(__file__).resolve().parent / "results"
ROOM = "net"


def _cpu(pids: list[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


class Counting(VoiceClient):
    """Keeps no events (only counts frames); the roster is tracked by VoiceClient."""

    frames = 0

    async def _on_event(self, event: dict[str, Any]) -> None:
        self.frames += 1
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
    config = {
        "server": settings,
        "rooms": [{"id": ROOM, "max_participants": 1000, "sfu_threshold": 100000}],
        "limits": {"media_timeout": 0, "participants_per_address": 1000},
    }
    with contextlib.ExitStack() as stack:
        env = {"YAHAML_VOICE_AUTH__SECRET": TEST_SECRET}
        if args.store == "redis":
            env["YAHAML_VOICE_REDIS__URL"] = stack.enter_context(RedisServer()).url
        servers = [
            ServerProcess(workdir, config, env=env, name=f"storm-{i}", **other)
            for i in range(args.nodes)
        ]
        try:
            for server in servers:
                server.start(timeout=60)
            pids = [s.proc.pid for s in servers if s.proc]
            cpu0, t0 = _cpu(pids), time.monotonic()
            result = asyncio.run(_storm([s.url for s in servers], args, batch))
            wall = time.monotonic() - t0
            cpu = _cpu(pids) - cpu0
        finally:
            for server in servers:
                server.stop()
    result.update(
        {
            "server": "main" if mode == "main" else "this",
            "roster_batching": batch,
            "store": args.store,
            "server_processes": args.nodes,
            "server_cpu_s": round(cpu, 2),
            "server_cpu_utilisation": round(cpu / wall, 2),
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
    parser.add_argument("--output", default=str(RESULTS / "join_storm.json"))
    args = parser.parse_args(argv)
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
    result = {
        "benchmark": "join_storm",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "runs": runs,
        "notes": "no media (no SFU negotiation); load generator and servers share the cores",
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(r["rosters_complete"] for r in runs) else 1
