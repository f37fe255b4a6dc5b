"""asyncio idioms every long-running object here shares."""

from __future__ import annotations

from typing import Protocol


class Service(Protocol):
    """Something with a lifetime: `start()` creates its tasks, `stop()` cancels and awaits them."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
