"""The browser client in real Chromium: join, hear, mute, push-to-talk, leave, reconnect.

Chromium's fake microphone beeps continuously, so "audio flows" is measured as growth of
`getStats()` counters (inbound bytes/packets, totalAudioEnergy) read through the page's
`window.yv.room.audioStats()`; "silent" is an energy counter that stops growing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser

from tests.browser.pages import PHONE, SERVER_CONFIG, Operator, energy_growth, until, wait_energy
from tests.servers import TEST_SECRET, ServerProcess
from tests.voiceclient import VoiceClient
from yahaml_voice.core.config import load_config
from yahaml_voice.core.tokens import issue_token

pytestmark = pytest.mark.browser

SILENT = 1e-4  # energy growth over 1.5 s of a disabled track is ~1e-7


async def _pair(
    browser: Browser, server: ServerProcess, room: str = "shack"
) -> tuple[Operator, Operator, str, str]:
    """W1AW (desktop) and G4ABC (phone-sized) in `room`, connected to each other."""
    a = await Operator.open(browser, server, "W1AW")
    b = await Operator.open(browser, server, "G4ABC", viewport=PHONE)
    await a.join(room)
    await b.join(room, keyboard=True)
    await a.wait_connected_to("G4ABC")
    await b.wait_connected_to("W1AW")
    return a, b, await a.participant_id, await b.participant_id


async def test_two_pages_join_and_hear_each_other(
    browser: Browser, voice_server: ServerProcess, artifacts: Path
) -> None:
    a, b, a_id, b_id = await _pair(browser, voice_server)
    assert set(await a.roster()) == {"W1AW", "G4ABC"}
    assert set(await b.roster()) == {"W1AW", "G4ABC"}

    first_a, first_b = await a.inbound_from(b_id), await b.inbound_from(a_id)
    await asyncio.sleep(1.5)
    later_a, later_b = await a.inbound_from(b_id), await b.inbound_from(a_id)
    # 1.5 s of Opus at 50 packets/s: well over 25 packets each way.
    assert later_a["packetsReceived"] - first_a["packetsReceived"] > 25
    assert later_b["packetsReceived"] - first_b["packetsReceived"] > 25
    assert later_a["bytesReceived"] > first_a["bytesReceived"]
    assert later_b["audioEnergy"] > first_b["audioEnergy"]
    # The roster shows the other one speaking (the fake microphone beeps).
    await until(lambda: _speaking(b, "W1AW"), "G4ABC sees W1AW speaking")
    # One <audio> element per remote peer, playing.
    playing = await a.page.evaluate(
        "[...document.querySelectorAll('#audio-sinks audio')].map(e => !e.paused && !!e.srcObject)"
    )
    assert playing == [True]
    # Usable at 360 px: nothing sticks out sideways.
    assert await b.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await a.screenshot(artifacts, "w1aw-desktop")
    await b.screenshot(artifacts, "g4abc-phone")
    assert not a.errors and not b.errors


async def _speaking(op: Operator, callsign: str) -> bool:
    row = (await op.roster()).get(callsign)
    return bool(row and row["speaking"])


async def _quiet_for(op: Operator, callsign: str, seconds: float = 1.0) -> bool:
    """The row of `callsign` never shows speaking during `seconds`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        if await _speaking(op, callsign):
            return False
        await asyncio.sleep(0.1)
    return True


async def test_mute_stops_outbound_audio_and_unmute_restores_it(
    browser: Browser, voice_server: ServerProcess, artifacts: Path
) -> None:
    a, b, a_id, _ = await _pair(browser, voice_server, room="hf-desk")

    async def a_sends() -> float:
        return float((await a.stats())["outbound"]["audioEnergy"])

    async def b_hears_a() -> float:
        return float((await b.inbound_from(a_id))["audioEnergy"])

    await wait_energy(b_hears_a, "G4ABC hearing W1AW")
    await a.page.click("#mute")
    await until(lambda: _row_muted(b, "W1AW"), "G4ABC sees W1AW muted")
    # What was in flight drains, and the UI meter's window (a background tab polls only
    # once a second) moves past the last loud frame.
    await asyncio.sleep(1.5)
    silent, quiet = await asyncio.gather(_silent(a_sends, b_hears_a), _quiet_for(b, "W1AW"))
    assert silent and quiet, "B's indicator for A stays dark while A is muted"
    assert await a.page.get_attribute("#mute", "aria-pressed") == "true"
    await a.screenshot(artifacts, "w1aw-muted")

    await a.page.keyboard.press("m")  # the keyboard shortcut unmutes
    await wait_energy(a_sends, "W1AW sending again")
    await wait_energy(b_hears_a, "G4ABC hearing W1AW again")
    await until(lambda: _speaking(b, "W1AW"), "G4ABC sees W1AW speaking again")
    assert not await _row_muted(b, "W1AW")


async def _silent(*reads: Callable[[], Awaitable[float]]) -> bool:
    """Every energy counter stays flat over the same second."""
    growth = await asyncio.gather(*(energy_growth(read) for read in reads))
    assert all(g < SILENT for g in growth), f"audio energy still growing: {growth}"
    return True


async def _row_muted(op: Operator, callsign: str) -> bool:
    row = (await op.roster()).get(callsign)
    return bool(row and row["muted"])


async def test_push_to_talk_sends_only_while_held(
    browser: Browser, voice_server: ServerProcess, artifacts: Path
) -> None:
    # sunday-net has `ptt: true`: the room setting puts both pages in push-to-talk.
    a, b, a_id, b_id = await _pair(browser, voice_server, room="sunday-net")
    assert await a.page.get_attribute("#mode-ptt", "aria-checked") == "true"

    async def a_sends() -> float:
        return float((await a.stats())["outbound"]["audioEnergy"])

    async def b_hears_a() -> float:
        return float((await b.inbound_from(a_id))["audioEnergy"])

    # Connected, packets flowing (silence), but no audio until the key is held.
    await until(lambda: _packets(b, a_id), "G4ABC receiving RTP from W1AW", timeout=10)
    assert await _silent(a_sends, b_hears_a)

    await a.page.keyboard.down("Space")
    await wait_energy(a_sends, "W1AW on air while Space is held")
    await wait_energy(b_hears_a, "G4ABC hearing W1AW while Space is held")
    await until(lambda: _speaking(b, "W1AW"), "G4ABC sees W1AW speaking")
    assert await a.page.get_attribute("#talk", "aria-pressed") == "true"
    await a.screenshot(artifacts, "w1aw-on-air")
    await a.page.keyboard.up("Space")
    await asyncio.sleep(0.5)
    assert await _silent(a_sends, b_hears_a)

    # The on-screen button works the same way (hold with the mouse / a finger).
    await b.page.hover("#talk")
    await b.page.mouse.down()
    await wait_energy(lambda: _energy(a, b_id), "W1AW hearing G4ABC while the button is held")
    await b.page.mouse.up()
    await asyncio.sleep(0.5)
    assert await energy_growth(lambda: _energy(a, b_id)) < SILENT
    await b.screenshot(artifacts, "g4abc-ptt-phone")


async def _packets(op: Operator, pid: str) -> bool:
    return (await op.inbound_from(pid))["packetsReceived"] > 10


async def _energy(op: Operator, pid: str) -> float:
    return float((await op.inbound_from(pid))["audioEnergy"])


async def test_page_and_aiortc_peers_hear_each_other(
    browser: Browser,
    voice_server: ServerProcess,
    client_factory: Callable[..., VoiceClient],
    artifacts: Path,
) -> None:
    # One aiortc peer is in the room before the page (the page offers to it), one joins
    # after (it offers to the page): both negotiation directions.
    early = client_factory(voice_server.url, tone=440)
    await early.login("K1ABC")
    await early.connect()
    await early.join("vhf-desk")

    page = await Operator.open(browser, voice_server, "W1AW")
    await page.join("vhf-desk")
    page_id = await page.participant_id

    late = client_factory(voice_server.url, tone=660)
    await late.login("N0CALL")
    await late.connect()
    await late.join("vhf-desk")

    await page.wait_connected_to("K1ABC")
    await page.wait_connected_to("N0CALL")
    assert early.participant_id and late.participant_id
    await wait_energy(lambda: _energy(page, str(early.participant_id)), "the page hearing K1ABC")
    await wait_energy(lambda: _energy(page, str(late.participant_id)), "the page hearing N0CALL")
    await early.wait_audio(page_id, frames=10)
    await late.wait_audio(page_id, frames=10)
    await until(lambda: _speaking(page, "K1ABC"), "the page shows K1ABC speaking")
    await page.screenshot(artifacts, "w1aw-with-aiortc-peers")

    # A net-like moment (the README's screenshot, docs/img/room.png): the page switches to
    # push-to-talk, N0CALL mutes, K1ABC has the floor.
    await page.page.click("#mode-ptt")
    await late.set_muted(True)
    await until(lambda: _row_muted(page, "N0CALL"), "the page shows N0CALL muted")
    await until(lambda: _quiet_for(page, "N0CALL", 0.6), "N0CALL quiet on the page")
    await until(lambda: _speaking(page, "K1ABC"), "the page shows K1ABC speaking")
    await page.screenshot(artifacts, "room")
    assert not page.errors


async def test_leave_drops_the_participant_and_stops_tracks(
    browser: Browser, voice_server: ServerProcess, artifacts: Path
) -> None:
    a, b, _, _ = await _pair(browser, voice_server, room="field-day")
    await a.page.evaluate(
        """() => {
            window.__tracks = yv.room.localStream.getTracks();
            window.__pcs = [...yv.room.links.values()].map((l) => l.pc);
        }"""
    )
    await a.page.click("#leave")
    await a.page.wait_for_selector("#view-lobby:not([hidden])")
    await until(lambda: _roster_is(b, {"G4ABC"}), "G4ABC's roster dropping W1AW", timeout=5)
    after = await a.page.evaluate(
        """() => ({
            tracks: window.__tracks.map((t) => t.readyState),
            pcs: window.__pcs.map((pc) => pc.connectionState),
            links: yv.room.links.size,
            stream: yv.room.localStream,
            socket: yv.room.ws,
            sinks: document.querySelectorAll('#audio-sinks audio').length,
            status: yv.room.status,
        })"""
    )
    assert after == {
        "tracks": ["ended"],
        "pcs": ["closed"],
        "links": 0,
        "stream": None,
        "socket": None,
        "sinks": 0,
        "status": "left",
    }
    # B's connection to A is gone and so is its <audio> element.
    assert await b.page.evaluate("yv.room.links.size") == 0
    assert await b.page.evaluate("document.querySelectorAll('#audio-sinks audio').length") == 0
    await a.screenshot(artifacts, "w1aw-lobby-after-leave")


async def _roster_is(op: Operator, calls: set[str]) -> bool:
    return set(await op.roster()) == calls


async def test_socket_dropped_by_server_reconnects_and_audio_resumes(
    browser: Browser, voice_server: ServerProcess, artifacts: Path
) -> None:
    a, b, a_id, b_id = await _pair(browser, voice_server, room="ares")
    await a.page.evaluate(
        """() => {
            window.__status = [];
            const ui = yv.room.onstatus;
            yv.room.onstatus = (s, d) => { window.__status.push(s); ui(s, d); };
            window.__seat = yv.room.seatJoinedAt;
        }"""
    )
    async with httpx.AsyncClient(base_url=voice_server.url) as http:
        response = await http.post(f"/api/test/drop-sockets/{a_id}")
        assert response.status_code == 200

    await until(
        lambda: a.page.evaluate(
            "window.__status.includes('reconnecting') && yv.room.status === 'joined'"
        ),
        "W1AW reconnecting and rejoining",
    )
    assert await a.page.evaluate("yv.room.seatJoinedAt === window.__seat"), "the seat was kept"
    assert await a.page.evaluate("yv.room.ws && yv.room.ws.readyState === WebSocket.OPEN")
    assert set(await b.roster()) == {"W1AW", "G4ABC"}, "B never saw A leave"

    # The new socket delivers events: B mutes, A's roster shows it.
    await b.page.click("#mute")
    await until(lambda: _row_muted(a, "G4ABC"), "W1AW sees G4ABC muted over the new socket")
    await b.page.click("#mute")

    # Signaling works over it too, even when both sides restart ICE at the same moment:
    # the offers collide and perfect negotiation settles it (the polite side rolls back).
    link_a, link_b = f"yv.room.links.get('{b_id}')", f"yv.room.links.get('{a_id}')"
    for _attempt in range(5):
        await asyncio.gather(
            a.page.evaluate(f"{link_a}.restartIce()"), b.page.evaluate(f"{link_b}.restartIce()")
        )

        async def settled() -> bool:
            return bool(
                await a.page.evaluate(f"{link_a}.pc.signalingState === 'stable'")
                and await b.page.evaluate(f"{link_b}.pc.signalingState === 'stable'")
            )

        await until(settled, "both ICE restarts completing")
        glare = await a.page.evaluate(f"{link_a}.collisions") + await b.page.evaluate(
            f"{link_b}.collisions"
        )
        if glare:
            break
    assert glare, "the simultaneous offers never collided"
    await a.wait_connected_to("G4ABC")
    await b.wait_connected_to("W1AW")
    await wait_energy(lambda: _energy(a, b_id), "W1AW hearing G4ABC after the reconnect")
    await wait_energy(lambda: _energy(b, a_id), "G4ABC hearing W1AW after the reconnect")
    await a.screenshot(artifacts, "w1aw-after-reconnect")
    assert not a.errors


async def test_microphone_denied_offers_listen_only(
    denying_browser: Browser,
    voice_server: ServerProcess,
    client_factory: Callable[..., VoiceClient],
    artifacts: Path,
) -> None:
    bot = client_factory(voice_server.url, tone=440)
    await bot.login("K1ABC")
    await bot.connect()
    await bot.join("repeater")
    assert bot.participant_id

    page = await Operator.open(denying_browser, voice_server, "W1AW")
    await page.page.click("#room-list li[data-room='repeater'] .join")
    banner = await page.page.wait_for_selector(".banner[data-key='mic']")
    assert banner and "blocked" in (await banner.inner_text())
    assert await page.page.is_visible("#view-lobby")
    await page.screenshot(artifacts, "microphone-blocked")

    await page.page.click(".banner[data-key='mic'] button:has-text('Listen only')")
    await page.page.wait_for_selector("#view-room:not([hidden])")
    assert await page.page.is_disabled("#talk")
    assert await page.page.text_content("#talk-label") == "Listening only"
    await page.wait_connected_to("K1ABC")
    await wait_energy(lambda: _energy(page, str(bot.participant_id)), "the listener hearing K1ABC")
    assert await page.page.evaluate("yv.room.localStream") is None
    await page.screenshot(artifacts, "listening-only")


async def test_banners_room_full_token_expired_server_unreachable(
    browser: Browser,
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    artifacts: Path,
) -> None:
    voice_server = server_factory(SERVER_CONFIG)  # its own: this test stops it
    # Room full: the lobby still says 0/1 when someone else takes the only seat.
    page = await Operator.open(browser, voice_server, "W1AW")
    other = client_factory(voice_server.url, auto_media=False)
    await other.login("K1ABC")
    await other.join("tiny")
    await page.page.click("#room-list li[data-room='tiny'] .join")
    banner = await page.page.wait_for_selector(".banner[data-key='room']")
    assert banner and "full" in (await banner.inner_text())
    assert await page.page.is_visible("#view-lobby")
    await page.screenshot(artifacts, "room-full")

    # Token expired: an invite link whose token runs out while in the room.
    config = load_config(environ={}, overrides={"auth.mode": "open", "auth.secret": TEST_SECRET})
    token, _ = issue_token(config, "N0EXP", ttl=4)
    invited = await Operator.open(browser, voice_server, "N0EXP", login=False)
    await invited.page.goto(f"{voice_server.url}/#token={token}")
    await invited.page.wait_for_selector("#room-list li[data-room='shack']")
    assert "#token" not in invited.page.url, "the token is taken out of the address bar"
    assert await invited.page.inner_text("#whoami") == "N0EXP"
    await invited.join("shack")
    banner = await invited.page.wait_for_selector(".banner[data-key='auth']", timeout=15_000)
    assert banner and "sign in again" in (await banner.inner_text())
    await invited.page.wait_for_selector("#view-login:not([hidden])")
    await invited.screenshot(artifacts, "token-expired")

    # Server unreachable.
    voice_server.stop()
    await page.page.click("#refresh-rooms")
    banner = await page.page.wait_for_selector(".banner[data-key='net']")
    assert banner and "cannot be reached" in (await banner.inner_text())
    await page.screenshot(artifacts, "server-unreachable")
