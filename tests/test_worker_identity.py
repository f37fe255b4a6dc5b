"""SFU workers have their own secret and audience, and a live worker id is theirs alone.

A fake worker (a websockets client holding a valid worker token) registers with a real
server process; a second registration with its id is refused and the first one keeps
receiving offers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.servers import TEST_SECRET, TEST_SFU_SECRET, ServerProcess
from tests.voiceclient import SFU, ApiFailure, VoiceClient
from yahaml_voice.core.config import ConfigError, load_config
from yahaml_voice.core.tokens import (
    PARTICIPANT_AUDIENCE,
    WORKER_AUDIENCE,
    AuthError,
    issue_token,
    issue_worker_token,
    verify_token,
    verify_worker_token,
)

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}


def _config(**overrides: Any) -> Any:
    return load_config(
        environ={},
        overrides={"auth.secret": TEST_SECRET, "sfu.secret": TEST_SFU_SECRET, **overrides},
    )


def test_participant_and_worker_tokens_never_pass_for_each_other() -> None:
    config = _config()
    participant, _ = issue_token(config, "W1AW", role="ncs")
    worker = issue_worker_token(config)
    verify_worker_token(config, worker)
    assert verify_token(config, participant).role == "ncs"
    with pytest.raises(AuthError):
        verify_worker_token(config, participant)
    with pytest.raises(AuthError):
        verify_token(config, worker)
    # A participant token forged to say role "sfu" (auth.secret) is no worker token either.
    claims = jwt.decode(participant, options={"verify_signature": False})
    sneaky = jwt.encode({**claims, "role": "sfu"}, TEST_SECRET, "HS256")
    with pytest.raises(AuthError):
        verify_worker_token(config, sneaky)
    with pytest.raises(AuthError, match="unknown role"):
        verify_token(config, sneaky)


def test_audience_separates_tokens_even_under_one_secret() -> None:
    """Defence in depth: were both secrets equal, the audience still tells them apart."""
    config = _config()
    config.sfu.secret = config.auth.secret  # what the loader refuses; forced here
    participant, _ = issue_token(config, "W1AW")
    worker = issue_worker_token(config)
    assert jwt.decode(participant, options={"verify_signature": False})["aud"] == (
        PARTICIPANT_AUDIENCE
    )
    assert jwt.decode(worker, options={"verify_signature": False})["aud"] == WORKER_AUDIENCE
    with pytest.raises(AuthError):
        verify_token(config, worker)
    # Even with every participant claim, the worker audience alone is refused.
    claims = jwt.decode(participant, options={"verify_signature": False})
    dressed = jwt.encode({**claims, "aud": WORKER_AUDIENCE}, TEST_SECRET, "HS256")
    with pytest.raises(AuthError, match="not a participant token"):
        verify_token(config, dressed)
    with pytest.raises(AuthError, match=r"aud|worker"):
        verify_worker_token(config, participant)
    # A worker-shaped token without the worker audience is refused too.
    claims = jwt.decode(worker, options={"verify_signature": False})
    claims["aud"] = PARTICIPANT_AUDIENCE
    with pytest.raises(AuthError):
        verify_worker_token(config, jwt.encode(claims, TEST_SECRET, "HS256"))


def test_sfu_secret_rules() -> None:
    with pytest.raises(ConfigError, match="differ"):
        load_config(environ={}, overrides={"auth.secret": TEST_SECRET, "sfu.secret": TEST_SECRET})
    with pytest.raises(ConfigError, match="16"):
        load_config(environ={}, overrides={"sfu.secret": "short"})
    # Embedded default: one generated per process, distinct from the participants' one.
    config = load_config(environ={})
    assert len(config.worker_secret()) >= 32
    assert config.worker_secret() == config.worker_secret() != config.token_secret()


def test_supervisor_hands_children_the_worker_secret_only() -> None:
    from yahaml_voice.sfu.supervisor import child_environment

    env = child_environment(_config(), base={})
    assert env["YAHAML_VOICE_SFU__SECRET"] == TEST_SFU_SECRET
    assert "YAHAML_VOICE_AUTH__SECRET" not in env
    assert TEST_SECRET not in env.values()


def test_supervisor_hands_children_the_worker_settings() -> None:
    """What a worker reads from `sfu` reaches the embedded children (they get no file)."""
    from yahaml_voice.core.config import load_config
    from yahaml_voice.sfu.supervisor import child_environment

    config = _config()
    config.sfu.native = False
    config.sfu.cascade_host = "10.1.2.3"
    config.recording.dir = "rec"
    config.recording.queue = 99
    config.recording.parrot_max = 7.0
    env = child_environment(config, base={})
    child = load_config(environ=env)
    assert child.sfu.native is False and child.sfu.cascade_host == "10.1.2.3"
    # Recordings: the same directory as the server's, whatever the child's working dir.
    assert child.recording.dir == os.path.abspath("rec")
    assert child.recording.queue == 99 and child.recording.parrot_max == 7.0


def test_sfu_cli_refuses_to_start_without_its_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from yahaml_voice.cli import main

    for name in ("YAHAML_VOICE_SFU__SECRET", "YAHAML_VOICE_SFU_TOKEN", "YAHAML_VOICE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert main(["sfu", "--server", "ws://127.0.0.1:9"]) == 2


def test_token_cli_mints_worker_tokens_with_the_sfu_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from yahaml_voice.cli import main

    monkeypatch.delenv("YAHAML_VOICE_CONFIG", raising=False)
    monkeypatch.setenv("YAHAML_VOICE_AUTH__SECRET", TEST_SECRET)
    monkeypatch.delenv("YAHAML_VOICE_SFU__SECRET", raising=False)
    assert main(["token", "--sfu"]) == 2
    monkeypatch.setenv("YAHAML_VOICE_SFU__SECRET", TEST_SFU_SECRET)
    capsys.readouterr()
    assert main(["token", "--sfu", "--ttl", "1h"]) == 0
    token = capsys.readouterr().out.strip()
    verify_worker_token(_config(), token)
    with pytest.raises(AuthError):
        verify_token(_config(), token)
    # Participant tokens still need a callsign.
    assert main(["token"]) == 2


# ------------------------------------------------------------------ against a real server


class FakeWorker:
    """The control side of a worker: hello, a load heartbeat, every frame recorded."""

    def __init__(self, server: ServerProcess, worker_id: str, token: str | None = None) -> None:
        self.server = server
        self.worker_id = worker_id
        self.token = token or issue_worker_token(_config())
        self.frames: list[dict[str, Any]] = []
        self.ws: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()

    async def connect(self) -> FakeWorker:
        self.ws = await websockets.connect(
            self.server.ws_url + "/sfu/ws",
            additional_headers={"Authorization": f"Bearer {self.token}"},
        )
        await self.ws.send(
            json.dumps({"type": "hello", "data": {"workerId": self.worker_id, "slots": 3}})
        )
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._beat())]
        return self

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def _beat(self) -> None:
        load = {"rooms": 0, "peers": 0, "streams": 0, "cpu": 0.0}
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await self.ws.send(json.dumps({"type": "load", "data": load}))
                await asyncio.sleep(0.5)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f.get("data") or {} for f in self.frames if f.get("type") == kind]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.ws is not None:
            await self.ws.close()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task


@pytest.fixture
async def fake_workers() -> AsyncIterator[Callable[..., FakeWorker]]:
    made: list[FakeWorker] = []

    def make(server: ServerProcess, worker_id: str, token: str | None = None) -> FakeWorker:
        worker = FakeWorker(server, worker_id, token)
        made.append(worker)
        return worker

    try:
        yield make
    finally:
        for worker in made:
            await worker.close()


async def until(condition: Callable[[], Any], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def room_mode(server: ServerProcess, token: str, room: str = "net") -> str:
    answer = httpx.get(
        f"{server.url}/api/voice-rooms/{room}", headers={"Authorization": f"Bearer {token}"}
    )
    return str(answer.json()["mode"])


async def seat_two(
    server: ServerProcess, client_factory: Callable[..., VoiceClient], room: str = "net"
) -> tuple[VoiceClient, VoiceClient]:
    """Two participants in `room` (sfu_threshold 2): the room goes onto a worker."""
    alice = client_factory(server.url, auto_media=False)
    bob = client_factory(server.url, auto_media=False)
    for client, call in ((alice, "W1AW"), (bob, "G4ABC")):
        await client.login(call)
        await client.connect()
        await client.join(room)
    await until(lambda: room_mode(server, str(alice.token), room) == "sfu")
    return alice, bob


def workers_listed(server: ServerProcess) -> int:
    return int(httpx.get(server.url + "/healthz").json()["workers"])


async def test_tokens_are_refused_on_the_wrong_endpoint(server: ServerProcess) -> None:
    participant = httpx.post(server.url + "/api/sessions", json={"callsign": "W1AW"}).json()
    # A participant token cannot register a worker.
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(
            server.ws_url + "/sfu/ws",
            additional_headers={"Authorization": f"Bearer {participant['token']}"},
        )
    assert refused.value.response.status_code == 401
    # A worker token (of this server's sfu.secret) is not a participant's: REST and /ws.
    worker = issue_worker_token(_config())
    answer = httpx.get(
        server.url + "/api/voice-rooms", headers={"Authorization": f"Bearer {worker}"}
    )
    assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(server.ws_url + f"/ws?token={worker}")
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body or b"{}")["error"] == "unauthorized"
    # A worker token signed with another sfu.secret is refused.
    other = load_config(environ={}, overrides={"sfu.secret": "x" * 32})
    with pytest.raises(InvalidStatus):
        await websockets.connect(
            server.ws_url + "/sfu/ws",
            additional_headers={"Authorization": f"Bearer {issue_worker_token(other)}"},
        )


async def test_a_live_worker_id_cannot_be_registered_twice(
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    fake_workers: Callable[..., FakeWorker],
) -> None:
    server = server_factory({"rooms": [{"id": "net", "sfu_threshold": 2}]})
    real = await fake_workers(server, "w-real").connect()
    await until(lambda: workers_listed(server) == 1)

    # Two participants put the room on the (only) worker.
    alice, _bob = await seat_two(server, client_factory)

    # The impostor presents the same id: an error frame, then 4409.
    impostor = await fake_workers(server, "w-real").connect()
    await asyncio.wait_for(impostor.closed.wait(), 10)
    assert [f["code"] for f in impostor.of("error")] == ["worker_id_taken"]
    assert impostor.ws.close_code == 4409

    # The real one is still listed (past its heartbeat timeout) and still gets the offers.
    await asyncio.sleep(3.0)
    assert workers_listed(server) == 1
    await alice.signal("offer", OFFER, to=SFU)
    await until(lambda: any(s.get("from") == alice.participant_id for s in real.of("signal")))
    assert not impostor.of("signal")
    assert not real.closed.is_set()

    # Once the real connection is gone, the id may register again.
    await real.close()
    await until(lambda: workers_listed(server) == 0)
    again = await fake_workers(server, "w-real").connect()
    # The room fell back to mesh without a worker; the server places it again.
    await until(lambda: room_mode(server, str(alice.token)) == "sfu")
    await alice.signal("offer", OFFER, to=SFU)
    await until(lambda: bool(again.of("signal")))
    assert not again.of("error")


async def test_participant_api_refuses_worker_style_roles(server: ServerProcess) -> None:
    """Participant tokens claiming role `sfu` (minted with auth.secret) are refused."""
    config = _config()
    token, _ = issue_token(config, "W1AW")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode({**claims, "role": "sfu"}, TEST_SECRET, "HS256")
    client = VoiceClient(server.url)
    try:
        client.use_token(forged)
        with pytest.raises(ApiFailure) as failure:
            await client.request("GET", "/api/voice-rooms")
        assert failure.value.status == 401
    finally:
        await client.close()


async def test_a_room_reported_by_a_worker_it_is_not_placed_on_is_closed_there(
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    fake_workers: Callable[..., FakeWorker],
) -> None:
    """roomState reconciles: a worker back from a control outage may still hold rooms the
    server re-placed meanwhile (their roomClosed went to nobody); it is told again."""
    server = server_factory({"rooms": [{"id": "net", "sfu_threshold": 2}]})
    worker = await fake_workers(server, "w-back").connect()
    await until(lambda: workers_listed(server) == 1)

    async def report(room: str) -> None:
        frame = {"type": "roomState", "data": {"roomId": room, "audioFrom": []}}
        await worker.ws.send(json.dumps(frame))

    await report("net")  # the room is in mesh mode: on no worker
    await report("nowhere")  # no such room at all
    await until(lambda: len(worker.of("roomClosed")) == 2)
    assert {f["roomId"] for f in worker.of("roomClosed")} == {"net", "nowhere"}

    # Once the room is placed on this worker, reporting it changes nothing.
    alice, _bob = await seat_two(server, client_factory)
    await report("net")
    await alice.signal("offer", OFFER, to=SFU)
    await until(lambda: bool(worker.of("signal")))
    await asyncio.sleep(1.0)
    assert len(worker.of("roomClosed")) == 2
    assert not worker.of("error")
