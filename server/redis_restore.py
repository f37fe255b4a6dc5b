"""Putting back what this process owns into a Redis that restarted empty.

Redis without persistence may restart empty. The store notices (its node key is gone or
was recreated by someone else, checked with every heartbeat and every room read) and puts
back what this process owns from a small local copy: its sockets, the seats of the
participants connected through it, the room states and net-control floors it last saw
(epochs and floor versions never go back).
Then it calls `on_reconnect` for anything else.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

from redis.asyncio import Redis

from .floor import FloorDoc
from .redis_client import Hooks, guard
from .redis_scripts import Keys, Scripts
from .store import ParticipantRecord, RoomState

log = logging.getLogger(__name__)

# Node TTL used when a socket opens before the node's first heartbeat.
DEFAULT_NODE_TTL = 10.0
# Seats put back after a Redis restart are not refused for capacity: they existed.
RESTORE_LIMIT = 1_000_000_000


class Shadow:
    """What this process owns, kept to put back into a Redis that restarted empty.

    The sockets it holds, the seats of the participants connected through it (as last
    read or written, at most a sweep old) and the room states it last saw (so epochs never
    go backwards). A recovery copy only: Redis stays the authority while it has the data.
    """

    def __init__(self) -> None:
        self.sockets: dict[str, dict[str, str]] = {}
        self.seats: dict[str, dict[str, ParticipantRecord]] = {}
        self.states: dict[str, RoomState] = {}
        # Room id -> the floor document as last read or written (bans, mutes included).
        self.floors: dict[str, FloorDoc] = {}

    def socket_opened(self, participant_id: str, socket_id: str, node_id: str) -> None:
        self.sockets.setdefault(participant_id, {})[socket_id] = node_id

    def socket_closed(self, participant_id: str, socket_id: str) -> None:
        sockets = self.sockets.get(participant_id)
        if sockets is None:
            return
        sockets.pop(socket_id, None)
        if not sockets:
            del self.sockets[participant_id]
            for seats in self.seats.values():
                seats.pop(participant_id, None)

    def seat(self, room_id: str, record: ParticipantRecord) -> None:
        if record.id in self.sockets:
            self.seats.setdefault(room_id, {})[record.id] = record

    def unseat(self, room_id: str, participant_id: str) -> None:
        self.seats.get(room_id, {}).pop(participant_id, None)

    def room(self, room_id: str, records: list[ParticipantRecord]) -> None:
        self.seats[room_id] = {r.id: r for r in records if r.id in self.sockets}

    def state(self, room_id: str, state: RoomState) -> None:
        self.states[room_id] = dataclasses.replace(state)


class Recovery:
    """Watches the node key for proof that Redis still holds what we wrote, and restores.

    The node key this process heartbeats carries a random token; found missing or with
    another value, Redis lost our writes (restart, flush, or our liveness lapsed). A
    restore that fails is retried by the next heartbeat."""

    def __init__(self, client: Redis, keys: Keys, scripts: Scripts) -> None:
        self._client = client
        self._keys = keys
        self._scripts = scripts
        self.shadow = Shadow()
        # Set when a restore could not finish; the next heartbeat tries again.
        self.pending = False
        self.hooks = Hooks("store", first=self.restore)
        # Proves to heartbeat() that the node key is still the one this process wrote.
        self._token = uuid.uuid4().hex
        self._node_ttl: dict[str, float] = {}
        # The node this process heartbeats; its key proves Redis still holds what we wrote.
        self._node: str | None = None
        self._left_while_restoring: set[tuple[str, str]] = set()

    def node_ttl(self, node_id: str) -> float:
        return self._node_ttl.get(node_id, DEFAULT_NODE_TTL)

    async def stop(self) -> None:
        await self.hooks.stop()

    async def heartbeat(self, node_id: str, ttl: float) -> None:
        """Refresh the node key; if it was missing or not ours, Redis lost our state."""
        with guard("node_alive"):
            previous = await self._client.set(
                self._keys.node(node_id), self._token, px=max(1, int(ttl * 1000)), get=True
            )
        known = node_id in self._node_ttl
        self._node_ttl[node_id] = ttl
        self._node = node_id
        if known and previous != self._token:
            self.lapsed("expired or flushed" if previous is None else "recreated by a socket")
        elif self.pending and not self.hooks.running:
            self.hooks.fire()

    async def checked_read(self, command: str, key: str) -> tuple[bool, Any]:
        """Run one read together with a look at our node key (one round trip).

        False when the data cannot be trusted to refresh the shadow: Redis lost our node
        key (it restarted empty) or a restore is still putting things back."""
        node = self._node
        if node is None:
            return True, await getattr(self._client, command)(key)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.get(self._keys.node(node))
            getattr(pipe, command)(key)
            mark, value = await pipe.execute()
        if mark != self._token:
            self.lapsed("missing" if mark is None else "recreated by a socket")
            return False, value
        return not self.pending, value

    def lapsed(self, why: str) -> None:
        if self.pending:
            # Already on it; a restore that fails is retried by the next heartbeat.
            return
        log.warning("redis lost this node's state (node key %s); restoring what it owns", why)
        self.pending = True
        self.hooks.fire()

    def failed_over(self, master: str) -> None:
        """Sentinel promoted a replica: writes it had not received yet are lost, so put back
        what this process owns (a restore only fills in what is missing)."""
        if self._node is None or self.pending:
            return
        log.warning("redis failed over to %s; putting back what this process owns", master)
        self.pending = True
        self.hooks.fire()

    def unseat(self, room_id: str, participant_id: str) -> None:
        self.shadow.unseat(room_id, participant_id)
        if self.pending:
            self._left_while_restoring.add((room_id, participant_id))

    async def restore(self) -> None:
        """Put back this process's sockets, its connected participants' seats and the room
        states it knew, into a Redis that lost them; then the on_reconnect hooks run."""
        node = self._node
        if node is None:
            return
        self.pending = True
        shadow = self.shadow
        scripts = self._scripts
        with guard("restore"):
            await self._client.set(
                self._keys.node(node), self._token, px=max(1, int(self.node_ttl(node) * 1000))
            )
            sockets = [
                (pid, sid, nid)
                for pid, socks in shadow.sockets.items()
                for sid, nid in socks.items()
            ]
            for pid, sid, nid in sockets:
                await scripts.socket_opened(pid, sid, nid, self.node_ttl(nid))
            seats = [(room, rec) for room, recs in shadow.seats.items() for rec in recs.values()]
            for room_id, record in seats:
                await scripts.join(room_id, record, RESTORE_LIMIT, 0)
            states = 0
            for room_id, state in list(shadow.states.items()):
                if state.epoch > 0:
                    states += int(await scripts.room_cas(room_id, state, 0))
            for room_id, doc in list(shadow.floors.items()):
                if doc.version > 0:
                    await scripts.floor_cas(room_id, doc, 0)
            # Sockets that closed and seats given up while we were putting them back.
            for pid, sid, _ in sockets:
                if sid not in shadow.sockets.get(pid, {}):
                    await scripts.socket_closed(pid, sid)
            for room_id, pid in list(self._left_while_restoring):
                await scripts.leave(room_id, pid)
        self._left_while_restoring.clear()
        self.pending = False
        log.info(
            "restored into redis: %d sockets, %d seats, %d room states",
            len(sockets),
            len(seats),
            states,
        )
