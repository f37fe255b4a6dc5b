"""`python -m yahaml_voice mix <recording dir>`: the slot tracks mixed into `mixed.opus`.

A recording of an open room has one track per speaker slot (recording.py), all on one
time base; someone who wants one file to listen to wants them mixed. That needs decoding
and one encode, so it never runs in a forwarding worker: the server spawns this command
in a process of its own when a recording has stopped. PyAV decodes each slot track,
ffmpeg's `amix` filter adds them (no normalisation: a slot that is silent adds nothing,
and voices keep their level), and libopus encodes the sum once. The slot tracks are read
in lock step, a frame of each at a time, so memory stays small for a net of hours.
The result appears atomically (written aside, then renamed).
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av

RATE = 48000
BITRATE = 48000  # mono voice, several talkers at once
MIXED = "mixed.opus"


class MixError(Exception):
    """The directory has no slot track to mix."""


def slot_tracks(directory: str) -> list[str]:
    """slot0.opus, slot1.opus, ... in slot order."""
    found = []
    for path in glob.glob(os.path.join(directory, "slot*.opus")):
        number = os.path.basename(path)[4:-5]
        if number.isdigit():
            found.append((int(number), path))
    return [path for _, path in sorted(found)]


def _frames(container: Any) -> Iterator[Any]:
    """Decoded frames; a track cut short (a recording that failed) just ends early."""
    with contextlib.suppress(av.FFmpegError):
        yield from container.decode(audio=0)


def _open(path: str) -> Any | None:
    """An input container, or None for a track without audio or unreadable."""
    try:
        container = av.open(path)
    except av.FFmpegError as exc:
        print(f"skipping {os.path.basename(path)}: {exc}", file=sys.stderr)
        return None
    if not container.streams.audio:
        container.close()
        return None
    return container


def mix(directory: str) -> str:
    """Mix the slot tracks of `directory` into `mixed.opus`; returns its path."""
    paths = slot_tracks(directory)
    if not paths:
        raise MixError(f"no slot tracks in {directory}")
    target = os.path.join(directory, MIXED)
    partial = target + ".partial"
    with contextlib.ExitStack() as stack:
        inputs = [stack.enter_context(c) for c in map(_open, paths) if c is not None]
        if not inputs:
            raise MixError(f"no readable slot track in {directory}")
        output = stack.enter_context(av.open(partial, "w", format="ogg"))
        stream: Any = output.add_stream("libopus", rate=RATE, layout="mono")
        stream.bit_rate = BITRATE
        graph = av.filter.Graph()
        sources = [
            graph.add_abuffer(
                format="fltp", sample_rate=RATE, layout="stereo", time_base=Fraction(1, RATE)
            )
            for _ in inputs
        ]
        amix = graph.add("amix", f"inputs={len(inputs)}:duration=longest:normalize=0")
        shape = graph.add("aformat", "sample_fmts=flt:sample_rates=48000:channel_layouts=mono")
        sink = graph.add("abuffersink")
        for index, source in enumerate(sources):
            source.link_to(amix, 0, index)
        amix.link_to(shape)
        shape.link_to(sink)
        graph.configure()
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE)
        decoders = [_frames(c) for c in inputs]
        live = list(range(len(inputs)))
        while live:
            for index in list(live):
                frame = next(decoders[index], None)
                if frame is None:
                    sources[index].push(None)
                    live.remove(index)
                    continue
                for shaped in resampler.resample(frame) if _needs(frame) else [frame]:
                    sources[index].push(shaped)
            _drain(sink, stream, output)
        _drain(sink, stream, output)
        for packet in stream.encode(None):
            output.mux(packet)
    os.replace(partial, target)
    return target


def _needs(frame: Any) -> bool:
    """Does a decoded frame need converting to what the mixer's inputs take?"""
    return bool(
        frame.format.name != "fltp" or frame.layout.name != "stereo" or frame.sample_rate != RATE
    )


def _drain(sink: Any, stream: Any, output: Any) -> None:
    while True:
        try:
            mixed = sink.pull()
        except (av.BlockingIOError, av.EOFError):
            return
        mixed.pts = None  # the encoder numbers its own
        for packet in stream.encode(mixed):
            output.mux(packet)


def main(directory: str) -> int:
    """The CLI: 0 when mixed.opus was written, 2 when there is nothing to mix."""
    try:
        path = mix(directory)
    except (MixError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0
