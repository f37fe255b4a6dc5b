"""What an admin (token role `admin`) may do: rooms at runtime, invites, the live overview.

Rooms and invites are kept in the catalog (catalog.py); an invite is a participant token
whose `jti` is the invite's id, so revoking one invite is revoking that one session (the
store's revocation list, checked on every request and socket) and closing its seats, not
rotating the secret for everyone. Every change is logged as one `admin:` line naming the
admin's callsign (the audit trail).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from yahaml_voice.core.config import Config, RoomConfig
from yahaml_voice.core.protocol import (
    AdminOverview,
    InviteInfo,
    InviteList,
    InviteMinted,
    InviteRequest,
    OverviewParticipant,
    OverviewRoom,
    OverviewWorker,
)
from yahaml_voice.core.timestamps import iso
from yahaml_voice.core.tokens import Identity, issue_token

from .auth import INVITE_PREFIX
from .callsign import CallsignError, normalize_callsign
from .catalog import RoomCatalog
from .errors import ApiError
from .rooms import RoomService
from .store import Store

log = logging.getLogger(__name__)

# Bounds (docs/admin.md): rooms in the catalog, invites kept, what a room may say.
MAX_ROOMS = 200
MAX_INVITES = 1000
MAX_NAME = 80
MAX_DESCRIPTION = 500
MAX_ROOM_PARTICIPANTS = 5000
# Expired invites stay listed this long, then make room for new ones.
KEEP_EXPIRED = 7 * 86400.0
# What cannot change under the people in a room: close it (or wait until it is empty).
NEEDS_EMPTY = ("floor", "kind", "record")


def require_admin(identity: Identity) -> None:
    if identity.role != "admin":
        raise ApiError(403, "admin_only", "this needs a token with the role admin")


class AdminService:
    def __init__(
        self, config: Config, store: Store, rooms: RoomService, catalog: RoomCatalog
    ) -> None:
        self.config = config
        self.store = store
        self.rooms = rooms
        self.catalog = catalog

    async def start(self) -> None:
        await self.catalog.start()
        await self.reapply_revocations()
        # A Redis that restarted empty forgot the revocations too (redis_store.py).
        hooks = getattr(self.store, "on_reconnect", None)
        if isinstance(hooks, list):
            hooks.append(self.reapply_revocations)

    async def stop(self) -> None:
        await self.catalog.stop()

    async def reapply_revocations(self) -> None:
        """Revoked invites are denied again (an in-memory store starts empty)."""
        now = time.time()
        for doc in self.catalog.invites():
            if doc.get("revoked_at") and float(doc["expires_at"]) > now:
                await self.store.revoke(str(doc["id"]), float(doc["expires_at"]))

    # rooms -----------------------------------------------------------------------------
    def _check_room(self, room: RoomConfig) -> None:
        if len(room.name) > MAX_NAME:
            raise ApiError(400, "bad_room", f"name: at most {MAX_NAME} characters")
        if len(room.description) > MAX_DESCRIPTION:
            raise ApiError(400, "bad_room", f"description: at most {MAX_DESCRIPTION} characters")
        if room.max_participants > MAX_ROOM_PARTICIPANTS:
            raise ApiError(400, "bad_room", f"max_participants: at most {MAX_ROOM_PARTICIPANTS}")

    async def create_room(self, identity: Identity, room: RoomConfig) -> RoomConfig:
        self._check_room(room)
        if self.config.room(room.id) is not None:
            raise ApiError(409, "room_exists", f"room {room.id!r} exists; edit it instead")
        if len(self.config.rooms) >= MAX_ROOMS:
            raise ApiError(409, "too_many_rooms", f"at most {MAX_ROOMS} rooms; remove one first")
        if not await self.catalog.create_room(room):
            raise ApiError(409, "room_exists", f"room {room.id!r} exists; edit it instead")
        log.info("admin: %s created room %s", identity.callsign, room.id)
        return room

    async def update_room(self, identity: Identity, room_id: str, room: RoomConfig) -> RoomConfig:
        self._check_room(room)
        if room.id != room_id:
            raise ApiError(400, "bad_room", "a room's id cannot change; add a new room instead")
        old = self.config.room(room_id)
        if old is None:
            raise ApiError(404, "room_not_found", f"no room {room_id!r}")
        changed = [k for k in NEEDS_EMPTY if getattr(old, k) != getattr(room, k)]
        if changed and await self.store.count(room_id) > 0:
            raise ApiError(
                409,
                "room_occupied",
                f"{', '.join(changed)} cannot change while people are in the room",
            )
        await self.catalog.update_room(room)
        # A room on a worker: its new rules (time-out timer, talkers) reach the worker now.
        await self.rooms.net.tell_worker(room_id)
        log.info("admin: %s edited room %s", identity.callsign, room_id)
        return room

    async def delete_room(self, identity: Identity, room_id: str) -> int:
        room = self.config.room(room_id)
        if room is None:
            raise ApiError(404, "room_not_found", f"no room {room_id!r}")
        await self.catalog.delete_room(room_id)
        seated = await self.rooms.close_room(room, identity.callsign)
        log.info("admin: %s removed room %s (%d seated)", identity.callsign, room_id, seated)
        return seated

    # invites ---------------------------------------------------------------------------
    def _info(self, doc: dict[str, Any], now: float | None = None) -> InviteInfo:
        now = time.time() if now is None else now
        expires = float(doc["expires_at"])
        revoked = doc.get("revoked_at")
        return InviteInfo(
            id=doc["id"],
            callsign=doc["callsign"],
            participantId=doc["participant_id"],
            room=doc["room"],
            role=doc["role"],
            note=doc.get("note", ""),
            createdAt=iso(float(doc["created_at"])),
            createdBy=doc["created_by"],
            expiresAt=iso(expires),
            state="revoked" if revoked else "expired" if expires <= now else "active",
            revokedAt=iso(float(revoked)) if revoked else None,
            revokedBy=doc.get("revoked_by"),
        )

    def invites(self) -> InviteList:
        now = time.time()
        infos = [self._info(doc, now) for doc in reversed(self.catalog.invites())]
        return InviteList(invites=infos, maxInvites=MAX_INVITES)

    async def _make_room_for_invite(self) -> None:
        """Forget invites expired long ago; when still full, the oldest expired or revoked."""
        now = time.time()
        docs = self.catalog.invites()
        stale = [d["id"] for d in docs if float(d["expires_at"]) < now - KEEP_EXPIRED]
        if len(docs) - len(stale) >= MAX_INVITES:
            spent = [
                d["id"]
                for d in docs
                if d["id"] not in stale and (d.get("revoked_at") or float(d["expires_at"]) <= now)
            ]
            stale += spent[: len(docs) - len(stale) - MAX_INVITES + 1]
        await self.catalog.delete_invites(stale)
        if len(self.catalog.invites()) >= MAX_INVITES:
            raise ApiError(
                409, "too_many_invites", f"{MAX_INVITES} live invites; revoke some first"
            )

    async def mint_invite(self, identity: Identity, data: InviteRequest, base: str) -> InviteMinted:
        try:
            callsign = normalize_callsign(data.callsign)
        except CallsignError as exc:
            raise ApiError(400, "bad_callsign", str(exc)) from exc
        if data.room != "*" and self.config.room(data.room) is None:
            raise ApiError(404, "room_not_found", f"no room {data.room!r}")
        await self._make_room_for_invite()
        invite_id = INVITE_PREFIX + secrets.token_hex(10)
        now = time.time()
        token, minted = issue_token(
            self.config,
            callsign,
            role=data.role,
            rooms="*" if data.room == "*" else [data.room],
            ttl=float(data.ttl),
            now=now,
            session_id=invite_id,
        )
        doc = {
            "id": invite_id,
            "callsign": callsign,
            "participant_id": minted.participant_id,
            "room": data.room,
            "role": data.role,
            "note": data.note,
            "created_at": now,
            "created_by": identity.callsign,
            "expires_at": minted.expires_at,
            "revoked_at": None,
            "revoked_by": None,
        }
        await self.catalog.put_invite(doc)
        log.info(
            "admin: %s minted invite %s for %s (%s, room %s, until %s)",
            identity.callsign,
            invite_id,
            callsign,
            data.role,
            data.room,
            iso(minted.expires_at),
        )
        return InviteMinted(invite=self._info(doc), token=token, link=f"{base}/#token={token}")

    async def revoke_invite(self, identity: Identity, invite_id: str) -> InviteInfo:
        doc = next((d for d in self.catalog.invites() if d["id"] == invite_id), None)
        if doc is None:
            raise ApiError(404, "invite_not_found", f"no invite {invite_id!r}")
        if doc.get("revoked_at"):
            return self._info(doc)
        # Denied first, so nothing done with the token meanwhile outlives the revocation.
        until = float(doc["expires_at"])
        await self.store.revoke(invite_id, until)
        doc = {**doc, "revoked_at": time.time(), "revoked_by": identity.callsign}
        await self.catalog.put_invite(doc)
        pid = str(doc["participant_id"])
        for room_id in await self.store.rooms_of(pid):
            seated = await self.store.participant(room_id, pid)
            if seated is None or seated.session_id != invite_id:
                continue
            record = await self.store.leave(room_id, pid)
            if record is not None:
                await self.rooms.after_leave(room_id, record, "revoked")
        await self.rooms.close_sockets(
            pid, "revoked", "an admin revoked this invite; ask for a new one", session_id=invite_id
        )
        log.info("admin: %s revoked invite %s (%s)", identity.callsign, invite_id, doc["callsign"])
        return self._info(doc)

    # the live view ---------------------------------------------------------------------
    async def overview(self) -> AdminOverview:
        rooms: list[OverviewRoom] = []
        for room in list(self.config.rooms):
            state = await self.store.room_state(room.id)
            records = sorted(await self.store.participants(room.id), key=lambda r: r.joined_at)
            people = [
                OverviewParticipant(
                    id=r.id,
                    callsign=r.callsign,
                    role=r.role,
                    isActive=r.disconnected_at is None,
                    canPublish=r.can_publish,
                    worker=(r.sfu_worker or state.worker_id) if state.mode == "sfu" else None,
                )
                for r in records
            ]
            rooms.append(
                OverviewRoom(
                    id=room.id,
                    name=room.name,
                    floor=room.floor,
                    kind=room.kind,
                    maxParticipants=room.max_participants,
                    participantCount=len(people),
                    mode=state.mode,
                    worker=state.worker_id,
                    edges=list(state.edges),
                    participants=people,
                )
            )
        workers = [
            OverviewWorker(
                id=w.id,
                slots=w.slots,
                lastSeen=iso(w.last_seen),
                rooms=int(w.load.get("rooms", 0)),
                peers=int(w.load.get("peers", 0)),
                streams=int(w.load.get("streams", 0)),
                cpu=float(w.load.get("cpu", 0.0)),
                host=w.info.get("host"),
                draining=w.draining,
            )
            for w in sorted(await self.store.workers(), key=lambda w: w.id)
        ]
        return AdminOverview(
            rooms=rooms, workers=workers, store=self.store.name, maxRooms=MAX_ROOMS
        )
