"""The catalog (catalog.py) in SQLite: the embedded default keeps room definitions and
invites in the net log's file (`netlog.path`), so they survive a restart and one backup
holds everything the embedded server keeps.

Tables of their own beside the net log's (which never reads them):

    catalog_rooms(id PK, doc)      catalog_invites(id PK, doc)
    catalog_seeded(id PK)          catalog_meta(key PK, value)   key 'version'

One connection on one worker thread, as in netlog_sqlite.py; every change is one
transaction that also bumps the version. SQLite failures surface as `StoreUnavailable`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .catalog import CatalogData
from .sqlite_thread import SqliteThread, dumps

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS catalog_rooms (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS catalog_invites (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS catalog_seeded (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS catalog_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class SqliteCatalog(SqliteThread):
    name = "sqlite"
    what = "catalog"

    # on the worker thread ----------------------------------------------------------------
    def _open(self) -> None:
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(_SCHEMA)
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """One transaction: `fn`'s changes and the version bump (only if fn changed rows)."""
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = conn.total_changes
            result = fn(conn)
            if conn.total_changes != before:
                conn.execute(
                    "INSERT INTO catalog_meta(key, value) VALUES('version', 1) "
                    "ON CONFLICT(key) DO UPDATE SET value = value + 1"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return result

    def _version(self) -> int:
        row = self._db().execute("SELECT value FROM catalog_meta WHERE key='version'").fetchone()
        return int(row[0]) if row else 0

    def _load(self) -> CatalogData:
        conn = self._db()
        return CatalogData(
            rooms={i: json.loads(d) for i, d in conn.execute("SELECT id, doc FROM catalog_rooms")},
            invites={
                i: json.loads(d) for i, d in conn.execute("SELECT id, doc FROM catalog_invites")
            },
            seeded={row[0] for row in conn.execute("SELECT id FROM catalog_seeded")},
            version=self._version(),
        )

    def _seed(self, rooms: list[dict[str, Any]]) -> int:
        def apply(conn: sqlite3.Connection) -> int:
            added = 0
            for doc in rooms:
                room_id = doc["room"]["id"]
                new = conn.execute(
                    "INSERT OR IGNORE INTO catalog_seeded(id) VALUES(?)", (room_id,)
                ).rowcount
                if new:
                    conn.execute(
                        "INSERT OR IGNORE INTO catalog_rooms(id, doc) VALUES(?, ?)",
                        (room_id, dumps(doc)),
                    )
                    added += 1
            return added

        return self._write(apply)

    def _put_room(self, room_id: str, doc: dict[str, Any], create: bool) -> bool:
        verb = "INSERT OR IGNORE" if create else "INSERT OR REPLACE"
        sql = f"{verb} INTO catalog_rooms(id, doc) VALUES(?, ?)"
        return self._write(lambda c: c.execute(sql, (room_id, dumps(doc))).rowcount > 0)

    def _delete_room(self, room_id: str) -> bool:
        sql = "DELETE FROM catalog_rooms WHERE id = ?"
        return self._write(lambda c: c.execute(sql, (room_id,)).rowcount > 0)

    def _put_invite(self, invite_id: str, doc: dict[str, Any]) -> None:
        sql = "INSERT OR REPLACE INTO catalog_invites(id, doc) VALUES(?, ?)"
        self._write(lambda c: c.execute(sql, (invite_id, dumps(doc))))

    def _delete_invites(self, invite_ids: list[str]) -> None:
        sql = "DELETE FROM catalog_invites WHERE id = ?"
        self._write(lambda c: c.executemany(sql, [(i,) for i in invite_ids]))

    # the CatalogStore API ------------------------------------------------------------------
    async def load(self) -> CatalogData:
        return await self._run(self._load)

    async def version(self) -> int:
        return await self._run(self._version)

    async def seed(self, rooms: list[dict[str, Any]]) -> int:
        return await self._run(self._seed, rooms)

    async def put_room(self, room_id: str, doc: dict[str, Any], create: bool) -> bool:
        return await self._run(self._put_room, room_id, doc, create)

    async def delete_room(self, room_id: str) -> bool:
        return await self._run(self._delete_room, room_id)

    async def put_invite(self, invite_id: str, doc: dict[str, Any]) -> None:
        await self._run(self._put_invite, invite_id, doc)

    async def delete_invites(self, invite_ids: list[str]) -> None:
        await self._run(self._delete_invites, invite_ids)

    async def restore(self, data: CatalogData) -> None:
        return None  # a file does not forget on its own
