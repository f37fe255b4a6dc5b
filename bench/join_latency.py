"""Join-to-first-audio for two aiortc peers, and signal round-trip through the server.

Both on loopback against a real `yahaml-voice serve` process (embedded default). The
figures are wall-clock latencies of the whole path (REST, WebSocket, ICE, DTLS, first
Opus frame decoded), so they are reported as medians and p95 over many runs.

    python -m bench join [--runs 20] [--signals 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.servers import ServerProcess
from tests.voiceclient import VoiceClient

RESULTS = Path(__file__).resolve().parent / "results"
SDP = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values) * 1000, 2),
        "p95_ms": round(percentile(values, 95) * 1000, 2),
        "min_ms": round(min(values) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


async def one_join(url: str, room: str) -> dict[str, float]:
    """Seconds from B's join request to the first audible frame on each side."""
    a = VoiceClient(url, tone=440)
    b = VoiceClient(url, tone=660)
    try:
        await a.login("W1AW")
        await b.login("K1ABC")
        await a.connect()
        await b.connect()
        await a.join(room)
        start = time.monotonic()
        await b.join(room)
        while not (a.heard_loud() and b.heard_loud()):
            if time.monotonic() - start > 20:
                raise TimeoutError("no audio within 20 s")
            await asyncio.sleep(0.002)
        firsts = []
        for client in (a, b):
            stamps = [
                s.first_loud_at for p in client.peers.values() for s in p.audio if s.first_loud_at
            ]
            firsts.append(min(stamps) - start)
        return {"a_hears_b": firsts[0], "b_hears_a": firsts[1], "both": max(firsts)}
    finally:
        await a.close()
        await b.close()


async def signal_rtt(url: str, room: str, count: int) -> list[float]:
    """A signals B, B answers A on hearing it; seconds until A hears the answer."""
    a = VoiceClient(url, auto_media=False)
    b = VoiceClient(url, auto_media=False)
    try:
        await a.login("W1AW")
        await b.login("K1ABC")
        await a.connect()
        await b.connect()
        await a.join(room)
        await b.join(room)
        rtts: list[float] = []
        for i in range(count):
            mark_a, mark_b = len(a.events), len(b.events)
            start = time.monotonic()
            await a.signal("offer", SDP, to=b.participant_id)
            await b.wait_event("signal", since=mark_b)
            await b.signal("answer", {"type": "answer", "sdp": SDP["sdp"]}, to=a.participant_id)
            await a.wait_event("signal", since=mark_a)
            rtts.append(time.monotonic() - start)
            if i % 50 == 0:
                await asyncio.sleep(0)
        return rtts
    finally:
        await a.close()
        await b.close()


async def run(runs: int, signals: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(
            Path(tmp), {"rooms": [{"id": f"r{i}"} for i in range(runs)] + [{"id": "sig"}]}
        )
        server.start()
        try:
            joins = [await one_join(server.url, f"r{i}") for i in range(runs)]
            rtts = await signal_rtt(server.url, "sig", signals)
        finally:
            server.stop()
    return {
        "benchmark": "join_latency",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "join_to_first_audio": {
            "both_directions": summary([j["both"] for j in joins]),
            "joiner_hears_first": summary([j["b_hears_a"] for j in joins]),
            "runs_ms": [round(j["both"] * 1000, 1) for j in joins],
        },
        "signal_round_trip": summary(rtts),
        "notes": "loopback, one server process, aiortc peers decode Opus; signal RTT = REST POST "
        "A->B, WS delivery, REST POST B->A, WS delivery",
    }


def print_table(result: dict[str, Any]) -> None:
    join = result["join_to_first_audio"]["both_directions"]
    rtt = result["signal_round_trip"]
    print(f"{'measure':<34}{'n':>5}{'median ms':>12}{'p95 ms':>10}")
    print(
        f"{'join -> first audio (both ways)':<34}{join['n']:>5}{join['median_ms']:>12}{join['p95_ms']:>10}"
    )
    print(
        f"{'signal round trip (A->B->A)':<34}{rtt['n']:>5}{rtt['median_ms']:>12}{rtt['p95_ms']:>10}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench join", description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--signals", type=int, default=200)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.runs, args.signals))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "join_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0
