"""Every message that crosses a process boundary, as strict pydantic models.

Shared by the signaling server and the SFU worker; imports nothing of ours. Unknown
fields are rejected so that a client's typo gets a clear 400 instead of being ignored.
Field names follow YAHAML's camelCase wire format.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any, Final, Literal, TypeGuard, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

PROTOCOL_VERSION = 1
CHANNEL: Final = "voice"
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

# `admin`: a participant like an operator in rooms, who may also use the admin API
# (docs/admin.md: rooms at runtime, invites, the live overview).
Role = Literal["ncs", "operator", "listener", "admin"]
Mode = Literal["mesh", "sfu"]
SignalType = Literal["offer", "answer", "ice-candidate"]
AudioSource = Literal["microphone", "radio", "janus", "http-stream", "system"]
# Why a participant left: left, logout, removed (by net control), timeout (its grace period
# ran out), no_media (its seat never started media), room_closed (an admin removed the
# room), revoked (an admin revoked the invite it came in with).
LeaveReason = Literal["left", "logout", "removed", "timeout", "no_media", "room_closed", "revoked"]
# Net control (docs/protocol.md "Net control").
FloorKind = Literal["checkin", "traffic", "comment", "priority"]
# A role net control appoints for one net (room), on top of the token's role.
NetRole = Literal["ncs", "logger"]
ModerationAction = Literal["mute", "unmute", "remove", "ban", "unban", "appoint", "dismiss"]
# Why the SFU stopped forwarding a talker it would otherwise forward.
CutReason = Literal["tot"]
# The net log (docs/protocol.md "Net log"): where a check-in came from, where it stands.
CheckInVia = Literal["page", "rf", "phone", "other"]
CheckInStatus = Literal["new", "acknowledged", "traffic_listed", "traffic_passed", "checked_out"]
NetEventKind = Literal[
    "opened",
    "closed",
    "updated",
    "checkin",
    "checkin_edited",
    "checkin_removed",
    "checkins_reordered",
    "granted",
    "transmission",
    "talker_cut",
    "mute",
    "unmute",
    "remove",
    "ban",
    "unban",
    "appoint",
    "dismiss",
    "note",
    "recording",
]
NetChange = Literal["opened", "closed", "updated", "checkin", "checkinRemoved", "order"]
PeerId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]
RoomId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
]


def is_role(value: object) -> TypeGuard[Role]:
    return value in get_args(Role)


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


class FloorRequestBody(Strict):
    """An operator asks for the floor."""

    kind: FloorKind = "comment"


class FloorTarget(Strict):
    """Net control grants or revokes: one participant, or (null) the next in the queue /
    every holder."""

    participantId: str | None = Field(default=None, max_length=64)


class FloorOrder(Strict):
    """Net control reorders the queue: these participants first, in this order."""

    order: list[str] = Field(max_length=500)


class ModerationMute(Strict):
    participantId: str = Field(max_length=64)
    muted: bool = True


class ModerationRemove(Strict):
    participantId: str = Field(max_length=64)
    reason: str = Field(default="", max_length=200)


class ModerationBan(Strict):
    callsign: str = Field(min_length=1, max_length=16)
    # Seconds; null: the room's ban_time (0 there: until the net ends).
    duration: float | None = Field(default=None, ge=0, le=30 * 86400)
    reason: str = Field(default="", max_length=200)


class ModerationUnban(Strict):
    callsign: str = Field(min_length=1, max_length=16)


class ModerationAppoint(Strict):
    participantId: str = Field(max_length=64)
    # null dismisses an appointment.
    role: NetRole | None


class NetOpen(Strict):
    """Net control opens a net in the room."""

    name: str = Field(min_length=1, max_length=80)
    # Shown to every member while the net is open (the net's preamble, read at the start).
    preamble: str = Field(default="", max_length=4000)


class NetUpdate(Strict):
    """Net control renames the open net or changes its preamble (null: unchanged)."""

    name: str | None = Field(default=None, min_length=1, max_length=80)
    preamble: str | None = Field(default=None, max_length=4000)


class CheckInFields(Strict):
    """What a station says when it checks in (all optional)."""

    name: str = Field(default="", max_length=64)
    # Place, or Maidenhead grid square.
    location: str = Field(default="", max_length=64)
    remarks: str = Field(default="", max_length=200)
    traffic: bool = False
    shortTime: bool = False
    mobile: bool = False
    emergency: bool = False


class CheckInSelf(CheckInFields):
    """An operator checks itself in (again: updates its own entry)."""


class CheckInAdd(CheckInFields):
    """Net control or a logger enters a station by hand (heard over RF, by phone)."""

    callsign: str = Field(min_length=1, max_length=16)
    via: CheckInVia = "rf"
    status: CheckInStatus = "new"


class CheckInEdit(Strict):
    """Net control or a logger edits an entry; absent or null fields stay as they are."""

    callsign: str | None = Field(default=None, min_length=1, max_length=16)
    name: str | None = Field(default=None, max_length=64)
    location: str | None = Field(default=None, max_length=64)
    remarks: str | None = Field(default=None, max_length=200)
    traffic: bool | None = None
    shortTime: bool | None = None
    mobile: bool | None = None
    emergency: bool | None = None
    via: CheckInVia | None = None
    status: CheckInStatus | None = None


class CheckInOrder(Strict):
    """Net control or a logger reorders the check-ins: these entries first, in this order."""

    order: list[str] = Field(max_length=1000)


class NetNote(Strict):
    """A line net control or a logger types into the log."""

    text: str = Field(min_length=1, max_length=500)


class Answer(BaseModel):
    """Something the server sends. Every field is always on the wire (defaults and nulls
    included), so the JSON Schema of what it sends marks them all required."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class SessionInfo(Answer):
    """GET /api/sessions/me: who a token speaks for."""

    participantId: str
    callsign: str
    role: Role
    rooms: list[str] | Literal["*"]
    expiresAt: str
    sessionId: str


class IceServer(Answer):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceConfigAnswer(Answer):
    iceServers: list[IceServer]
    iceTransportPolicy: Literal["all", "relay"] = "all"
    ttl: int | None = None


class SessionAnswer(Answer):
    token: str
    expiresAt: str
    sessionId: str
    participantId: str
    callsign: str
    role: Role


class Participant(Answer):
    id: str
    displayName: str
    role: Role = "operator"
    joinedAt: str
    isActive: bool = True
    isMuted: bool = False
    volume: int = 100
    audioSourceType: AudioSource = "microphone"
    canPublish: bool = True


class Peer(Answer):
    id: str
    displayName: str
    audioSourceType: AudioSource = "microphone"
    role: Role = "operator"
    isMuted: bool = False
    # False for a listener: clients never play audio from such a peer.
    canPublish: bool = True


class Frame(Strict):
    """A frame one of our processes builds (and the other side parses strictly): every
    field is always on the wire, so the JSON Schema marks them all required."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


# A recording's id: its start time (UTC) and a random tag, safe as a path component.
RecordingId = Annotated[str, StringConstraints(pattern=r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")]


class RecordingState(Frame):
    """A room's recording: `recording` while it runs; `stopped` (by net control, or the room
    left its worker) or `failed` (`reason`: the disk filled, the writer fell behind) after."""

    id: RecordingId
    roomId: str
    state: Literal["recording", "stopped", "failed"]
    startedAt: str
    endedAt: str | None = None
    reason: str | None = None
    # The net (net log) open when it started, if any.
    netId: str | None = None


class Transmission(Frame):
    """One transmission in a recording: a talker in one speaker slot from start to stop.

    `offset` is its position in the net recording (seconds from the recording's start).
    `url` is where a member replays it (set by the server; absent between processes)."""

    index: int = Field(ge=0)
    slot: int = Field(ge=0, le=15)
    participantId: str
    callsign: str
    start: str
    end: str
    offset: float = Field(ge=0)
    duration: float = Field(ge=0)
    url: str | None = None


class RecordingChangedData(Frame):
    roomId: str
    recording: RecordingState


class TransmissionRecordedData(Frame):
    roomId: str
    recordingId: RecordingId
    transmission: Transmission


class RecordingList(Answer):
    """GET .../recordings: the room's recordings, newest first."""

    roomId: str
    recordings: list[RecordingState]


class TransmissionList(Answer):
    """GET .../recordings/<id>/transmissions: its last `recording.replay_last`
    transmissions, oldest first, each with the `url` to replay it."""

    roomId: str
    recordingId: str
    transmissions: list[Transmission]


class RoomSummary(Answer):
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
    # The time-out timer: seconds a talker may transmit without a break (0: none).
    tot: float = 0
    # Recording notice, before anyone joins: `true` recorded whenever in use, `ncs` when
    # net control starts it; `recording` whether it is being recorded right now.
    record: bool | Literal["ncs"] = False
    recording: bool = False
    # `parrot`: an echo test room (you hear yourself, after you stop talking).
    kind: Literal["voice", "parrot"] = "voice"


class RoomDetail(RoomSummary):
    participants: list[Participant]


class SfuInfo(Answer):
    slots: int


class JoinAnswer(Answer):
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
    # The room's recording now (null: not being recorded); the room list says beforehand.
    recording: RecordingState | None = None


class Success(Answer):
    success: bool = True


# ---------------------------------------------------------------- admin (docs/admin.md)
# Room definitions travel as a `rooms:` entry of the configuration file (core/config.py
# RoomConfig, snake_case like the YAML); the rest of the admin API is here.

InviteId = Annotated[str, StringConstraints(pattern=r"^i-[0-9a-f]{20}$")]
InviteState = Literal["active", "expired", "revoked"]
# The longest invite an admin may mint (seconds): 90 days.
MAX_INVITE_TTL = 90 * 86400


class InviteRequest(Strict):
    """POST /api/admin/invites: a link for one callsign, one room (or "*": every room),
    one role, valid for `ttl` seconds."""

    callsign: str = Field(min_length=1, max_length=32)
    room: RoomId | Literal["*"]
    role: Role = "operator"
    ttl: int = Field(default=12 * 3600, ge=60, le=MAX_INVITE_TTL)
    note: str = Field(default="", max_length=200)


class InviteInfo(Answer):
    id: str
    callsign: str
    participantId: str
    room: str
    role: Role
    note: str
    createdAt: str
    createdBy: str
    expiresAt: str
    state: InviteState
    revokedAt: str | None = None
    revokedBy: str | None = None


class InviteMinted(Answer):
    """The token and link are shown once: the server keeps neither."""

    invite: InviteInfo
    token: str
    link: str


class InviteList(Answer):
    invites: list[InviteInfo]
    maxInvites: int


class OverviewParticipant(Answer):
    id: str
    callsign: str
    role: Role
    isActive: bool
    canPublish: bool
    worker: str | None = None


class OverviewRoom(Answer):
    id: str
    name: str
    floor: Literal["open", "directed"]
    kind: Literal["voice", "parrot"]
    maxParticipants: int
    participantCount: int
    mode: Mode
    worker: str | None = None
    edges: list[str]
    participants: list[OverviewParticipant]


class OverviewWorker(Answer):
    id: str
    slots: int
    lastSeen: str
    rooms: int
    peers: int
    streams: int
    cpu: float
    host: str | None = None
    # True while the worker drains (SIGTERM): no new rooms, its rooms move away.
    draining: bool = False


class AdminOverview(Answer):
    """GET /api/admin/overview: every room with its people, mode and worker; every live
    SFU worker with its load."""

    rooms: list[OverviewRoom]
    workers: list[OverviewWorker]
    store: str
    maxRooms: int


class SignalAnswer(Answer):
    success: bool = True
    delivered: int


class CheckIn(Answer):
    """One entry of the net's check-in list (the list is in net order)."""

    id: str
    callsign: str
    # The member this entry belongs to (null: entered by hand for a station not in the room).
    participantId: str | None
    name: str
    location: str
    remarks: str
    traffic: bool
    shortTime: bool
    mobile: bool
    emergency: bool
    via: CheckInVia
    status: CheckInStatus
    # When the station checked in (ISO 8601), and the callsign of who entered it.
    at: str
    by: str


class NetInfo(Answer):
    """A net: open (closedAt null) or archived. `version` increases with every change of
    the net or its check-ins."""

    id: str
    roomId: str
    name: str
    preamble: str
    openedAt: str
    closedAt: str | None
    openedBy: str
    # Callsigns that ran the net (net control) and kept its log (loggers).
    ncs: list[str]
    loggers: list[str]
    version: int
    checkinCount: int
    trafficCount: int
    eventCount: int


class NetState(Answer):
    """GET .../net: the room's open net (null when none) and its check-ins."""

    roomId: str
    net: NetInfo | None
    checkins: list[CheckIn]


class NetEvent(Answer):
    """One line of the net log."""

    seq: int
    at: str
    kind: NetEventKind
    # Who did it (callsign; null: the system, e.g. the time-out timer).
    by: str | None
    # Whom it is about (callsign), if anyone.
    callsign: str | None
    text: str
    # Seconds: how long a transmission lasted.
    duration: float | None


class NetLogPage(Answer):
    """GET .../net/log or .../nets/<id>/log: events after `after`, oldest first."""

    netId: str
    events: list[NetEvent]
    # Pass as `after` to get what follows (the last seq returned, or the given `after`).
    next: int


class NetArchive(Answer):
    """GET .../nets: the room's closed nets, newest first."""

    roomId: str
    nets: list[NetInfo]


class NetRecord(Answer):
    """GET .../nets/<id>: one net (open or archived) with its check-ins and whole log."""

    net: NetInfo
    checkins: list[CheckIn]
    events: list[NetEvent]


class ErrorAnswer(Answer):
    error: str
    message: str


# ---------------------------------------------------------------- frames, shared parts


class ErrorData(Frame):
    """The one shape of every error frame, on /ws and /sfu/ws, in both directions."""

    code: str
    message: str


class WsErrorData(ErrorData):
    """An error on /ws; `status` is what the same refusal is on REST (a WebSocket request's
    error), null for an error that answers no request."""

    status: int | None = None


class SlotAssignment(Frame):
    index: int = Field(ge=0, le=15)
    participantId: str | None = None


# ---------------------------------------------------------------- client WebSocket, client -> server


class WsClientFrame(Strict):
    """What a client may send on /ws."""

    type: Literal["subscribe", "unsubscribe", "ping"]
    channel: str | None = None
    filters: dict[str, Any] | None = None
    data: Any = None
    # On subscribe: take a room's roster changes as `rosterBatch` frames (coalesced under
    # load) instead of one participantJoined/participantLeft frame per change.
    rosterBatch: bool | None = None


# A client's name for one request on /ws, echoed in its `ack` or `error` frame.
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class WsSignal(SignalRequest):
    """A signal sent on /ws: POST .../signal's body plus the room it is for."""

    roomId: RoomId


class WsSignalFrame(Strict):
    """`POST /api/voice-rooms/:roomId/signal` over the open socket: same validation, same
    rules, same rate limit; answered by an `ack` or an `error` frame carrying `id`."""

    type: Literal["signal"]
    id: RequestId
    data: WsSignal


# ---------------------------------------------------------------- client WebSocket, server -> client
# Envelope {type, channel: "voice", data} (YAHAML's); one model per type.


class ConnectedData(Frame):
    participantId: str
    callsign: str
    role: Role
    protocolVersion: int
    # Unix time (seconds) at which the token expires and the socket is closed.
    expiresAt: float


class ParticipantJoinedData(Frame):
    roomId: str
    participant: Participant


class ParticipantLeftData(Frame):
    roomId: str
    participantId: str
    reason: LeaveReason


class SignalMessage(Frame):
    """A signal as delivered to a peer: {type, from, to, data, timestamp}."""

    type: SignalType
    # `from` on the wire: a participant id, or "sfu".
    from_: str = Field(validation_alias="from", serialization_alias="from")
    # Null when the sender addressed every other participant.
    to: str | None
    data: SessionDescription | IceCandidate | None
    timestamp: str


class SignalData(Frame):
    roomId: str
    message: SignalMessage


class MuteChangedData(Frame):
    roomId: str
    participantId: str
    isMuted: bool


class VolumeChangedData(Frame):
    roomId: str
    participantId: str
    volume: int


class RoomModeChangedData(Frame):
    roomId: str
    mode: Mode
    epoch: int


class SpeakerSlotsData(Frame):
    roomId: str
    slots: list[SlotAssignment]
    speaking: list[str]


SfuLinkState = Literal["new", "connecting", "failed"]
"""A worker's peer connection that is not up: no offer answered yet / checking / gave up."""


class SfuLinksData(Frame):
    """Who has no working connection to one SFU worker of the room (WorkerLinks passed on).
    `source` names the worker (opaque); a client keeps the latest per source and forgets
    them all on roomModeChanged (a new epoch places the room anew)."""

    roomId: str
    source: str
    notConnected: dict[str, SfuLinkState]


class SubscribedData(Frame):
    filters: dict[str, Any]


class UnsubscribedData(Frame):
    pass


class FloorHolder(Frame):
    participantId: str
    callsign: str
    kind: FloorKind
    # When the floor was granted (ISO 8601).
    since: str
    # Paused by a priority break-in; resumes when the priority holder releases.
    paused: bool


class FloorEntry(Frame):
    participantId: str
    callsign: str
    kind: FloorKind
    # When the request was made (ISO 8601). The queue is priority first, then by this time,
    # unless net control reordered it.
    at: str


class FloorState(Frame):
    """Who may talk in a directed room, and who waits: every member gets all of it and
    finds its own position in `queue`."""

    roomId: str
    # Increases with every change (a client ignores an older state than the one it has).
    version: int
    floor: Literal["open", "directed"]
    # Roll call: net control opened the floor to every member who may publish.
    open: bool
    maxTalkers: int
    holders: list[FloorHolder]
    queue: list[FloorEntry]
    # Participants net control appointed for this net (besides ncs-role tokens).
    appointed: dict[str, NetRole]
    # Participants net control muted (they cannot unmute themselves).
    muted: list[str]


class FloorChangedData(Frame):
    floor: FloorState


class ModerationData(Frame):
    """Something net control did; every member sees it (and the net log records it)."""

    roomId: str
    action: ModerationAction
    # Who did it (callsign).
    by: str
    participantId: str | None
    callsign: str | None
    reason: str
    # Until when a ban holds (ISO 8601); null: until the net ends, or not a ban.
    until: str | None
    role: NetRole | None


class TalkerCutData(Frame):
    """The SFU stopped forwarding a talker (time-out timer): locked out until silent for
    `resetAfter` seconds."""

    roomId: str
    participantId: str
    reason: CutReason
    resetAfter: float


class NetChangedData(Frame):
    """The room's net changed. `net` is its header after the change (null once closed);
    with `checkin` (the entry added or edited), `checkinId` (the entry removed) or `order`
    (the ids of the whole list, in order). A client whose version is not net.version - 1
    fetches GET .../net again."""

    roomId: str
    change: NetChange
    net: NetInfo | None
    checkin: CheckIn | None
    checkinId: str | None
    order: list[str] | None


class NetLoggedData(Frame):
    """A line was added to the open net's log."""

    roomId: str
    netId: str
    event: NetEvent


class ConnectedFrame(Frame):
    """Always the first frame on a socket."""

    type: Literal["connected"] = "connected"
    channel: Literal["voice"] = CHANNEL
    data: ConnectedData


class ParticipantJoinedFrame(Frame):
    type: Literal["participantJoined"] = "participantJoined"
    channel: Literal["voice"] = CHANNEL
    data: ParticipantJoinedData


class ParticipantLeftFrame(Frame):
    type: Literal["participantLeft"] = "participantLeft"
    channel: Literal["voice"] = CHANNEL
    data: ParticipantLeftData


class SignalFrame(Frame):
    type: Literal["signal"] = "signal"
    channel: Literal["voice"] = CHANNEL
    data: SignalData


class MuteChangedFrame(Frame):
    type: Literal["participantMuteChanged"] = "participantMuteChanged"
    channel: Literal["voice"] = CHANNEL
    data: MuteChangedData


class VolumeChangedFrame(Frame):
    type: Literal["participantVolumeChanged"] = "participantVolumeChanged"
    channel: Literal["voice"] = CHANNEL
    data: VolumeChangedData


class RoomModeChangedFrame(Frame):
    type: Literal["roomModeChanged"] = "roomModeChanged"
    channel: Literal["voice"] = CHANNEL
    data: RoomModeChangedData


class SpeakerSlotsFrame(Frame):
    type: Literal["speakerSlots"] = "speakerSlots"
    channel: Literal["voice"] = CHANNEL
    data: SpeakerSlotsData


class SfuLinksFrame(Frame):
    type: Literal["sfuLinks"] = "sfuLinks"
    channel: Literal["voice"] = CHANNEL
    data: SfuLinksData


class FloorChangedFrame(Frame):
    type: Literal["floorChanged"] = "floorChanged"
    channel: Literal["voice"] = CHANNEL
    data: FloorChangedData


class ModerationFrame(Frame):
    type: Literal["moderation"] = "moderation"
    channel: Literal["voice"] = CHANNEL
    data: ModerationData


class TalkerCutFrame(Frame):
    type: Literal["talkerCut"] = "talkerCut"
    channel: Literal["voice"] = CHANNEL
    data: TalkerCutData


class RecordingChangedFrame(Frame):
    type: Literal["recordingChanged"] = "recordingChanged"
    channel: Literal["voice"] = CHANNEL
    data: RecordingChangedData


class TransmissionRecordedFrame(Frame):
    type: Literal["transmissionRecorded"] = "transmissionRecorded"
    channel: Literal["voice"] = CHANNEL
    data: TransmissionRecordedData


class NetChangedFrame(Frame):
    type: Literal["netChanged"] = "netChanged"
    channel: Literal["voice"] = CHANNEL
    data: NetChangedData


class NetLoggedFrame(Frame):
    type: Literal["netLogged"] = "netLogged"
    channel: Literal["voice"] = CHANNEL
    data: NetLoggedData


class PongFrame(Frame):
    """The answer to a ping: its channel (or "voice") and its data, echoed."""

    type: Literal["pong"] = "pong"
    channel: str = CHANNEL
    data: Any = None


class SubscribedFrame(Frame):
    type: Literal["subscribed"] = "subscribed"
    channel: Literal["voice"] = CHANNEL
    data: SubscribedData


class UnsubscribedFrame(Frame):
    type: Literal["unsubscribed"] = "unsubscribed"
    channel: Literal["voice"] = CHANNEL
    data: UnsubscribedData = Field(default_factory=UnsubscribedData)


class ErrorFrame(Frame):
    """A frame the server could not use, a refusal, or why the socket is about to close;
    `id` names the client request (a `signal` frame) it answers, else null."""

    type: Literal["error"] = "error"
    channel: Literal["voice"] = CHANNEL
    id: str | None = None
    data: WsErrorData


class AckData(Frame):
    # How many participants the signal went to (as SignalAnswer.delivered).
    delivered: int


class AckFrame(Frame):
    """A client request (a `signal` frame) was done: its `id` and the result."""

    type: Literal["ack"] = "ack"
    channel: Literal["voice"] = CHANNEL
    id: str
    data: AckData


class RosterBatchData(Frame):
    """Roster changes of one room in the order they happened: each entry is exactly the
    participantJoined/participantLeft frame it stands for. Entries about the receiver
    itself may be included (ignore them)."""

    roomId: str
    frames: list[ParticipantJoinedFrame | ParticipantLeftFrame]


class RosterBatchFrame(Frame):
    """Sent instead of the frames it holds to a socket that subscribed with
    `rosterBatch: true`; other sockets get the frames one by one."""

    type: Literal["rosterBatch"] = "rosterBatch"
    channel: Literal["voice"] = CHANNEL
    data: RosterBatchData


ServerFrame = Annotated[
    ConnectedFrame
    | ParticipantJoinedFrame
    | ParticipantLeftFrame
    | SignalFrame
    | MuteChangedFrame
    | VolumeChangedFrame
    | RoomModeChangedFrame
    | SpeakerSlotsFrame
    | SfuLinksFrame
    | FloorChangedFrame
    | ModerationFrame
    | TalkerCutFrame
    | RecordingChangedFrame
    | TransmissionRecordedFrame
    | NetChangedFrame
    | NetLoggedFrame
    | PongFrame
    | SubscribedFrame
    | UnsubscribedFrame
    | ErrorFrame
    | AckFrame
    | RosterBatchFrame,
    Field(discriminator="type"),
]
"""Every frame the server sends on /ws."""


def error_frame(
    code: str, message: str, request: str | None = None, status: int | None = None
) -> ErrorFrame:
    data = WsErrorData(code=code, message=message, status=status)
    return ErrorFrame(id=request, data=data)


# ---------------------------------------------------------------- SFU control, worker -> server
# Envelope {type, data}; one model per type.


class WorkerHello(Frame):
    workerId: PeerId
    slots: int = Field(ge=1, le=16)
    pid: int | None = None
    host: str | None = None


class WorkerLoad(Frame):
    rooms: int = Field(ge=0)
    peers: int = Field(ge=0)
    streams: int = Field(ge=0)
    cpu: float = Field(ge=0)
    # How the worker fans packets out: one C call per packet and group, or a Python loop
    # (no compiler where it runs, or `sfu.native: false`).
    fanout: Literal["native", "python"] = "python"
    # Resident memory in bytes as the worker measures itself, so a worker on another host
    # than the server's shows in /metrics too (older workers: the server asks the OS).
    rss: int | None = Field(default=None, ge=0)


class WorkerDraining(Frame):
    """worker -> server: the worker got SIGTERM and stops once its rooms moved.

    The server places no new room on it and re-places every room it serves (origin or
    edge) on another worker, as for a dead worker but while this one still forwards; the
    worker exits once it holds no rooms, or after `timeout` seconds (`sfu.drain_timeout`).
    Sent again after every hello while draining."""

    timeout: float = Field(ge=0, le=3600)


class WorkerSignal(Frame):
    """worker -> server: an answer (or candidate) for participant `to`."""

    roomId: RoomId
    to: PeerId
    type: SignalType
    data: SessionDescription | IceCandidate | None = None


class WorkerSlots(Frame):
    roomId: RoomId
    slots: list[SlotAssignment]
    speaking: list[str] = Field(default_factory=list)


class WorkerRoomState(Frame):
    """worker -> server: a room the worker holds, and the publishers its peer connections
    carry audio from.

    Sent for every room right after each (re)connect's hello, and when `audioFrom` changes.
    The server uses it to reconcile: a room that is not (or no longer) placed on this worker
    gets `roomClosed` back. That covers the `roomClosed` the worker missed while its control
    connection was down (the server re-placed its rooms then), which would otherwise leave
    the room's peers and forwarder running on the worker for good."""

    roomId: RoomId
    audioFrom: list[str]


class WorkerLinks(Frame):
    """worker -> server: the room's participants whose peer connection to this worker is
    not connected (normally none). Sent when the set changes, at most about once a second
    per room (coalesced), and after each hello for rooms where it is not empty. A connection
    being set up counts after 2 s only, so a net of hundreds joining normally sends none."""

    roomId: RoomId
    notConnected: dict[PeerId, SfuLinkState] = Field(max_length=10_000)


class WorkerTalker(Frame):
    """worker -> server: the time-out timer cut a talker off (`cut`), or its lockout ended
    (`reset`: silent for tot_reset)."""

    roomId: RoomId
    participantId: PeerId
    state: Literal["cut", "reset"]
    reason: CutReason = "tot"


def _ip_literal(value: str) -> str:
    """An IP address, never a name: the origin sends to it per packet (no lookups)."""
    return str(ipaddress.ip_address(value))


IpAddress = Annotated[str, Field(max_length=64), AfterValidator(_ip_literal)]


class WorkerCascadeReady(Frame):
    """worker -> server: this worker holds the room as an edge (issue 14) and takes the
    origin's slot streams at `host`:`ports[i]` for slot i.

    Sent when the edge room opens (its first participant's signal), again whenever it is
    re-opened (new ports). `key` is the SRTP master key and salt (base64, 30 bytes,
    AES_CM_128_HMAC_SHA1_80) the origin protects with; null on loopback (plain RTP)."""

    roomId: RoomId
    origin: PeerId
    host: IpAddress
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(min_length=1, max_length=16)
    key: str | None = Field(default=None, min_length=40, max_length=40)


class WorkerRecording(Frame):
    """worker -> server: a recording of a room started, stopped or failed on this worker
    (`bytes` written so far)."""

    roomId: RoomId
    recordingId: RecordingId
    state: Literal["recording", "stopped", "failed"]
    reason: str | None = Field(default=None, max_length=300)
    bytes: int = Field(default=0, ge=0)


class WorkerTransmission(Frame):
    """worker -> server: a transmission ended and its file is complete."""

    roomId: RoomId
    recordingId: RecordingId
    transmission: Transmission


class WorkerHelloFrame(Frame):
    type: Literal["hello"] = "hello"
    data: WorkerHello


class WorkerLoadFrame(Frame):
    type: Literal["load"] = "load"
    data: WorkerLoad


class WorkerDrainingFrame(Frame):
    type: Literal["draining"] = "draining"
    data: WorkerDraining


class WorkerSignalFrame(Frame):
    type: Literal["signal"] = "signal"
    data: WorkerSignal


class WorkerSlotsFrame(Frame):
    type: Literal["slots"] = "slots"
    data: WorkerSlots


class WorkerRoomStateFrame(Frame):
    type: Literal["roomState"] = "roomState"
    data: WorkerRoomState


class WorkerLinksFrame(Frame):
    type: Literal["links"] = "links"
    data: WorkerLinks


class WorkerTalkerFrame(Frame):
    type: Literal["talker"] = "talker"
    data: WorkerTalker


class WorkerRecordingFrame(Frame):
    type: Literal["recording"] = "recording"
    data: WorkerRecording


class WorkerTransmissionFrame(Frame):
    type: Literal["transmission"] = "transmission"
    data: WorkerTransmission


class WorkerCascadeReadyFrame(Frame):
    type: Literal["cascadeReady"] = "cascadeReady"
    data: WorkerCascadeReady


class ControlErrorFrame(Frame):
    """An error frame on /sfu/ws (either direction): logged, never answered."""

    type: Literal["error"] = "error"
    data: ErrorData


WorkerFrame = Annotated[
    WorkerHelloFrame
    | WorkerLoadFrame
    | WorkerDrainingFrame
    | WorkerSignalFrame
    | WorkerSlotsFrame
    | WorkerRoomStateFrame
    | WorkerLinksFrame
    | WorkerTalkerFrame
    | WorkerCascadeReadyFrame
    | WorkerRecordingFrame
    | WorkerTransmissionFrame
    | ControlErrorFrame,
    Field(discriminator="type"),
]
"""Every frame a worker sends on /sfu/ws."""


# ---------------------------------------------------------------- SFU control, server -> worker


class ToWorkerSignal(Frame):
    """server -> worker: an offer/candidate from a participant to 'sfu'."""

    roomId: RoomId
    # `from` on the wire.
    from_: PeerId = Field(validation_alias="from", serialization_alias="from")
    role: Role
    canPublish: bool
    callsign: str
    type: SignalType
    data: SessionDescription | IceCandidate | None = None
    # Set when the room spans workers and this worker is one of its edges: the worker
    # holding the room's publishers, whose slot streams this worker fans out (issue 14).
    origin: PeerId | None = None
    # The room is a parrot room (an echo test): the worker plays each member back to
    # itself alone; set on every signal, so the room's first one decides.
    parrot: bool = False


class ToWorkerParticipantLeft(Frame):
    roomId: RoomId
    participantId: PeerId
    # As in the clients' participantLeft; the worker only logs it.
    reason: LeaveReason | None = None


class ToWorkerRoomClosed(Frame):
    roomId: RoomId


class CourtesyTone(Frame):
    hz: int = Field(ge=200, le=4000)
    ms: int = Field(ge=20, le=1000)


class ToWorkerFloor(Frame):
    """server -> worker: whose microphones the forwarder may forward in a room.

    Sent when the room is placed on the worker and whenever the floor, an appointment or a
    mute changes. In a directed room only `talkers` are forwarded; in an open room everyone
    but `muted` is. Packets from anyone else are dropped before speaker-slot selection."""

    roomId: RoomId
    directed: bool
    # Floor holders (not paused) and net control: who may talk in a directed room.
    talkers: list[str]
    # Muted by net control: never forwarded, in any room kind.
    muted: list[str]
    # Time-out timer in seconds (0: none) and the silence that resets a lockout.
    tot: float = Field(ge=0)
    totReset: float = Field(ge=0)
    # Null: no courtesy tone.
    courtesy: CourtesyTone | None
    # Exempt from the time-out timer (net control).
    exempt: list[str]


class ToWorkerCascadeLink(Frame):
    """server -> origin worker: send each slot's packets of the room to this edge too
    (slot i to `host`:`ports[i]`), SRTP-protected with `key` unless it is null. A link to
    the same edge replaces the previous one."""

    roomId: RoomId
    edge: PeerId
    host: IpAddress
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(min_length=1, max_length=16)
    key: str | None = Field(default=None, min_length=40, max_length=40)


class ToWorkerCascadeUnlink(Frame):
    """server -> origin worker: stop sending the room to this edge (it died or left)."""

    roomId: RoomId
    edge: PeerId


class ToWorkerRecord(Frame):
    """server -> origin worker: record the room as `recordingId` from now on (null: stop).
    Sent when recording starts or stops, when the room is placed, and after its roomState
    (a worker that already records that id goes on; another id: the old one stops)."""

    roomId: RoomId
    recordingId: RecordingId | None
    netId: str | None = None


class ToWorkerAnnounce(Frame):
    """server -> origin worker: announce the room's slot mapping again (a listener joined
    on an edge, and the origin announces only for its own newcomers)."""

    roomId: RoomId


class ToWorkerSignalFrame(Frame):
    type: Literal["signal"] = "signal"
    data: ToWorkerSignal


class ToWorkerParticipantLeftFrame(Frame):
    type: Literal["participantLeft"] = "participantLeft"
    data: ToWorkerParticipantLeft


class ToWorkerRoomClosedFrame(Frame):
    type: Literal["roomClosed"] = "roomClosed"
    data: ToWorkerRoomClosed


class ToWorkerFloorFrame(Frame):
    type: Literal["floor"] = "floor"
    data: ToWorkerFloor


class ToWorkerCascadeLinkFrame(Frame):
    type: Literal["cascadeLink"] = "cascadeLink"
    data: ToWorkerCascadeLink


class ToWorkerCascadeUnlinkFrame(Frame):
    type: Literal["cascadeUnlink"] = "cascadeUnlink"
    data: ToWorkerCascadeUnlink


class ToWorkerRecordFrame(Frame):
    type: Literal["record"] = "record"
    data: ToWorkerRecord


class ToWorkerAnnounceFrame(Frame):
    type: Literal["announce"] = "announce"
    data: ToWorkerAnnounce


ToWorkerFrame = Annotated[
    ToWorkerSignalFrame
    | ToWorkerParticipantLeftFrame
    | ToWorkerRoomClosedFrame
    | ToWorkerFloorFrame
    | ToWorkerCascadeLinkFrame
    | ToWorkerCascadeUnlinkFrame
    | ToWorkerAnnounceFrame
    | ToWorkerRecordFrame
    | ControlErrorFrame,
    Field(discriminator="type"),
]
"""Every frame the server sends a worker on /sfu/ws."""


def control_error(code: str, message: str) -> ControlErrorFrame:
    return ControlErrorFrame(data=ErrorData(code=code, message=message))


def _data_models(*frames: type[Frame]) -> dict[str, type[Frame]]:
    """type -> model of `data`, for the parsers (which name the frame type in errors)."""
    found: dict[str, type[Frame]] = {}
    for frame in frames:
        found[frame.model_fields["type"].default] = frame.model_fields["data"].annotation  # type: ignore[assignment]
    return found


WORKER_FRAMES = _data_models(
    WorkerHelloFrame,
    WorkerLoadFrame,
    WorkerDrainingFrame,
    WorkerSignalFrame,
    WorkerSlotsFrame,
    WorkerRoomStateFrame,
    WorkerLinksFrame,
    WorkerTalkerFrame,
    WorkerCascadeReadyFrame,
    WorkerRecordingFrame,
    WorkerTransmissionFrame,
)
TO_WORKER_FRAMES = _data_models(
    ToWorkerSignalFrame,
    ToWorkerParticipantLeftFrame,
    ToWorkerRoomClosedFrame,
    ToWorkerFloorFrame,
    ToWorkerCascadeLinkFrame,
    ToWorkerCascadeUnlinkFrame,
    ToWorkerAnnounceFrame,
    ToWorkerRecordFrame,
)


# ---------------------------------------------------------------- server <-> server (bus only)
# Published on a participant's bus channel next to its frames, consumed by whichever server
# process holds the participant's sockets; never sent to a client (not in the schema).


class RevokeData(Frame):
    # Only the sockets opened with this session's token (None: all of the participant's).
    session: str | None
    code: str
    message: str


class RevokeNotice(Frame):
    """Close these sockets: an `error` frame `code`, then 4401."""

    type: Literal["_revoke"] = "_revoke"
    data: RevokeData


class DropNotice(Frame):
    """Close every socket of the participant with 4000 (test hook)."""

    type: Literal["_drop"] = "_drop"


def wire(frame: BaseModel) -> dict[str, Any]:
    """The JSON-ready dict of a frame: aliases (`from`) applied, defaults and nulls kept
    (YAHAML clients read `to: null`); the one way frames are serialised."""
    return frame.model_dump(mode="json", by_alias=True)


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
