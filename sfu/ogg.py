"""Ogg Opus files (RFC 7845 in an RFC 3533 stream) from Opus packets as they arrived.

A recording keeps the packets the SFU forwarded, byte for byte: nothing here decodes or
encodes audio. Page framing and the CRC come from mutagen's `OggPage`; this module adds
what RFC 7845 asks on top (the OpusHead and OpusTags pages, granule positions counted
in 48 kHz samples from each packet's TOC byte) and keeps time: a gap before a packet
is filled with constant, pre-built Opus silence packets, so a track keeps the room's
time base without ever touching a sample.

Every packet ends on the page it starts (no packet spans pages), so every page carries a
granule position. Pages are flushed about once a second of audio, and the file object is
flushed after each page, so a full disk shows up as an OSError within a second.
"""

from __future__ import annotations

import os
import random
import struct
from typing import BinaryIO

from mutagen.ogg import OggPage

RATE = 48000
# 0 samples to skip: we write packets taken from the middle of a stream, not an encoder's
# first output (RFC 7845 5.1 allows 0; players then play every sample).
PRE_SKIP = 0
CHANNELS = 2  # WebRTC's opus/48000/2: a decoder handles mono and stereo packets alike
VENDOR = b"yahaml-voice (packets as forwarded, not transcoded)"

# Silence as Opus packets, built once by hand (RFC 6716 3.1): TOC config 31 (CELT
# fullband, 20 ms frames), mono; a frame body of 0xFF 0xFE is a CELT frame whose
# silence flag is set. SILENCE_20 is one frame (code 0); SILENCE_120 six equal frames
# (code 3, CBR, count 6): 120 ms, the longest packet Opus allows.
SILENCE_20 = b"\xf8\xff\xfe"
SILENCE_120 = b"\xfb\x06" + b"\xff\xfe" * 6
SILENCE_20_SAMPLES = 960
SILENCE_120_SAMPLES = 5760

# Samples per frame of each TOC configuration (RFC 6716 3.1 table 2), at 48 kHz.
_FRAME_SAMPLES = (
    [480, 960, 1920, 2880] * 3  # 0..11 SILK NB/MB/WB: 10, 20, 40, 60 ms
    + [480, 960] * 2  # 12..15 hybrid SWB/FB: 10, 20 ms
    + [120, 240, 480, 960] * 4  # 16..31 CELT NB/WB/SWB/FB: 2.5, 5, 10, 20 ms
)

# A page is flushed when it holds this much audio or this many lacing values.
PAGE_SAMPLES = RATE
PAGE_LACING = 240  # of 255; a packet of at most 1500 bytes needs 6


def packet_samples(packet: bytes) -> int:
    """Duration of one Opus packet in 48 kHz samples, from its TOC byte (0 if malformed)."""
    if not packet:
        return 0
    toc = packet[0]
    per_frame = _FRAME_SAMPLES[toc >> 3]
    code = toc & 3
    if code == 0:
        return per_frame
    if code in (1, 2):
        return 2 * per_frame
    if len(packet) < 2:
        return 0
    return (packet[1] & 0x3F) * per_frame


def opus_head(channels: int = CHANNELS, pre_skip: int = PRE_SKIP) -> bytes:
    """The identification header (RFC 7845 5.1), channel mapping family 0."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, RATE, 0, 0)


def opus_tags(comments: dict[str, str] | None = None) -> bytes:
    """The comment header (RFC 7845 5.2)."""
    items = [f"{k}={v}".encode() for k, v in (comments or {}).items()]
    data = b"OpusTags" + struct.pack("<I", len(VENDOR)) + VENDOR + struct.pack("<I", len(items))
    for item in items:
        data += struct.pack("<I", len(item)) + item
    return data


class OggOpusWriter:
    """One Ogg Opus stream written to one file, packet by packet, at given positions.

    `write(position, packet)` places a packet at `position` samples from the start of the
    stream: a gap of at least 20 ms before it is filled with silence packets; a packet that
    arrives late (position already passed) is written right after the previous one.
    """

    def __init__(self, path: str, comments: dict[str, str] | None = None) -> None:
        self.path = path
        self._file: BinaryIO | None = open(path, "wb")
        self.serial = random.getrandbits(32)
        self.sequence = 0
        self.position = 0  # samples written (the granule position of the next page's end)
        self.bytes = 0
        self._packets: list[bytes] = []
        self._lacing = 0
        self._page_start = 0
        self._page(opus_head(), first=True)
        self._page(opus_tags(comments))

    def _page(self, *packets: bytes, first: bool = False, last: bool = False) -> None:
        page = OggPage()
        page.packets = list(packets)
        page.serial = self.serial
        page.sequence = self.sequence
        page.position = self.position
        page.first = first
        page.last = last
        data = page.write()
        self.sequence += 1
        assert self._file is not None
        self._file.write(data)
        self._file.flush()  # a full disk fails here, not at close
        self.bytes += len(data)

    def write(self, position: int, packet: bytes) -> None:
        """Append `packet` at `position` (samples), after silence for any gap before it."""
        gap = position - self.position
        if gap >= SILENCE_20_SAMPLES:
            self.silence(gap)
        self._append(packet, packet_samples(packet))

    def silence(self, samples: int) -> None:
        """Append `samples` (rounded down to 20 ms) of silence packets."""
        while samples >= SILENCE_120_SAMPLES:
            self._append(SILENCE_120, SILENCE_120_SAMPLES)
            samples -= SILENCE_120_SAMPLES
        while samples >= SILENCE_20_SAMPLES:
            self._append(SILENCE_20, SILENCE_20_SAMPLES)
            samples -= SILENCE_20_SAMPLES

    def pad_to(self, position: int) -> None:
        """Silence up to `position` (a track ends where the recording ends)."""
        if position - self.position >= SILENCE_20_SAMPLES:
            self.silence(position - self.position)

    def _append(self, packet: bytes, samples: int) -> None:
        # Flushed before a packet, never after: the last page always has packets to
        # carry the end-of-stream flag.
        lacing = len(packet) // 255 + 1
        if self._packets and (
            self._lacing + lacing > PAGE_LACING or self.position - self._page_start >= PAGE_SAMPLES
        ):
            self.flush()
        self._packets.append(packet)
        self._lacing += lacing
        self.position += samples

    def flush(self) -> None:
        """Write the packets held so far as one page."""
        if self._packets:
            packets, self._packets, self._lacing = self._packets, [], 0
            self._page(*packets)
            self._page_start = self.position

    def close(self) -> None:
        """The last page (end of stream) and the file; safe to call twice."""
        file = self._file
        if file is None:
            return
        try:
            packets, self._packets, self._lacing = self._packets, [], 0
            self._page(*packets, last=True)  # empty only for a stream without audio
        finally:
            self._file = None
            file.close()

    def abandon(self) -> None:
        """Close without writing (the disk failed): the file stays as far as it got."""
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass


def write_atomically(path: str, data: bytes) -> None:
    """Write a small file so readers see the old or the new version, never half of one."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as file:
        file.write(data)
    os.replace(tmp, path)
