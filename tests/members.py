"""Synthetic room members: the one test client (tests/voiceclient.py) without any media.

A member is a `VoiceClient` with `auto_media=False` and nothing to publish: it holds a seat
and its `/ws` WebSocket and makes REST calls (check in to the net, ask for the floor, leave,
join again), never an aiortc connection. Hundreds fit in one process; the roster tests
(tests/browser/test_browser_roster.py) and the roster benchmark (bench/roster.py) use them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx

from tests.servers import mint
from tests.voiceclient import VoiceClient

# What a member keeps of its WebSocket traffic (waiters still see every frame): a roster of
# 300 sends each member ~100k frames, none of which a member looks at afterwards.
KEPT = ("connected", "error", "_closed")


def keep_event(event: dict[str, Any]) -> bool:
    return event.get("type") in KEPT


class Members:
    """Many members of one room on one server, made and driven with bounded concurrency."""

    def __init__(self, url: str, room: str, concurrency: int = 16) -> None:
        self.url = url
        self.room = room
        self.concurrency = concurrency
        # One HTTP client for all (a client per member loads a CA bundle each).
        self.http = httpx.AsyncClient(
            base_url=url, timeout=30.0, limits=httpx.Limits(max_connections=64)
        )
        self.clients: list[VoiceClient] = []
        self.roles: dict[str, str] = {}  # callsign -> role

    def make(self, callsign: str, role: str = "listener") -> VoiceClient:
        """A member with a token for `callsign` (not connected yet)."""
        client = VoiceClient(
            self.url, publish=False, auto_media=False, http=self.http, keep_event=keep_event
        )
        client.use_token(mint(callsign, rooms=[self.room], role=role))
        self.roles[callsign] = role
        self.clients.append(client)
        return client

    async def each(
        self, clients: Iterable[VoiceClient], action: Callable[[VoiceClient], Awaitable[Any]]
    ) -> list[Any]:
        """`action` for every client, at most `concurrency` at a time; the answers in order."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(client: VoiceClient) -> Any:
            async with gate:
                return await action(client)

        return list(await asyncio.gather(*(one(c) for c in clients)))

    async def enter(self, client: VoiceClient) -> None:
        """Open the WebSocket (once) and take a seat."""
        if client.ws is None:
            await client.connect(timeout=30.0)
        mode = "listener" if self.roles.get(str(client.callsign)) == "listener" else "operator"
        await client.join(self.room, mode)

    async def seat(self, callsigns: Iterable[tuple[str, str]]) -> list[VoiceClient]:
        """(callsign, role) pairs -> members in the room."""
        clients = [self.make(call, role) for call, role in callsigns]
        await self.each(clients, self.enter)
        return clients

    async def post(self, client: VoiceClient, tail: str, body: Any = None) -> Any:
        return await client.request("POST", f"/api/voice-rooms/{self.room}/{tail}", body or {})

    async def check_in(self, client: VoiceClient, **fields: Any) -> Any:
        """The member checks itself in to the open net (CheckInSelf fields)."""
        return await self.post(client, "net/checkin", fields)

    async def leave(self, client: VoiceClient) -> None:
        await client.request("POST", f"/api/voice-rooms/{self.room}/leave")
        client.room_id = None

    async def close(self) -> None:
        async def close(client: VoiceClient) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 10)

        await self.each(self.clients, close)
        await self.http.aclose()
