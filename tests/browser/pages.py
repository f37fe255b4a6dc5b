"""Helpers for the browser tests: an operator's page driven through the UI, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page

from tests.servers import ServerProcess

DESKTOP = {"width": 1000, "height": 760}
PHONE = {"width": 360, "height": 740}

# One room per test, so tests can share one server without meeting each other's leftovers.
ROOMS: list[dict[str, Any]] = [
    {"id": "shack", "name": "Shack", "description": "Intercom for the operators in the shack"},
    {"id": "hf-desk", "name": "HF Desk", "description": "Coordination for the HF stations"},
    {"id": "vhf-desk", "name": "VHF Desk", "description": "Coordination for 2 m / 70 cm"},
    {"id": "sunday-net", "name": "Sunday Net", "description": "Weekly club net", "ptt": True},
    {"id": "field-day", "name": "Field Day", "description": "Field Day site talk-back"},
    {"id": "ares", "name": "ARES Net", "description": "Emergency communications net"},
    {"id": "repeater", "name": "Repeater Link", "description": "Audio from the club repeater"},
    {"id": "tiny", "name": "Test Room", "description": "Room for one", "max_participants": 1},
    {"id": "logger-desk", "name": "Logger Desk", "description": "Net with an appointed logger"},
]
SERVER_CONFIG: dict[str, Any] = {"server": {"grace_period": "10s"}, "rooms": ROOMS}

# Replaces the page's microphone with a steady tone (Chromium's fake device only beeps), so
# aiortc listeners can tell by frequency which page they hear (tests/voiceclient.py's
# `heard_tone`). Runs before the client's scripts, in every page of the context.
TONE_MICROPHONE = """(frequency) => {
    const devices = navigator.mediaDevices;
    const original = devices.getUserMedia.bind(devices);
    devices.getUserMedia = async (constraints) => {
        if (!constraints || !constraints.audio) return original(constraints);
        const context = new AudioContext();
        await context.resume().catch(() => {});
        const oscillator = context.createOscillator();
        oscillator.frequency.value = frequency;
        const gain = context.createGain();
        gain.gain.value = 0.3;
        const sink = context.createMediaStreamDestination();
        oscillator.connect(gain).connect(sink);
        oscillator.start();
        (window.yvTones = window.yvTones || []).push({ context, oscillator });
        return sink.stream;
    };
}"""


async def until(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0, every: float = 0.2
) -> Any:
    """Poll `check` until it returns something truthy (a generous functional deadline)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Operator:
    """One operator's page, driven through the UI like a person would."""

    def __init__(self, page: Page, callsign: str) -> None:
        self.page = page
        self.callsign = callsign
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    @classmethod
    async def open(
        cls,
        browser: Browser,
        server: ServerProcess,
        callsign: str,
        viewport: dict[str, int] | None = None,
        login: bool = True,
        token: str | None = None,
        tone: float | None = None,
    ) -> Operator:
        """A page in a context of its own; signed in with `callsign` (or with `token`, as
        an invite link does); `tone`: its microphone says that frequency."""
        context = await browser.new_context(viewport=viewport or DESKTOP)  # type: ignore[arg-type]
        if tone is not None:
            await context.add_init_script(f"({TONE_MICROPHONE})({float(tone)})")
        page = await context.new_page()
        op = cls(page, callsign)
        if token is not None:
            await page.goto(f"{server.url}/#token={token}")
            await page.wait_for_selector("#room-list li[data-room]")
        else:
            await page.goto(server.url + "/")
        if login and token is None:
            await page.fill("#callsign", callsign)
            await page.click("#login-button")
            await page.wait_for_selector("#room-list li[data-room]")
        return op

    async def join(self, room_id: str, keyboard: bool = False) -> None:
        button = f"#room-list li[data-room='{room_id}'] .join"
        if keyboard:
            await self.page.focus(button)
            await self.page.keyboard.press("Enter")
        else:
            await self.page.click(button)
        await self.page.wait_for_selector("#view-room:not([hidden])")

    @property
    async def participant_id(self) -> str:
        pid: str = await self.page.evaluate("yv.room.identity.participantId")
        return pid

    async def roster(self) -> dict[str, dict[str, Any]]:
        """Callsign -> what the roster row shows."""
        rows: list[dict[str, Any]] = await self.page.evaluate(
            """() => [...document.querySelectorAll('#roster li.peer')].map((li) => ({
                call: li.querySelector('.peer-call').textContent.replace(' (you)', ''),
                state: li.dataset.state,
                speaking: li.dataset.speaking === 'true',
                muted: !li.querySelector('.muted-tag').hidden,
            }))"""
        )
        return {row["call"]: row for row in rows}

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self.page.evaluate("yv.room.audioStats()")
        return stats

    async def inbound_from(self, pid: str) -> dict[str, float]:
        stats = await self.stats()
        return stats["inbound"].get(pid) or {
            "packetsReceived": 0,
            "bytesReceived": 0,
            "audioEnergy": 0.0,
        }

    async def wait_connected_to(self, callsign: str, timeout: float = 20.0) -> None:
        async def check() -> bool:
            row = (await self.roster()).get(callsign)
            return bool(row and row["state"] == "connected")

        await until(check, f"{self.callsign} connected to {callsign}", timeout)

    async def screenshot(self, folder: Path, name: str) -> Path:
        path = folder / f"{name}.png"
        await self.page.evaluate("window.scrollTo(0, 0)")
        await self.page.screenshot(path=str(path), full_page=True)
        return path


async def energy_growth(read: Callable[[], Awaitable[float]], seconds: float = 1.0) -> float:
    """How much a cumulative audio energy counter grows over `seconds`."""
    before = await read()
    await asyncio.sleep(seconds)
    return await read() - before


async def wait_energy(
    read: Callable[[], Awaitable[float]], what: str, timeout: float = 10.0
) -> None:
    """Wait until the counter grows by a clearly audible amount."""
    start = await read()

    async def check() -> bool:
        return await read() - start > 0.01

    await until(check, what, timeout)
