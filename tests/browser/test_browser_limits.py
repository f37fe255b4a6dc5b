"""The browser client under the per-client limits of issue 10: short-lived TURN credentials
that it renews while in a room, and a media timeout it never runs into."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Request

from tests.browser.pages import ROOMS, Operator, until, wait_energy
from tests.fixtures.turn import TurnServer, running_turnserver, turn_config, turnserver_available
from tests.servers import ServerProcess
from tests.voiceclient import VoiceClient
from yahaml_voice.server.turn import turn_vars

pytestmark = [
    pytest.mark.browser,
    pytest.mark.turn,
    pytest.mark.skipif(not turnserver_available(), reason="turnserver (coturn) not installed"),
]

# Short enough for three renewals in a test, long enough that a link started just before a
# renewal still allocates its relay with the old credentials on a loaded machine.
TTL = 5


@pytest.fixture
def lab_turn() -> Iterator[TurnServer]:
    """coturn on loopback that relays to loopback peers (the page and aiortc are local)."""
    with running_turnserver(turn_config(allow_loopback_peers=True)) as server:
        yield server


async def _energy(op: Operator, pid: str) -> float:
    return float((await op.inbound_from(pid))["audioEnergy"])


@pytest.mark.usefixtures("loopback_ice")
async def test_page_renews_turn_credentials_over_a_relayed_call(
    browser: Browser,
    lab_turn: TurnServer,
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    artifacts: Path,
) -> None:
    """All media through the relay, credentials that last 5 s, a 5 s media timeout: after
    three lifetimes the page has renewed its credentials (GET /api/ice-servers), still hears
    its peer, keeps its seat, and connects through the relay to a newcomer."""
    turn = turn_vars(lab_turn.config)
    turn["ttl"] = TTL
    server = server_factory(
        {
            "server": {"grace_period": "10s"},
            "ice": {"turn": turn, "force_relay": True},
            "limits": {"media_timeout": "5s"},
            "rooms": ROOMS,
        }
    )
    early = client_factory(server.url, tone=440)
    await early.login("K1ABC")
    await early.connect()
    await early.join("vhf-desk")

    page = await Operator.open(browser, server, "W1AW")
    renewals: list[str] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/api/ice-servers"):
            renewals.append(request.url)

    page.page.on("request", on_request)
    await page.join("vhf-desk")
    page_id = await page.participant_id
    assert early.participant_id
    await page.wait_connected_to("K1ABC", timeout=30)
    await wait_energy(lambda: _energy(page, str(early.participant_id)), "the page hearing K1ABC")
    await early.wait_audio(page_id, frames=10, timeout=30)

    await until(lambda: _at_least(renewals, 3), "three renewals by the page", timeout=30)
    await wait_energy(lambda: _energy(page, str(early.participant_id)), "K1ABC still heard")
    await early.wait_audio(page_id, frames=10)
    room = await early.request("GET", "/api/voice-rooms/vhf-desk")
    assert room["participantCount"] == 2

    late = client_factory(server.url, tone=660)
    await late.login("N0CALL")
    await late.connect()
    await late.join("vhf-desk")
    assert late.participant_id
    await page.wait_connected_to("N0CALL", timeout=30)
    await wait_energy(lambda: _energy(page, str(late.participant_id)), "the page hearing N0CALL")
    await late.wait_audio(page_id, frames=10, timeout=30)
    selected = await page.page.evaluate(
        """async () => {
            const types = [];
            for (const link of yv.room.links.values()) {
                const stats = await link.pc.getStats();
                stats.forEach((r) => {
                    if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') {
                        types.push(stats.get(r.localCandidateId).candidateType);
                    }
                });
            }
            return types;
        }"""
    )
    assert selected and set(selected) == {"relay"}, selected
    await page.screenshot(artifacts, "relayed-after-renewals")
    assert not page.errors


async def _at_least(items: list[str], n: int) -> bool:
    return len(items) >= n
