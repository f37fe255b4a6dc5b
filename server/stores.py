"""Choose the Store and Bus a config asks for: in-memory, or Redis when redis.url or
redis.sentinels is set; and where nets, room definitions and invites are kept: Redis then
too, else the SQLite file netlog.path."""

from __future__ import annotations

from typing import TYPE_CHECKING

from yahaml_voice.core.config import Config, RedisConfig

from .catalog import CatalogStore
from .catalog_sqlite import SqliteCatalog
from .memory_bus import MemoryBus
from .memory_store import MemoryStore
from .netlog_sqlite import SqliteNetLog
from .netlog_store import NetLogStore
from .store import Bus, Store

if TYPE_CHECKING:
    from .redis_client import Sentinels


def _redis(redis: RedisConfig) -> tuple[str, Sentinels | None]:
    """The URL and, with Redis Sentinel, the sentinels to ask for the master."""
    if not redis.sentinels:
        return redis.url or "", None
    from .redis_client import Sentinels

    sentinels = Sentinels(
        tuple(redis.sentinel_addresses()), redis.service_name, redis.sentinel_password
    )
    return redis.url or "redis://", sentinels


def make_store(config: Config) -> tuple[Store, Bus]:
    if config.redis.enabled:
        # Imported only when asked for: the embedded default never loads the Redis client.
        from .redis_bus import RedisBus
        from .redis_store import RedisStore

        url, sentinels = _redis(config.redis)
        prefix = config.redis.prefix
        return RedisStore(url, prefix, sentinels), RedisBus(url, prefix, sentinels)
    return MemoryStore(), MemoryBus()


def make_netlog(config: Config) -> NetLogStore:
    if config.redis.enabled:
        from .netlog_redis import RedisNetLog

        url, sentinels = _redis(config.redis)
        return RedisNetLog(url, config.redis.prefix, sentinels)
    return SqliteNetLog(config.netlog.path)


def make_catalog(config: Config) -> CatalogStore:
    if config.redis.enabled:
        from .catalog_redis import RedisCatalog

        url, sentinels = _redis(config.redis)
        return RedisCatalog(url, config.redis.prefix, sentinels)
    return SqliteCatalog(config.netlog.path)
