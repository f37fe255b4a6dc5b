"""Who is still there: sockets per participant, grace periods, seats nobody uses.

A participant whose last socket closed keeps its seat for `server.grace_period` (a phone
changing networks); a connected one that never negotiates media in company loses it
after `limits.media_timeout`. Any server process may sweep: the store decides once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from yahaml_voice.core.aio import cancel_and_wait, every
from yahaml_voice.core.config import Config, RoomConfig
from yahaml_voice.core.protocol import ParticipantLeftData, ParticipantLeftFrame

from .delivery import Delivery
from .limits import MEDIA, SOCKETS, Limits, RateLimited
from .store import ParticipantRecord, Store, StoreUnavailable

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0
# Every this many sweeps, also look for participants marked connected whose sockets are all
# gone: their server process died without closing them (its node stopped heartbeating).
ORPHAN_CHECK_EVERY = 5

# What the room does once a seat is freed (RoomService: tell the room, maybe switch mode).
AfterLeave = Callable[[str, ParticipantRecord, str], Awaitable[None]]


class Presence:
    def __init__(
        self,
        config: Config,
        store: Store,
        delivery: Delivery,
        limits: Limits,
        after_leave: AfterLeave,
    ) -> None:
        self.config = config
        self.store = store
        self.delivery = delivery
        self.limits = limits
        self.after_leave = after_leave
        # room id -> (epoch, when this process first saw it): a mode switch restarts the
        # media clock of everyone in the room (they negotiate anew).
        self._epoch_seen: dict[str, tuple[int, float]] = {}
        self._sweeps = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sweeps = every(
            SWEEP_INTERVAL,
            self.sweep,
            what="sweep",
            log=log,
            quiet=(StoreUnavailable,),
            wait_first=True,
        )
        self._task = asyncio.create_task(sweeps, name="presence-sweep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def socket_opened(self, participant_id: str, socket_id: str, node_id: str) -> None:
        """Record the socket; RateLimited (and nothing recorded) beyond
        limits.sockets_per_participant, counted across server processes."""
        count = await self.store.socket_opened(participant_id, socket_id, node_id)
        cap = self.config.limits.sockets_per_participant
        if cap and count > cap:
            await self.store.socket_closed(participant_id, socket_id)
            self.limits.refuse(SOCKETS)
            raise RateLimited(
                SOCKETS, f"this participant already has {cap} sockets open; close one", 5.0
            )
        for room_id in await self.store.rooms_of(participant_id):
            await self.store.update(room_id, participant_id, disconnected_at=None)

    async def socket_closed(self, participant_id: str, socket_id: str) -> None:
        remaining = await self.store.socket_closed(participant_id, socket_id)
        if remaining:
            return
        now = time.time()
        for room_id in await self.store.rooms_of(participant_id):
            await self.store.update(room_id, participant_id, disconnected_at=now)

    async def sweep(self) -> None:
        """Remove participants whose grace period ran out (any process may do it).

        Every few sweeps, participants who look connected but have no live socket left
        (their server process died) start their grace period here instead."""
        now = time.time()
        cutoff = now - self.config.server.grace_period
        self._sweeps += 1
        orphans = self._sweeps % ORPHAN_CHECK_EVERY == 0
        for room in self.config.rooms:
            records = await self.store.participants(room.id)
            await self._release_silent(room, records, now)
            for record in records:
                if record.disconnected_at is None:
                    if orphans and not await self.store.socket_count(record.id):
                        log.info(
                            "room=%s participant=%s lost its server; grace starts",
                            room.id,
                            record.id,
                        )
                        await self.store.update(room.id, record.id, disconnected_at=now)
                    continue
                if record.disconnected_at > cutoff:
                    continue
                if await self.store.socket_count(record.id):
                    # A socket opened elsewhere before it could clear the mark.
                    await self.store.update(room.id, record.id, disconnected_at=None)
                    continue
                removed = await self.store.leave_if_gone(room.id, record.id, cutoff)
                if removed is not None:
                    await self.after_leave(room.id, removed, "grace period expired")

    async def _release_silent(
        self, room: RoomConfig, records: list[ParticipantRecord], now: float
    ) -> None:
        """Free the seats of connected participants who, in company, never sent an offer or
        answer within limits.media_timeout: idle sockets must not keep a room full.

        A lone participant has nobody to negotiate with and keeps its seat; in mesh mode two
        listeners have nothing to send each other, so only a publisher on either side makes
        company. The clock starts when the company arrived (or the room changed mode)."""
        timeout = self.config.limits.media_timeout
        if timeout <= 0 or len(records) < 2:
            return
        if all(r.media_started or r.disconnected_at is not None for r in records):
            return
        state = await self.store.room_state(room.id)
        seen = self._epoch_seen.get(room.id)
        if seen is None or seen[0] != state.epoch:
            seen = (state.epoch, now)
            self._epoch_seen[room.id] = seen
        for record in records:
            if record.media_started or record.disconnected_at is not None:
                continue
            company = [
                other.joined_at
                for other in records
                if other.id != record.id
                and (state.mode == "sfu" or record.can_publish or other.can_publish)
            ]
            if not company:
                continue
            since = max(record.joined_at, min(company), seen[1])
            if now - since < timeout:
                continue
            current = await self.store.participant(room.id, record.id)
            if current is None or current.media_started:
                continue
            removed = await self.store.leave(room.id, record.id)
            if removed is None:
                continue
            self.limits.refuse(MEDIA)
            data = ParticipantLeftData(roomId=room.id, participantId=record.id, reason="no_media")
            await self.delivery.to_participant(record.id, ParticipantLeftFrame(data=data))
            await self.after_leave(room.id, removed, "no_media")
