"""Where frames go: a bus channel per participant and per SFU worker, room broadcasts.

Nothing reaches a room but through its member list in the store, so a frame can never
leak into another room; a broadcast is one bus batch (one Redis pipeline round trip).

Roster changes of a big room are coalesced: a join storm of N participants would
otherwise send each member one frame per join, N² frames in all. A room's roster goes out
at most once per window: the first change of a quiet room at once, as the plain frame
(no join waits for a timer when nothing else is happening), the changes that follow it
within the window together when the window ends, to each member as one `rosterBatch`
frame (a socket that did not ask for batches gets the frames it holds one by one,
connections.py). Any other broadcast to the room sends the pending batch first, so a
member never sees a room event before the roster change it follows. Batches are per
server process; each process's own are in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from pydantic import BaseModel

from yahaml_voice.core.aio import cancel_and_wait
from yahaml_voice.core.protocol import (
    ParticipantJoinedFrame,
    ParticipantLeftFrame,
    RosterBatchData,
    RosterBatchFrame,
    ServerFrame,
    ToWorkerFrame,
    wire,
)

from .store import Bus, Store

log = logging.getLogger(__name__)

RosterFrame = ParticipantJoinedFrame | ParticipantLeftFrame


def participant_channel(participant_id: str) -> str:
    return f"p:{participant_id}"


def worker_channel(worker_id: str) -> str:
    return f"w:{worker_id}"


@dataclass
class _Batch:
    """A room's roster changes waiting for the window to end, and who waits for them."""

    frames: list[RosterFrame] = field(default_factory=list)
    sent: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    timer: asyncio.Task[None] | None = None
    due: float = 0.0  # when (loop time) the timer sends it


class Delivery:
    def __init__(
        self, store: Store, bus: Bus, batch_above: int = 0, batch_window: float = 0.1
    ) -> None:
        self.store = store
        self.bus = bus
        self.batch_above = batch_above
        self.batch_window = batch_window
        self._batches: dict[str, _Batch] = {}
        # Until when (loop time) a room's roster changes wait for a batch: one window
        # after its last roster send. Expired entries are dropped as new ones come.
        self._busy_until: dict[str, float] = {}
        self._last_change: dict[str, float] = {}  # when a room's last roster change came
        # A room's roster frame on its way at once: its batch goes out only after it.
        self._sending: dict[str, asyncio.Future[None]] = {}

    async def stop(self) -> None:
        """Send what is pending (best effort), then end the timers."""
        for room_id in list(self._batches):
            with contextlib.suppress(Exception):
                await self._flush(room_id)
        timers = [b.timer for b in self._batches.values() if b.timer is not None]
        self._batches.clear()
        await cancel_and_wait(*timers)

    async def broadcast(self, room_id: str, frame: ServerFrame, exclude: str | None = None) -> int:
        """Send `frame` to every member of the room but `exclude`; how many it went to."""
        if room_id in self._batches:
            await self._flush(room_id)
        return await self._broadcast(room_id, frame, exclude)

    async def _broadcast(self, room_id: str, frame: BaseModel, exclude: str | None) -> int:
        message = wire(frame)
        items = [
            (participant_channel(record.id), message)
            for record in await self.store.participants(room_id)
            if record.id != exclude
        ]
        await self.bus.publish_many(items)
        return len(items)

    async def roster(
        self, room_id: str, frame: RosterFrame, members: int, wait: bool = True
    ) -> None:
        """A participantJoined (not to its subject) or participantLeft: at once to a room
        of fewer than `batch_above` members or to a quiet one, else with the room's other
        changes of the window. With `wait`, returns once the frame went out (a joiner's
        next request then follows its participantJoined everywhere); without, a sweep that
        removes many seats one after the other does not wait a window for each."""
        if self.batch_above <= 0 or members < self.batch_above:
            exclude = (
                frame.data.participant.id if isinstance(frame, ParticipantJoinedFrame) else None
            )
            await self.broadcast(room_id, frame, exclude)
            return
        now = asyncio.get_running_loop().time()
        batch = self._batches.get(room_id)
        last_change = self._last_change.get(room_id, -self.batch_window)
        self._last_change[room_id] = now
        quiet = now - last_change >= self.batch_window or now >= self._busy_until.get(room_id, 0.0)
        if batch is None and quiet:
            # A quiet room (no change for a window, or none sent for one): this change
            # goes now, and opens the window for what follows. Judged by the gap since the
            # last change, so changes about one window apart go at once instead of each
            # waiting for the window the one before it opened.
            self._quiet(room_id, now)
            exclude = (
                frame.data.participant.id if isinstance(frame, ParticipantJoinedFrame) else None
            )
            sending = self._sending[room_id] = asyncio.get_running_loop().create_future()
            try:
                await self._broadcast(room_id, frame, exclude)
            finally:
                sending.set_result(None)
                if self._sending.get(room_id) is sending:
                    del self._sending[room_id]
            return
        if batch is None:
            batch = self._batches[room_id] = _Batch(due=self._busy_until[room_id])
            delay = batch.due - now
            batch.timer = asyncio.create_task(self._flush_later(room_id, batch, delay))
        batch.frames.append(frame)
        if wait:
            await asyncio.shield(batch.sent)

    def _quiet(self, room_id: str, now: float) -> None:
        """A roster send at `now`: the room's next changes wait until one window later."""
        if len(self._busy_until) > 256:
            self._busy_until = {r: t for r, t in self._busy_until.items() if t > now}
            self._last_change = {r: self._last_change[r] for r in self._busy_until}
        self._busy_until[room_id] = now + self.batch_window

    async def _flush_later(self, room_id: str, batch: _Batch, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._batches.get(room_id) is batch:
            try:
                await self._flush(room_id)
            except Exception as exc:  # its waiters got it too
                log.warning("room %s: sending a roster batch failed: %s", room_id, exc)

    async def _flush(self, room_id: str) -> None:
        """Send the room's pending batch now: one frame per member, one bus round trip."""
        batch = self._batches.pop(room_id, None)
        if batch is None:
            return
        if batch.timer is not None and batch.timer is not asyncio.current_task():
            batch.timer.cancel()
        # The next window starts when this one was due, not when the timer woke (or this
        # ran): otherwise changes arriving once a window would each wait a little longer
        # than the one before, up to a whole window.
        self._quiet(room_id, min(asyncio.get_running_loop().time(), batch.due))
        frame = RosterBatchFrame(data=RosterBatchData(roomId=room_id, frames=batch.frames))
        try:
            sending = self._sending.get(room_id)
            if sending is not None:
                await asyncio.shield(sending)
            await self._broadcast(room_id, frame, None)
        except Exception as exc:
            if not batch.sent.done():
                batch.sent.set_exception(exc)
                batch.sent.exception()  # retrieved: waiters may all be gone
            raise
        if not batch.sent.done():
            batch.sent.set_result(None)

    async def to_participant(self, participant_id: str, frame: BaseModel) -> None:
        """A frame for one participant's sockets, on whichever process holds them (a
        ServerFrame, or a notice between processes such as RevokeNotice)."""
        await self.bus.publish(participant_channel(participant_id), wire(frame))

    async def to_worker(self, worker_id: str, frame: ToWorkerFrame) -> None:
        await self.bus.publish(worker_channel(worker_id), wire(frame))
