"""Revocation: logging out, or being removed by net control, kills the token everywhere.

Real server processes (one in memory, two sharing a real redis-server), real WebSockets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.redis_fixture import RedisServer
from tests.servers import TEST_SECRET, ServerProcess, mint
from tests.test_auth import token_config
from tests.voiceclient import ApiFailure, VoiceClient


def me(server: ServerProcess, token: str) -> httpx.Response:
    return httpx.get(server.url + "/api/sessions/me", headers={"Authorization": f"Bearer {token}"})


async def ws_refusal(server: ServerProcess, token: str) -> str:
    """The error code of the HTTP 401 a fresh /ws with `token` is refused with (before the
    upgrade: nothing is held for a revoked token)."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"{server.ws_url}/ws?token={token}")
    assert refused.value.response.status_code == 401
    body: dict[str, Any] = json.loads(refused.value.response.body or b"{}")
    return str(body["error"])


async def closed_with(client: VoiceClient, code: str) -> None:
    """The client's socket got the error frame `code`, then a 4401 close."""
    error = await client.wait_event("error", lambda e: e["data"]["code"] == code)
    assert error["data"]["message"]
    closed = await client.wait_event("_closed")
    assert closed["data"]["code"] == 4401
    assert client.events.index(error) < client.events.index(closed)


async def test_logout_revokes_the_token_on_rest_and_ws(
    server: ServerProcess, client_factory: Callable[..., VoiceClient]
) -> None:
    alice = client_factory(server.url, auto_media=False)
    bob = client_factory(server.url, auto_media=False)
    await alice.login("W1AW")
    await bob.login("G4ABC")
    for client in (alice, bob):
        await client.connect()
        await client.join("shack")
    token = alice.token
    assert token and me(server, token).status_code == 200

    await alice.request("POST", "/api/sessions/logout")
    await closed_with(alice, "revoked")
    left = await bob.wait_event("participantLeft")
    assert left["data"] == {
        "roomId": "shack",
        "participantId": alice.participant_id,
        "reason": "logout",
    }

    answer = me(server, token)
    assert answer.status_code == 401 and answer.json()["error"] == "revoked"
    with pytest.raises(ApiFailure) as info:
        await alice.join("shack")
    assert info.value.status == 401
    assert await ws_refusal(server, token) == "revoked"
    # Only that token: bob's session lives on, and alice may log in afresh.
    assert me(server, str(bob.token)).status_code == 200
    room = await bob.request("GET", "/api/voice-rooms/shack")
    assert [p["id"] for p in room["participants"]] == [bob.participant_id]
    fresh = httpx.post(server.url + "/api/sessions", json={"callsign": "W1AW"}).json()
    assert me(server, fresh["token"]).status_code == 200
    # Logging out needs a valid token.
    assert httpx.post(server.url + "/api/sessions/logout").status_code == 401


async def test_ncs_removes_an_operator(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    server = server_factory(token_config())
    ncs = client_factory(server.url, auto_media=False)
    op = client_factory(server.url, auto_media=False)
    other = client_factory(server.url, auto_media=False)
    outsider = client_factory(server.url, auto_media=False)
    ncs.use_token(mint("W1AW", role="ncs"))
    op.use_token(mint("K1ABC"))
    other.use_token(mint("N0CALL"))
    outsider.use_token(mint("G4ABC", role="ncs", rooms=["net"]))
    for client in (ncs, op, other):
        await client.connect()
        await client.join("shack")
    path = f"/api/voice-rooms/shack/participants/{op.participant_id}/remove"

    # An operator cannot remove anyone; nor can an NCS whose token lacks the room.
    for who, status in ((other, 403), (outsider, 403)):
        with pytest.raises(ApiFailure) as info:
            await who.request("POST", path)
        assert info.value.status == status
    assert (await ncs.request("GET", "/api/voice-rooms/shack"))["participantCount"] == 3

    await ncs.request("POST", path)
    await closed_with(op, "removed")
    left = await ncs.wait_event("participantLeft")
    assert left["data"]["participantId"] == op.participant_id
    assert left["data"]["reason"] == "removed"
    assert op.token
    answer = me(server, op.token)
    assert answer.status_code == 401 and answer.json()["error"] == "revoked"
    assert await ws_refusal(server, op.token) == "revoked"
    ids = [p["id"] for p in (await ncs.request("GET", "/api/voice-rooms/shack"))["participants"]]
    assert op.participant_id not in ids and len(ids) == 2

    # Removing someone who is not there: 404; oneself: 400.
    for pid, status in ((op.participant_id, 404), (ncs.participant_id, 400)):
        with pytest.raises(ApiFailure) as info:
            await ncs.request("POST", f"/api/voice-rooms/shack/participants/{pid}/remove")
        assert info.value.status == status


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.mark.redis
async def test_logout_is_seen_by_every_server_process(
    redis_server: RedisServer,
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
) -> None:
    env = {"YAHAML_VOICE_REDIS__URL": redis_server.url, "YAHAML_VOICE_AUTH__SECRET": TEST_SECRET}
    one, two = (server_factory(env=env, name=f"node{i}") for i in range(2))
    alice = client_factory(one.url, auto_media=False)
    await alice.login("W1AW")
    await alice.connect()  # its socket is held by process one
    await alice.join("shack")
    assert alice.token and me(two, alice.token).status_code == 200

    # Logged out through process two: process one refuses it and closes its socket.
    answer = httpx.post(
        two.url + "/api/sessions/logout", headers={"Authorization": f"Bearer {alice.token}"}
    )
    assert answer.status_code == 200
    await closed_with(alice, "revoked")
    for server in (one, two):
        refused = me(server, alice.token)
        assert refused.status_code == 401 and refused.json()["error"] == "revoked"
        assert await ws_refusal(server, alice.token) == "revoked"
