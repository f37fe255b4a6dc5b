"""A network change mid-call: an operator's host moves to another NAT (Lab.move) while
talking; how long until audio flows both ways again, and whether the seat was kept.

The mover's host loses its address (every socket bound to it, the signalling socket
included) and gets a new local and public one, as a phone going from Wi-Fi to mobile data.
A browser notices by itself; the Python client is told, as an app would be by the OS:
it reopens its socket and rejoins (the seat is kept within the grace period), then restarts
ICE on its connections (`VoiceClient.restart_ice()`) or, where the client has no ICE
restart, makes new connections (offers again; the SFU: a new connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.natlab.lab import Lab
from tests.natlab.netns import NetnsLoop
from tests.natlab.scenarios import (
    AUDIO_FRAMES,
    LabClient,
    _client_audio,
    client_result,
    join_room,
    leave_and_close,
    selected_pair,
)
from tests.voiceclient import VoiceClient

BACK_FRAMES = 10  # "audio is back": 10 loud frames (0.2 s) heard after the gap
GAP = 0.1  # no frame this long after the move: the gap has begun
CONTINUOUS = 50  # 1 s of frames after the move without any gap: it never stopped


@dataclass
class RoamOutcome:
    """What a network change did: per end (mover, partner) seconds from the move until
    BACK_FRAMES loud frames were heard again (None: never within the timeout)."""

    label: str
    before: bool = False  # connected with audio both ways before the move
    back: list[float | None] = field(default_factory=list)
    seat_kept: bool = False
    partner_saw_leave: bool = False
    pairs: list[str] = field(default_factory=list)
    how: str = ""  # how the mover recovered (restart_ice / new connection / the page itself)
    error: str | None = None
    trace: str = ""  # a browser mover's RTCPeerConnection events after the move

    @property
    def audio_back(self) -> float | None:
        return None if not self.back or None in self.back else max(self.back)  # type: ignore[type-var]


class LoudSince:
    """Loud frames heard from `remote` since construction, across replaced connections."""

    def __init__(self, client: VoiceClient, remote: str) -> None:
        self.client, self.remote = client, remote
        self.peer = client.peers.get(remote)
        self.base = client.heard_loud(remote) if self.peer else 0
        self.count = 0

    def poll(self) -> int:
        peer = self.client.peers.get(self.remote)
        now = self.client.heard_loud(self.remote) if peer else 0
        if peer is not self.peer:  # a new connection counts from 0
            self.peer, self.base = peer, 0
        self.count = max(self.count, now - self.base)
        return self.count


async def wait_back(counter: Callable[[], Any], since: float, timeout: float) -> float | None:
    """Seconds from `since` until audio is back: BACK_FRAMES frames counted after the gap
    (no frame for GAP s; frames still buffered at the move do not count). Audio that never
    stopped (CONTINUOUS frames without a gap) is back at 0. Polled every 20 ms."""
    deadline = since + timeout
    last, changed, base = await counter(), time.monotonic(), None
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        now, count = time.monotonic(), await counter()
        if count != last:
            last, changed = count, now
        if base is None and now - changed >= GAP:
            base = count  # the gap: count from here
        if base is not None and count - base >= BACK_FRAMES:
            return now - since
        if base is None and count >= CONTINUOUS:
            return 0.0
    return None


async def drop_socket(client: VoiceClient) -> None:
    """The signalling socket's TCP connection died with the old address: abort it (a
    close handshake on it would wait out its timeout)."""
    ws = client.ws
    if ws is not None:
        transport = getattr(ws, "transport", None)
        if transport is not None:
            transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.wait_closed(), 2)


async def new_http(client: VoiceClient) -> None:
    """HTTP keep-alive connections died with the old address too (a request on one would
    wait out its timeout): a fresh pool, as a browser's network-change handling does."""
    old = client.http
    client.http = httpx.AsyncClient(base_url=client.base_url, timeout=15.0)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(old.aclose(), 1)


async def recover(client: VoiceClient, remote: str, sfu: bool) -> str:
    """What the app does on a network change: socket and seat again, then ICE."""
    await drop_socket(client)
    await new_http(client)
    await client.reconnect()
    restart = getattr(client, "restart_ice", None)
    if restart is not None:
        await restart(remote)
        return "restart_ice"
    if sfu:
        await client.connect_sfu()
    else:
        await client.offer_to(remote)
    return "new connection"


async def aiortc_roam(
    label: str,
    url: str,
    room: str,
    lab: Lab,
    mover: str,
    to: str,
    loop_mover: NetnsLoop,
    loop_partner: NetnsLoop,
    sfu: bool,
    timeout: float = 10.0,
) -> RoamOutcome:
    """Two aiortc operators talk; the one at `mover` moves behind `to`'s router."""
    outcome = RoamOutcome(label)

    async def make(tone: float) -> VoiceClient:
        return LabClient(url, tone=tone)

    a = await loop_partner.call(make(440.0))
    b = await loop_mover.call(make(660.0))
    try:
        await loop_partner.call(join_room(a, "W1AW", room), 30)
        await loop_mover.call(join_room(b, "G4ABC", room), 30)
        pid, joined = b.participant_id, (b.join_answer or {})["participant"]["joinedAt"]
        remote_a = "sfu" if sfu else pid
        remote_b = "sfu" if sfu else a.participant_id
        states = await asyncio.gather(
            loop_partner.call(client_result(a, remote_a, 20)),
            loop_mover.call(client_result(b, remote_b, 20)),
        )
        heard = await asyncio.gather(
            loop_partner.call(_client_audio(a, remote_a, AUDIO_FRAMES, 10)),
            loop_mover.call(_client_audio(b, remote_b, AUDIO_FRAMES, 10)),
        )
        outcome.before = all(s[0] == "connected" for s in states) and min(heard) >= AUDIO_FRAMES
        if not outcome.before:
            outcome.error = f"before the move: {states} {heard}"
            return outcome
        count_a = await loop_partner.call(_counter(a, remote_a))
        count_b = await loop_mover.call(_counter(b, remote_b))
        events = len(a.events)
        moved = time.monotonic()
        await asyncio.to_thread(lab.move, mover, to)
        recovering = asyncio.ensure_future(loop_mover.call(recover(b, remote_b, sfu), timeout))
        outcome.back = list(
            await asyncio.gather(
                wait_back(lambda: loop_partner.call(_poll(count_a)), moved, timeout),
                wait_back(lambda: loop_mover.call(_poll(count_b)), moved, timeout),
            )
        )
        outcome.how = "restart_ice" if hasattr(b, "restart_ice") else "new connection"
        # restart_ice() returns seconds after the audio is back (it waits for its own
        # bookkeeping): a recovery still running after a moment is not waited for.
        done, _ = await asyncio.wait({recovering}, timeout=0.2)
        if done and recovering.exception() is not None:
            outcome.error = f"recovery: {recovering.exception()!r}"[:200]
        recovering.add_done_callback(lambda f: f.cancelled() or f.exception())
        answer = b.join_answer or {}
        outcome.seat_kept = (
            b.participant_id == pid and answer.get("participant", {}).get("joinedAt") == joined
        )
        outcome.partner_saw_leave = any(
            e.get("type") == "participantLeft" and (e.get("data") or {}).get("participantId") == pid
            for e in a.events[events:]
        )
        outcome.pairs = [
            await loop_mover.call(_pair(b, remote_b)),
            await loop_partner.call(_pair(a, remote_a)),
        ]
    except Exception as exc:
        outcome.error = repr(exc)[:200]
    finally:
        # The mover's close is not waited for: releasing the relay it had at its old address
        # waits out a STUN timeout (nothing can answer there). Its loop ends it at the latest.
        loop_mover.submit(leave_and_close(b))
        await loop_partner.call(leave_and_close(a), 15)
        await asyncio.to_thread(lab.restore, mover)
    return outcome


async def _counter(client: VoiceClient, remote: str) -> LoudSince:
    return LoudSince(client, remote)


async def _poll(counter: LoudSince) -> int:
    return counter.poll()


async def _pair(client: VoiceClient, remote: str) -> str:
    peer = client.peers.get(remote)
    return selected_pair(peer.pc) if peer else "-"


class PacketsSince:
    """RTP packets the page received from `key` since construction, across new links."""

    def __init__(self, operator: Any, key: str) -> None:
        self.operator, self.key = operator, key
        self.base: int | None = None
        self.last = 0
        self.count = 0

    async def poll(self) -> int:
        from tests.natlab.browser import packets  # Playwright only where a case needs it

        now = await packets(self.operator, self.key)
        if self.base is None:
            self.base = now
        elif now < self.last:  # a new connection counts from 0
            self.base = 0
        self.last = now
        self.count = max(self.count, now - self.base)
        return self.count


async def browser_roam(
    label: str,
    url: str,
    room: str,
    lab: Lab,
    mover: str,
    to: str,
    loop_partner: NetnsLoop,
    sfu: bool,
    timeout: float = 10.0,
) -> RoamOutcome:
    """Chromium (client/) at `mover` talks with an aiortc operator; its host moves behind
    `to`'s router. The page recovers by itself (socket, seat, ICE)."""
    from tests.natlab.browser import chromium_in, open_traced, packets, page_trace, trace_summary

    outcome = RoamOutcome(label, how="the page itself")

    async def make() -> VoiceClient:
        return LabClient(url, tone=440.0)

    a = await loop_partner.call(make())
    try:
        await loop_partner.call(join_room(a, "W1AW", room), 30)
        async with chromium_in(lab.site(mover).ns) as browser:
            operator = await open_traced(browser, url, "G4ABC", tone=660.0)
            await operator.join(room)
            pid = await operator.participant_id
            joined = await operator.page.evaluate("yv.room.seatJoinedAt")
            remote_a = "sfu" if sfu else pid
            key = "slot:" if sfu else a.participant_id or ""
            state = await loop_partner.call(client_result(a, remote_a, 20))
            heard = await loop_partner.call(_client_audio(a, remote_a, AUDIO_FRAMES, 10))

            async def page_hears() -> int:
                return await packets(operator, key)

            got = 0
            for _ in range(100):
                got = await page_hears()
                if got >= AUDIO_FRAMES:
                    break
                await asyncio.sleep(0.05)
            outcome.before = state[0] == "connected" and heard >= AUDIO_FRAMES and got > 0
            if not outcome.before:
                outcome.error = f"before the move: {state} {heard} {got}"
                return outcome
            count_a = await loop_partner.call(_counter(a, remote_a))
            count_page = PacketsSince(operator, key)
            await count_page.poll()
            events = len(a.events)
            moved = time.monotonic()
            await asyncio.to_thread(lab.move, mover, to)
            outcome.back = list(
                await asyncio.gather(
                    wait_back(count_page.poll, moved, timeout),
                    wait_back(lambda: loop_partner.call(_poll(count_a)), moved, timeout),
                )
            )
            outcome.seat_kept = (
                await operator.participant_id == pid
                and await operator.page.evaluate("yv.room.seatJoinedAt") == joined
            )
            outcome.partner_saw_leave = any(
                e.get("type") == "participantLeft"
                and (e.get("data") or {}).get("participantId") == pid
                for e in a.events[events:]
            )
            outcome.pairs = [await loop_partner.call(_pair(a, remote_a))]
            events_page = await page_trace(operator)
            outcome.trace = trace_summary([e for e in events_page if e["t"] >= moved], moved)
    except Exception as exc:
        outcome.error = repr(exc)[:200]
    finally:
        await loop_partner.call(leave_and_close(a), 15)
        await asyncio.to_thread(lab.restore, mover)
    return outcome
