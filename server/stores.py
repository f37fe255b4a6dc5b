"""Choose the Store and Bus a config asks for: in-memory, or Redis when redis.url is set;
and where nets are kept: Redis then too, else the SQLite file netlog.path."""

from __future__ import annotations

from yahaml_voice.core.config import Config

from .memory_bus import MemoryBus
from .memory_store import MemoryStore
from .netlog_sqlite import SqliteNetLog
from .netlog_store import NetLogStore
from .store import Bus, Store


def make_store(config: Config) -> tuple[Store, Bus]:
    url = config.redis.url
    if url:
        # Imported only when asked for: the embedded default never loads the Redis client.
        from .redis_bus import RedisBus
        from .redis_store import RedisStore

        return RedisStore(url, config.redis.prefix), RedisBus(url, config.redis.prefix)
    return MemoryStore(), MemoryBus()


def make_netlog(config: Config) -> NetLogStore:
    url = config.redis.url
    if url:
        from .netlog_redis import RedisNetLog

        return RedisNetLog(url, config.redis.prefix)
    return SqliteNetLog(config.netlog.path)
