"""In-memory Bus for the embedded default: delivery within one server process."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .store import LocalSubscription


class MemorySubscription(LocalSubscription):
    def __init__(self, bus: MemoryBus, channel: str) -> None:
        super().__init__(channel)
        self._bus = bus

    async def close(self) -> None:
        self._bus._remove(self)
        self.end()


class MemoryBus:
    def __init__(self) -> None:
        self._subs: dict[str, set[MemorySubscription]] = defaultdict(set)

    async def start(self) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {"connected": True, "reconnects": 0}

    async def stop(self) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                await sub.close()

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        for sub in list(self._subs.get(channel, ())):
            sub.put(message)

    async def publish_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        for channel, message in items:
            await self.publish(channel, message)

    async def subscribe(self, channel: str) -> MemorySubscription:
        sub = MemorySubscription(self, channel)
        self._subs[channel].add(sub)
        return sub

    def _remove(self, sub: MemorySubscription) -> None:
        subs = self._subs.get(sub.channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.channel]
