"""A listener that tries to transmit in mesh mode is never heard on an operator's page.

The page is the real client in Chromium; the others are aiortc peers: a real operator
(heard) and a listener who ignores its role and offers/answers with audio (refused by the
server with 403 `cannot_publish`; the client would not play it either).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from aiortc import RTCSessionDescription
from playwright.async_api import Browser

from tests.browser.pages import Operator, until, wait_energy
from tests.servers import ServerProcess
from tests.voiceclient import ApiFailure, VoiceClient

pytestmark = pytest.mark.browser


async def test_page_never_plays_a_listener_that_tries_to_publish(
    browser: Browser,
    voice_server: ServerProcess,
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    mallory = client_factory(voice_server.url, tone=660, auto_media=False)
    mallory.ignore_role = True
    await mallory.login("N0BAD")
    await mallory.connect()
    await mallory.join("shack", join_mode="listener")
    bad_id = str(mallory.participant_id)

    page = await Operator.open(browser, voice_server, "W1AW")
    await page.join("shack")
    page_id = await page.participant_id

    # The page offers to everyone present; mallory answers with audio to send: refused.
    offer = await mallory.wait_event(
        "signal",
        lambda e: (
            e["data"]["message"]["from"] == page_id and e["data"]["message"]["type"] == "offer"
        ),
    )
    peer = mallory._new_pc(page_id)
    await peer.pc.setRemoteDescription(
        RTCSessionDescription(offer["data"]["message"]["data"]["sdp"], "offer")
    )
    assert mallory.track is not None
    transceiver = peer.pc.getTransceivers()[0]
    transceiver.sender.replaceTrack(mallory.track.copy())
    transceiver.direction = "sendrecv"
    answer = await peer.pc.createAnswer()
    with pytest.raises(ApiFailure) as info:
        await mallory.signal("answer", {"type": "answer", "sdp": answer.sdp}, to=page_id)
    assert info.value.status == 403 and info.value.body["error"] == "cannot_publish"
    # ... and its own sending offer is refused too.
    with pytest.raises(ApiFailure) as info:
        await mallory.offer_to(page_id)
    assert info.value.status == 403

    # A real operator joins after: the page hears it.
    alice = client_factory(voice_server.url, tone=440)
    await alice.login("K1ABC")
    await alice.connect()
    await alice.join("shack")
    alice_id = str(alice.participant_id)
    await page.wait_connected_to("K1ABC")

    async def energy(pid: str) -> float:
        return float((await page.inbound_from(pid))["audioEnergy"])

    await wait_energy(lambda: energy(alice_id), "the page hearing K1ABC")
    await alice.wait_audio(page_id, frames=10)
    # Meanwhile nothing at all came from mallory, and only K1ABC has an <audio> sink.
    await asyncio.sleep(1.0)
    assert await page.inbound_from(bad_id) == {
        "packetsReceived": 0,
        "bytesReceived": 0,
        "audioEnergy": 0.0,
    }
    emitted = await page.page.evaluate("[...yv.room.emitted.values()]")
    assert emitted == [alice_id]
    assert (
        await page.page.evaluate("[...document.querySelectorAll('#audio-sinks audio')].length") == 1
    )

    # Defence in depth: a track from a peer whose canPublish is false is never played,
    # even if one did arrive (fed to the client's track handler directly here).
    attached = await page.page.evaluate(
        """async (id) => {
            const room = yv.room;
            const link = room.links.get(id) || room._createLink(id);
            const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
            const track = stream.getAudioTracks()[0];
            room._onTrack(link, { track, streams: [stream], transceiver: null });
            track.stop();
            return [link.streams.size, room.emitted.has(id)];
        }""",
        bad_id,
    )
    assert attached == [0, False]
    roster = await page.roster()
    assert set(roster) == {"W1AW", "N0BAD", "K1ABC"}
    assert not page.errors


async def test_signing_out_revokes_the_pages_token(
    browser: Browser, voice_server: ServerProcess
) -> None:
    page = await Operator.open(browser, voice_server, "W1AW")
    await page.join("hf-desk")
    token = await page.page.evaluate("yv.room.identity.token")
    await page.page.click("#logout")
    await page.page.wait_for_selector("#login-form:visible")

    async def revoked() -> bool:
        answer = httpx.get(
            voice_server.url + "/api/sessions/me", headers={"Authorization": f"Bearer {token}"}
        )
        return answer.status_code == 401 and answer.json()["error"] == "revoked"

    await until(revoked, "the signed-out token revoked")
    assert not page.errors
