"""One NetLogStore suite for both implementations: SQLite (a file in tmp_path) and Redis
(a real redis-server).

A `Backend` hands out store objects over the same storage, the way the processes of one
deployment (or one process before and after a restart) see it: for SQLite another
connection to the same file, for Redis another client with the same prefix.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.redis_fixture import RedisServer, free_port
from yahaml_voice.server.netlog import CheckInRecord, NetDoc, NetEventRecord
from yahaml_voice.server.netlog_redis import RedisNetLog
from yahaml_voice.server.netlog_sqlite import SqliteNetLog
from yahaml_voice.server.netlog_store import NetLogStore
from yahaml_voice.server.store import StoreUnavailable

BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


class Backend:
    """Store objects over one storage; stops them all at the end."""

    def __init__(self, kind: str, path: Path, url: str | None) -> None:
        self.kind = kind
        self.path = path
        self.url = url
        self.prefix = f"t{uuid.uuid4().hex[:8]}:"
        self._opened: list[NetLogStore] = []

    async def store(self) -> NetLogStore:
        store: NetLogStore
        if self.kind == "sqlite":
            store = SqliteNetLog(str(self.path))
        else:
            assert self.url is not None
            store = RedisNetLog(self.url, self.prefix)
        await store.start()
        self._opened.append(store)
        return store

    async def close(self) -> None:
        for store in reversed(self._opened):
            await store.stop()
        self._opened = []


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def backend(backend_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    url = None
    if backend_kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    tmp_path: Path = request.getfixturevalue("tmp_path")
    backend = Backend(backend_kind, tmp_path / "data" / "netlog.sqlite3", url)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def store(backend: Backend) -> NetLogStore:
    return await backend.store()


T0 = 1_732_900_000.125


def net(net_id: str | None = None, room: str = "room1", **fields: object) -> NetDoc:
    doc = NetDoc(
        id=net_id or uuid.uuid4().hex,
        room_id=room,
        name="Tuesday 2 m net",
        opened_at=T0,
        opened_by="W1AW",
        ncs=["W1AW"],
    )
    for key, value in fields.items():
        setattr(doc, key, value)
    return doc


def changed(doc: NetDoc, **fields: object) -> NetDoc:
    """The next version of `doc` with `fields` changed (a pure transition)."""
    new = NetDoc.from_dict(doc.to_dict())
    for key, value in fields.items():
        setattr(new, key, value)
    new.version = doc.version + 1
    return new


def line(i: int = 0, kind: str = "note", **fields: object) -> NetEventRecord:
    return NetEventRecord(at=T0 + i, kind=kind, text=f"line {i}", **fields)  # type: ignore[arg-type]


async def closed(store: NetLogStore, doc: NetDoc, at: float, keep: int = 500) -> NetDoc:
    done = changed(doc, closed_at=at)
    assert await store.close_net(done, doc.version, keep)
    return done


# open / read --------------------------------------------------------------------------


async def test_open_then_current_and_get(store: NetLogStore) -> None:
    assert await store.current("room1") is None
    doc = net("n1")
    assert await store.open_net(doc)
    assert await store.current("room1") == doc
    assert await store.get("n1") == doc
    assert await store.get("nope") is None
    assert await store.current("room2") is None


async def test_a_room_has_one_open_net(store: NetLogStore) -> None:
    first = net("n1")
    assert await store.open_net(first)
    assert not await store.open_net(net("n2"))
    assert await store.get("n2") is None
    assert await store.current("room1") == first
    # Another room is independent; an id already used is refused.
    assert await store.open_net(net("n3", room="room2"))
    assert not await store.open_net(net("n1", room="room3"))
    assert await store.current("room3") is None
    # Once closed, the room may open the next one.
    await closed(store, first, T0 + 60)
    second = net("n2")
    assert await store.open_net(second)
    assert await store.current("room1") == second


async def test_misuse_is_an_error(store: NetLogStore) -> None:
    with pytest.raises(ValueError):
        await store.open_net(net("n1", closed_at=T0))
    doc = net("n2")
    assert await store.open_net(doc)
    with pytest.raises(ValueError):
        await store.set_net(changed(doc, closed_at=T0 + 1), doc.version)
    with pytest.raises(ValueError):
        await store.close_net(changed(doc), doc.version, keep=10)
    assert await store.current("room1") == doc


# compare-and-set ----------------------------------------------------------------------


async def test_set_net_compares_the_version(store: NetLogStore) -> None:
    doc = net("n1")
    assert await store.open_net(doc)
    v1 = changed(doc, name="Renamed")
    assert await store.set_net(v1, 0)
    # A writer that read version 0 loses, and changes nothing.
    stale = changed(doc, preamble="lost")
    assert not await store.set_net(stale, 0)
    assert await store.current("room1") == v1
    v2 = changed(v1, preamble="QST")
    assert await store.set_net(v2, 1)
    got = await store.get("n1")
    assert got is not None and got.version == 2 and got.name == "Renamed" and got.preamble == "QST"
    # Not stored at all: refused.
    assert not await store.set_net(net("ghost"), 0)
    assert await store.get("ghost") is None


async def test_a_closed_net_is_not_changed(store: NetLogStore) -> None:
    doc = net("n1")
    assert await store.open_net(doc)
    done = await closed(store, doc, T0 + 60)
    assert await store.current("room1") is None
    assert not await store.set_net(changed(doc, name="late"), doc.version)
    assert not await store.set_net(changed(done, closed_at=None), done.version)
    assert not await store.close_net(changed(done), done.version, keep=10)
    assert not await store.close_net(changed(doc, closed_at=T0 + 99), doc.version, keep=10)
    assert await store.get("n1") == done


async def test_close_needs_the_current_version(store: NetLogStore) -> None:
    doc = net("n1")
    assert await store.open_net(doc)
    v1 = changed(doc, name="v1")
    assert await store.set_net(v1, 0)
    assert not await store.close_net(changed(doc, closed_at=T0 + 5), 0, keep=10)
    assert await store.current("room1") == v1
    assert await store.archive("room1") == []
    await closed(store, v1, T0 + 6)
    assert await store.current("room1") is None


async def test_concurrent_set_net_exactly_one_wins(backend: Backend) -> None:
    # Two store objects, as two server processes (SQLite: two connections to the file).
    a, b = await backend.store(), await backend.store()
    doc = net("n1")
    assert await a.open_net(doc)
    for round_ in range(20):
        current = await a.current("room1")
        assert current is not None and current.version == round_
        ours = changed(current, name=f"a{round_}")
        theirs = changed(current, name=f"b{round_}")
        results = await asyncio.gather(
            a.set_net(ours, current.version), b.set_net(theirs, current.version)
        )
        assert sorted(results) == [False, True]
        winner = ours if results[0] else theirs
        assert await b.current("room1") == winner


async def test_concurrent_opens_one_wins(backend: Backend) -> None:
    a, b = await backend.store(), await backend.store()
    results = await asyncio.gather(
        *(store.open_net(net(f"n{i}")) for i, store in enumerate([a, b, a, b]))
    )
    assert results.count(True) == 1
    current = await b.current("room1")
    assert current is not None and current.id == f"n{results.index(True)}"


# archive ------------------------------------------------------------------------------


async def test_archive_is_newest_first_with_before_paging(store: NetLogStore) -> None:
    ids = []
    for i in range(5):
        doc = net(f"n{i}", opened_at=T0 + i * 100)
        assert await store.open_net(doc)
        await closed(store, doc, T0 + i * 100 + 50)
        ids.append(doc.id)
    # An open net is not in the archive; nor are other rooms' nets.
    assert await store.open_net(net("open"))
    other = net("other", room="room2")
    assert await store.open_net(other)
    await closed(store, other, T0 + 1000)

    everything = await store.archive("room1")
    assert [d.id for d in everything] == ids[::-1]
    assert all(d.closed_at is not None for d in everything)
    first = await store.archive("room1", limit=2)
    assert [d.id for d in first] == ["n4", "n3"]
    last_closed = first[-1].closed_at
    assert last_closed is not None
    second = await store.archive("room1", limit=2, before=last_closed)
    assert [d.id for d in second] == ["n2", "n1"]
    assert [d.id for d in await store.archive("room1", before=T0 + 150)] == ["n0"]
    assert await store.archive("room1", before=T0) == []
    assert await store.archive("room1", limit=0) == []
    assert [d.id for d in await store.archive("room2")] == ["other"]
    assert await store.archive("nowhere") == []


async def test_keep_trims_the_oldest_with_their_logs(store: NetLogStore) -> None:
    for i in range(5):
        doc = net(f"n{i}")
        assert await store.open_net(doc)
        assert await store.append_event(doc.id, line(i), 100) is not None
        await closed(store, doc, T0 + i, keep=3)
    # A net of another room is not trimmed by this room's keep.
    other = net("other", room="room2")
    assert await store.open_net(other)
    await closed(store, other, T0 - 100, keep=3)

    assert [d.id for d in await store.archive("room1")] == ["n4", "n3", "n2"]
    for gone in ("n0", "n1"):
        assert await store.get(gone) is None
        assert await store.events(gone) == []
    kept = await store.get("n2")
    assert kept is not None and kept.event_count == 1
    assert [e.text for e in await store.events("n2")] == ["line 2"]
    assert [d.id for d in await store.archive("room2")] == ["other"]


async def test_trimmed_nets_leave_no_keys_behind(backend: Backend) -> None:
    store = await backend.store()
    for i in range(4):
        doc = net(f"n{i}")
        assert await store.open_net(doc)
        assert await store.append_event(doc.id, line(i), 100) is not None
        await closed(store, doc, T0 + i, keep=1)
    if backend.kind == "redis":
        assert isinstance(store, RedisNetLog)
        keys = sorted(await store._client.keys(backend.prefix + "*"))
        p = backend.prefix
        assert keys == [f"{p}net:n3", f"{p}net:n3:log", f"{p}nets:room1"]
    else:
        with sqlite3.connect(backend.path) as db:
            assert db.execute("SELECT id FROM nets").fetchall() == [("n3",)]
            assert db.execute("SELECT DISTINCT net_id FROM events").fetchall() == [("n3",)]


# the log ------------------------------------------------------------------------------


async def test_append_numbers_lines_and_stops_at_the_limit(store: NetLogStore) -> None:
    doc = net("n1")
    assert await store.open_net(doc)
    appended = []
    for i in range(5):
        event = await store.append_event("n1", line(i, seq=99), limit=5)
        assert event is not None
        appended.append(event)
    assert [e.seq for e in appended] == [1, 2, 3, 4, 5]
    assert appended[2] == line(2, seq=3)
    # Full: refused, nothing stored.
    assert await store.append_event("n1", line(5), limit=5) is None
    # A higher limit lets the log grow again.
    more = await store.append_event("n1", line(5), limit=6)
    assert more is not None and more.seq == 6
    assert [e.seq for e in await store.events("n1")] == [1, 2, 3, 4, 5, 6]
    assert await store.events("n1") == [*appended, more]


async def test_append_refused_unless_the_net_is_open(store: NetLogStore) -> None:
    assert await store.append_event("ghost", line(), 100) is None
    assert await store.events("ghost") == []
    doc = net("n1")
    assert await store.open_net(doc)
    assert await store.append_event("n1", line(1), 100) is not None
    await closed(store, doc, T0 + 60)
    assert await store.append_event("n1", line(2), 100) is None
    assert [e.text for e in await store.events("n1")] == ["line 1"]
    # The room's next net has a log of its own, numbered from 1.
    assert await store.open_net(net("n2"))
    event = await store.append_event("n2", line(3), 100)
    assert event is not None and event.seq == 1


async def test_events_paging(store: NetLogStore) -> None:
    assert await store.open_net(net("n1"))
    for i in range(10):
        assert await store.append_event("n1", line(i), 100) is not None
    assert [e.seq for e in await store.events("n1", after=0, limit=3)] == [1, 2, 3]
    assert [e.seq for e in await store.events("n1", after=3, limit=3)] == [4, 5, 6]
    assert [e.seq for e in await store.events("n1", after=8, limit=5)] == [9, 10]
    assert await store.events("n1", after=10) == []
    assert await store.events("n1", after=50) == []
    assert await store.events("n1", limit=0) == []
    assert [e.seq for e in await store.events("n1", after=-5, limit=2)] == [1, 2]
    page = await store.events("n1", after=4, limit=2)
    assert [(e.seq, e.text) for e in page] == [(5, "line 4"), (6, "line 5")]


async def test_concurrent_appends_get_distinct_seqs(backend: Backend) -> None:
    a, b = await backend.store(), await backend.store()
    assert await a.open_net(net("n1"))
    results = await asyncio.gather(
        *((a if i % 2 else b).append_event("n1", line(i), limit=30) for i in range(40))
    )
    stored = [e for e in results if e is not None]
    assert sorted(e.seq for e in stored) == list(range(1, 31))
    log = await a.events("n1", limit=100)
    assert [e.seq for e in log] == list(range(1, 31))
    assert sorted(e.text for e in log) == sorted(e.text for e in stored)


async def test_event_count_is_filled_on_read(store: NetLogStore) -> None:
    # A stored event_count means nothing: the log does.
    doc = net("n1", event_count=42)
    assert await store.open_net(doc)
    current = await store.current("room1")
    assert current is not None and current.event_count == 0
    for i in range(3):
        assert await store.append_event("n1", line(i), 100) is not None
    current = await store.current("room1")
    assert current is not None and current.event_count == 3
    # A CAS does not touch it (the log is not part of the version).
    assert await store.set_net(changed(current, name="x", event_count=0), current.version)
    got = await store.get("n1")
    assert got is not None and got.event_count == 3 and got.version == 1
    await closed(store, got, T0 + 60)
    (archived,) = await store.archive("room1")
    assert archived.event_count == 3
    got = await store.get("n1")
    assert got is not None and got.event_count == 3


# durability and encoding --------------------------------------------------------------


async def test_nets_survive_a_new_store_object(backend: Backend) -> None:
    store = await backend.store()
    old = net("old")
    assert await store.open_net(old)
    assert await store.append_event("old", line(0), 100) is not None
    old_closed = await closed(store, old, T0 + 10)
    doc = net("n1")
    assert await store.open_net(doc)
    v1 = changed(doc, name="after restart?")
    assert await store.set_net(v1, 0)
    for i in range(3):
        assert await store.append_event("n1", line(i), 100) is not None
    await backend.close()

    again = await backend.store()
    current = await again.current("room1")
    assert current is not None
    assert current == changed(doc, name="after restart?", event_count=3)
    assert [e.text for e in await again.events("n1")] == ["line 0", "line 1", "line 2"]
    old_closed.event_count = 1
    assert await again.archive("room1") == [old_closed]
    # And carries on where it was.
    event = await again.append_event("n1", line(3), 100)
    assert event is not None and event.seq == 4
    assert await again.set_net(changed(current), 1)


async def test_json_round_trip_of_every_field(store: NetLogStore) -> None:
    checkins = [
        CheckInRecord(
            id="c1",
            callsign="DL1ABC/P",
            participant_id="p-1",
            at=T0 + 0.000123,
            by="W1AW",
            via="page",
            status="acknowledged",
            name="Jürgen „Jo“ Müller",
            location="Zürich, JN47 — 🏔",
            remarks='quotes " and \\ backslash\nnew line, tab\t, NUL-free, 中文, emoji 📻',
            traffic=True,
            short_time=True,
            mobile=True,
            emergency=True,
        ),
        CheckInRecord(
            id="c2", callsign="K1ABC", participant_id=None, at=T0 + 1, by="W1AW", via="rf"
        ),
    ]
    doc = NetDoc(
        id="n-ü",
        room_id="räum-1",
        name="Ποδαρικό net — «test»",
        opened_at=1_732_900_000.123456789,
        opened_by="W1AW",
        preamble="This is W1AW…\nQST: 73 ✓",
        ncs=["W1AW", "K1ABC"],
        loggers=["N0CALL"],
        checkins=checkins,
        version=7,
    )
    assert await store.open_net(doc)
    assert await store.current("räum-1") == doc
    got = await store.get("n-ü")
    assert got == doc and got is not None and got.checkins[1].participant_id is None
    event = NetEventRecord(
        at=1_732_900_123.987654321,
        kind="transmission",
        by="W1AW",
        callsign="DL1ABC/P",
        text='Grüße — 73 📻 "quoted"\n',
        duration=12.3456789,
    )
    stored = await store.append_event("n-ü", event, 10)
    assert stored == NetEventRecord(**{**event.to_dict(), "seq": 1})
    bare = await store.append_event("n-ü", NetEventRecord(at=T0, kind="opened"), 10)
    assert bare is not None
    assert await store.events("n-ü") == [stored, bare]
    done = changed(doc, closed_at=1_732_903_600.5)
    assert await store.close_net(done, 7, keep=5)
    done.event_count = 2
    assert await store.archive("räum-1") == [done]
    assert await store.get("n-ü") == done


# implementation details ----------------------------------------------------------------


async def test_sqlite_file_layout(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "netlog.sqlite3"
    store = SqliteNetLog(str(path))
    await store.start()
    try:
        assert await store.open_net(net("n1"))
    finally:
        await store.stop()
    await store.stop()  # twice is fine
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        # The file itself refuses a second open net in a room, whoever writes it.
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(
                "INSERT INTO nets (id, room_id, opened_at, version, doc) "
                "VALUES ('n2', 'room1', 0, 0, '{}')"
            )


async def test_sqlite_not_started_is_an_error(tmp_path: Path) -> None:
    store = SqliteNetLog(str(tmp_path / "n.sqlite3"))
    with pytest.raises(RuntimeError):
        await store.current("room1")


@pytest.mark.redis
async def test_redis_key_layout(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RedisNetLog(redis_server.url, prefix)
    await store.start()
    try:
        doc = net("n1")
        assert await store.open_net(doc)
        assert await store.append_event("n1", line(), 10) is not None
        client = store._client
        assert await client.get(f"{prefix}net:open:room1") == "n1"
        assert await client.llen(f"{prefix}net:n1:log") == 1
        await closed(store, doc, T0 + 60.25)
        assert not await client.exists(f"{prefix}net:open:room1")
        assert await client.zrange(f"{prefix}nets:room1", 0, -1, withscores=True) == [
            ("n1", T0 + 60.25)
        ]
    finally:
        await store.stop()


async def test_sqlite_failure_is_store_unavailable(tmp_path: Path) -> None:
    # The path is a folder: SQLite cannot open it.
    (tmp_path / "taken").mkdir()
    store = SqliteNetLog(str(tmp_path / "taken"))
    with pytest.raises(StoreUnavailable):
        await store.start()
    with pytest.raises(RuntimeError):
        await store.current("room1")


@pytest.mark.redis
async def test_redis_outage_is_store_unavailable() -> None:
    # Nothing listens there: every call fails as StoreUnavailable, nothing else.
    store = RedisNetLog(f"redis://127.0.0.1:{free_port()}/0", "t:")
    try:
        with pytest.raises(StoreUnavailable):
            await store.current("room1")
        with pytest.raises(StoreUnavailable):
            await store.append_event("n1", line(), 10)
        with pytest.raises(StoreUnavailable):
            await store.events("n1")
    finally:
        await store.stop()
