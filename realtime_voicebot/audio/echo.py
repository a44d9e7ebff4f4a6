"""Echo handling: keep the assistant's own voice, leaking from the speaker, away from the server.

Without it, laptop speakers feed the reply back into the microphone, server VAD hears
"speech", and the bot interrupts itself. Three modes, one interface (`EchoProcessor`), all
running on the event loop on 24 kHz mic blocks, with the far-end reference read from the
player's `PlaybackTap` (what was actually handed to the device, silence included):

- ``off``: pass through (headphones).
- ``gate``: while the assistant is audible, the mic is replaced by silence unless it is clearly
  louder than what is being played. See `EchoGate` for the numbers.
- ``aec``: WebRTC acoustic echo cancellation (livekit's AudioProcessingModule) subtracts the
  echo and keeps the user's voice, so barge-in works at normal speaking levels. Needs the
  ``[aec]`` extra.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import numpy as np

from realtime_voicebot.audio.devices import AudioUnavailableError
from realtime_voicebot.audio.output import PlaybackTap
from realtime_voicebot.audio.resample import (
    API_SAMPLE_RATE,
    PCM16_FULL_SCALE_SQUARED,
    Int16Array,
    StreamResampler,
    mean_square_dbfs,
    rms_dbfs,
    sum_of_squares,
)
from realtime_voicebot.config import EchoMode


class EchoProcessor(Protocol):
    """Turns a mic block (PCM16 mono 24 kHz bytes) into what may go to the server."""

    def process(self, mic_block_pcm16: bytes) -> bytes: ...
    @property
    def counts(self) -> dict[str, int]: ...


class PassThrough:
    """Echo mode ``off``."""

    def __init__(self) -> None:
        self.blocks = 0

    def process(self, mic_block_pcm16: bytes) -> bytes:
        self.blocks += 1
        return mic_block_pcm16

    @property
    def counts(self) -> dict[str, int]:
        return {"blocks": self.blocks}


class ReferenceMeter:
    """The loudest frame of the last `window_samples` played, updated incrementally.

    Each call reads only the samples played since the previous one (one block, usually one
    frame: a single dot product) instead of re-measuring the whole window every mic block.
    Frames are `frame_samples` long; the newest, partial frame counts too.
    """

    def __init__(self, tap: PlaybackTap, window_samples: int, frame_samples: int) -> None:
        self.tap = tap
        self.frame_samples = frame_samples
        self.window_samples = min(window_samples, tap.capacity)
        self._frames: deque[float] = deque(maxlen=max(1, window_samples // frame_samples))
        """Sums of squares of the latest complete frames."""
        self._partial_sum = 0.0
        self._partial_len = 0
        self._position = tap.total_samples

    def level_dbfs(self) -> float:
        """RMS level of the loudest frame in the window, in dBFS."""
        self._catch_up()
        loudest = max(self._frames, default=0.0) / self.frame_samples
        if self._partial_len:
            loudest = max(loudest, self._partial_sum / self._partial_len)
        return mean_square_dbfs(loudest / PCM16_FULL_SCALE_SQUARED)

    def _catch_up(self) -> None:
        end = self.tap.total_samples
        if end == self._position:
            return
        start = max(self._position, end - self.window_samples)
        if start != self._position:  # more than the window went by: measure the window anew
            self._frames.clear()
            self._partial_sum, self._partial_len = 0.0, 0
        played, self._position = self.tap.read_since(start)
        self._add(played)

    def _add(self, played: Int16Array) -> None:
        size = self.frame_samples
        if self._partial_len:
            take = min(size - self._partial_len, int(played.shape[0]))
            self._partial_sum += sum_of_squares(played[:take])
            self._partial_len += take
            played = played[take:]
            if self._partial_len < size:
                return
            self._frames.append(self._partial_sum)
            self._partial_sum, self._partial_len = 0.0, 0
        whole = int(played.shape[0]) // size
        if whole == 1:
            self._frames.append(sum_of_squares(played[:size]))
        elif whole > 1:
            frames = played[: whole * size].astype(np.float64).reshape(whole, size)
            self._frames.extend(np.einsum("ij,ij->i", frames, frames).tolist())
        rest = played[whole * size :]
        if rest.shape[0]:
            self._partial_sum = sum_of_squares(rest)
            self._partial_len = int(rest.shape[0])


class EchoGate:
    """Echo mode ``gate``: only loud, sustained speech gets through while the assistant talks.

    The reference level is the loudest 20 ms frame of the last `window_ms` (300) of played
    audio; the window covers the output and input latency and the room's echo tail. The
    assistant counts as audible while that level is above `audible_floor_dbfs` (-50 dBFS).
    Then:

    - a mic block *qualifies* when its RMS is at least `margin_db` (3 dB) above the reference
      level. Echo is quieter than what is played in any sane setup (a reply leaking back at
      -10 dB is 13 dB short of the bar);
    - qualifying blocks are held back, not sent; after `open_after_ms` (160 ms) of them in a row
      the gate opens and releases them, so the server hears the start of the word. A
      non-qualifying block before that turns the held blocks into silence. Held audio only
      delays output: what comes out always has the length that went in;
    - an open gate stays open until the mic has stayed below `margin_db - hysteresis_db`
      (-3 dB) relative to the reference for `release_ms` (400 ms): the user stopped talking;
    - while the gate is closed, mic blocks are replaced by silence of the same length, so
      server VAD hears nothing and the stream's timing is kept.

    When the assistant is silent everything passes. The gate cannot tell a quiet user from
    echo; `aec` can.
    """

    def __init__(
        self,
        reference: PlaybackTap,
        *,
        margin_db: float = 3.0,
        open_after_ms: float = 160.0,
        release_ms: float = 400.0,
        hysteresis_db: float = 6.0,
        window_ms: int = 300,
        audible_floor_dbfs: float = -50.0,
        sample_rate: int = API_SAMPLE_RATE,
    ) -> None:
        self.reference = reference
        self.margin_db = margin_db
        self.open_after_ms = open_after_ms
        self.release_ms = release_ms
        self.hysteresis_db = hysteresis_db
        self.window_samples = reference.sample_rate * window_ms // 1000
        self.frame_samples = max(1, reference.sample_rate // 50)
        self.audible_floor_dbfs = audible_floor_dbfs
        self.sample_rate = sample_rate
        self._meter = ReferenceMeter(reference, self.window_samples, self.frame_samples)
        self.is_open = False
        self._held: list[bytes] = []
        self._held_ms = 0.0
        self._quiet_ms = 0.0
        self.blocks = 0
        self.blocks_gated = 0
        """Blocks replaced by silence (the assistant was audible and the mic not loud enough)."""
        self.blocks_passed_over_reply = 0
        """Blocks let through while the assistant was audible (the user talking over it)."""
        self.openings = 0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "blocks": self.blocks,
            "gated": self.blocks_gated,
            "passed_over_reply": self.blocks_passed_over_reply,
            "openings": self.openings,
        }

    def process(self, mic_block_pcm16: bytes) -> bytes:
        self.blocks += 1
        block_ms = len(mic_block_pcm16) / 2 * 1000.0 / self.sample_rate
        reference_db = self._meter.level_dbfs()
        if reference_db <= self.audible_floor_dbfs:
            self.is_open = False
            self._quiet_ms = 0.0
            if not self._held:
                return mic_block_pcm16
            return self._release_held(keep=True) + mic_block_pcm16
        mic_db = rms_dbfs(np.frombuffer(mic_block_pcm16, dtype=np.int16))
        excess_db = mic_db - reference_db
        if self.is_open:
            if excess_db >= self.margin_db - self.hysteresis_db:
                self._quiet_ms = 0.0
            else:
                self._quiet_ms += block_ms
                if self._quiet_ms >= self.release_ms:
                    self.is_open = False
            self.blocks_passed_over_reply += 1
            return mic_block_pcm16
        if excess_db >= self.margin_db:
            self._held.append(mic_block_pcm16)
            self._held_ms += block_ms
            if self._held_ms < self.open_after_ms:
                return b""
            self.is_open = True
            self._quiet_ms = 0.0
            self.openings += 1
            self.blocks_passed_over_reply += len(self._held)
            return self._release_held(keep=True)
        self.blocks_gated += 1 + len(self._held)
        return self._release_held(keep=False) + bytes(len(mic_block_pcm16))

    def _release_held(self, *, keep: bool) -> bytes:
        held = b"".join(self._held)
        self._held.clear()
        self._held_ms = 0.0
        return held if keep else bytes(len(held))


def _import_livekit_rtc() -> Any:
    try:
        from livekit import rtc
    except ImportError as exc:
        raise AudioUnavailableError(
            "Acoustic echo cancellation needs livekit: run "
            "`pip install 'realtime_voicebot[aec]'`, or use --echo gate"
        ) from exc
    return rtc


class AcousticEchoCanceller:
    """Echo mode ``aec``: WebRTC APM (echo cancellation, noise suppression, high-pass filter).

    The APM works on 10 ms frames. Each `process` call first feeds every sample played since
    the previous call (resampled to 24 kHz) as the far-end stream, then the mic samples as the
    near-end stream, frame by frame; a partial frame waits for the next call, so the output
    may be up to 10 ms shorter or longer than the input block. `stream_delay_ms` is the
    estimated delay from playing a sample to capturing its echo (output plus input latency);
    the APM refines it itself.
    """

    def __init__(
        self,
        reference: PlaybackTap,
        *,
        stream_delay_ms: int = 0,
        noise_suppression: bool = True,
        sample_rate: int = API_SAMPLE_RATE,
    ) -> None:
        rtc = _import_livekit_rtc()
        self._rtc = rtc
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=True,
            noise_suppression=noise_suppression,
            high_pass_filter=True,
            auto_gain_control=False,
        )
        self.reference = reference
        self.stream_delay_ms = stream_delay_ms
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate // 100
        self._reference_position = reference.total_samples
        self._reference_resampler = StreamResampler(reference.sample_rate, sample_rate)
        self._reference_pending = np.zeros(0, dtype=np.int16)
        self._mic_pending = np.zeros(0, dtype=np.int16)
        self.blocks = 0
        self.frames_processed = 0
        self.reference_frames = 0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "blocks": self.blocks,
            "frames": self.frames_processed,
            "reference_frames": self.reference_frames,
            "reference_skipped_samples": self.reference.skipped_samples,
        }

    def process(self, mic_block_pcm16: bytes) -> bytes:
        self.blocks += 1
        self._feed_reference()
        mic = np.concatenate([self._mic_pending, np.frombuffer(mic_block_pcm16, dtype=np.int16)])
        whole = mic.shape[0] - mic.shape[0] % self.frame_samples
        self._mic_pending = mic[whole:]
        out = np.empty(whole, dtype=np.int16)
        for start in range(0, whole, self.frame_samples):
            frame = self._frame(mic[start : start + self.frame_samples])
            self._apm.set_stream_delay_ms(self.stream_delay_ms)
            self._apm.process_stream(frame)
            out[start : start + self.frame_samples] = np.frombuffer(frame.data, dtype=np.int16)
            self.frames_processed += 1
        return out.tobytes()

    def _feed_reference(self) -> None:
        played, self._reference_position = self.reference.read_since(self._reference_position)
        resampled = self._reference_resampler.process(played)
        reference = np.concatenate([self._reference_pending, resampled])
        whole = reference.shape[0] - reference.shape[0] % self.frame_samples
        self._reference_pending = reference[whole:]
        for start in range(0, whole, self.frame_samples):
            frame = self._frame(reference[start : start + self.frame_samples])
            self._apm.process_reverse_stream(frame)
            self.reference_frames += 1

    def _frame(self, samples: Int16Array) -> Any:
        data = bytearray(samples.tobytes())
        return self._rtc.AudioFrame(data, self.sample_rate, 1, self.frame_samples)


def make_echo_processor(
    mode: EchoMode,
    reference: PlaybackTap,
    *,
    stream_delay_ms: int = 0,
) -> EchoProcessor:
    """The processor for `Settings.echo`; raises AudioUnavailableError for aec without livekit."""
    if mode == "off":
        return PassThrough()
    if mode == "gate":
        return EchoGate(reference)
    return AcousticEchoCanceller(reference, stream_delay_ms=stream_delay_ms)
