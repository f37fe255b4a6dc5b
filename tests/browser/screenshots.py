"""The README's screenshots of a running net: `make screenshots` (python -m tests.browser.screenshots).

A real server with one SFU worker, a directed room, and a realistic net in it: net control
(a Chromium page on an `ncs` invite token) opens it from the console; a dozen stations are
checked in with names, grids and flags (ten from their own seats, two entered by hand as
heard over RF and by phone), some acknowledged, one with its traffic listed; one station is
on the air and two are in the queue, the priority request first. The second page is an
operator (KD2QRS) who checked in from its page and waits in the queue with traffic.

Writes docs/img/net-console-1000.png, net-console-390.png, net-operator-1000.png and
net-operator-390.png (the console and the operator view at 1000 and 390 px wide).
Not part of `make test`: the pictures change only when the UI does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS
from tests.browser.pages import Operator, until
from tests.members import Members
from tests.servers import ROOT, ServerProcess, mint
from tests.voiceclient import VoiceClient
from yahaml_voice.sfu.aiortc_private import restrict_ice_addresses

ROOM = "club-net"
OUT = ROOT / "docs" / "img"
NET_NAME = "Tuesday Night Net"
PREAMBLE = (
    "This is W1NCS, net control for the Tuesday Night Net of the Valley Amateur Radio Club. "
    "This is a directed net: stations with emergency or priority traffic first, then "
    "traffic, then regular check-ins. Please wait to be called."
)
# (callsign, name, grid, flags) of the stations that check in from their seats, in order.
STATIONS: list[tuple[str, str, str, dict[str, bool]]] = [
    ("K1ABC", "Alice", "FN42", {"traffic": True}),
    ("W2DEF", "Bob", "FN31", {"mobile": True}),
    ("N3GHI", "Carol", "FM19", {"emergency": True, "traffic": True}),
    ("KB1JKL", "Dave", "FN43", {"shortTime": True}),
    ("W1MNO", "Erin", "FN32", {}),
    ("AB1PQ", "Frank", "FN41", {"mobile": True, "shortTime": True}),
    ("K2STU", "Grace", "FN30", {}),
    ("N1VWX", "Heidi", "FN44", {"traffic": True}),
    ("WA1YZ", "Ivan", "FN42", {}),
]
OPERATOR = ("KD2QRS", "Judy", "FN20")
# Entered by hand by net control: heard over RF, and by phone.
MANUAL: list[dict[str, Any]] = [
    {"callsign": "VE1RF", "name": "Ken", "location": "FN65", "via": "rf"},
    {"callsign": "W1PHN", "name": "Lee", "location": "FN41", "via": "phone", "mobile": True},
]
LISTENERS = 14
SIZES = {1000: {"width": 1000, "height": 1100}, 390: {"width": 390, "height": 844}}


def server_config() -> dict[str, Any]:
    return {
        "server": {"grace_period": "30s"},
        "rooms": [
            {
                "id": ROOM,
                "name": "Club Net",
                "description": "The Valley ARC's weekly directed net",
                "floor": "directed",
                "max_participants": 60,
                "tot": "3m",
            }
        ],
        "sfu": {"slots": 3, "ice_addresses": ["127.0.0.1"]},
        "limits": {"signals_per_second": 0, "joins_per_second": 0},
    }


async def shoot(page: Page, width: int, path: Path, start: str | None = None) -> None:
    """At 1000 px the whole page (or just the `start` element); at 390 px one phone screen
    from the top of the page (or of `start`, just below the sticky top bar)."""
    await page.set_viewport_size(SIZES[width])
    await page.evaluate("window.scrollTo(0, 0)")
    await page.wait_for_timeout(300)  # layout and the live timers settle
    if width == 390:
        if start:
            await page.evaluate(
                """(start) => {
                    const top = document.querySelector(start).getBoundingClientRect().top;
                    const bar = document.querySelector('header.topbar').offsetHeight;
                    window.scrollTo(0, top - bar - 8);
                }""",
                start,
            )
        await page.screenshot(path=str(path))
    elif start:
        box = await page.locator(start).bounding_box()  # page coordinates: scrolled to 0
        assert box is not None
        await page.screenshot(path=str(path), full_page=True, clip=box)
    else:
        await page.screenshot(path=str(path), full_page=True)
    print("wrote", path.relative_to(ROOT))


async def stage(browser: Browser, server: ServerProcess, members: Members, out: Path) -> None:
    ncs = await Operator.open(
        browser, server, "W1NCS", token=mint("W1NCS", rooms=[ROOM], role="ncs")
    )
    await ncs.join(ROOM)
    await ncs.page.click("#mute")  # Chromium's fake microphone beeps
    await ncs.page.wait_for_selector("#console:not([hidden])")
    await ncs.page.fill("#net-name", NET_NAME)
    await ncs.page.fill("#net-preamble", PREAMBLE)
    await ncs.page.click("#net-open-submit")

    # W2DEF talks (it gets the floor below): a real aiortc station saying a tone.
    talker = VoiceClient(server.url, tone=440)
    talker.use_token(mint("W2DEF", rooms=[ROOM]))
    await talker.connect()
    await talker.join(ROOM)
    members.clients.append(talker)
    quiet = [(call, "operator") for call, *_ in STATIONS if call != "W2DEF"]
    by_call = {c.callsign: c for c in await members.seat(quiet)} | {"W2DEF": talker}
    stations = [by_call[call] for call, *_ in STATIONS]
    await members.seat([(f"KC1L{chr(65 + i)}{chr(75 + i)}", "listener") for i in range(LISTENERS)])
    for client, (_, name, grid, flags) in zip(stations, STATIONS, strict=True):
        await members.check_in(client, name=name, location=grid, **flags)
    op = await Operator.open(browser, server, OPERATOR[0])
    await op.join(ROOM)
    await op.page.wait_for_selector("#net-panel:not([hidden])")
    await op.page.click("#checkin-open")
    await op.page.fill("#ci-name", OPERATOR[1])
    await op.page.fill("#ci-location", OPERATOR[2])
    await op.page.check("#ci-traffic")
    await op.page.click("#ci-submit")
    # Net control's own REST calls: the page's session (same seat, same callsign).
    ncs_client = VoiceClient(server.url, publish=False, auto_media=False, http=members.http)
    ncs_client.use_token(await ncs.page.evaluate("sessionStorage.getItem('yv.token')"))
    for entry in MANUAL:
        await members.post(ncs_client, "net/checkins", entry)

    async def listed() -> bool:
        count = await ncs.page.evaluate(
            "document.querySelectorAll('#checkins [data-checkin]').length"
        )
        return bool(count == len(STATIONS) + 1 + len(MANUAL))

    await until(listed, "every check-in on the console")
    net = await ncs_client.request("GET", f"/api/voice-rooms/{ROOM}/net")
    ids = {c["callsign"]: c["id"] for c in net["checkins"]}
    for call, status in (
        ("K1ABC", "traffic_listed"),
        ("W2DEF", "acknowledged"),
        ("KB1JKL", "acknowledged"),
        ("W1MNO", "acknowledged"),
    ):
        await members.post(ncs_client, f"net/checkins/{ids[call]}", {"status": status})
    await members.post(ncs_client, "net/notes", {"text": "Preamble read; ARES bulletin next week."})

    # W2DEF is on the air; N3GHI (priority) and KD2QRS (traffic) wait, in that order.
    await members.post(by_call["W2DEF"], "floor/request", {"kind": "comment"})
    await members.post(
        ncs_client, "floor/grant", {"participantId": by_call["W2DEF"].participant_id}
    )
    await op.page.select_option("#floor-kind", "traffic")
    await op.page.click("#raise-hand")
    await members.post(by_call["N3GHI"], "floor/request", {"kind": "priority"})
    await until(
        lambda: ncs.page.evaluate(
            "document.querySelectorAll('#console button[data-action=\"grant\"]').length === 2"
        ),
        "two in the console's queue",
    )
    await ncs.page.wait_for_timeout(2500)  # the transmission timer shows a few seconds

    for width in SIZES:
        await shoot(ncs.page, width, out / f"net-console-{width}.png", "#console")
        await shoot(op.page, width, out / f"net-operator-{width}.png")
    errors = ncs.errors + op.errors
    if errors:
        raise RuntimeError(f"page errors: {errors}")


async def run(out: Path) -> None:
    restrict_ice_addresses(["127.0.0.1"])
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), server_config(), workers=1, name="screens")
        server.start()
        server.wait_healthy(timeout=60, workers=1)
        members = Members(server.url, ROOM)
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
                try:
                    await stage(browser, server, members, out)
                finally:
                    await browser.close()
        finally:
            await members.close()
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.browser.screenshots", description=__doc__
    )
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
