"""The one Python client of yahaml-voice, used by tests and benchmarks.

It speaks the real protocol: REST with a bearer token, the `/ws` WebSocket, and aiortc
peer connections negotiated through `signal` frames on the open socket (as the browser
client does; `POST .../signal` without a socket, or with `ws_signals=False`). In mesh mode the newcomer offers to the
peers listed in its join answer (so two sides never offer at once); it answers offers it
receives. In SFU mode it negotiates one connection with the peer `sfu` per the media
contract in docs/architecture.md.

`restart_ice()` restarts ICE in place (new sockets, new ice-ufrag, the same connection), as
a browser's `restartIce()` does on a network change; a peer's restart offer is answered on
the existing connection. Every TURN URL of the ICE servers is tried (one relay candidate
each), not just aiortc's first (yahaml_voice.sfu.aiortc_private.gather_every_turn_url).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp
from av import AudioFrame

from yahaml_voice.sfu.aiortc_private import gather_every_turn_url
from yahaml_voice.sfu.icerestart import IceRestart, restart_credentials

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
SFU = "sfu"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
# RFC 6464 level (-dBov) at or below which a packet carries speech (sfu/slots.py's bound).
LOUD_LEVEL = 50


class ApiFailure(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class ToneTrack(MediaStreamTrack):
    """A microphone that says a steady tone (or silence while `muted`), paced in real time."""

    kind = "audio"

    def __init__(
        self, frequency: float = 440.0, amplitude: float = 0.3, parent: ToneTrack | None = None
    ) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self.muted = False
        self._pts = 0
        self._start: float | None = None
        self.sent_frames = 0
        self._parent = parent

    def copy(self) -> ToneTrack:
        """A track of its own for one peer connection, muted with this one.

        aiortc stops a sender's track when the sender ends, so one track shared by several
        connections would go silent for all of them when any one closes."""
        return ToneTrack(self.frequency, self.amplitude, parent=self)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(FRAME_SAMPLES) + self._pts) / SAMPLE_RATE
        muted = self.muted or (self._parent is not None and self._parent.muted)
        amplitude = 0.0 if muted else self.amplitude
        samples = (amplitude * 32767 * np.sin(2 * math.pi * self.frequency * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._pts += FRAME_SAMPLES
        self.sent_frames += 1
        if self._parent is not None:
            self._parent.sent_frames += 1
        return frame


def tap_rtp(pc: RTCPeerConnection, on_rtp: Callable[[bytes], None]) -> None:
    """Hand every RTP datagram of `pc`'s bundled transport to `on_rtp`, still SRTP-protected,
    before aioice's queue and aiortc's receivers see it (so no jitter buffer, no decoder);
    STUN, DTLS and RTCP go on as usual. Call once the connection is connected."""
    dtls = pc.getTransceivers()[0].receiver.transport
    protocol = dtls.transport._connection._nominated[1].protocol
    original = protocol.datagram_received

    def on_datagram(data: bytes, addr: Any) -> None:
        if len(data) >= 12 and 127 < data[0] < 192 and not 192 <= data[1] <= 223:
            on_rtp(data)
        else:
            original(data, addr)

    protocol.datagram_received = on_datagram  # type: ignore[method-assign,assignment]


class PacketCounter:
    """Counts RTP packets per second from their plain-text headers alone (no SRTP unprotect,
    no decoding), so one process can listen for a hundred peers.

    `seconds[int(time.monotonic())]` is `[received, lost, loud]`: unique packets that
    arrived in that second, sequence-number gaps detected in it (per SSRC, a gap is
    counted when the packet after it arrives and taken back if a straggler fills it), and
    packets whose audio-level extension says speech. CLOCK_MONOTONIC is shared by all
    processes of the machine, so seconds line up with an orchestrator's clock.
    """

    MAX_MISSING = 256  # remembered gap sequence numbers per SSRC (late arrivals)

    def __init__(self) -> None:
        self.seconds: dict[int, list[int]] = {}
        self.level_id: int | None = None
        self._highest: dict[int, int] = {}
        self._missing: dict[int, set[int]] = {}

    def attach(self, pc: RTCPeerConnection) -> None:
        """Count `pc`'s packets from now on; sequence state starts afresh (a new connection)."""
        self._highest.clear()
        self._missing.clear()
        self.level_id = None
        for transceiver in pc.getTransceivers():
            for ext in transceiver._headerExtensions:
                if ext.uri == AUDIO_LEVEL_URI:
                    self.level_id = ext.id
        tap_rtp(pc, self.on_rtp)

    def on_rtp(self, data: bytes) -> None:
        second = int(time.monotonic())
        bucket = self.seconds.get(second)
        if bucket is None:
            bucket = self.seconds[second] = [0, 0, 0]
        ssrc = int.from_bytes(data[8:12], "big")
        seq = (data[2] << 8) | data[3]
        highest = self._highest.get(ssrc)
        if highest is None:
            self._highest[ssrc] = seq
            self._missing[ssrc] = set()
        else:
            delta = (seq - highest) & 0xFFFF
            if delta == 0:
                return  # duplicate
            if delta < 0x8000:
                extended = highest + delta
                missing = self._missing[ssrc]
                if delta > 1:
                    bucket[1] += delta - 1
                    if len(missing) + delta - 1 <= self.MAX_MISSING:
                        missing.update(range(highest + 1, extended))
                self._highest[ssrc] = extended
            else:
                extended = highest - (0x10000 - delta)
                missing = self._missing[ssrc]
                if extended not in missing:
                    return  # duplicate (or older than we remember)
                missing.discard(extended)
                bucket[1] -= 1
        bucket[0] += 1
        if self.level_id is not None and data[0] & 0x10:
            level = self._level(data)
            if level is not None and level <= LOUD_LEVEL:
                bucket[2] += 1

    def _level(self, data: bytes) -> int | None:
        """The audio level from an RFC 8285 one-byte-header extension block."""
        pos = 12 + 4 * (data[0] & 0x0F)
        if data[pos : pos + 2] != b"\xbe\xde":
            return None
        end = min(len(data), pos + 4 + 4 * int.from_bytes(data[pos + 2 : pos + 4], "big"))
        pos += 4
        while pos < end:
            head = data[pos]
            if head == 0:
                pos += 1
                continue
            if head >> 4 == self.level_id and pos + 1 < end:
                return data[pos + 1] & 0x7F
            pos += 2 + (head & 0x0F)
        return None


def dominant_tone(samples: Any, channels: int, rate: int) -> int:
    """The strongest frequency of one decoded frame (interleaved samples), to 10 Hz."""
    mono = np.asarray(samples).reshape(-1)[:: max(channels, 1)]
    size = 8 * len(mono)  # zero-padded: bins of ~6 Hz for a 20 ms frame
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono)), n=size))
    peak = int(np.argmax(spectrum[1:]) + 1)
    return int(round(peak * rate / size / 10.0) * 10)


@dataclass
class AudioStats:
    """What one remote track delivered."""

    frames: int = 0
    loud_frames: int = 0
    first_at: float | None = None
    first_loud_at: float | None = None
    last_loud_at: float | None = None
    # Loud frames by dominant frequency (rounded to 10 Hz): which tone was heard, when the
    # talkers say distinct tones. `tone_times[f]`: the last time tone f was heard.
    tones: dict[int, int] = field(default_factory=dict)
    tone_times: dict[int, float] = field(default_factory=dict)


@dataclass
class Peer:
    """One peer connection: to another participant (mesh) or to the SFU."""

    remote: str
    pc: RTCPeerConnection
    audio: list[AudioStats] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # An ICE restart in progress on this connection (ours or the remote's).
    restart: IceRestart | None = None
    restarts: int = 0

    def frames(self) -> int:
        return sum(a.frames for a in self.audio)

    def loud_frames(self) -> int:
        return sum(a.loud_frames for a in self.audio)


class VoiceClient:
    def __init__(
        self,
        base_url: str,
        *,
        publish: bool = True,
        tone: float = 440.0,
        auto_media: bool = True,
        loud_threshold: float = 500.0,
        http: httpx.AsyncClient | None = None,
        count_only: bool = False,
        keep_event: Callable[[dict[str, Any]], bool] | None = None,
        ws_signals: bool = True,
        roster_batch: bool = False,
    ) -> None:
        gather_every_turn_url()
        self.base_url = base_url.rstrip("/")
        # A load generator shares one HTTP client per server among many VoiceClients
        # (creating one loads a CA bundle: too slow and too big by the thousand).
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(base_url=self.base_url, timeout=15.0)
        self.token: str | None = None
        self.participant_id: str | None = None
        self.callsign: str | None = None
        self.room_id: str | None = None
        self.join_mode = "operator"
        self.join_answer: dict[str, Any] | None = None
        self.mode = "mesh"
        self.epoch = 0
        self.events: list[dict[str, Any]] = []
        self._event_waiters: list[
            tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]
        ] = []
        self.ws: Any = None
        self._ws_task: asyncio.Task[None] | None = None
        self.publish = publish
        self.track: ToneTrack | None = ToneTrack(tone) if publish else None
        self.auto_media = auto_media
        self.loud_threshold = loud_threshold
        self.peers: dict[str, Peer] = {}
        self.slots: dict[int, str | None] = {}
        self.closed = False
        self._background: set[asyncio.Task[None]] = set()
        # Tests of the server's role checks set this to send audio even as a listener.
        self.ignore_role = False
        # The latest GET /api/ice-servers answer (fresher than the join answer's servers).
        self.ice: dict[str, Any] | None = None
        self.ice_renewals = 0
        self._ice_task: asyncio.Task[None] | None = None
        # Load generators: count the SFU's packets off the socket instead of decoding them
        # (`counter`, `media_at`: when the SFU connection last became connected) ...
        self.counter: PacketCounter | None = PacketCounter() if count_only else None
        self.media_at: float | None = None
        # ... and keep only the events they look at (waiters still see every event);
        # `event_times[i]` is when `events[i]` arrived (time.monotonic()).
        self.keep_event = keep_event
        self.event_times: list[float] = []
        # Signals go as frames on the open socket (answered ack/error by id) unless False.
        self.ws_signals = ws_signals
        self._requests: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._next_request = 0
        # Subscribe with rosterBatch: roster changes of big rooms come as rosterBatch frames.
        self.roster_batch = roster_batch
        # The other members of the room as the socket's roster events tell them, on top of
        # the join answer (`roster_at`: time.monotonic() of the last change).
        self.roster: set[str] = set()
        self.roster_at = 0.0
        self._roster_room: str | None = None
        self._roster_log: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ REST
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def request(self, method: str, path: str, json_body: Any = None, **kw: Any) -> Any:
        response = await self.http.request(
            method, path, json=json_body, headers=self._headers(), **kw
        )
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiFailure(response.status_code, body)
        return body

    async def login(self, callsign: str) -> dict[str, Any]:
        answer = await self.request("POST", "/api/sessions", {"callsign": callsign})
        self.use_token(answer["token"])
        self.participant_id = answer["participantId"]
        self.callsign = answer["callsign"]
        return answer

    def use_token(self, token: str) -> None:
        self.token = token
        if self.participant_id is None:
            import base64

            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            self.participant_id = claims["sub"]
            self.callsign = claims["name"]

    async def join(self, room_id: str, join_mode: str = "operator") -> dict[str, Any]:
        # Roster events that arrive while the join is under way are applied on top of the
        # answer's peers, in order: the roster converges whatever the answer reflected.
        self._roster_room, self._roster_log = room_id, []
        answer = await self.request(
            "POST", f"/api/voice-rooms/{room_id}/join", {"joinMode": join_mode}
        )
        self._start_roster(answer)
        self.room_id = room_id
        self.join_mode = join_mode
        self.join_answer = answer
        self.mode = answer["mode"]
        self.epoch = answer.get("epoch", 0)
        self.ice = None
        self._renew_ice_in(answer.get("iceTtl"))
        if self.auto_media:
            if self.mode == "sfu":
                await self.connect_sfu()
            else:
                for peer in answer["peers"]:
                    await self.offer_to(peer["id"])
        return answer

    async def leave(self) -> None:
        self._renew_ice_in(None)
        if self.room_id:
            await self.request("POST", f"/api/voice-rooms/{self.room_id}/leave")
        await self.close_peers()

    async def renew_ice(self) -> dict[str, Any]:
        """Fresh TURN credentials (only while holding a seat): new connections use them."""
        answer: dict[str, Any] = await self.request("GET", "/api/ice-servers")
        self.ice = answer
        self.ice_renewals += 1
        return answer

    def _renew_ice_in(self, ttl: float | None) -> None:
        """Renew the credentials at 80 % of `ttl` (at most 2 s before it ends), as the
        browser client does (None: stop)."""
        if self._ice_task is not None:
            self._ice_task.cancel()
            self._ice_task = None
        if ttl and ttl > 0 and not self.closed:
            self._ice_task = asyncio.create_task(self._ice_renewer(float(ttl)))

    async def _ice_renewer(self, ttl: float) -> None:
        while True:
            await asyncio.sleep(max(1.0, min(0.8 * ttl, ttl - 2.0)))
            try:
                ttl = float((await self.renew_ice()).get("ttl") or ttl)
            except (ApiFailure, httpx.HTTPError) as exc:
                log.info("%s: renewing TURN credentials failed: %s", self.callsign, exc)
                ttl = 12.5  # retry in 10 s

    async def signal(self, type_: str, data: Any, to: str | None = None) -> dict[str, Any]:
        """Send a signal: a `signal` frame on the open socket (its ack as SignalAnswer, its
        error frame as ApiFailure with the REST status), else POST .../signal."""
        assert self.room_id
        body: dict[str, Any] = {"type": type_, "data": data}
        if to is not None:
            body["to"] = to
        if not self.ws_signals or self.ws is None or self._ws_task is None or self._ws_task.done():
            return await self.request("POST", f"/api/voice-rooms/{self.room_id}/signal", body)
        self._next_request += 1
        request = f"s{self._next_request}"
        frame = {"type": "signal", "id": request, "data": {"roomId": self.room_id, **body}}
        if asyncio.current_task() is self._ws_task:
            # Answering a frame from within the socket's reader: its ack cannot be read
            # until we return, so do not wait for it (an error frame is logged).
            self._requests[request] = asyncio.get_running_loop().create_future()
            self._requests[request].add_done_callback(self._log_refusal)
            await self.send_ws(frame)
            return {"success": True, "delivered": None}
        future = self._requests[request] = asyncio.get_running_loop().create_future()
        try:
            await self.send_ws(frame)
            reply = await asyncio.wait_for(future, 15.0)
        finally:
            self._requests.pop(request, None)
        if reply["type"] == "error":
            data = reply["data"]
            raise ApiFailure(data.get("status") or 0, {"error": data["code"], **data})
        return {"success": True, "delivered": reply["data"]["delivered"]}

    def _log_refusal(self, future: asyncio.Future[dict[str, Any]]) -> None:
        if not future.cancelled() and future.result()["type"] == "error":
            log.info("%s: signal refused: %s", self.callsign, future.result()["data"])

    def _reply(self, event: dict[str, Any]) -> bool:
        """Whether `event` answers one of our requests (then it resolves it)."""
        request = event.get("id")
        if event.get("type") not in ("ack", "error") or not isinstance(request, str):
            return False
        future = self._requests.pop(request, None)
        if future is None:
            return False
        if not future.done():
            future.set_result(event)
        return True

    # ------------------------------------------------------------------ roster
    def _start_roster(self, answer: dict[str, Any]) -> None:
        self.roster = {p["id"] for p in answer["peers"]}
        self.roster_at = time.monotonic()
        log_, self._roster_log = self._roster_log or [], None
        for frame in log_:
            self._apply_roster(frame)

    def _on_roster(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        if self._roster_room is None or data.get("roomId") != self._roster_room:
            return
        frames = data.get("frames") or [] if event["type"] == "rosterBatch" else [event]
        for frame in frames:
            if self._roster_log is not None:
                self._roster_log.append(frame)
            else:
                self._apply_roster(frame)

    def _apply_roster(self, frame: dict[str, Any]) -> None:
        data = frame["data"]
        before = len(self.roster)
        if frame["type"] == "participantJoined":
            if data["participant"]["id"] != self.participant_id:
                self.roster.add(data["participant"]["id"])
        else:
            self.roster.discard(data["participantId"])
        if len(self.roster) != before:
            self.roster_at = time.monotonic()

    async def set_muted(self, muted: bool) -> None:
        assert self.room_id
        if self.track:
            self.track.muted = muted
        await self.request("POST", f"/api/voice-rooms/{self.room_id}/mute", {"isMuted": muted})

    # ------------------------------------------------------------------ net control
    def _room_path(self, room_id: str | None, tail: str) -> str:
        room = room_id or self.room_id
        assert room
        return f"/api/voice-rooms/{room}/{tail}"

    async def floor(self, room_id: str | None = None) -> dict[str, Any]:
        """GET the room's FloorState."""
        answer: dict[str, Any] = await self.request("GET", self._room_path(room_id, "floor"))
        return answer

    async def floor_action(
        self, action: str, body: dict[str, Any] | None = None, room_id: str | None = None
    ) -> dict[str, Any]:
        """POST floor/<action> (request, release, grant, revoke, queue, clear, open,
        close); the new FloorState."""
        answer: dict[str, Any] = await self.request(
            "POST", self._room_path(room_id, f"floor/{action}"), body
        )
        return answer

    async def request_floor(self, kind: str = "comment") -> dict[str, Any]:
        return await self.floor_action("request", {"kind": kind})

    async def grant(self, participant_id: str | None = None) -> dict[str, Any]:
        return await self.floor_action("grant", {"participantId": participant_id})

    async def revoke(self, participant_id: str | None = None) -> dict[str, Any]:
        return await self.floor_action("revoke", {"participantId": participant_id})

    async def moderate(
        self, action: str, body: dict[str, Any], room_id: str | None = None
    ) -> dict[str, Any]:
        """POST moderation/<action> (mute, remove, ban, unban, appoint)."""
        answer: dict[str, Any] = await self.request(
            "POST", self._room_path(room_id, f"moderation/{action}"), body
        )
        return answer

    async def wait_floor(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first floorChanged (seen so far or arriving) whose FloorState passes `check`."""
        event = await self.wait_event(
            "floorChanged", timeout=timeout, since=0, predicate=lambda e: check(e["data"]["floor"])
        )
        floor: dict[str, Any] = event["data"]["floor"]
        return floor

    # ------------------------------------------------------------------ WebSocket
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + f"/ws?token={self.token}"

    async def connect(self, timeout: float = 10.0) -> dict[str, Any]:
        """Open /ws and wait for `connected`."""
        since = len(self.events)
        self.ws = await websockets.connect(self.ws_url(), max_size=2**20, open_timeout=timeout)
        self._ws_task = asyncio.create_task(self._ws_loop(self.ws))
        connected = await self.wait_event("connected", timeout=timeout, since=since)
        if self.roster_batch:
            await self.send_ws({"type": "subscribe", "channel": "voice", "rosterBatch": True})
        return connected

    async def reconnect(self, base_url: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Reopen /ws (on another server process if `base_url` is given) and rejoin the room,
        which keeps the seat within the grace period. Peer connections stay up: media never
        went through the server. Returns the join answer (or `connected` if in no room)."""
        if base_url is not None and base_url.rstrip("/") != self.base_url:
            if self._own_http:
                await self.http.aclose()
            self.base_url = base_url.rstrip("/")
            self.http = httpx.AsyncClient(base_url=self.base_url, timeout=15.0)
            self._own_http = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._ws_task:
            with contextlib.suppress(BaseException):
                await self._ws_task
        connected = await self.connect(timeout)
        if self.room_id is None:
            return connected
        answer: dict[str, Any] = await self.request(
            "POST", f"/api/voice-rooms/{self.room_id}/join", {"joinMode": self.join_mode}
        )
        self.join_answer = answer
        self.ice = None
        self._renew_ice_in(answer.get("iceTtl"))
        mode, epoch = answer["mode"], answer.get("epoch", 0)
        if (mode, epoch) != (self.mode, self.epoch):
            if self.auto_media:
                await self._on_mode(mode, epoch)
            else:
                self.mode, self.epoch = mode, epoch
        return answer

    async def _ws_loop(self, ws: Any) -> None:
        try:
            async for raw in ws:
                event = json.loads(raw)
                if self._reply(event):
                    continue
                if event.get("type") in ("participantJoined", "participantLeft", "rosterBatch"):
                    self._on_roster(event)
                if self.keep_event is None or self.keep_event(event):
                    self.events.append(event)
                    self.event_times.append(time.monotonic())
                for predicate, future in list(self._event_waiters):
                    if not future.done() and predicate(event):
                        future.set_result(event)
                try:
                    await self._on_event(event)
                except Exception:
                    log.exception("%s: handling %s failed", self.callsign, event.get("type"))
        except websockets.ConnectionClosed:
            pass
        finally:
            for future in self._requests.values():
                if not future.done():
                    future.set_exception(ConnectionError("the socket closed"))
            self._requests.clear()
            self.events.append(
                {"type": "_closed", "data": {"code": ws.close_code, "reason": ws.close_reason}}
            )
            self.event_times.append(time.monotonic())
            for predicate, future in list(self._event_waiters):
                if not future.done() and predicate(self.events[-1]):
                    future.set_result(self.events[-1])

    async def send_ws(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def wait_event(
        self,
        type_: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 10.0,
        since: int = 0,
    ) -> dict[str, Any]:
        """The first event of `type_` (from index `since`) matching `predicate`."""

        def match(event: dict[str, Any]) -> bool:
            return event.get("type") == type_ and (predicate is None or predicate(event))

        for event in self.events[since:]:
            if match(event):
                return event
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry = (match, future)
        self._event_waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._event_waiters.remove(entry)

    async def _on_event(self, event: dict[str, Any]) -> None:
        type_ = event.get("type")
        data = event.get("data") or {}
        if not self.auto_media:
            return
        if type_ == "signal" and data.get("roomId") == self.room_id:
            await self._on_signal(data["message"])
        elif type_ == "participantLeft" and data.get("roomId") == self.room_id:
            peer = self.peers.pop(data["participantId"], None)
            if peer:
                await self._close_peer(peer)
        elif type_ == "roomModeChanged" and data.get("roomId") == self.room_id:
            await self._on_mode(data["mode"], data.get("epoch", 0))
        elif type_ == "speakerSlots" and data.get("roomId") == self.room_id:
            self.slots = {s["index"]: s.get("participantId") for s in data["slots"]}

    async def _on_mode(self, mode: str, epoch: int) -> None:
        if (mode, epoch) == (self.mode, self.epoch) and (mode == "mesh" or SFU in self.peers):
            # The join answer already told us (the joiner who tipped the room over).
            return
        previous_mode, self.mode, self.epoch = self.mode, mode, epoch
        if mode == "sfu":
            await self.connect_sfu()
            if previous_mode == "mesh":
                # Close mesh connections only once the SFU carries audio (or 3 s of silence).
                self._background.add(asyncio.create_task(self._close_mesh_when_sfu_ready()))
        else:
            sfu = self.peers.pop(SFU, None)
            if sfu:
                await self._close_peer(sfu)

    async def _close_mesh_when_sfu_ready(self) -> None:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            sfu = self.peers.get(SFU)
            if sfu and sfu.frames() > 0:
                break
            await asyncio.sleep(0.05)
        for remote in [r for r in self.peers if r != SFU]:
            await self._close_peer(self.peers.pop(remote))

    # ------------------------------------------------------------------ media
    def _ice_config(self) -> RTCConfiguration:
        servers = []
        source = self.ice or self.join_answer or {}
        for server in source.get("iceServers", []):
            servers.append(
                RTCIceServer(
                    urls=server["urls"],
                    username=server.get("username"),
                    credential=server.get("credential"),
                )
            )
        # force_relay on the server: relay candidates only, as a browser would.
        relay = (self.join_answer or {}).get("iceTransportPolicy") == "relay"
        policy = RTCIceTransportPolicy.RELAY if relay else RTCIceTransportPolicy.ALL
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)

    def _new_pc(self, remote: str) -> Peer:
        pc = RTCPeerConnection(self._ice_config())
        peer = Peer(remote=remote, pc=pc)

        counter = self.counter if remote == SFU else None
        if counter is not None:

            @pc.on("connectionstatechange")
            def on_state() -> None:
                if pc.connectionState == "connected" and self.peers.get(remote) is peer:
                    counter.attach(pc)
                    self.media_at = time.monotonic()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind != "audio" or counter is not None:
                return
            stats = AudioStats()
            peer.audio.append(stats)
            peer.tasks.append(asyncio.create_task(self._consume(track, stats)))

        self.peers[remote] = peer
        return peer

    async def _consume(self, track: MediaStreamTrack, stats: AudioStats) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                stats.frames += 1
                if stats.first_at is None:
                    stats.first_at = now
                samples = frame.to_ndarray().astype(np.float32)
                if float(np.sqrt(np.mean(samples * samples))) >= self.loud_threshold:
                    stats.loud_frames += 1
                    stats.last_loud_at = now
                    if stats.first_loud_at is None:
                        stats.first_loud_at = now
                    tone = dominant_tone(samples, len(frame.layout.channels), frame.sample_rate)
                    stats.tones[tone] = stats.tones.get(tone, 0) + 1
                    stats.tone_times[tone] = now

    @property
    def sends_audio(self) -> bool:
        """A track, and a seat that may publish (canPublish), unless told to ignore it."""
        participant = (self.join_answer or {}).get("participant") or {}
        return self.track is not None and (self.ignore_role or participant.get("canPublish", True))

    async def offer_to(self, remote: str) -> Peer:
        peer = self._new_pc(remote)
        if self.track is not None and self.sends_audio:
            peer.pc.addTrack(self.track.copy())
        else:
            peer.pc.addTransceiver("audio", direction="recvonly")
        offer = await peer.pc.createOffer()
        await peer.pc.setLocalDescription(offer)
        desc = peer.pc.localDescription
        await self.signal("offer", {"type": desc.type, "sdp": desc.sdp}, to=remote)
        return peer

    async def connect_sfu(self) -> Peer:
        """One connection to the SFU: `slots` recvonly m-lines, then a sendonly mic."""
        old = self.peers.pop(SFU, None)
        if old:
            await self._close_peer(old)
        peer = self._new_pc(SFU)
        slots = int(((self.join_answer or {}).get("sfu") or {}).get("slots", 3))
        for _ in range(slots):
            peer.pc.addTransceiver("audio", direction="recvonly")
        if self.track is not None and self.sends_audio:
            peer.pc.addTransceiver(self.track.copy(), direction="sendonly")
        offer = await peer.pc.createOffer()
        await peer.pc.setLocalDescription(offer)
        desc = peer.pc.localDescription
        await self.signal("offer", {"type": desc.type, "sdp": desc.sdp}, to=SFU)
        return peer

    async def restart_ice(self, remote: str | None = None, timeout: float = 20.0) -> bool:
        """Restart ICE on the connection to `remote` (default: the SFU in SFU mode, else
        every peer) as a browser's restartIce() does: new sockets (a new local address),
        an offer with a new ice-ufrag/pwd and the same m-lines on the same connection.
        Waits until the new path is nominated; whether every restart found one."""
        if remote is not None:
            remotes = [remote]
        elif self.mode == "sfu" and SFU in self.peers:
            remotes = [SFU]
        else:
            remotes = list(self.peers)
        started = [await self._offer_restart(self.peers[r]) for r in remotes if r in self.peers]
        waits = [self._restarted(peer, restart) for peer, restart in started]
        return all(await asyncio.wait_for(asyncio.gather(*waits), timeout))

    async def _offer_restart(self, peer: Peer) -> tuple[Peer, IceRestart]:
        if peer.restart is not None:
            await peer.restart.stop()
        restart = peer.restart = await IceRestart.offer(peer.pc, self._ice_config().iceServers)
        peer.restarts += 1
        desc = peer.pc.localDescription
        await self.signal("offer", {"type": desc.type, "sdp": desc.sdp}, to=peer.remote)
        return peer, restart

    async def _restarted(self, peer: Peer, restart: IceRestart) -> bool:
        ok = await restart.done()
        if ok and self.counter is not None and peer.remote == SFU:
            self.counter.attach(peer.pc)  # the counting tap sits on the socket: the new one
        return ok

    async def _on_signal(self, message: dict[str, Any]) -> None:
        remote = message["from"]
        type_ = message["type"]
        data = message.get("data")
        current = self.peers.get(remote)
        if (
            type_ == "offer"
            and current is not None
            and current.pc.connectionState == "connected"
            and current.pc.signalingState == "stable"
        ):
            remote_sdp = current.pc.remoteDescription
            credentials = restart_credentials(remote_sdp.sdp if remote_sdp else None, data["sdp"])
            if credentials is not None:  # the peer restarted ICE: same connection
                await self._answer_restart(current, data["sdp"], credentials)
                return
        if type_ == "offer":
            old = self.peers.pop(remote, None)
            if old:
                await self._close_peer(old)
            peer = self._new_pc(remote)
            await peer.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
            if self.track is not None and self.sends_audio:
                for transceiver in peer.pc.getTransceivers():
                    if transceiver.kind == "audio":
                        transceiver.sender.replaceTrack(self.track.copy())
                        transceiver.direction = "sendrecv"
                        break
            answer = await peer.pc.createAnswer()
            await peer.pc.setLocalDescription(answer)
            desc = peer.pc.localDescription
            await self.signal("answer", {"type": desc.type, "sdp": desc.sdp}, to=remote)
        elif type_ == "answer":
            peer = self.peers.get(remote)
            if peer and peer.pc.signalingState == "have-local-offer":
                if peer.restart is not None and peer.restart.pending_answer:
                    await peer.restart.accept(data["sdp"])
                else:
                    await peer.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
        elif type_ == "ice-candidate":
            peer = self.peers.get(remote)
            if peer and data and data.get("candidate"):
                sdp = data["candidate"]
                candidate = candidate_from_sdp(
                    sdp.split(":", 1)[1] if sdp.startswith("candidate:") else sdp
                )
                candidate.sdpMid = data.get("sdpMid")
                candidate.sdpMLineIndex = data.get("sdpMLineIndex")
                await peer.pc.addIceCandidate(candidate)

    async def _answer_restart(self, peer: Peer, sdp: str, credentials: tuple[str, str]) -> None:
        if peer.restart is not None:
            await peer.restart.stop()
        servers = self._ice_config().iceServers
        restart = peer.restart = await IceRestart.answering(peer.pc, credentials, servers)
        peer.restarts += 1
        await peer.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await peer.pc.setLocalDescription(await peer.pc.createAnswer())
        restart.start()
        desc = peer.pc.localDescription
        await self.signal("answer", {"type": desc.type, "sdp": desc.sdp}, to=peer.remote)

    async def _close_peer(self, peer: Peer) -> None:
        if peer.restart is not None:
            await peer.restart.stop()
        for task in peer.tasks:
            task.cancel()
        await peer.pc.close()
        for task in peer.tasks:
            with contextlib.suppress(BaseException):
                await task

    async def close_peers(self) -> None:
        for remote in list(self.peers):
            await self._close_peer(self.peers.pop(remote))

    # ------------------------------------------------------------------ helpers for tests
    def heard_frames(self, remote: str | None = None) -> int:
        peers = [self.peers[remote]] if remote else list(self.peers.values())
        return sum(p.frames() for p in peers if p)

    def heard_loud(self, remote: str | None = None) -> int:
        peers = [self.peers.get(remote)] if remote else list(self.peers.values())
        return sum(p.loud_frames() for p in peers if p)

    def heard_tone(self, frequency: float, since: float = 0.0, tolerance: float = 30.0) -> int:
        """Loud frames whose dominant frequency is within `tolerance` Hz of `frequency`
        (only tones last heard after `since`, a time.monotonic() value, count)."""
        total = 0
        for peer in self.peers.values():
            for stats in peer.audio:
                for tone, count in stats.tones.items():
                    if abs(tone - frequency) <= tolerance and stats.tone_times[tone] >= since:
                        total += count
        return total

    async def wait_tone(self, frequency: float, frames: int = 15, timeout: float = 20.0) -> float:
        """Wait until `frames` more loud frames of `frequency` arrived; the seconds it took."""
        start_count = self.heard_tone(frequency)
        start = time.monotonic()
        while self.heard_tone(frequency) - start_count < frames:
            if time.monotonic() - start > timeout:
                raise TimeoutError(
                    f"{self.callsign}: {self.heard_tone(frequency) - start_count}/{frames} "
                    f"frames of {frequency} Hz in {timeout}s"
                )
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    async def wait_audio(
        self, remote: str | None = None, frames: int = 25, timeout: float = 20.0, loud: bool = True
    ) -> float:
        """Wait until `frames` more (loud) frames arrived; returns the seconds it took."""
        count = self.heard_loud if loud else self.heard_frames
        start_count = count(remote)
        start = time.monotonic()
        while count(remote) - start_count < frames:
            if time.monotonic() - start > timeout:
                raise TimeoutError(
                    f"{self.callsign}: {count(remote) - start_count}/{frames} frames from {remote or 'anyone'} in {timeout}s"
                )
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        ice_task = self._ice_task
        self._renew_ice_in(None)
        if ice_task is not None:
            with contextlib.suppress(BaseException):
                await ice_task
        for task in self._background:
            task.cancel()
        await self.close_peers()
        if self.track:
            self.track.stop()
        if self.ws is not None:
            await self.ws.close()
        if self._ws_task:
            with contextlib.suppress(BaseException):
                await self._ws_task
        if self._own_http:
            await self.http.aclose()
