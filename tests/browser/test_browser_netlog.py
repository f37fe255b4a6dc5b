"""The net-log pages in real Chromium against a real server: the roster (sections, search,
the details view with the volume), the operator's check-in form on a phone, and the NCS
console (open a net, manual add, status, notes, exports as downloads, close, archive).

The other members are aiortc-free test clients that only join and hold a socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser

from tests.browser.pages import DESKTOP, Operator, until
from tests.browser.test_browser_floor import FEED, entry, floor_frame, floor_state, holder
from tests.servers import ServerProcess, mint
from tests.voiceclient import VoiceClient

pytestmark = pytest.mark.browser

PHONE_390 = {"width": 390, "height": 800}


def net_path(room_id: str, tail: str) -> str:
    return f"/api/voice-rooms/{room_id}/{tail}"


async def member(
    make: Callable[..., VoiceClient],
    server: ServerProcess,
    room_id: str,
    callsign: str,
    role: str = "operator",
    join_mode: str = "operator",
) -> VoiceClient:
    client = make(server.url, auto_media=False)
    if role == "operator":
        await client.login(callsign)
    else:
        client.use_token(mint(callsign, role=role))
    await client.connect()
    await client.join(room_id, join_mode=join_mode)
    return client


async def sections(op: Operator) -> dict[str, list[str]]:
    """Section -> callsigns of its visible rows, in order."""
    found: dict[str, list[str]] = await op.page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#roster section[data-section]')]
            .filter((s) => !s.hidden)
            .map((s) => [s.dataset.section, [...s.querySelectorAll('li[data-participant]')]
                .filter((li) => !li.hidden)
                .map((li) => li.querySelector('.peer-call').textContent.replace(' (you)', ''))]))"""
    )
    return found


async def test_roster_sections_search_and_details(
    browser: Browser,
    voice_server: ServerProcess,
    client_factory: Callable[..., VoiceClient],
    artifacts: Path,
) -> None:
    room_id = "field-day"
    ncs = await member(client_factory, voice_server, room_id, "N0NCS", role="ncs")
    others = [
        await member(client_factory, voice_server, room_id, call)
        for call in ("K1ABC", "G4ABC", "K2XYZ")
    ]
    await member(client_factory, voice_server, room_id, "K9LIS", join_mode="listener")
    page = await Operator.open(browser, voice_server, "W1AW")
    await page.join(room_id)

    async def all_there() -> dict[str, list[str]] | None:
        found = await sections(page)
        return found if sum(len(v) for v in found.values()) == 6 else None

    found = await until(all_there, "six members in the roster")
    assert found["ncs"] == ["N0NCS"]
    assert set(found["listening"]) == {"W1AW", "K1ABC", "G4ABC", "K2XYZ", "K9LIS"}
    assert found["listening"][0] == "W1AW", "self first"
    # No slider on every row: the volume lives in the details view.
    assert await page.page.evaluate("document.querySelectorAll('#roster input').length") == 0

    # A net opens and K1ABC checks in: it moves to the "checked in" section with its flags.
    await ncs.request("POST", net_path(room_id, "net/open"), {"name": "Field Day net"})
    await others[0].request(
        "POST", net_path(room_id, "net/checkin"), {"traffic": True, "location": "FN42"}
    )

    async def checked_in() -> dict[str, list[str]] | None:
        found = await sections(page)
        return found if found.get("checkedin") == ["K1ABC"] else None

    await until(checked_in, "K1ABC in the checked-in section")
    flags = await page.page.eval_on_selector_all(
        f"li[data-participant='{others[0].participant_id}'] .flag",
        "els => els.map(e => e.textContent)",
    )
    assert flags == ["TFC"]

    # Search by callsign (case-insensitive, part of it); the counts say how many match.
    await page.page.fill("#roster-search", "k1")
    found = await until(
        lambda: _only(page, {"checkedin": ["K1ABC"]}), "only K1ABC shown", timeout=5
    )
    assert found == {"checkedin": ["K1ABC"]}
    await page.page.fill("#roster-search", "zz")
    await page.page.wait_for_selector("#roster-empty:not([hidden])")
    await page.page.fill("#roster-search", "")
    await until(all_there, "the whole roster again", timeout=5)

    # The details view: volume per participant, kept by callsign in the preferences.
    g4 = str(others[1].participant_id)
    await page.page.click(f"li[data-participant='{g4}'] .peer-open")
    await page.page.wait_for_selector("#participant-details:not([hidden])")
    assert await page.page.inner_text("#pd-title") == "G4ABC"
    assert "Not checked in" in await page.page.inner_text("#pd-checkin")
    assert await page.page.is_visible("#pd-volume")
    assert await page.page.is_hidden("#pd-ncs"), "an operator gets no moderation tools"
    await page.page.fill("#pd-volume", "35")
    assert await page.page.inner_text("#pd-volume-out") == "35 %"
    prefs = await page.page.evaluate("JSON.parse(localStorage.getItem('yv.prefs'))")
    assert prefs["peerVolumes"]["G4ABC"] == 35
    await page.screenshot(artifacts, "roster-details")
    await page.page.keyboard.press("Escape")
    await page.page.wait_for_selector("#participant-details", state="hidden")

    # "/" focuses the search (not while typing elsewhere); every render was measured.
    await page.page.focus("#talk")
    await page.page.keyboard.press("/")
    assert await page.page.evaluate("document.activeElement.id") == "roster-search"
    measures = await page.page.evaluate("performance.getEntriesByName('yv-roster-render').length")
    assert measures > 0
    assert page.errors == []


async def _only(op: Operator, expected: dict[str, list[str]]) -> dict[str, list[str]] | None:
    found = await sections(op)
    return found if found == expected else None


async def test_operator_checks_in_from_a_phone(
    browser: Browser,
    voice_server: ServerProcess,
    client_factory: Callable[..., VoiceClient],
    artifacts: Path,
) -> None:
    room_id = "vhf-desk"
    ncs = await member(client_factory, voice_server, room_id, "N0NCS", role="ncs")
    page = await Operator.open(browser, voice_server, "K1ABC", viewport=PHONE_390)
    await page.join(room_id)
    assert await page.page.is_hidden("#net-panel"), "no net, no net panel"
    assert await page.page.is_hidden("#console"), "an operator has no console"

    await ncs.request(
        "POST",
        net_path(room_id, "net/open"),
        {"name": "VHF Tuesday net", "preamble": "This is a directed net.\nCheck in with traffic."},
    )
    await page.page.wait_for_selector("#net-panel:not([hidden])")
    assert await page.page.inner_text("#net-name-shown") == "VHF Tuesday net"
    assert "Check in with traffic." in await page.page.inner_text("#net-preamble-shown")
    assert "not checked in" in await page.page.inner_text("#my-checkin")

    await page.page.click("#checkin-open")
    await page.page.wait_for_selector("#checkin-form:not([hidden])")
    await page.page.fill("#ci-name", "Alice")
    await page.page.fill("#ci-location", "FN42")
    await page.page.fill("#ci-remarks", "via the repeater")
    await page.page.check("#ci-traffic")
    await page.page.check("#ci-mobile")
    await page.screenshot(artifacts, "checkin-form-390")
    await page.page.click("#ci-submit")
    await page.page.wait_for_selector("#checkin-form", state="hidden")

    async def listed() -> list[dict[str, Any]]:
        state = await ncs.request("GET", net_path(room_id, "net"))
        return list(state["checkins"])

    entries = await until(listed, "the check-in on the server")
    entry = entries[0]
    assert (entry["callsign"], entry["name"], entry["location"], entry["remarks"]) == (
        "K1ABC",
        "Alice",
        "FN42",
        "via the repeater",
    )
    assert entry["traffic"] and entry["mobile"] and not entry["shortTime"]
    assert entry["via"] == "page" and entry["status"] == "new"
    await until(
        lambda: page.page.evaluate(
            "document.getElementById('my-checkin').textContent.includes('#1')"
        ),
        "own entry shown",
    )

    # Net control acknowledges: the page says so (aria-live status).
    await ncs.request(
        "POST", net_path(room_id, f"net/checkins/{entry['id']}"), {"status": "acknowledged"}
    )
    await until(
        lambda: page.page.evaluate(
            "document.getElementById('my-checkin').textContent.includes('acknowledged')"
        ),
        "acknowledged shown",
    )
    assert await page.page.get_attribute("#my-checkin", "aria-live") == "polite"
    assert await page.page.get_attribute("#now-talking", "aria-live") == "polite"
    assert await page.page.evaluate("document.documentElement.scrollWidth") <= PHONE_390["width"]
    await page.screenshot(artifacts, "operator-checked-in-390")

    # Check out, then the net closes: the panel goes.
    await page.page.click("#checkout")
    await until(
        lambda: page.page.evaluate(
            "document.getElementById('my-checkin').textContent.includes('checked out')"
        ),
        "checked out shown",
    )
    await ncs.request("POST", net_path(room_id, "net/close"))
    await page.page.wait_for_selector("#net-panel", state="hidden")
    assert page.errors == []


async def test_console_runs_a_net_and_exports_it(
    browser: Browser,
    voice_server: ServerProcess,
    client_factory: Callable[..., VoiceClient],
    artifacts: Path,
) -> None:
    room_id = "repeater"
    alice = await member(client_factory, voice_server, room_id, "K1ABC")
    page = await Operator.open(browser, voice_server, "W1AW", viewport=DESKTOP, login=False)
    await page.page.goto(f"{voice_server.url}/#token={mint('W1AW', role='ncs')}")
    await page.page.wait_for_selector(f"#room-list li[data-room='{room_id}']")
    await page.join(room_id)
    p = page.page
    await p.wait_for_selector("#console:not([hidden])")
    assert await p.is_visible("#net-open-form")

    await p.fill("#net-name", "Repeater net")
    await p.fill("#net-preamble", "QST QST")
    await p.click("#net-open-submit")
    await p.wait_for_selector("#net-running:not([hidden])")
    await p.wait_for_selector("#net-panel:not([hidden])")  # NCS sees the operator view too

    # Manual add (heard on RF) with traffic, through the keyboard shortcut A.
    await p.focus("#talk")
    await p.keyboard.press("a")
    assert await p.evaluate("document.activeElement.id") == "manual-callsign"
    await p.keyboard.type("w9xyz")
    await p.check("#manual-traffic")
    await p.click("#manual-add")
    row = "#checkins li[data-callsign='W9XYZ']"
    await p.wait_for_selector(row)
    assert await p.eval_on_selector_all(f"{row} .flag", "els => els.map(e => e.textContent)") == [
        "TFC"
    ]
    # The same callsign again: refused, said in a banner.
    await p.fill("#manual-callsign", "W9XYZ")
    await p.click("#manual-add")
    await p.wait_for_selector(".banner[data-key='net-log']")

    # An operator checks in from its own client: it shows up live, after W9XYZ.
    await alice.request("POST", net_path(room_id, "net/checkin"), {"shortTime": True})
    await p.wait_for_selector("#checkins li[data-callsign='K1ABC']")
    order = await p.eval_on_selector_all(
        "#checkins li[data-checkin]", "els => els.map(e => e.dataset.callsign)"
    )
    assert order == ["W9XYZ", "K1ABC"]
    # Reorder: K1ABC up.
    await p.click("#checkins li[data-callsign='K1ABC'] button[data-action='up']")

    async def order_now() -> str:
        calls: list[str] = await p.eval_on_selector_all(
            "#checkins li[data-checkin]", "els => els.map(e => e.dataset.callsign)"
        )
        return ",".join(calls)

    await until(lambda: _equals(order_now, "K1ABC,W9XYZ"), "K1ABC moved up")

    # Status: W9XYZ's traffic is listed.
    await p.select_option(f"{row} select[data-field='status']", "traffic_listed")

    async def status_of(call: str) -> str:
        state = await alice.request("GET", net_path(room_id, "net"))
        return next(c["status"] for c in state["checkins"] if c["callsign"] == call)

    await until(lambda: _equals(lambda: status_of("W9XYZ"), "traffic_listed"), "status saved")
    # Edit: a name for W9XYZ.
    await p.click(f"{row} button[data-action='edit']")
    await p.fill(f"{row} input[name='name']", "Walt")
    await p.click(f"{row} button[data-action='save']")
    await until(
        lambda: p.evaluate(
            f"document.querySelector(\"{row} .ci-info\").textContent.includes('Walt')"
        ),
        "name shown",
    )

    # A note goes into the log, which the console shows.
    await p.fill("#net-note", "Repeater linked in")
    await p.click("#net-note-add")
    await until(
        lambda: p.evaluate(
            "[...document.querySelectorAll('#net-log li')].some("
            "(li) => li.textContent.includes('Repeater linked in'))"
        ),
        "the note in the log",
    )
    assert await p.evaluate("yv.room.netLog.net.name") == "Repeater net"

    # A priority request (a synthetic directed floor state): highlighted, announced, with a
    # grant button; the holder's transmission timer runs against the room's TOT.
    alice_id = str(alice.participant_id)
    me = await page.participant_id
    state = floor_state(
        room_id,
        1,
        holders=[holder(me, "W1AW")],
        queue=[entry(alice_id, "K1ABC", "priority")],
    )
    await p.evaluate(FEED, floor_frame(state))
    await p.wait_for_selector("#ncs-controls:not([hidden])")
    await p.wait_for_selector(f"#console-queue li.is-priority[data-participant='{alice_id}']")
    assert "Priority request from K1ABC" in await p.inner_text("#console-alert")
    assert await p.is_visible(
        f"#console-queue button[data-action='grant'][data-participant='{alice_id}']"
    )
    assert "W1AW" in await p.inner_text("#tot-timer")
    await page.screenshot(artifacts, "console-1000")
    await p.evaluate(FEED, floor_frame(floor_state(room_id, 2, floor="open")))
    await p.wait_for_selector("#ncs-controls", state="hidden")

    # Exports are downloads (Blob URLs) of the server's files.
    async with p.expect_download() as info:
        await p.click("#export-checkins-csv")
    download = await info.value
    assert download.suggested_filename.endswith("-checkins.csv")
    text = await read_download(await download.path())
    lines = text.strip().splitlines()
    assert lines[0].startswith("number,callsign,")
    assert [line.split(",")[1] for line in lines[1:]] == ["K1ABC", "W9XYZ"]
    async with p.expect_download() as info:
        await p.click("#export-report")
    report = await read_download(await (await info.value).path())
    assert "Repeater net" in report and "W9XYZ" in report and "K1ABC" in report

    # Close: the net goes to the archive, which the console lists.
    p.once("dialog", lambda dialog: dialog.accept())
    await p.click("#net-close")
    await p.wait_for_selector("#net-open-form:not([hidden])")
    await p.wait_for_selector("#net-archive li[data-net]")
    assert "Repeater net" in await p.inner_text("#net-archive")
    async with p.expect_download() as info:
        await p.click("#export-log-csv")
    log = await read_download(await (await info.value).path())
    assert "Repeater linked in" in log and "closed" in log
    assert page.errors == []


async def read_download(path: Any) -> str:
    return await asyncio.to_thread(Path(str(path)).read_text, encoding="utf-8")


async def _equals(read: Callable[[], Any], expected: Any) -> bool:
    return bool(await read() == expected)


async def test_an_appointed_logger_gets_the_log_tools_without_the_floor_tools(
    browser: Browser,
    voice_server: ServerProcess,
    client_factory: Callable[..., VoiceClient],
) -> None:
    """Net control appoints a logger: the page becomes the net logger (check-ins, log,
    exports) with no floor tools and no open/close, and what it enters reaches the net."""
    room_id = "logger-desk"
    ncs = await member(client_factory, voice_server, room_id, "N0NCS", role="ncs")
    page = await Operator.open(browser, voice_server, "K2LOG")
    await page.join(room_id)
    await ncs.request("POST", net_path(room_id, "net/open"), {"name": "ARES net"})
    assert await page.page.is_hidden("#console"), "not a logger yet"

    pid = await page.participant_id
    await ncs.request(
        "POST", net_path(room_id, "moderation/appoint"), {"participantId": pid, "role": "logger"}
    )
    await page.page.wait_for_selector("#console:not([hidden])")
    await page.page.wait_for_selector("#checkins", state="attached")
    assert "logger" in (await page.page.inner_text("#console-title")).lower()
    for floor_tool in ("#grant-next", "#revoke-all", "#net-close", "#net-open-submit"):
        assert await page.page.is_hidden(floor_tool), f"{floor_tool} shown to a logger"

    await page.page.fill("#manual-callsign", "KD2RF")
    await page.page.check("#manual-traffic")
    await page.page.click("#manual-add")

    async def entered() -> list[dict[str, Any]] | None:
        state = await ncs.request("GET", net_path(room_id, "net"))
        return list(state["checkins"]) or None

    entry = (await until(entered, "the logger's entry on the server"))[0]
    assert (entry["callsign"], entry["traffic"], entry["by"]) == ("KD2RF", True, "K2LOG")
    await page.page.wait_for_selector("#checkins [data-callsign='KD2RF']")
    assert page.errors == []
