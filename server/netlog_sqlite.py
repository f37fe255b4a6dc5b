"""The net log in SQLite: the embedded default (`netlog.path`), so open nets survive a restart.

One connection, opened, used and closed by ONE dedicated worker thread (a single-thread
executor): the event loop never waits on the disk, and the calls of this process are
serialised without locks. WAL journal, `synchronous=FULL` (a commit is on disk when the
call returns; the log is written a few times a second at most).

Schema (`PRAGMA user_version` 1):

    nets(id PK, room_id, opened_at, closed_at, version, event_count, doc)
        doc is the NetDoc as JSON (its `event_count` is not trusted: the column is);
        a partial unique index on room_id WHERE closed_at IS NULL keeps one open net
        per room, whoever writes the file.
    events(net_id, seq, at, doc)  PK (net_id, seq); doc is the NetEventRecord as JSON.

Compare-and-set is `UPDATE ... WHERE id=? AND version=? AND closed_at IS NULL` and its
rowcount; closing (with the archive trimmed to `keep`) and appending (seq, bound) are
each one transaction. SQLite failures (disk full, I/O errors, a locked file) surface as
`StoreUnavailable`, like a Redis outage.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .netlog import NetDoc, NetEventRecord
from .sqlite_thread import SqliteThread, dumps

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nets (
    id          TEXT PRIMARY KEY,
    room_id     TEXT NOT NULL,
    opened_at   REAL NOT NULL,
    closed_at   REAL,
    version     INTEGER NOT NULL,
    event_count INTEGER NOT NULL DEFAULT 0,
    doc         TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS nets_open_per_room ON nets(room_id) WHERE closed_at IS NULL;
CREATE INDEX IF NOT EXISTS nets_archive ON nets(room_id, closed_at) WHERE closed_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    net_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    at     REAL NOT NULL,
    doc    TEXT NOT NULL,
    PRIMARY KEY (net_id, seq)
) WITHOUT ROWID;
"""

# How long a write waits for another connection to the same file (another process).
BUSY_TIMEOUT = 5.0


def _doc(raw: str, event_count: int) -> NetDoc:
    doc = NetDoc.from_dict(json.loads(raw))
    doc.event_count = int(event_count)
    return doc


class SqliteNetLog(SqliteThread):
    """NetLogStore in one SQLite file; see the module docstring."""

    name = "sqlite"
    what = "net log"

    async def start(self) -> None:
        if self._executor is None:
            await super().start()
            log.info("net log in %s", self.path)

    # in the worker thread ----------------------------------------------------------------
    def _open(self) -> None:
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: transactions are explicit (BEGIN IMMEDIATE in _write).
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {version} is newer than this server's ({SCHEMA_VERSION})"
                )
            # (executescript would commit on its own: one statement at a time instead.)
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteNetLog is not open")
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` in one write transaction (BEGIN IMMEDIATE: no other writer meanwhile)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def _open_net(self, doc: NetDoc) -> bool:
        try:
            self._db.execute(
                "INSERT INTO nets (id, room_id, opened_at, closed_at, version, event_count, doc)"
                " VALUES (?, ?, ?, NULL, ?, 0, ?)",
                (doc.id, doc.room_id, doc.opened_at, doc.version, dumps(doc.to_dict())),
            )
        except sqlite3.IntegrityError:
            # The room has an open net (partial unique index), or the id is taken.
            return False
        return True

    def _current(self, room_id: str) -> NetDoc | None:
        row = self._db.execute(
            "SELECT doc, event_count FROM nets WHERE room_id = ? AND closed_at IS NULL",
            (room_id,),
        ).fetchone()
        return _doc(*row) if row else None

    def _get(self, net_id: str) -> NetDoc | None:
        row = self._db.execute(
            "SELECT doc, event_count FROM nets WHERE id = ?", (net_id,)
        ).fetchone()
        return _doc(*row) if row else None

    def _set_net(self, doc: NetDoc, expected_version: int) -> bool:
        cursor = self._db.execute(
            "UPDATE nets SET version = ?, doc = ?"
            " WHERE id = ? AND room_id = ? AND version = ? AND closed_at IS NULL",
            (doc.version, dumps(doc.to_dict()), doc.id, doc.room_id, expected_version),
        )
        return cursor.rowcount == 1

    def _close_net(self, doc: NetDoc, expected_version: int, keep: int) -> bool:
        def close(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE nets SET closed_at = ?, version = ?, doc = ?"
                " WHERE id = ? AND room_id = ? AND version = ? AND closed_at IS NULL",
                (
                    doc.closed_at,
                    doc.version,
                    dumps(doc.to_dict()),
                    doc.id,
                    doc.room_id,
                    expected_version,
                ),
            )
            if cursor.rowcount != 1:
                return False
            # The archive keeps the `keep` newest closed nets (same order as archive()).
            old = [
                (net_id,)
                for (net_id,) in db.execute(
                    "SELECT id FROM nets WHERE room_id = ? AND closed_at IS NOT NULL"
                    " ORDER BY closed_at DESC, id DESC LIMIT -1 OFFSET ?",
                    (doc.room_id, max(0, keep)),
                )
            ]
            if old:
                db.executemany("DELETE FROM events WHERE net_id = ?", old)
                db.executemany("DELETE FROM nets WHERE id = ?", old)
            return True

        return self._write(close)

    def _append_event(self, net_id: str, event: NetEventRecord, limit: int) -> int | None:
        def append(db: sqlite3.Connection) -> int | None:
            row = db.execute(
                "SELECT event_count FROM nets WHERE id = ? AND closed_at IS NULL", (net_id,)
            ).fetchone()
            if row is None or row[0] >= limit:
                return None
            seq = int(row[0]) + 1
            data = event.to_dict()
            data["seq"] = seq
            db.execute(
                "INSERT INTO events (net_id, seq, at, doc) VALUES (?, ?, ?, ?)",
                (net_id, seq, event.at, dumps(data)),
            )
            db.execute("UPDATE nets SET event_count = ? WHERE id = ?", (seq, net_id))
            return seq

        return self._write(append)

    def _events(self, net_id: str, after: int, limit: int) -> list[NetEventRecord]:
        rows = self._db.execute(
            "SELECT seq, doc FROM events WHERE net_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (net_id, after, limit),
        ).fetchall()
        events = []
        for seq, raw in rows:
            event = NetEventRecord.from_dict(json.loads(raw))
            event.seq = int(seq)
            events.append(event)
        return events

    def _archive(self, room_id: str, limit: int, before: float | None) -> list[NetDoc]:
        if before is None:
            rows = self._db.execute(
                "SELECT doc, event_count FROM nets WHERE room_id = ? AND closed_at IS NOT NULL"
                " ORDER BY closed_at DESC, id DESC LIMIT ?",
                (room_id, limit),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT doc, event_count FROM nets WHERE room_id = ? AND closed_at IS NOT NULL"
                " AND closed_at < ? ORDER BY closed_at DESC, id DESC LIMIT ?",
                (room_id, before, limit),
            ).fetchall()
        return [_doc(*row) for row in rows]

    # NetLogStore -----------------------------------------------------------------------
    async def open_net(self, doc: NetDoc) -> bool:
        if doc.closed_at is not None:
            raise ValueError("open_net: the net is closed")
        return await self._run(self._open_net, doc)

    async def current(self, room_id: str) -> NetDoc | None:
        return await self._run(self._current, room_id)

    async def get(self, net_id: str) -> NetDoc | None:
        return await self._run(self._get, net_id)

    async def set_net(self, doc: NetDoc, expected_version: int) -> bool:
        if doc.closed_at is not None:
            raise ValueError("set_net cannot close a net; use close_net")
        return await self._run(self._set_net, doc, expected_version)

    async def close_net(self, doc: NetDoc, expected_version: int, keep: int) -> bool:
        if doc.closed_at is None:
            raise ValueError("close_net: doc.closed_at is not set")
        return await self._run(self._close_net, doc, expected_version, keep)

    async def append_event(
        self, net_id: str, event: NetEventRecord, limit: int
    ) -> NetEventRecord | None:
        seq = await self._run(self._append_event, net_id, event, limit)
        if seq is None:
            return None
        return NetEventRecord.from_dict({**event.to_dict(), "seq": seq})

    async def events(self, net_id: str, after: int = 0, limit: int = 1000) -> list[NetEventRecord]:
        if limit <= 0:
            return []
        return await self._run(self._events, net_id, max(0, after), limit)

    async def archive(
        self, room_id: str, limit: int = 50, before: float | None = None
    ) -> list[NetDoc]:
        if limit <= 0:
            return []
        return await self._run(self._archive, room_id, limit, before)
