"""Input classes that used to reach a 500, a traceback or a silent close (issue 10, item 9).

Each is a plain regression example; tests/test_fuzz.py looks for more of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.servers import ServerProcess
from yahaml_voice.core.config import load_config
from yahaml_voice.core.protocol import (
    MAX_JSON_DEPTH,
    JsonError,
    json_depth,
    parse_json,
    wire,
)
from yahaml_voice.server.callsign import CallsignError, normalize_callsign
from yahaml_voice.sfu.worker import Worker

DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("input-errors"), {})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def token_for(server: ServerProcess, callsign: str = "W1AW") -> str:
    answer = httpx.post(server.url + "/api/sessions", json={"callsign": callsign})
    answer.raise_for_status()
    return str(answer.json()["token"])


@pytest.mark.parametrize(
    "path,body,code",
    [
        ("/api/sessions", b'{"callsign": "\xff\xfe"}', "bad_encoding"),
        ("/api/sessions", b"\xc3\x28", "bad_encoding"),
        ("/api/sessions", DEEP.encode(), "too_deep"),
        (
            "/api/sessions",
            ('{"callsign": "W1AW", "sourceInfo": ' + DEEP + "}").encode(),
            "too_deep",
        ),
        ("/api/voice-rooms/shack/join", DEEP.encode(), "too_deep"),
        ("/api/voice-rooms/shack/signal", b"\xff", "bad_encoding"),
        ("/api/sessions", b'{"callsign": "W1AW\\n"}', "bad_callsign"),
        ("/api/sessions", b'{"callsign": "W1AW\\u0000"}', "bad_callsign"),
        ("/api/voice-rooms/shack/mute", b'{"isMuted": "yes"}', "bad_request"),
        ("/api/voice-rooms/shack/mute", b'{"isMuted": 1}', "bad_request"),
        ("/api/voice-rooms/shack/volume", b'{"volume": true}', "bad_request"),
        ("/api/voice-rooms/shack/volume", b'{"volume": "50"}', "bad_request"),
        ("/api/voice-rooms/shack/volume", b'{"volume": 50.0}', "bad_request"),
        (
            "/api/voice-rooms/shack/signal",
            b'{"type": "ice-candidate", "data": {"sdpMLineIndex": "0"}}',
            "bad_request",
        ),
    ],
)
def test_bad_body_is_a_400_not_a_500(
    shared_server: ServerProcess, path: str, body: bytes, code: str
) -> None:
    headers = {
        "Authorization": f"Bearer {token_for(shared_server)}",
        "Content-Type": "application/json",
    }
    response = httpx.post(shared_server.url + path, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code, response.text


def test_strict_types_still_take_what_yahaml_sends(shared_server: ServerProcess) -> None:
    """The real requests of YAHAML's UI (docs: reference/yahaml-ui.md) still pass."""
    login = httpx.post(
        shared_server.url + "/api/sessions",
        json={"callsign": "K1ABC", "stationId": "st-1", "browserId": "b-1", "sourceType": "web"},
    )
    assert login.status_code == 201, login.text
    headers = {"Authorization": f"Bearer {login.json()['token']}"}
    base = shared_server.url + "/api/voice-rooms/shack"
    for path, body in [
        ("/join", {"audioSourceType": "microphone", "joinMode": "operator"}),
        ("/mute", {"isMuted": True}),
        ("/mute", {"isMuted": False}),
        ("/volume", {"volume": 55}),
        (
            "/signal",
            {"type": "ice-candidate", "data": {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}},
        ),
        ("/leave", None),
    ]:
        response = httpx.post(base + path, json=body, headers=headers)
        assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize("path", ["/foo%00.js", "/%00", "/index.html%00.js", "/a%0a.js", "/%ff.js"])
def test_control_characters_in_a_static_path_are_a_404(
    shared_server: ServerProcess, path: str
) -> None:
    assert httpx.get(shared_server.url + path).status_code == 404


@pytest.mark.parametrize(
    "path",
    ["/package.json", "/tsconfig.json", "/node_modules/typescript/package.json", "/.gitignore"],
)
def test_client_development_files_are_not_served(shared_server: ServerProcess, path: str) -> None:
    # client/ in a checkout holds TypeScript and its manifests for `make lint`.
    assert httpx.get(shared_server.url + path).status_code == 404


async def test_deep_json_frame_gets_an_error_frame_and_the_socket_stays(
    shared_server: ServerProcess,
) -> None:
    token = token_for(shared_server)
    async with websockets.connect(f"{shared_server.ws_url}/ws?token={token}") as ws:
        assert json.loads(await ws.recv())["type"] == "connected"
        for frame, code in [
            (DEEP, "too_deep"),
            (b"\xff\xfe", "bad_encoding"),
            ("{", "bad_json"),
            ('{"type": "ping", "data": NaN}', "bad_json"),
            (b"", "bad_json"),
        ]:
            await ws.send(frame)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply["type"] == "error" and reply["data"]["code"] == code, reply
        await ws.send(json.dumps({"type": "ping", "data": 1}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"


def test_no_traceback_in_the_log_afterwards(shared_server: ServerProcess) -> None:
    # Runs last in this module (pytest keeps file order).
    log = shared_server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log


@pytest.mark.parametrize("text", ["W1AW\n", "W1AW\r", "\tW1AW", "W1A\x00W", "ßW1AW", "W1AW\u00a0"])
def test_callsign_with_control_or_foreign_characters_is_refused(text: str) -> None:
    with pytest.raises(CallsignError):
        normalize_callsign(text)


def test_callsign_spaces_are_still_trimmed() -> None:
    assert normalize_callsign("  g4abc/p ") == "G4ABC/P"


def test_json_depth_skips_strings_and_refuses_deep_nesting() -> None:
    assert json_depth('{"a": "[[[[\\"[[["}') == 1
    assert parse_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(JsonError) as info:
        parse_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert info.value.code == "too_deep"


async def test_worker_survives_a_deep_frame_and_answers_with_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    emitted: list[tuple[str, dict[str, object]]] = []
    worker = Worker(
        load_config(environ={}), "w-deep", lambda f: emitted.append((f.type, wire(f)["data"]))
    )
    try:
        with caplog.at_level(logging.WARNING):
            await worker.handle(DEEP)
            await worker.handle(b"\xff")
    finally:
        await worker.stop()
    assert [d["code"] for k, d in emitted if k == "error"] == ["too_deep", "bad_encoding"]
    assert not [r for r in caplog.records if r.exc_info]


async def test_global_error_path_input_errors_are_400_and_bugs_500(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """What slips past every check: a decoding error is the input's fault (400, one log
    line), anything else is our bug (500 `internal`, with its traceback logged)."""
    from yahaml_voice.server.app import create_app

    overrides = {"auth.secret": "s" * 40, "netlog.path": str(tmp_path / "netlog.sqlite3")}
    app = create_app(load_config(environ={}, overrides=overrides))

    @app.post("/boom/<kind>")
    async def boom(kind: str) -> str:
        if kind == "unicode":
            b"\xff".decode()
        if kind == "deep":
            raise RecursionError("maximum recursion depth exceeded")
        raise RuntimeError("a bug")

    client = app.test_client()
    with caplog.at_level(logging.WARNING):
        for kind, status, code in [
            ("unicode", 400, "bad_request"),
            ("deep", 400, "bad_request"),
            ("bug", 500, "internal"),
        ]:
            response = await client.post(f"/boom/{kind}")
            assert response.status_code == status
            assert (await response.get_json())["error"] == code
    with_traceback = [r.getMessage() for r in caplog.records if r.exc_info]
    assert with_traceback == ["unhandled error on POST /boom/bug"]
