"""Every message that crosses a process boundary, as strict pydantic models.

Shared by the signaling server and the SFU worker; imports nothing of ours. Unknown
fields are rejected so that a client's typo gets a clear 400 instead of being ignored.
Field names follow YAHAML's camelCase wire format.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

PROTOCOL_VERSION = 1
CHANNEL = "voice"
# Browsers cannot set headers on a WebSocket: ours offers these two subprotocols, the
# second carrying the token, so that it never appears in a URL (or a proxy's log).
WS_SUBPROTOCOL = "yahaml-voice"
WS_TOKEN_PREFIX = "yahaml-voice.token."
SFU_PEER = "sfu"
# The largest SDP we accept; real audio-only SDPs are 2-6 KiB.
MAX_SDP_BYTES = 64 * 1024
MAX_CANDIDATE_BYTES = 2048
# The deepest JSON nesting we parse; our messages are at most 4 levels deep.
MAX_JSON_DEPTH = 32

Role = Literal["ncs", "operator", "listener"]
Mode = Literal["mesh", "sfu"]
SignalType = Literal["offer", "answer", "ice-candidate"]
AudioSource = Literal["microphone", "radio", "janus", "http-stream", "system"]
PeerId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]
RoomId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
]


class Strict(BaseModel):
    """Unknown fields are refused, and so are lax conversions: `"yes"` is not a boolean,
    `true` is not an integer, `"3"` is not a number."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


# ---------------------------------------------------------------- REST request bodies


class SessionRequest(Strict):
    callsign: str = Field(min_length=1, max_length=32)
    # Accepted for YAHAML compatibility; the server never reuses ids a client names.
    stationId: str | None = Field(default=None, max_length=64)
    browserId: str | None = Field(default=None, max_length=128)
    sourceType: str | None = Field(default=None, max_length=32)
    sourceInfo: Any = None


class JoinRequest(Strict):
    audioSourceType: AudioSource = "microphone"
    joinMode: Literal["operator", "listener"] = "operator"


class SessionDescription(Strict):
    """RTCSessionDescriptionInit."""

    type: Literal["offer", "answer", "pranswer", "rollback"]
    # Length is checked by the handler: more than MAX_SDP_BYTES is a 413, not a 400.
    sdp: str = ""


class IceCandidate(Strict):
    """RTCIceCandidateInit (an empty candidate string marks end of candidates)."""

    candidate: str = Field(default="", max_length=MAX_CANDIDATE_BYTES)
    sdpMid: str | None = Field(default=None, max_length=32)
    sdpMLineIndex: int | None = Field(default=None, ge=0, le=1024)
    usernameFragment: str | None = Field(default=None, max_length=256)


class SignalRequest(Strict):
    type: SignalType
    to: PeerId | None = None
    data: SessionDescription | IceCandidate | None = None
    # Ignored: the server stamps `from` itself (kept so YAHAML clients validate).
    from_: str | None = Field(default=None, alias="from", max_length=64)

    def check_payload(self) -> str | None:
        """A message describing what is wrong with data for this type, or None."""
        if self.type in ("offer", "answer"):
            if not isinstance(self.data, SessionDescription):
                return f"data must be an RTCSessionDescriptionInit for {self.type}"
            if self.data.type != self.type:
                return f"data.type is {self.data.type!r} but the signal is {self.type!r}"
            if not self.data.sdp:
                return "data.sdp is empty"
        elif self.data is not None and not isinstance(self.data, IceCandidate):
            return "data must be an RTCIceCandidateInit or null for ice-candidate"
        return None


class MuteRequest(Strict):
    isMuted: bool


class VolumeRequest(Strict):
    volume: int = Field(ge=0, le=100)


# ---------------------------------------------------------------- REST answers


class SessionInfo(BaseModel):
    """GET /api/sessions/me: who a token speaks for."""

    participantId: str
    callsign: str
    role: Role
    rooms: list[str] | Literal["*"]
    expiresAt: str
    sessionId: str


class IceServer(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceConfigAnswer(BaseModel):
    iceServers: list[IceServer]
    iceTransportPolicy: Literal["all", "relay"] = "all"
    ttl: int | None = None


class SessionAnswer(BaseModel):
    token: str
    expiresAt: str
    sessionId: str
    participantId: str
    callsign: str
    role: Role


class Participant(BaseModel):
    id: str
    displayName: str
    role: Role = "operator"
    joinedAt: str
    isActive: bool = True
    isMuted: bool = False
    volume: int = 100
    audioSourceType: AudioSource = "microphone"
    canPublish: bool = True


class Peer(BaseModel):
    id: str
    displayName: str
    audioSourceType: AudioSource = "microphone"
    role: Role = "operator"
    isMuted: bool = False
    # False for a listener: clients never play audio from such a peer.
    canPublish: bool = True


class RoomSummary(BaseModel):
    id: str
    name: str
    description: str
    radioId: str | None = None
    participantCount: int
    maxParticipants: int
    createdAt: str
    isActive: bool
    mode: Mode
    sfuThreshold: int
    ptt: bool


class RoomDetail(RoomSummary):
    participants: list[Participant]


class SfuInfo(BaseModel):
    slots: int


class JoinAnswer(BaseModel):
    success: bool = True
    participant: Participant
    peers: list[Peer]
    mode: Mode
    # Increases whenever the room is (re)placed on an SFU worker.
    epoch: int = 0
    iceServers: list[IceServer]
    iceTransportPolicy: Literal["all", "relay"] = "all"
    sfu: SfuInfo
    gracePeriod: float
    # Seconds the TURN credentials in iceServers last (None: no TURN); renew them with
    # GET /api/ice-servers before then.
    iceTtl: int | None = None


class Success(BaseModel):
    success: bool = True


class SignalAnswer(BaseModel):
    success: bool = True
    delivered: int


class ErrorAnswer(BaseModel):
    error: str
    message: str


# ---------------------------------------------------------------- relayed messages


class SignalMessage(BaseModel):
    """A signal as delivered to a peer: {type, from, to, data, timestamp}."""

    model_config = ConfigDict(populate_by_name=True)

    type: SignalType
    from_: str = Field(alias="from")
    to: str | None = None
    data: dict[str, Any] | None = None
    timestamp: str


# ---------------------------------------------------------------- client WebSocket


class WsClientFrame(Strict):
    """What a client may send on /ws."""

    type: Literal["subscribe", "unsubscribe", "ping"]
    channel: str | None = None
    filters: dict[str, Any] | None = None
    data: Any = None


# ---------------------------------------------------------------- SFU control plane


class SlotAssignment(Strict):
    index: int = Field(ge=0, le=15)
    participantId: str | None = None


class WorkerHello(Strict):
    workerId: PeerId
    slots: int = Field(ge=1, le=16)
    pid: int | None = None
    host: str | None = None


class WorkerLoad(Strict):
    rooms: int = Field(ge=0)
    peers: int = Field(ge=0)
    streams: int = Field(ge=0)
    cpu: float = Field(ge=0)


class WorkerSignal(Strict):
    """worker -> server: an answer or candidate for participant `to`."""

    roomId: RoomId
    to: PeerId
    type: SignalType
    data: dict[str, Any] | None = None


class WorkerSlots(Strict):
    roomId: RoomId
    slots: list[SlotAssignment]
    speaking: list[str] = Field(default_factory=list)


class WorkerRoomState(Strict):
    """worker -> server: the publishers a room's peer connections carry audio from."""

    roomId: RoomId
    audioFrom: list[str]


class WorkerFrame(Strict):
    type: Literal["hello", "load", "signal", "slots", "roomState"]
    data: dict[str, Any]


class ToWorkerSignal(Strict):
    """server -> worker: an offer/candidate from a participant to 'sfu'."""

    roomId: RoomId
    # `from` on the wire.
    from_: PeerId = Field(alias="from")
    role: Role
    canPublish: bool
    callsign: str
    type: SignalType
    data: dict[str, Any] | None = None


class ToWorkerParticipantLeft(Strict):
    roomId: RoomId
    participantId: PeerId


class ToWorkerRoomClosed(Strict):
    roomId: RoomId


WORKER_FRAMES: dict[str, type[Strict]] = {
    "hello": WorkerHello,
    "load": WorkerLoad,
    "signal": WorkerSignal,
    "slots": WorkerSlots,
    "roomState": WorkerRoomState,
}

TO_WORKER_FRAMES: dict[str, type[Strict]] = {
    "signal": ToWorkerSignal,
    "participantLeft": ToWorkerParticipantLeft,
    "roomClosed": ToWorkerRoomClosed,
}


class JsonError(ValueError):
    """Bytes that are not the JSON we take; `code` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays/objects in `text` (strings skipped), without parsing."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def decode_text(raw: str | bytes) -> str:
    """UTF-8 text of a body or frame, or JsonError `bad_encoding`."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonError("bad_encoding", f"not UTF-8 text (byte {exc.start})") from exc


def check_depth(text: str) -> None:
    """JsonError `too_deep` when `text` nests deeper than MAX_JSON_DEPTH."""
    # Cheap first: a text with few brackets cannot be deep.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and json_depth(text) > MAX_JSON_DEPTH:
        raise JsonError("too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def _no_constant(name: str) -> Any:
    # Python's json takes NaN and Infinity, which are not JSON: echoed back (a ping's
    # data) they would make the client's JSON.parse fail.
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: str | bytes) -> Any:
    """Decode a body or frame: UTF-8, at most MAX_JSON_DEPTH deep, valid JSON; else JsonError."""
    text = decode_text(raw)
    check_depth(text)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise JsonError("bad_json", "not valid JSON") from exc


def describe(exc: ValidationError, root: str = "body", limit: int = 1) -> str:
    """`where: what` for the first `limit` errors, for a 400 or an error frame."""
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or root
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def envelope(type_: str, data: Any, channel: str = CHANNEL) -> dict[str, Any]:
    """The YAHAML WebSocket envelope."""
    return {"type": type_, "channel": channel, "data": data}
