"""Soak: one net room on a real server and its SFU worker, many members, for minutes.

`python -m bench soak [-- --participants 300 --duration 600 ...]` (`make soak`: the full
run). A real `yahaml-voice serve` (token mode, its SFU worker as a child) hosts one
room; `talkers` members take the air one at a time for `turn` seconds each (a real
Opus tone through aiortc), the other members listen and count the SFU's packets without
decoding, spread over several processes (bench/soak_members.py); every
`churn_interval` a fraction of the listeners leaves and rejoins. Meanwhile the server's
and its workers' RSS, open fds and CPU are sampled every second.

Measured and judged (targets: LOSS_TARGET_PCT, RSS_TARGET_PCT, FD_MARGIN, 0 lost roster events):
- listener packet loss: per listener, over the whole second buckets in which a talker
  was on the air (1 s after a talker change until 0.25 s before the next) and the
  listener was settled (2 s after its media connected, until 1 s before it left):
  sequence-number gaps of the forwarded streams (every slot) over packets received plus
  gaps; a second in which the listener got no speech packet at all although a talker
  was on the air counts as 50 packets lost (a stream that stalled leaves no gap).
- roster events: for every stay of every member in the room, each join or leave of
  another member that started after the stay began and was answered before it ended
  must have reached that member's WebSocket (participantJoined / participantLeft).
- RSS growth: median of the last 10 samples over the median of the 10 samples after
  warm-up, for the server and for its workers; fds: the same medians, flat within
  max(3, 2 %).
Report: bench/results/soak-<time>.json and a PNG plot beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.sfu_forwarding import Role
from tests.servers import TEST_SECRET, ServerProcess
from yahaml_voice.core.config import load_config
from yahaml_voice.core.tokens import issue_token

RESULTS = Path(__file__).resolve().parent / "results"
ROOM = "net"

# Every server setting the soak overrides, in one place. Per-client limits (a `limits:`
# section) must be generous enough here for 300 members on one address.
SERVER_CONFIG: dict[str, Any] = {
    "server": {"grace_period": "15s", "log_level": "warning"},
    "auth": {"mode": "token", "secret": TEST_SECRET},
    "rooms": [
        {"id": ROOM, "name": "Club net", "sfu_threshold": 2, "max_participants": 400},
    ],
    "sfu": {"workers": 1, "slots": 3, "ice_addresses": ["127.0.0.1"]},
    # Every member runs on this machine (one source address): the per-address limits a
    # club's members would each meet on their own are off; the per-participant ones and
    # the media timeout stay at their defaults.
    "limits": {"sessions_per_minute": 0, "participants_per_address": 0},
}

LOSS_TARGET_PCT = 0.5  # listener packet loss below
RSS_TARGET_PCT = 10.0  # RSS growth after warm-up below, server and workers each
FD_MARGIN = (3.0, 0.02)  # fd growth after warm-up at most max(3, 2 %), each
PACKETS_PER_SECOND = 50
TURN_SETTLE = 1.0  # seconds after a talker change before loss counts
TURN_TAIL = 0.25  # ... and before the next change
MEDIA_SETTLE = 2.0  # seconds after a listener's media connected
LEAVE_MARGIN = 1.0  # seconds before a listener leaves
MEDIAN_SAMPLES = 10


@dataclass
class Settings:
    participants: int = 300
    talkers: int = 10
    duration: float = 600.0
    warmup: float = 60.0
    turn: float = 5.0
    churn_interval: float = 60.0
    churn_fraction: float = 0.05
    churn_pause: float = 1.0
    listeners_per_process: int = 100
    join_concurrency: int = 8
    seed: int = 1


HELP = {
    "participants": "members in the room, talkers included",
    "talkers": "members that take the air in turn",
    "duration": "seconds of the run after setup",
    "warmup": "seconds after setup before RSS and fd baselines",
    "turn": "seconds each talker holds the air",
    "churn_interval": "seconds between churn rounds",
    "churn_fraction": "share of the listeners that leave and rejoin each round",
    "churn_pause": "seconds a churned listener stays out",
    "listeners_per_process": "listeners per load-generator process",
    "join_concurrency": "joins in flight per process",
    "seed": "of the churn's random choice",
}


class Sampler(threading.Thread):
    """RSS, open fds and CPU of the server and of its children (the SFU workers), every second."""

    def __init__(self, pid: int, loadgen: list[int]) -> None:
        super().__init__(daemon=True)
        self.server = psutil.Process(pid)
        self.loadgen = [psutil.Process(p) for p in loadgen]
        self.samples: list[dict[str, float]] = []
        self.stop_event = threading.Event()
        self._known: dict[int, psutil.Process] = {}

    def _proc(self, proc: psutil.Process) -> psutil.Process:
        # One Process object per pid, so cpu_percent() measures since the last sample.
        return self._known.setdefault(proc.pid, proc)

    def sample(self) -> dict[str, float]:
        row: dict[str, float] = {"t": time.monotonic()}
        groups = {"server": [self.server], "worker": self.server.children(recursive=True)}
        groups["loadgen"] = self.loadgen
        for name, procs in groups.items():
            rss = fds = cpu = 0.0
            for proc in procs:
                try:
                    p = self._proc(proc)
                    with p.oneshot():
                        rss += p.memory_info().rss
                        fds += p.num_fds()
                        cpu += p.cpu_percent()
                except psutil.Error:
                    continue
            row[f"{name}_rss_mb"] = round(rss / 2**20, 2)
            row[f"{name}_fds"] = fds
            row[f"{name}_cpu_pct"] = round(cpu, 1)
        row["workers"] = len(groups["worker"])
        return row

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.samples.append(self.sample())
            except psutil.Error:
                break
            self.stop_event.wait(1.0)

    def stop(self) -> list[dict[str, float]]:
        self.stop_event.set()
        self.join(5)
        return self.samples


def mint(count: int, talkers: int) -> list[dict[str, Any]]:
    """Tokens for every member from the shared test secret (talkers operate, others listen)."""
    config = load_config(environ={}, overrides={"auth.secret": TEST_SECRET})
    members = []
    for i in range(count):
        talker = i < talkers
        token, _ = issue_token(
            config,
            f"T{i}SOAK" if talker else f"L{i}SOAK",
            role="operator" if talker else "listener",
            rooms=[ROOM],
            ttl=6 * 3600,
        )
        members.append({"index": i, "token": token, "talker": talker, "tone": 300.0 + 20 * i})
    return members


def included_seconds(
    member: dict[str, Any], turns: list[tuple[int, float, float]], window: tuple[float, float]
) -> list[int]:
    """The whole seconds in which this listener's loss counts (see the module doc)."""
    spans: list[tuple[float, float]] = []
    for session in member["sessions"]:
        if session.get("media_at") is None:
            continue
        start = session["media_at"] + MEDIA_SETTLE
        end = session["leave_req"] - LEAVE_MARGIN if session.get("leave_req") else window[1]
        spans.append((max(start, window[0]), min(end, window[1])))
    seconds = []
    for _, begin, end in turns:
        first, last = begin + TURN_SETTLE, end - TURN_TAIL
        for s in range(math.ceil(first), math.floor(last)):
            if any(a <= s and s + 1 <= b for a, b in spans):
                seconds.append(s)
    return seconds


def packet_loss(
    members: list[dict[str, Any]],
    turns: list[tuple[int, float, float]],
    window: tuple[float, float],
) -> dict[str, Any]:
    received = lost = loud = silent = counted = 0
    per_listener: list[float] = []
    per_second: dict[int, list[int]] = {}
    for member in members:
        if member["talker"]:
            continue
        buckets = {int(k): v for k, v in member["seconds"].items()}
        r = gap = heard = quiet = 0
        seconds = included_seconds(member, turns, window)
        for s in seconds:
            got, missed, speech = buckets.get(s, (0, 0, 0))
            stall = PACKETS_PER_SECOND if speech == 0 else 0
            r, gap, heard, quiet = r + got, gap + missed, heard + speech, quiet + (speech == 0)
            row = per_second.setdefault(s, [0, 0])
            row[0] += got
            row[1] += missed + stall
        received, lost, loud, silent = received + r, lost + gap, loud + heard, silent + quiet
        counted += len(seconds)
        expected = r + gap + PACKETS_PER_SECOND * quiet
        if expected:
            per_listener.append(100.0 * (gap + PACKETS_PER_SECOND * quiet) / expected)
    stalled = PACKETS_PER_SECOND * silent
    total = received + lost + stalled
    loss = 100.0 * (lost + stalled) / total if total else None
    return {
        "loss_pct": None if loss is None else round(loss, 4),
        "received": received,
        "lost_by_sequence": lost,
        "silent_listener_seconds": silent,
        "listener_seconds": counted,
        "listeners_measured": len(per_listener),
        "worst_listener_loss_pct": round(max(per_listener), 3) if per_listener else None,
        "listeners_over_target": sum(1 for x in per_listener if x >= LOSS_TARGET_PCT),
        # Speech packets heard over 50/s while on the air: the talker's stream arrives at
        # all (by arrival-time buckets, so +-1 packet per span edge; not the loss measure).
        "on_air_speech_pct": round(100.0 * loud / (PACKETS_PER_SECOND * counted), 2)
        if counted
        else None,
        "series": {
            str(s): round(100.0 * v[1] / (v[0] + v[1]), 4) if v[0] + v[1] else 0.0
            for s, v in sorted(per_second.items())
        },
    }


def roster_loss(members: list[dict[str, Any]], end: float) -> dict[str, Any]:
    """Joins and leaves each member should have seen, against what its WebSocket delivered."""
    actions: list[tuple[str, str, float, float]] = []
    for member in members:
        for session in member["sessions"]:
            if session.get("join_resp") is not None:
                actions.append(
                    ("participantJoined", member["pid"], session["join_req"], session["join_resp"])
                )
            if session.get("leave_resp") is not None:
                actions.append(
                    ("participantLeft", member["pid"], session["leave_req"], session["leave_resp"])
                )
    expected_total = lost_total = extra_total = 0
    examples: list[dict[str, Any]] = []
    for member in members:
        for session, seen_list in zip(member["sessions"], member["roster"], strict=True):
            if session.get("join_resp") is None:
                continue
            start = session["join_resp"]
            stop = session.get("leave_req") or end
            expected = Counter(
                (kind, pid)
                for kind, pid, req, resp in actions
                if pid != member["pid"] and req > start and resp < stop
            )
            seen = Counter((kind, pid) for kind, pid, _ in seen_list)
            for key, n in expected.items():
                missing = max(0, n - seen.get(key, 0))
                if missing and len(examples) < 10:
                    examples.append({"member": member["pid"], "event": key[0], "of": key[1]})
                lost_total += missing
            expected_total += sum(expected.values())
            extra_total += sum(
                max(0, n - expected.get(key, 0))
                for key, n in seen.items()
                if key[0] == "participantLeft"
            )
    return {
        "expected": expected_total,
        "lost": lost_total,
        # Leaves a member saw beyond those it had to (includes races at a stay's edges;
        # a member the server dropped would show here too).
        "extra_leaves_seen": extra_total,
        "examples": examples,
    }


def growth(samples: list[dict[str, float]], key: str, after: float) -> dict[str, Any]:
    values = [s[key] for s in samples if s["t"] >= after]
    if len(values) < 2 * MEDIAN_SAMPLES:
        values = [s[key] for s in samples]
    if not values:
        return {"baseline": None, "final": None}
    n = min(MEDIAN_SAMPLES, max(1, len(values) // 2))
    base = statistics.median(values[:n])
    final = statistics.median(values[-n:])
    out: dict[str, Any] = {"baseline": base, "final": final, "peak": max(values)}
    out["growth"] = round(final - base, 2)
    out["growth_pct"] = round(100.0 * (final - base) / base, 2) if base else None
    return out


def fd_allowance(baseline: float) -> float:
    return max(FD_MARGIN[0], FD_MARGIN[1] * baseline)


def judge(report: dict[str, Any]) -> dict[str, Any]:
    loss = report["loss"]["loss_pct"]
    rss = report["resources"]
    fd_ok = all(
        rss[f"{g}_fds"]["growth"] <= fd_allowance(rss[f"{g}_fds"]["baseline"])
        for g in ("server", "worker")
        if rss[f"{g}_fds"]["baseline"] is not None
    )
    rss_pct = [
        rss[f"{g}_rss_mb"]["growth_pct"]
        for g in ("server", "worker")
        if rss[f"{g}_rss_mb"].get("growth_pct") is not None
    ]
    return {
        "loss": {
            "value": loss,
            "target": f"< {LOSS_TARGET_PCT} %",
            "met": loss is not None and loss < LOSS_TARGET_PCT,
        },
        "roster": {
            "value": report["roster"]["lost"],
            "target": "0 lost",
            "met": report["roster"]["lost"] == 0 and report["roster"]["expected"] > 0,
        },
        "rss_growth": {
            "value": max(rss_pct) if rss_pct else None,
            "target": f"< {RSS_TARGET_PCT} % after warm-up",
            "met": bool(rss_pct) and max(rss_pct) < RSS_TARGET_PCT,
        },
        "fds_flat": {
            "value": {g: rss[f"{g}_fds"].get("growth") for g in ("server", "worker")},
            "target": f"growth <= max({FD_MARGIN[0]:g}, {100 * FD_MARGIN[1]:g} %)",
            "met": fd_ok,
        },
    }


def run(settings: Settings, workdir: Path, log: Any = print) -> dict[str, Any]:
    """Run one soak; returns the report (nothing written but logs in `workdir`)."""
    rng = random.Random(settings.seed)
    talkers = min(settings.talkers, settings.participants)
    members = mint(settings.participants, talkers)
    listeners = [m["index"] for m in members if not m["talker"]]
    server = ServerProcess(
        workdir, SERVER_CONFIG, workers=int(SERVER_CONFIG["sfu"]["workers"]), name="soak"
    )
    roles: list[Role] = []
    sampler: Sampler | None = None
    report: dict[str, Any] = {"settings": asdict(settings), "server_config": SERVER_CONFIG}
    try:
        t_begin = time.monotonic()
        server.start(timeout=60)
        server.wait_healthy(timeout=60, workers=int(SERVER_CONFIG["sfu"]["workers"]))
        assert server.proc is not None
        count = max(1, math.ceil(len(listeners) / settings.listeners_per_process))
        groups = [[members[i] for i in listeners[k::count]] for k in range(count)]
        talk = Role(
            ["--url", server.url, "--room", ROOM],
            workdir / "talkers.log",
            None,
            module="bench.soak_members",
        )
        roles.append(talk)
        lis = []
        for k in range(count):
            role = Role(
                ["--url", server.url, "--room", ROOM],
                workdir / f"listeners{k}.log",
                None,
                module="bench.soak_members",
            )
            roles.append(role)
            lis.append(role)
        for role in roles:
            role.read(timeout=60)
        sampler = Sampler(server.proc.pid, [r.pid for r in roles])
        sampler.start()
        # One talker alone, then the other talkers (the room switches to the SFU at its
        # second member: the first must hear of it as a member, not while its own join
        # is in flight), then the listeners.
        join = {"cmd": "join", "concurrency": settings.join_concurrency}
        t_join = time.monotonic()
        talk.send({**join, "members": members[:1], "wait_media": False})
        joined = talk.read(timeout=600)["joined"]
        talk.send({**join, "members": members[1:talkers]})
        joined += talk.read(timeout=600)["joined"]
        talk.send({"cmd": "media"})
        media = talk.read(timeout=600)
        joined -= media["waited"] - media["connected"]
        for role, group in zip(lis, groups, strict=True):
            role.send({**join, "members": group})
        for role in lis:
            joined += role.read(timeout=1800)["joined"]
        t_ready = time.monotonic()
        setup = t_ready - t_begin
        log(f"setup: {joined}/{settings.participants} members on the SFU in {setup:.1f} s")
        report["setup"] = {
            "seconds": round(setup, 1),  # from starting the server
            "join_seconds": round(t_ready - t_join, 1),  # from the first join
            "joined": joined,
            "per_second": round(joined / (t_ready - t_join), 2),
        }

        # The run: turns on the talker process, churn on the listener processes.
        end = t_ready + settings.duration
        turns: list[tuple[int, float, float]] = []
        churns: list[dict[str, Any]] = []
        pending: dict[int, Role] = {}  # listener process -> its churn not answered yet
        churned = 0
        on_air: int | None = None
        next_turn = t_ready
        next_churn = t_ready + settings.churn_interval
        churn_size = max(1, round(settings.churn_fraction * len(listeners)))
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_turn:
                speaker = (on_air + 1) % talkers if on_air is not None else 0
                talk.send({"cmd": "turn", "off": on_air, "on": speaker})
                at = talk.read(timeout=60)["at"]
                if turns:
                    turns[-1] = (turns[-1][0], turns[-1][1], at)
                turns.append((speaker, at, end))
                on_air = speaker
                next_turn += settings.turn
            if now >= next_churn and next_churn + 5 >= end:
                next_churn = end  # too late for another round
            elif now >= next_churn:
                chosen = rng.sample(listeners, min(churn_size, len(listeners)))
                churns.append({"at": now, "members": len(chosen)})
                for k, role in enumerate(lis):
                    mine = [i for i in chosen if i in {m["index"] for m in groups[k]}]
                    if not mine:
                        continue
                    if k in pending:
                        churned += pending.pop(k).read(timeout=300)["churned"]
                    role.send(
                        {
                            "cmd": "churn",
                            "indices": mine,
                            "pause": settings.churn_pause,
                            "concurrency": settings.join_concurrency,
                        }
                    )
                    pending[k] = role
                next_churn += settings.churn_interval
            time.sleep(max(0.0, min(next_turn, next_churn, end) - time.monotonic()))
        t_end = time.monotonic()
        if turns:
            turns[-1] = (turns[-1][0], turns[-1][1], t_end)
        churned += sum(role.read(timeout=300)["churned"] for role in pending.values())
        time.sleep(1.0)  # roster events of the last rejoins
        samples = sampler.stop()
        data: list[dict[str, Any]] = []
        errors: list[str] = []
        for k, role in enumerate(roles):
            path = workdir / f"members{k}.json"
            role.send({"cmd": "report", "path": str(path)})
            role.read(timeout=300)
            part = json.loads(path.read_text())
            data += part["members"]
            errors += part["errors"]
        window = (t_ready, t_end)
        report["loss"] = packet_loss(data, turns, window)
        report["roster"] = roster_loss(data, time.monotonic())
        warm = t_ready + settings.warmup
        report["resources"] = {
            key: growth(samples, key, warm)
            for key in (
                "server_rss_mb",
                "worker_rss_mb",
                "server_fds",
                "worker_fds",
                "server_cpu_pct",
                "worker_cpu_pct",
                "loadgen_cpu_pct",
            )
        }
        report["churn"] = {"rounds": len(churns), "rejoined": churned}
        report["turns"] = len(turns)
        report["member_errors"] = errors[:50]
        report["member_error_count"] = len(errors)
        report["timeline"] = {
            "begin": t_begin,
            "ready": t_ready,
            "warm": warm,
            "end": t_end,
            "churns": [c["at"] for c in churns],
        }
        report["samples"] = samples
        report["targets"] = judge(report)
        report["met"] = all(t["met"] for t in report["targets"].values())
        log_text = server.log_path.read_text(errors="replace")
        report["server_log_tracebacks"] = log_text.count("Traceback")
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        for role in reversed(roles):
            role.close()
        server.stop()
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    """Loss, RSS, fds and CPU against time since setup began, targets marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    line = report["timeline"]
    t0 = line["begin"]
    samples = report["samples"]
    t = [s["t"] - t0 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 12), sharex=True)
    loss_series = report["loss"]["series"]
    xs = [int(s) + 0.5 - t0 for s in loss_series]
    ax = axes[0]
    ax.plot(xs, list(loss_series.values()), ".", markersize=3, label="loss per second")
    ax.axhline(LOSS_TARGET_PCT, color="red", linestyle="--", label="target < 0.5 %")
    ax.set_ylabel("listener loss (%)")
    ax.set_title(
        f"soak: {report['settings']['participants']} members, "
        f"loss {report['loss']['loss_pct']} %, lost roster events {report['roster']['lost']}"
    )
    for key, ax, label in (
        ("rss_mb", axes[1], "RSS (MB)"),
        ("fds", axes[2], "open fds"),
        ("cpu_pct", axes[3], "CPU (% of a core)"),
    ):
        for group in ("server", "worker") + (("loadgen",) if key == "cpu_pct" else ()):
            ax.plot(t, [s[f"{group}_{key}"] for s in samples], label=group)
        if key in ("rss_mb", "fds"):
            for group in ("server", "worker"):
                base = report["resources"][f"{group}_{key}"]["baseline"]
                if base is None:
                    continue
                top = (
                    base * (1 + RSS_TARGET_PCT / 100)
                    if key == "rss_mb"
                    else base + fd_allowance(base)
                )
                limit = f"+{RSS_TARGET_PCT:g} %" if key == "rss_mb" else "flat"
                ax.axhline(top, color="red", linestyle=":", linewidth=0.8)
                ax.annotate(
                    f"{group} target ({limit})",
                    (t[-1] if t else 0, top),
                    fontsize=7,
                    color="red",
                    ha="right",
                    va="bottom",
                )
        ax.set_ylabel(label)
    for ax in axes:
        ax.axvline(line["ready"] - t0, color="grey", linestyle="--", linewidth=0.8)
        ax.axvline(line["warm"] - t0, color="black", linestyle="--", linewidth=0.8)
        for at in line["churns"]:
            ax.axvline(at - t0, color="orange", alpha=0.4, linewidth=0.8)
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds (grey: setup done, black: warm-up done, orange: churn)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(report: dict[str, Any]) -> str:
    lines = [f"setup: {report['setup']}"]
    for name, target in report["targets"].items():
        lines.append(
            f"{name:<11} {'ok  ' if target['met'] else 'MISS'} {target['value']} (target {target['target']})"
        )
    res = report["resources"]
    for key in ("server_rss_mb", "worker_rss_mb", "server_fds", "worker_fds"):
        r = res[key]
        lines.append(f"{key:<14} {r['baseline']} -> {r['final']} (peak {r.get('peak')})")
    for key in ("server_cpu_pct", "worker_cpu_pct", "loadgen_cpu_pct"):
        lines.append(f"{key:<15} median {res[key]['final']} %")
    lines.append(f"loss detail: { ({k: v for k, v in report['loss'].items() if k != 'series'}) }")
    lines.append(f"roster: {report['roster']}, churn: {report['churn']}")
    if report["member_error_count"]:
        lines.append(
            f"member errors: {report['member_error_count']}: {report['member_errors'][:3]}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m bench soak --",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, value in asdict(defaults).items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(value),
            default=value,
            help=f"{HELP.get(name, '')} (default {value})",
        )
    parser.add_argument("--output", help="JSON file (default: bench/results/soak-<time>.json)")
    args = parser.parse_args(argv)
    settings = Settings(**{k: getattr(args, k) for k in asdict(defaults)})
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="yv-soak-") as tmp:
        report = run(settings, Path(tmp))
        report["benchmark"] = "soak"
        report["time"] = datetime.datetime.now(datetime.UTC).isoformat()
        report["host"] = {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
        }
        logs = {p.name: p.read_text(errors="replace")[-3000:] for p in Path(tmp).glob("*.log")}
        report["log_tails"] = {k: v for k, v in logs.items() if "Traceback" in v or "rror" in v}
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(args.output) if args.output else RESULTS / f"soak-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    plot(report, path.with_suffix(".png"))
    print(summary(report))
    print(f"\nresults: {path} and {path.with_suffix('.png')}")
    return 0 if report["met"] else 1
