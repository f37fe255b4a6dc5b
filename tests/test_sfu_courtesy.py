"""The courtesy tone's encoding: real Opus (aiortc's decoder hears the sine), once per (hz, ms)."""

from __future__ import annotations

import numpy as np
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterFrame

from yahaml_voice.sfu.courtesy import Tones, encode_tone


def dominant_hz(payloads: list[bytes]) -> float:
    decoder = OpusDecoder()
    pcm = np.concatenate(
        [
            frame.to_ndarray().reshape(-1, 2)[:, 0].astype(np.float64)
            for payload in payloads
            for frame in decoder.decode(JitterFrame(data=payload, timestamp=0))
        ]
    )
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * 48000 / len(pcm))


def test_tone_is_opus_at_its_frequency_and_level() -> None:
    tone = encode_tone(1000, 200)
    assert 10 <= len(tone.payloads) <= 11
    assert abs(dominant_hz(tone.payloads) - 1000) < 30
    assert 20 <= tone.level <= 26  # a -20 dBFS peak sine is about -23 dBov RMS


def test_tones_are_encoded_once() -> None:
    tones = Tones()
    assert tones.get(800, 100) is tones.get(800, 100)
    assert tones.get(800, 100) is not tones.get(900, 100)
