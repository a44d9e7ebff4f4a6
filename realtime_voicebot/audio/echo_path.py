"""What the adaptive echo gate knows of the echo path: its delay and its coupling, learned.

Everything here works on the levels (dBFS) of 10 ms frames: the frames handed to the speaker
(the far-end reference, from the player's `PlaybackTap`) and the frames captured by the
microphone. No device, no clock: tests feed it numbers.

- `FrameLevels` cuts a stream of samples into 10 ms frames and returns each frame's level,
  carrying a partial frame over to the next call.
- `EchoPathEstimator` keeps the recent reference levels on the reference's own frame count
  (its clock) and learns, from microphone frames captured while only the bot talks:

  * the *delay* (in frames) from a frame being handed to the device to its echo being read
    from the microphone: the lag at which the microphone's level envelope correlates best with
    the reference's (speech envelopes are distinctive at this scale);
  * the *coupling* (dB): the median of microphone level minus the reference level at that
    delay. The median ignores a user who talks over less than half of the learning window,
    and follows a coupling that changes within about half that window.

  `predict_db` is then the echo expected in a microphone frame: coupling + the loudest
  reference frame within one frame of the delay, with a decaying tail for the room's
  reverberation. Until a delay is found, the loudest reference frame over every delay the
  estimator considers stands in (conservative: the gate then only opens for loud input).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import numpy.typing as npt

from realtime_voicebot.audio.resample import DBFS_FLOOR, PCM16_FULL_SCALE_SQUARED, Int16Array

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

FRAME_MS = 10
"""Length of the frames whose levels the echo path is learned from."""


def levels_dbfs(mean_squares: FloatArray) -> FloatArray:
    """Mean squares of PCM16 frames (in sample units squared) as dBFS, floored at DBFS_FLOOR."""
    ratio = np.maximum(mean_squares / PCM16_FULL_SCALE_SQUARED, 10 ** (DBFS_FLOOR / 10))
    return np.asarray(10.0 * np.log10(ratio), dtype=np.float64)


class FrameLevels:
    """Splits a sample stream into frames of `frame_samples` and gives each frame's level."""

    def __init__(self, frame_samples: int) -> None:
        if frame_samples < 1:
            raise ValueError("frame_samples must be at least 1")
        self.frame_samples = frame_samples
        self._partial = np.zeros(0, dtype=np.int16)
        self.frames = 0
        """Frames completed so far."""

    def push(self, samples: Int16Array) -> FloatArray:
        """The dBFS levels of the frames this block completes (possibly none)."""
        if self._partial.shape[0]:
            samples = np.concatenate([self._partial, samples])
        whole = samples.shape[0] // self.frame_samples
        self._partial = samples[whole * self.frame_samples :].copy()
        if whole == 0:
            return np.zeros(0, dtype=np.float64)
        frames = samples[: whole * self.frame_samples].astype(np.float64)
        shaped = frames.reshape(whole, self.frame_samples)
        mean_squares = np.einsum("ij,ij->i", shaped, shaped) / self.frame_samples
        self.frames += whole
        return levels_dbfs(mean_squares)


class EchoPathEstimator:
    """Delay and coupling of the echo path, learned from reference and microphone levels.

    Reference frames are numbered in the order they were played (`reference_frames` so far);
    every microphone frame comes with a *clock*: the number of the reference frame that was
    being played when it was read. Its echo then comes from reference frame `clock - delay`.
    """

    def __init__(
        self,
        *,
        max_delay_frames: int = 60,
        learn_frames: int = 200,
        min_learn_frames: int = 30,
        update_every: int = 10,
        delay_every: int = 5,
        initial_coupling_db: float = 10.0,
        tail_decay_db: float = 2.0,
        reference_active_dbfs: float = -50.0,
        min_correlation: float = 0.5,
        history_frames: int = 512,
    ) -> None:
        if history_frames < max_delay_frames + learn_frames + 4:
            raise ValueError("history_frames must cover the delay range and the learning window")
        self.max_delay_frames = max_delay_frames
        self.min_learn_frames = min_learn_frames
        self.update_every = update_every
        self.initial_coupling_db = initial_coupling_db
        self.tail_decay_db = tail_decay_db
        """How fast the predicted echo may fall, per frame: 2 dB per 10 ms is a reverberation
        time (60 dB) of 300 ms, an ordinary room; the echo of a loud frame lingers that long."""
        self.reference_active_dbfs = reference_active_dbfs
        """Reference frames quieter than this are not played speech: nothing is learned there."""
        self.min_correlation = min_correlation
        self.history = history_frames
        self._tail = np.full(history_frames, DBFS_FLOOR)
        """Reference levels with the reverberation tail, by reference frame number % history."""
        self._last_tail = 10.0 ** (DBFS_FLOOR / 10.0)
        """Power (full scale = 1) of the latest reference frame with its tail."""
        self.reference_frames = 0
        self._learn_mic: deque[float] = deque(maxlen=learn_frames)
        self._learn_clock: deque[int] = deque(maxlen=learn_frames)
        self._since_update = 0
        self._updates = 0
        self.delay_every = delay_every
        """The delay is searched on every `delay_every`-th update (it changes rarely; the
        search is the costly part), and on every update until it is found."""
        self.delay_frames: int | None = None
        """The echo delay in frames, once found (None before)."""
        self.correlation = 0.0
        """Correlation of microphone and reference envelopes at the delay (last estimate)."""
        self.learned_coupling_db: float | None = None
        """Median microphone-to-reference level over the learning window (None before
        `min_learn_frames` frames of played speech were learned from)."""
        self.spread_db = 0.0
        """How far the echo strays from its prediction: the upper quartile of the echo-only
        frames' excess over the median, which reverberation and the room's colouring widen
        (a flat path gives about 0.5 dB, a reverberant room 1 to 2 dB). A quartile, not an
        extreme, so a user talking over a quarter of the window does not move it."""

    # --- reference --------------------------------------------------------------------------

    def push_reference(self, levels: FloatArray) -> None:
        """Levels of the frames just handed to the device, in order."""
        keep = 10.0 ** (-self.tail_decay_db / 10.0)
        tail = self._last_tail
        for power in (10.0 ** (levels / 10.0)).tolist():
            tail = power + keep * tail
            self._tail[self.reference_frames % self.history] = 10.0 * math.log10(tail)
            self.reference_frames += 1
        self._last_tail = tail

    def reference_at(self, frames: IntArray) -> FloatArray:
        """Reference levels (with tail) at the given frame numbers; floor outside the history."""
        valid = (frames < self.reference_frames) & (frames >= self.reference_frames - self.history)
        values = self._tail[np.mod(frames, self.history)]
        return np.where(valid, values, DBFS_FLOOR)

    # --- prediction -------------------------------------------------------------------------

    @property
    def coupling_db(self) -> float:
        """The coupling in use: the learned one, or the cautious initial value until then."""
        if self.learned_coupling_db is None:
            return self.initial_coupling_db
        return self.learned_coupling_db

    def reference_for(self, clocks: IntArray, tolerance: int = 1) -> FloatArray:
        """The reference level each microphone frame's echo comes from (before coupling): the
        loudest within `tolerance` frames of the delay."""
        if self.delay_frames is None:
            lags = np.arange(0, self.max_delay_frames + 2)
        else:
            lags = np.arange(self.delay_frames - tolerance, self.delay_frames + tolerance + 1)
        candidates = self.reference_at(clocks[:, None] - lags[None, :])
        return np.asarray(candidates.max(axis=1), dtype=np.float64)

    def predict_db(self, clocks: IntArray) -> FloatArray:
        """The echo level (dBFS) expected in the microphone frames read at these clocks."""
        return self.reference_for(clocks) + self.coupling_db

    # --- learning ---------------------------------------------------------------------------

    def learn(self, mic_levels: FloatArray, clocks: IntArray) -> None:
        """Microphone frames captured while only the bot talks (the gate is shut)."""
        for level, clock in zip(mic_levels.tolist(), clocks.tolist(), strict=True):
            self._learn_mic.append(level)
            self._learn_clock.append(clock)
        self._since_update += len(mic_levels)
        if self._since_update >= self.update_every:
            self._since_update = 0
            self._update()

    def forget(self, keep: int = 0) -> None:
        """Drop all but the latest `keep` frames of the learning window (not the estimates
        until the next update): the echo path changed, the old frames mislead."""
        while len(self._learn_mic) > keep:
            self._learn_mic.popleft()
            self._learn_clock.popleft()
        self._since_update = self.update_every  # re-estimate with the next frame

    def _update(self) -> None:
        mic = np.fromiter(self._learn_mic, dtype=np.float64, count=len(self._learn_mic))
        clocks = np.fromiter(self._learn_clock, dtype=np.int64, count=len(self._learn_clock))
        if mic.shape[0] < self.min_learn_frames:
            return
        self._updates += 1
        if self.delay_frames is None or self._updates % self.delay_every == 0:
            self._update_delay(mic, clocks)
        reference = self.reference_for(clocks)
        played = reference >= self.reference_active_dbfs
        if int(played.sum()) < self.min_learn_frames:
            return
        ratios = mic[played] - reference[played]
        median, upper = np.percentile(ratios, [50, 75])
        self.learned_coupling_db = float(median)
        self.spread_db = float(upper - median)

    def _update_delay(self, mic: FloatArray, clocks: IntArray) -> None:
        """The lag at which the microphone envelope follows the reference envelope best."""
        lags = np.arange(0, self.max_delay_frames + 1)
        reference = self.reference_at(clocks[None, :] - lags[:, None])  # (lags, frames)
        reference = np.maximum(reference, self.reference_active_dbfs - 20.0)
        mic_floor = np.maximum(mic, float(np.median(mic)) - 30.0)
        mic_centered = mic_floor - mic_floor.mean()
        mic_norm = float(np.sqrt(np.dot(mic_centered, mic_centered)))
        if mic_norm < 1.0 * np.sqrt(mic.shape[0]):  # under 1 dB of variation: nothing to follow
            return
        ref_centered = reference - reference.mean(axis=1, keepdims=True)
        ref_norms = np.sqrt(np.einsum("ij,ij->i", ref_centered, ref_centered))
        with np.errstate(invalid="ignore", divide="ignore"):
            correlations = (ref_centered @ mic_centered) / (ref_norms * mic_norm)
        correlations = np.where(ref_norms > 1e-9, correlations, -1.0)
        best = int(np.argmax(correlations))
        if correlations[best] >= self.min_correlation:
            self.delay_frames = best
            self.correlation = float(correlations[best])
