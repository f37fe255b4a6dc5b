"""Authorization: who may do what, with real signed tokens against a real server process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import jwt
import pytest
import websockets

from tests.servers import TEST_SECRET, ServerProcess, mint
from tests.voiceclient import ApiFailure, VoiceClient
from yahaml_voice.core.config import load_config
from yahaml_voice.core.tokens import AuthError, issue_token, turn_credentials, verify_token
from yahaml_voice.server.auth import presented_token

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}


def token_config(**auth: object) -> dict[str, object]:
    return {
        "auth": {"mode": "token", "secret": TEST_SECRET, **auth},
        "rooms": [
            {"id": "shack", "max_participants": 10},
            {"id": "net", "max_participants": 10},
        ],
    }


def test_token_roundtrip_and_forgery() -> None:
    config = load_config(environ={}, overrides={"auth.secret": TEST_SECRET})
    token, ident = issue_token(config, "W1AW", role="ncs", rooms=["shack"])
    back = verify_token(config, token)
    assert back.participant_id == ident.participant_id and back.role == "ncs"
    assert back.rooms == ("shack",)
    forged = jwt.encode(jwt.decode(token, options={"verify_signature": False}), "x" * 32, "HS256")
    with pytest.raises(AuthError, match="invalid") as refused:
        verify_token(config, forged)
    assert refused.value.code == "unauthorized"
    expired, _ = issue_token(config, "W1AW", ttl=-5)
    with pytest.raises(AuthError, match="expired") as refused:
        verify_token(config, expired)
    assert refused.value.code == "token_expired"  # from jwt.ExpiredSignatureError
    # The code is never guessed from the text: a forged token that says "expired" is not.
    assert AuthError("invalid token: expired-looking junk").code == "unauthorized"
    none_alg = jwt.encode(
        {"sub": "x", "name": "W1AW", "role": "ncs", "rooms": "*", "exp": time.time() + 60},
        None,
        "none",
    )
    with pytest.raises(AuthError):
        verify_token(config, none_alg)


def test_one_token_lookup_for_rest_and_websocket() -> None:
    """Subprotocol first (browsers cannot set WebSocket headers), then Bearer, then ?token=."""
    assert presented_token("Bearer a", "b", ["yahaml-voice.v1", "yahaml-voice.token.c"]) == "c"
    assert presented_token("Bearer a", "b", ["yahaml-voice.v1"]) == "a"
    assert presented_token("Basic a", "b") == "b"
    assert presented_token(None, None) is None


def test_turn_credentials_follow_the_rest_scheme() -> None:
    user, password = turn_credentials("s3cret", "p-1", ttl=60, now=1000)
    assert user == "1060:p-1"
    import base64
    import hashlib
    import hmac

    assert (
        password
        == base64.b64encode(hmac.new(b"s3cret", b"1060:p-1", hashlib.sha1).digest()).decode()
    )


def test_open_mode_sessions_are_fresh(server: ServerProcess) -> None:
    one = httpx.post(
        server.url + "/api/sessions", json={"callsign": "W1AW", "stationId": "same"}
    ).json()
    two = httpx.post(
        server.url + "/api/sessions", json={"callsign": "W1AW", "stationId": "same"}
    ).json()
    # Never hand out an existing session's token, whatever stationId says.
    assert one["participantId"] != two["participantId"] and one["token"] != two["token"]
    bad = httpx.post(server.url + "/api/sessions", json={"callsign": "NOT A CALL"})
    assert bad.status_code == 400 and "callsign" in bad.json()["message"]


async def test_token_mode_refuses_sessions_and_limits_rooms(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    server = server_factory(token_config())
    refused = httpx.post(server.url + "/api/sessions", json={"callsign": "W1AW"})
    assert refused.status_code == 403 and refused.json()["error"] == "sessions_disabled"

    client = client_factory(server.url)
    client.use_token(mint("W1AW", rooms=["shack"]))
    rooms = await client.request("GET", "/api/voice-rooms")
    assert [r["id"] for r in rooms] == ["shack"]
    with pytest.raises(ApiFailure) as info:
        await client.join("net")
    assert info.value.status == 403
    assert (await client.join("shack"))["participant"]["displayName"] == "W1AW"


async def test_expired_and_forged_tokens_are_refused_on_rest_and_ws(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(token_config())
    expired = mint("W1AW", ttl=-10)
    good = mint("W1AW")
    forged = jwt.encode(jwt.decode(good, options={"verify_signature": False}), "y" * 40, "HS256")
    for token, code in (
        (expired, "token_expired"),
        (forged, "unauthorized"),
        ("garbage", "unauthorized"),
    ):
        answer = httpx.get(
            server.url + "/api/voice-rooms", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 401 and answer.json()["error"] == code
        # Refused at the upgrade (HTTP 401 with the same body), before anything is held.
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{server.ws_url}/ws?token={token}")
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body or b"{}")["error"] == code
    assert httpx.get(server.url + "/api/voice-rooms").status_code == 401


async def test_socket_closes_when_token_expires(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(token_config())
    token = mint("W1AW", ttl=2)
    async with websockets.connect(f"{server.ws_url}/ws?token={token}") as ws:
        assert "connected" in await asyncio.wait_for(ws.recv(), 5)
        frames = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    # The documented order: an error frame saying why, then the 4401 close.
    assert frames and frames[-1]["type"] == "error"
    assert frames[-1]["data"]["code"] == "token_expired"


async def test_cross_room_signals_and_forged_from(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    server = server_factory(token_config())
    a = client_factory(server.url, auto_media=False)
    b = client_factory(server.url, auto_media=False)
    c = client_factory(server.url, auto_media=False)
    a.use_token(mint("W1AW"))
    b.use_token(mint("K1ABC"))
    c.use_token(mint("N0CALL"))
    for client in (a, b, c):
        await client.connect()
    await a.join("shack")
    await b.join("shack")
    await c.join("net")

    # C is not in shack: 403. A signalling C (in another room): 404.
    c.room_id = "shack"
    with pytest.raises(ApiFailure) as info:
        await c.signal("offer", OFFER, to=a.participant_id)
    assert info.value.status == 403
    with pytest.raises(ApiFailure) as info:
        await a.signal("offer", OFFER, to=c.participant_id)
    assert info.value.status == 404

    # A claims to be C: the server stamps A's own id.
    await a.request(
        "POST",
        "/api/voice-rooms/shack/signal",
        {"type": "offer", "to": b.participant_id, "from": c.participant_id, "data": OFFER},
    )
    event = await b.wait_event("signal")
    assert event["data"]["message"]["from"] == a.participant_id
    assert event["data"]["roomId"] == "shack"

    # Room events do not leak into other rooms: C (in net) saw nothing of shack.
    await a.set_muted(True)
    await b.wait_event("participantMuteChanged")
    await asyncio.sleep(0.3)
    leaked = [e for e in c.events if (e.get("data") or {}).get("roomId") == "shack"]
    assert leaked == []


async def test_websocket_origins(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory({"server": {"allowed_origins": ["https://club.example.org"]}})
    token = httpx.post(server.url + "/api/sessions", json={"callsign": "W1AW"}).json()["token"]
    url = f"{server.ws_url}/ws?token={token}"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, origin="https://evil.example.com")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    for origin in ("https://club.example.org", f"http://127.0.0.1:{server.port}", None):
        async with websockets.connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            assert "connected" in await asyncio.wait_for(ws.recv(), 5)
    preflight = httpx.get(server.url + "/healthz", headers={"Origin": "https://club.example.org"})
    assert preflight.headers["access-control-allow-origin"] == "https://club.example.org"
    other = httpx.get(server.url + "/healthz", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers
