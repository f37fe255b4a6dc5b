"""A parrot room (an echo test): what you say comes back to you alone when you stop.

Hams check their audio before a net by talking to a parrot (a repeater that plays each
transmission back). In a parrot room nobody's packets reach anybody else: the room hands
each publisher's packets (after the floor gate) to `Parrot.packet` instead of the slot
selector and forwarder. They are kept as they arrived, at most `limit` seconds of them,
from the first speech packet on; when the publisher unkeys (talkers.py: UNKEY of silence
after an over of at least MIN_OVER) they are sent back at their own pace (RTP timestamp
differences) in the publisher's slot 0 through `Forwarder.send_to`, which continues that
one output's numbering and leaves every other subscriber's untouched. No decoding: the
packets go back byte for byte. What is said during a playback is not recorded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from aiortc.rtp import RtpPacket

from yahaml_voice.core.aio import cancel_and_wait

from . import talkers
from .forwarder import Forwarder
from .ogg import RATE
from .talkers import Talker

logger = logging.getLogger(__name__)

SLOT = 0  # the slot a parrot plays back in


class _Take:
    """One publisher's current transmission being kept."""

    __slots__ = ("packets", "talker")

    def __init__(self) -> None:
        self.talker = Talker()
        self.packets: list[RtpPacket] = []


class Parrot:
    """Keeps each publisher's transmission and plays it back to it alone."""

    def __init__(self, forwarder: Forwarder, limit: float) -> None:
        self.forwarder = forwarder
        self.max_samples = int(limit * RATE)
        self._takes: dict[str, _Take] = {}
        self._playing: dict[str, asyncio.Task[None]] = {}
        self.played = 0  # playbacks finished (for tests and logs)

    def packet(self, publisher: str, packet: RtpPacket, level: int, now: float) -> None:
        """One packet of `publisher` (level: RFC 6464 -dBov)."""
        if publisher in self._playing:
            return  # talking over one's own playback is not kept
        take = self._takes.get(publisher)
        if take is None:
            take = self._takes[publisher] = _Take()
        take.talker.packet(level, now)
        if take.talker.over_since is None and not take.packets:
            return  # silence before the transmission
        packets = take.packets
        if packets and (packet.timestamp - packets[0].timestamp) & 0xFFFFFFFF >= self.max_samples:
            return  # longer than recording.parrot_max: the rest is not kept
        packets.append(packet)

    def tick(self, now: float) -> None:
        """Play back the transmissions that just ended (from the room's tick)."""
        for publisher, take in list(self._takes.items()):
            event = take.talker.tick(now)
            if take.talker.over_since is not None or not take.packets:
                continue
            packets, take.packets = take.packets, []
            if event != talkers.UNKEYED:
                continue  # a click or a cough: nothing to play back
            last_loud = max(
                (i for i, p in enumerate(packets) if _loud(p, take.talker.speech_level)),
                default=len(packets) - 1,
            )
            self._play(publisher, packets[: last_loud + 1])

    def _play(self, publisher: str, packets: list[RtpPacket]) -> None:
        task = asyncio.get_running_loop().create_task(self._send(publisher, packets))
        self._playing[publisher] = task
        task.add_done_callback(lambda t: self._done(publisher, t))

    async def _send(self, publisher: str, packets: list[RtpPacket]) -> None:
        """The packets again, at the pace they were sent, numbered afresh."""
        start = time.monotonic()
        first = packets[0].timestamp
        seq = random.randrange(1 << 15)
        try:
            await self._pace(publisher, packets, start, first, seq)
        finally:
            self.forwarder.end_send_to(publisher, SLOT)

    async def _pace(
        self, publisher: str, packets: list[RtpPacket], start: float, first: int, seq: int
    ) -> None:
        for number, original in enumerate(packets):
            at = start + ((original.timestamp - first) & 0xFFFFFFFF) / RATE
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            packet = RtpPacket(
                payload_type=0,
                marker=1 if number == 0 else 0,
                sequence_number=(seq + number) & 0xFFFF,
                timestamp=original.timestamp,
                payload=original.payload,
            )
            packet.extensions.audio_level = original.extensions.audio_level
            self.forwarder.send_to(publisher, SLOT, packet)

    def _done(self, publisher: str, task: asyncio.Task[None]) -> None:
        if self._playing.get(publisher) is task:
            del self._playing[publisher]
        if not task.cancelled():
            if task.exception() is not None:
                logger.error("parrot playback failed", exc_info=task.exception())
            else:
                self.played += 1

    def remove(self, publisher: str) -> None:
        """The publisher left: forget its take, stop its playback."""
        self._takes.pop(publisher, None)
        task = self._playing.pop(publisher, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        tasks = list(self._playing.values())
        self._playing.clear()
        self._takes.clear()
        await cancel_and_wait(*tasks)


def _loud(packet: RtpPacket, speech_level: int) -> bool:
    level = packet.extensions.audio_level
    return level is None or level[1] <= speech_level
