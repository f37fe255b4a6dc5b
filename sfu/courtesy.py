"""The courtesy tone: a short beep in a slot when a talker unkeys, as a repeater does.

The tone is Opus-encoded once per worker per (hz, ms) with aiortc's own encoder (20 ms
frames, a ~-20 dBFS sine with 5 ms ramps against clicks) and then sent like any other
source's packets: `Forwarder.inject` rewrites the headers per group of subscribers, so
nothing is decoded or encoded per listener and every subscriber's sequence numbers and
timestamps stay monotonic.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import random
import time
from array import array
from collections.abc import Callable

from aiortc.codecs.opus import OpusEncoder
from aiortc.rtp import RtpPacket
from av import AudioFrame

from .forwarder import OPUS_FRAME, Forwarder

RATE = 48000
FRAME_SECONDS = OPUS_FRAME / RATE  # 20 ms
AMPLITUDE = 0.1  # -20 dBFS peak
RAMP = 0.005


class Tone:
    """Pre-encoded Opus payloads of one courtesy tone and their RFC 6464 level."""

    __slots__ = ("level", "payloads")

    def __init__(self, payloads: list[bytes], level: int) -> None:
        self.payloads = payloads
        self.level = level


def encode_tone(hz: int, ms: int) -> Tone:
    """Encode `ms` of a `hz` sine into 20 ms Opus packets (round up to whole frames).

    Plain Python (runs once per worker per tone): numpy is not a runtime dependency."""
    count = max(1, math.ceil(ms / 20))
    total = int(RATE * ms / 1000)
    wave = [
        AMPLITUDE
        * min(1.0, min(i, total - 1 - i) / RATE / RAMP)
        * math.sin(2 * math.pi * hz * i / RATE)
        for i in range(total)
    ]
    pcm = array("h", (int(v * 32767) for v in wave))
    pcm.extend([0] * (count * OPUS_FRAME + 4 * OPUS_FRAME - total))  # tail flushes the encoder
    rms = math.sqrt(sum(v * v for v in wave) / total) if total else 0.0
    level = min(127, max(0, round(-20 * math.log10(rms)))) if rms > 0 else 127
    encoder = OpusEncoder()
    payloads: list[bytes] = []
    for index in range(len(pcm) // OPUS_FRAME):
        frame = AudioFrame(format="s16", layout="mono", samples=OPUS_FRAME)
        frame.planes[0].update(pcm[index * OPUS_FRAME : (index + 1) * OPUS_FRAME].tobytes())
        frame.sample_rate = RATE
        frame.pts = index * OPUS_FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        encoded, _ = encoder.encode(frame)
        payloads += encoded
        if len(payloads) >= count + 1:
            break
    # libopus delays its output by a few ms: one frame more carries the tone's end.
    return Tone(payloads[: count + 1], level)


class Tones:
    """Each (hz, ms) encoded once per worker."""

    def __init__(self) -> None:
        self._tones: dict[tuple[int, int], Tone] = {}

    def get(self, hz: int, ms: int) -> Tone:
        tone = self._tones.get((hz, ms))
        if tone is None:
            tone = self._tones[(hz, ms)] = encode_tone(hz, ms)
        return tone


async def play(
    forwarder: Forwarder,
    index: int,
    source: str,
    tone: Tone,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Send `tone` in slot `index` as the synthetic source `source`, 20 ms apart."""
    seq = random.randrange(1 << 15)
    ts = random.getrandbits(32)
    start = clock()
    for number, payload in enumerate(tone.payloads):
        packet = RtpPacket(
            payload_type=0,
            marker=1 if number == 0 else 0,
            sequence_number=(seq + number) & 0xFFFF,
            timestamp=(ts + number * OPUS_FRAME) & 0xFFFFFFFF,
            payload=payload,
        )
        packet.extensions.audio_level = (False, tone.level)
        forwarder.inject(index, source, packet)
        wait = start + (number + 1) * FRAME_SECONDS - clock()
        if wait > 0:
            await asyncio.sleep(wait)
