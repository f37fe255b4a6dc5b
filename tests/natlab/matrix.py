"""`python -m tests.natlab.matrix` (what `make natlab` runs): the NAT lab as a table.

Every cell (site pair x TURN off = STUN only / on / relay = force_relay x mode mesh / SFU)
gets a row per client at the first site: `aiortc` (tests/voiceclient.py), `chromium` and
`firefox` (client/ in a page; Firefox in the TURN cells only; the other end is always an
aiortc client). Columns: connected?, seconds from the second operator's join (a browser:
the click on Join; its start is shown apart) to both ends connected and to
both ends receiving audio (medians over `--repeat` runs), and the selected candidate pair of
each end (`local>remote`; `relay/tcp` = TURN over TCP). Then the network change: the host
at one site moves to another NAT mid-call (tests/natlab/roaming.py); seconds until audio is
back at each end, and whether the seat was kept. Needs root; exits 0 with one line otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.browser.firefox import firefox_available
from tests.fixtures.turn import turnserver_available
from tests.natlab.browser import chromium_available
from tests.natlab.netns import unavailable_reason
from tests.natlab.roaming import RoamOutcome
from tests.natlab.scenarios import Outcome
from tests.natlab.session import LabSession, Mode, Turn

PAIRS = [("sym1", "sym2"), ("sym1", "cone1"), ("cone1", "cone2"), ("udp", "sym1")]
TURNS: list[Turn] = ["off", "on", "relay"]
MODES: list[Mode] = ["mesh", "sfu"]
CLIENTS = ["aiortc", "chromium", "firefox"]
# A cell that cannot connect (STUN only between symmetric NATs) ends in ICE `failed` for
# aiortc in ~8 s; Chromium keeps trying longer, so its rows stop waiting here.
BROWSER_TIMEOUT = 15.0
ROAM_TIMEOUT = 20.0  # "never" in the network-change rows: no audio this long after the move


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def _seconds(value: float | None) -> str:
    return f"{value:5.2f}" if value is not None else "    -"


def row(runs: list[Outcome], cell: str, client: str) -> str:
    last = next((o for o in reversed(runs) if o.connected), runs[-1])
    ok = sum(o.connected for o in runs)
    state = "yes" if ok == len(runs) else f"NO ({'/'.join(last.states) or last.error})"
    if 0 < ok < len(runs):
        state = f"{ok}/{len(runs)}"
    audio = "yes" if all(o.audio_flows for o in runs) else ("no" if ok else "-")
    pairs = " | ".join(last.pairs) if last.pairs else "-"
    conn = _seconds(_median([o.seconds for o in runs]))
    heard = _seconds(_median([o.audio_seconds for o in runs]))
    started = _median([o.browser_start for o in runs])
    if started is not None:
        pairs += f"  (browser start {started:.1f} s, not in t_conn)"
    return f"{cell:<34} {client:<9} {state:<18} {conn:>6} {heard:>6}  {audio:<5} {pairs}"


async def one(session: LabSession, client: str, a: str, b: str, turn: Turn, mode: Mode) -> Outcome:
    try:
        if client == "aiortc":
            return await session.case(a, b, turn, mode)
        timeout = BROWSER_TIMEOUT if turn == "off" else 30.0
        return await session.browser_case(a, b, turn, mode, timeout=timeout, browser=client)
    except Exception as exc:
        return Outcome(f"{client} {a}<->{b} {turn} {mode}", error=repr(exc)[:60])


async def roam_rows(
    session: LabSession, modes: list[Mode], clients: list[str]
) -> list[dict[str, Any]]:
    """The network change (Lab.move): seconds from the move to audio back at each end."""
    print()
    print(f"{'network change (TURN on)':<34} {'client':<9} {'seat kept?':<11} "
          f"{'back: mover':>11} {'partner':>8}  how")  # fmt: skip
    print("-" * 124)
    results = []
    for client in [c for c in clients if c != "firefox"]:  # the roaming page is Chromium's
        for mode in modes:
            try:
                if client == "aiortc":
                    outcome = await session.roam_case(mode, timeout=ROAM_TIMEOUT)
                else:
                    outcome = await session.browser_roam_case(mode, timeout=ROAM_TIMEOUT)
            except Exception as exc:
                outcome = RoamOutcome(f"{client} {mode}", error=repr(exc)[:60])
            kept = "yes" if outcome.seat_kept and not outcome.partner_saw_leave else "NO"
            back = [_seconds(b) if b is not None else "never" for b in outcome.back] or ["-", "-"]
            how = outcome.how + (f" ({outcome.error})" if outcome.error else "")
            cell = f"symmetric -> symmetric {mode}"
            print(f"{cell:<34} {client:<9} {kept:<11} {back[0]:>11} {back[1]:>8}  {how}")
            results.append({"roam": mode, "client": client,
                            **{k: v for k, v in asdict(outcome).items() if k != "trace"}})  # fmt: skip
    return results


async def run(
    turns: list[Turn], modes: list[Mode], clients: list[str], repeat: int, roam: bool = True
) -> list[dict[str, Any]]:
    session = LabSession()
    results: list[dict[str, Any]] = []
    try:
        session.start()
        kinds = {name: site.kind for name, site in session.lab.sites.items()}
        header = f"{'cell (first site <-> second)':<34} {'client':<9} {'connected?':<18} "
        print(header + "t_conn  t_audio audio candidate pair (first end | second end)")
        print("-" * 124)
        for a, b in PAIRS:
            for turn in turns:
                for mode in modes:
                    cell = f"{kinds[a]}<->{kinds[b]} {turn} {mode}"
                    for client in clients:
                        if client == "firefox" and turn == "off":
                            continue  # Firefox rows: the TURN-on cells (issue 16's target)
                        runs = [await one(session, client, a, b, turn, mode) for _ in range(repeat)]
                        print(row(runs, cell, client), flush=True)
                        results.append({
                            "pair": f"{kinds[a]}<->{kinds[b]}", "turn": turn, "mode": mode,
                            "client": client,
                            "seconds_median": _median([o.seconds for o in runs]),
                            "audio_seconds_median": _median([o.audio_seconds for o in runs]),
                            "browser_start_median": _median([o.browser_start for o in runs]),
                            "runs": [{k: v for k, v in asdict(o).items() if k != "trace"}
                                     for o in runs],
                        })  # fmt: skip
        if roam:
            results += await roam_rows(session, modes, clients)
    finally:
        session.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.natlab.matrix", description=__doc__)
    parser.add_argument("--turn", action="append", choices=TURNS, help="only these (repeat)")
    parser.add_argument("--mode", action="append", choices=MODES, help="only these (repeat)")
    parser.add_argument("--client", action="append", choices=CLIENTS, help="only these (repeat)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (medians shown)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-browser", action="store_true", help="skip the browser rows")
    parser.add_argument("--no-roam", action="store_true", help="skip the network-change rows")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is None and not turnserver_available():
        reason = "natlab needs turnserver (Debian package coturn)"
    if reason is not None:
        print(f"natlab skipped: {reason}")
        return 0
    start = time.monotonic()
    clients = args.client or CLIENTS
    if args.no_browser or not chromium_available():
        clients = [c for c in clients if c == "aiortc"]
    if not firefox_available():
        clients = [c for c in clients if c != "firefox"]
    turns, modes = args.turn or TURNS, args.mode or MODES
    results = asyncio.run(run(turns, modes, clients, max(1, args.repeat), not args.no_roam))
    print(f"({time.monotonic() - start:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
