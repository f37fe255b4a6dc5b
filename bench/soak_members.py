"""The soak's load generator: one process holding many room members (`python -m bench.soak_members`).

Every member is the one test client (tests/voiceclient.py) on a token the orchestrator
(bench/soak.py) minted: REST, `/ws`, and one peer connection to the SFU whose packets
are counted from their headers (`count_only`), never decoded. Talkers send a real Opus
tone through aiortc while the orchestrator gives them the air. The orchestrator speaks
JSON lines on stdin/stdout (the machinery of bench/sfu_roles.py); every time recorded
here is `time.monotonic()`, which all processes of the machine share.

Commands: `join` (members, with bounded concurrency), `media` (wait until every member's
SFU connection is up), `turn` (mute one talker, unmute
another), `churn` (members leave, close everything, come back), `report` (write what
every member saw to a file), `exit`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.sfu_roles import loopback, read_command, say
from tests.voiceclient import SFU, PacketCounter, VoiceClient

logger = logging.getLogger(__name__)

ROSTER = ("participantJoined", "participantLeft")
KEPT = (*ROSTER, "connected", "error")
SETTLE = 0.5  # seconds a leaving member keeps reading its WebSocket


def keep_event(event: dict[str, Any]) -> bool:
    """What a member stores of its WebSocket traffic (waiters still see everything)."""
    return event.get("type") in KEPT


@dataclass
class Member:
    index: int
    token: str
    talker: bool
    tone: float
    counter: PacketCounter = field(default_factory=PacketCounter)
    client: VoiceClient | None = None
    # One per stay in the room: ws_open, join_req, join_resp, media_at, leave_req, leave_resp.
    sessions: list[dict[str, float | None]] = field(default_factory=list)
    # (type, participant id, arrival time) of roster events, per session.
    roster: list[list[tuple[str, str, float]]] = field(default_factory=list)
    pid: str = ""

    def harvest(self) -> None:
        """Move the live client's roster events into `roster[-1]`."""
        client = self.client
        if client is None:
            return
        seen = self.roster[-1]
        for event, at in zip(client.events, client.event_times, strict=True):
            kind = event.get("type")
            if kind not in ROSTER:
                continue
            data = event.get("data") or {}
            pid = data.get("participantId") or (data.get("participant") or {}).get("id")
            seen.append((kind, str(pid), at))
        client.events.clear()
        client.event_times.clear()


class Members:
    def __init__(self, url: str, room: str, timeout: float) -> None:
        self.url = url
        self.room = room
        self.timeout = timeout
        # One HTTP client for all members (a client per member loads a CA bundle each).
        self.http = httpx.AsyncClient(
            base_url=url, timeout=30.0, limits=httpx.Limits(max_connections=64)
        )
        self.members: dict[int, Member] = {}
        self.errors: list[str] = []

    async def enter(self, member: Member, wait_media: bool = True) -> None:
        """Open /ws, join, and (unless told not to) wait until the SFU connection is up."""
        client = VoiceClient(
            self.url,
            publish=member.talker,
            tone=member.tone,
            http=self.http,
            count_only=True,
            keep_event=keep_event,
        )
        client.counter = member.counter
        if client.track is not None:
            client.track.muted = True
        client.use_token(member.token)
        member.pid = client.participant_id or ""
        member.client = client
        session: dict[str, float | None] = {"ws_open": time.monotonic()}
        member.sessions.append(session)
        member.roster.append([])
        await client.connect(timeout=self.timeout)
        session["join_req"] = time.monotonic()
        await client.join(self.room, "operator" if member.talker else "listener")
        session["join_resp"] = time.monotonic()
        if wait_media:
            await self.wait_media(member)

    async def wait_media(self, member: Member) -> None:
        client = member.client
        assert client is not None
        deadline = time.monotonic() + self.timeout
        while True:
            peer = client.peers.get(SFU)
            if client.media_at is not None and peer is not None:
                if peer.pc.connectionState == "connected":
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{client.callsign}: no SFU media in {self.timeout}s")
            await asyncio.sleep(0.05)
        member.sessions[-1]["media_at"] = client.media_at

    async def exit_room(self, member: Member) -> None:
        client = member.client
        assert client is not None
        session = member.sessions[-1]
        session["leave_req"] = time.monotonic()
        await client.request("POST", f"/api/voice-rooms/{self.room}/leave")
        session["leave_resp"] = time.monotonic()
        # Roster frames the server queued before it answered may still be in flight.
        await asyncio.sleep(SETTLE)
        member.harvest()
        await client.close()
        member.client = None

    async def guarded(self, what: str, gate: asyncio.Semaphore, member: Member, op: Any) -> bool:
        async with gate:
            try:
                await op(member)
                return True
            except Exception as exc:
                self.errors.append(f"{what} {member.index}: {type(exc).__name__}: {exc}")
                logger.warning("%s %d failed", what, member.index, exc_info=True)
                return False

    async def join(self, command: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        new = [
            Member(m["index"], m["token"], m["talker"], m.get("tone", 440.0))
            for m in command["members"]
        ]
        for member in new:
            self.members[member.index] = member
        gate = asyncio.Semaphore(int(command.get("concurrency", 8)))
        wait = bool(command.get("wait_media", True))

        async def enter(member: Member) -> None:
            await self.enter(member, wait)

        done = await asyncio.gather(*(self.guarded("join", gate, m, enter) for m in new))
        return {"joined": sum(done), "seconds": round(time.monotonic() - started, 2)}

    async def media(self) -> dict[str, Any]:
        """Wait until every member that is in the room has its SFU connection up."""
        gate = asyncio.Semaphore(64)
        waiting = [m for m in self.members.values() if m.client and m.client.media_at is None]
        done = await asyncio.gather(
            *(self.guarded("media", gate, m, self.wait_media) for m in waiting)
        )
        return {"waited": len(waiting), "connected": sum(done)}

    async def turn(self, command: dict[str, Any]) -> dict[str, Any]:
        """Take the air from one talker and give it to another, tracks first, then REST."""
        off = self.members.get(command["off"]) if command.get("off") is not None else None
        on = self.members[command["on"]]
        for member, muted in ((off, True), (on, False)):
            if member is not None and member.client and member.client.track:
                member.client.track.muted = muted
        at = time.monotonic()
        for member, muted in ((off, True), (on, False)):
            if member is not None and member.client:
                try:
                    await member.client.set_muted(muted)
                except Exception as exc:
                    self.errors.append(f"mute {member.index}: {exc}")
        return {"at": at}

    async def churn(self, command: dict[str, Any]) -> dict[str, Any]:
        pause = float(command.get("pause", 1.0))
        gate = asyncio.Semaphore(int(command.get("concurrency", 8)))

        async def again(member: Member) -> None:
            await self.exit_room(member)
            await asyncio.sleep(max(0.0, pause - SETTLE))
            await self.enter(member)

        chosen = [self.members[i] for i in command["indices"] if self.members[i].client]
        done = await asyncio.gather(*(self.guarded("churn", gate, m, again) for m in chosen))
        return {"churned": sum(done)}

    def report(self, command: dict[str, Any]) -> dict[str, Any]:
        members = []
        for member in self.members.values():
            member.harvest()
            members.append(
                {
                    "index": member.index,
                    "pid": member.pid,
                    "talker": member.talker,
                    "sessions": member.sessions,
                    "roster": member.roster,
                    "seconds": member.counter.seconds,
                }
            )
        with open(command["path"], "w") as out:
            json.dump({"members": members, "errors": self.errors}, out)
        return {"written": command["path"], "errors": len(self.errors)}

    async def close(self) -> None:
        gate = asyncio.Semaphore(32)

        async def one(member: Member) -> None:
            async with gate:
                if member.client is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(member.client.close(), 10)

        await asyncio.gather(*(one(m) for m in self.members.values()))
        await self.http.aclose()


async def run(args: argparse.Namespace) -> None:
    loopback(args.ice)
    members = Members(args.url, args.room, args.timeout)
    say({"ready": 0})
    try:
        while True:
            command = await read_command()
            cmd = command.get("cmd")
            if cmd == "exit":
                break
            if cmd == "join":
                say(await members.join(command))
            elif cmd == "media":
                say(await members.media())
            elif cmd == "turn":
                say(await members.turn(command))
            elif cmd == "churn":
                say(await members.churn(command))
            elif cmd == "report":
                say(members.report(command))
            else:
                say({"error": f"unknown command {cmd!r}"})
    finally:
        await members.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_members")
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", default="net")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--ice", default="127.0.0.1", help="the one ICE host address")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
