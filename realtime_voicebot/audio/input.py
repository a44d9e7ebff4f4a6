"""The microphone: PortAudio callback → bounded queue → PCM16 24 kHz mono blocks on the loop.

The callback only copies the block into a preallocated slot and hands the slot to the loop with
`call_soon_threadsafe`. Resampling, level metering and echo processing happen in `read()`, on
the event loop. At most `queue_blocks` blocks wait for the reader; when the reader falls
further behind, new blocks are dropped and counted in `dropped_blocks`.

Capture clock: given the player's `PlaybackTap` as `clock`, each block is stamped in the
callback with the tap's position (samples handed to the speaker so far), and after `read()`
`capture_end_position` is the tap position at which the returned block ends. The session
recorder uses it to put the microphone and the played audio on one sample clock. In a duplex
stream (`audio.duplex`) the stamp is exact: input and output blocks share one callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import structlog

from realtime_voicebot.audio.devices import (
    AudioUnavailableError,
    load_sounddevice,
    supported_samplerate,
)
from realtime_voicebot.audio.resample import (
    API_SAMPLE_RATE,
    DBFS_FLOOR,
    PCM16_FULL_SCALE_SQUARED,
    StreamResampler,
    mean_square_dbfs,
    sum_of_squares,
)
from realtime_voicebot.errors import VoicebotError

if TYPE_CHECKING:
    from realtime_voicebot.audio.echo import EchoProcessor
    from realtime_voicebot.audio.output import PlaybackTap

log = structlog.get_logger(component="audio.input")

STREAM_STOPPED = "the input stream stopped unexpectedly (device unplugged or PortAudio failed)"


class AudioDeviceError(VoicebotError, RuntimeError):
    """A device failed during a run (unplugged, PortAudio error); the message is the reason."""


class AudioInput(Protocol):
    """A source of PCM16 24 kHz mono blocks: the microphone or a WAV file."""

    sample_rate: int
    level_dbfs: float
    dropped_blocks: int
    overflows: int

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def read(self) -> bytes: ...
    def __aiter__(self) -> AsyncIterator[bytes]: ...


class MicrophoneInput:
    """Captures a PortAudio input device and yields PCM16 24 kHz mono bytes.

    `read()` returns the next block (b"" once stopped); `async for block in mic` does the same.
    The device runs at 24 kHz when it can, else at its default rate with resampling on the loop.
    """

    sample_rate = API_SAMPLE_RATE

    def __init__(
        self,
        device: int | None = None,
        *,
        chunk_ms: int = 20,
        device_rate: int | None = None,
        queue_blocks: int = 50,
        echo: EchoProcessor | None = None,
        latency: float | str = "low",
        clock: PlaybackTap | None = None,
    ) -> None:
        if queue_blocks < 1:
            raise ValueError("queue_blocks must be at least 1")
        self.device = device
        self.chunk_ms = chunk_ms
        self.device_rate = device_rate
        """The rate the device captures at (None until start() probes the device)."""
        self.queue_blocks = queue_blocks
        self.echo = echo
        self.latency = latency
        self.input_latency_s = 0.0
        self.level_dbfs = DBFS_FLOOR
        """RMS level of the last block read, before echo processing (for the live display)."""
        self.dropped_blocks = 0
        """Blocks dropped because `queue_blocks` were already waiting for the reader."""
        self.overflows = 0
        """Blocks PortAudio flagged as input overflow (samples lost before the callback)."""
        self.callback_errors = 0
        self.blocks_read = 0
        self.device_error: str | None = None
        """Why the stream stopped on its own (None while it runs or after `stop`)."""
        self.clock = clock
        """The player's tap whose position stamps each captured block (None: no stamps)."""
        self.capture_end_position: int | None = None
        """Position on `clock` where the block last returned by `read()` ends (None: no clock)."""
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: deque[tuple[int, int] | None] | None = None
        """Slots handed to the loop, in order; None is the stop sentinel. Bounded by
        `_pending` (at most `queue_blocks` slots) plus one sentinel."""
        self._waiter: asyncio.Future[None] | None = None
        self._slots = np.zeros((0, 0), dtype=np.int16)
        self._slot_bytes = memoryview(b"")
        """`_slots` as one writable run of bytes (set by `prepare`)."""
        self._slot_positions: list[int | None] = []
        """The clock position of each slot's first sample (None: no clock)."""
        self._next_slot = 0
        self._filling = -1
        """`capture_raw`: the slot being filled (-1: none), and how many frames it holds."""
        self._filled = 0
        self._pending = 0  # slots handed to the loop and not yet read
        self._resampler: StreamResampler | None = None
        self._stream: Any = None
        self._closed = False

    @property
    def block_frames(self) -> int:
        rate = self.device_rate or API_SAMPLE_RATE
        return max(1, rate * self.chunk_ms // 1000)

    def prepare(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Allocate the slots and queue and bind the loop, without opening a device (tests).

        A callback may already run (a duplex stream opened for the speaker): it ignores
        blocks until the loop is bound, which happens last.
        """
        running = loop or asyncio.get_running_loop()
        rate = self.device_rate or API_SAMPLE_RATE
        self.device_rate = rate
        with self._lock:
            self._loop = None
            self._slots = np.zeros((self.queue_blocks, self.block_frames), dtype=np.int16)
            self._slot_bytes = self._slots.data.cast("B")
            self._slot_positions = [None] * self.queue_blocks
            self._next_slot = 0
            self._filling = -1
            self._filled = 0
            self._pending = 0
            self._ready = deque()
            self._waiter = None
            self._resampler = StreamResampler(rate, API_SAMPLE_RATE)
            self.device_error = None
            self.capture_end_position = None
            self._closed = False
            self._loop = running

    async def start(self) -> None:
        """Open and start the input stream."""
        sd = load_sounddevice()
        if self.device_rate is None:
            self.device_rate = supported_samplerate(self.device, "input", API_SAMPLE_RATE)
        self.prepare()
        try:
            self._stream = sd.InputStream(
                device=self.device,
                samplerate=self.device_rate,
                channels=1,
                dtype="int16",
                blocksize=self.block_frames,
                latency=self.latency,
                callback=self._on_block,
                finished_callback=self._on_stream_finished,
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise AudioUnavailableError(
                f"Cannot open the input device ({exc}): run `voicebot devices list` and pick "
                "one with --input-device"
            ) from exc
        self.input_latency_s = float(self._stream.latency)
        log.debug("input started", device=self.device, rate=self.device_rate)

    async def stop(self) -> None:
        """Stop the stream; a pending or later `read()` returns b""."""
        self._closed = True  # first: the stream's finished callback is expected now
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
            stream.close()
        if self._ready is not None:
            self._wake_reader()

    async def __aenter__(self) -> MicrophoneInput:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- callback thread --------------------------------------------------------------------

    def _on_block(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio callback: copy the block into a free slot and hand it to the loop."""
        if status and status.input_overflow:
            self.overflows += 1
        clock = self.clock
        slot = self._claim_slot(None if clock is None else clock.total_samples)
        if slot < 0:
            return
        try:
            frames = min(frames, self._slots.shape[1])
            channel0 = indata[:frames, 0] if indata.ndim == 2 else indata[:frames]
            self._slots[slot, :frames] = channel0
        except Exception:
            self.callback_errors += 1
            self._release_slot()
            return
        self._hand_over(slot, frames)

    def capture_raw(self, indata: Any, frames: int, position: int | None) -> None:
        """Append raw samples (mono PCM16 bytes, any buffer) to the slot being filled, and hand
        each slot to the loop when it holds a whole block. `position` is the clock position of
        the first sample (None: no clock; negative: before the clock's start). Device blocks
        may be smaller or larger than ours.

        For a raw or duplex stream's callback (one thread): byte copies, no array built.
        When no slot is free, the rest of the device block is dropped (`dropped_blocks`).
        """
        if self._loop is None or self._closed:
            self._filling = -1
            return
        slot_frames = self._slots.shape[1]
        whole = len(indata) == frames * 2
        done = 0
        while done < frames:
            slot = self._filling
            if slot < 0:
                slot = self._claim_slot(None if position is None else position + done)
                if slot < 0:
                    return
                self._filling, self._filled = slot, 0
            take = min(frames - done, slot_frames - self._filled)
            try:
                # A cffi buffer's slice is a bytes copy; a memoryview's is not.
                if whole and take == frames:
                    data = indata
                else:
                    data = memoryview(indata)[done * 2 : (done + take) * 2]
                start = (slot * slot_frames + self._filled) * 2
                self._slot_bytes[start : start + take * 2] = data
            except Exception:
                self.callback_errors += 1
                self._filling = -1
                self._release_slot()
                return
            self._filled += take
            done += take
            if self._filled == slot_frames:
                self._filling = -1
                self._hand_over(slot, slot_frames)

    def _claim_slot(self, position: int | None) -> int:
        """A free slot for the next block (-1: not started, stopped, or the queue is full)."""
        with self._lock:
            if self._loop is None or self._closed:
                return -1
            if self._pending >= self.queue_blocks:
                self.dropped_blocks += 1
                return -1
            slot = self._next_slot
            self._next_slot = (slot + 1) % self.queue_blocks
            self._pending += 1
            self._slot_positions[slot] = position
        return slot

    def _hand_over(self, slot: int, frames: int) -> None:
        """Give a filled slot to the loop."""
        loop = self._loop
        try:
            if loop is None:
                raise RuntimeError("no loop")
            loop.call_soon_threadsafe(self._enqueue, slot, frames)
        except RuntimeError:  # stopped in between, or the loop is closed
            self._release_slot()

    def _on_stream_finished(self) -> None:
        """PortAudio: the stream ended. Unless `stop` ended it, the device failed."""
        loop = self._loop
        if self._closed or loop is None:
            return
        self.device_error = STREAM_STOPPED
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads any more
            loop.call_soon_threadsafe(self._wake_reader)

    # --- event loop -------------------------------------------------------------------------

    def _wake_reader(self) -> None:
        """Queue the stop sentinel (once) and wake the reader."""
        assert self._ready is not None
        if None not in self._ready:
            self._ready.append(None)
        self._notify()

    def _enqueue(self, slot: int, frames: int) -> None:
        assert self._ready is not None
        self._ready.append((slot, frames))  # bounded: `_pending` caps the slots in flight
        self._notify()

    def _notify(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _release_slot(self) -> None:
        with self._lock:
            self._pending -= 1

    async def read(self) -> bytes:
        """The next PCM16 24 kHz mono block; b"" once the input is stopped.

        Raises AudioDeviceError once the stream has stopped on its own (the device failed),
        after the blocks captured before that.
        """
        ready = self._ready
        if ready is None:
            raise RuntimeError("MicrophoneInput.read() before start()")
        assert self._resampler is not None
        while True:
            if self._closed and not ready:
                return b""
            if not ready:
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
                continue
            entry = ready[0]
            if entry is None:  # the sentinel stays: every later read ends too
                if self.device_error is not None and not self._closed:
                    raise AudioDeviceError(self.device_error)
                return b""
            ready.popleft()
            slot, frames = entry
            try:
                raw = self._slots[slot, :frames]
                position = self._slot_positions[slot]
                if frames:
                    self.level_dbfs = mean_square_dbfs(
                        sum_of_squares(raw) / frames / PCM16_FULL_SCALE_SQUARED
                    )
                pcm = self._resampler.process(raw).tobytes()
            finally:
                self._release_slot()
            self._stamp_capture_end(position, frames)
            self.blocks_read += 1
            if self.echo is not None:
                pcm = self.echo.process(pcm, self.capture_end_position)
            if pcm:  # empty while the resampler fills or the echo gate holds a block
                return pcm

    def _stamp_capture_end(self, position: int | None, frames: int) -> None:
        clock = self.clock
        if position is None or clock is None:
            self.capture_end_position = None
            return
        rate = self.device_rate or API_SAMPLE_RATE
        self.capture_end_position = position + frames * clock.sample_rate // rate

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while block := await self.read():
            yield block
