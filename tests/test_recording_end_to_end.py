"""A recorded net end to end: a real server, its real SFU worker child, aiortc clients.

The server tells the worker to record (`record`), the worker writes the files from the
packets it forwards and reports each transmission back, members get `recordingChanged` and
`transmissionRecorded`, and the say-again route serves the file: it decodes to the tone
the talker sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.recording_fixture import dominant_frequency
from tests.servers import TEST_SECRET, ServerProcess
from tests.test_sfu_integration import sfu_connected, until
from tests.voiceclient import VoiceClient
from yahaml_voice.core.config import load_config
from yahaml_voice.core.tokens import issue_token

ROOM = "net"


async def test_a_recorded_net_end_to_end(
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
    tmp_path: Path,
) -> None:
    root = tmp_path / "recordings"
    server = server_factory(
        {
            "rooms": [{"id": ROOM, "record": True, "max_participants": 10}],
            "sfu": {"slots": 3, "slot_hold": "0.5s", "ice_addresses": ["127.0.0.1"]},
            "recording": {"dir": str(root)},
        },
        workers=1,
    )
    server.wait_healthy(timeout=60, workers=1)
    alice = client_factory(server.url, tone=660)
    assert alice.track is not None
    alice.track.muted = True
    await alice.login("W1AW")
    rooms = await alice.request("GET", "/api/voice-rooms")
    assert [(r["id"], r["record"]) for r in rooms] == [(ROOM, True)]  # said before joining
    await alice.connect()
    await alice.join(ROOM)
    config = load_config(environ={}, overrides={"auth.secret": TEST_SECRET})
    token, _ = issue_token(config, "K1SWL", role="listener")
    bob = client_factory(server.url, publish=False)
    bob.use_token(token)
    await bob.connect()
    answer = await bob.join(ROOM)
    await until(lambda: sfu_connected(alice) and sfu_connected(bob), 30, "both on the SFU")
    started = (
        answer.get("recording")
        or (
            await bob.wait_event(
                "recordingChanged", lambda e: e["data"]["recording"]["state"] == "recording"
            )
        )["data"]["recording"]
    )
    assert started["state"] == "recording"

    # One transmission of about 1.5 s.
    alice.track.muted = False
    await bob.wait_audio(frames=25, timeout=20)
    await asyncio.sleep(1.0)
    alice.track.muted = True
    event = await bob.wait_event("transmissionRecorded", timeout=15)
    tx = event["data"]["transmission"]
    assert tx["callsign"] == "W1AW" and tx["participantId"] == alice.participant_id
    assert 1.0 < tx["duration"] < 4.0

    # Say again: the member fetches it (?token= as an <audio src> would) and it is the tone.
    replay = httpx.get(server.url + tx["url"], params={"token": token})
    assert replay.status_code == 200 and replay.headers["content-type"].startswith("audio/ogg")
    path = tmp_path / "replay.opus"
    path.write_bytes(replay.content)
    assert abs(dominant_frequency(path) - 660) < 15
    # The worker wrote the recording's files where the server serves them from.
    folder = root / ROOM / event["data"]["recordingId"]
    assert (folder / "net.opus").exists() and (folder / "index.json").exists()


async def test_an_echo_room_never_meshes(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    """Without a worker an echo test room stays in mesh mode, and its members must not meet
    there: a signal to a peer is refused."""
    server = server_factory({"rooms": [{"id": "echo", "kind": "parrot"}]}, workers=0)
    alice = client_factory(server.url, auto_media=False)
    bob = client_factory(server.url, auto_media=False)
    for client, call in ((alice, "W1AW"), (bob, "K1ABC")):
        await client.login(call)
        await client.connect()
        await client.join("echo")
    status = await alice.http.post(
        "/api/voice-rooms/echo/signal",
        json={"to": bob.participant_id, "type": "offer", "data": {"type": "offer", "sdp": "v=0"}},
        headers={"Authorization": f"Bearer {alice.token}"},
    )
    assert status.status_code == 409 and status.json()["error"] == "echo_room"
