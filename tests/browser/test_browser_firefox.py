"""The browser client in real Firefox ESR next to Chromium and aiortc: mesh, SFU, mixed rooms.

Firefox is driven through Marionette (tests/browser/firefox.py) by the same `Operator` as
Chromium. Firefox's fake microphone is a steady tone, Chromium's beeps; "audio arrives" is
growth of the inbound RTP counters from `yv.room.audioStats()` over 1.5 s. Each test also
checks that Firefox's own level meter moves (the roster row of the page's own callsign).
Times from the click on Join to "connected" on both ends are written to the test's
artifacts folder (`connect-times.json`); they are measurements, not assertions.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser

from tests.browser.conftest import FAILED
from tests.browser.firefox import Firefox, firefox, firefox_available
from tests.browser.pages import Operator, until
from tests.servers import ServerProcess, running
from tests.voiceclient import SFU, VoiceClient

pytestmark = [
    pytest.mark.browser,
    pytest.mark.firefox,
    pytest.mark.skipif(
        not firefox_available(),
        reason="no firefox-esr (apt-get install firefox-esr) or no marionette_driver (pip install -e .[test])",
    ),
]

SFU_ROOMS = [
    {
        "id": "ff-sfu",
        "name": "Firefox SFU",
        "description": "Firefox and aiortc",
        "sfu_threshold": 2,
    },
    {"id": "ff-mixed", "name": "Mixed SFU", "description": "Everyone", "sfu_threshold": 2},
    {"id": "ff-fail", "name": "Blocked SFU", "description": "No path", "sfu_threshold": 2},
]

CLIENT = Path(__file__).resolve().parents[2] / "client"

# Own level meter: the self row's fill, scaled by sqrt(level); above this it visibly moves.
METER_MOVES = 0.1
OWN_METER_JS = """() => {
  const row = [...document.querySelectorAll('#roster li.peer')].find((li) =>
      li.querySelector('.peer-call').textContent.endsWith(' (you)'));
  const fill = row && row.querySelector('.level-fill');
  const m = fill && /scaleY\\(([0-9.]+)\\)/.exec(fill.style.transform || '');
  return m ? Number(m[1]) : 0;
}"""


@pytest.fixture(scope="module")
def firefox_pool() -> Iterator[Firefox]:
    """The module's Firefoxes: each test gets fresh pages, the processes are kept."""
    pool = Firefox()
    try:
        yield pool
    finally:
        asyncio.run(pool.close())


@pytest.fixture
async def ff(
    firefox_pool: Firefox, request: pytest.FixtureRequest, artifacts: Path
) -> AsyncIterator[Firefox]:
    """Firefox for one test; its pages are kept as pictures in the artifacts if it fails."""
    try:
        yield firefox_pool
    finally:
        if getattr(request.node, FAILED, False):
            await firefox_pool.screenshots(artifacts)
        await firefox_pool.release()


@pytest.fixture(scope="module")
def sfu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with one SFU worker for the module; each test has its own room."""
    config: dict[str, Any] = {
        "server": {"grace_period": "2s"},
        "rooms": SFU_ROOMS,
        "sfu": {"slots": 3, "ice_addresses": ["127.0.0.1"]},
    }
    with running(tmp_path_factory.mktemp("firefox-sfu"), config, "ff-sfu", workers=1) as proc:
        yield proc


def _record(artifacts: Path, **times: float) -> None:
    path = artifacts / "connect-times.json"
    path.write_text(json.dumps({k: round(v, 3) for k, v in times.items()}, indent=2))
    print(f"time to connected: {times}")


async def _connected_to(op: Operator, callsign: str) -> bool:
    row = (await op.roster()).get(callsign)
    return bool(row and row["state"] == "connected")


async def _speaking(op: Operator, callsign: str) -> bool:
    row = (await op.roster()).get(callsign)
    return bool(row and row["speaking"])


async def _meshed(a: Operator, b: Operator, started: float) -> float:
    """Seconds from `started` until each page shows the other connected."""
    await until(lambda: _connected_to(a, b.callsign), f"{a.callsign} connected", every=0.05)
    await until(lambda: _connected_to(b, a.callsign), f"{b.callsign} connected", every=0.05)
    return time.monotonic() - started


async def _hears_peer(op: Operator, pid: str, who: str) -> None:
    """RTP from mesh peer `pid` keeps arriving at `op` (1.5 s of Opus: 75 packets)."""
    first = await op.inbound_from(pid)
    await asyncio.sleep(1.5)
    later = await op.inbound_from(pid)
    assert later["packetsReceived"] - first["packetsReceived"] > 25, (op.callsign, who, later)
    assert later["bytesReceived"] > first["bytesReceived"], (op.callsign, who)
    assert later["audioEnergy"] > first["audioEnergy"], (op.callsign, who)


async def _slot_from(op: Operator, pid: str) -> tuple[str, dict[str, Any]] | None:
    for key, inbound in (await op.stats())["inbound"].items():
        if key.startswith("slot:") and inbound.get("participantId") == pid:
            return key, inbound
    return None


async def _hears_slot(op: Operator, pid: str, who: str) -> None:
    """`op` has an SFU slot mapped to `pid` whose packets grow over 1.5 s."""
    key, first = await until(lambda: _slot_from(op, pid), f"{op.callsign} has a slot for {who}")
    await asyncio.sleep(1.5)
    later = (await op.stats())["inbound"][key]
    assert later["participantId"] == pid, f"{op.callsign}: {key} moved to another speaker"
    assert later["packetsReceived"] - first["packetsReceived"] > 25, (op.callsign, who, later)
    assert later["bytesReceived"] > first["bytesReceived"], (op.callsign, who)


async def _own_meter_moves(op: Operator) -> None:
    async def level() -> float:
        shown: float = await op.page.evaluate(OWN_METER_JS)
        return shown if shown > METER_MOVES else 0.0

    await until(level, f"{op.callsign}'s own level meter moves", timeout=10, every=0.1)


async def _on_sfu(op: Operator) -> bool:
    state: dict[str, Any] = await op.page.evaluate(
        """() => ({mode: yv.room.mode, plane: yv.room.plane,
                   pc: yv.room.sfu ? yv.room.sfu.pc.connectionState : null})"""
    )
    return state == {"mode": "sfu", "plane": "sfu", "pc": "connected"}


async def _speaker(
    client_factory: Callable[..., VoiceClient], server: ServerProcess, room: str
) -> VoiceClient:
    speaker = client_factory(server.url, tone=440)
    await speaker.login("K1TST")
    await speaker.connect()
    answer = await speaker.join(room)
    assert answer["mode"] == "sfu"
    return speaker


async def test_firefox_and_chromium_mesh(
    browser: Browser, ff: Firefox, voice_server: ServerProcess, artifacts: Path
) -> None:
    fox, chrome = await asyncio.gather(
        Operator.open(ff, voice_server, "F1FOX"),  # type: ignore[arg-type]
        Operator.open(browser, voice_server, "C1HRM"),
    )
    await chrome.join("hf-desk")
    started = time.monotonic()
    await fox.join("hf-desk")
    seconds = await _meshed(fox, chrome, started)
    fox_id, chrome_id = await fox.participant_id, await chrome.participant_id

    await _hears_peer(fox, chrome_id, "C1HRM")
    await _hears_peer(chrome, fox_id, "F1FOX")
    # Levels both ways: each roster shows the other one speaking.
    await until(lambda: _speaking(fox, "C1HRM"), "F1FOX sees C1HRM speaking")
    await until(lambda: _speaking(chrome, "F1FOX"), "C1HRM sees F1FOX speaking")
    # Firefox's own meter (Chromium's is the Chromium tests' business: there the meter's
    # AudioContext needs the click's user activation, which a slow getUserMedia can outlive).
    await _own_meter_moves(fox)
    _record(artifacts, mesh_firefox_chromium=seconds)
    await fox.screenshot(artifacts, "f1fox-mesh")
    assert not fox.errors and not chrome.errors


async def test_firefox_and_firefox_mesh(
    ff: Firefox, voice_server: ServerProcess, artifacts: Path
) -> None:
    a, b = await asyncio.gather(
        Operator.open(ff, voice_server, "F1FOX"),  # type: ignore[arg-type]
        Operator.open(ff, voice_server, "F2FOX"),  # type: ignore[arg-type]
    )
    await a.join("vhf-desk")
    started = time.monotonic()
    await b.join("vhf-desk", keyboard=True)
    seconds = await _meshed(a, b, started)

    await _hears_peer(a, await b.participant_id, "F2FOX")
    await _hears_peer(b, await a.participant_id, "F1FOX")
    await _own_meter_moves(a)
    _record(artifacts, mesh_firefox_firefox=seconds)
    assert not a.errors and not b.errors


async def test_firefox_hears_an_aiortc_speaker_through_the_sfu(
    ff: Firefox,
    sfu_server: ServerProcess,
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
    artifacts: Path,
) -> None:
    fox = await Operator.open(ff, sfu_server, "F1FOX")  # type: ignore[arg-type]
    await fox.join("ff-sfu")
    # The second participant takes the room to the SFU (sfu_threshold 2).
    started = time.monotonic()
    speaker = await _speaker(client_factory, sfu_server, "ff-sfu")
    await until(lambda: _on_sfu(fox), "F1FOX on the SFU", timeout=30, every=0.05)
    seconds = time.monotonic() - started
    fox_id = await fox.participant_id
    assert speaker.participant_id is not None

    await _hears_slot(fox, speaker.participant_id, "K1TST")
    await speaker.wait_audio(SFU, frames=25, timeout=15)
    assert fox_id in set(speaker.slots.values())
    await _own_meter_moves(fox)
    _record(artifacts, sfu_firefox=seconds)
    await fox.screenshot(artifacts, "f1fox-sfu")
    assert not fox.errors


async def test_chromium_firefox_and_aiortc_in_one_sfu_room(
    browser: Browser,
    ff: Firefox,
    sfu_server: ServerProcess,
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
    artifacts: Path,
) -> None:
    fox, chrome = await asyncio.gather(
        Operator.open(ff, sfu_server, "F1FOX"),  # type: ignore[arg-type]
        Operator.open(browser, sfu_server, "C1HRM"),
    )
    await chrome.join("ff-mixed")
    started = time.monotonic()
    await fox.join("ff-mixed")
    await until(lambda: _on_sfu(fox), "F1FOX on the SFU", timeout=30, every=0.05)
    seconds = time.monotonic() - started
    await until(lambda: _on_sfu(chrome), "C1HRM on the SFU", timeout=30)
    speaker = await _speaker(client_factory, sfu_server, "ff-mixed")
    assert speaker.participant_id is not None
    fox_id, chrome_id = await fox.participant_id, await chrome.participant_id

    await _hears_slot(fox, speaker.participant_id, "K1TST")
    await _hears_slot(fox, chrome_id, "C1HRM")
    await _hears_slot(chrome, fox_id, "F1FOX")
    await _hears_slot(chrome, speaker.participant_id, "K1TST")
    await speaker.wait_audio(SFU, frames=25, timeout=15)
    assert {fox_id, chrome_id} <= set(speaker.slots.values())
    assert await fox.page.evaluate("yv.room.links.size") == 0
    await _own_meter_moves(fox)
    _record(artifacts, sfu_mixed_firefox=seconds)
    assert not fox.errors and not chrome.errors


async def test_a_failed_sfu_connection_in_firefox_shows_a_banner_and_both_rosters_say_so(
    browser: Browser, sfu_server: ServerProcess, artifacts: Path
) -> None:
    """Firefox that cannot pair with the worker's only (loopback) address, as in the issue:
    its page says so in a banner and keeps the seat; neither roster shows the link connected."""
    if "onsfuproblem" not in (CLIENT / "voice-room.js").read_text():
        pytest.skip("this client has no SFU problem banner yet (wt-client's branch adds it)")
    async with firefox(prefs={"media.peerconnection.ice.loopback": False}) as blind:
        fox, chrome = await asyncio.gather(
            Operator.open(blind, sfu_server, "F1FOX"),  # type: ignore[arg-type]
            Operator.open(browser, sfu_server, "C1HRM"),
        )
        await chrome.join("ff-fail")
        await fox.join("ff-fail")
        await fox.page.wait_for_selector(".banner[data-key='sfu']", timeout=20_000)
        await until(lambda: _on_sfu(chrome), "C1HRM on the SFU", timeout=30)

        async def not_connected(op: Operator, callsign: str) -> bool:
            row = (await op.roster()).get(callsign)
            return bool(row and row["state"] not in ("connected", "waiting"))

        await until(lambda: not_connected(fox, "C1HRM"), "F1FOX shows C1HRM not connected")
        # The seat is kept meanwhile: both still see each other in the room.
        assert set(await fox.roster()) == {"F1FOX", "C1HRM"}
        assert set(await chrome.roster()) == {"F1FOX", "C1HRM"}
        await fox.screenshot(artifacts, "f1fox-sfu-failed")
        # Chromium's row for F1FOX is its own SFU link's state: nothing tells a page that
        # another participant's SFU connection failed (no such frame yet).
        try:
            await until(
                lambda: not_connected(chrome, "F1FOX"), "C1HRM shows F1FOX not connected", 3
            )
        except AssertionError:
            pytest.xfail("C1HRM still shows F1FOX connected: no per-participant SFU state")
