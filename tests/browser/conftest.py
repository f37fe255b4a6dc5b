"""Real Chromium (Debian's /usr/bin/chromium) driving the real client against a real server.

Each test gets a fresh browser and server; each operator gets its own browser context so
that sessions, storage and media devices are separate, as on two machines.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from tests.servers import ServerProcess

CHROMIUM = os.environ.get("YV_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Rooms every browser test can use.
ROOMS: list[dict[str, Any]] = [
    {"id": "shack", "name": "Shack", "description": "Intercom for the operators in the shack"},
    {"id": "sunday-net", "name": "Sunday Net", "description": "Weekly club net", "ptt": True},
    {"id": "tiny", "name": "Tiny", "description": "Room for one", "max_participants": 1},
]


@pytest.fixture
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def voice_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory({"server": {"grace_period": "10s"}, "rooms": ROOMS})
