"""The generated protocol files are fresh, and every wire model survives the wire.

(a) docs/protocol.schema.json and client/protocol-types.js equal a fresh generation.
(b) One example of every top-level wire model, serialised as its sender does (`wire()`,
    JSON text), is valid against the JSON Schema and parses back, through the parser of
    the side that receives it, into an equal model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, TypeAdapter

from yahaml_voice.core import protocol as p
from yahaml_voice.core.schema import (
    ANSWERS,
    CLIENT_SENDS,
    COMMAND,
    SERVER_FRAMES,
    TO_WORKER_FRAMES,
    WORKER_FRAMES,
    main,
    protocol_schema,
    render,
    wire_models,
)

ROOT = Path(__file__).resolve().parent.parent

OFFER = p.SessionDescription(type="offer", sdp="v=0\r\n")
CANDIDATE = p.IceCandidate(candidate="candidate:1 1 udp 1 192.0.2.1 5000 typ host", sdpMid="0")
PARTICIPANT = p.Participant(
    id="p-1", displayName="W1AW", joinedAt="2025-01-01T00:00:00Z", canPublish=False
)
PEER = p.Peer(id="p-2", displayName="G4ABC", role="ncs")
ICE = [
    p.IceServer(urls=["stun:192.0.2.1:3478"]),
    p.IceServer(urls=["turn:192.0.2.1:3478"], username="1:p-1", credential="c"),
]
SUMMARY: dict[str, Any] = {
    "id": "net",
    "name": "Net",
    "description": "",
    "participantCount": 1,
    "maxParticipants": 50,
    "createdAt": "2025-01-01T00:00:00Z",
    "isActive": True,
    "mode": "sfu",
    "sfuThreshold": 8,
    "ptt": True,
    "tot": 180.0,
}
SLOTS = [p.SlotAssignment(index=0, participantId="p-1"), p.SlotAssignment(index=1)]
ERROR = p.ErrorData(code="bad_frame", message="frame: unknown type")
CHECKIN = p.CheckIn(
    id="c-1",
    callsign="K1ABC",
    participantId=None,
    name="Alice",
    location="FN42",
    remarks="",
    traffic=True,
    shortTime=False,
    mobile=True,
    emergency=False,
    via="rf",
    status="acknowledged",
    at="2025-01-01T00:00:00Z",
    by="W1AW",
)
NET = p.NetInfo(
    id="n-1",
    roomId="net",
    name="Sunday Net",
    preamble="QST",
    openedAt="2025-01-01T00:00:00Z",
    closedAt=None,
    openedBy="W1AW",
    ncs=["W1AW"],
    loggers=["G4LOG"],
    version=3,
    checkinCount=1,
    trafficCount=1,
    eventCount=2,
)
NET_EVENT = p.NetEvent(
    seq=2,
    at="2025-01-01T00:01:00Z",
    kind="transmission",
    by=None,
    callsign="K1ABC",
    text="traffic",
    duration=12.5,
)


def _signal(to: str | None, data: p.SessionDescription | p.IceCandidate | None) -> p.SignalFrame:
    message = p.SignalMessage(
        type="offer", from_="p-1", to=to, data=data, timestamp="2025-01-01T00:00:00Z"
    )
    return p.SignalFrame(data=p.SignalData(roomId="net", message=message))


TRANSMISSION = p.Transmission(
    index=3,
    slot=0,
    participantId="p-1",
    callsign="W1AW",
    start="2026-11-30T20:01:00Z",
    end="2026-11-30T20:01:12Z",
    offset=60.0,
    duration=12.0,
)
INVITE = p.InviteInfo(
    id="i-0123456789abcdef0123",
    callsign="G4ABC",
    participantId="p-2",
    room="shack",
    role="listener",
    note="",
    createdAt="2025-01-01T00:00:00Z",
    createdBy="W1ADM",
    expiresAt="2025-01-02T00:00:00Z",
    state="revoked",
    revokedAt="2025-01-01T01:00:00Z",
    revokedBy="W1ADM",
)

EXAMPLES: list[BaseModel] = [
    # clients -> server
    p.SessionRequest(callsign="W1AW", stationId="s", sourceInfo={"any": ["thing"]}),
    p.JoinRequest(joinMode="listener"),
    p.SignalRequest(type="offer", to="p-2", data=OFFER),
    p.SignalRequest(type="ice-candidate", data=CANDIDATE),
    p.SignalRequest(type="ice-candidate"),
    p.MuteRequest(isMuted=True),
    p.VolumeRequest(volume=40),
    p.WsClientFrame(type="subscribe", channel="voice", filters={"roomId": "net"}),
    p.WsClientFrame(type="ping", data={"t": 1}),
    p.WsClientFrame(type="subscribe", channel="voice", rosterBatch=True),
    p.WsSignalFrame(
        type="signal", id="s1", data=p.WsSignal(roomId="net", type="offer", to="sfu", data=OFFER)
    ),
    p.WsSignalFrame(type="signal", id="s2", data=p.WsSignal(roomId="net", type="ice-candidate")),
    p.FloorRequestBody(kind="priority"),
    p.FloorTarget(participantId="p-2"),
    p.FloorTarget(),
    p.FloorOrder(order=["p-2", "p-1"]),
    p.ModerationMute(participantId="p-2", muted=True),
    p.ModerationRemove(participantId="p-2", reason="jamming"),
    p.ModerationBan(callsign="N0CALL", duration=3600, reason="jamming"),
    p.ModerationUnban(callsign="N0CALL"),
    p.ModerationAppoint(participantId="p-2", role="logger"),
    p.ModerationAppoint(participantId="p-2", role=None),
    p.NetOpen(name="Sunday Net", preamble="QST"),
    p.NetUpdate(name=None, preamble="QST QST"),
    p.CheckInSelf(traffic=True, location="FN42"),
    p.CheckInAdd(callsign="G4XYZ", via="phone", status="acknowledged", shortTime=True),
    p.CheckInEdit(status="traffic_passed", callsign=None),
    p.CheckInOrder(order=["c-2", "c-1"]),
    p.NetNote(text="band noise S5"),
    # REST answers
    p.SessionAnswer(
        token="t",
        expiresAt="2025-01-01T00:00:00Z",
        sessionId="s",
        participantId="p-1",
        callsign="W1AW",
        role="operator",
    ),
    p.SessionInfo(
        participantId="p-1",
        callsign="W1AW",
        role="listener",
        rooms="*",
        expiresAt="2025-01-01T00:00:00Z",
        sessionId="s",
    ),
    p.SessionInfo(
        participantId="p-1",
        callsign="W1AW",
        role="ncs",
        rooms=["net"],
        expiresAt="2025-01-01T00:00:00Z",
        sessionId="s",
    ),
    p.IceConfigAnswer(iceServers=ICE, iceTransportPolicy="relay", ttl=600),
    p.RoomSummary(**SUMMARY),
    p.RoomDetail(**SUMMARY, participants=[PARTICIPANT]),
    p.JoinAnswer(
        participant=PARTICIPANT,
        peers=[PEER],
        mode="mesh",
        iceServers=ICE,
        sfu=p.SfuInfo(slots=3),
        gracePeriod=15.0,
    ),
    p.Success(),
    p.SignalAnswer(delivered=2),
    p.ErrorAnswer(error="room_full", message="room 'net' is full"),
    # admin (docs/admin.md)
    p.InviteRequest(callsign="G4ABC", room="shack", role="listener", ttl=3600, note="guest"),
    p.InviteRequest(callsign="G4ABC", room="*"),
    INVITE,
    p.InviteMinted(invite=INVITE, token="a.b.c", link="https://voice.example.org/#token=a.b.c"),
    p.InviteList(invites=[INVITE], maxInvites=1000),
    p.AdminOverview(
        rooms=[
            p.OverviewRoom(
                id="net",
                name="Net",
                floor="directed",
                kind="voice",
                maxParticipants=50,
                participantCount=1,
                mode="sfu",
                worker="w-1",
                edges=[],
                participants=[
                    p.OverviewParticipant(
                        id="p-1",
                        callsign="W1AW",
                        role="ncs",
                        isActive=True,
                        canPublish=True,
                        worker="w-1",
                    )
                ],
            )
        ],
        workers=[
            p.OverviewWorker(
                id="w-1",
                slots=3,
                lastSeen="2025-01-01T00:00:00Z",
                rooms=1,
                peers=1,
                streams=1,
                cpu=2.5,
                host="sfu1",
            )
        ],
        store="memory",
        maxRooms=200,
    ),
    p.NetState(roomId="net", net=NET, checkins=[CHECKIN]),
    p.NetState(roomId="net", net=None, checkins=[]),
    NET_EVENT,
    p.NetLogPage(netId="n-1", events=[NET_EVENT], next=2),
    p.RecordingList(
        roomId="net",
        recordings=[
            p.RecordingState(
                id="20261130T200000Z-0a1b2c",
                roomId="net",
                state="stopped",
                startedAt="2026-11-30T20:00:00Z",
                endedAt="2026-11-30T21:00:00Z",
                reason="stopped by net control W1AW",
            )
        ],
    ),
    p.RecordingState(
        id="20261130T200000Z-0a1b2c",
        roomId="net",
        state="recording",
        startedAt="2026-11-30T20:00:00Z",
    ),
    p.TransmissionList(
        roomId="net",
        recordingId="20261130T200000Z-0a1b2c",
        transmissions=[TRANSMISSION.model_copy(update={"url": "/api/voice-rooms/net/x"})],
    ),
    p.NetArchive(roomId="net", nets=[NET.model_copy(update={"closedAt": "2025-01-01T01:00:00Z"})]),
    p.NetRecord(net=NET, checkins=[CHECKIN], events=[NET_EVENT]),
    # server -> clients (/ws)
    p.ConnectedFrame(
        data=p.ConnectedData(
            participantId="p-1",
            callsign="W1AW",
            role="operator",
            protocolVersion=p.PROTOCOL_VERSION,
            expiresAt=1735689600.0,
        )
    ),
    p.ParticipantJoinedFrame(data=p.ParticipantJoinedData(roomId="net", participant=PARTICIPANT)),
    p.ParticipantLeftFrame(
        data=p.ParticipantLeftData(roomId="net", participantId="p-1", reason="no_media")
    ),
    _signal("p-2", OFFER),
    _signal(None, CANDIDATE),
    _signal("p-2", None),
    p.MuteChangedFrame(data=p.MuteChangedData(roomId="net", participantId="p-1", isMuted=True)),
    p.VolumeChangedFrame(data=p.VolumeChangedData(roomId="net", participantId="p-1", volume=5)),
    p.RoomModeChangedFrame(data=p.RoomModeChangedData(roomId="net", mode="sfu", epoch=3)),
    p.SpeakerSlotsFrame(data=p.SpeakerSlotsData(roomId="net", slots=SLOTS, speaking=["p-1"])),
    p.SfuLinksFrame(
        data=p.SfuLinksData(roomId="net", source="3f2a9c01d4e5", notConnected={"p-2": "connecting"})
    ),
    p.PongFrame(data={"t": [1, "x", None]}),
    p.PongFrame(channel="other"),
    p.SubscribedFrame(data=p.SubscribedData(filters={"roomId": "net"})),
    p.UnsubscribedFrame(),
    p.error_frame("too_large", "frame larger than 64 KiB"),
    p.error_frame("peer_not_found", "no participant 'p-9' in this room", "s1", 404),
    p.AckFrame(id="s1", data=p.AckData(delivered=1)),
    p.RosterBatchFrame(
        data=p.RosterBatchData(
            roomId="net",
            frames=[
                p.ParticipantJoinedFrame(
                    data=p.ParticipantJoinedData(roomId="net", participant=PARTICIPANT)
                ),
                p.ParticipantLeftFrame(
                    data=p.ParticipantLeftData(roomId="net", participantId="p-1", reason="left")
                ),
            ],
        )
    ),
    # worker -> server (/sfu/ws)
    p.WorkerHelloFrame(data=p.WorkerHello(workerId="host-1", slots=3, pid=7, host="host")),
    p.WorkerHelloFrame(data=p.WorkerHello(workerId="host-1", slots=3)),
    p.WorkerLoadFrame(data=p.WorkerLoad(rooms=1, peers=3, streams=9, cpu=0.25)),
    p.WorkerDrainingFrame(data=p.WorkerDraining(timeout=20.0)),
    p.WorkerSignalFrame(
        data=p.WorkerSignal(
            roomId="net", to="p-1", type="answer", data=p.SessionDescription(type="answer")
        )
    ),
    p.WorkerSlotsFrame(data=p.WorkerSlots(roomId="net", slots=SLOTS, speaking=[])),
    p.WorkerRoomStateFrame(data=p.WorkerRoomState(roomId="net", audioFrom=["p-1"])),
    p.WorkerLinksFrame(data=p.WorkerLinks(roomId="net", notConnected={"p-1": "failed"})),
    p.ControlErrorFrame(data=ERROR),
    # server -> worker
    p.ToWorkerSignalFrame(
        data=p.ToWorkerSignal(
            roomId="net",
            from_="p-1",
            role="listener",
            canPublish=False,
            callsign="W1AW",
            type="offer",
            data=OFFER,
        )
    ),
    p.ToWorkerSignalFrame(
        data=p.ToWorkerSignal(
            roomId="net",
            from_="p-1",
            role="operator",
            canPublish=True,
            callsign="W1AW",
            type="ice-candidate",
            data=CANDIDATE,
        )
    ),
    p.ToWorkerParticipantLeftFrame(
        data=p.ToWorkerParticipantLeft(roomId="net", participantId="p-1", reason="removed")
    ),
    p.ToWorkerRoomClosedFrame(data=p.ToWorkerRoomClosed(roomId="net")),
    p.ToWorkerFloorFrame(
        data=p.ToWorkerFloor(
            roomId="net",
            directed=True,
            talkers=["p-1"],
            muted=["p-3"],
            tot=180.0,
            totReset=2.0,
            courtesy=p.CourtesyTone(hz=1000, ms=150),
            exempt=["p-0"],
        )
    ),
    p.WorkerTalkerFrame(data=p.WorkerTalker(roomId="net", participantId="p-1", state="cut")),
    p.WorkerCascadeReadyFrame(
        data=p.WorkerCascadeReady(
            roomId="net", origin="w-1", host="10.0.0.2", ports=[40000, 40001, 40002], key="A" * 40
        )
    ),
    p.ToWorkerCascadeLinkFrame(
        data=p.ToWorkerCascadeLink(
            roomId="net", edge="w-2", host="127.0.0.1", ports=[40000, 40001, 40002], key=None
        )
    ),
    p.ToWorkerCascadeUnlinkFrame(data=p.ToWorkerCascadeUnlink(roomId="net", edge="w-2")),
    p.ToWorkerAnnounceFrame(data=p.ToWorkerAnnounce(roomId="net")),
    p.ToWorkerRecordFrame(
        data=p.ToWorkerRecord(roomId="net", recordingId="20261130T200000Z-0a1b2c", netId=None)
    ),
    p.WorkerRecordingFrame(
        data=p.WorkerRecording(
            roomId="net",
            recordingId="20261130T200000Z-0a1b2c",
            state="failed",
            reason="disk full",
            bytes=1024,
        )
    ),
    p.WorkerTransmissionFrame(
        data=p.WorkerTransmission(
            roomId="net", recordingId="20261130T200000Z-0a1b2c", transmission=TRANSMISSION
        )
    ),
    p.RecordingChangedFrame(
        data=p.RecordingChangedData(
            roomId="net",
            recording=p.RecordingState(
                id="20261130T200000Z-0a1b2c",
                roomId="net",
                state="recording",
                startedAt="2026-11-30T20:00:00Z",
                netId="n-1",
            ),
        )
    ),
    p.TransmissionRecordedFrame(
        data=p.TransmissionRecordedData(
            roomId="net",
            recordingId="20261130T200000Z-0a1b2c",
            transmission=TRANSMISSION.model_copy(update={"url": "/api/voice-rooms/net/x"}),
        )
    ),
    p.FloorChangedFrame(
        data=p.FloorChangedData(
            floor=p.FloorState(
                roomId="net",
                version=4,
                floor="directed",
                open=False,
                maxTalkers=1,
                holders=[
                    p.FloorHolder(
                        participantId="p-1",
                        callsign="W1AW",
                        kind="traffic",
                        since="2025-01-01T00:00:00Z",
                        paused=False,
                    )
                ],
                queue=[
                    p.FloorEntry(
                        participantId="p-2",
                        callsign="G4ABC",
                        kind="checkin",
                        at="2025-01-01T00:00:01Z",
                    )
                ],
                appointed={"p-2": "logger"},
                muted=["p-3"],
            )
        )
    ),
    p.ModerationFrame(
        data=p.ModerationData(
            roomId="net",
            action="ban",
            by="W1AW",
            participantId=None,
            callsign="N0CALL",
            reason="jamming",
            until="2025-01-01T01:00:00Z",
            role=None,
        )
    ),
    p.TalkerCutFrame(
        data=p.TalkerCutData(roomId="net", participantId="p-1", reason="tot", resetAfter=2.0)
    ),
    p.NetChangedFrame(
        data=p.NetChangedData(
            roomId="net", change="checkin", net=NET, checkin=CHECKIN, checkinId=None, order=None
        )
    ),
    p.NetChangedFrame(
        data=p.NetChangedData(
            roomId="net", change="closed", net=None, checkin=None, checkinId=None, order=None
        )
    ),
    p.NetLoggedFrame(data=p.NetLoggedData(roomId="net", netId="n-1", event=NET_EVENT)),
]


def _parse_back(example: BaseModel, text: str) -> BaseModel:
    """What the receiving side makes of `text` (its own parser, as in the server/worker)."""
    model = type(example)
    if model in SERVER_FRAMES:
        # The browser client is JavaScript; its types are the union's typedef.
        return TypeAdapter(p.ServerFrame).validate_json(text)
    if model in WORKER_FRAMES or model in TO_WORKER_FRAMES:
        # server/ws.py and Worker.handle: parse_json, then the data model named by `type`.
        frame = p.parse_json(text)
        parsers = p.WORKER_FRAMES if model in WORKER_FRAMES else p.TO_WORKER_FRAMES
        data_model = p.ErrorData if frame["type"] == "error" else parsers[frame["type"]]
        data = data_model.model_validate(frame["data"])
        union = p.WorkerFrame if model in WORKER_FRAMES else p.ToWorkerFrame
        whole = TypeAdapter(union).validate_python(frame)
        assert whole.data == data
        return whole
    # REST: the server's validate_request (client bodies) or the client's JSON.parse.
    return model.model_validate_json(text)


def test_generated_files_are_fresh() -> None:
    for rel, text in render().items():
        path = ROOT / rel
        committed = path.read_text(encoding="utf-8") if path.exists() else ""
        assert committed == text, (
            f"{rel} is stale: the wire models changed; run `make schema` ({COMMAND}) "
            "and commit the result"
        )


def test_check_mode_reports_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert "make schema" in capsys.readouterr().err
    (tmp_path / "docs").mkdir()
    (tmp_path / "client").mkdir()
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--root", str(tmp_path), "--check"]) == 0


def test_every_wire_model_has_an_example() -> None:
    covered = {type(e) for e in EXAMPLES}
    missing = [m.__name__ for m, _ in wire_models() if m not in covered]
    assert not missing, f"add an example of {missing} to EXAMPLES"
    assert {m for m, _ in wire_models()} == {*CLIENT_SENDS, *ANSWERS, *SERVER_FRAMES} | {
        *WORKER_FRAMES,
        *TO_WORKER_FRAMES,
    }


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_model_round_trips_and_matches_the_schema(example: BaseModel) -> None:
    text = json.dumps(p.wire(example))
    back = _parse_back(example, text)
    assert type(back) is type(example)
    assert back == example
    assert p.wire(back) == p.wire(example)
    # The JSON on the wire is what the schema (and so the client's typedefs) says.
    defs = protocol_schema()["$defs"]
    name = type(example).__name__
    validator = Draft202012Validator({"$defs": defs, "$ref": f"#/$defs/{name}"})
    errors = [e.message for e in validator.iter_errors(json.loads(text))]
    assert not errors, errors


def test_wire_format_of_a_signal_keeps_yahaml_shape() -> None:
    """`from` (not from_), `to: null` for a broadcast, a candidate's null fields kept."""
    frame = p.wire(_signal(None, p.IceCandidate(candidate="")))
    assert frame == {
        "type": "signal",
        "channel": "voice",
        "data": {
            "roomId": "net",
            "message": {
                "type": "offer",
                "from": "p-1",
                "to": None,
                "data": {
                    "candidate": "",
                    "sdpMid": None,
                    "sdpMLineIndex": None,
                    "usernameFragment": None,
                },
                "timestamp": "2025-01-01T00:00:00Z",
            },
        },
    }


def test_worker_frames_parse_with_the_frame_type_in_errors() -> None:
    """The parsers keep naming the frame type (`slots.data.…`) through WORKER_FRAMES."""
    assert set(p.WORKER_FRAMES) == {
        "hello",
        "load",
        "draining",
        "signal",
        "slots",
        "roomState",
        "links",
        "talker",
        "cascadeReady",
        "recording",
        "transmission",
    }
    assert set(p.TO_WORKER_FRAMES) == {
        "signal",
        "participantLeft",
        "roomClosed",
        "floor",
        "cascadeLink",
        "cascadeUnlink",
        "announce",
        "record",
    }
    assert p.WORKER_FRAMES["slots"] is p.WorkerSlots
    assert p.TO_WORKER_FRAMES["signal"] is p.ToWorkerSignal
