"""One Store/Bus suite for both backends: in-memory and Redis (a real redis-server).

A `Backend` hands out stores and buses that share state the way the processes of one
deployment do: for memory that is the same object again, for Redis a new client with the
same prefix. So the cross-process cases (concurrent joins from two servers, delivery from
one process to another) run against both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.redis_fixture import RedisServer
from yahaml_voice.core.config import RoomConfig
from yahaml_voice.server import floor
from yahaml_voice.server.errors import ApiError
from yahaml_voice.server.floor import FloorDoc
from yahaml_voice.server.memory_bus import MemoryBus
from yahaml_voice.server.memory_store import MemoryStore
from yahaml_voice.server.netcontrol import update_floor
from yahaml_voice.server.redis_bus import RedisBus
from yahaml_voice.server.redis_store import RedisStore
from yahaml_voice.server.store import (
    AddressFull,
    Bus,
    ParticipantRecord,
    RecordingDoc,
    RoomFull,
    RoomState,
    Store,
    StoreUnavailable,
    Subscription,
    WorkerRecord,
)

BACKENDS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


class Backend:
    """Stores and buses of one simulated deployment; closes them all at the end."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.prefix = f"t{uuid.uuid4().hex[:8]}:"
        self._memory: tuple[MemoryStore, MemoryBus] | None = None
        self._opened: list[Any] = []

    @property
    def kind(self) -> str:
        return "redis" if self.url else "memory"

    async def store(self) -> Store:
        if self.url is None:
            return (await self._memory_pair())[0]
        store = RedisStore(self.url, self.prefix)
        await store.start()
        self._opened.append(store)
        return store

    async def bus(self, prefix: str | None = None) -> Bus:
        if self.url is None:
            return (await self._memory_pair())[1]
        bus = RedisBus(self.url, prefix or self.prefix)
        await bus.start()
        self._opened.append(bus)
        return bus

    async def _memory_pair(self) -> tuple[MemoryStore, MemoryBus]:
        if self._memory is None:
            self._memory = (MemoryStore(), MemoryBus())
            for item in self._memory:
                await item.start()
                self._opened.append(item)
        return self._memory

    async def close(self) -> None:
        for item in reversed(self._opened):
            await item.stop()


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "memory":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
async def backend(backend_url: str | None) -> AsyncIterator[Backend]:
    backend = Backend(backend_url)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.store()


@pytest.fixture
async def bus(backend: Backend) -> Bus:
    return await backend.bus()


def record(pid: str, **fields: Any) -> ParticipantRecord:
    return ParticipantRecord(
        id=pid, callsign=pid.upper(), role="operator", joined_at=time.time(), **fields
    )


async def take(sub: Subscription, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    async def collect() -> None:
        async for message in sub:
            got.append(message)
            if len(got) >= n:
                return

    await asyncio.wait_for(collect(), timeout)
    return got


async def nothing_arrives(sub: Subscription, wait: float = 0.3) -> bool:
    it = sub.__aiter__()
    try:
        await asyncio.wait_for(it.__anext__(), wait)
    except TimeoutError:
        return True
    return False


# participants ---------------------------------------------------------------------------


async def test_join_and_leave(store: Store) -> None:
    a = record("a1", volume=80)
    result = await store.join("shack", a, limit=10)
    assert result.created and result.count == 1
    assert result.participant == a
    await store.join("shack", record("b1"), limit=10)
    assert await store.count("shack") == 2
    assert await store.participant("shack", "a1") == a
    assert await store.participant("shack", "zz") is None
    assert [p.id for p in await store.participants("shack")] == ["a1", "b1"]
    assert await store.count("other") == 0
    assert await store.participants("other") == []

    left = await store.leave("shack", "a1")
    assert left == a
    assert await store.leave("shack", "a1") is None
    assert [p.id for p in await store.participants("shack")] == ["b1"]
    assert await store.rooms_of("a1") == []


async def test_capacity_and_idempotent_rejoin(store: Store) -> None:
    first = record("a2")
    await store.join("net", first, limit=2)
    await store.join("net", record("b2"), limit=2)
    with pytest.raises(RoomFull):
        await store.join("net", record("c2"), limit=2)
    # A rejoin of a seat holder succeeds even when full, keeps the original record.
    again = await store.join("net", record("a2", volume=5), limit=2)
    assert not again.created
    assert again.count == 2
    assert again.participant == first
    await store.leave("net", "b2")
    assert (await store.join("net", record("c2"), limit=2)).created


async def test_fifty_concurrent_joins_against_ten_seats(backend: Backend) -> None:
    # Two "processes" racing for the same seats.
    stores = [await backend.store(), await backend.store()]

    async def attempt(i: int) -> bool:
        try:
            result = await stores[i % 2].join("race", record(f"r{i}"), limit=10)
        except RoomFull:
            return False
        return result.created

    results = await asyncio.gather(*(attempt(i) for i in range(50)))
    assert sum(results) == 10
    assert await stores[0].count("race") == 10
    assert len(await stores[1].participants("race")) == 10


async def test_concurrent_rejoins_create_one_seat(backend: Backend) -> None:
    stores = [await backend.store(), await backend.store()]
    results = await asyncio.gather(
        *(stores[i % 2].join("rj", record("same"), limit=10) for i in range(20))
    )
    assert sum(r.created for r in results) == 1
    assert await stores[0].count("rj") == 1


async def test_update(store: Store) -> None:
    await store.join("shack", record("u1"), limit=10)
    updated = await store.update("shack", "u1", is_muted=True, volume=42)
    assert updated is not None and updated.is_muted and updated.volume == 42
    fetched = await store.participant("shack", "u1")
    assert fetched == updated
    assert await store.update("shack", "nobody", is_muted=True) is None
    with pytest.raises(AttributeError):
        await store.update("shack", "u1", no_such_field=1)


async def test_concurrent_updates_lose_nothing(backend: Backend) -> None:
    stores = [await backend.store(), await backend.store()]
    await stores[0].join("up", record("u2"), limit=10)
    await asyncio.gather(
        stores[0].update("up", "u2", is_muted=True),
        *(stores[i % 2].update("up", "u2", volume=i) for i in range(1, 20)),
        stores[1].update("up", "u2", audio_source="radio"),
    )
    final = await stores[0].participant("up", "u2")
    assert final is not None
    assert final.is_muted and final.audio_source == "radio" and 1 <= final.volume < 20


async def test_rooms_of(store: Store) -> None:
    await store.join("r1", record("m1"), limit=10)
    await store.join("r2", record("m1"), limit=10)
    await store.join("r2", record("m2"), limit=10)
    assert sorted(await store.rooms_of("m1")) == ["r1", "r2"]
    assert await store.rooms_of("m2") == ["r2"]
    await store.leave("r1", "m1")
    assert await store.rooms_of("m1") == ["r2"]
    assert await store.rooms_of("nobody") == []


async def test_seats_per_address(store: Store) -> None:
    """Seats are counted per source address in all rooms; a rejoin is never refused."""
    addr = "198.51.100.7"
    await store.join("a1", record("s1", address=addr), limit=10, address_limit=2)
    await store.join("a2", record("s1", address=addr), limit=10, address_limit=2)
    assert await store.address_seats(addr) == 2
    with pytest.raises(AddressFull):
        await store.join("a1", record("s2", address=addr), limit=10, address_limit=2)
    assert await store.participant("a1", "s2") is None
    again = await store.join("a1", record("s1", address=addr), limit=10, address_limit=2)
    assert not again.created
    # Other addresses and seats without an address are not affected; 0 is no limit.
    await store.join("a1", record("s3", address="2001:db8::1"), limit=10, address_limit=2)
    await store.join("a1", record("s4"), limit=10, address_limit=2)
    await store.join("a3", record("s5", address=addr), limit=10, address_limit=0)
    assert await store.address_seats(addr) == 3
    await store.leave("a3", "s5")
    await store.leave("a1", "s1")
    assert await store.address_seats(addr) == 1
    added = await store.join("a1", record("s2", address=addr), limit=10, address_limit=2)
    assert added.created and added.participant.address == addr
    # The grace-period sweep frees the address's seat too.
    await store.update("a2", "s1", disconnected_at=time.time() - 100)
    assert await store.leave_if_gone("a2", "s1", time.time()) is not None
    assert await store.address_seats(addr) == 1
    assert await store.address_seats("192.0.2.99") == 0


async def test_concurrent_joins_from_one_address(backend: Backend) -> None:
    stores = [await backend.store(), await backend.store()]

    async def attempt(i: int) -> bool:
        try:
            await stores[i % 2].join(
                f"room{i % 3}", record(f"c{i}", address="192.0.2.1"), limit=100, address_limit=7
            )
        except AddressFull:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(30)))
    assert sum(results) == 7
    assert await stores[0].address_seats("192.0.2.1") == 7


async def test_media_started_mark(store: Store) -> None:
    await store.join("m", record("m1"), limit=10)
    fetched = await store.participant("m", "m1")
    assert fetched is not None and not fetched.media_started
    await store.update("m", "m1", media_started=True)
    fetched = await store.participant("m", "m1")
    assert fetched is not None and fetched.media_started


async def test_leave_if_gone(store: Store) -> None:
    now = time.time()
    await store.join("g", record("g1"), limit=10)
    # Never disconnected: stays.
    assert await store.leave_if_gone("g", "g1", now) is None
    # Disconnected after the cutoff (still in grace): stays.
    await store.update("g", "g1", disconnected_at=now)
    assert await store.leave_if_gone("g", "g1", now - 1) is None
    # A socket opened elsewhere: stays even though the mark is old.
    await store.socket_opened("g1", "s1", "node-a")
    assert await store.leave_if_gone("g", "g1", now + 1) is None
    await store.socket_closed("g1", "s1")
    removed = await store.leave_if_gone("g", "g1", now + 1)
    assert removed is not None and removed.id == "g1"
    assert await store.participant("g", "g1") is None
    assert await store.rooms_of("g1") == []
    assert await store.leave_if_gone("g", "g1", now + 1) is None
    assert await store.leave_if_gone("g", "nobody", now + 1) is None


async def test_leave_if_gone_removes_once(backend: Backend) -> None:
    stores = [await backend.store(), await backend.store()]
    await stores[0].join("g2", record("x", disconnected_at=time.time() - 100), limit=10)
    results = await asyncio.gather(
        *(stores[i % 2].leave_if_gone("g2", "x", time.time()) for i in range(10))
    )
    assert sum(r is not None for r in results) == 1


# presence -------------------------------------------------------------------------------


async def test_sockets(store: Store) -> None:
    await store.node_alive("node-a", 30)
    assert await store.socket_count("p") == 0
    assert await store.socket_opened("p", "s1", "node-a") == 1
    assert await store.socket_opened("p", "s2", "node-a") == 2
    assert await store.socket_opened("p", "s2", "node-a") == 2
    assert await store.socket_count("p") == 2
    assert await store.socket_closed("p", "s1") == 1
    assert await store.socket_closed("p", "unknown") == 1
    assert await store.socket_closed("p", "s2") == 0
    assert await store.socket_count("p") == 0
    assert await store.socket_closed("never", "s") == 0


async def test_sockets_of_a_dead_node_stop_counting(backend: Backend) -> None:
    if backend.kind == "memory":
        pytest.skip("memory serves one process: there is no other node to die")
    alive, dying = await backend.store(), await backend.store()
    await alive.node_alive("alive", 30)
    await dying.node_alive("dying", 0.4)
    await alive.socket_opened("p", "s-alive", "alive")
    await dying.socket_opened("p", "s-dying", "dying")
    await dying.socket_opened("q", "s-q", "dying")
    assert await alive.socket_count("p") == 2
    await alive.join("room", record("q", disconnected_at=time.time()), limit=10)
    assert await alive.leave_if_gone("room", "q", time.time()) is None
    await asyncio.sleep(0.7)
    assert await alive.socket_count("p") == 1
    assert await alive.socket_count("q") == 0
    assert await alive.leave_if_gone("room", "q", time.time()) is not None


async def test_socket_before_first_heartbeat_counts(store: Store) -> None:
    assert await store.socket_opened("early", "s", "fresh-node") == 1
    assert await store.socket_count("early") == 1


# rooms ----------------------------------------------------------------------------------


async def test_room_state_compare_and_set(backend: Backend) -> None:
    stores = [await backend.store(), await backend.store()]
    assert await stores[0].room_state("r") == RoomState()
    placed = RoomState(mode="sfu", worker_id="w1", epoch=1)
    assert await stores[0].set_room_state("r", placed, expect_epoch=0)
    assert await stores[1].room_state("r") == placed
    assert not await stores[1].set_room_state("r", RoomState(epoch=1), expect_epoch=0)

    async def attempt(i: int) -> bool:
        return await stores[i % 2].set_room_state(
            "r", RoomState(mode="sfu", worker_id=f"w{i}", epoch=2), expect_epoch=1
        )

    results = await asyncio.gather(*(attempt(i) for i in range(20)))
    assert sum(results) == 1
    winner = results.index(True)
    assert await stores[0].room_state("r") == RoomState(mode="sfu", worker_id=f"w{winner}", epoch=2)


# workers --------------------------------------------------------------------------------


async def test_workers_expire(store: Store) -> None:
    await store.worker_seen(WorkerRecord(id="w1", slots=3, last_seen=1.0), ttl=30)
    await store.worker_seen(
        WorkerRecord(id="w2", slots=3, last_seen=1.0, load={"streams": 4}), ttl=0.3
    )
    assert sorted(w.id for w in await store.workers()) == ["w1", "w2"]
    w2 = next(w for w in await store.workers() if w.id == "w2")
    assert w2.load == {"streams": 4} and w2.score == 4
    await asyncio.sleep(0.5)
    assert [w.id for w in await store.workers()] == ["w1"]
    # A heartbeat brings it back.
    await store.worker_seen(WorkerRecord(id="w2", slots=3, last_seen=2.0), ttl=30)
    assert sorted(w.id for w in await store.workers()) == ["w1", "w2"]


async def test_remove_worker_exactly_once(backend: Backend) -> None:
    stores = [await backend.store(), await backend.store()]
    await stores[0].worker_seen(WorkerRecord(id="w9", slots=3, last_seen=1.0), ttl=30)
    results = await asyncio.gather(*(stores[i % 2].remove_worker("w9") for i in range(10)))
    assert sum(results) == 1
    assert await stores[1].workers() == []
    assert not await stores[0].remove_worker("never")


async def test_remove_expired_worker_once(store: Store) -> None:
    await store.worker_seen(WorkerRecord(id="w7", slots=3, last_seen=1.0), ttl=0.1)
    await asyncio.sleep(0.3)
    assert await store.workers() == []
    assert await store.remove_worker("w7")
    assert not await store.remove_worker("w7")


async def test_worker_id_claim_is_exclusive_across_processes(backend: Backend) -> None:
    stores = [await backend.store(), await backend.store()]
    # Ten registrations race for one id from two processes: exactly one wins.
    results = await asyncio.gather(
        *(stores[i % 2].claim_worker("w1", f"conn{i}", ttl=30) for i in range(10))
    )
    assert sum(results) == 1
    owner = f"conn{results.index(True)}"
    # The owner renews; nobody else can take it or release it.
    assert await stores[1].claim_worker("w1", owner, ttl=30)
    assert not await stores[0].claim_worker("w1", "intruder", ttl=30)
    assert not await stores[0].release_worker("w1", "intruder")
    assert not await stores[1].claim_worker("w1", "intruder", ttl=30)
    # Another id is independent.
    assert await stores[0].claim_worker("w2", "intruder", ttl=30)
    # Only the owner's release frees it, once.
    assert await stores[0].release_worker("w1", owner)
    assert not await stores[1].release_worker("w1", owner)
    assert await stores[1].claim_worker("w1", "next", ttl=30)


async def test_worker_id_claim_expires_unless_renewed(store: Store) -> None:
    assert await store.claim_worker("w3", "a", ttl=0.3)
    assert not await store.claim_worker("w3", "b", ttl=0.3)
    await asyncio.sleep(0.5)
    # A silent owner's claim lapses: a new connection may take the id over.
    assert await store.claim_worker("w3", "b", ttl=30)
    assert not await store.claim_worker("w3", "a", ttl=30)
    assert not await store.release_worker("w3", "a")


# revocation -----------------------------------------------------------------------------


async def test_revocation_is_seen_by_every_process_until_expiry(backend: Backend) -> None:
    stores = [await backend.store(), await backend.store()]
    now = time.time()
    await stores[0].revoke("jti-long", now + 60)
    await stores[0].revoke("jti-short", now + 0.4)
    await stores[0].revoke("jti-past", now - 1)
    assert await stores[1].is_revoked("jti-long")
    assert await stores[1].is_revoked("jti-short")
    assert not await stores[1].is_revoked("jti-past")
    assert not await stores[1].is_revoked("jti-other")
    await asyncio.sleep(0.6)
    # Expired tokens need no denial: the entry is gone with them.
    assert not await stores[0].is_revoked("jti-short")
    assert await stores[0].is_revoked("jti-long")


async def test_memory_revocations_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from yahaml_voice.server import memory_store

    monkeypatch.setattr(memory_store, "MAX_REVOKED", 10)
    store = MemoryStore()
    now = time.time()
    for i in range(25):
        await store.revoke(f"j{i}", now + 100 + i)
    assert len(store._revoked) == 10
    # The soonest to expire went first; the latest stay denied.
    assert await store.is_revoked("j24") and not await store.is_revoked("j0")


# bus ------------------------------------------------------------------------------------


async def test_bus_delivers_across_processes(backend: Backend) -> None:
    sender, receiver = await backend.bus(), await backend.bus()
    sub = await receiver.subscribe("p:x")
    await sender.publish("p:x", {"type": "hello", "data": {"n": 1}})
    assert await take(sub, 1) == [{"type": "hello", "data": {"n": 1}}]
    await sub.close()


async def test_bus_per_publisher_order(backend: Backend) -> None:
    receiver = await backend.bus()
    publishers = [await backend.bus(), await backend.bus()]
    sub = await receiver.subscribe("p:o")
    n = 300

    async def run(k: int) -> None:
        # Sequential awaits from one coroutine, and a burst of un-awaited tasks.
        for i in range(n // 2):
            await publishers[k].publish("p:o", {"k": k, "i": i})
        await asyncio.gather(
            *(publishers[k].publish("p:o", {"k": k, "i": i}) for i in range(n // 2, n))
        )

    await asyncio.gather(run(0), run(1))
    got = await take(sub, 2 * n)
    for k in (0, 1):
        assert [m["i"] for m in got if m["k"] == k] == list(range(n))
    await sub.close()


async def test_bus_isolation_between_channels(backend: Backend) -> None:
    bus = await backend.bus()
    other = await backend.bus()
    a = await bus.subscribe("p:a")
    b = await other.subscribe("p:b")
    a2 = await other.subscribe("p:a")
    for i in range(5):
        await bus.publish("p:a", {"to": "a", "i": i})
        await other.publish("p:b", {"to": "b", "i": i})
    assert {m["to"] for m in await take(a, 5)} == {"a"}
    assert {m["to"] for m in await take(a2, 5)} == {"a"}
    assert {m["to"] for m in await take(b, 5)} == {"b"}
    assert await nothing_arrives(a) and await nothing_arrives(b)
    await bus.publish("w:a", {"to": "worker"})
    assert await nothing_arrives(a)
    for sub in (a, b, a2):
        await sub.close()


async def test_bus_close_ends_iteration_and_unsubscribes(backend: Backend) -> None:
    bus = await backend.bus()
    sub = await bus.subscribe("p:c")
    keep = await bus.subscribe("p:c")
    await sub.close()
    await sub.close()
    assert [m async for m in sub] == []
    await bus.publish("p:c", {"n": 1})
    assert await take(keep, 1) == [{"n": 1}]
    await keep.close()
    again = await bus.subscribe("p:c")
    await bus.publish("p:c", {"n": 2})
    assert await take(again, 1) == [{"n": 2}]
    await again.close()


async def test_bus_prefixes_isolate_deployments(backend: Backend) -> None:
    if backend.kind == "memory":
        pytest.skip("memory buses are per process; there is nothing to share")
    mine = await backend.bus()
    theirs = await backend.bus(prefix="other-deployment:")
    sub = await mine.subscribe("p:a")
    await theirs.publish("p:a", {"leak": True})
    assert await nothing_arrives(sub)
    await sub.close()


async def test_publish_many_keeps_order_per_channel_and_loses_nothing(backend: Backend) -> None:
    sender, receiver = await backend.bus(), await backend.bus()
    channels = [f"p:m{i}" for i in range(30)]
    subs = {channel: await receiver.subscribe(channel) for channel in channels}
    rounds = 20
    # Interleaved channels; a round is one batch, and rounds race each other as tasks
    # started in order (so only the per-publisher order is promised across them).
    batches = [[(c, {"c": c, "r": r}) for c in channels] for r in range(rounds)]
    await sender.publish("p:m0", {"c": "p:m0", "r": -1})
    await asyncio.gather(*(sender.publish_many(batch) for batch in batches))
    await sender.publish_many([])
    await sender.publish("p:m0", {"c": "p:m0", "r": rounds})
    for channel, sub in subs.items():
        got = await take(sub, rounds + (2 if channel == "p:m0" else 0))
        assert {m["c"] for m in got} == {channel}
        expected = list(range(rounds))
        if channel == "p:m0":
            expected = [-1, *expected, rounds]
        assert [m["r"] for m in got] == expected
        assert await nothing_arrives(sub, 0.05)
        await sub.close()


async def test_publish_many_of_nothing_is_a_no_op(backend: Backend) -> None:
    bus = await backend.bus()
    sub = await bus.subscribe("p:none")
    await bus.publish_many([])
    assert await nothing_arrives(sub)
    # A batch larger than the publisher's batch size still arrives whole, in order.
    await bus.publish_many([("p:none", {"i": i}) for i in range(600)])
    assert [m["i"] for m in await take(sub, 600)] == list(range(600))
    await sub.close()


# Redis only: restarts, auth -------------------------------------------------------------


async def _until(check: Any, timeout: float = 15.0) -> Any:
    """Await `check()` until it returns a truthy value without StoreUnavailable."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await check()
            if value:
                return value
        except StoreUnavailable:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


@pytest.mark.redis
async def test_redis_restart_is_survived() -> None:
    with RedisServer() as server:
        store, bus = RedisStore(server.url, "yv:"), RedisBus(server.url, "yv:")
        await store.start()
        await bus.start()
        store_hooks: list[str] = []
        bus_hooks: list[str] = []

        async def reannounce() -> None:
            store_hooks.append("store")

        async def bus_back() -> None:
            bus_hooks.append("bus")

        store.on_reconnect.append(reannounce)
        bus.on_reconnect.append(bus_back)
        try:
            await store.node_alive("node-1", 5)
            await store.socket_opened("p1", "s1", "node-1")
            await store.join("shack", record("p1"), limit=10)
            await store.join("shack", record("gone"), limit=10)  # no socket here: not ours
            placed = RoomState(mode="sfu", worker_id="w1", epoch=3)
            assert await store.set_room_state("shack", placed, expect_epoch=0)
            banned = FloorDoc(version=4, bans={"N0CALL": 0.0}, muted=["p1"])
            assert await store.set_floor("shack", banned, 0)
            sub = await bus.subscribe("p:p1")

            server.kill()  # like a crash; it comes back empty (no persistence)
            with pytest.raises(StoreUnavailable):
                await store.count("shack")
            server.start()

            # Reads of the empty Redis before the heartbeat must not wipe the local copy.
            async def read_rooms() -> bool:
                await store.participants("shack")
                await store.room_state("shack")
                await store.floor("shack")
                return True

            await _until(read_rooms)

            # The next heartbeat notices the loss; the store puts back what it owns.
            async def heartbeat() -> bool:
                await store.node_alive("node-1", 5)
                return True

            await _until(heartbeat)
            await _until(lambda: store.socket_count("p1"))
            await _until(lambda: asyncio.sleep(0, store_hooks))
            assert store_hooks == ["store"]
            assert [p.id for p in await store.participants("shack")] == ["p1"]
            assert await store.rooms_of("p1") == ["shack"]
            assert await store.room_state("shack") == placed
            assert await store.floor("shack") == banned

            # The old subscription receives again once the bus has resubscribed.
            async def delivered() -> bool:
                await bus.publish("p:p1", {"after": "restart"})
                return not await nothing_arrives(sub, 0.2)

            await _until(delivered)
            assert bus_hooks and set(bus_hooks) == {"bus"}
            await sub.close()
        finally:
            await bus.stop()
            await store.stop()


@pytest.mark.redis
async def test_publish_many_without_redis_raises_like_publish() -> None:
    with RedisServer() as server:
        bus = RedisBus(server.url, "yv:")
        await bus.start()
        try:
            await bus.publish_many([("p:a", {"n": 1}), ("p:b", {"n": 2})])
            server.kill()
            with pytest.raises(StoreUnavailable):
                await bus.publish("p:a", {"n": 3})
            with pytest.raises(StoreUnavailable):
                await bus.publish_many([("p:a", {"n": 4}), ("p:b", {"n": 5})])
            await bus.publish_many([])  # nothing to send: no error, no wait
            server.start()
            sub = await bus.subscribe("p:a")

            async def delivered() -> bool:
                await bus.publish_many([("p:a", {"n": 6})])
                return not await nothing_arrives(sub, 0.2)

            await _until(delivered)
            await sub.close()
        finally:
            await bus.stop()


@pytest.mark.redis
async def test_password_url() -> None:
    with RedisServer(password="s3cret-pass") as server:
        store = RedisStore(server.url, "yv:")
        await store.start()
        try:
            await store.join("shack", record("a"), limit=5)
            assert await store.count("shack") == 1
        finally:
            await store.stop()
        wrong = RedisStore(server.url.replace("s3cret-pass", "wrong"), "yv:")
        with pytest.raises(StoreUnavailable, match=r"credentials"):
            await wrong.start()
        await wrong.stop()


@pytest.mark.redis
async def test_tls_url() -> None:
    server = RedisServer(tls=True)
    try:
        server.start()
    except RuntimeError as exc:
        server.close()
        pytest.skip(f"redis-server cannot serve TLS here: {str(exc).splitlines()[-1]}")
    try:
        assert server.url.startswith("rediss://")
        store, bus = RedisStore(server.url, "yv:"), RedisBus(server.url, "yv:")
        await store.start()
        await bus.start()
        try:
            await store.join("shack", record("tls"), limit=5)
            assert await store.count("shack") == 1
            sub = await bus.subscribe("p:tls")
            await bus.publish("p:tls", {"over": "tls"})
            assert await take(sub, 1) == [{"over": "tls"}]
            await sub.close()
        finally:
            await bus.stop()
            await store.stop()
        # Without the CA the server's certificate is refused.
        plain = RedisStore(server.url.split("?")[0], "yv:")
        with pytest.raises(StoreUnavailable):
            await plain.start()
        await plain.stop()
    finally:
        server.close()


# ------------------------------------------------------------------------- net control


async def test_floor_compare_and_set(backend: Backend) -> None:
    stores = [await backend.store(), await backend.store()]
    empty = await stores[0].floor("net")
    assert empty == FloorDoc()
    doc = FloorDoc(version=1, open=True, bans={"N0CALL": 0.0}, appointed={"p-1": "ncs"})
    assert await stores[0].set_floor("net", doc, 0)
    assert not await stores[1].set_floor("net", FloorDoc(version=1), 0)
    assert await stores[1].floor("net") == doc
    assert await stores[1].floor("other") == FloorDoc()


# ------------------------------------------------------------------------- recordings


async def test_recording_compare_and_set_across_processes(backend: Backend) -> None:
    """One process starts a recording; another sees it, and of two stopping it at once
    exactly one wins (the loser re-reads, as recordings.py does)."""
    stores = [await backend.store(), await backend.store()]
    assert await stores[0].recording("net") is None
    doc = RecordingDoc(
        id="20261130T200000Z-0a1b2c",
        state="recording",
        started_at=1.5,
        worker_id="w-1",
        net_id="n-1",
        version=1,
    )
    assert await stores[0].set_recording("net", doc, 0)
    assert not await stores[1].set_recording("net", doc, 0)
    seen = await stores[1].recording("net")
    assert seen == doc
    stopped = dataclasses.replace(doc, state="stopped", ended_at=9.0, version=2)
    results = await asyncio.gather(*(store.set_recording("net", stopped, 1) for store in stores))
    assert sorted(results) == [False, True]
    assert await stores[0].recording("net") == stopped
    assert await stores[1].recording("other") is None


async def test_concurrent_grants_of_the_last_place_never_both_succeed(backend: Backend) -> None:
    """Two processes grant the only place at once, to different participants: the second
    re-applies the rule to the first's result, so exactly one holder remains and the
    version went up twice (or the loser was refused), never two holders."""
    stores = [await backend.store(), await backend.store()]
    room = RoomConfig(id="net", floor="directed", max_talkers=1)

    def grant_to(pid: str) -> Callable[[FloorDoc], FloorDoc]:
        def rule(doc: FloorDoc) -> FloorDoc:
            if doc.holders:
                raise ApiError(409, "holds_floor", "taken")
            return floor.grant(doc, room, pid, pid.upper(), True, time.time())

        return rule

    for round_ in range(10):
        results = await asyncio.gather(
            *(update_floor(stores[i], f"net{round_}", grant_to(f"p{i}")) for i in range(2)),
            return_exceptions=True,
        )
        won = [r for r in results if isinstance(r, FloorDoc)]
        lost = [r for r in results if isinstance(r, ApiError)]
        assert len(won) == 1 and len(lost) == 1, results
        final = await stores[0].floor(f"net{round_}")
        assert [h.participant_id for h in final.holders] == [won[0].holders[0].participant_id]
        assert final.version == 1
