"""Room broadcast cost through Redis: one publish per member (before) vs publish_many (after).

A real redis-server (tests/redis_fixture.py); a RedisStore and RedisBus as the server
process that broadcasts, and a second RedisBus as the process holding the members'
sockets, subscribed to every member's channel. `--members` participants sit in one room.
Each mode broadcasts `--broadcasts` speakerSlots frames one after the other (as a worker's
slots frames are handled, one at a time per room), the modes alternating over `--rounds`:

- serial: the loop Delivery.broadcast used to run, `await bus.publish` per member;
- batched: Delivery.broadcast today, one `bus.publish_many` (one pipeline round trip).

Reported per mode: ms per broadcast until the call returned, and until the last member
of the last broadcast had its message; messages delivered per second; process CPU per
broadcast (sender and receiver share this process). Nothing may be lost.

    python -m bench broadcast [-- --members 300 --broadcasts 40 --rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tests.redis_fixture import RedisServer
from yahaml_voice.core.config import load_config
from yahaml_voice.core.protocol import SpeakerSlotsData, SpeakerSlotsFrame, wire
from yahaml_voice.server.delivery import participant_channel
from yahaml_voice.server.redis_bus import RedisBus
from yahaml_voice.server.redis_store import RedisStore
from yahaml_voice.server.rooms import RoomService
from yahaml_voice.server.store import ParticipantRecord, Subscription

RESULTS = Path(__file__).resolve().parent / "results"
ROOM = "net"


def _frame(data: dict[str, Any]) -> SpeakerSlotsFrame:
    return SpeakerSlotsFrame(data=SpeakerSlotsData.model_validate(data))


async def _serial(rooms: RoomService, data: dict[str, Any]) -> None:
    """The broadcast loop before publish_many: one publish (one round trip) per member."""
    message = wire(_frame(data))
    for record in await rooms.store.participants(ROOM):
        await rooms.bus.publish(participant_channel(record.id), message)


async def _batched(rooms: RoomService, data: dict[str, Any]) -> None:
    await rooms.delivery.broadcast(ROOM, _frame(data))


class Counter:
    """Counts deliveries on every member's subscription; wakes a waiter at a target."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached = asyncio.Event()

    async def drain(self, sub: Subscription) -> None:
        async for _ in sub:
            self.count += 1
            if self.count >= self.target:
                self.reached.set()

    def expect(self, n: int) -> None:
        self.target = self.count + n
        self.reached.clear()
        if self.count >= self.target:
            self.reached.set()


async def _run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    prefix = "bench:"
    store, bus, receiver = RedisStore(url, prefix), RedisBus(url, prefix), RedisBus(url, prefix)
    for part in (store, bus, receiver):
        await part.start()
    rooms = RoomService(load_config(environ={}), store, bus)
    counter = Counter()
    subs: list[Subscription] = []
    drains: list[asyncio.Task[None]] = []
    try:
        now = time.time()
        for i in range(args.members):
            pid = f"m{i:04d}"
            record = ParticipantRecord(id=pid, callsign=f"W{i}", role="operator", joined_at=now)
            await store.join(ROOM, record, limit=args.members)
            sub = await receiver.subscribe(participant_channel(pid))
            subs.append(sub)
            drains.append(asyncio.create_task(counter.drain(sub)))
        modes = {"serial": _serial, "batched": _batched}
        totals: dict[str, dict[str, float]] = {
            m: {"call_s": 0.0, "delivered_s": 0.0, "cpu_s": 0.0, "broadcasts": 0} for m in modes
        }
        for _ in range(args.rounds):
            for name, broadcast in modes.items():
                counter.expect(args.broadcasts * args.members)
                cpu = time.process_time()
                start = time.perf_counter()
                call = 0.0
                for n in range(args.broadcasts):
                    data = {"roomId": ROOM, "slots": [{"index": 0}], "speaking": [str(n)]}
                    t0 = time.perf_counter()
                    await broadcast(rooms, data)
                    call += time.perf_counter() - t0
                await asyncio.wait_for(counter.reached.wait(), 60)
                total = totals[name]
                total["delivered_s"] += time.perf_counter() - start
                total["call_s"] += call
                total["cpu_s"] += time.process_time() - cpu
                total["broadcasts"] += args.broadcasts
        result: dict[str, Any] = {}
        for name, total in totals.items():
            n = total["broadcasts"]
            result[name] = {
                "broadcasts": int(n),
                "ms_per_broadcast_call": round(1000 * total["call_s"] / n, 3),
                "ms_per_broadcast_delivered": round(1000 * total["delivered_s"] / n, 3),
                "messages_per_s": round(n * args.members / total["delivered_s"], 1),
                "process_cpu_ms_per_broadcast": round(1000 * total["cpu_s"] / n, 3),
            }
        serial, batched = result["serial"], result["batched"]
        result["ratio_serial_over_batched"] = {
            key: round(serial[key] / batched[key], 2)
            for key in (
                "ms_per_broadcast_call",
                "ms_per_broadcast_delivered",
                "process_cpu_ms_per_broadcast",
            )
        }
        result["lost"] = counter.count - 2 * args.rounds * args.broadcasts * args.members
        return result
    finally:
        for task in drains:
            task.cancel()
        for task in drains:
            try:
                await task
            except asyncio.CancelledError:
                pass
        for sub in subs:
            await sub.close()
        for part in (receiver, bus, store):
            await part.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench broadcast", description=__doc__)
    parser.add_argument("--members", type=int, default=300)
    parser.add_argument("--broadcasts", type=int, default=40, help="per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=str(RESULTS / "broadcast.json"))
    args = parser.parse_args(argv)
    with RedisServer() as redis:
        measured = asyncio.run(_run(args, redis.url))
    result = {
        "benchmark": "broadcast",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)},
        "python": sys.version.split()[0],
        "settings": {"members": args.members, "broadcasts": args.broadcasts, "rounds": args.rounds},
        **measured,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0 if measured["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
