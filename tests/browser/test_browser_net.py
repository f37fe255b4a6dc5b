"""A whole net in the browser: the NCS console, two operator pages and 20 aiortc listeners.

A directed room on a real SFU worker. Net control (a Chromium page on an `ncs` invite
token) opens a net from the console; two operator pages (Chromium, each microphone a tone
of its own) check in from their net panels, one with traffic, and ask for the floor; net
control grants the floor in order and the 20 listeners hear each operator (by its tone)
only while it holds the floor; net control marks the traffic passed, adds a station heard
over RF by hand and closes the net. The check-in CSV and the text report downloaded from
the console list exactly those stations, flags and order. After a restart of the server
process (the embedded default: SQLite) the archived net is still listed, on the page and
through the API.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page

from tests.browser.pages import Operator, until
from tests.servers import ServerProcess, mint
from tests.test_sfu_integration import sfu_connected
from tests.voiceclient import VoiceClient

pytestmark = pytest.mark.browser

ROOM = "club-net"
NET_NAME = "Tuesday Night Net"
PREAMBLE = "This is W1NCS, net control for the Tuesday Night Net. Check in with traffic first."
TONES = {"K1ABC": 620.0, "W2DEF": 880.0}
# 20 aiortc listeners: 5 decode what they hear and tell the operators apart by tone; 15
# count the SFU's packets from their headers (loud by the audio-level extension) without
# decoding. Twenty decoding listeners next to three Chromium pages starve this process on
# a 2-core machine until the SFU's ICE consent checks expire.
EARS = 5
COUNTERS = 15


def net_room_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    server = server_factory(
        {
            "server": {"grace_period": "5s"},
            "rooms": [
                {
                    "id": ROOM,
                    "name": "Club Net",
                    "description": "The club's weekly directed net",
                    "floor": "directed",
                    "max_participants": 30,
                    "courtesy_tone": False,
                }
            ],
            "sfu": {"slots": 3, "slot_hold": "0.3s", "ice_addresses": ["127.0.0.1"]},
            "limits": {"signals_per_second": 0, "joins_per_second": 0},
        },
        workers=1,
        name="net",
    )
    server.wait_healthy(timeout=60, workers=1)
    return server


def loud(counter: VoiceClient, since: float) -> int:
    """Loud packets a counting listener got in the whole seconds after `since`."""
    assert counter.counter is not None
    first = int(since) + 1
    return sum(bucket[2] for second, bucket in counter.counter.seconds.items() if second >= first)


async def all_loud(counters: list[VoiceClient], since: float) -> bool:
    """Every counting listener got a second's worth of loud packets since `since`."""
    return all(loud(c, since) >= 25 for c in counters)


async def on_sfu(op: Operator) -> bool:
    return bool(
        await op.page.evaluate(
            "yv.room.plane === 'sfu' && !!yv.room.sfu"
            " && yv.room.sfu.pc.connectionState === 'connected'"
        )
    )


async def visible(page: Page, selector: str) -> bool:
    return await page.locator(selector).is_visible()


async def download(page: Page, button: str) -> str:
    """Click an export button and read the file the page saves."""
    async with page.expect_download() as info:
        await page.click(button)
    saved = await (await info.value).path()
    data = await asyncio.to_thread(Path(saved).read_bytes)
    return data.decode("utf-8")


async def talking(op: Operator, callsign: str) -> str | None:
    """The page's "now talking" line names `callsign` and not the other operator."""
    text = await op.page.inner_text("#now-talking")
    others = [call for call in TONES if call != callsign]
    ok = callsign in text and not any(call in text for call in others)
    return text if ok else None


async def checkin_rows(page: Page) -> list[str]:
    """Callsigns of the console's check-in list, in net order."""
    rows: list[str] = await page.evaluate(
        "[...document.querySelectorAll('#checkins [data-checkin]')].map((r) => r.dataset.callsign)"
    )
    return rows


async def queue_rows(page: Page) -> list[str]:
    """Participant ids of the console's queue, in order."""
    rows: list[str] = await page.evaluate(
        """[...document.querySelectorAll('#console button[data-action="grant"][data-participant]')]
            .map((b) => b.dataset.participant)"""
    )
    return rows


async def test_a_net_from_the_console_heard_logged_exported_and_archived(
    browser: Browser,
    server_factory: Callable[..., ServerProcess],
    loopback_ice: None,
    artifacts: Path,
) -> None:
    server = net_room_server(server_factory)
    ears = [VoiceClient(server.url, publish=False) for _ in range(EARS)]
    counters = [VoiceClient(server.url, publish=False, count_only=True) for _ in range(COUNTERS)]
    listeners = ears + counters
    gate = asyncio.Semaphore(5)

    async def seat(i: int, listener: VoiceClient) -> None:
        async with gate:
            listener.use_token(mint(f"N{i:02d}LIS", rooms=[ROOM], role="listener"))
            await listener.connect()
            await listener.join(ROOM, "listener")

    async def listeners_on_sfu() -> bool:
        return all(sfu_connected(li) for li in listeners)

    async def page_in_room(callsign: str, **kw: Any) -> Operator:
        op = await Operator.open(browser, server, callsign, **kw)
        await op.join(ROOM)
        return op

    try:
        # Everyone comes in at once: the listeners (5 at a time) and the three pages.
        seating = asyncio.gather(*(seat(i, li) for i, li in enumerate(listeners)))
        ncs, op1, op2 = await asyncio.gather(
            page_in_room("W1NCS", token=mint("W1NCS", rooms=[ROOM], role="ncs")),
            page_in_room("K1ABC", tone=TONES["K1ABC"]),
            page_in_room("W2DEF", tone=TONES["W2DEF"]),
        )
        await seating
        pages = (ncs, op1, op2)
        await asyncio.gather(
            *(until(partial(on_sfu, op), f"{op.callsign} on the SFU", 40) for op in pages),
            until(listeners_on_sfu, "the listeners on the SFU", 40),
        )
        # Net control may always talk: it mutes its (beeping, fake) microphone.
        await ncs.page.click("#mute")
        await until(lambda: ncs.page.evaluate("!yv.room.micTrack.enabled"), "W1NCS muted")
        quiet_since = time.monotonic() + 0.5  # packets already in flight
        pid1, pid2 = await op1.participant_id, await op2.participant_id

        # Net control opens the net from the console; every page shows it.
        await ncs.page.wait_for_selector("#console:not([hidden])")
        await ncs.page.fill("#net-name", NET_NAME)
        await ncs.page.fill("#net-preamble", PREAMBLE)
        await ncs.page.click("#net-open-submit")
        for op in (op1, op2):
            await op.page.wait_for_selector("#net-panel:not([hidden])")
            assert await op.page.inner_text("#net-name-shown") == NET_NAME
            assert PREAMBLE in await op.page.inner_text("#net-preamble-shown")

        # Both operators check in from their pages: K1ABC with traffic, W2DEF mobile.
        async def check_in(op: Operator, name: str, grid: str, flag: str) -> None:
            await op.page.click("#checkin-open")
            await op.page.wait_for_selector("#checkin-form:not([hidden])")
            await op.page.fill("#ci-name", name)
            await op.page.fill("#ci-location", grid)
            await op.page.check(flag)
            await op.page.click("#ci-submit")
            await until(
                lambda: op.page.inner_text("#my-checkin"), f"{op.callsign}'s check-in shown"
            )

        # One after the other, so that the list's order is known.
        await check_in(op1, "Alice", "FN42", "#ci-traffic")
        await check_in(op2, "Bob", "FN31", "#ci-mobile")

        async def listed(expected: list[str]) -> list[str] | None:
            rows = await checkin_rows(ncs.page)
            return rows if rows == expected else None

        await until(lambda: listed(["K1ABC", "W2DEF"]), "both check-ins on the console")

        # Nobody was heard so far (the SFU forwards only the floor).
        assert [ear.heard_tone(TONES["K1ABC"], since=quiet_since) for ear in ears] == [0] * EARS
        assert [ear.heard_tone(TONES["W2DEF"], since=quiet_since) for ear in ears] == [0] * EARS
        assert [loud(c, quiet_since) for c in counters] == [0] * COUNTERS

        # Both ask for the floor, K1ABC first; net control sees the queue in that order.
        await op1.page.select_option("#floor-kind", "traffic")
        await op1.page.click("#raise-hand")

        async def queued(expected: list[str]) -> list[str] | None:
            rows = await queue_rows(ncs.page)
            return rows if rows == expected else None

        await until(lambda: queued([pid1]), "K1ABC in the console's queue")
        await op2.page.select_option("#floor-kind", "comment")
        await op2.page.click("#raise-hand")
        await until(lambda: queued([pid1, pid2]), "both in the console's queue, in order")

        # Grant next: K1ABC, heard by every listener; W2DEF is not.
        granted_at = time.monotonic()
        await ncs.page.click("#grant-next")
        await until(lambda: op1.page.evaluate("yv.room.hasFloor"), "K1ABC showing it has the floor")
        assert "have the floor" in (await op1.page.inner_text("#floor-status")).lower()
        await asyncio.gather(
            *(ear.wait_tone(TONES["K1ABC"], frames=10) for ear in ears),
            until(partial(all_loud, counters, granted_at), "the counters hearing K1ABC"),
        )
        assert [ear.heard_tone(TONES["W2DEF"], since=quiet_since) for ear in ears] == [0] * EARS
        await until(lambda: talking(op2, "K1ABC"), "W2DEF's page saying K1ABC is talking")
        assert await visible(ncs.page, "#tot-timer")
        await ncs.screenshot(artifacts, "console-k1abc-on-air")

        # Grant next again: the floor passes to W2DEF; K1ABC goes silent.
        await ncs.page.click("#grant-next")
        await asyncio.gather(*(ear.wait_tone(TONES["W2DEF"], frames=10) for ear in ears))
        await until(lambda: op1.page.evaluate("!yv.room.hasFloor"), "K1ABC without the floor again")
        silent_since = time.monotonic() + 0.3  # frames already in flight
        switched_at = time.monotonic()
        await asyncio.gather(
            *(ear.wait_tone(TONES["W2DEF"], frames=25) for ear in ears),
            until(partial(all_loud, counters, switched_at), "the counters hearing W2DEF"),
        )
        assert [ear.heard_tone(TONES["K1ABC"], since=silent_since) for ear in ears] == [0] * EARS
        await until(lambda: talking(op1, "W2DEF"), "K1ABC's page saying W2DEF is talking")
        # Revoked: nobody hears anyone (one second of listening).
        await ncs.page.click("#revoke-all")
        await until(lambda: op2.page.evaluate("!yv.room.hasFloor"), "W2DEF without the floor again")
        revoked_at = time.monotonic() + 0.5
        await asyncio.sleep(1.6)
        assert [ear.heard_tone(TONES["W2DEF"], since=revoked_at) for ear in ears] == [0] * EARS
        assert [loud(c, revoked_at) for c in counters] == [0] * COUNTERS

        # Net control marks K1ABC's traffic passed and adds a station heard over RF.
        row = "#checkins [data-callsign='K1ABC']"
        await ncs.page.select_option(f"{row} select[data-field='status']", "traffic_passed")
        await until(
            lambda: ncs.page.evaluate(
                "yv.room.netLog.state.checkins.find((c) => c.callsign === 'K1ABC').status"
                " === 'traffic_passed'"
            ),
            "K1ABC's traffic marked passed",
        )
        await ncs.page.fill("#manual-callsign", "N0RF")
        await ncs.page.check("#manual-traffic")
        await ncs.page.click("#manual-add")
        await until(lambda: listed(["K1ABC", "W2DEF", "N0RF"]), "the manual check-in listed")
        for op in (op1, op2):  # every member sees the list live
            await until(
                partial(
                    op.page.evaluate,
                    "yv.room.netLog.state.checkins.map((c) => c.callsign).join() ==="
                    " 'K1ABC,W2DEF,N0RF'",
                ),
                f"{op.callsign} seeing the whole list",
            )
        await ncs.screenshot(artifacts, "console-before-close")

        # Close: the operators' net panels go away, the archive lists the net.
        net_id: str = await ncs.page.evaluate("yv.room.netLog.state.net.id")
        ncs.page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await ncs.page.click("#net-close")
        for op in (op1, op2):
            await op.page.wait_for_selector("#net-panel", state="hidden")
        await ncs.page.wait_for_selector(f"#net-archive [data-net='{net_id}']")

        # The exports: exactly these stations, flags and order.
        checkins_csv = await download(ncs.page, "#export-checkins-csv")
        (artifacts / "checkins.csv").write_text(checkins_csv)
        rows = list(csv.DictReader(io.StringIO(checkins_csv)))
        assert [
            {k: r[k] for k in ("number", "callsign", "traffic", "mobile", "status", "via")}
            for r in rows
        ] == [
            {
                "number": "1",
                "callsign": "K1ABC",
                "traffic": "yes",
                "mobile": "no",
                "status": "traffic_passed",
                "via": "page",
            },
            {
                "number": "2",
                "callsign": "W2DEF",
                "traffic": "no",
                "mobile": "yes",
                "status": "new",
                "via": "page",
            },
            {
                "number": "3",
                "callsign": "N0RF",
                "traffic": "yes",
                "mobile": "no",
                "status": "new",
                "via": "rf",
            },
        ]
        assert [(r["name"], r["location"]) for r in rows] == [
            ("Alice", "FN42"),
            ("Bob", "FN31"),
            ("", ""),
        ]
        report = await download(ncs.page, "#export-report")
        (artifacts / "report.txt").write_text(report)
        check_report(report)
        assert not [e for op in pages for e in op.errors]

        # The server process restarts (same config, same SQLite file): the net is archived.
        await asyncio.gather(*(li.close() for li in listeners))
        await asyncio.gather(*(op.page.context.close() for op in (op1, op2)))
        server.stop()
        server.start(timeout=30)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            headers = {"Authorization": f"Bearer {mint('K9API', rooms=[ROOM])}"}
            answer = await http.get(f"/api/voice-rooms/{ROOM}/nets", headers=headers)
            answer.raise_for_status()
            nets = answer.json()["nets"]
            assert [(n["id"], n["name"], n["checkinCount"]) for n in nets] == [
                (net_id, NET_NAME, 3)
            ]
            answer = await http.get(
                f"/api/voice-rooms/{ROOM}/nets/{net_id}/checkins.csv", headers=headers
            )
            assert answer.status_code == 200 and answer.text == checkins_csv
        await ncs.page.reload()
        await ncs.page.wait_for_selector("#room-list li[data-room]")
        await ncs.join(ROOM)
        await ncs.page.wait_for_selector(f"#net-archive [data-net='{net_id}']")
        await ncs.screenshot(artifacts, "console-archive-after-restart")
    finally:
        await asyncio.gather(*(li.close() for li in listeners), return_exceptions=True)


def check_report(report: str) -> None:
    """The plain-text report: the net, its NCS, the counts, the list in order with flags."""
    lines = report.splitlines()
    assert lines[0] == NET_NAME
    assert "Club Net" in lines[1] and "UTC" in report
    assert any(line.startswith("Net control:") and "W1NCS" in line for line in lines)
    counts = " ".join(line for line in lines if "Check-ins:" in line).split()
    assert counts[counts.index("Check-ins:") + 1] == "3", lines
    assert counts[counts.index("traffic:") + 1] == "2", lines
    entries = [line.strip() for line in lines if line.strip()[:3] in ("1. ", "2. ", "3. ")]
    assert [e.split()[1] for e in entries] == ["K1ABC", "W2DEF", "N0RF"], entries
    first, second, third = entries
    assert "Alice" in first and "FN42" in first and "[traffic]" in first and "passed" in first
    assert "Bob" in second and "[mobile]" in second and "[traffic]" not in second
    assert "[traffic]" in third and "[mobile]" not in third
