"""What clients see of the state: store records rendered as wire models, access rules.

Pure functions of a record or of the configuration, shared by the REST answers, the
room rules and the frames they broadcast.
"""

from __future__ import annotations

from yahaml_voice.core.config import Config, RoomConfig
from yahaml_voice.core.protocol import LeaveReason, Participant, Peer
from yahaml_voice.core.timestamps import iso
from yahaml_voice.core.tokens import Identity

from .errors import ApiError
from .store import ParticipantRecord


def room_config(config: Config, room_id: str) -> RoomConfig:
    room = config.room(room_id)
    if room is None:
        raise ApiError(404, "room_not_found", f"no room {room_id!r}")
    return room


def check_access(config: Config, identity: Identity, room_id: str) -> RoomConfig:
    """The room, if it exists and the caller's token admits them to it."""
    room = room_config(config, room_id)
    if not identity.may_enter(room_id):
        raise ApiError(403, "forbidden", f"your token does not admit you to room {room_id!r}")
    return room


def participant_view(record: ParticipantRecord) -> Participant:
    return Participant(
        id=record.id,
        displayName=record.callsign,
        role=record.role,
        joinedAt=iso(record.joined_at),
        isActive=record.disconnected_at is None,
        isMuted=record.is_muted,
        volume=record.volume,
        audioSourceType=record.audio_source,
        canPublish=record.can_publish,
    )


def peer_view(record: ParticipantRecord) -> Peer:
    return Peer(
        id=record.id,
        displayName=record.callsign,
        audioSourceType=record.audio_source,
        role=record.role,
        isMuted=record.is_muted,
        canPublish=record.can_publish,
    )


def leave_reason(why: str) -> LeaveReason:
    """The `reason` of participantLeft: left, logout, removed, no_media, room_closed,
    revoked or timeout."""
    reasons: dict[str, LeaveReason] = {
        "left": "left",
        "logout": "logout",
        "removed": "removed",
        "no_media": "no_media",
        "room_closed": "room_closed",
        "revoked": "revoked",
    }
    return reasons.get(why, "timeout")
