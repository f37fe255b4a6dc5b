"""Say again in Chromium: a member of a recorded room replays the last transmission.

A real server with a recorded room, placed on a worker whose control side is a websockets
client (tests/test_worker_identity.py's FakeWorker: it never touches media here, only
tells the server a transmission is on disk). The files are Ogg Opus tones written the way
the worker leaves them. The member's page shows the notice before joining and the REC
badge after, lists the transmission, fetches it from the route with the Authorization
header (no `?token=` in any URL the page requests: URLs end up in access logs) and plays
it from a blob: url in its <audio> element: the element ends, and the file it played
decodes (in the page, WebAudio) to the talker's tone. A signed-in station that did not
join gets 403 for the same url.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.browser.pages import Operator, until
from tests.recording_fixture import write_recording
from tests.servers import ServerProcess
from tests.test_worker_identity import FakeWorker, fake_workers, workers_listed
from tests.test_worker_identity import until as until_sync

pytestmark = pytest.mark.browser
__all__ = ["fake_workers"]

ROOM = "rec-net"
# Power of the tone at 440 Hz and at 880 Hz in the transmission the <audio> element played
# (the page's CSP keeps blob: out of connect-src, so the bytes come from the client's own
# fetch of the same route once more, not from the element's blob: url).
TONE_OF_SOURCE = """async (index) => {
    const tx = yv.room.recording.transmissions.find((t) => t.index === index);
    const data = await (await yv.room.recording.replayBlob(tx)).arrayBuffer();
    const context = new OfflineAudioContext(1, 48000, 48000);
    const pcm = (await context.decodeAudioData(data)).getChannelData(0);
    const power = (f) => {
        let re = 0, im = 0;
        for (let i = 0; i < pcm.length; i++) {
            re += pcm[i] * Math.cos(2 * Math.PI * f * i / 48000);
            im += pcm[i] * Math.sin(2 * Math.PI * f * i / 48000);
        }
        return re * re + im * im;
    };
    return {440: power(440), 880: power(880)};
}"""


async def test_a_member_replays_the_last_transmission_and_a_non_member_is_refused(
    browser: Browser,
    server_factory: Callable[..., ServerProcess],
    fake_workers: Callable[..., FakeWorker],
    tmp_path: Path,
) -> None:
    root = tmp_path / "recordings"
    server = server_factory(
        {
            "rooms": [
                {"id": ROOM, "name": "Recorded Net", "record": True},
                {"id": "echo", "name": "Echo", "kind": "parrot"},
            ],
            "recording": {"dir": str(root)},
        }
    )
    worker = await fake_workers(server, "w-1").connect()
    await until_sync(lambda: workers_listed(server) == 1)

    member = await Operator.open(browser, server, "W1AW")
    page = member.page
    # Before joining: the notice, and the echo room offered as an audio test.
    item = page.locator(f"#room-list li[data-room='{ROOM}']")
    assert await item.locator(".rec").is_visible()
    assert "recorded" in (await item.locator(".rec-notice").inner_text()).lower()
    echo = page.locator("#room-list li[data-room='echo'] .join")
    assert await echo.inner_text() == "Test your audio"

    await member.join(ROOM)
    await page.wait_for_selector("#rec-badge:not([hidden])")
    assert "being recorded" in await page.inner_text("#rec-status")
    assert await page.get_attribute("#rec-status", "aria-live") == "polite"
    rec_id = await page.evaluate("yv.room.recording.latest.id")

    folder = root / ROOM / rec_id
    write_recording(folder, ROOM, rec_id, [("G4ABC", 440.0), ("K1ABC", 880.0)])
    last = json.loads((folder / "index.json").read_text())["transmissions"][1]
    frame = {"roomId": ROOM, "recordingId": rec_id, "transmission": last}
    await worker.ws.send(json.dumps({"type": "transmission", "data": frame}))

    play = page.locator("#replay-list li[data-index='1'] .replay-play")
    await play.wait_for()
    assert await page.inner_text("#replay-list li[data-index='1'] .replay-call") == "K1ABC"
    requests: list[tuple[str, str | None]] = []
    page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
    await play.click()

    async def ended() -> bool:
        return bool(await page.evaluate("document.getElementById('replay-audio').ended"))

    await until(ended, "the replay to play to its end")
    played = await page.evaluate("document.getElementById('replay-audio').played.length")
    assert played >= 1
    # Fetched once with the header; the element played a blob: url; no token in any url.
    fetched = [(url, auth) for url, auth in requests if url.endswith(last_url(ROOM, rec_id, 1))]
    assert len(fetched) == 1 and (fetched[0][1] or "").startswith("Bearer "), requests
    assert (await page.evaluate("document.getElementById('replay-audio').src")).startswith("blob:")
    assert not [url for url, _ in requests if "token=" in url], requests
    power = await page.evaluate(TONE_OF_SOURCE, 1)
    assert power["880"] > 20 * power["440"], power
    assert not member.errors

    # Signed in, not a member of the room: the same url is refused.
    outsider = await Operator.open(browser, server, "K9OUT")
    status = await outsider.page.evaluate(
        """async (path) => {
            const token = yv.room.identity.token;
            const answer = await fetch(path, {headers: {Authorization: `Bearer ${token}`}});
            return [answer.status, (await answer.json()).error];
        }""",
        last_url(ROOM, rec_id, 1),
    )
    assert status == [403, "not_in_room"]


def last_url(room: str, rec_id: str, index: int) -> str:
    return f"/api/voice-rooms/{room}/recordings/{rec_id}/transmissions/{index}"
