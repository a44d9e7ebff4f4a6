"""An energy voice activity detector: PCM16 samples in, speech start and stop positions out.

Pure and deterministic: positions are counted in samples received, never wall-clock time.

The API's ``threshold`` (0.0 to 1.0, higher needs louder audio) maps linearly onto a frame
level in dBFS (RMS of the frame relative to full scale)::

    threshold_dbfs = -70 + 60 * threshold      # 0.0 -> -70, 0.5 -> -40, 1.0 -> -10 dBFS

A frame is voiced when its level reaches that value. Speech starts after ``min_speech_ms`` of
consecutive voiced frames and is reported from its first voiced frame minus
``prefix_padding_ms`` (never before ``floor``, the start of the uncommitted input). It stops
once ``silence_duration_ms`` of unvoiced frames follow the last voiced one, and is reported at
that point: the end of the last voiced frame plus the silence, the audio the service commits.

``semantic_vad`` has no model here: it is this energy VAD with the default threshold and
padding, and a silence that depends on ``eagerness`` (`SEMANTIC_SILENCE_MS`): low 800 ms,
medium and auto 500 ms, high 250 ms. The service's semantic VAD waits longer when the words
sound unfinished (at most about 8 / 4 / 2 s for low / medium / high); the fake cannot hear
words, so a test of eagerness is a test of these silences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from realtime_voicebot.transport.events import PCM_RATE

SEMANTIC_SILENCE_MS = {"low": 800, "medium": 500, "auto": 500, "high": 250}
"""The silence that ends a turn under ``semantic_vad``, by ``eagerness``."""
SILENCE_FLOOR_DBFS = -120.0
"""The level reported for digital silence (instead of minus infinity)."""


def threshold_dbfs(threshold: float) -> float:
    """The frame level in dBFS that the API's VAD ``threshold`` (0.0-1.0) stands for."""
    return -70.0 + 60.0 * min(1.0, max(0.0, threshold))


def level_dbfs(samples: NDArray[np.int16]) -> float:
    """RMS level of PCM16 samples in dBFS (0 dBFS is a full-scale square wave)."""
    if samples.size == 0:
        return SILENCE_FLOOR_DBFS
    rms = math.sqrt(float(np.mean(np.square(samples.astype(np.float64)))))
    if rms <= 0.0:
        return SILENCE_FLOOR_DBFS
    return max(SILENCE_FLOOR_DBFS, 20.0 * math.log10(rms / 32768.0))


@dataclass(frozen=True)
class VadSettings:
    """The knobs of ``turn_detection`` that the VAD honours, plus its own frame size."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    frame_ms: int = 10
    min_speech_ms: int = 30

    @classmethod
    def from_turn_detection(cls, turn_detection: dict[str, Any], frame_ms: int = 10) -> VadSettings:
        """Settings from a session's ``turn_detection`` object (server_vad or semantic_vad)."""
        silence = turn_detection.get("silence_duration_ms")
        if silence is None and turn_detection.get("type") == "semantic_vad":
            eagerness = turn_detection.get("eagerness") or "auto"
            silence = SEMANTIC_SILENCE_MS.get(eagerness, SEMANTIC_SILENCE_MS["auto"])
        threshold = turn_detection.get("threshold")
        padding = turn_detection.get("prefix_padding_ms")
        return cls(
            threshold=0.5 if threshold is None else float(threshold),
            prefix_padding_ms=300 if padding is None else int(padding),
            silence_duration_ms=500 if silence is None else int(silence),
            frame_ms=frame_ms,
        )


@dataclass(frozen=True)
class SpeechStarted:
    """Speech detected. ``start_sample`` includes the prefix padding; ``onset_sample`` does not."""

    start_sample: int
    onset_sample: int


@dataclass(frozen=True)
class SpeechStopped:
    """Silence long enough after speech. ``end_sample`` includes the silence duration."""

    end_sample: int
    last_voiced_sample: int


VadEvent = SpeechStarted | SpeechStopped


class EnergyVad:
    """Frames the input, compares each frame's level with the threshold, tracks speech."""

    def __init__(self, settings: VadSettings, sample_rate: int = PCM_RATE, position: int = 0):
        self.settings = settings
        self.sample_rate = sample_rate
        self.frame_samples = max(1, sample_rate * settings.frame_ms // 1000)
        self.threshold_dbfs = threshold_dbfs(settings.threshold)
        self._min_speech_frames = max(1, math.ceil(settings.min_speech_ms / settings.frame_ms))
        self._silence_samples = sample_rate * settings.silence_duration_ms // 1000
        self._padding_samples = sample_rate * settings.prefix_padding_ms // 1000
        self._pending = np.zeros(0, dtype=np.int16)
        self.position = position
        """Absolute sample position of the next sample to frame (pending samples excluded)."""
        self.floor = position
        """Speech is never reported to start before this sample (start of uncommitted input)."""
        self.in_speech = False
        self._voiced_run = 0
        self._onset = 0
        self._last_voiced_end = 0

    def reset(self, position: int) -> None:
        """Forget any speech in progress; the next input starts at ``position``."""
        self._pending = np.zeros(0, dtype=np.int16)
        self.position = position
        self.floor = position
        self.in_speech = False
        self._voiced_run = 0

    def feed(self, samples: NDArray[np.int16]) -> list[VadEvent]:
        """Consume samples; return the speech starts and stops they complete, in order."""
        data = np.concatenate([self._pending, samples]) if self._pending.size else samples
        events: list[VadEvent] = []
        n = self.frame_samples
        whole = (data.size // n) * n
        if whole:
            frames = data[:whole].astype(np.float64).reshape(-1, n)
            rms = np.sqrt(np.mean(np.square(frames), axis=1))
            with np.errstate(divide="ignore"):
                levels = 20.0 * np.log10(rms / 32768.0)
            for voiced in levels >= self.threshold_dbfs:
                event = self._step(bool(voiced))
                if event is not None:
                    events.append(event)
        self._pending = data[whole:].copy()
        return events

    def _step(self, voiced: bool) -> VadEvent | None:
        start = self.position
        end = start + self.frame_samples
        self.position = end
        if not self.in_speech:
            if not voiced:
                self._voiced_run = 0
                return None
            if self._voiced_run == 0:
                self._onset = start
            self._voiced_run += 1
            if self._voiced_run < self._min_speech_frames:
                return None
            self.in_speech = True
            self._last_voiced_end = end
            padded = max(self.floor, self._onset - self._padding_samples)
            return SpeechStarted(start_sample=padded, onset_sample=self._onset)
        if voiced:
            self._last_voiced_end = end
            return None
        if end - self._last_voiced_end < self._silence_samples:
            return None
        self.in_speech = False
        self._voiced_run = 0
        return SpeechStopped(end_sample=end, last_voiced_sample=self._last_voiced_end)
