"""Session recording: the whole conversation as one stereo WAV on one sample clock.

Left: the microphone as sent to the server (after echo handling). Right: what was played
(everything the player handed to the speaker: replies, fades, the silence between them). Both
at 24 kHz PCM16, so a barge-in shows as the right channel stopping where the left starts.

The clock is the player's `PlaybackTap`: its position counts every sample handed to the
speaker, silence included. The microphone stamps each captured block with the tap position
(exact with one duplex stream, within a block with two streams; `MicrophoneInput.clock`), so a
block lands in the file where it was captured; a block without a stamp (a WAV file input)
follows the previous one. The right channel is placed `played_delay_s` later (the output plus
input latency, `for_devices`), so both channels line up as they sounded in the room.

Threads: `mic()` runs on the event loop and only puts the block on a bounded queue (when full,
the block is dropped and counted). A writer thread reads the tap every `poll_interval_s`,
places both channels in a pending buffer, and every `flush_interval_s` writes what is older
than `hold_s` (late microphone blocks still find their place) and rewrites the WAV header's
sizes. A reader opening the file at any moment sees a valid WAV, and a crash loses at most
`hold_s + flush_interval_s` (0.9 s). The file is private (`realtime_voicebot.files`: created
``0600``, a symbolic link at the path refused, never followed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from realtime_voicebot.audio.resample import API_SAMPLE_RATE, Int16Array, StreamResampler
from realtime_voicebot.errors import VoicebotError
from realtime_voicebot.files import open_private_descriptor

if TYPE_CHECKING:
    from realtime_voicebot.audio.output import PlaybackTap

log = structlog.get_logger(component="audio.recording")

RECORD_RATE = API_SAMPLE_RATE
CHANNELS = 2
FRAME_BYTES = 2 * CHANNELS
HEADER_BYTES = 44
MAX_DATA_BYTES = (0xFFFFFFFF - 36) // FRAME_BYTES * FRAME_BYTES
"""The RIFF size field's limit: about 12.4 hours of 24 kHz stereo PCM16."""


class RecordingError(VoicebotError, RuntimeError):
    """The recording cannot be written; the message names the file and says what to do."""


def wav_header(data_bytes: int) -> bytes:
    """The 44-byte header of a 24 kHz stereo PCM16 WAV holding `data_bytes` of samples."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        CHANNELS,
        RECORD_RATE,
        RECORD_RATE * FRAME_BYTES,
        FRAME_BYTES,
        16,
        b"data",
        data_bytes,
    )


@dataclass(frozen=True)
class RecordingStats:
    """What a `SessionRecorder` has done so far (`snapshot()`)."""

    path: str
    started_at: float | None
    """`time.monotonic()` of the file's first frame (the tap position it starts from)."""
    frames_written: int
    mic_blocks: int
    """Microphone blocks accepted by `mic()`."""
    mic_blocks_dropped: int
    """Blocks `mic()` dropped because the writer's queue was full."""
    mic_samples_late: int
    """Microphone samples that came after their place in the file was written."""
    played_samples_skipped: int
    """Played samples (at the tap's rate) overwritten in the tap before the writer read them."""
    flushes: int
    error: str | None
    """Why writing stopped (disk full, size limit); None while all is well."""

    @property
    def seconds(self) -> float:
        return self.frames_written / RECORD_RATE


_STOP = object()


class SessionRecorder:
    """Writes the conversation to a stereo WAV: `mic()` for each block sent to the server, the
    played side read from the player's tap. `start()`, then `close()`; `snapshot()` anytime.

    `microphone` is the app's input: when it has `capture_end_position` (the tap position
    where the block it last returned ends), each block is placed there.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        reference: PlaybackTap | None = None,
        microphone: object | None = None,
        played_delay_s: float = 0.0,
        queue_blocks: int = 500,
        flush_interval_s: float = 0.5,
        hold_s: float = 0.4,
        poll_interval_s: float = 0.05,
        pending_s: float = 30.0,
    ) -> None:
        if queue_blocks < 1:
            raise ValueError("queue_blocks must be at least 1")
        if not 0 < flush_interval_s <= 1.0 or not 0 <= hold_s < 1.0:
            raise ValueError("flush_interval_s must be in (0, 1] and hold_s in [0, 1)")
        self.path = Path(path)
        self.reference = reference
        self.microphone = microphone
        self.played_delay_frames = max(0, round(played_delay_s * RECORD_RATE))
        self.flush_interval_s = flush_interval_s
        self.hold_frames = round(hold_s * RECORD_RATE)
        self.poll_interval_s = poll_interval_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_blocks)
        self._pending = np.zeros((max(1, round(pending_s * RECORD_RATE)), CHANNELS), np.int16)
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._stopping = threading.Event()
        self._written = threading.Condition()
        # loop side
        self._origin = 0
        """The tap position of the file's first frame."""
        self._mic_cursor = 0
        """Where the next unstamped microphone block goes (frames from the file's start)."""
        self._started_at: float | None = None
        # writer side
        self._committed = 0  # frames written to the file
        self._data_bytes = 0
        self._tap_position = 0
        self._right_cursor = self.played_delay_frames
        self._left_end = 0
        self._resampler: StreamResampler | None = None
        # counters
        self.mic_blocks = 0
        self.mic_blocks_dropped = 0
        self.mic_samples_late = 0
        self.played_samples_skipped = 0
        self.flushes = 0
        self.error: str | None = None

    @classmethod
    def for_devices(
        cls, path: Path | str, audio_in: object | None, audio_out: object | None, **options: Any
    ) -> SessionRecorder:
        """A recorder for the app's started input and output: the output's tap is the clock,
        and the played side is shifted by the output plus input latency they report."""
        reference = getattr(audio_out, "tap", None)
        delay = float(getattr(audio_out, "output_latency_s", 0.0) or 0.0)
        delay += float(getattr(audio_in, "input_latency_s", 0.0) or 0.0)
        return cls(path, reference=reference, microphone=audio_in, played_delay_s=delay, **options)

    # --- event loop ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the file (off the loop) and start the writer. Raises RecordingError."""
        if self._thread is not None:
            return
        self._fd = await asyncio.to_thread(self._open)
        tap = self.reference
        self._origin = tap.total_samples if tap is not None else 0
        self._started_at = time.monotonic()
        self._tap_position = self._origin
        if tap is not None and tap.sample_rate != RECORD_RATE:
            self._resampler = StreamResampler(tap.sample_rate, RECORD_RATE)
        self._thread = threading.Thread(target=self._run, name="session-recorder", daemon=True)
        self._thread.start()
        log.info("recording", path=str(self.path))

    def mic(self, pcm16_24k: bytes) -> None:
        """Record a microphone block as sent to the server (call right after reading it from
        the input, before the next read). Never blocks: a full queue drops it and counts."""
        if self._thread is None or self._stopping.is_set():
            return
        frames = len(pcm16_24k) // 2
        if frames == 0:
            return
        start = self._mic_start(frames)
        self._mic_cursor = start + frames
        try:
            self._queue.put_nowait((start, pcm16_24k[: frames * 2]))
        except queue.Full:
            self.mic_blocks_dropped += 1
            return
        self.mic_blocks += 1

    def _mic_start(self, frames: int) -> int:
        """Where a block of `frames` goes: where it was captured, never over the previous one."""
        tap = self.reference
        if tap is None:
            return self._mic_cursor
        end = getattr(self.microphone, "capture_end_position", None)
        if not isinstance(end, int):  # no stamp: follow the previous block (or start now)
            if self._mic_cursor:
                return self._mic_cursor
            end = tap.total_samples
        start = (end - self._origin) * RECORD_RATE // tap.sample_rate - frames
        return max(start, self._mic_cursor)

    async def close(self) -> None:
        """Write what is left, fix the header, close the file. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        await asyncio.to_thread(thread.join)
        self._thread = None
        if self.error is None:
            log.info("recording saved", path=str(self.path), seconds=round(self.seconds, 1))

    @property
    def seconds(self) -> float:
        """Seconds of audio in the file so far."""
        return self._data_bytes / FRAME_BYTES / RECORD_RATE

    def wait_written(self, frames: int, timeout_s: float) -> bool:
        """Block until the file holds at least ``frames`` frames (False after ``timeout_s``).

        Blocking: call it from a thread (``asyncio.to_thread``), never on the event loop.
        """
        with self._written:
            return self._written.wait_for(
                lambda: self._data_bytes // FRAME_BYTES >= frames or self.error is not None,
                timeout_s,
            )

    def snapshot(self) -> RecordingStats:
        return RecordingStats(
            path=str(self.path),
            started_at=self._started_at,
            frames_written=self._data_bytes // FRAME_BYTES,
            mic_blocks=self.mic_blocks,
            mic_blocks_dropped=self.mic_blocks_dropped,
            mic_samples_late=self.mic_samples_late,
            played_samples_skipped=self.played_samples_skipped,
            flushes=self.flushes,
            error=self.error,
        )

    # --- writer thread ------------------------------------------------------------------------

    def _open(self) -> int:
        """The file, created private and truncated, holding an empty WAV's header."""
        try:
            fd = open_private_descriptor(self.path, "wb")
        except OSError as exc:  # PrivateFileError says why in a line of its own
            reason = exc.strerror or str(exc)
            raise RecordingError(f"Cannot record to {self.path}: {reason}") from None
        try:
            os.write(fd, wav_header(0))
        except OSError as exc:
            os.close(fd)
            raise RecordingError(f"Cannot record to {self.path}: {exc.strerror or exc}") from None
        return fd

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval_s
        try:
            while True:
                stop = self._drain(self.poll_interval_s)
                self._read_reference()
                if stop or self._stopping.is_set():
                    break
                if time.monotonic() >= next_flush:
                    self._commit(final=False)
                    next_flush = time.monotonic() + self.flush_interval_s
            self._drain(0.0)
            self._read_reference()
            if self._resampler is not None:  # the samples the filter still holds
                tail = self._resampler.finish()
                self._place(1, self._right_cursor, tail)
                self._right_cursor += int(tail.shape[0])
            self._commit(final=True)
        except Exception as exc:  # a bug: keep what was written, say why it stopped
            self._fail(f"the recorder failed: {exc!r}")
        finally:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def _drain(self, timeout_s: float) -> bool:
        """Place the queued microphone blocks (waiting up to `timeout_s` for the first);
        True when the stop marker came."""
        try:
            item = self._queue.get(timeout=timeout_s) if timeout_s else self._queue.get_nowait()
        except queue.Empty:
            return False
        while True:
            if item is _STOP:
                return True
            start, data = item
            self._place(0, start, np.frombuffer(data, dtype=np.int16))
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False

    def _read_reference(self) -> None:
        tap = self.reference
        if tap is None:
            return
        played, position = tap.read_since(self._tap_position)
        skipped = position - int(played.shape[0]) - self._tap_position
        if skipped > 0:  # overwritten before we read them: keep the clock, record silence
            self.played_samples_skipped += skipped
            self._right_cursor += skipped * RECORD_RATE // tap.sample_rate
        self._tap_position = position
        if self._resampler is not None:
            played = self._resampler.process(played)
        if played.shape[0]:
            self._place(1, self._right_cursor, played)
            self._right_cursor += int(played.shape[0])

    def _place(self, channel: int, start: int, samples: Int16Array) -> None:
        """Put samples at frame `start` of one channel of the pending buffer."""
        count = int(samples.shape[0])
        end = start + count
        if channel == 0:
            self._left_end = max(self._left_end, end)
        if start < self._committed:  # its place is written already
            late = min(count, self._committed - start)
            if channel == 0:
                self.mic_samples_late += late
            samples, start = samples[late:], self._committed
        offset = start - self._committed
        room = self._pending.shape[0] - offset
        if room <= 0:
            self._lost(channel, int(samples.shape[0]))
            return
        if samples.shape[0] > room:
            self._lost(channel, int(samples.shape[0]) - room)
            samples = samples[:room]
        self._pending[offset : offset + samples.shape[0], channel] = samples

    def _lost(self, channel: int, count: int) -> None:
        if channel == 0:
            self.mic_samples_late += count
        else:
            self.played_samples_skipped += count

    def _commit(self, *, final: bool) -> None:
        """Write the frames older than `hold_frames` (all of them when final), then the header."""
        newest = max(self._right_cursor, self._left_end)
        target = newest if final else newest - self.hold_frames
        count = min(target - self._committed, self._pending.shape[0])
        if count <= 0 or self.error is not None:
            return
        live = max(0, min(newest - self._committed, self._pending.shape[0]) - count)
        data = self._pending[:count].tobytes()
        self._pending[:live] = self._pending[count : count + live]
        self._pending[live : count + live] = 0
        self._committed += count
        room = MAX_DATA_BYTES - self._data_bytes
        if len(data) > room:
            data = data[:room]
            self._fail("the WAV size limit (about 12 hours) was reached")
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.pwrite(self._fd, wav_header(self._data_bytes + len(data)), 0)
        except OSError as exc:
            self._fail(f"cannot write {self.path}: {exc.strerror or exc}")
            return
        with self._written:
            self._data_bytes += len(data)
            self.flushes += 1
            self._written.notify_all()

    def _fail(self, reason: str) -> None:
        if self.error is None:
            with self._written:
                self.error = reason
                self._written.notify_all()
            log.error("recording stopped", path=str(self.path), reason=reason)
