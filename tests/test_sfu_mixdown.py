"""`python -m yahaml_voice mix`: a recording's slot tracks mixed into one file, in its own
process (the server spawns it when a recording stops; the worker never decodes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np

from yahaml_voice.sfu.courtesy import encode_tone
from yahaml_voice.sfu.ogg import OggOpusWriter


def _track(path: Path, hz: int, start: float, seconds: float, length: float) -> None:
    """A slot track as the worker writes it: a tone's Opus packets at `start`, silence
    packets around them (the tone is encoded here, in the test)."""
    writer = OggOpusWriter(str(path))
    payloads = encode_tone(hz, int(seconds * 1000)).payloads if seconds else []
    for number, payload in enumerate(payloads):
        writer.write(int(start * 48000) + number * 960, payload)
    writer.pad_to(int(length * 48000))
    writer.close()


def _peaks(pcm: np.ndarray, second: float) -> set[int]:
    """Frequencies (to 50 Hz) holding at least a third of the strongest peak's energy."""
    window = pcm[int((second - 0.1) * 48000) : int((second + 0.1) * 48000)]
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    freqs = np.fft.rfftfreq(len(window), 1 / 48000)
    strong = freqs[spectrum > spectrum.max() / 3]
    return {int(round(f / 50) * 50) for f in strong if f > 100}


def test_mix_renders_every_slot_into_one_file(tmp_path: Path) -> None:
    _track(tmp_path / "slot0.opus", 500, 0.0, 1.0, 2.0)
    _track(tmp_path / "slot1.opus", 1000, 0.5, 1.0, 2.0)
    _track(tmp_path / "slot2.opus", 700, 0.0, 0.0, 2.0)  # an idle slot: silence only
    done = subprocess.run(
        [sys.executable, "-m", "yahaml_voice", "mix", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    mixed = tmp_path / "mixed.opus"
    assert done.stdout.strip() == str(mixed)
    assert not list(tmp_path.glob("*.partial"))
    with av.open(str(mixed)) as container:
        assert container.streams.audio[0].codec_context.name == "opus"
        pcm = np.concatenate(
            [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
        ).astype(np.float64)
    assert abs(len(pcm) / 48000 - 2.0) < 0.1
    assert _peaks(pcm, 0.25) == {500}
    assert _peaks(pcm, 0.75) == {500, 1000}  # both talkers at once
    assert _peaks(pcm, 1.25) == {1000}
    assert np.abs(pcm[int(1.7 * 48000) :]).max() < 0.01  # silence at the end


def test_mix_without_slot_tracks_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "yahaml_voice", "mix", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no slot tracks" in done.stderr


def test_mix_skips_tracks_a_failed_recording_left_unreadable(tmp_path: Path) -> None:
    _track(tmp_path / "slot0.opus", 500, 0.0, 1.0, 1.5)
    OggOpusWriter(str(tmp_path / "slot1.opus")).close()  # headers only: no audio
    whole = (tmp_path / "slot0.opus").read_bytes()
    (tmp_path / "slot2.opus").write_bytes(whole[:150])  # cut inside its first pages
    done = subprocess.run(
        [sys.executable, "-m", "yahaml_voice", "mix", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with av.open(str(tmp_path / "mixed.opus")) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    assert abs(samples / 48000 - 1.5) < 0.1
