"""Room definitions and invites, kept in a store so they outlive the process and are shared.

The configuration file's `rooms:` seed the catalog: an id the catalog has never seen is
added at start; after that the catalog's copy wins (an admin's edits and removals stand
whatever the file says). Every process mirrors the catalog into `config.rooms`, which is
what the room rules read, and polls the store's version to pick up other processes'
changes. Backends: `catalog_sqlite.py` (the embedded default, in the net log's file) and
`catalog_redis.py` (shared by every process of a deployment).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from yahaml_voice.core.aio import cancel_and_wait, every
from yahaml_voice.core.config import Config, RoomConfig

from .store import StoreUnavailable

log = logging.getLogger(__name__)

# How often a process looks for other processes' changes (one small read).
POLL_INTERVAL = 2.0


@dataclass
class CatalogData:
    """What a backend holds: room docs `{"room": RoomConfig dict, "order": n}` and invite
    docs by id, the ids ever seeded from a file, and a version bumped by every change
    (0: nothing stored, e.g. a Redis that restarted empty)."""

    rooms: dict[str, dict[str, Any]] = field(default_factory=dict)
    invites: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeded: set[str] = field(default_factory=set)
    version: int = 0


class CatalogStore(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def load(self) -> CatalogData: ...

    async def version(self) -> int: ...

    async def seed(self, rooms: list[dict[str, Any]]) -> int:
        """Add each room doc whose id was never seeded (and mark it seeded); how many."""
        ...

    async def put_room(self, room_id: str, doc: dict[str, Any], create: bool) -> bool:
        """Store a room doc; with `create`, False (nothing written) if the id exists."""
        ...

    async def delete_room(self, room_id: str) -> bool: ...

    async def put_invite(self, invite_id: str, doc: dict[str, Any]) -> None: ...

    async def delete_invites(self, invite_ids: list[str]) -> None: ...

    async def restore(self, data: CatalogData) -> None:
        """Write back a whole catalog (the store lost it)."""
        ...


def room_doc(room: RoomConfig, order: float) -> dict[str, Any]:
    return {"room": room.model_dump(mode="json"), "order": order}


class RoomCatalog:
    """This process's view of the catalog; `config.rooms` follows it."""

    def __init__(self, config: Config, backend: CatalogStore) -> None:
        self.config = config
        self.backend = backend
        # The file's rooms, as loaded: what seeds the catalog.
        self.seed_rooms = list(config.rooms)
        self.data = CatalogData()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.backend.start()
        docs = [room_doc(room, i) for i, room in enumerate(self.seed_rooms)]
        added = await self.backend.seed(docs)
        if added:
            log.info("catalog: %d room(s) seeded from the configuration", added)
        await self.refresh()
        self._task = asyncio.create_task(
            every(POLL_INTERVAL, self.refresh, what="catalog", log=log, quiet=(StoreUnavailable,)),
            name="catalog-poll",
        )

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self.backend.stop()

    async def refresh(self) -> None:
        """Reload when the stored version moved; put the catalog back if the store lost it."""
        version = await self.backend.version()
        if version == 0 and self.data.version > 0:
            log.warning("catalog: the store lost the room definitions; writing them back")
            await self.backend.restore(self.data)
            version = await self.backend.version()
        if version == self.data.version:
            return
        self.data = await self.backend.load()
        self._apply()

    def _apply(self) -> None:
        rooms: list[tuple[float, RoomConfig]] = []
        for room_id, doc in self.data.rooms.items():
            try:
                rooms.append((float(doc["order"]), RoomConfig.model_validate(doc["room"])))
            except (KeyError, TypeError, ValueError, ValidationError) as exc:
                log.warning("catalog: room %r skipped (not a valid definition: %s)", room_id, exc)
        rooms.sort(key=lambda item: item[0])
        # A new list (a loop over the old one, across awaits, finishes on the old one);
        # every part of the server reads config.rooms afresh.
        self.config.rooms = [room for _, room in rooms]

    # rooms -----------------------------------------------------------------------------
    async def create_room(self, room: RoomConfig) -> bool:
        created = await self.backend.put_room(room.id, room_doc(room, time.time()), create=True)
        await self.refresh()
        return created

    async def update_room(self, room: RoomConfig) -> None:
        order = float(self.data.rooms.get(room.id, {}).get("order", time.time()))
        await self.backend.put_room(room.id, room_doc(room, order), create=False)
        await self.refresh()

    async def delete_room(self, room_id: str) -> bool:
        deleted = await self.backend.delete_room(room_id)
        await self.refresh()
        return deleted

    # invites ---------------------------------------------------------------------------
    def invites(self) -> list[dict[str, Any]]:
        return sorted(self.data.invites.values(), key=lambda d: float(d.get("created_at", 0)))

    async def put_invite(self, doc: dict[str, Any]) -> None:
        await self.backend.put_invite(str(doc["id"]), doc)
        await self.refresh()

    async def delete_invites(self, invite_ids: list[str]) -> None:
        if invite_ids:
            await self.backend.delete_invites(invite_ids)
            await self.refresh()
