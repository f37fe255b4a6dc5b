"""The roster at 300: how long a page takes to apply 100 roster updates.

One `yahaml-voice serve` with one SFU worker, a directed room with a net open, 300
synthetic members (tests/members.py: the one test client without media, holding a seat
and a WebSocket), one station on the air, two queued, some checked in; one Chromium page
(Debian's /usr/bin/chromium, headless) in the room. Each round, members make 100 roster
updates as fast as they can (a third check in, a third leave, a third join; 8 at a time),
and the page's own Performance API says what it cost: every roster render is wrapped in
performance.measure('yv-roster-render') by the client, and Chromium reports long tasks
(> 50 ms on the main thread). `applied_ms` runs from the first update sent to the end of
the render that showed the last one (the page's clock on both ends); the roster is read
by polling the page every 50 ms, which the page's main thread also pays for.

    python -m bench roster [--members 300] [--updates 100] [--rounds 3]

Results: bench/results/roster.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS
from tests.browser.roster import RosterNet, server_config
from tests.servers import ServerProcess
from yahaml_voice.sfu.aiortc_private import restrict_ice_addresses

RESULTS = Path(__file__).resolve().parent / "results"
VIEWPORT = {"width": 1000, "height": 900}

# The render measures and long tasks since `t0` (page clock, ms).
ENTRIES = """(t0) => ({
    renders: performance.getEntriesByName('yv-roster-render')
        .filter((e) => e.startTime >= t0)
        .map((e) => [e.startTime, e.duration]),
    longTasks: window.yvLongTasks === null ? null
        : window.yvLongTasks.filter(([start]) => start >= t0),
})"""

# What the page says about itself when the roster never arrives.
PAGE_STATE = """() => ({
    status: yv.room.status,
    roster: yv.room.roster().length,
    banners: [...document.querySelectorAll('#banners .banner')].map((b) => b.textContent),
})"""


def warnings(server: ServerProcess) -> str:
    """The server log's warnings and errors (its last lines if there are none)."""
    lines = [line for line in server.log_tail(100_000).splitlines() if " INFO " not in line]
    return "\n".join(lines[-40:])


def stats_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "total_ms": round(sum(values), 2),
        "median_ms": round(statistics.median(values), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max_ms": round(max(values), 2),
    }


async def one_round(net: RosterNet, page: Page, updates: int) -> dict[str, Any]:
    await page.evaluate("performance.clearMeasures('yv-roster-render')")
    t0: float = await page.evaluate("performance.now()")
    sent = await net.apply(updates)
    shown = await net.wait_roster(page, timeout=60)
    seen_at: float = shown["now"]
    entries = await page.evaluate(ENTRIES, t0)
    renders: list[tuple[float, float]] = [(s, d) for s, d in entries["renders"]]
    done = [start + duration for start, duration in renders if start + duration <= seen_at]
    long_tasks = entries["longTasks"]
    applied = (max(done) if done else seen_at) - t0
    return {
        "updates": updates,
        "sent_ms": round(sent["sent_seconds"] * 1000, 1),
        "applied_ms": round(applied, 1),
        # The page against the members: negative when it showed the last update before the
        # last member's REST call had its answer (the page kept up with the stream).
        "applied_after_last_answer_ms": round(applied - sent["sent_seconds"] * 1000, 1),
        "renders": stats_ms([d for _, d in renders]),
        "long_tasks": None if long_tasks is None else stats_ms([d for _, d in long_tasks]),
    }


async def run(members: int, updates: int, rounds: int, checked_in: int) -> dict[str, Any]:
    restrict_ice_addresses(["127.0.0.1"])
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), server_config(members), workers=1, name="roster")
        server.start()
        server.wait_healthy(timeout=60, workers=1)
        net = RosterNet(server, members, checked_in=checked_in)
        results: list[dict[str, Any]] = []
        try:
            started = time.monotonic()
            await net.populate()
            seated_s = time.monotonic() - started
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
                try:
                    page = await net.open_page(browser, VIEWPORT)
                    initial = await net.read(page)
                    for _ in range(rounds):
                        try:
                            results.append(await one_round(net, page, updates))
                        except Exception:
                            state = await page.evaluate(PAGE_STATE)
                            print(f"page: {state}\nserver log:\n{warnings(server)}")
                            raise
                    status = await page.evaluate("yv.room.status")
                finally:
                    await browser.close()
        finally:
            await net.close()
            server.stop()
    applied = [r["applied_ms"] for r in results]
    render_totals = [r["renders"].get("total_ms", 0.0) for r in results]
    long_totals = [(r["long_tasks"] or {}).get("total_ms", 0.0) for r in results]
    per_100 = 100 / updates
    return {
        "benchmark": "roster",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            "members": members,
            "updates_per_round": updates,
            "rounds": rounds,
            "checked_in_at_start": checked_in,
            "viewport": VIEWPORT,
            "cpus": os.cpu_count(),
        },
        "seating_seconds": round(seated_s, 1),
        "initial_sections": {k: v["count"] for k, v in initial["sections"].items()},
        "page_status": status,
        "rounds": results,
        "summary": {
            "applied_ms_per_100_updates_median": round(statistics.median(applied) * per_100, 1),
            "render_ms_per_100_updates_median": round(
                statistics.median(render_totals) * per_100, 1
            ),
            "long_task_ms_per_100_updates_median": round(
                statistics.median(long_totals) * per_100, 1
            ),
        },
        "notes": "loopback, headless Chromium, a shared 2-core machine; applied_ms: first "
        "update sent -> end of the render showing the last (page clock); it follows the "
        "members' pace (sent_ms: the server fans every update out to 300 sockets and this "
        "process reads them all), the page keeps up. renders: the page's yv-roster-render "
        "measures (the JavaScript of a render, not the style and layout after it); long "
        "tasks: Chromium's main-thread tasks over 50 ms (wall time, so other load on the "
        "machine inflates them), which hold the style/layout work; none while idle",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench roster", description=__doc__)
    parser.add_argument("--members", type=int, default=300)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checked-in", type=int, default=40)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.members, args.updates, args.rounds, args.checked_in))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "roster.json").write_text(json.dumps(result, indent=2) + "\n")
    for i, row in enumerate(result["rounds"], 1):
        renders = row["renders"]
        print(
            f"round {i}: {row['updates']} updates sent in {row['sent_ms']} ms, applied in "
            f"{row['applied_ms']} ms; {renders.get('n', 0)} renders, "
            f"{renders.get('total_ms', 0)} ms rendering (max {renders.get('max_ms', 0)} ms); "
            f"long tasks: {row['long_tasks']}"
        )
    print("summary:", result["summary"])
    return 0
