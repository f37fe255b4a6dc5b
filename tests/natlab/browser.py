"""Real Chromium inside a lab site: Playwright launches it through `ip netns exec`.

Playwright talks to Chromium over a pipe (--remote-debugging-pipe), which survives the
exec into the namespace, so the browser's sockets live at the site, behind its NAT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, async_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS
from tests.browser.pages import DESKTOP, TONE_MICROPHONE, Operator, until
from tests.natlab.lab import PUBLIC_IP, WEB_PORT
from tests.natlab.netns import NetnsLoop
from tests.natlab.scenarios import (
    AUDIO_FRAMES,
    LabClient,
    Outcome,
    client_result,
    first_audio_at,
    join_room,
    leave_and_close,
)
from tests.natlab.scenarios import until as poll
from tests.voiceclient import VoiceClient

# The lab serves plain http on a non-localhost address; getUserMedia needs a secure
# context, which this flag grants to the lab's own origins only.
LAB_ORIGINS = ",".join(f"http://{PUBLIC_IP}:{port}" for port in range(WEB_PORT, WEB_PORT + 10))

# JS: per connection of the page's VoiceRoom, the selected ICE candidate pair's types.
SELECTED_PAIRS_JS = """async () => {
  const room = window.yv.room;
  const links = [...room.links.values(), ...(room.sfu ? [room.sfu] : [])];
  const out = [];
  for (const link of links) {
    const report = await link.pc.getStats();
    let pairId = null;
    report.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
    });
    // Firefox has no transport stats: its candidate pair in use says selected (nominated).
    report.forEach((r) => {
      if (!pairId && r.type === 'candidate-pair' && (r.selected || (r.nominated && r.state === 'succeeded'))) pairId = r.id;
    });
    const pair = pairId ? report.get(pairId) : null;
    const local = pair ? report.get(pair.localCandidateId) : null;
    const remote = pair ? report.get(pair.remoteCandidateId) : null;
    out.push({
      peer: link.peerId,
      state: link.pc.connectionState,
      local: local ? local.candidateType : null,
      relayProtocol: local ? local.relayProtocol || null : null,
      remote: remote ? remote.candidateType : null,
    });
  }
  return out;
}"""


def chromium_available() -> bool:
    return os.path.exists(CHROMIUM)


def browser_in(name: str, ns: str) -> contextlib.AbstractAsyncContextManager[Any]:
    """A launcher (Playwright Browser, or tests/browser/firefox.py's stand-in) of browser
    `name` ("chromium" or "firefox") whose processes run in namespace `ns`."""
    if name == "firefox":
        from tests.browser.firefox import firefox_in, secure_hosts

        return firefox_in(ns, secure_hosts([PUBLIC_IP]))
    return chromium_in(ns)


@contextlib.asynccontextmanager
async def chromium_in(ns: str) -> AsyncIterator[Browser]:
    """A Playwright Browser whose Chromium process runs in network namespace `ns`."""
    folder = Path(tempfile.mkdtemp(prefix="natlab-chromium-"))
    wrapper = folder / "chromium"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {CHROMIUM} "$@"\n')
    wrapper.chmod(stat.S_IRWXU)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(wrapper),
                args=[*CHROMIUM_FLAGS, f"--unsafely-treat-insecure-origin-as-secure={LAB_ORIGINS}"],
            )
            try:
                yield browser
            finally:
                await browser.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def selected_pairs(page: Any) -> list[dict[str, Any]]:
    pairs: list[dict[str, Any]] = await page.evaluate(SELECTED_PAIRS_JS)
    return pairs


def _pair_text(chosen: dict[str, Any]) -> str:
    local = chosen["local"] or "-"
    if local == "relay" and chosen.get("relayProtocol"):
        local = f"relay/{chosen['relayProtocol']}"
    return f"{local}>{chosen['remote'] or '-'}"


TRACE_JS = (Path(__file__).parent / "trace.js").read_text()


async def open_traced(
    browser: Browser, url: str, callsign: str, tone: float | None = None
) -> Operator:
    """An operator's page (signed in) whose RTCPeerConnections log into window.yvTrace.
    `tone`: its microphone says that frequency steadily (Chromium's fake device beeps
    about three frames every half second, which makes "N loud frames heard" slow)."""
    context = await browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    await context.add_init_script(TRACE_JS)
    if tone is not None:
        await context.add_init_script(f"({TONE_MICROPHONE})({float(tone)})")
    page = await context.new_page()
    operator = Operator(page, callsign)
    await page.goto(url + "/")
    await page.fill("#callsign", callsign)
    await page.click("#login-button")
    await page.wait_for_selector("#room-list li[data-room]")
    return operator


async def page_trace(operator: Operator) -> list[dict[str, Any]]:
    """window.yvTrace with `t` in time.monotonic() seconds (the page logs wall-clock ms)."""
    events: list[dict[str, Any]] = await operator.page.evaluate("window.yvTrace || []")
    offset = time.time() - time.monotonic()
    for event in events:
        event["t"] = event["t"] / 1000.0 - offset
    return events


def trace_summary(events: list[dict[str, Any]], start: float) -> str:
    """One line per event, milliseconds from `start` (for docs/turn.md and failures)."""
    lines = []
    for e in events:
        rest = {k: v for k, v in e.items() if k not in ("t", "pc", "ev")}
        lines.append(f"{(e['t'] - start) * 1000:7.1f} ms pc{e['pc']} {e['ev']} {rest}")
    return "\n".join(lines)


async def browser_pair(
    label: str,
    url: str,
    room: str,
    browser_ns: str,
    loop: NetnsLoop,
    sfu: bool = False,
    timeout: float = 30.0,
    browser_name: str = "chromium",
) -> Outcome:
    """An aiortc VoiceClient in `loop` is in `room`; Chromium or Firefox (client/ in a
    page) in `browser_ns` joins it (the newcomer, as an operator opening the page would).
    The browser's start is not timed (the clock starts at the click on Join).

    Outcome.seconds / audio_seconds: from the click on Join to both ends connected / both
    ends receiving audio. Outcome.pairs: [Chromium's selected pair, aiortc's];
    Outcome.audio: [RTP packets Chromium received over 1 s, frames aiortc received];
    Outcome.trace: the page's RTCPeerConnection events (trace.js), ms from the click."""
    outcome = Outcome(label)

    async def make() -> VoiceClient:
        return LabClient(url, tone=660.0)

    launched = time.monotonic()
    async with browser_in(browser_name, browser_ns) as browser:
        operator = await open_traced(browser, url, "W1AW")
        outcome.browser_start = time.monotonic() - launched
        client = await loop.call(make())
        try:
            await loop.call(join_room(client, "G4ABC", room), 30)
            assert client.participant_id
            start = time.monotonic()
            await operator.join(room)
            remote = "sfu" if sfu else await operator.participant_id
            # aiortc's end is watched meanwhile, so its connected time is its own.
            watch = asyncio.ensure_future(loop.call(client_result(client, remote, timeout)))
            browser_remote = "sfu" if sfu else client.participant_id

            async def chosen() -> dict[str, Any] | None:
                for entry in await selected_pairs(operator.page):
                    if entry["peer"] == browser_remote and entry["state"] in (
                        "connected",
                        "failed",
                    ):
                        return entry
                return None

            try:
                first = await until(chosen, "Chromium's connection", timeout, every=0.05)
            except AssertionError:
                outcome.states = ["timeout", "-"]
                watch.cancel()
                return outcome
            state, pair, at = await watch
            outcome.states = [first["state"], state]
            outcome.connected = outcome.states == ["connected", "connected"]
            if not outcome.connected or at is None:
                return outcome
            outcome.pairs = [_pair_text(first), pair]
            key = "slot:" if sfu else client.participant_id
            before = await packets(operator, key)
            await asyncio.sleep(1.0)
            heard = await packets(operator, key) - before
            frames = await loop.call(_frames(client, AUDIO_FRAMES, 10))
            outcome.audio = [heard, frames]
            events = await page_trace(operator)
            # From the click event itself (Playwright's own checks before it are not the page's).
            start = next((e["t"] for e in events if e["ev"] == "click"), start)
            outcome.trace = trace_summary(events, start)
            conn = [e["t"] for e in events if e["ev"] == "conn" and e.get("state") == "connected"]
            rtp = [e["t"] for e in events if e["ev"] == "rtp"]
            if conn:
                outcome.seconds = max(conn[-1], at) - start
            heard_at = first_audio_at(client, remote)
            if rtp and heard_at is not None:
                outcome.audio_seconds = max(rtp[-1], heard_at) - start
            if operator.errors:
                outcome.error = "; ".join(operator.errors)[:200]
        finally:
            await loop.call(leave_and_close(client), 15)
    return outcome


async def packets(operator: Operator, key: str) -> int:
    """RTP packets received from `key` (a peer id, or every SFU slot for "slot:")."""
    inbound = (await operator.stats())["inbound"]
    return sum(int(v.get("packetsReceived", 0)) for k, v in inbound.items() if k.startswith(key))


async def _frames(client: VoiceClient, frames: int, timeout: float) -> int:
    await poll(lambda: client.heard_frames() >= frames, timeout)
    return client.heard_frames()
