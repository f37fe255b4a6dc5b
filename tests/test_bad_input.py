"""Bad input gets a 4xx or an error frame, never a 5xx, and the others keep being served."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest
import websockets

from tests.servers import ServerProcess
from tests.voiceclient import VoiceClient

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def session(server: ServerProcess, callsign: str) -> tuple[str, str]:
    answer = httpx.post(server.url + "/api/sessions", json={"callsign": callsign}).json()
    return answer["token"], answer["participantId"]


CASES: list[tuple[str, str, object, int]] = [
    # (method, path, body (str = raw), expected status)
    ("POST", "/api/sessions", "{not json", 400),
    ("POST", "/api/sessions", "[]", 400),
    ("POST", "/api/sessions", {}, 400),
    ("POST", "/api/sessions", {"callsign": 42}, 400),
    ("POST", "/api/sessions", {"callsign": "W1AW", "admin": True}, 400),
    ("POST", "/api/sessions", {"callsign": "x" * 5000}, 400),
    ("POST", "/api/sessions", "x" * 200_000, 413),
    ("POST", "/api/voice-rooms/shack/join", {"joinMode": "god"}, 400),
    ("POST", "/api/voice-rooms/shack/join", "{", 400),
    ("POST", "/api/voice-rooms/nowhere/join", {}, 404),
    ("POST", "/api/voice-rooms/..%2F..%2Fetc/join", {}, 405),
    ("GET", "/..%2F..%2F..%2Fetc%2Fpasswd", None, 404),
    ("GET", "/%2e%2e/pyproject.toml", None, 404),
    ("GET", "/api/voice-rooms/nowhere", None, 404),
    ("POST", "/api/voice-rooms/shack/signal", {"type": "offer"}, 400),
    ("POST", "/api/voice-rooms/shack/signal", {"type": "shout", "data": None}, 400),
    (
        "POST",
        "/api/voice-rooms/shack/signal",
        {"type": "offer", "data": {"type": "answer", "sdp": SDP}},
        400,
    ),
    (
        "POST",
        "/api/voice-rooms/shack/signal",
        {"type": "offer", "data": {"type": "offer", "sdp": 5}},
        400,
    ),
    (
        "POST",
        "/api/voice-rooms/shack/signal",
        {"type": "offer", "data": {"type": "offer", "sdp": ""}},
        400,
    ),
    ("POST", "/api/voice-rooms/shack/signal", {"type": "ice-candidate", "data": "candidate"}, 400),
    (
        "POST",
        "/api/voice-rooms/shack/signal",
        {"type": "ice-candidate", "data": {"candidate": 1}},
        400,
    ),
    (
        "POST",
        "/api/voice-rooms/shack/signal",
        {"type": "offer", "to": "no-such-peer", "data": {"type": "offer", "sdp": SDP}},
        404,
    ),
    (
        "POST",
        "/api/voice-rooms/shack/signal",
        {"type": "offer", "to": "bad id!", "data": {"type": "offer", "sdp": SDP}},
        400,
    ),
    (
        "POST",
        "/api/voice-rooms/shack/signal",
        {"type": "offer", "data": {"type": "offer", "sdp": "v" * 70_000}},
        413,
    ),
    (
        "POST",
        "/api/voice-rooms/shack/signal",
        {"type": "offer", "to": "sfu", "data": {"type": "offer", "sdp": SDP}},
        409,
    ),
    ("POST", "/api/voice-rooms/shack/mute", {"isMuted": "yes please"}, 400),
    ("POST", "/api/voice-rooms/shack/mute", {}, 400),
    ("POST", "/api/voice-rooms/shack/volume", {"volume": 101}, 400),
    ("DELETE", "/api/voice-rooms/shack", None, 405),
    ("GET", "/api/nothing-here", None, 404),
]


@pytest.mark.parametrize("method,path,body,status", CASES)
def test_bad_request_gets_a_clear_4xx(
    shared_server: ServerProcess, method: str, path: str, body: object, status: int
) -> None:
    token, _ = shared_server.extra["token"]
    headers = {"Authorization": f"Bearer {token}"}
    if isinstance(body, str):
        headers["Content-Type"] = "application/json"
        response = httpx.request(method, shared_server.url + path, content=body, headers=headers)
    else:
        response = httpx.request(method, shared_server.url + path, json=body, headers=headers)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["error"] and answer["message"]


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> object:
    server = ServerProcess(
        tmp_path_factory.mktemp("bad-input"), {"server": {"grace_period": "30s"}}
    )
    server.start()
    token = session(server, "W1AW")
    httpx.post(
        server.url + "/api/voice-rooms/shack/join",
        json={},
        headers={"Authorization": f"Bearer {token[0]}"},
    ).raise_for_status()
    server.extra = {"token": token}  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


async def test_websocket_garbage_gets_error_frames_and_the_room_lives_on(
    server: ServerProcess, client_factory: Callable[..., VoiceClient]
) -> None:
    alice = client_factory(server.url)
    bob = client_factory(server.url)
    await alice.login("W1AW")
    await bob.login("K1ABC")
    await alice.connect()
    await bob.connect()
    await alice.join("shack")
    await bob.join("shack")
    await alice.wait_audio(bob.participant_id, frames=10)

    token, _ = session(server, "N0CALL")
    async with websockets.connect(f"{server.ws_url}/ws?token={token}") as ws:
        assert json.loads(await ws.recv())["type"] == "connected"
        garbage: list[str | bytes] = [
            "not json",
            "[1,2,3]",
            "42",
            json.dumps({"type": "explode"}),
            json.dumps({"type": "subscribe", "channel": "secret-admin"}),
            json.dumps({"type": "ping", "extra": {"a": 1}}),
            b"\x00\xff\xfe binary",
            "{" * 10_000,
            "x" * 70_000,
        ]
        for frame in garbage:
            await ws.send(frame)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply["type"] == "error", reply
            assert reply["data"]["message"]
        await ws.send(json.dumps({"type": "ping", "channel": "voice", "data": 7}))
        pong = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert pong == {"type": "pong", "channel": "voice", "data": 7}

    # The server never answered 5xx and the call between the others goes on.
    assert httpx.get(server.url + "/healthz").status_code == 200
    await alice.wait_audio(bob.participant_id, frames=25)
    await bob.wait_audio(alice.participant_id, frames=25)
    log = server.log_tail(400)
    assert "Traceback" not in log and "unhandled error" not in log
