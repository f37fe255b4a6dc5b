"""A crowded net for the roster: hundreds of synthetic members, one Chromium page.

Shared by the roster test (tests/browser/test_browser_roster.py, 60 members, correctness
only) and the roster benchmark (bench/roster.py, 300 members, timings from the page's
Performance API). The members are the one test client without media (tests/members.py):
they hold a seat and a WebSocket and make REST calls. The room is directed and on an SFU
worker, so the page negotiates one connection, not one per member.

The room: net control (W1NCS, also a synthetic member) with a net open, one station on
the air, two in the queue (the priority one first), some checked in, the rest listening.
Roster updates are what a busy net start looks like: members check in, leave and join.
"""

from __future__ import annotations

import asyncio
import string
import time
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, Page

from tests.members import Members
from tests.servers import ServerProcess, mint
from tests.voiceclient import VoiceClient

ROOM = "big-net"
NCS = "W1NCS"
PAGE_CALL = "N0PAGE"
SECTIONS = ("ncs", "air", "queue", "checkedin", "listening")

# Collects long tasks (Chromium) from page load on, for the benchmark.
LONG_TASKS = """(() => {
    window.yvLongTasks = [];
    try {
        new PerformanceObserver((list) => {
            for (const e of list.getEntries()) window.yvLongTasks.push([e.startTime, e.duration]);
        }).observe({ type: 'longtask', buffered: true });
    } catch (err) { window.yvLongTasks = null; }
})();"""

# What the page's roster shows: per section, the participant rows it holds and the count it
# states (a section that renders only what is visible says how many it has in data-count).
READ_ROSTER = """() => {
    const sections = {};
    for (const el of document.querySelectorAll('[data-section]')) {
        const rows = [...el.querySelectorAll('[data-participant]')]
            .filter((r) => !r.hidden)
            .map((r) => r.dataset.participant);
        const count = el.dataset.count !== undefined ? Number(el.dataset.count) : rows.length;
        sections[el.dataset.section] = { rows, count };
    }
    return { sections, now: performance.now() };
}"""


def callsign(i: int) -> str:
    """The i-th synthetic callsign: W0AAA, W1AAA, ... W9AAA, W0AAB, ..."""
    letters = string.ascii_uppercase
    n = i // 10
    suffix = letters[n // 676 % 26] + letters[n // 26 % 26] + letters[n % 26]
    return f"{'WKN'[i // 175760 % 3]}{i % 10}{suffix}"


def server_config(size: int) -> dict[str, Any]:
    return {
        "server": {"grace_period": "5s"},
        "rooms": [
            {
                "id": ROOM,
                "name": "Big Net",
                "description": "A crowded directed net",
                "floor": "directed",
                "max_participants": size + 60,
                "courtesy_tone": False,
            }
        ],
        "sfu": {"slots": 3, "ice_addresses": ["127.0.0.1"]},
        # The members never send an offer: without this the server frees their seats
        # after 30 s (limits.media_timeout), as it would for a client whose media failed.
        "limits": {"signals_per_second": 0, "joins_per_second": 0, "media_timeout": "1h"},
    }


@dataclass
class Expected:
    """What the roster should show (participant ids), from what the members did."""

    ncs: set[str] = field(default_factory=set)
    air: set[str] = field(default_factory=set)
    queue: list[str] = field(default_factory=list)
    checked_in: set[str] = field(default_factory=set)
    present: set[str] = field(default_factory=set)

    def sections(self) -> dict[str, set[str]]:
        """Each member in one section: net control, on the air, queued, checked in, listening."""
        ncs = self.ncs & self.present
        air = (self.air & self.present) - ncs
        queue = set(self.queue) & self.present - ncs - air
        checked = (self.checked_in & self.present) - ncs - air - queue
        listening = self.present - ncs - air - queue - checked
        return {
            "ncs": ncs,
            "air": air,
            "queue": queue,
            "checkedin": checked,
            "listening": listening,
        }

    def counts(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in self.sections().items()}


class RosterNet:
    """The room, its members and the expected roster; `size` members counting net control."""

    def __init__(self, server: ServerProcess, size: int, checked_in: int, concurrency: int = 8):
        self.server = server
        self.size = size
        self.members = Members(server.url, ROOM, concurrency=concurrency)
        self.initial_checked_in = checked_in
        self.ncs: VoiceClient | None = None
        self.seated: list[VoiceClient] = []  # in the room
        self.away: list[VoiceClient] = []  # connected, not in the room
        self.expected = Expected()
        self.page_pid = ""
        self._next = 0

    def _make(self, role: str) -> VoiceClient:
        client = self.members.make(callsign(self._next), role)
        self._next += 1
        return client

    async def populate(self) -> None:
        """Net control opens a net; the members come in; some check in; one is given the
        floor and two ask for it (traffic, then priority: the priority one goes first)."""
        ncs = self.ncs = self.members.make(NCS, "ncs")
        await self.members.enter(ncs)
        self.expected.ncs.add(str(ncs.participant_id))
        self.expected.present.add(str(ncs.participant_id))
        await self.members.post(
            ncs, "net/open", {"name": "Big Net", "preamble": "A crowded net for the roster."}
        )
        talkers = [self._make("operator") for _ in range(3)]
        others = [self._make("listener") for _ in range(self.size - 4)]
        self.seated = [*talkers, *others]
        await self.members.each(self.seated, self.members.enter)
        self.expected.present.update(str(c.participant_id) for c in self.seated)
        await self.check_in(self.seated[: self.initial_checked_in])
        on_air, traffic, priority = talkers
        await self.members.post(on_air, "floor/request", {"kind": "comment"})
        await self.members.post(ncs, "floor/grant", {"participantId": on_air.participant_id})
        await self.members.post(traffic, "floor/request", {"kind": "traffic"})
        await self.members.post(priority, "floor/request", {"kind": "priority"})
        self.expected.air = {str(on_air.participant_id)}
        self.expected.queue = [str(priority.participant_id), str(traffic.participant_id)]
        # Spares that join during the updates (connected now: joining is the update).
        self.away = [self._make("listener") for _ in range(self.size // 3)]
        await self.members.each(self.away, lambda c: c.connect(timeout=30.0))

    async def check_in(self, clients: list[VoiceClient]) -> None:
        async def one(client: VoiceClient) -> None:
            i = self.members.clients.index(client)
            await self.members.check_in(
                client, name=f"Op {i}", location=f"FN{i % 100:02d}", traffic=i % 7 == 0
            )
            self.expected.checked_in.add(str(client.participant_id))

        await self.members.each(clients, one)

    async def open_page(self, browser: Browser, viewport: dict[str, int]) -> Page:
        """The page (an operator) in the room, its roster showing everyone."""
        context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        await context.add_init_script(LONG_TASKS)
        page = await context.new_page()
        await page.goto(f"{self.server.url}/#token={mint(PAGE_CALL, rooms=[ROOM])}")
        await page.click(f"#room-list li[data-room='{ROOM}'] .join")
        await page.wait_for_selector("#view-room:not([hidden])")
        self.page_pid = str(await page.evaluate("yv.room.identity.participantId"))
        self.expected.present.add(self.page_pid)
        await self.wait_roster(page, timeout=60)
        return page

    def plan(self, updates: int) -> tuple[list[VoiceClient], list[VoiceClient], list[VoiceClient]]:
        """Who checks in, who leaves, who joins: a third of `updates` each (check-ins get
        the remainder). Leavers and check-ins come from the plain listeners."""
        special = {*self.expected.air, *self.expected.queue, *self.expected.ncs}
        plain = [
            c
            for c in self.seated
            if c.participant_id not in special and c.participant_id not in self.expected.checked_in
        ]
        leave_n = join_n = updates // 3
        checkin_n = updates - leave_n - join_n
        assert len(plain) >= checkin_n + leave_n and len(self.away) >= join_n, "too few members"
        return plain[:checkin_n], plain[checkin_n : checkin_n + leave_n], self.away[:join_n]

    async def apply(self, updates: int) -> dict[str, float]:
        """`updates` roster changes as fast as the members make them (interleaved, bounded
        concurrency); the expected roster follows. Returns when the server answered all."""
        checkins, leavers, joiners = self.plan(updates)
        ops: list[tuple[str, VoiceClient]] = []
        for i in range(max(len(checkins), len(leavers), len(joiners))):
            for kind, group in (("checkin", checkins), ("leave", leavers), ("join", joiners)):
                if i < len(group):
                    ops.append((kind, group[i]))

        async def run(op: tuple[str, VoiceClient]) -> None:
            kind, client = op
            pid = str(client.participant_id)
            if kind == "checkin":
                await self.check_in([client])
            elif kind == "leave":
                await self.members.leave(client)
                self.expected.present.discard(pid)
                self.expected.checked_in.discard(pid)
            else:
                await self.members.enter(client)
                self.expected.present.add(pid)

        started = time.monotonic()
        await self.members.each(ops, run)  # type: ignore[arg-type]
        self.seated = [c for c in self.seated if c not in leavers] + joiners
        self.away = [c for c in self.away if c not in joiners] + leavers
        return {"sent_seconds": time.monotonic() - started}

    async def read(self, page: Page) -> dict[str, Any]:
        shown: dict[str, Any] = await page.evaluate(READ_ROSTER)
        return shown

    def matches(self, shown: dict[str, Any]) -> bool:
        sections = shown["sections"]
        expected = self.expected.counts()
        return all(
            name in sections and sections[name]["count"] == count
            for name, count in expected.items()
        )

    async def wait_roster(self, page: Page, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the page until its section counts are the expected ones; what it showed."""
        deadline = time.monotonic() + timeout
        shown: dict[str, Any] = {}
        while time.monotonic() < deadline:
            shown = await self.read(page)
            if self.matches(shown):
                return shown
            await asyncio.sleep(0.05)
        counts = {k: v["count"] for k, v in shown.get("sections", {}).items()}
        raise AssertionError(
            f"roster never showed {self.expected.counts()} in {timeout}s (last: {counts})"
        )

    async def close(self) -> None:
        await self.members.close()
