"""Choose the Store and Bus a config asks for: in-memory, or Redis when redis.url is set."""

from __future__ import annotations

from yahaml_voice.core.config import Config

from .memory_store import MemoryBus, MemoryStore
from .store import Bus, Store


def make_store(config: Config) -> tuple[Store, Bus]:
    if config.redis.url:
        from .redis_store import make_redis_store

        return make_redis_store(config)
    return MemoryStore(), MemoryBus()
