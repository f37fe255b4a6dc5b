"""Where nets are kept: the interface, implemented in SQLite for the embedded default
(`netlog_sqlite.py`, a file, so open nets survive a restart) and in Redis when several
processes share the state (`netlog_redis.py`). Both pass tests/test_netlog_store.py."""

from __future__ import annotations

from typing import Protocol

from .netlog import NetDoc, NetEventRecord


class NetLogStore(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def open_net(self, doc: NetDoc) -> bool:
        """Store a new open net (version as given); False if the room already has one."""
        ...

    async def current(self, room_id: str) -> NetDoc | None:
        """The room's open net, if any."""
        ...

    async def get(self, net_id: str) -> NetDoc | None:
        """A net by id, open or archived."""
        ...

    async def set_net(self, doc: NetDoc, expected_version: int) -> bool:
        """Compare-and-set of an open net on its version (`doc.version` is the new one):
        False if it changed since, was closed, or does not exist."""
        ...

    async def close_net(self, doc: NetDoc, expected_version: int, keep: int) -> bool:
        """Like set_net for the closing change (`doc.closed_at` set): the room has no open
        net afterwards and the net is archived; the room keeps at most `keep` closed nets
        (the oldest closed are deleted with their logs)."""
        ...

    async def append_event(
        self, net_id: str, event: NetEventRecord, limit: int
    ) -> NetEventRecord | None:
        """Append a line to an open net's log with the next seq (1, 2, ...), counted in
        `event_count` of the net when next read; None (nothing stored) if the net is not open or its log
        already holds `limit` lines."""
        ...

    async def events(self, net_id: str, after: int = 0, limit: int = 1000) -> list[NetEventRecord]:
        """Lines with seq > after, oldest first, at most `limit`."""
        ...

    async def archive(
        self, room_id: str, limit: int = 50, before: float | None = None
    ) -> list[NetDoc]:
        """The room's closed nets, newest (closed_at) first; only those closed before
        `before` when given (paging)."""
        ...
