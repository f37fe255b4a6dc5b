"""One SQLite connection on one worker thread, shared by the net log and the catalog.

sqlite3 objects may not cross threads, and one writer per process needs no locks: every
call runs on the same single thread through `_run`, which turns SQLite's errors into
`StoreUnavailable` (a 503 to the client, never a 500).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .store import StoreUnavailable

T = TypeVar("T")


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class SqliteThread:
    """Subclasses open `self._conn` in `_open` (called on the thread by `start`)."""

    what = "sqlite"  # names the thread and the errors

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        # Touched only from the executor's thread.
        self._conn: sqlite3.Connection | None = None

    async def start(self) -> None:
        if self._executor is not None:
            return
        prefix = self.what.replace(" ", "-")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=prefix)
        try:
            await self._run(self._open)
        except BaseException:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=True)
            raise

    async def stop(self) -> None:
        executor = self._executor
        if executor is None:
            return
        try:
            await self._run(self._close)
        finally:
            self._executor = None
            # Its one thread is idle now: joining it does not block.
            executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError(f"{type(self).__name__} used before start() or after stop()")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.what} {self.path}: {exc}") from exc

    # on the worker thread ----------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
