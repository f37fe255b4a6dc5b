"""Mesh <-> SFU: when a room moves, onto which worker, and what happens when one dies.

A room's mode, worker and epoch live in the store; a change is a compare-and-set on the
epoch, so of two processes deciding at once one wins and the other adopts its result.

A room may span workers (issue 14): its origin (`worker_id`) holds the publishers and
feeds its edges (`edges`). An edge is added when every worker of the room holds
`sfu.max_listeners_per_worker` participants; losing an edge moves only its listeners;
losing the origin re-places the whole room.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable

from yahaml_voice.core.config import Config, RoomConfig
from yahaml_voice.core.protocol import (
    Mode,
    RoomModeChangedData,
    RoomModeChangedFrame,
    SfuLinksData,
    SfuLinksFrame,
    ToWorkerCascadeLink,
    ToWorkerCascadeLinkFrame,
    ToWorkerCascadeUnlink,
    ToWorkerCascadeUnlinkFrame,
    ToWorkerRoomClosed,
    ToWorkerRoomClosedFrame,
    WorkerCascadeReady,
)

from .delivery import Delivery
from .placement import choose_worker
from .store import RoomState, Store

log = logging.getLogger(__name__)


def links_source(worker_id: str) -> str:
    """The opaque name of a worker in sfuLinks (clients keep one entry per source)."""
    return hashlib.sha256(worker_id.encode()).hexdigest()[:12]


class RoomModes:
    def __init__(self, config: Config, store: Store, delivery: Delivery) -> None:
        self.config = config
        self.store = store
        self.delivery = delivery
        # Serialises mode changes of a room within this process; across processes the
        # store's compare-and-set on the epoch decides.
        self._locks: dict[str, asyncio.Lock] = {}
        # Told (room id, worker id) when a room lands on a worker, before the room hears
        # of it: the worker learns whom to forward (RoomService: net control).
        self.on_placed: Callable[[str, str], Awaitable[None]] | None = None
        # Told (room id, worker id) when a room leaves its origin worker (to mesh or to
        # another worker), before the worker is told to close it: recording stops there.
        self.on_leaving: Callable[[str, str], Awaitable[None]] | None = None
        # Placements this process made ("placed") and could not make for want of a live
        # worker ("no_worker"), for /metrics: an alert's signal that rooms stay in mesh.
        self.placements: collections.Counter[str] = collections.Counter()
        # Re-placements of draining workers' rooms, running on their own (see drain()).
        self._drains: set[asyncio.Task[None]] = set()

    def _lock(self, room_id: str) -> asyncio.Lock:
        return self._locks.setdefault(room_id, asyncio.Lock())

    async def maybe_switch(self, room: RoomConfig, count: int) -> RoomState:
        """Apply the thresholds (with hysteresis) and return the room's state. A directed
        room goes to an SFU worker at its first join and never back to mesh."""
        state = await self.store.room_state(room.id)
        if room.always_sfu:
            if state.mode == "mesh" and count >= 1:
                return await self.place(room.id, reason="always on a worker")
            return state
        mesh_at = room.mesh_threshold if room.mesh_threshold is not None else 1
        if state.mode == "mesh" and count >= room.sfu_threshold:
            return await self.place(room.id, reason=f"{count} participants")
        if state.mode == "sfu" and count <= mesh_at:
            return await self.to_mesh(room.id, reason=f"{count} participants")
        return state

    async def place(self, room_id: str, reason: str, avoid: str | None = None) -> RoomState:
        """Put the room on the least-loaded live worker (a new epoch) and tell everyone."""
        async with self._lock(room_id):
            state = await self.store.room_state(room_id)
            if avoid is None and state.mode == "sfu" and state.worker_id:
                return state  # placed meanwhile (a join and the worker check at once)
            if avoid is not None and state.worker_id != avoid:
                return state  # moved off `avoid` meanwhile (another process, a drain)
            workers = [w for w in await self.store.workers() if w.id != avoid]
            worker = choose_worker(workers)
            if worker is None:
                if state.mode == "sfu" and state.worker_id == avoid:
                    log.warning("room=%s: no SFU worker left; back to mesh", room_id)
                    return await self._set_mode(room_id, state, "mesh", None)
                log.warning(
                    "room=%s should move to SFU (%s) but no worker is live", room_id, reason
                )
                self.placements["no_worker"] += 1
                return state
            log.info("room=%s placed on worker=%s (%s)", room_id, worker.id, reason)
            self.placements["placed"] += 1
            return await self._set_mode(room_id, state, "sfu", worker.id)

    async def to_mesh(self, room_id: str, reason: str) -> RoomState:
        async with self._lock(room_id):
            state = await self.store.room_state(room_id)
            if state.mode != "sfu":
                return state
            log.info("room=%s back to mesh (%s)", room_id, reason)
            return await self._set_mode(room_id, state, "mesh", None)

    async def _set_mode(
        self, room_id: str, state: RoomState, mode: Mode, worker_id: str | None
    ) -> RoomState:
        new = RoomState(mode=mode, worker_id=worker_id, epoch=state.epoch + 1)
        if not await self.store.set_room_state(room_id, new, state.epoch):
            # Another process changed the room first; its state stands.
            return await self.store.room_state(room_id)
        if state.worker_id and state.worker_id != worker_id and self.on_leaving is not None:
            await self.on_leaving(room_id, state.worker_id)
        for old in state.workers:
            if old != worker_id:
                frame = ToWorkerRoomClosedFrame(data=ToWorkerRoomClosed(roomId=room_id))
                await self.delivery.to_worker(old, frame)
        if worker_id and self.on_placed is not None:
            await self.on_placed(room_id, worker_id)
        data = RoomModeChangedData(roomId=room_id, mode=mode, epoch=new.epoch)
        await self.delivery.broadcast(room_id, RoomModeChangedFrame(data=data))
        return new

    # ---------------------------------------------------------------- spanning workers

    async def add_edge(self, room_id: str) -> RoomState:
        """Span the room onto one more worker (the least-loaded live one it is not on yet)
        and return the new state; the state as it is if there is none or the room moved."""
        async with self._lock(room_id):
            state = await self.store.room_state(room_id)
            if state.mode != "sfu" or not state.worker_id:
                return state
            workers = [w for w in await self.store.workers() if w.id not in state.workers]
            worker = choose_worker(workers)
            if worker is None:
                return state
            new = dataclasses.replace(state, edges=[*state.edges, worker.id], epoch=state.epoch + 1)
            if not await self.store.set_room_state(room_id, new, state.epoch):
                return await self.store.room_state(room_id)
            log.info("room=%s spans worker=%s too (origin %s)", room_id, worker.id, state.worker_id)
            return new

    async def edge_ready(self, worker_id: str, ready: WorkerCascadeReady) -> bool:
        """An edge opened its ports: link the origin to it. False if the worker is not an
        edge of that room under that origin (the caller closes the room there)."""
        state = await self.store.room_state(ready.roomId)
        if worker_id not in state.edges or state.worker_id != ready.origin:
            return False
        link = ToWorkerCascadeLink(
            roomId=ready.roomId, edge=worker_id, host=ready.host, ports=ready.ports, key=ready.key
        )
        await self.delivery.to_worker(ready.origin, ToWorkerCascadeLinkFrame(data=link))
        return True

    async def drop_edge(self, room_id: str, worker_id: str, reason: str) -> RoomState:
        """Take a dead edge out of the room; its listeners (only they) offer again and are
        placed on the room's other workers."""
        async with self._lock(room_id):
            state = await self.store.room_state(room_id)
            if worker_id not in state.edges:
                return state
            edges = [w for w in state.edges if w != worker_id]
            new = dataclasses.replace(state, edges=edges, epoch=state.epoch + 1)
            if not await self.store.set_room_state(room_id, new, state.epoch):
                return await self.store.room_state(room_id)
        log.warning("room=%s lost edge worker=%s (%s)", room_id, worker_id, reason)
        assert new.worker_id is not None
        # A draining edge still runs: it closes the room (a dead one hears nothing).
        closed = ToWorkerRoomClosedFrame(data=ToWorkerRoomClosed(roomId=room_id))
        await self.delivery.to_worker(worker_id, closed)
        unlink = ToWorkerCascadeUnlink(roomId=room_id, edge=worker_id)
        await self.delivery.to_worker(new.worker_id, ToWorkerCascadeUnlinkFrame(data=unlink))
        frame = RoomModeChangedFrame(
            data=RoomModeChangedData(roomId=room_id, mode="sfu", epoch=new.epoch)
        )
        for record in await self.store.participants(room_id):
            if record.sfu_worker == worker_id:
                await self.delivery.to_participant(record.id, frame)
        # The others keep their epoch: they forget what the dead edge said about its peers.
        gone = SfuLinksData(roomId=room_id, source=links_source(worker_id), notConnected={})
        await self.delivery.broadcast(room_id, SfuLinksFrame(data=gone))
        return new

    async def worker_lost(self, worker_id: str, why: str = "lost") -> None:
        """Re-place every room of a worker that died, stopped reporting or drains (its edge
        rooms: move their listeners only). The old worker is told roomClosed for each, and
        the participants roomModeChanged: they offer the new worker."""
        for room in self.config.rooms:
            state = await self.store.room_state(room.id)
            if state.mode == "sfu" and state.worker_id == worker_id:
                await self.place(room.id, reason=f"worker {worker_id} {why}", avoid=worker_id)
            elif worker_id in state.edges:
                await self.drop_edge(room.id, worker_id, f"worker {why}")

    async def drain(self, worker_id: str) -> None:
        """Re-place the rooms of a draining worker (its `draining` frame).

        Runs as its own task, shielded: the worker exits as soon as its last room got
        roomClosed, which ends its connection and cancels the handler that called this,
        often before the members were told roomModeChanged; the move must finish anyway."""
        task = asyncio.ensure_future(self.worker_lost(worker_id, "draining"))
        self._drains.add(task)
        task.add_done_callback(self._drain_done)
        await asyncio.shield(task)

    def _drain_done(self, task: asyncio.Task[None]) -> None:
        self._drains.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The worker check of every process retries it (draining workers hold no rooms).
            log.warning("re-placing a draining worker's rooms failed: %r", task.exception())

    async def check_workers(self) -> None:
        """Re-place rooms whose worker's registration expired (no heartbeat) or that drains
        (a room another process placed there just before it heard of the drain)."""
        workers = await self.store.workers()
        live = {w.id for w in workers}
        draining = {w.id for w in workers if w.draining}
        for room in self.config.rooms:
            state = await self.store.room_state(room.id)
            if state.mode == "sfu" and state.worker_id and state.worker_id not in live:
                await self.place(
                    room.id, reason=f"worker {state.worker_id} silent", avoid=state.worker_id
                )
                continue
            if state.mode == "sfu" and state.worker_id in draining:
                await self.place(
                    room.id, reason=f"worker {state.worker_id} draining", avoid=state.worker_id
                )
                continue
            for edge in state.edges:
                if edge not in live:
                    await self.drop_edge(room.id, edge, "worker silent")
                elif edge in draining:
                    await self.drop_edge(room.id, edge, "worker draining")
            if state.mode == "mesh":
                count = await self.store.count(room.id)
                if count >= (1 if room.always_sfu else room.sfu_threshold):
                    # A room that could not be placed earlier (no worker yet).
                    await self.place(room.id, reason=f"{count} participants, worker available")
