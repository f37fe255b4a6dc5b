"""Recordings on disk as the SFU worker leaves them, for tests of the server's routes.

The worker writes Ogg Opus packet by packet (sfu/, issue 15); here PyAV encodes a tone
into the same container, which is all the server reads: it serves files and index.json,
it never decodes them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import av
import numpy as np


def write_tone(path: Path, frequency: float, seconds: float = 1.0) -> int:
    """An Ogg Opus file holding a sine tone; its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = 48000
    with av.open(str(path), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=rate)
        stream.layout = "mono"  # type: ignore[union-attr]
        samples = 960
        for n in range(math.ceil(seconds * rate / samples)):
            t = (np.arange(samples) + n * samples) / rate
            pcm = (0.5 * 32767 * np.sin(2 * math.pi * frequency * t)).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = n * samples
            for packet in stream.encode(frame):  # type: ignore[union-attr]
                container.mux(packet)
        for packet in stream.encode(None):  # type: ignore[union-attr]
            container.mux(packet)
    return path.stat().st_size


def transmission(index: int, callsign: str, participant_id: str = "p-1") -> dict[str, Any]:
    return {
        "index": index,
        "slot": 0,
        "participantId": participant_id,
        "callsign": callsign,
        "start": "2026-11-30T20:00:00Z",
        "end": "2026-11-30T20:00:01Z",
        "offset": float(index),
        "duration": 1.0,
    }


def write_recording(
    folder: Path, room_id: str, recording_id: str, tones: list[tuple[str, float]]
) -> list[dict[str, Any]]:
    """A recording directory: one tx/<i>.opus per (callsign, tone), net.opus, index.json."""
    txs = []
    for i, (callsign, frequency) in enumerate(tones):
        write_tone(folder / "tx" / f"{i:06d}.opus", frequency)
        txs.append(transmission(i, callsign))
    write_tone(folder / "net.opus", tones[0][1] if tones else 440.0)
    (folder / "chapters.vtt").write_text("WEBVTT\n")
    index = {
        "recording": {
            "id": recording_id,
            "roomId": room_id,
            "state": "stopped",
            "startedAt": "2026-11-30T20:00:00Z",
            "endedAt": "2026-11-30T20:10:00Z",
            "reason": None,
            "netId": None,
        },
        "slots": 1,
        "transmissions": txs,
    }
    (folder / "index.json").write_text(json.dumps(index))
    return txs


def dominant_frequency(path: Path) -> float:
    """The strongest frequency of an Ogg Opus file (decoded with PyAV)."""
    with av.open(str(path)) as container:
        chunks = [
            frame.to_ndarray().reshape(-1).astype(np.float64) for frame in container.decode(audio=0)
        ]
        rate = container.streams.audio[0].rate
    pcm = np.concatenate(chunks)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))
