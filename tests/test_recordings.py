"""Recording on the server side (issue 15): when a room records, who hears of it, and the
routes that serve what the worker wrote.

The lifecycle runs against a real server process and the control side of a worker (a
websockets client speaking /sfu/ws, tests/test_worker_identity.py's FakeWorker): no
media is involved there, the server only decides and tells. The files are written the
way the worker leaves them (tests/recording_fixture.py, Ogg Opus via PyAV). Retention and
the mixdown spawn are tested on their own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.recording_fixture import dominant_frequency, write_recording, write_tone
from tests.redis_fixture import RedisServer
from tests.servers import METRICS_TOKEN, ServerProcess, mint
from tests.test_worker_identity import OFFER, FakeWorker, fake_workers, until, workers_listed
from tests.voiceclient import SFU, VoiceClient
from yahaml_voice.server.mixdown import Mixer
from yahaml_voice.server.recording_files import RecordingFiles, new_id

__all__ = ["fake_workers"]

ROOMS = [
    {"id": "rec", "record": True},
    {"id": "ncsrec", "record": "ncs"},
    {"id": "plain"},
    {"id": "echo", "kind": "parrot"},
]


def _get(server: ServerProcess, path: str, token: str, **headers: str) -> httpx.Response:
    return httpx.get(server.url + path, headers={"Authorization": f"Bearer {token}", **headers})


def _post(server: ServerProcess, path: str, token: str) -> httpx.Response:
    return httpx.post(server.url + path, headers={"Authorization": f"Bearer {token}"})


async def _member(url: str, callsign: str, room: str, role: str = "operator") -> VoiceClient:
    client = VoiceClient(url, publish=False, auto_media=False)
    client.use_token(mint(callsign, role=role))
    await client.connect()
    await client.join(room)
    return client


async def test_a_recorded_room_records_tells_everyone_and_serves_say_again(
    server_factory: Callable[..., ServerProcess],
    fake_workers: Callable[..., FakeWorker],
    tmp_path: Path,
) -> None:
    root = tmp_path / "recordings"
    server = server_factory(
        {"auth": {"mode": "token"}, "rooms": ROOMS, "recording": {"dir": str(root)}}
    )
    worker = await fake_workers(server, "w-1").connect()
    other = await fake_workers(server, "w-2").connect()
    await until(lambda: workers_listed(server) == 2)
    outsider = mint("K9OUT")

    # Before joining: the room list says the room is recorded.
    rooms = {r["id"]: r for r in _get(server, "/api/voice-rooms", outsider).json()}
    assert (rooms["rec"]["record"], rooms["rec"]["recording"]) == (True, False)
    assert rooms["ncsrec"]["record"] == "ncs" and rooms["plain"]["record"] is False

    # The first join places the room and starts recording on its (origin) worker.
    alice = await _member(server.url, "W1AW", "rec")
    try:
        answer = alice.join_answer or {}
        assert answer["recording"]["state"] == "recording"
        rec_id = answer["recording"]["id"]
        changed = await alice.wait_event("recordingChanged")
        assert changed["data"]["recording"]["id"] == rec_id
        origin, edge = (worker, other) if worker.of("record") else (other, worker)
        await until(lambda: bool(origin.of("record")))
        assert origin.of("record")[0] == {"roomId": "rec", "recordingId": rec_id, "netId": None}
        assert not edge.of("record")
        rooms = {r["id"]: r for r in _get(server, "/api/voice-rooms", outsider).json()}
        assert rooms["rec"]["recording"] is True
        metrics = _get(server, "/metrics", METRICS_TOKEN).text
        assert 'yahaml_voice_room_recording{room="rec"} 1.0' in metrics
        assert 'yahaml_voice_room_recording{room="ncsrec"} 0.0' in metrics

        # The worker wrote two transmissions; it reports the second one.
        folder = root / "rec" / rec_id
        write_recording(folder, "rec", rec_id, [("W1AW", 440.0), ("G4ABC", 660.0)])
        tx = {
            "roomId": "rec",
            "recordingId": rec_id,
            "transmission": json.loads((folder / "index.json").read_text())["transmissions"][1],
        }
        # From a worker that does not record it: ignored.
        await edge.ws.send(json.dumps({"type": "transmission", "data": tx}))
        await origin.ws.send(json.dumps({"type": "transmission", "data": tx}))
        heard = await alice.wait_event("transmissionRecorded")
        url = heard["data"]["transmission"]["url"]
        assert url == f"/api/voice-rooms/rec/recordings/{rec_id}/transmissions/1"
        assert len([e for e in alice.events if e["type"] == "transmissionRecorded"]) == 1

        # Say again: the list, the file (with ?token= as an <audio> sends it), a range.
        token = str(alice.token)
        listed = _get(server, f"/api/voice-rooms/rec/recordings/{rec_id}/transmissions", token)
        assert [t["callsign"] for t in listed.json()["transmissions"]] == ["W1AW", "G4ABC"]
        whole = httpx.get(f"{server.url}{url}?token={token}")
        assert whole.status_code == 200 and whole.headers["content-type"] == "audio/ogg"
        assert whole.content == (folder / "tx" / "000001.opus").read_bytes()
        (tmp_path / "heard.opus").write_bytes(whole.content)
        assert abs(dominant_frequency(tmp_path / "heard.opus") - 660.0) < 15
        part = _get(server, url, token, Range="bytes=0-99")
        assert part.status_code == 206 and len(part.content) == 100
        assert part.headers["content-range"] == f"bytes 0-99/{len(whole.content)}"
        assert part.content == whole.content[:100]
        listing = _get(server, "/api/voice-rooms/rec/recordings", token).json()
        assert [r["id"] for r in listing["recordings"]] == [rec_id]

        # Not a member: 403; bad names: 404; whole files: net control only.
        for path in (url, f"/api/voice-rooms/rec/recordings/{rec_id}/transmissions"):
            refused = _get(server, path, outsider)
            assert (refused.status_code, refused.json()["error"]) == (403, "not_in_room")
        base = f"/api/voice-rooms/rec/recordings/{rec_id}"
        for path in (
            f"{base}/transmissions/7",
            f"{base}/transmissions/..%2Findex.json",
            "/api/voice-rooms/rec/recordings/20261130T200000Z-000000/transmissions/0",
            "/api/voice-rooms/rec/recordings/..%2F..%2Fetc/transmissions/0",
        ):
            assert _get(server, path, token).status_code == 404, path
        assert _get(server, f"{base}/files/net.opus", token).status_code == 403
        ncs = mint("N0NCS", role="ncs")
        net = _get(server, f"{base}/files/net.opus", ncs)
        assert net.status_code == 200 and net.content == (folder / "net.opus").read_bytes()
        assert _get(server, f"{base}/files/index.json", ncs).json()["slots"] == 1
        assert _get(server, f"{base}/files/chapters.vtt", ncs).text.startswith("WEBVTT")
        for name in ("mixed.opus", "slot16.opus", "tx", "..%2F..%2Fx", "index.json.bak"):
            assert _get(server, f"{base}/files/{name}", ncs).status_code == 404, name
        # Net control cannot start or stop a `record: true` room's recording.
        refused = _post(server, "/api/voice-rooms/rec/recording/stop", ncs)
        assert (refused.status_code, refused.json()["error"]) == (409, "not_recordable")

        # roomState from the origin: it is told again what to record.
        state = {"roomId": "rec", "audioFrom": []}
        await origin.ws.send(json.dumps({"type": "roomState", "data": state}))
        await until(lambda: len(origin.of("record")) == 2)
        assert origin.of("record")[1]["recordingId"] == rec_id

        # The worker's disk filled: failed, everyone told, the mix is asked for.
        failed = {"roomId": "rec", "recordingId": rec_id, "state": "failed", "reason": "disk full"}
        await edge.ws.send(json.dumps({"type": "recording", "data": failed}))
        await origin.ws.send(json.dumps({"type": "recording", "data": failed}))
        ended = await alice.wait_event(
            "recordingChanged", lambda e: e["data"]["recording"]["state"] != "recording"
        )
        assert ended["data"]["recording"]["state"] == "failed"
        assert ended["data"]["recording"]["reason"] == "disk full"
        await until(lambda: f"mixdown of {folder}" in server.log_path.read_text())
    finally:
        await alice.close()
    assert not [e for e in worker.of("error") + other.of("error")]


async def test_net_control_starts_and_stops_an_ncs_recording_into_the_net_log(
    server_factory: Callable[..., ServerProcess],
    fake_workers: Callable[..., FakeWorker],
    tmp_path: Path,
) -> None:
    server = server_factory(
        {
            "auth": {"mode": "token"},
            "rooms": ROOMS,
            "recording": {"dir": str(tmp_path / "recordings")},
        }
    )
    worker = await fake_workers(server, "w-1").connect()
    await until(lambda: workers_listed(server) == 1)
    ncs = await _member(server.url, "W1AW", "ncsrec", role="ncs")
    op = await _member(server.url, "G4ABC", "ncsrec")
    try:
        assert (ncs.join_answer or {})["recording"] is None
        token, op_token = str(ncs.token), str(op.token)
        start, stop = (
            "/api/voice-rooms/ncsrec/recording/start",
            "/api/voice-rooms/ncsrec/recording/stop",
        )
        refused = _post(server, start, op_token)
        assert (refused.status_code, refused.json()["error"]) == (403, "not_net_control")
        refused = _post(server, stop, token)
        assert (refused.status_code, refused.json()["error"]) == (409, "not_recording")
        refused = _post(server, "/api/voice-rooms/plain/recording/start", token)
        assert (refused.status_code, refused.json()["error"]) == (409, "not_recordable")

        opened = httpx.post(
            server.url + "/api/voice-rooms/ncsrec/net/open",
            json={"name": "Sunday net"},
            headers={"Authorization": f"Bearer {token}"},
        )
        net_id = opened.json()["net"]["id"]
        started = _post(server, start, token)
        assert started.status_code == 200, started.text
        rec = started.json()
        assert (rec["state"], rec["netId"]) == ("recording", net_id)
        again = _post(server, start, token)
        assert (again.status_code, again.json()["error"]) == (409, "already_recording")
        await until(lambda: bool(worker.of("record")))
        assert worker.of("record")[-1]["recordingId"] == rec["id"]
        heard = await op.wait_event("recordingChanged")
        assert heard["data"]["recording"]["id"] == rec["id"]
        # A member joining now is told in the join answer.
        late = await _member(server.url, "K1LATE", "ncsrec")
        assert (late.join_answer or {})["recording"]["id"] == rec["id"]
        await late.close()

        stopped = _post(server, stop, token)
        assert stopped.json()["state"] == "stopped"
        assert stopped.json()["reason"] == "stopped by net control W1AW"
        await until(lambda: len(worker.of("record")) == 2)
        assert worker.of("record")[-1]["recordingId"] is None
        log = _get(server, "/api/voice-rooms/ncsrec/net/log", token).json()["events"]
        lines = [(e["kind"], e["by"], e["text"]) for e in log if e["kind"] == "recording"]
        assert lines == [
            ("recording", "W1AW", f"recording started ({rec['id']})"),
            ("recording", "W1AW", f"recording stopped: stopped by net control W1AW ({rec['id']})"),
        ]
    finally:
        await ncs.close()
        await op.close()


async def test_a_recorded_room_stops_when_it_empties_and_starts_again(
    server_factory: Callable[..., ServerProcess],
    fake_workers: Callable[..., FakeWorker],
    tmp_path: Path,
) -> None:
    server = server_factory(
        {"auth": {"mode": "token"}, "rooms": ROOMS, "recording": {"dir": str(tmp_path)}}
    )
    worker = await fake_workers(server, "w-1").connect()
    await until(lambda: workers_listed(server) == 1)
    alice = await _member(server.url, "W1AW", "rec")
    first = (alice.join_answer or {})["recording"]["id"]
    await alice.leave()
    await until(lambda: len(worker.of("record")) == 2)
    assert worker.of("record")[1]["recordingId"] is None
    await alice.join("rec")
    second = (alice.join_answer or {})["recording"]["id"]
    assert second != first
    await until(lambda: len(worker.of("record")) == 3)
    assert worker.of("record")[2]["recordingId"] == second
    # An echo test room: placed at its first join, its signals say parrot, and it is
    # never recorded.
    await alice.leave()
    await alice.join("echo")
    assert (alice.join_answer or {})["recording"] is None
    await alice.signal("offer", OFFER, to=SFU)
    await until(lambda: any(s["roomId"] == "echo" for s in worker.of("signal")))
    assert [s["parrot"] for s in worker.of("signal") if s["roomId"] == "echo"] == [True]
    await alice.close()


@pytest.mark.redis
async def test_two_server_processes_on_redis_agree_on_the_recording(
    server_factory: Callable[..., ServerProcess],
    fake_workers: Callable[..., FakeWorker],
    tmp_path: Path,
) -> None:
    """Net control starts on one process, the room list of the other says so, a second
    start there is refused and a stop there reaches the worker (held by the first)."""
    with RedisServer() as redis:
        config = {
            "auth": {"mode": "token"},
            "rooms": ROOMS,
            "recording": {"dir": str(tmp_path)},
            "redis": {"url": redis.url},
        }
        first = server_factory(config, name="node0")
        second = server_factory(config, name="node1")
        worker = await fake_workers(first, "w-1").connect()
        await until(lambda: workers_listed(second) == 1)
        ncs = await _member(first.url, "W1AW", "ncsrec", role="ncs")
        try:
            token = str(ncs.token)
            started = _post(first, "/api/voice-rooms/ncsrec/recording/start", token)
            assert started.status_code == 200, started.text
            rooms = {r["id"]: r for r in _get(second, "/api/voice-rooms", token).json()}
            assert rooms["ncsrec"]["recording"] is True
            again = _post(second, "/api/voice-rooms/ncsrec/recording/start", token)
            assert (again.status_code, again.json()["error"]) == (409, "already_recording")
            stopped = _post(second, "/api/voice-rooms/ncsrec/recording/stop", token)
            assert stopped.json()["state"] == "stopped"
            await until(lambda: len(worker.of("record")) == 2)
            assert worker.of("record")[1]["recordingId"] is None
            await ncs.wait_event(
                "recordingChanged", lambda e: e["data"]["recording"]["state"] == "stopped"
            )
        finally:
            await ncs.close()
            await worker.close()
            for proc in (first, second):
                proc.stop()


# ---------------------------------------------------------------- retention, mixdown


def test_retention_prunes_by_age_then_size_oldest_first_never_the_running(
    tmp_path: Path,
) -> None:
    files = RecordingFiles(tmp_path)
    now = time.time()
    day = 86400.0
    ids = {age: new_id(now - age * day, f"{age:06x}") for age in (40, 20, 10, 5, 1)}
    for rec_id in ids.values():
        write_tone(tmp_path / "net" / rec_id / "net.opus", 440.0, seconds=1.0)
    size = sum(p.stat().st_size for p in (tmp_path / "net" / ids[1]).rglob("*"))
    running = ("net", ids[40])  # a recording older than keep, but it still runs

    deleted = files.prune(now, keep=30 * day, max_bytes=0, running=[running])
    assert deleted == []
    deleted = files.prune(now, keep=15 * day, max_bytes=0, running=[running])
    assert [d.recording_id for d in deleted] == [ids[20]]
    # Size: the three left besides the running one take 3 sizes; allow 2 of the 4.
    deleted = files.prune(now, keep=0, max_bytes=int(size * 2.5), running=[running])
    assert [d.recording_id for d in deleted] == [ids[10], ids[5]]
    assert sorted(p.name for p in (tmp_path / "net").iterdir()) == [ids[40], ids[1]]
    assert files.prune(now, keep=0, max_bytes=0) == []
    # A room's folder goes with its last recording; stray names are never touched.
    (tmp_path / "junk").mkdir()
    (tmp_path / "net" / "notes.txt").write_text("x")
    files.prune(now, keep=0.5 * day, max_bytes=0)
    assert (tmp_path / "junk").is_dir() and (tmp_path / "net" / "notes.txt").is_file()
    assert not (tmp_path / "net" / ids[40]).exists()


async def test_mixdown_is_spawned_once_bounded_and_survives_a_missing_command(
    tmp_path: Path,
) -> None:
    """The `mix` command comes from the worker side of issue 15; here: the spawn."""
    marker = tmp_path / "ran"
    script = f"import sys, pathlib; pathlib.Path({str(marker)!r}).write_text(sys.argv[1])"
    mixer = Mixer(command=[sys.executable, "-c", script])
    assert mixer.request(tmp_path / "a") and not mixer.request(tmp_path / "a")
    await until(lambda: marker.exists(), timeout=20)
    assert marker.read_text() == str(tmp_path / "a")
    missing = Mixer(command=[str(tmp_path / "no-such-command")])
    assert missing.request(tmp_path / "b")
    await until(lambda: missing.failed == 1, timeout=20)
    slow = Mixer(command=[sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    slow.request(tmp_path / "c")
    await until(lambda: slow.failed == 1, timeout=20)
    await asyncio.gather(mixer.stop(), missing.stop(), slow.stop())
