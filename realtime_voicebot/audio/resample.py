"""Sample-rate conversion and PCM16 helpers.

The Realtime API speaks PCM16 mono at 24 kHz (`API_SAMPLE_RATE`); devices often run at 44.1 or
48 kHz. `StreamResampler` converts a continuous stream block by block with soxr. It uses soxr's
"LQ" quality by default: measured on 20 ms blocks it holds back at most about 20 ms and yields
output for every block, while "HQ" holds back up to about 40 ms and yields nothing for every
other block. For speech between 24 and 48 kHz, LQ is transparent.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

API_SAMPLE_RATE = 24000
"""Sample rate of the PCM16 audio the Realtime API sends and expects."""

DBFS_FLOOR = -120.0
"""Level reported for digital silence (instead of minus infinity)."""

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]
ResampleQuality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]


def pcm16_to_float(samples: Int16Array) -> Float32Array:
    """int16 samples to float32 in [-1, 1)."""
    return samples.astype(np.float32) / 32768.0


def float_to_pcm16(samples: npt.NDArray[np.floating[Any]]) -> Int16Array:
    """float samples in [-1, 1] to int16, clipping what lies outside."""
    scaled = np.clip(np.rint(samples * 32768.0), -32768, 32767)
    return np.asarray(scaled, dtype=np.int16)


def bytes_to_pcm16(data: bytes) -> Int16Array:
    """Little-endian PCM16 bytes to an int16 array (a copy, so it is writable)."""
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


PCM16_FULL_SCALE_SQUARED = 32768.0 * 32768.0


def sum_of_squares(block: npt.NDArray[Any]) -> float:
    """Sum of the squared samples, in the samples' own units (one dot product, no temporaries
    beyond a float64 copy: this runs once per audio block)."""
    values = block.astype(np.float64).ravel()
    return float(np.dot(values, values))


def mean_square_dbfs(mean_square: float) -> float:
    """A mean square relative to full scale (1.0) in dBFS; `DBFS_FLOOR` for silence."""
    if mean_square <= 0.0:
        return DBFS_FLOOR
    return max(DBFS_FLOOR, 10.0 * math.log10(mean_square))


def rms_dbfs(block: npt.NDArray[Any]) -> float:
    """RMS level of int16 or float samples in dBFS (full-scale sine: -3); `DBFS_FLOOR` if silent."""
    if block.size == 0:
        return DBFS_FLOOR
    mean_square = sum_of_squares(block) / block.size
    if block.dtype.kind in "iu":  # integer PCM
        mean_square /= PCM16_FULL_SCALE_SQUARED
    return mean_square_dbfs(mean_square)


def to_mono(samples: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Average the channels of a (frames, channels) array; 1-D input is returned as is."""
    if samples.ndim == 1:
        return samples
    if samples.shape[1] == 1:
        return samples[:, 0]
    mean = samples.astype(np.float64).mean(axis=1)
    return np.asarray(np.rint(mean), dtype=samples.dtype)


class StreamResampler:
    """Streaming int16 mono resampler over `soxr.ResampleStream`; a no-op when rates match.

    Not thread-safe: use it from one thread (the event loop), never in an audio callback.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: ResampleQuality = "LQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} → {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream: Any = None
        if in_rate != out_rate:
            import soxr

            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, samples: Int16Array) -> Int16Array:
        """Resample the next block of the stream; output length varies around the rate ratio."""
        if self._stream is None:
            return samples
        block = np.ascontiguousarray(samples, dtype=np.int16)
        return np.asarray(self._stream.resample_chunk(block), dtype=np.int16)

    def finish(self) -> Int16Array:
        """Return the samples still held by the filter and reset for a new stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        tail = np.asarray(
            self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True), dtype=np.int16
        )
        self._stream.clear()
        return tail

    def reset(self) -> None:
        """Forget buffered state (e.g. after a flush) without returning it."""
        if self._stream is not None:
            self._stream.clear()
