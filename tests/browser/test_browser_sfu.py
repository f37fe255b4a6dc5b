"""The browser client in SFU mode: two Chromium pages and an aiortc speaker in one net.

The room's threshold is 2, so it goes to the SFU as soon as the second page is in. Each
page then has one peer connection to the `sfu` peer whose recvonly m-lines are speaker
slots; `yv.room.audioStats()` keys them `slot:<i>` and names each slot's owner from the
`speakerSlots` mapping, so "page A hears X" is growth of the inbound counters on the slot
mapped to X. Chromium's fake microphone beeps continuously; the aiortc client says a tone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser

from tests.browser.pages import Operator, until
from tests.servers import ServerProcess
from tests.voiceclient import SFU, VoiceClient

pytestmark = pytest.mark.browser

ROOM = "sfu-net"


async def _slot_from(op: Operator, pid: str) -> tuple[str, dict[str, Any]] | None:
    """The SFU slot (key and counters) that this page currently maps to `pid`."""
    stats = await op.stats()
    for key, inbound in stats["inbound"].items():
        if key.startswith("slot:") and inbound.get("participantId") == pid:
            return key, inbound
    return None


async def _hears(op: Operator, pid: str, who: str) -> None:
    """`op` gets a slot mapped to `pid` whose packets and energy grow over 1.5 s."""
    found = await until(lambda: _slot_from(op, pid), f"{op.callsign} has a slot for {who}")
    key, first = found
    await asyncio.sleep(1.5)
    later = (await op.stats())["inbound"][key]
    assert later["participantId"] == pid, f"{op.callsign}: {key} moved to another speaker"
    # 1.5 s of Opus at 50 packets/s.
    assert later["packetsReceived"] - first["packetsReceived"] > 25, (op.callsign, who)
    assert later["bytesReceived"] > first["bytesReceived"], (op.callsign, who)
    assert later["audioEnergy"] - first["audioEnergy"] > 0.01, (op.callsign, who)


async def _on_sfu(op: Operator) -> bool:
    state: dict[str, Any] = await op.page.evaluate(
        """() => ({mode: yv.room.mode, plane: yv.room.plane,
                   pc: yv.room.sfu ? yv.room.sfu.pc.connectionState : null,
                   badge: document.getElementById('room-mode').textContent})"""
    )
    return (
        state["mode"] == "sfu"
        and state["plane"] == "sfu"
        and state["pc"] == "connected"
        and state["badge"] == "net (SFU)"
    )


async def test_pages_in_an_sfu_room_hear_an_aiortc_speaker_and_each_other(
    browser: Browser,
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
    artifacts: Path,
) -> None:
    server = server_factory(
        {
            "server": {"grace_period": "2s"},
            "rooms": [
                {
                    "id": ROOM,
                    "name": "SFU Net",
                    "description": "A net through the server",
                    "sfu_threshold": 2,
                    "max_participants": 10,
                }
            ],
            "sfu": {"slots": 3, "ice_addresses": ["127.0.0.1"]},
        },
        workers=1,
    )
    server.wait_healthy(timeout=60, workers=1)

    a = await Operator.open(browser, server, "W1AW")
    b = await Operator.open(browser, server, "G4ABC")
    await a.join(ROOM)
    await b.join(ROOM)
    a_id, b_id = await a.participant_id, await b.participant_id

    speaker = client_factory(server.url, tone=440)
    await speaker.login("K1TST")
    await speaker.connect()
    answer = await speaker.join(ROOM)
    assert answer["mode"] == "sfu"
    assert speaker.participant_id is not None
    s_id = speaker.participant_id

    detail = await speaker.request("GET", f"/api/voice-rooms/{ROOM}")
    assert detail["mode"] == "sfu"
    assert len(detail["participants"]) == 3

    await until(lambda: _on_sfu(a), "W1AW's page on the SFU", timeout=30)
    await until(lambda: _on_sfu(b), "G4ABC's page on the SFU", timeout=30)

    # Both pages hear the aiortc speaker through its slot...
    await _hears(a, s_id, "K1TST")
    await _hears(b, s_id, "K1TST")
    # ...and each other (each fake microphone beeps).
    await _hears(a, b_id, "G4ABC")
    await _hears(b, a_id, "W1AW")
    # The aiortc client hears the pages too, and sees them in its slot mapping.
    await speaker.wait_audio(SFU, frames=25, timeout=15)
    assert {a_id, b_id} <= set(speaker.slots.values())
    # In SFU mode the pages keep no mesh connection to each other.
    assert await a.page.evaluate("yv.room.links.size") == 0
    assert await b.page.evaluate("yv.room.links.size") == 0

    await a.screenshot(artifacts, "w1aw-sfu")
    await b.screenshot(artifacts, "g4abc-sfu")
    assert not a.errors and not b.errors
