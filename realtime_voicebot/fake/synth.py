"""Synthetic PCM16 audio: speech-like signals for user utterances and fake replies, silence, tones.

`speech_like` is a harmonic series on a drifting pitch (like a voiced vowel), amplitude-modulated
at syllable rate (3 to 7 syllables a second) with an envelope that never drops below about
-10 dB of its peak, so the fake VAD hears one continuous utterance at the default threshold.
Everything is deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from realtime_voicebot.transport.events import PCM_RATE

FULL_SCALE = 32767.0
_EDGE_FADE_S = 0.005
_ENVELOPE_FLOOR = 0.3


def _samples(seconds: float, sample_rate: int) -> int:
    return max(0, round(seconds * sample_rate))


def _scale_to_level(signal: NDArray[np.float64], level_dbfs: float) -> NDArray[np.int16]:
    rms = float(np.sqrt(np.mean(np.square(signal)))) if signal.size else 0.0
    if rms <= 0.0:
        return np.zeros(signal.size, dtype=np.int16)
    target = FULL_SCALE * 10.0 ** (level_dbfs / 20.0)
    scaled: NDArray[np.float64] = np.clip(np.round(signal * (target / rms)), -32768, 32767)
    return scaled.astype(np.int16)


def silence(seconds: float, sample_rate: int = PCM_RATE) -> NDArray[np.int16]:
    """Digital silence."""
    return np.zeros(_samples(seconds, sample_rate), dtype=np.int16)


def tone(
    seconds: float,
    frequency_hz: float = 440.0,
    sample_rate: int = PCM_RATE,
    level_dbfs: float = -20.0,
) -> NDArray[np.int16]:
    """A steady sine at an RMS level in dBFS: a burst with sharp, exactly known edges."""
    t = np.arange(_samples(seconds, sample_rate)) / sample_rate
    return _scale_to_level(np.sin(2.0 * np.pi * frequency_hz * t), level_dbfs)


def speech_like(
    seconds: float,
    sample_rate: int = PCM_RATE,
    seed: int = 0,
    level_dbfs: float = -20.0,
) -> NDArray[np.int16]:
    """Syllable-modulated harmonics at an RMS level in dBFS: speech to the fake VAD."""
    n = _samples(seconds, sample_rate)
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sample_rate
    # Syllables of random length; each a raised-sine bump on a floor, with its own pitch offset.
    envelope = np.empty(n)
    pitch_offset = np.empty(n)
    start = 0
    while start < n:
        length = max(1, round(rng.uniform(0.14, 0.32) * sample_rate))
        stop = min(n, start + length)
        phase = np.arange(stop - start) / length
        envelope[start:stop] = _ENVELOPE_FLOOR + (1 - _ENVELOPE_FLOOR) * np.sin(np.pi * phase) ** 2
        pitch_offset[start:stop] = rng.uniform(-0.08, 0.08)
        start = stop
    base_hz = rng.uniform(110.0, 210.0)
    drift = 0.05 * np.sin(2.0 * np.pi * rng.uniform(0.3, 0.9) * t + rng.uniform(0, 2 * np.pi))
    f0 = base_hz * (1.0 + drift + pitch_offset)
    phase = 2.0 * np.pi * np.cumsum(f0) / sample_rate
    voice = np.zeros(n)
    for k in range(1, 11):
        if k * base_hz * 1.2 >= sample_rate / 2:
            break
        formant = 1.0 + 0.8 * np.exp(-((((k * base_hz) - 700.0) / 400.0) ** 2))
        voice += (formant / k) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    signal = voice * envelope
    fade = min(n // 2, round(_EDGE_FADE_S * sample_rate))
    if fade:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        signal[:fade] *= ramp
        signal[n - fade :] *= ramp[::-1]
    return _scale_to_level(signal, level_dbfs)


def to_pcm16(samples: NDArray[np.int16]) -> bytes:
    """Little-endian PCM16 bytes, as the API carries them (base64 in JSON)."""
    return samples.astype("<i2").tobytes()


def from_pcm16(data: bytes) -> NDArray[np.int16]:
    """Samples from little-endian PCM16 bytes (an odd trailing byte is dropped)."""
    usable = len(data) - len(data) % 2
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)


def duration_ms(samples: int, sample_rate: int = PCM_RATE) -> float:
    return samples * 1000.0 / sample_rate
