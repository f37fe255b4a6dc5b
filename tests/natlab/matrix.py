"""`python -m tests.natlab.matrix` (what `make natlab` runs): the NAT lab as a table.

For each site pair x TURN (off = STUN only, on, relay = force_relay) x mode (mesh, sfu):
connected?, seconds from login to connected, and the selected candidate pair of each end
(`local>remote`; `relay/tcp` = TURN over TCP). Needs root; exits 0 with one line otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tests.fixtures.turn import turnserver_available
from tests.natlab.browser import chromium_available
from tests.natlab.netns import unavailable_reason
from tests.natlab.scenarios import Outcome
from tests.natlab.session import LabSession, Mode, Turn

PAIRS = [("sym1", "sym2"), ("sym1", "cone1"), ("cone1", "cone2"), ("udp", "sym1")]
# Chromium (client/) at the first site, an aiortc client at the second; TURN on.
BROWSER_PAIRS = [("sym1", "sym2"), ("udp", "sym2")]
TURNS: list[Turn] = ["off", "on", "relay"]
MODES: list[Mode] = ["mesh", "sfu"]


def row(outcome: Outcome, pair: str, turn: str, mode: str) -> str:
    seconds = f"{outcome.seconds:5.2f}" if outcome.seconds is not None else "    -"
    audio = "yes" if outcome.audio_flows else ("no" if outcome.connected else "-")
    state = "yes" if outcome.connected else f"NO ({'/'.join(outcome.states) or outcome.error})"
    pairs = " | ".join(outcome.pairs) if outcome.pairs else "-"
    return f"{pair:<34} {turn:<6} {mode:<5} {state:<22} {seconds:>6}  {audio:<5} {pairs}"


async def run(turns: list[Turn], modes: list[Mode], browser: bool) -> list[dict[str, object]]:
    session = LabSession()
    results: list[dict[str, object]] = []
    try:
        session.start()
        kinds = {name: site.kind for name, site in session.lab.sites.items()}
        header = f"{'site pair':<34} {'turn':<6} {'mode':<5} {'connected?':<22} {'t (s)':>6}  "
        print(header + "audio candidate pair (A end | B end)")
        print("-" * 118)
        for a, b in PAIRS:
            for turn in turns:
                for mode in modes:
                    pair = f"{kinds[a]}<->{kinds[b]}"
                    try:
                        outcome = await session.case(a, b, turn, mode)
                    except Exception as exc:
                        outcome = Outcome(f"{pair} {turn} {mode}", error=repr(exc)[:60])
                    print(row(outcome, pair, turn, mode), flush=True)
                    results.append({"pair": pair, "turn": turn, "mode": mode, **asdict(outcome)})
        if browser:
            for a, b in BROWSER_PAIRS:
                for mode in modes:
                    pair = f"chromium@{kinds[a]}<->{kinds[b]}"
                    try:
                        outcome = await session.browser_case(a, b, "on", mode)
                    except Exception as exc:
                        outcome = Outcome(f"{pair} on {mode}", error=repr(exc)[:60])
                    print(row(outcome, pair, "on", mode), flush=True)
                    results.append({"pair": pair, "turn": "on", "mode": mode, **asdict(outcome)})
    finally:
        session.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.natlab.matrix", description=__doc__)
    parser.add_argument("--turn", action="append", choices=TURNS, help="only these (repeat)")
    parser.add_argument("--mode", action="append", choices=MODES, help="only these (repeat)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium rows")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is None and not turnserver_available():
        reason = "natlab needs turnserver (Debian package coturn)"
    if reason is not None:
        print(f"natlab skipped: {reason}")
        return 0
    start = time.monotonic()
    browser = not args.no_browser and chromium_available()
    results = asyncio.run(run(args.turn or TURNS, args.mode or MODES, browser))
    print(f"({time.monotonic() - start:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
