"""Full garbage collections after peer connections close, at most one per interval.

A closed aiortc RTCPeerConnection stays in reference cycles (transports, DTLS state,
codec parameters) that only a full collection frees, and CPython runs one only once the
long-lived generation has grown by a quarter: in a net where listeners come and go the
worker's RSS grew ~20 % in four minutes (bench/soak.py), with ~27,500 objects freed by
each full collection. One collection per `interval`, only when something closed, bounds
that; its pause is logged when it is long enough to matter to forwarding.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from yahaml_voice.core.aio import cancel_and_wait, every

log = logging.getLogger(__name__)

INTERVAL = 15.0
# A pause this long (seconds) is worth a log line: packets wait in the socket meanwhile.
SLOW_PAUSE = 0.05


class Reclaimer:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.collections = 0
        self.longest_pause = 0.0
        self._pending = False
        self._task: asyncio.Task[None] | None = None

    def closed(self) -> None:
        """A peer connection closed: collect at the next tick."""
        self._pending = True
        if self._task is None:
            ticks = every(self.interval, self._tick, what="collection", log=log, wait_first=True)
            self._task = asyncio.get_running_loop().create_task(ticks)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def _tick(self) -> None:
        if not self._pending:
            return
        self._pending = False
        started = time.perf_counter()
        freed = gc.collect()
        pause = time.perf_counter() - started
        self.collections += 1
        self.longest_pause = max(self.longest_pause, pause)
        level = logging.INFO if pause >= SLOW_PAUSE else logging.DEBUG
        log.log(
            level, "full collection after closed peers: %d freed in %.1f ms", freed, pause * 1e3
        )
