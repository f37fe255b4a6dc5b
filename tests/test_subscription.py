"""A local consumer that falls behind loses its stream, never a message in the middle."""

from __future__ import annotations

from yahaml_voice.server.memory_bus import MemoryBus
from yahaml_voice.server.store import QUEUE_LIMIT


async def test_overflow_ends_the_stream_after_what_was_queued() -> None:
    bus = MemoryBus()
    sub = await bus.subscribe("p:x")
    for i in range(QUEUE_LIMIT + 5):
        await bus.publish("p:x", {"n": i})
    assert sub.overflowed
    got = [message["n"] async for message in sub]
    # Everything up to the overflow arrived in order; nothing after a gap was delivered.
    assert got == list(range(QUEUE_LIMIT))
    await sub.close()


async def test_close_ends_the_stream() -> None:
    bus = MemoryBus()
    sub = await bus.subscribe("p:y")
    await bus.publish("p:y", {"n": 1})
    await sub.close()
    await bus.publish("p:y", {"n": 2})
    assert [m["n"] async for m in sub] == [1]
    assert not sub.overflowed
