"""The roster of a crowded net in the browser (the short variant of `python -m bench roster`).

60 synthetic members (tests/members.py: no media, a seat and a WebSocket each) and one
Chromium page in a directed room with a net open: the page's roster puts everyone in the
right section (net control, on the air, the queue in its order, checked in, listening) with
the right counts, the search finds a callsign, and while members check in, leave and join
the page keeps answering scripts and ends up showing the new state. Correctness only: the
timings are the benchmark's (bench/roster.py), never asserted here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.browser.pages import DESKTOP, until
from tests.browser.roster import RosterNet, server_config
from tests.servers import ServerProcess

pytestmark = pytest.mark.browser

MEMBERS = 60

# Rows the search leaves visible: (participant id, text).
VISIBLE_ROWS = """() => [...document.querySelectorAll('[data-section] [data-participant]')]
    .filter((r) => r.checkVisibility())
    .map((r) => [r.dataset.participant, r.textContent])"""


async def test_a_roster_of_60_sections_search_and_live_updates(
    browser: Browser,
    server_factory: Callable[..., ServerProcess],
    loopback_ice: None,
    artifacts: Path,
) -> None:
    server = server_factory(server_config(MEMBERS), workers=1, name="roster")
    server.wait_healthy(timeout=60, workers=1)
    net = RosterNet(server, MEMBERS, checked_in=15)
    try:
        await net.populate()
        page = await net.open_page(browser, DESKTOP)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # Every member in its section; the small sections row by row, the queue in order.
        shown = await net.wait_roster(page)
        expected = net.expected.sections()
        assert shown["sections"]["queue"]["rows"] == net.expected.queue
        for name in ("ncs", "air"):
            assert set(shown["sections"][name]["rows"]) == expected[name], name
        # 15 checked in, the three talkers among them; the page itself listens.
        assert net.expected.counts() == {
            "ncs": 1,
            "air": 1,
            "queue": 2,
            "checkedin": 12,
            "listening": MEMBERS + 1 - 16,
        }
        await page.screenshot(path=str(artifacts / "roster-60.png"))

        # The search finds one callsign among the 60 (and shows nobody else).
        target = net.seated[30]
        await page.fill("#roster-search", str(target.callsign))

        async def found() -> list[list[str]] | None:
            rows: list[list[str]] = await page.evaluate(VISIBLE_ROWS)
            return rows if [pid for pid, _ in rows] == [target.participant_id] else None

        rows = await until(found, f"the search finding {target.callsign}")
        assert str(target.callsign) in rows[0][1]
        await page.screenshot(path=str(artifacts / "roster-search.png"))
        await page.fill("#roster-search", "")
        await net.wait_roster(page)

        # 30 updates (10 check-ins, 10 leaves, 10 joins) while the page answers scripts.
        flow = asyncio.create_task(net.apply(30))
        answers = 0
        while not flow.done():
            assert await page.evaluate("1 + 1") == 2
            answers += 1
            await asyncio.sleep(0.02)
        await flow
        assert answers > 0
        await net.wait_roster(page)
        assert net.expected.counts() == {
            "ncs": 1,
            "air": 1,
            "queue": 2,
            "checkedin": 22,
            "listening": MEMBERS + 1 - 26,
        }
        assert not errors
    finally:
        await net.close()
