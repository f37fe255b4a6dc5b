"""The native fan-out (sfu/fanout.c) against the Python loop, byte for byte.

Real libsrtp sessions and real UDP sockets on loopback: every subscriber's session is
keyed like a reference session that protects the same prepared packet in Python
(pylibsrtp's `protect`), so what each subscriber's socket receives must equal the
reference, whichever loop sent it. A real aiortc listener decoding what the native path
sends is in test_sfu_worker.py (parametrised over both loops).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice.turn import create_turn_endpoint
from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session

from tests.fixtures.turn import running_turnserver, turn_config, turnserver_available
from yahaml_voice.core.config import load_config
from yahaml_voice.core.tokens import ice_config
from yahaml_voice.sfu import native
from yahaml_voice.sfu.aiortc_private import fast_sink, relay_sender
from yahaml_voice.sfu.forwarder import Forwarder, Layout
from yahaml_voice.sfu.worker import Worker

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler"
)

PROFILES = [Policy.SRTP_PROFILE_AES128_CM_SHA1_80, Policy.SRTP_PROFILE_AEAD_AES_256_GCM]


def session(profile: int, key: bytes) -> Session:
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    return Session(policy)


def key_for(profile: int, salt: int) -> bytes:
    lengths = {PROFILES[0]: 30, PROFILES[1]: 44}
    return bytes((salt * 7 + i) & 0xFF for i in range(lengths[profile]))


class Reference:
    """A generic (protect, sendto, addr) sink: Python protect, recorded, never sent."""

    def __init__(self, profile: int, key: bytes) -> None:
        self.session = session(profile, key)
        self.sent: list[bytes] = []

    @property
    def sink(self) -> tuple[object, object, None]:
        return (self.session.protect, lambda data, addr: self.sent.append(data), None)


class Pair:
    """A UDP socket a sink sends on (connected, or with an address) and its receiver."""

    def __init__(self, connected: bool) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.settimeout(2)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.bind(("127.0.0.1", 0))
        self.addr = None if connected else self.rx.getsockname()
        if connected:
            self.tx.connect(self.rx.getsockname())

    def received(self, count: int) -> list[bytes]:
        return [self.rx.recv(2048) for _ in range(count)]

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


@pytest.fixture
def pairs() -> Iterator[list[Pair]]:
    made: list[Pair] = []
    yield made
    for pair in made:
        pair.close()


def packets(count: int) -> list[RtpPacket]:
    out = []
    for i in range(count):
        p = RtpPacket(
            payload_type=96,
            sequence_number=(65530 + i) & 0xFFFF,  # wraps: libsrtp's rollover counter too
            timestamp=(i * 960) & 0xFFFFFFFF,
            ssrc=4321,
            payload=bytes([0xFC]) + os.urandom(40 + i % 60),
            marker=int(i == 0),
        )
        p.extensions.audio_level = (i % 2 == 0, 20 + i % 50)
        out.append(p)
    return out


def run(fanout: native.Fanout | None, profile: int, pairs: list[Pair]) -> None:
    """Two groups (two layouts) of subscribers, connected and not; each group has a
    reference sink keyed like its subscribers."""
    fwd = Forwarder(1, fanout)
    fwd.set_source(0, "pub")
    layouts = [Layout(111, 1, 4, "0"), Layout(109, None, 3, "1")]
    expected: list[tuple[Pair, Reference]] = []
    for g, layout in enumerate(layouts):
        key = key_for(profile, g)
        ref = Reference(profile, key)
        fwd.add_output(f"ref{g}", 0, layout, ref.sink)  # type: ignore[arg-type]
        for i in range(3):
            pair = Pair(connected=i != 1)
            pairs.append(pair)
            sink = fast_sink(session(profile, key), pair.tx, pair.addr)
            fwd.add_output(f"s{g}{i}", 0, layout, sink)
            expected.append((pair, ref))
    assert all((out.native is not None) is (fanout is not None) for out in fwd.outputs()[1:4])
    sent = packets(12)
    for p in sent:
        fwd.forward("pub", p)
    assert fwd.send_errors == 0
    for pair, ref in expected:
        assert len(ref.sent) == len(sent)
        assert pair.received(len(sent)) == ref.sent
    # Removing a subscriber closes its native sink; the others go on.
    for g in range(2):
        for i in range(3):
            fwd.remove_output(f"s{g}{i}", 0)
    assert fwd.output_count == 2


@needs_compiler
@pytest.mark.parametrize("profile", PROFILES, ids=["aes-cm-hmac", "aes-gcm"])
def test_native_sends_what_python_protects(profile: int, pairs: list[Pair]) -> None:
    fanout = native.load()
    assert fanout is not None
    run(fanout, profile, pairs)


@pytest.mark.parametrize("profile", PROFILES, ids=["aes-cm-hmac", "aes-gcm"])
def test_python_loop_sends_what_python_protects(profile: int, pairs: list[Pair]) -> None:
    run(None, profile, pairs)


def test_disabled_or_unbuildable_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert native.load(False) is None
    broken = tmp_path / "fanout.c"
    broken.write_text("this is not C;\n")
    monkeypatch.setattr(native, "SOURCE", broken)
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.load() is None
    assert "native fan-out unavailable" in caplog.text


@needs_compiler
@pytest.mark.parametrize("enabled", [True, False])
def test_worker_reports_its_fanout(enabled: bool) -> None:
    config = load_config(environ={}, overrides={"sfu.native": enabled})
    worker = Worker(config, "w", lambda frame: None)
    assert worker.load().fanout == ("native" if enabled else "python")
    assert (worker.fanout is not None) is enabled


@pytest.mark.turn
@pytest.mark.skipif(not turnserver_available(), reason="turnserver (coturn) not installed")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_relayed_sends_make_no_task_per_packet(transport: str) -> None:
    """A TURN-relayed subscriber: a task only while the channel is bound, then none."""
    with running_turnserver(turn_config(allow_loopback_peers=True)) as server:
        ice = ice_config(server.config, "p-relay").iceServers[0]
        loop = asyncio.get_running_loop()
        peer_transport, peer = await loop.create_datagram_endpoint(
            Inbox, local_addr=("127.0.0.1", 0)
        )
        relay, _ = await create_turn_endpoint(
            asyncio.DatagramProtocol,
            (server.host, server.port),
            ice.username,
            ice.credential,
            transport=transport,
        )
        tasks: set[asyncio.Task[None]] = set()
        try:
            send = relay_sender(relay, tasks)
            address = peer_transport.get_extra_info("sockname")
            send(b"first", address)
            assert len(tasks) == 1  # binding the channel
            assert await asyncio.wait_for(peer.queue.get(), 5) == b"first"
            await asyncio.sleep(0)
            for i in range(50):
                send(b"packet %d" % i, address)
                assert not tasks
            for i in range(50):
                assert await asyncio.wait_for(peer.queue.get(), 5) == b"packet %d" % i
        finally:
            relay.close()
            peer_transport.close()
            await asyncio.sleep(0.1)


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)
