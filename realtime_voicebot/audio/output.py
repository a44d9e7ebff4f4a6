"""Playback of the assistant's audio while it streams, with a played-samples counter and flush.

`AudioPlayer` is the core and does no I/O: the event loop feeds it the assistant's PCM16 24 kHz
deltas (`write`, `end_item`), and a device callback pulls blocks at the device's rate
(`pull_into`). Everything the barge-in logic needs is counted where it happens, inside the
pull: how much of each item was handed to the device (`played_ms`), whether anything is audible
now, when an item played to its end. `flush` silences the output within one block with a short
fade and drops the rest of the reply.

The shells move samples only: `SoundDevicePlayer` pulls from a PortAudio callback,
`WavFilePlayer` pulls from an asyncio task at real-time pace and writes what was played to a
WAV file. Threading: the loop writes and flushes, the callback thread pulls; one
`threading.Lock` guards the shared state and is held only for slicing and counting.

Jitter buffer: an item starts when `jitter_ms` of it is buffered or its audio is complete.
When its buffer runs dry before the end (an underrun), silence plays, `underruns` counts the
episode, and the item waits for `jitter_ms` again, so a slow network gives a few longer gaps
instead of many clicks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import wave
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from realtime_voicebot.audio.devices import (
    AudioUnavailableError,
    load_sounddevice,
    supported_samplerate,
)
from realtime_voicebot.audio.resample import (
    API_SAMPLE_RATE,
    Int16Array,
    StreamResampler,
)

log = structlog.get_logger(component="audio.output")

ItemFinishedCallback = Callable[[str], None]
ItemStartedCallback = Callable[[str, float], None]
DeviceErrorCallback = Callable[[str], None]

STREAM_STOPPED = "the output stream stopped unexpectedly (device unplugged or PortAudio failed)"


class PlaybackTap:
    """A bounded ring of the latest samples handed to the device, silence included.

    The echo processors read it as the far-end reference. The device callback appends (one
    slice copy under a lock); readers copy out on the event loop. Positions count samples
    since the start, so a reader can ask for everything after the position it last saw.
    """

    def __init__(self, sample_rate: int, capacity_ms: int = 2000) -> None:
        self.sample_rate = sample_rate
        self.capacity = max(1, sample_rate * capacity_ms // 1000)
        self._ring = np.zeros(self.capacity, dtype=np.int16)
        self._lock = threading.Lock()
        self.total_samples = 0
        """Samples appended since creation (the position of the newest sample + 1)."""
        self.skipped_samples = 0
        """Samples a reader asked for after the ring had overwritten them."""

    def append(self, block: Int16Array) -> None:
        """Record a block that was just handed to the device (audio-callback safe)."""
        size = int(block.shape[0])
        if size == 0:
            return
        if size > self.capacity:
            block = block[-self.capacity :]
        with self._lock:
            start = self.total_samples % self.capacity
            first = min(block.shape[0], self.capacity - start)
            self._ring[start : start + first] = block[:first]
            if first < block.shape[0]:
                self._ring[: block.shape[0] - first] = block[first:]
            self.total_samples += size

    def read_since(self, position: int) -> tuple[Int16Array, int]:
        """A copy of the samples appended after `position`, and the position to ask from next."""
        with self._lock:
            end = self.total_samples
            oldest = end - min(end, self.capacity)
            if position < oldest:
                self.skipped_samples += oldest - position
                position = oldest
            return self._copy_range(position, end), end

    def recent(self, samples: int) -> Int16Array:
        """A copy of the last `samples` samples (fewer at the very start)."""
        with self._lock:
            end = self.total_samples
            start = max(0, end - min(samples, self.capacity))
            return self._copy_range(start, end)

    def _copy_range(self, start: int, end: int) -> Int16Array:
        count = max(0, end - start)
        out = np.empty(count, dtype=np.int16)
        if count == 0:
            return out
        offset = start % self.capacity
        first = min(count, self.capacity - offset)
        out[:first] = self._ring[offset : offset + first]
        if first < count:
            out[first:] = self._ring[: count - first]
        return out


@dataclass(eq=False)
class _Item:
    """Playback state of one assistant item (guarded by the player's lock where it changes)."""

    item_id: str
    resampler: StreamResampler | None
    chunks: deque[Int16Array] = field(default_factory=deque)
    head_offset: int = 0  # samples of chunks[0] already played
    buffered: int = 0  # device-rate samples waiting to play
    received_samples: int = 0  # 24 kHz samples accepted by write()
    played_samples: int = 0  # device-rate samples handed to the device
    complete: bool = False  # end_item() was called: no more audio comes
    waiting: bool = True  # filling the jitter buffer (at the start or after an underrun)
    discarded: bool = False  # flushed: later writes are dropped
    finished: bool = False  # played to its end
    first_sample_at: float | None = None
    odd_byte: bytes = b""
    done_event: asyncio.Event | None = None


class AudioOutput(Protocol):
    """What the rest of the bot uses to play replies; both shells and the core satisfy it."""

    sample_rate: int
    output_latency_s: float
    on_item_finished: ItemFinishedCallback | None
    on_item_started: ItemStartedCallback | None
    on_device_error: DeviceErrorCallback | None

    @property
    def tap(self) -> PlaybackTap: ...
    @property
    def is_audible(self) -> bool: ...
    @property
    def playing_item_id(self) -> str | None: ...
    @property
    def head_item_id(self) -> str | None: ...
    @property
    def underruns(self) -> int: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def write(self, item_id: str, pcm16_24k: bytes) -> None: ...
    def end_item(self, item_id: str) -> None: ...
    def discard_item(self, item_id: str) -> None: ...
    def flush(self) -> str | None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def played_ms(self, item_id: str) -> float: ...
    def received_ms(self, item_id: str) -> float: ...
    def first_sample_at(self, item_id: str) -> float | None: ...
    def is_finished(self, item_id: str) -> bool: ...
    async def wait_finished(self, item_id: str) -> bool: ...
    async def wait_silenced(self) -> float | None: ...


class AudioPlayer:
    """The playback core: jitter buffer, played-samples counter, flush with fade. No device.

    `sample_rate` is the device's rate; writes at 24 kHz are resampled to it on the loop side.
    Used on its own (tests, a text-only mode) nothing pulls, so nothing plays.
    """

    def __init__(
        self,
        *,
        sample_rate: int = API_SAMPLE_RATE,
        jitter_ms: float = 60.0,
        fade_ms: float = 5.0,
        max_buffer_s: float = 300.0,
        latency_compensation: bool = True,
        output_latency_s: float = 0.0,
        tap_ms: int = 2000,
        max_items: int = 64,
        on_item_finished: ItemFinishedCallback | None = None,
        on_item_started: ItemStartedCallback | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.jitter_samples = round(jitter_ms * sample_rate / 1000)
        self.fade_samples = max(1, round(fade_ms * sample_rate / 1000))
        self.max_buffer_samples = round(max_buffer_s * sample_rate)
        self.latency_compensation = latency_compensation
        self.output_latency_s = output_latency_s
        """Device output latency; `played_ms` subtracts it when compensation is on."""
        self.max_items = max_items
        self.on_item_finished = on_item_finished
        """Called on the event loop with the item id when an item has played to its end."""
        self.on_item_started = on_item_started
        """Called on the event loop with the item id and `first_sample_at` when an item's
        first sample has been handed to the device."""
        self.on_device_error: DeviceErrorCallback | None = None
        """Called on the event loop with the reason when the device fails mid-run."""
        self.device_error: str | None = None
        """Why the device stopped on its own (None while it works)."""
        self.real_time_pulls = False
        """Set by device players whose pulls follow the device clock: `played_ms` then also
        leaves out the part of the latest block that the device has not reached yet."""
        self._pulled_at = 0.0
        self._pulled_ms = 0.0
        self._pulled_item_id: str | None = None
        self._tap = PlaybackTap(sample_rate, tap_ms)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._items: OrderedDict[str, _Item] = OrderedDict()
        self._queue: deque[_Item] = deque()  # items to play, in order
        self._buffered_total = 0
        self._fade = np.zeros(self.fade_samples, dtype=np.int16)
        self._fade_pos = self.fade_samples  # == fade_samples: no fade pending
        self._last_sample = 0
        self._playing_item_id: str | None = None
        self._audible = False
        # counters
        self._underruns = 0
        self.underrun_samples = 0
        """Silence samples played inside items because their audio had not arrived."""
        self.dropped_writes = 0
        """Writes dropped because `max_buffer_s` of audio was already buffered."""
        self.discarded_writes = 0
        """Writes dropped because their item was flushed, discarded or already complete."""
        self.flushes = 0
        self.flushed_at: float | None = None
        """`time.monotonic()` of the latest `flush`."""
        self.silenced_at: float | None = None
        """`time.monotonic()` when the block ending the latest flush's fade (its last non-zero
        sample) was handed to the device; None while that block is still to come."""
        self._silence_pending = False
        self._silenced_event: asyncio.Event | None = None
        self._paused = False
        self._fade_in_left = 0
        self.pauses = 0

    # --- loop side --------------------------------------------------------------------------

    @property
    def tap(self) -> PlaybackTap:
        """The ring of recently played samples (the echo processors' reference)."""
        return self._tap

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop on which item notifications run (bound by start() or the first write)."""
        self._loop = loop

    async def start(self) -> None:
        self.bind_loop(asyncio.get_running_loop())

    async def stop(self) -> None:
        return None

    def write(self, item_id: str, pcm16_24k: bytes) -> None:
        """Queue a delta of an item's audio (PCM16 mono 24 kHz bytes)."""
        self._bind_running_loop()
        item = self._items.get(item_id)
        if item is None:
            item = self._open_item(item_id)
        elif item.discarded or item.complete:
            self.discarded_writes += 1
            return
        data = item.odd_byte + pcm16_24k if item.odd_byte else pcm16_24k
        item.odd_byte = b""
        if len(data) % 2:
            item.odd_byte, data = data[-1:], data[:-1]
        samples_24k: Int16Array = np.frombuffer(data, dtype=np.int16)
        samples = item.resampler.process(samples_24k) if item.resampler else samples_24k
        self._append(item, samples, received=int(samples_24k.shape[0]))

    def end_item(self, item_id: str) -> None:
        """Mark an item's audio complete: it may start now and finishes when drained."""
        item = self._items.get(item_id)
        if item is None or item.discarded or item.complete:
            return
        self._complete(item)

    def discard_item(self, item_id: str) -> None:
        """Stop playing an item (fading out if audible) and ignore its later writes."""
        item = self._items.get(item_id)
        if item is None:
            item = self._open_item(item_id, enqueue=False)
        self._discard([item])

    def flush(self) -> str | None:
        """Silence output within one block (fade), drop all buffered audio; the item flushed.

        Returns the id of the item that was playing or about to play, or None when nothing
        was pending (the reply had already played to its end). Later writes of the flushed
        items are dropped and counted in `discarded_writes`.
        """
        self._bind_running_loop()
        with self._lock:
            queued = list(self._queue)
            was_paused, self._paused = self._paused, False
            if not was_paused:  # a paused player went silent at the pause already
                self.flushed_at = time.monotonic()
                self.silenced_at = None
                self._silence_pending = True
        if self._silenced_event is not None:
            self._silenced_event.set()  # a waiter on an earlier flush: it has a newer one now
        self._silenced_event = None
        flushed = queued[0].item_id if queued else None
        self._discard(queued, fade=not was_paused)
        self.flushes += 1
        return flushed

    def pause(self) -> None:
        """Go silent within one block (a short fade) but keep everything buffered and the
        played position: `resume` plays on from the very next sample. Like a flush, it is
        stamped for `wait_silenced`."""
        if self._silenced_event is not None:
            self._silenced_event.set()  # a waiter on an earlier flush: it has a newer one now
        self._silenced_event = None
        with self._lock:
            if self._paused:
                return
            self._paused = True
            self.pauses += 1
            self.flushed_at = time.monotonic()
            self.silenced_at = None
            self._silence_pending = True
            if self._audible and self._fade_pos >= self.fade_samples:
                ramp = 1.0 - np.arange(1, self.fade_samples + 1) / self.fade_samples
                self._fade[:] = np.rint(self._last_sample * ramp).astype(np.int16)
                self._fade_pos = 0

    def resume(self) -> None:
        """Play on from where `pause` stopped (fading in over a few ms, click-free)."""
        with self._lock:
            if self._paused:
                self._paused = False
                self._fade_in_left = self.fade_samples

    @property
    def paused(self) -> bool:
        return self._paused

    async def wait_silenced(self) -> float | None:
        """Wait until the latest flush's fade has been handed to the device; `silenced_at`.

        None when nothing was flushed, or when a newer flush came first.
        """
        if self.flushed_at is None:
            return None
        if self.silenced_at is None:
            event = self._silenced_event
            if event is None:
                event = self._silenced_event = asyncio.Event()
            await event.wait()
        return self.silenced_at

    def played_ms(self, item_id: str) -> float:
        """Milliseconds of an item handed to the device, counted in samples.

        With latency compensation the device's output latency is subtracted (what has come
        out of the speaker so far), and with `real_time_pulls` the not yet sounding rest of
        the latest block. A flushed item keeps the value it had at the flush; an
        item that played to its end reports its full length.
        """
        item = self._items.get(item_id)
        if item is None:
            return 0.0
        with self._lock:
            played = item.played_samples
            finished = item.finished
            in_latest_block = self._pulled_item_id == item_id
            pulled_at, pulled_ms = self._pulled_at, self._pulled_ms
        played_ms = played * 1000.0 / self.sample_rate
        if self.latency_compensation and not finished:
            played_ms -= self.output_latency_s * 1000.0
            if self.real_time_pulls and in_latest_block:
                # A block is handed over whole but sounds over its length: at a moment between
                # two callbacks, the device is that far into the latest one.
                since_ms = (time.monotonic() - pulled_at) * 1000.0
                played_ms -= max(0.0, pulled_ms - since_ms)
        return max(0.0, played_ms)

    def received_ms(self, item_id: str) -> float:
        """Milliseconds of an item's audio accepted by `write` (24 kHz samples)."""
        item = self._items.get(item_id)
        if item is None:
            return 0.0
        return item.received_samples * 1000.0 / API_SAMPLE_RATE

    def first_sample_at(self, item_id: str) -> float | None:
        """`time.monotonic()` when the item's first sample was handed to the device."""
        item = self._items.get(item_id)
        return None if item is None else item.first_sample_at

    def is_finished(self, item_id: str) -> bool:
        """Whether the item played to its end (False for flushed or unknown items)."""
        item = self._items.get(item_id)
        return item is not None and item.finished

    async def wait_finished(self, item_id: str) -> bool:
        """Wait until the item played to its end (True) or was flushed (False; also unknown)."""
        item = self._items.get(item_id)
        if item is None:
            return False
        if item.finished or item.discarded:
            return item.finished
        if item.done_event is None:
            item.done_event = asyncio.Event()
        await item.done_event.wait()
        return item.finished

    @property
    def playing_item_id(self) -> str | None:
        """The item whose samples were in the last block handed to the device."""
        return self._playing_item_id

    @property
    def head_item_id(self) -> str | None:
        """The item playing or next to play (filling its jitter buffer), if any."""
        with self._lock:
            return self._queue[0].item_id if self._queue else None

    @property
    def is_audible(self) -> bool:
        """Whether the last block handed to the device held reply audio (or a fade)."""
        return self._audible

    @property
    def underruns(self) -> int:
        """Times an item's buffer ran dry before its end (each episode once)."""
        return self._underruns

    @property
    def buffered_ms(self) -> float:
        """Audio waiting to play, over all items."""
        return self._buffered_total * 1000.0 / self.sample_rate

    def _bind_running_loop(self) -> None:
        if self._loop is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()

    def _open_item(self, item_id: str, *, enqueue: bool = True) -> _Item:
        if enqueue:
            # The server sends an item's audio only after the previous item's audio is done.
            for earlier in list(self._queue):
                if not earlier.complete:
                    self._complete(earlier)
        resampler = (
            StreamResampler(API_SAMPLE_RATE, self.sample_rate)
            if self.sample_rate != API_SAMPLE_RATE
            else None
        )
        item = _Item(item_id=item_id, resampler=resampler)
        with self._lock:
            self._evict_records()
            self._items[item_id] = item
            if enqueue:
                self._queue.append(item)
            else:
                item.discarded = True
        return item

    def _evict_records(self) -> None:
        """Keep at most `max_items` records, forgetting the oldest no longer queued."""
        excess = len(self._items) - self.max_items + 1
        if excess <= 0:
            return
        queued = {id(item) for item in self._queue}
        for key in [k for k, v in self._items.items() if id(v) not in queued][:excess]:
            del self._items[key]

    def _append(self, item: _Item, samples: Int16Array, received: int) -> None:
        size = int(samples.shape[0])
        with self._lock:
            if self._buffered_total + size > self.max_buffer_samples:
                self.dropped_writes += 1
                return
            item.received_samples += received
            if size:
                item.chunks.append(samples)
                item.buffered += size
                self._buffered_total += size

    def _complete(self, item: _Item) -> None:
        tail = item.resampler.finish() if item.resampler else np.zeros(0, dtype=np.int16)
        self._append(item, tail, received=0)
        with self._lock:
            item.complete = True

    def _discard(self, items: list[_Item], *, fade: bool = True) -> None:
        if not items:
            return
        with self._lock:
            head_goes = self._queue and self._queue[0] in items
            if fade and head_goes and self._fade_pos >= self.fade_samples:
                self._prepare_fade(self._queue[0])
            for item in items:
                item.discarded = True
                self._buffered_total -= item.buffered
                item.buffered = 0
                item.chunks.clear()
                item.head_offset = 0
            self._queue = deque(item for item in self._queue if not item.discarded)
            if self._playing_item_id in {item.item_id for item in items}:
                self._playing_item_id = None
        for item in items:
            if item.resampler is not None:
                item.resampler.reset()
            if item.done_event is not None:
                item.done_event.set()

    def _prepare_fade(self, head: _Item) -> None:
        """Fill the fade buffer (lock held): the next samples of the audible item, else a hold
        of the last output sample, under a linear ramp down to zero."""
        fade = self._fade
        filled = 0
        if not head.waiting and head.buffered:
            offset = head.head_offset
            for chunk in head.chunks:
                take = min(self.fade_samples - filled, int(chunk.shape[0]) - offset)
                fade[filled : filled + take] = chunk[offset : offset + take]
                filled += take
                offset = 0
                if filled == self.fade_samples:
                    break
        hold = int(fade[filled - 1]) if filled else self._last_sample
        fade[filled:] = hold
        ramp = 1.0 - np.arange(1, self.fade_samples + 1, dtype=np.float64) / self.fade_samples
        fade[:] = np.rint(fade * ramp).astype(np.int16)
        self._fade_pos = 0

    # --- callback side ----------------------------------------------------------------------

    def pull(self, frames: int) -> Int16Array:
        """The next `frames` samples to play (a new array; see `pull_into`)."""
        out = np.empty(frames, dtype=np.int16)
        self.pull_into(out)
        return out

    def pull_into(self, out: Int16Array) -> int:
        """Fill `out` with the next samples to play; called from the device callback.

        Returns how many leading samples belong to playback (reply audio, a fade, or silence
        inside an item during an underrun); the rest of the block is idle silence.
        """
        frames = int(out.shape[0])
        pos = 0
        finished: list[_Item] = []
        started: list[_Item] = []
        silenced = False
        audible_id: str | None = None
        with self._lock:
            if self._fade_pos < self.fade_samples:
                take = min(frames, self.fade_samples - self._fade_pos)
                out[:take] = self._fade[self._fade_pos : self._fade_pos + take]
                self._fade_pos += take
                pos = take
            if self._silence_pending and self._fade_pos >= self.fade_samples:
                # This block holds the end of the flush's fade: the last sample of the reply.
                self._silence_pending = False
                self.silenced_at = time.monotonic()
                silenced = True
            while pos < frames and self._queue and not self._paused:
                item = self._queue[0]
                if item.waiting:
                    if item.buffered >= self.jitter_samples or item.complete:
                        item.waiting = False
                    else:
                        break
                take = min(frames - pos, item.buffered)
                if take:
                    self._copy_from(item, out, pos, take)
                    if self._fade_in_left:
                        self._fade_in(out[pos : pos + take])
                    if item.first_sample_at is None:
                        item.first_sample_at = time.monotonic()
                        started.append(item)
                    item.played_samples += take
                    pos += take
                    audible_id = item.item_id
                if item.buffered == 0:
                    if item.complete:
                        item.finished = True
                        self._queue.popleft()
                        finished.append(item)
                        continue
                    if pos < frames:
                        self._underruns += 1
                        item.waiting = True
                    break
            audible = pos
            active = pos
            if self._queue and self._queue[0].played_samples and pos < frames:
                active = frames  # an underrun inside an item is part of playback
                self.underrun_samples += frames - pos
            out[pos:] = 0
            self._audible = audible > 0
            self._playing_item_id = audible_id
            self._last_sample = int(out[frames - 1]) if frames else self._last_sample
            self._pulled_at = time.monotonic()
            self._pulled_ms = frames * 1000.0 / self.sample_rate
            self._pulled_item_id = audible_id
        self._tap.append(out)
        for item in started:
            self._call_on_loop(self._item_started_on_loop, item)
        if silenced:
            self._call_on_loop(self._silenced_on_loop)
        for item in finished:
            self._notify_finished(item)
        if self._played_watches:  # someone waits in `wait_played`: one check per block
            self._fire_played_watches()
        return active

    def _fade_in(self, samples: Int16Array) -> None:
        """Ramp up the first samples played after a resume (lock held)."""
        count = min(self._fade_in_left, int(samples.shape[0]))
        done = self.fade_samples - self._fade_in_left
        ramp = np.arange(done + 1, done + count + 1) / self.fade_samples
        samples[:count] = np.rint(samples[:count] * ramp).astype(np.int16)
        self._fade_in_left -= count

    # --- waiting for a played position ------------------------------------------------------

    _played_watches: tuple[tuple[str, int, asyncio.Event], ...] = ()
    """`wait_played` waiters: (item id, played samples to reach, event); replaced, not changed."""

    async def wait_played(self, item_id: str, ms: float) -> bool:
        """Wait until `played_ms` of the item reaches ``ms`` (True), or until it played to its
        end or was flushed short of it (False). An item not written yet is waited for.

        The device callback checks the waiters once per block and wakes one on the loop only
        when its item got there, so a wait costs the callback nothing else.
        """
        self._bind_running_loop()
        latency_ms = self.output_latency_s * 1000.0 if self.latency_compensation else 0.0
        samples = round((ms + latency_ms) * self.sample_rate / 1000, 6)
        target = int(samples) + (int(samples) < samples)  # rounded up
        while True:
            item = self._items.get(item_id)
            if item is not None:
                if self.played_ms(item_id) >= ms:
                    return True
                if item.finished or item.discarded:
                    return False
                # Reached in samples but not yet sounding (`real_time_pulls`): the next block.
                target = max(target, item.played_samples + 1)
            watch = (item_id, target, asyncio.Event())
            with self._lock:
                self._played_watches = (*self._played_watches, watch)
            try:
                await watch[2].wait()
            finally:
                with self._lock:
                    self._played_watches = tuple(w for w in self._played_watches if w is not watch)

    def _fire_played_watches(self) -> None:
        """Callback side: wake the waiters whose item reached its target, ended or was flushed."""
        with self._lock:
            fired = []
            for watch in self._played_watches:
                item = self._items.get(watch[0])
                if item is not None and (
                    item.played_samples >= watch[1] or item.finished or item.discarded
                ):
                    fired.append(watch)
            if fired:
                self._played_watches = tuple(w for w in self._played_watches if w not in fired)
        for _, _, event in fired:
            self._call_on_loop(event.set)

    def _copy_from(self, item: _Item, out: Int16Array, pos: int, count: int) -> None:
        """Move `count` buffered samples of `item` into `out[pos:]` (lock held)."""
        while count:
            chunk = item.chunks[0]
            available = int(chunk.shape[0]) - item.head_offset
            take = min(count, available)
            out[pos : pos + take] = chunk[item.head_offset : item.head_offset + take]
            pos += take
            count -= take
            item.buffered -= take
            self._buffered_total -= take
            if take == available:
                item.chunks.popleft()
                item.head_offset = 0
            else:
                item.head_offset += take

    def _notify_finished(self, item: _Item) -> None:
        self._call_on_loop(self._item_finished_on_loop, item)

    def _call_on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        if self._loop is None:
            callback(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                self._loop.call_soon_threadsafe(callback, *args)

    def _item_started_on_loop(self, item: _Item) -> None:
        if self.on_item_started is not None and item.first_sample_at is not None:
            self.on_item_started(item.item_id, item.first_sample_at)

    def _silenced_on_loop(self) -> None:
        if self._silenced_event is not None and self.silenced_at is not None:
            self._silenced_event.set()

    def _device_failed(self, reason: str) -> None:
        """Any thread: the device is gone; tell the loop once."""
        if self.device_error is not None:
            return
        self.device_error = reason
        self._call_on_loop(self._device_error_on_loop, reason)

    def _device_error_on_loop(self, reason: str) -> None:
        if self.on_device_error is not None:
            self.on_device_error(reason)

    def _item_finished_on_loop(self, item: _Item) -> None:
        if item.done_event is not None:
            item.done_event.set()
        if self.on_item_finished is not None:
            self.on_item_finished(item.item_id)


class SoundDevicePlayer(AudioPlayer):
    """Plays through a PortAudio output stream whose callback pulls from the core."""

    def __init__(
        self,
        device: int | None = None,
        *,
        block_ms: int = 20,
        latency: float | str = "low",
        **player_options: Any,
    ) -> None:
        rate = supported_samplerate(device, "output", API_SAMPLE_RATE)
        super().__init__(sample_rate=rate, **player_options)
        self.real_time_pulls = True
        self.device = device
        self.block_frames = max(1, rate * block_ms // 1000)
        self.latency = latency
        self.device_underflows = 0
        """Blocks PortAudio reported as output underflow (the callback came too late)."""
        self.callback_errors = 0
        self._stream: Any = None
        self._stopping = False

    async def start(self) -> None:
        await super().start()
        self._stopping = False
        sd = load_sounddevice()
        try:
            self._stream = sd.OutputStream(
                device=self.device,
                samplerate=self.sample_rate,
                channels=1,
                dtype="int16",
                blocksize=self.block_frames,
                latency=self.latency,
                callback=self._callback,
                finished_callback=self._on_stream_finished,
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise AudioUnavailableError(
                f"Cannot open the output device ({exc}): run `voicebot devices list` and pick "
                "one with --output-device"
            ) from exc
        self.output_latency_s = float(self._stream.latency)
        log.debug(
            "output started",
            device=self.device,
            rate=self.sample_rate,
            latency_ms=round(self.output_latency_s * 1000, 1),
        )

    async def stop(self) -> None:
        self._stopping = True  # first: the stream's finished callback is expected now
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
            stream.close()

    def _on_stream_finished(self) -> None:
        """PortAudio: the stream ended. Unless `stop` ended it, the device failed."""
        if not self._stopping:
            self._device_failed(STREAM_STOPPED)

    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        if status and status.output_underflow:
            self.device_underflows += 1
        try:
            self.pull_into(outdata[:, 0])
        except Exception:
            outdata.fill(0)
            self.callback_errors += 1


class WavFilePlayer(AudioPlayer):
    """Plays into a WAV file instead of a speaker, pulling blocks at real-time pace.

    Silence policy: by default only playback is written (reply audio, fades, and underrun
    silence inside an item), not the idle time between replies, so the file holds the replies
    back to back exactly as far as they were heard, cut where they were interrupted. With
    `include_idle_silence=True` every block is written and the file follows the wall clock.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        sample_rate: int = API_SAMPLE_RATE,
        block_ms: int = 20,
        pace: float = 1.0,
        include_idle_silence: bool = False,
        **player_options: Any,
    ) -> None:
        if pace <= 0:
            raise ValueError("pace must be positive")
        super().__init__(sample_rate=sample_rate, **player_options)
        self.path = Path(path)
        self.block_frames = max(1, sample_rate * block_ms // 1000)
        self.pace = pace
        self.include_idle_silence = include_idle_silence
        self.frames_written = 0
        self._wav: wave.Wave_write | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await super().start()
        wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - closed in stop()
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(self.sample_rate)
        self._wav = wav
        self._task = asyncio.create_task(self._run(), name="wav-player")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        wav, self._wav = self._wav, None
        if wav is not None:
            wav.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        block = np.zeros(self.block_frames, dtype=np.int16)
        block_s = self.block_frames / self.sample_rate / self.pace
        started = loop.time()
        blocks = 0
        while True:
            active = self.pull_into(block)
            count = self.block_frames if self.include_idle_silence else active
            if count and self._wav is not None:
                self._wav.writeframes(block[:count].tobytes())
                self.frames_written += count
            blocks += 1
            # Absolute deadlines: a late wake-up shortens the next wait, so there is no drift.
            await asyncio.sleep(max(0.0, started + blocks * block_s - loop.time()))
