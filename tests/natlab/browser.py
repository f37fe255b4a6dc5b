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
from types import SimpleNamespace
from typing import Any

from playwright.async_api import Browser, async_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS
from tests.browser.pages import Operator, until
from tests.natlab.lab import PUBLIC_IP, WEB_PORT
from tests.natlab.netns import NetnsLoop
from tests.natlab.scenarios import (
    AUDIO_FRAMES,
    LabClient,
    Outcome,
    client_result,
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


async def browser_pair(
    label: str,
    url: str,
    room: str,
    browser_ns: str,
    loop: NetnsLoop,
    sfu: bool = False,
    timeout: float = 30.0,
) -> Outcome:
    """Chromium (client/ in a page) in `browser_ns` and a VoiceClient in `loop` meet in `room`.

    Outcome.pairs: [Chromium's selected pair, aiortc's]; Outcome.audio: [RTP packets
    Chromium received from the other end over 1 s, frames aiortc received]."""
    outcome = Outcome(label)
    server = SimpleNamespace(url=url)

    async def make() -> VoiceClient:
        return LabClient(url, tone=660.0)

    start = time.monotonic()
    async with chromium_in(browser_ns) as browser:
        operator = await Operator.open(browser, server, "W1AW")  # type: ignore[arg-type]
        await operator.join(room)
        client = await loop.call(make())
        try:
            await loop.call(join_room(client, "G4ABC", room), 30)
            assert client.participant_id
            remote = "sfu" if sfu else await operator.participant_id
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
                first = await until(chosen, "Chromium's connection", timeout)
            except AssertionError:
                outcome.states = ["timeout", "-"]
                return outcome
            state, pair, _ = await loop.call(client_result(client, remote, timeout))
            outcome.states = [first["state"], state]
            outcome.connected = outcome.states == ["connected", "connected"]
            if not outcome.connected:
                return outcome
            outcome.seconds = time.monotonic() - start
            outcome.pairs = [_pair_text(first), pair]
            key = "slot:" if sfu else client.participant_id
            before = await _packets(operator, key)
            await asyncio.sleep(1.0)
            heard = await _packets(operator, key) - before
            frames = await loop.call(_frames(client, AUDIO_FRAMES, 10))
            outcome.audio = [heard, frames]
            if operator.errors:
                outcome.error = "; ".join(operator.errors)[:200]
        finally:
            await loop.call(leave_and_close(client), 15)
    return outcome


async def _packets(operator: Operator, key: str) -> int:
    """RTP packets received from `key` (a peer id, or every SFU slot for "slot:")."""
    inbound = (await operator.stats())["inbound"]
    return sum(int(v.get("packetsReceived", 0)) for k, v in inbound.items() if k.startswith(key))


async def _frames(client: VoiceClient, frames: int, timeout: float) -> int:
    await poll(lambda: client.heard_frames() >= frames, timeout)
    return client.heard_frames()
