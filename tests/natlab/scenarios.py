"""Runs one lab case: two clients at two sites, TURN on or off, mesh or SFU.

`raw_pair` is the lab's own proof (two aiortc peers whose SDP is handed over in-process,
no server involved); `server_pair` is the product path (tests/voiceclient.py against a real
`yahaml-voice serve` on the public segment). Both report the same `Outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aioice import stun
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)
from aiortc.mediastreams import MediaStreamError

from tests.natlab.netns import NetnsLoop
from tests.voiceclient import ToneTrack, VoiceClient

LOUD_RMS = 500.0
AUDIO_FRAMES = 25  # 0.5 s of 20 ms frames
# aioice retransmits a connectivity check 6 times (0.5 s doubling: ~64 s before a pair
# fails). 2 retransmissions (3.5 s) lets "no connection" end in ICE `failed` quickly; it
# applies to TURN-on and TURN-off cases alike (the lab loses no packets).
ICE_RETRANSMISSIONS = 2


def fast_ice_failure(retransmissions: int = ICE_RETRANSMISSIONS) -> int:
    """Set aioice's retransmission budget (process-wide); returns the previous one."""
    previous: int = stun.RETRY_MAX
    stun.RETRY_MAX = retransmissions
    return previous


async def until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` passes (state lives in aiortc objects)."""
    for _ in range(max(1, int(timeout / step))):
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


@dataclass
class Outcome:
    """What one case showed, per side: state, seconds to connected, pair types, audio."""

    label: str
    connected: bool = False
    states: list[str] = field(default_factory=list)
    # From the second participant's join (its socket opening, then POST join) to both ends
    # connected / both ends receiving the other's audio (first packet or decoded frame).
    seconds: float | None = None
    audio_seconds: float | None = None
    pairs: list[str] = field(default_factory=list)
    audio: list[int] = field(default_factory=list)
    error: str | None = None
    trace: str = ""  # a browser end's RTCPeerConnection events (tests/natlab/trace.js)
    # A browser case: seconds from launching the browser to its page signed in (not timed
    # in `seconds`, whose clock starts at the click on Join).
    browser_start: float | None = None

    @property
    def relayed(self) -> bool:
        return bool(self.pairs) and all("relay" in pair for pair in self.pairs)

    @property
    def audio_flows(self) -> bool:
        return len(self.audio) == 2 and min(self.audio) >= AUDIO_FRAMES


def selected_pair(pc: RTCPeerConnection) -> str:
    """`local>remote` candidate types of the nominated pair ("relay/tcp" for TURN-TCP).

    aiortc exposes no candidate-pair stats, so this reads aioice's nominated pair through
    aiortc's (pinned) private `_connection`.
    """
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is None:
            continue
        connection = getattr(dtls.transport, "_connection", None)
        pair = getattr(connection, "_nominated", {}).get(1)
        if pair is None:
            continue
        local = pair.local_candidate.type
        if local == "relay":
            inner = getattr(pair.protocol.transport, "_TurnTransport__inner_protocol", None)
            if inner is not None and "Tcp" in type(inner).__name__:
                local = "relay/tcp"
        return f"{local}>{pair.remote_candidate.type}"
    return "-"


async def _wait_connected(pc: RTCPeerConnection, timeout: float) -> str:
    """Final-ish connectionState: 'connected', 'failed'/'closed', or the state at timeout."""
    await until(lambda: pc.connectionState in ("connected", "failed", "closed"), timeout)
    return pc.connectionState


# --------------------------------------------------------------------------------- raw
class _RawPeer:
    """One aiortc peer living in a NetnsLoop; every method runs in that loop."""

    def __init__(self, servers: list[dict[str, Any]], relay_only: bool, tone: float) -> None:
        ice = [RTCIceServer(**server) for server in servers]
        policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice, iceTransportPolicy=policy))
        self.track = ToneTrack(tone)
        self.pc.addTrack(self.track)
        self.loud = 0
        self.tasks: list[asyncio.Task[None]] = []

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tasks.append(asyncio.create_task(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                samples = (await track.recv()).to_ndarray().astype(np.float32)
                if float(np.sqrt(np.mean(samples * samples))) >= LOUD_RMS:
                    self.loud += 1

    async def offer(self) -> dict[str, str]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": "offer"}

    async def answer(self, offer: dict[str, str]) -> dict[str, str]:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(**offer))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return {"sdp": self.pc.localDescription.sdp, "type": "answer"}

    async def accept(self, answer: dict[str, str]) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(**answer))

    async def wait(self, timeout: float) -> str:
        return await _wait_connected(self.pc, timeout)

    async def wait_audio(self, frames: int, timeout: float) -> int:
        await until(lambda: self.loud >= frames, timeout)
        return self.loud

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.track.stop()
        await self.pc.close()


async def raw_pair(
    label: str,
    loop_a: NetnsLoop,
    loop_b: NetnsLoop,
    servers: list[dict[str, Any]],
    relay_only: bool = False,
    timeout: float = 20.0,
) -> Outcome:
    """Two bare aiortc peers in two site namespaces; SDP handed over directly."""
    outcome = Outcome(label)

    async def make(tone: float) -> _RawPeer:
        return _RawPeer(servers, relay_only, tone)

    a = await loop_a.call(make(440.0))
    b = await loop_b.call(make(660.0))
    try:
        start = time.monotonic()
        offer = await loop_a.call(a.offer(), 30)
        answer = await loop_b.call(b.answer(offer), 30)
        await loop_a.call(a.accept(answer), 30)
        outcome.states = list(
            await asyncio.gather(loop_a.call(a.wait(timeout)), loop_b.call(b.wait(timeout)))
        )
        outcome.connected = all(state == "connected" for state in outcome.states)
        if outcome.connected:
            outcome.seconds = time.monotonic() - start
            outcome.pairs = [selected_pair(a.pc), selected_pair(b.pc)]
            outcome.audio = list(
                await asyncio.gather(
                    loop_a.call(a.wait_audio(AUDIO_FRAMES, 10)),
                    loop_b.call(b.wait_audio(AUDIO_FRAMES, 10)),
                )
            )
    finally:
        await asyncio.gather(loop_a.call(a.close(), 10), loop_b.call(b.close(), 10))
    return outcome


# ------------------------------------------------------------------------------ server
class LabClient(VoiceClient):
    """tests/voiceclient.py, optionally handing aiortc the TURN URLs of one transport only.

    aiortc uses just the first TURN URL of iceServers (a browser tries them all), so a
    client at a UDP-blocked site keeps the `?transport=tcp` one, where Chromium ends up.
    """

    def __init__(self, *args: Any, turn_transport: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.turn_transport = turn_transport

    def _ice_config(self) -> RTCConfiguration:
        config = super()._ice_config()
        if self.turn_transport and config.iceServers:
            wanted = f"transport={self.turn_transport}"
            for server in config.iceServers:
                urls = server.urls if isinstance(server.urls, list) else [server.urls]
                server.urls = [u for u in urls if not u.startswith("turn") or wanted in u]
        return config

    async def _on_mode(self, mode: str, epoch: int) -> None:
        # The joiner that tips a room onto the SFU gets mode "sfu" in its join answer AND
        # a roomModeChanged for the same epoch; a second offer would orphan the first
        # answer (reported to the owner of tests/voiceclient.py).
        if (mode, epoch) == (self.mode, self.epoch) and (mode != "sfu" or "sfu" in self.peers):
            return
        await super()._on_mode(mode, epoch)


async def join_room(client: VoiceClient, callsign: str, room: str) -> None:
    await client.login(callsign)
    await _connect_join(client, room)


async def _connect_join(client: VoiceClient, room: str) -> None:
    await client.connect()
    await client.join(room)


async def client_result(
    client: VoiceClient, remote: str, timeout: float
) -> tuple[str, str, float | None]:
    """(final state, selected pair, time.monotonic() when it was first seen connected)."""
    deadline = time.monotonic() + timeout
    await until(lambda: remote in client.peers, timeout, step=0.01)
    peer = client.peers.get(remote)
    if peer is None:
        return "no-peer", "-", None
    await until(
        lambda: peer.pc.connectionState in ("connected", "failed", "closed"),
        max(0.1, deadline - time.monotonic()),
        step=0.01,
    )
    state = peer.pc.connectionState
    at = time.monotonic() if state == "connected" else None
    return state, selected_pair(peer.pc), at


def first_audio_at(client: VoiceClient, remote: str) -> float | None:
    """time.monotonic() of the first frame decoded from `remote` (None: nothing yet)."""
    peer = client.peers.get(remote)
    times = [a.first_at for a in peer.audio if a.first_at is not None] if peer else []
    return min(times) if times else None


async def _client_audio(client: VoiceClient, remote: str, frames: int, timeout: float) -> int:
    await until(lambda: client.heard_loud(remote) >= frames, timeout)
    return client.heard_loud(remote)


async def server_pair(
    label: str,
    url: str,
    room: str,
    loop_a: NetnsLoop,
    loop_b: NetnsLoop,
    sfu: bool = False,
    turn_transport_a: str | None = None,
    turn_transport_b: str | None = None,
    timeout: float = 20.0,
) -> Outcome:
    """Two VoiceClients (tests/voiceclient.py) meet through the lab's server."""
    outcome = Outcome(label)

    async def make(tone: float, transport: str | None) -> VoiceClient:
        return LabClient(url, tone=tone, turn_transport=transport)

    a = await loop_a.call(make(440.0, turn_transport_a))
    b = await loop_b.call(make(660.0, turn_transport_b))
    try:
        await loop_a.call(join_room(a, "W1AW", room), 30)
        await loop_b.call(b.login("G4ABC"), 30)
        start = time.monotonic()  # the second operator joins: socket, then seat
        await loop_b.call(_connect_join(b, room), 30)
        assert a.participant_id and b.participant_id
        remote_a = "sfu" if sfu else b.participant_id
        remote_b = "sfu" if sfu else a.participant_id
        (state_a, pair_a, at_a), (state_b, pair_b, at_b) = await asyncio.gather(
            loop_a.call(client_result(a, remote_a, timeout)),
            loop_b.call(client_result(b, remote_b, timeout)),
        )
        outcome.states = [state_a, state_b]
        outcome.connected = all(state == "connected" for state in outcome.states)
        if outcome.connected and at_a is not None and at_b is not None:
            outcome.seconds = max(at_a, at_b) - start
            outcome.pairs = [pair_a, pair_b]
            outcome.audio = list(
                await asyncio.gather(
                    loop_a.call(_client_audio(a, remote_a, AUDIO_FRAMES, 10)),
                    loop_b.call(_client_audio(b, remote_b, AUDIO_FRAMES, 10)),
                )
            )
            heard = [first_audio_at(a, remote_a), first_audio_at(b, remote_b)]
            if all(t is not None for t in heard):
                outcome.audio_seconds = max(heard) - start  # type: ignore[type-var]
    finally:
        await asyncio.gather(
            loop_a.call(leave_and_close(a), 15),
            loop_b.call(leave_and_close(b), 15),
            return_exceptions=True,
        )
    return outcome


async def leave_and_close(client: VoiceClient) -> None:
    with contextlib.suppress(Exception):
        await client.leave()
    await client.close()
