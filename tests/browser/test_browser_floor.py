"""Directed nets in the browser client: the floor panel, the microphone gate, NCS mutes.

Two tests:
- the library and page against floor states fed as frames (parsed by the client's own
  `parseFrame`, handled by `VoiceRoom._onFrame`): `room.floor` follows the versions, the
  page shows the standing, the microphone track is enabled only while the page may talk,
  a station muted by net control cannot unmute itself and, in a mesh room, is not played;
- the whole path on a real directed room (SFU worker): the page raises its hand, an aiortc
  net control grants it, the page shows that it holds the floor, and an aiortc listener
  hears the page's (fake, beeping) microphone; after the page releases, it is silent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser

from tests.browser.pages import PHONE, Operator, until
from tests.servers import ServerProcess, mint
from tests.voiceclient import SFU, VoiceClient

pytestmark = pytest.mark.browser

# Feeds a frame through the client's parser and handler, as the socket would.
FEED = """async (frame) => {
    const { parseFrame } = await import('/signalling.js');
    yv.room._onFrame(parseFrame(JSON.stringify(frame)));
}"""

# Far above anything a real server reaches in a test: synthetic states win over real ones.
BASE_VERSION = 100_000


def floor_state(room_id: str, version: int, **fields: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "roomId": room_id,
        "version": BASE_VERSION + version,
        "floor": "directed",
        "open": False,
        "maxTalkers": 1,
        "holders": [],
        "queue": [],
        "appointed": {},
        "muted": [],
    }
    state.update(fields)
    return state


def holder(pid: str, callsign: str, paused: bool = False) -> dict[str, Any]:
    return {
        "participantId": pid,
        "callsign": callsign,
        "kind": "traffic",
        "since": "2026-11-29T20:00:00Z",
        "paused": paused,
    }


def entry(pid: str, callsign: str, kind: str = "comment") -> dict[str, Any]:
    return {"participantId": pid, "callsign": callsign, "kind": kind, "at": "2026-11-29T20:00:01Z"}


def floor_frame(state: dict[str, Any]) -> dict[str, Any]:
    return {"type": "floorChanged", "channel": "voice", "data": {"floor": state}}


async def page_floor(op: Operator) -> dict[str, Any]:
    """What the library and the page say about this station's floor."""
    state: dict[str, Any] = await op.page.evaluate(
        """() => {
            const room = yv.room;
            const track = room.micTrack;
            const status = document.getElementById('floor-status');
            return {
                version: room.floor ? room.floor.version : null,
                directed: room.directed,
                hasFloor: room.hasFloor,
                queuePosition: room.queuePosition,
                isNetControl: room.isNetControl,
                mutedByNcs: room.mutedByNcs,
                micEnabled: track ? track.enabled : null,
                panel: !document.getElementById('floor-panel').hidden,
                standing: status.dataset.standing,
                status: status.textContent,
                holders: document.getElementById('floor-holders').textContent,
                queue: [...document.querySelectorAll('#floor-queue li')].map((li) => li.dataset.id),
                talkDisabled: document.getElementById('talk').disabled,
                raiseHidden: document.getElementById('raise-hand').hidden,
                lowerHidden: document.getElementById('lower-hand').hidden,
                ncsControls: !document.getElementById('ncs-controls').hidden,
                banners: [...document.querySelectorAll('#banners .banner')].map((b) => b.dataset.key),
            };
        }"""
    )
    return state


async def test_floor_states_drive_the_page_and_the_microphone_gate(
    browser: Browser,
    voice_server: ServerProcess,
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
    artifacts: Path,
) -> None:
    room_id = "ares"
    page = await Operator.open(browser, voice_server, "W1AW", viewport=PHONE)
    await page.join(room_id)
    me = await page.participant_id
    # A mesh peer whose audio the page plays (until net control mutes it).
    peer = client_factory(voice_server.url, tone=440)
    await peer.login("K1ABC")
    await peer.connect()
    await peer.join(room_id)
    peer_id = str(peer.participant_id)
    await page.wait_connected_to("K1ABC")
    sinks = "[...document.querySelectorAll('#audio-sinks audio')].map((a) => a.dataset.participant)"
    await until(
        lambda: page.page.evaluate(f"{sinks}.includes('{peer_id}')"), "the page playing K1ABC"
    )
    assert (await page_floor(page))["micEnabled"] is True, "an open room sends the mic"

    async def feed(state: dict[str, Any]) -> dict[str, Any]:
        await page.page.evaluate(FEED, floor_frame(state))
        return await page_floor(page)

    # Directed, nobody holds the floor: the mic track is off, the page says how to talk.
    view = await feed(floor_state(room_id, 1, queue=[entry(peer_id, "K1ABC")]))
    assert view["version"] == BASE_VERSION + 1
    assert view["directed"] and view["panel"]
    assert not view["hasFloor"] and view["micEnabled"] is False and view["talkDisabled"]
    assert view["standing"] == "none" and view["queue"] == [peer_id]
    assert not view["raiseHidden"] and view["lowerHidden"] and not view["ncsControls"]

    # Queued second (a priority request went first).
    view = await feed(
        floor_state(
            room_id, 2, queue=[entry(peer_id, "K1ABC", "priority"), entry(me, "W1AW", "traffic")]
        )
    )
    assert view["queuePosition"] == 2 and view["standing"] == "queued"
    assert "#2 in the queue (traffic)" in view["status"]
    assert view["micEnabled"] is False and not view["lowerHidden"]

    # Granted: the floor is ours, the mic goes on.
    view = await feed(floor_state(room_id, 3, holders=[holder(me, "W1AW")]))
    assert view["hasFloor"] and view["micEnabled"] is True and not view["talkDisabled"]
    assert view["standing"] == "holder" and view["status"].startswith("You have the floor")
    assert view["holders"] == "W1AW (you)" and view["raiseHidden"] and not view["lowerHidden"]
    await page.screenshot(artifacts, "w1aw-has-the-floor")

    # A late, older state and another room's state change nothing.
    view = await feed(floor_state(room_id, 2))
    assert view["version"] == BASE_VERSION + 3 and view["hasFloor"]
    view = await feed(floor_state("shack", 50))
    assert view["version"] == BASE_VERSION + 3 and view["hasFloor"]

    # Paused by a priority break-in: off again; roll call: on for everyone.
    view = await feed(
        floor_state(room_id, 4, holders=[holder(me, "W1AW", paused=True), holder(peer_id, "K1ABC")])
    )
    assert not view["hasFloor"] and view["standing"] == "paused" and view["micEnabled"] is False
    view = await feed(floor_state(room_id, 5, open=True))
    assert view["standing"] == "open" and view["micEnabled"] is True
    # Appointed net control: may always talk, sees the NCS buttons and a grant per entry.
    view = await feed(
        floor_state(room_id, 6, appointed={me: "ncs"}, queue=[entry(peer_id, "K1ABC")])
    )
    assert view["isNetControl"] and view["micEnabled"] is True and view["ncsControls"]
    await page.screenshot(artifacts, "w1aw-net-control-phone")
    assert (
        await page.page.evaluate(
            "document.querySelectorAll('#console-queue button[data-action=grant]').length"
        )
        == 1
    )

    # Net control mutes this station: no mic, no unmuting it locally, a banner.
    view = await feed(floor_state(room_id, 7, muted=[me]))
    assert view["mutedByNcs"] and view["micEnabled"] is False and view["standing"] == "muted"
    assert "ncs-mute" in view["banners"]
    refusal = await page.page.evaluate(
        """async () => {
            await yv.room.setMuted(true);
            try { await yv.room.setMuted(false); return null; }
            catch (err) { return [err.kind, err.code]; }
        }"""
    )
    assert refusal == ["forbidden", "muted_by_ncs"]
    assert (await page_floor(page))["micEnabled"] is False

    # Net control mutes the mesh peer instead: the page stops playing it, then plays it again.
    view = await feed(floor_state(room_id, 8, floor="open", muted=[peer_id]))
    assert not view["directed"] and not view["panel"] and "ncs-mute" not in view["banners"]
    assert await page.page.evaluate(f"{sinks}.includes('{peer_id}')") is False
    assert await page.page.evaluate(f"yv.room.emitted.has('{peer_id}')") is False
    roster = await page.page.evaluate(
        "[...document.querySelectorAll('#roster li.peer .floor-tag')]"
        ".filter((t) => !t.hidden).map((t) => t.textContent)"
    )
    assert roster == ["muted by NCS"]
    view = await feed(floor_state(room_id, 9, floor="open"))
    assert await page.page.evaluate(f"{sinks}.includes('{peer_id}')") is True
    # Our own local mute was kept; unmuting works again now.
    await page.page.evaluate("yv.room.setMuted(false)")
    assert (await page_floor(page))["micEnabled"] is True

    # Moderation and time-out frames reach their callbacks; the cut-off gets a banner.
    await page.page.evaluate(
        """() => {
            window.seen = [];
            const room = yv.room;
            const moderation = room.onmoderation, cut = room.ontalkercut;
            room.onmoderation = (d) => { window.seen.push(['moderation', d.action]); moderation(d); };
            room.ontalkercut = (d) => { window.seen.push(['talkerCut', d.reason]); cut(d); };
        }"""
    )
    await page.page.evaluate(
        FEED,
        {
            "type": "moderation",
            "channel": "voice",
            "data": {
                "roomId": room_id,
                "action": "appoint",
                "by": "N0NCS",
                "participantId": me,
                "callsign": "W1AW",
                "reason": "",
                "until": None,
                "role": "logger",
            },
        },
    )
    await page.page.evaluate(
        FEED,
        {
            "type": "talkerCut",
            "channel": "voice",
            "data": {"roomId": room_id, "participantId": me, "reason": "tot", "resetAfter": 2},
        },
    )
    assert await page.page.evaluate("window.seen") == [
        ["moderation", "appoint"],
        ["talkerCut", "tot"],
    ]
    banners = (await page_floor(page))["banners"]
    assert "tot" in banners and "ncs" in banners
    await page.screenshot(artifacts, "w1aw-banners-phone")

    # Leaving forgets the floor.
    await page.page.click("#leave")
    await page.page.wait_for_selector("#view-lobby:not([hidden])")
    assert await page.page.evaluate("yv.room.floor") is None
    assert not page.errors


async def test_directed_net_page_raises_hand_is_granted_and_heard(
    browser: Browser,
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
    artifacts: Path,
) -> None:
    room_id = "tuesday-net"
    server = server_factory(
        {
            "server": {"grace_period": "2s"},
            "rooms": [
                {
                    "id": room_id,
                    "name": "Tuesday Net",
                    "description": "A directed net",
                    "floor": "directed",
                    "max_participants": 10,
                }
            ],
            "sfu": {"slots": 3, "ice_addresses": ["127.0.0.1"]},
        },
        workers=1,
    )
    server.wait_healthy(timeout=60, workers=1)

    # Net control sends nothing itself, so whatever a listener hears loud is the page.
    ncs = client_factory(server.url, publish=False)
    ncs.use_token(mint("N0NCS", role="ncs"))
    await ncs.connect()
    await ncs.join(room_id)
    listener = client_factory(server.url, publish=False)
    await listener.login("K1LIS")
    await listener.connect()
    await listener.join(room_id, join_mode="listener")

    page = await Operator.open(browser, server, "W1AW")
    await page.join(room_id)
    page_id = await page.participant_id

    async def on_sfu() -> bool:
        return bool(
            await page.page.evaluate(
                "yv.room.plane === 'sfu' && !!yv.room.sfu"
                " && yv.room.sfu.pc.connectionState === 'connected'"
            )
        )

    await until(on_sfu, "the page on the SFU", timeout=30)

    async def standing(expected: str) -> dict[str, Any] | None:
        view = await page_floor(page)
        # The panel's default standing shows before the first floor state: wait for one.
        return view if view["directed"] and view["standing"] == expected else None

    view = await until(lambda: standing("none"), "the page seeing a directed floor")
    assert view["directed"] and view["micEnabled"] is False and view["talkDisabled"]

    # Without the floor the page is heard by nobody.
    await asyncio.sleep(1.0)
    before = listener.heard_loud(SFU)
    await asyncio.sleep(2.0)
    assert listener.heard_loud(SFU) - before < 5, "heard a station without the floor"

    # Raise the hand (traffic); net control sees it queued and grants the head of the queue.
    await page.page.select_option("#floor-kind", "traffic")
    await page.page.click("#raise-hand")
    await ncs.wait_event(
        "floorChanged",
        lambda e: any(q["participantId"] == page_id for q in e["data"]["floor"]["queue"]),
    )
    view = await until(lambda: standing("queued"), "the page showing its place in the queue")
    assert view["queuePosition"] == 1 and "#1 in the queue (traffic)" in view["status"]
    await ncs.request("POST", f"/api/voice-rooms/{room_id}/floor/grant", {"participantId": None})

    view = await until(lambda: standing("holder"), "the page showing that it holds the floor")
    assert view["hasFloor"] and view["micEnabled"] is True and not view["talkDisabled"]
    assert "You have the floor" in view["status"] and "W1AW (you)" in view["holders"]
    await page.screenshot(artifacts, "w1aw-granted")

    # The listener hears the page's microphone through its slot.
    await listener.wait_audio(SFU, frames=25, timeout=15)

    async def slot_named() -> bool:
        return page_id in listener.slots.values()

    await until(slot_named, "the listener's slots naming the page")

    # Net control mutes the page: its mic goes off, it cannot unmute (neither here nor on
    # the server), the listener hears nothing; after net control lifts it, the operator
    # unmutes and is heard again.
    mute = f"/api/voice-rooms/{room_id}/moderation/mute"
    await ncs.request("POST", mute, {"participantId": page_id, "muted": True})

    async def muted_by_ncs() -> dict[str, Any] | None:
        view = await page_floor(page)
        return view if view["mutedByNcs"] and "ncs-mute" in view["banners"] else None

    view = await until(muted_by_ncs, "the page muted by net control")
    assert view["micEnabled"] is False and view["standing"] == "muted"
    refusals = await page.page.evaluate(
        """async (roomId) => {
            const codes = [];
            for (const call of [() => yv.room.setMuted(false), () => yv.room.api.mute(roomId, false)]) {
                try { await call(); codes.push(null); } catch (err) { codes.push(err.code); }
            }
            return codes;
        }""",
        room_id,
    )
    assert refusals == ["muted_by_ncs", "muted_by_ncs"]
    await asyncio.sleep(1.0)
    before = listener.heard_loud(SFU)
    await asyncio.sleep(1.5)
    assert listener.heard_loud(SFU) - before < 5, "heard a station muted by net control"
    await ncs.request("POST", mute, {"participantId": page_id, "muted": False})
    view = await until(lambda: standing("holder"), "the page's NCS mute lifted")
    await page.page.click("#mute")  # the station's own mute stayed on: it unmutes itself
    view = await until(lambda: standing("holder"), "the page unmuted")
    assert await until(
        lambda: page.page.evaluate("yv.room.micTrack.enabled"), "the page's mic on again"
    )
    await listener.wait_audio(SFU, frames=25, timeout=15)

    # The page gives the floor back: its mic is gated off and the listener hears it no more.
    await page.page.click("#lower-hand")
    view = await until(lambda: standing("none"), "the page without the floor again")
    assert view["micEnabled"] is False
    await asyncio.sleep(1.0)
    before = listener.heard_loud(SFU)
    await asyncio.sleep(1.5)
    assert listener.heard_loud(SFU) - before < 5, "still heard after releasing the floor"
    await page.screenshot(artifacts, "w1aw-released")

    # Net control removes the station: the page says who and why, and a rejoin is refused.
    await ncs.request(
        "POST",
        f"/api/voice-rooms/{room_id}/moderation/remove",
        {"participantId": page_id, "reason": "testing the net"},
    )
    # The removal also revoked the page's session: it is back at the sign-in form.
    await page.page.wait_for_selector("#view-login:not([hidden])", timeout=15_000)
    banner = page.page.locator("#banners [data-key='room'] .banner-text")
    await until(banner.count, "the removal banner")
    text = await banner.inner_text()
    assert "N0NCS" in text and "removed you" in text and "testing the net" in text, text
    assert await page.page.locator("#banners [data-key='auth']").count() == 0
    await page.page.fill("#callsign", "W1AW")
    await page.page.click("#login-button")
    await page.page.wait_for_selector("#room-list li[data-room]")
    await page.page.click(f"#room-list li[data-room='{room_id}'] .join")

    async def banned() -> str | None:
        text = await banner.inner_text() if await banner.count() else ""
        return text if "banned" in text else None

    text = await until(banned, "the banned banner")
    assert "N0NCS" not in text and "W1AW" in text, text
    await page.screenshot(artifacts, "w1aw-removed-banned")
    assert await page.page.evaluate("yv.room.status") in ("idle", "left")
    assert not page.errors
