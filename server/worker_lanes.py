"""Worker frames handled off the control socket's read loop: one ordered lane per room.

The reader of /sfu/ws only parses a frame and hands it here. The frames of one room are
handled one at a time in the order they arrived; rooms never wait for each other, so a
`speakerSlots` broadcast to a 300-member net does not hold up the next SDP answer of
another room. Frames that name no room (load) share a lane of their own.

Each lane is bounded. A full lane drops the frame: the worker is trusted, but a buggy one
must not grow our memory, and the other choices are worse. Blocking the reader would stall
every other room of the worker (what the lanes are for), and closing the worker would
re-place all of its rooms (a net on the only worker falls back to mesh). The drop is
logged once per episode, counted by the caller (`on_drop`, /metrics), and the lane keeps
what it already holds in order. A lane's task ends when it runs dry, so idle rooms cost
nothing; `stop()` cancels and awaits whatever is still running.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from yahaml_voice.core.aio import cancel_and_wait

from .store import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# Frames waiting per room at most: far above a burst of 300 joins' answers, seconds of
# backlog if the server falls that far behind.
LANE_LIMIT = 1024
# Rooms with frames waiting at once, per worker (a bound against made-up room ids).
MAX_LANES = 1024
# The drop episode of rooms refused a lane (MAX_LANES): any lane running dry ends it.
_NO_LANE = object()


class Lanes(Generic[T]):
    """Per-key FIFO lanes, each drained by its own task while it holds items."""

    def __init__(
        self,
        name: str,
        handle: Callable[[T], Awaitable[None]],
        on_drop: Callable[[str | None, bool], None] | None = None,
        limit: int = LANE_LIMIT,
        max_lanes: int = MAX_LANES,
    ) -> None:
        self.name = name
        self._handle = handle
        # Called with (key, first of an episode) for every dropped item.
        self._on_drop = on_drop
        self.limit = limit
        self.max_lanes = max_lanes
        self._lanes: dict[str | None, deque[T]] = {}
        self._tasks: dict[str | None, asyncio.Task[None]] = {}
        # key -> items dropped since its lane last ran dry
        self._dropping: dict[object, int] = {}
        self.dropped = 0

    def __len__(self) -> int:
        """Items waiting in all lanes (the one being handled not counted)."""
        return sum(len(lane) for lane in self._lanes.values())

    def submit(self, key: str | None, item: T) -> bool:
        """Queue `item` behind the earlier items of `key`; False if it was dropped."""
        lane = self._lanes.get(key)
        if lane is None:
            if len(self._lanes) >= self.max_lanes:
                return self._drop(_NO_LANE, key, f"{len(self._lanes)} rooms have frames waiting")
            lane = self._lanes[key] = deque()
            self._tasks[key] = asyncio.create_task(
                self._drain(key, lane), name=f"{self.name}-lane-{key}"
            )
        elif len(lane) >= self.limit:
            return self._drop(key, key, f"{len(lane)} frames waiting")
        lane.append(item)
        return True

    def _drop(self, episode: object, key: str | None, why: str) -> bool:
        """Count a drop; its episode (a lane's key, or _NO_LANE) ends when that lane (any
        lane, for _NO_LANE) runs dry."""
        self.dropped += 1
        first = episode not in self._dropping
        self._dropping[episode] = self._dropping.get(episode, 0) + 1
        if first:
            log.warning("%s: room %s: %s; dropping frames until it catches up", self.name, key, why)
        if self._on_drop is not None:
            self._on_drop(key, first)
        return False

    async def _drain(self, key: str | None, lane: deque[T]) -> None:
        try:
            while lane:
                item = lane.popleft()
                try:
                    await self._handle(item)
                except asyncio.CancelledError:
                    raise
                except StoreUnavailable as exc:
                    log.warning("%s: room %s: frame not handled: %s", self.name, key, exc)
                except Exception:
                    log.exception("%s: room %s: handling a frame failed", self.name, key)
        finally:
            # No await between the last look at the lane and this: a later item starts a
            # new lane, whose task runs after everything this one held.
            if self._lanes.get(key) is lane:
                del self._lanes[key]
                del self._tasks[key]
            for episode in (key, _NO_LANE):
                dropped = self._dropping.pop(episode, 0)
                if dropped:
                    log.info("%s: caught up; %d frames were dropped", self.name, dropped)

    async def stop(self) -> None:
        """Cancel the running lanes and wait for them; what they held is discarded."""
        await cancel_and_wait(*self._tasks.values())
        self._lanes.clear()
        self._tasks.clear()
