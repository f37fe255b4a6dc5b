"""A Chromium page in an SFU room shows another participant whose own SFU connection is not
up as such ("connecting…" / "no audio path"), not "via server"; back to "via server" once
it connects. The other participant is an aiortc client whose first offer names a port
nobody listens on (tests/test_sfu_links.py); the page learns it from `sfuLinks`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.browser.pages import Operator, until
from tests.servers import ServerProcess
from tests.test_sfu_links import blocked_offer
from tests.voiceclient import SFU, VoiceClient

pytestmark = pytest.mark.browser

ROOM = "links-net"


async def test_the_roster_shows_another_participants_failed_sfu_link(
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
                {"id": ROOM, "name": "Links Net", "description": "Paths", "sfu_threshold": 2}
            ],
            "sfu": {"slots": 3, "ice_addresses": ["127.0.0.1"]},
        },
        workers=1,
    )
    server.wait_healthy(timeout=60, workers=1)
    page = await Operator.open(browser, server, "W1AW")
    await page.join(ROOM)
    blocked = client_factory(server.url, auto_media=False)
    await blocked.login("B1BLK")
    await blocked.connect()
    await blocked.join(ROOM)
    await until(
        lambda: page.page.evaluate(
            "!!yv.room.sfu && yv.room.sfu.pc.connectionState === 'connected'"
        ),
        "W1AW on the SFU",
        timeout=30,
    )
    await blocked_offer(blocked)

    async def shown(states: tuple[str, ...]) -> bool:
        row = (await page.roster()).get("B1BLK")
        return bool(row and row["state"] in states)

    await until(lambda: shown(("connecting", "failed")), "B1BLK shown not connected")
    text = await page.page.evaluate(
        """() => [...document.querySelectorAll('#roster li.peer')]
            .find((li) => li.querySelector('.peer-call').textContent === 'B1BLK')
            .querySelector('.state').textContent"""
    )
    assert text in ("connecting…", "no audio path"), text
    await page.screenshot(artifacts, "w1aw-sees-b1blk-down")

    old = blocked.peers.pop(SFU)
    await old.pc.close()
    blocked.auto_media = True
    await blocked.connect_sfu()
    await until(lambda: shown(("connected",)), "B1BLK shown via server")
    assert not page.errors
