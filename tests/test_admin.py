"""The admin API (docs/admin.md): rooms at runtime, invites revoked one by one, the overview.

Real server processes (the embedded default with its SQLite file; two sharing a real
redis-server), real WebSockets, restarts for real.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import given
from schemathesis.generation.modes import GenerationMode

from tests.redis_fixture import RedisServer
from tests.servers import TEST_SECRET, ServerProcess, mint
from tests.test_auth import token_config
from tests.test_fuzz import API_CHECKS, assert_clean_log, fuzz
from tests.test_revocation import closed_with, me, ws_refusal
from tests.voiceclient import VoiceClient

ADMIN = {"Authorization": f"Bearer {mint('W1ADM', role='admin', ttl=3600)}"}


def call(server: ServerProcess, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    headers = kw.pop("headers", ADMIN)
    return httpx.request(method, server.url + path, json=body, headers=headers, timeout=10, **kw)


def room_ids(server: ServerProcess) -> list[str]:
    answer = call(server, "GET", "/api/admin/rooms")
    assert answer.status_code == 200, answer.text
    return [room["id"] for room in answer.json()]


async def test_admin_rooms_invites_and_a_restart(
    server_factory: Callable[..., ServerProcess], client_factory: Callable[..., VoiceClient]
) -> None:
    server = server_factory(token_config())
    # Only the role admin: an operator's token is refused, no token is a 401.
    operator = {"Authorization": f"Bearer {mint('K1ABC')}"}
    assert call(server, "GET", "/api/admin/overview", headers=operator).status_code == 403
    assert call(server, "GET", "/api/admin/rooms", headers={}).status_code == 401
    assert room_ids(server) == ["shack", "net"]  # seeded from the file

    # A room added at runtime: listed for everyone at once; refusals are 4xx with a code.
    field = {"id": "field-day", "name": "Field day", "max_participants": 20}
    made = call(server, "POST", "/api/admin/rooms", field)
    assert made.status_code == 201 and made.json()["mesh_threshold"] == 4
    refused = {
        "room_exists": field,
        "bad_room": {"id": "long", "name": "x" * 81},
    }
    for code, body in refused.items():
        answer = call(server, "POST", "/api/admin/rooms", body)
        assert answer.status_code in (400, 409) and answer.json()["error"] == code
    assert call(server, "POST", "/api/admin/rooms", {"id": "Bad Id"}).status_code == 400
    listed = httpx.get(server.url + "/api/voice-rooms", headers=operator).json()
    assert [r["id"] for r in listed] == ["shack", "net", "field-day"]

    # Edited: the name at once; the floor only while nobody is in the room.
    member = client_factory(server.url, auto_media=False)
    member.use_token(mint("N0CALL"))
    await member.connect()
    await member.join("field-day")
    renamed = call(server, "PUT", "/api/admin/rooms/field-day", {**field, "name": "FD 2026"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "FD 2026"
    directed = {**field, "floor": "directed"}
    busy = call(server, "PUT", "/api/admin/rooms/field-day", directed)
    assert busy.status_code == 409 and busy.json()["error"] == "room_occupied"
    assert call(server, "PUT", "/api/admin/rooms/nope", {"id": "nope"}).status_code == 404
    assert call(server, "PUT", "/api/admin/rooms/field-day", {"id": "other"}).status_code == 400

    overview = call(server, "GET", "/api/admin/overview").json()
    fd = next(r for r in overview["rooms"] if r["id"] == "field-day")
    assert fd["name"] == "FD 2026" and fd["mode"] == "mesh"
    assert [p["callsign"] for p in fd["participants"]] == ["N0CALL"]
    assert overview["store"] == "memory" and overview["workers"] == []

    # Removed while someone is in it: told so (about itself), seat gone, room gone.
    assert call(server, "DELETE", "/api/admin/rooms/field-day").status_code == 200
    closed = await member.wait_event(
        "participantLeft", lambda e: e["data"]["participantId"] == member.participant_id
    )
    assert closed["data"] == {
        "roomId": "field-day",
        "participantId": member.participant_id,
        "reason": "room_closed",
    }
    assert call(server, "DELETE", "/api/admin/rooms/field-day").status_code == 404
    assert (
        httpx.post(server.url + "/api/voice-rooms/field-day/join", headers=operator).status_code
        == 404
    )
    # The file's room removed at runtime stays removed across a restart (below).
    assert call(server, "DELETE", "/api/admin/rooms/net").status_code == 200
    assert call(server, "POST", "/api/admin/rooms", {"id": "hf-net"}).status_code == 201

    # An invite: minted for a room and role, used, revoked alone.
    body = {"callsign": "g4abc", "room": "shack", "role": "listener", "ttl": 3600}
    minted = call(server, "POST", "/api/admin/invites", body)
    assert minted.status_code == 201, minted.text
    invite, token = minted.json()["invite"], minted.json()["token"]
    assert minted.json()["link"] == f"{server.url}/#token={token}"
    assert invite["callsign"] == "G4ABC" and invite["state"] == "active"
    assert invite["createdBy"] == "W1ADM" and invite["role"] == "listener"
    other = call(server, "POST", "/api/admin/invites", {"callsign": "VE3XYZ", "room": "*"}).json()
    for bad, status in (({**body, "room": "gone"}, 404), ({**body, "ttl": 10}, 400)):
        assert call(server, "POST", "/api/admin/invites", bad).status_code == status
    guest = client_factory(server.url, auto_media=False)
    guest.use_token(token)
    await guest.connect()
    await guest.join("shack")
    assert me(server, token).json()["role"] == "listener"

    revoked = call(server, "POST", f"/api/admin/invites/{invite['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    await closed_with(guest, "revoked")
    refused_me = me(server, token)
    assert refused_me.status_code == 401 and "invite" in refused_me.json()["message"]
    assert await ws_refusal(server, token) == "revoked"
    assert me(server, other["token"]).status_code == 200  # only that one
    again = call(server, "POST", f"/api/admin/invites/{invite['id']}/revoke")
    assert again.status_code == 200 and again.json()["revokedBy"] == "W1ADM"
    for bad_id in ("i-00000000000000000000", "x"):
        assert call(server, "POST", f"/api/admin/invites/{bad_id}/revoke").status_code == 404
    states = {
        i["id"]: i["state"] for i in call(server, "GET", "/api/admin/invites").json()["invites"]
    }
    assert states == {invite["id"]: "revoked", other["invite"]["id"]: "active"}

    # A restart: the catalog (the net log's SQLite file) keeps rooms, removals, invites,
    # and the revoked invite stays refused though the in-memory store started empty.
    server.stop()
    server.start()
    assert room_ids(server) == ["shack", "hf-net"]
    assert me(server, token).status_code == 401
    assert me(server, other["token"]).status_code == 200
    assert len(call(server, "GET", "/api/admin/invites").json()["invites"]) == 2


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.mark.redis
async def test_rooms_are_shared_and_survive_a_restart_with_redis(
    redis_server: RedisServer, server_factory: Callable[..., ServerProcess]
) -> None:
    env = {"YAHAML_VOICE_REDIS__URL": redis_server.url, "YAHAML_VOICE_AUTH__SECRET": TEST_SECRET}
    one = server_factory(env=env, name="node0")
    assert call(one, "POST", "/api/admin/rooms", {"id": "contest", "ptt": True}).status_code == 201
    two = server_factory(env=env, name="node1")
    assert "contest" in room_ids(two)

    # The other process picks up a change within its poll (a few seconds).
    assert call(two, "DELETE", "/api/admin/rooms/echo").status_code == 200
    for _ in range(100):
        if "echo" not in room_ids(one):
            break
        await asyncio.sleep(0.1)
    assert room_ids(one) == ["shack", "contest"]

    one.stop()
    one.start()
    assert room_ids(one) == ["shack", "contest"]
    rooms = httpx.get(
        one.url + "/api/voice-rooms", headers={"Authorization": f"Bearer {mint('K1ABC')}"}
    ).json()
    assert [(r["id"], r["ptt"]) for r in rooms] == [("shack", False), ("contest", True)]

    # Redis restarted empty: a server process writes the catalog back (its poll).
    redis_server.restart()
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        for _ in range(150):
            with contextlib.suppress(redis.RedisError):
                if client.hexists("yv:catalog:rooms", "contest"):
                    break
            await asyncio.sleep(0.1)
        assert sorted(client.hkeys("yv:catalog:rooms")) == ["contest", "shack"]
    finally:
        client.close()


async def test_admin_routes_fuzzed_with_an_admin_token(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """schemathesis over the admin operations as an admin (test_fuzz.py sends them as an
    operator: 403): only 2xx/4xx answers that match the documented schemas, no traceback."""
    server = server_factory({"limits": {"signals_per_second": 0}})
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    statuses: Counter[int] = Counter()
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith("/api/admin/"):
            continue
        # Negating an operation without a body only burns time before Unsatisfiable.
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.body else [])
        for mode in modes:

            @fuzz(10)
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                case.headers = {**(case.headers or {}), **ADMIN}
                response = case.call(base_url=server.url, timeout=10)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=API_CHECKS)

            run()
            ran += 1
    assert ran >= 11 and statuses[200] and statuses[400], statuses
    assert not [s for s in statuses if s >= 500], statuses
    assert_clean_log(server.log_path.read_text(errors="replace"))
