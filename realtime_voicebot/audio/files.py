"""A WAV file as the microphone: the same interface as `MicrophoneInput`, paced in real time.

The file is decoded, mixed to mono and resampled to 24 kHz once at start (in a worker thread),
then handed out in `chunk_ms` blocks at absolute deadlines on the loop clock: block k is
returned at start + (k + 1) · chunk / pace, as a device would deliver it once recorded. A slow
reader catches up instead of drifting. After the file's audio, silence follows forever and
`finished` is set, so the server's VAD sees the end of the utterance.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from realtime_voicebot.audio.devices import AudioUnavailableError
from realtime_voicebot.audio.resample import (
    API_SAMPLE_RATE,
    DBFS_FLOOR,
    Int16Array,
    rms_dbfs,
    to_mono,
)

if TYPE_CHECKING:
    from realtime_voicebot.audio.echo import EchoProcessor


MAX_WAV_BYTES = 1024 * 1024 * 1024
"""The most sample data an input file may hold (about 6 hours of 24 kHz 16-bit stereo)."""


class AudioFileError(ValueError, AudioUnavailableError):
    """A WAV file that cannot be used as input; one line naming it and saying what to do.

    An `AudioUnavailableError` too, so that whoever opens the audio reports it the same way.
    """


def _convert_hint(path: str | Path) -> str:
    return f"convert it with `sox {path} -r 24000 -c 1 -b 16 out.wav`"


def check_wav(path: str | Path) -> None:
    """Raise `AudioFileError` unless ``path`` is a readable PCM WAV file of a sane size.

    Reads the header only: cheap enough for the command line to call before it connects.
    """
    _read_wav(path, header_only=True)


def _read_wav(path: str | Path, *, header_only: bool) -> tuple[int, int, int, bytes]:
    """``(channels, sample width, rate, frames)`` of a PCM WAV file (no frames if header only)."""
    if Path(path).is_dir():
        raise AudioFileError(f"{path} is a folder, not a WAV file")
    try:
        with wave.open(str(path), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            frames = wav.getnframes()
            if frames * channels * width > MAX_WAV_BYTES:
                raise AudioFileError(
                    f"{path} holds more than {MAX_WAV_BYTES // 2**20} MB of audio: "
                    "cut it into shorter files"
                )
            raw = b"" if header_only else wav.readframes(frames)
    except FileNotFoundError:
        raise AudioFileError(f"No such audio file: {path}") from None
    except (wave.Error, EOFError) as exc:
        reason = str(exc) or "it ends too early"
        raise AudioFileError(
            f"Cannot read {path} as PCM WAV ({reason}): {_convert_hint(path)}"
        ) from None
    except OSError as exc:
        raise AudioFileError(f"Cannot read {path}: {exc.strerror or exc}") from None
    if width not in (1, 2, 3, 4):
        raise AudioFileError(
            f"Unsupported sample width {width} bytes in {path}: {_convert_hint(path)}"
        )
    if rate <= 0:
        raise AudioFileError(f"{path} has no sample rate: {_convert_hint(path)}")
    return channels, width, rate, raw[: len(raw) - len(raw) % (channels * width)]


def load_wav_pcm16_24k(path: str | Path) -> Int16Array:
    """A PCM WAV file (8/16/24/32-bit, any rate, any channels) as int16 mono at 24 kHz."""
    channels, width, rate, raw = _read_wav(path, header_only=False)
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    elif width == 3:
        bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        samples = (bytes3[:, 2].astype(np.int8).astype(np.int16) << 8) | bytes3[:, 1]
    else:
        samples = (np.frombuffer(raw, dtype="<i4") >> 16).astype(np.int16)
    mono = to_mono(samples.reshape(-1, channels)).astype(np.int16)
    if rate == API_SAMPLE_RATE or mono.size == 0:
        return mono
    import soxr

    resampled = soxr.resample(mono, rate, API_SAMPLE_RATE, quality="HQ")
    return np.asarray(resampled, dtype=np.int16)


class WavFileInput:
    """Streams a WAV file as the microphone, then silence; `finished` is set after the file."""

    sample_rate = API_SAMPLE_RATE

    def __init__(
        self,
        path: str | Path,
        *,
        chunk_ms: int = 20,
        pace: float = 1.0,
        echo: EchoProcessor | None = None,
    ) -> None:
        if pace <= 0:
            raise ValueError("pace must be positive")
        self.path = Path(path)
        self.chunk_ms = chunk_ms
        self.block_frames = max(1, API_SAMPLE_RATE * chunk_ms // 1000)
        self.pace = pace
        self.echo = echo
        self.level_dbfs = DBFS_FLOOR
        self.dropped_blocks = 0  # nothing is dropped: blocks are produced on demand
        self.overflows = 0
        self.blocks_read = 0
        self.finished = asyncio.Event()
        """Set once the last block holding file audio has been returned by `read()`."""
        self._samples: Int16Array = np.zeros(0, dtype=np.int16)
        self._started_at: float | None = None
        self._closed = False

    @property
    def duration_s(self) -> float:
        return int(self._samples.shape[0]) / API_SAMPLE_RATE

    async def start(self) -> None:
        """Decode the file (in a thread) and start the clock."""
        self._samples = await asyncio.to_thread(load_wav_pcm16_24k, self.path)
        self._started_at = asyncio.get_running_loop().time()
        if self._samples.shape[0] == 0:
            self.finished.set()

    async def stop(self) -> None:
        self._closed = True

    async def __aenter__(self) -> WavFileInput:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def read(self) -> bytes:
        """The next block, at its real-time deadline; b"" once stopped."""
        if self._started_at is None:
            raise RuntimeError("WavFileInput.read() before start()")
        while not self._closed:
            index = self.blocks_read
            loop = asyncio.get_running_loop()
            block_s = self.block_frames / API_SAMPLE_RATE / self.pace
            deadline = self._started_at + (index + 1) * block_s
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            start = index * self.block_frames
            block = np.zeros(self.block_frames, dtype=np.int16)
            part = self._samples[start : start + self.block_frames]
            block[: part.shape[0]] = part
            self.blocks_read += 1
            if part.shape[0] and start + self.block_frames >= self._samples.shape[0]:
                self.finished.set()
            self.level_dbfs = rms_dbfs(block)
            pcm = block.tobytes()
            if self.echo is not None:
                pcm = self.echo.process(pcm)
            if pcm:
                return pcm
        return b""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while block := await self.read():
            yield block
