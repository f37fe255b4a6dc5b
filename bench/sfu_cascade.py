"""One room across workers (issue 14): N listeners over two workers, one per core, vs one.

The load of bench/sfu_forwarding.py (one speaker sending 20 ms Opus, N listeners counting
packets on loopback) goes to one room on our worker in two placements, measured in the
same run and in alternating order:

- `cascade`: `--workers` worker processes, worker k pinned to CPU k. The first is the
  room's origin and holds the publisher; each other is an edge (its listeners' offers
  name the origin) fed by the origin over a cascade link, which this benchmark relays as
  the server does (the edge's `cascadeReady` becomes `cascadeLink` to the origin). The
  listeners are split evenly over the workers, as placement with
  `sfu.max_listeners_per_worker` = N / workers would.
- `one worker`: the same N listeners on one worker pinned to CPU 0, the reference.

The load generator (publisher, listener processes) shares the cores in both placements,
as it would any host's; its CPU is reported so a starved generator is visible. Reported:
loss ratio, added latency p50/p99 (publisher send to listener receive, minus the same
percentile on the direct path), CPU per packet per worker. The JSON's top-level figures
(`listeners`, `workers`, `loss_ratio`, `added_latency_ms`) are the cascade's, over all
rounds; `reference` holds the one-worker case's. Target: loss < 0.1 %.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.sfu_forwarding import FANOUTS, RESULTS, Lab, Result, host_info, measure

TARGET_LOSS = 0.001


def summary(results: list[Result], workers: int) -> dict[str, Any]:
    """One placement over all its rounds: loss over every packet, the worst round's added
    latency, CPU per packet per worker (median of rounds)."""
    expected = sum(r.expected for r in results)
    lost = sum(r.lost for r in results)
    added = [r for r in results if r.added_p99_ms is not None]
    per_worker = []
    for k in range(workers):
        rows = [r.extra["workers"][k] for r in results if "workers" in r.extra]
        us = sorted(w["us_per_packet"] for w in rows if w["us_per_packet"] is not None)
        cores = sorted(w["cores"] for w in rows)
        per_worker.append(
            {
                "id": rows[0]["id"] if rows else f"w{k}",
                "role": rows[0]["role"] if rows else "",
                "listeners": rows[0]["listeners"] if rows else 0,
                "us_per_packet": us[len(us) // 2] if us else None,
                "cores": cores[len(cores) // 2] if cores else None,
                "send_errors": sum(w["send_errors"] for w in rows),
                # Worst round: publisher send to this worker's forwarder (the way in),
                # and to its listeners.
                "arrival_p99_ms": max(
                    (w["arrival_p99_ms"] for w in rows if w.get("arrival_p99_ms") is not None),
                    default=None,
                ),
                "listener_p99_ms": max(
                    (w["latency_ms"]["p99"] for w in rows if w["latency_ms"]["p99"] is not None),
                    default=None,
                ),
            }
        )
    cpus = len(os.sched_getaffinity(0))
    gen = sorted(r.loadgen_cores for r in results)
    fwd = sorted(r.forwarder_cores for r in results)
    return {
        "listeners": results[0].listeners if results else 0,
        "workers": workers,
        "rounds": len(results),
        "expected": expected,
        "lost": lost,
        "loss_ratio": round(lost / expected, 6) if expected else None,
        "added_latency_ms": {
            "p50": max((r.added_p50_ms or 0.0 for r in added), default=None),
            "p99": max((r.added_p99_ms or 0.0 for r in added), default=None),
        },
        "added_latency_ms_per_round": [[r.added_p50_ms, r.added_p99_ms] for r in results],
        "per_worker": per_worker,
        "forwarder_cores": fwd[len(fwd) // 2] if fwd else None,
        # The load generator's CPU, in cores and as a share of the machine it shares.
        "loadgen_cores": gen[len(gen) // 2] if gen else None,
        "loadgen_share": round(gen[len(gen) // 2] / cpus, 3) if gen else None,
        "errors": sum(r.errors for r in results),
        "notes": sorted({r.note for r in results if r.note}),
    }


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    head = (
        f"{'placement':<11} {'N':>4} {'loss':>9} {'p50+ms':>7} {'p99+ms':>7} "
        f"{'us/pkt per worker':>22} {'fwd cores':>9} {'gen cores':>9}  notes"
    )
    lines = [head, "-" * len(head)]

    def f(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for name, s in rows:
        us = " / ".join(f(w["us_per_packet"], ".1f") for w in s["per_worker"])
        loss = "-" if s["loss_ratio"] is None else f"{100 * s['loss_ratio']:.3f}%"
        lat = s["added_latency_ms"]
        lines.append(
            f"{name:<11} {s['listeners']:>4} {loss:>9} {f(lat['p50'], '.2f'):>7} "
            f"{f(lat['p99'], '.2f'):>7} {us:>22} {f(s['forwarder_cores'], '.3f'):>9} "
            f"{f(s['loadgen_cores'], '.3f'):>9}  {'; '.join(s['notes'])}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cascade", description=__doc__)
    parser.add_argument("--listeners", type=int, default=800)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="each runs both placements")
    parser.add_argument("--no-reference", action="store_true", help="skip the one-worker reference")
    parser.add_argument("--fanout", choices=sorted(FANOUTS), default="ours")
    parser.add_argument(
        "--nice", type=int, default=-10, help="as in `python -m bench sfu` (0 to disable)"
    )
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=20.0, help="seconds per placement")
    parser.add_argument(
        "--output", help="JSON file (default: bench/results/sfu-cascade-<time>.json)"
    )
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers: at least 2 (one is the reference)")
    placements = {"cascade": args.workers} | ({} if args.no_reference else {"one worker": 1})
    runs: dict[str, list[Result]] = {name: [] for name in placements}
    with tempfile.TemporaryDirectory(prefix="yv-bench-") as tmp, Lab(args.nice) as lab:
        workdir = Path(tmp)
        direct = measure("direct", 1, workdir, args.warmup, min(args.window, 10.0), None, lab)
        print(
            f"direct path: p50 {direct.latency_p50_ms} ms, p99 {direct.latency_p99_ms} ms",
            flush=True,
        )
        names = list(placements)
        for i in range(args.rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                started = time.monotonic()
                try:
                    r = measure(
                        args.fanout,
                        args.listeners,
                        workdir,
                        args.warmup,
                        args.window,
                        direct,
                        lab,
                        workers=placements[name],
                        shared=True,
                    )
                except Exception as exc:
                    r = Result(args.fanout, args.listeners, 0, note=f"failed: {exc}")
                r.extra["placement"] = name
                r.extra["wall_s"] = round(time.monotonic() - started, 1)
                r.extra["load_avg_1m"] = round(os.getloadavg()[0], 2)
                runs[name].append(r)
                print(table([(name, summary([r], placements[name]))]).splitlines()[-1], flush=True)
        logs = {
            p.name: p.read_text(errors="replace")[-2000:]
            for p in workdir.glob("*.log")
            if p.stat().st_size
        }
    summaries = {name: summary(results, placements[name]) for name, results in runs.items()}
    cascade = summaries["cascade"]
    loss = cascade["loss_ratio"]
    report = {
        "benchmark": "sfu-cascade",
        "time": datetime.datetime.now(datetime.UTC).isoformat(),
        **{k: cascade[k] for k in ("listeners", "workers", "loss_ratio", "added_latency_ms")},
        "target": {"loss_ratio_below": TARGET_LOSS, "met": loss is not None and loss < TARGET_LOSS},
        "cascade": cascade,
        "reference": summaries.get("one worker"),
        "direct": asdict(direct),
        "host": host_info(lab),
        "settings": vars(args),
        "results": [asdict(r) for results in runs.values() for r in results],
        "log_tails": {k: v for k, v in logs.items() if "Traceback" in v or "rror" in v},
    }
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(args.output) if args.output else RESULTS / f"sfu-cascade-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print()
    print(table(list(summaries.items())))
    print("\nper worker, worst round: p99 ms from publisher to its forwarder / to its listeners")
    for name, s in summaries.items():
        for w in s["per_worker"]:
            print(
                f"  {name:<11} {w['id']} ({w['role']}, {w['listeners']} listeners): "
                f"{w['arrival_p99_ms']} / {w['listener_p99_ms']}"
            )
        print(
            f"  {name:<11} load generator: {s['loadgen_cores']} cores, {s['loadgen_share']} of the machine"
        )
    print(
        f"\nloss {'-' if loss is None else f'{100 * loss:.3f} %'} over {args.workers} workers "
        f"(target < {100 * TARGET_LOSS:.1f} %: {'met' if report['target']['met'] else 'missed'})"
    )
    print(f"results: {path}")
    return 0
