"""Echo handling: keep the assistant's own voice, leaking from the speaker, away from the server.

Without it, laptop speakers feed the reply back into the microphone, server VAD hears
"speech", and the bot interrupts itself. Three modes, one interface (`EchoProcessor`), all
running on the event loop on 24 kHz mic blocks, with the far-end reference read from the
player's `PlaybackTap` (what was actually handed to the device, silence included):

- ``aec`` (the default): WebRTC acoustic echo cancellation (livekit's AudioProcessingModule)
  subtracts the echo and keeps the user's voice, so barge-in works at normal speaking levels.
- ``gate``: while the assistant is audible, the microphone passes only when it is clearly
  louder than the echo predicted from a learned echo path (`EchoGate`). The fallback when the
  canceller cannot load.
- ``off``: pass through (headphones).

`make_echo_processor` builds the one asked for, falls back from ``aec`` to ``gate`` when the
canceller cannot load, and logs one line saying which mode runs and why; the processor keeps
that line (`echo_status`) for the app to show.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import structlog

from realtime_voicebot.audio.devices import AudioUnavailableError
from realtime_voicebot.audio.echo_path import (
    FRAME_MS,
    BoolArray,
    EchoPathEstimator,
    FloatArray,
    FrameLevels,
    IntArray,
    levels_dbfs,
)
from realtime_voicebot.audio.output import PlaybackTap
from realtime_voicebot.audio.resample import API_SAMPLE_RATE, Int16Array, StreamResampler
from realtime_voicebot.config import EchoMode

log = structlog.get_logger(component="audio.echo")


class EchoProcessor(Protocol):
    """Turns a mic block (PCM16 mono 24 kHz bytes) into what may go to the server."""

    mode: EchoMode
    status: str
    """One line for the user: which echo mode runs and why (set by `make_echo_processor`)."""

    def process(self, mic_block_pcm16: bytes, capture_end: int | None = None) -> bytes:
        """`capture_end`: the reference tap's position when the block's last sample was
        captured (`MicrophoneInput.capture_end_position`; None: unknown)."""
        ...

    @property
    def counts(self) -> dict[str, int]: ...


class PassThrough:
    """Echo mode ``off``."""

    mode: EchoMode = "off"

    def __init__(self) -> None:
        self.blocks = 0
        self.status = STATUS_OFF

    def process(self, mic_block_pcm16: bytes, capture_end: int | None = None) -> bytes:
        self.blocks += 1
        return mic_block_pcm16

    @property
    def counts(self) -> dict[str, int]:
        return {"blocks": self.blocks}


@dataclass(frozen=True)
class EchoFrames:
    """The 10 ms microphone frames a block completed, with the echo predicted for each."""

    levels: FloatArray
    """Microphone level (dBFS) of each frame."""
    predicted: FloatArray
    """The echo expected in each frame (dBFS): coupling + the played level at the delay."""
    playing: BoolArray
    """Whether speech was being played where each frame's echo comes from."""
    clocks: IntArray
    """The reference frame playing when each frame was captured (see `EchoTracker`)."""


class EchoTracker:
    """Follows the echo path from the player's tap and the raw microphone, block by block.

    Reads every sample played since the previous block (10 ms levels into the estimator),
    cuts the microphone block into 10 ms frames, gives each frame its clock (the reference
    frame playing when it was read) and predicts its echo. Used by the gate (to decide) and
    by the canceller (to catch what it lets through).
    """

    def __init__(
        self,
        reference: PlaybackTap,
        *,
        sample_rate: int = API_SAMPLE_RATE,
        observe_blocks: int = 50,
        tolerance_frames: int = 1,
        path: EchoPathEstimator | None = None,
    ) -> None:
        self.reference = reference
        self.path = path or EchoPathEstimator()
        self.tolerance_frames = tolerance_frames
        """The prediction is the loudest played frame within this many frames of the delay."""
        self._reference_levels = FrameLevels(max(1, reference.sample_rate * FRAME_MS // 1000))
        self._reference_position = reference.total_samples
        self._mic_levels = FrameLevels(max(1, sample_rate * FRAME_MS // 1000))
        self._observed: deque[float] = deque(maxlen=observe_blocks)
        """Lead of the tap over the microphone (frames) at the latest blocks."""
        self._mic_samples = 0

    def observe(
        self, mic_block_pcm16: bytes, *, learn: bool = True, capture_end: int | None = None
    ) -> EchoFrames:
        """The frames this block completes and their predicted echo; with `learn`, the
        frames heard while speech plays teach the estimator. `capture_end` is the tap's
        position when the block's last sample was captured (None: unknown, the tap's
        position now stands in)."""
        self._catch_up_reference()
        samples = np.frombuffer(mic_block_pcm16, dtype=np.int16)
        self._mic_samples += int(samples.shape[0])
        levels = self._mic_levels.push(samples)
        clocks = self._clocks(levels.shape[0], capture_end)
        played = self.path.reference_for(clocks, self.tolerance_frames)
        playing = played >= self.path.reference_active_dbfs
        if learn and playing.any():
            self.path.learn(levels[playing], clocks[playing])
        return EchoFrames(levels, played + self.path.coupling_db, playing, clocks)

    def _catch_up_reference(self) -> None:
        start = self._reference_position
        played, self._reference_position = self.reference.read_since(start)
        skipped = self._reference_position - start - int(played.shape[0])
        if skipped > 0:  # the loop stalled longer than the tap keeps: count those frames
            # as silence, so the frame numbers stay the tap's positions (the stamps' clock)
            self.path.push_reference(self._reference_levels.push(np.zeros(skipped, np.int16)))
        if played.shape[0]:
            self.path.push_reference(self._reference_levels.push(played))

    def _clocks(self, frames: int, capture_end: int | None) -> IntArray:
        """The reference frame playing when each new microphone frame was read.

        With a capture stamp (the tap's position when the block was captured, as a duplex
        stream gives it), the lead of the tap over the microphone is measured where the
        block was captured, not where the loop reads it. Without one, the tap's position
        now stands in: the two streams run at the same pace but reach the loop in bursts
        (the loop reads a few queued microphone blocks at once; an output stream fills its
        buffers ahead at start). Either way the lead is the median of the last blocks'
        observations, which a burst of a few blocks (or a stamp's jitter) does not move.
        Never in the future.
        """
        end = self._mic_levels.frames
        if capture_end is None:
            lead = float(self.path.reference_frames - end)
        else:
            lead = (
                capture_end / self._reference_levels.frame_samples
                - self._mic_samples / self._mic_levels.frame_samples
            )
        self._observed.append(lead)
        offset = float(np.median(np.fromiter(self._observed, dtype=np.float64)))
        clocks = np.arange(end - frames, end, dtype=np.int64) + round(offset)
        return np.minimum(clocks, self.path.reference_frames - 1)


class EchoGate:
    """Echo mode ``gate``: while the bot is audible, the microphone passes only when it is
    clearly louder than the echo the gate predicts; otherwise the server hears silence.

    The gate learns the echo path (`EchoPathEstimator`): the delay from a frame handed to the
    speaker to its echo in the microphone, and the coupling (microphone level minus played
    level at that delay), from the 10 ms frames captured while the bot talks. The predicted
    echo of a frame is coupling + the played level at the delay, so what opens the gate is
    input above the echo, whatever the speaker volume, distance or microphone gain.

    - A frame *qualifies* when it is `margin` above the predicted echo: `margin_db` (4 dB), or
      `spread_factor` (3) times the echo's learned spread where the room makes the echo less
      predictable (reverberation), whichever is larger.
    - The gate opens when `open_ms` (150 ms) of the last `window_ms` (250 ms) qualify.
      Blocks are held back from the first qualifying frame and released when it opens, so the
      server hears the start of the word; held blocks older than the window, or all of them
      once nothing in the window qualifies, become silence. Output length equals input length.
    - An open gate passes everything until fewer than a quarter of the frames of the last
      `release_ms` (400 ms) are `margin - hysteresis_db` above the predicted echo: the user
      stopped talking (or a louder echo has been learned, see below).
    - While the gate is shut and the bot is audible, blocks are replaced by silence of the same
      length. When the bot is silent, or its predicted echo is below `echo_floor_dbfs`
      (headphones), everything passes.

    Learning goes on while the bot talks, except for the first `learn_after_open_ms` (1 s)
    the gate is open: that is the user, and the app cuts the reply by then; a gate still open
    after that is letting a louder echo through, and learns it. The coupling is a median over
    the last two seconds of played speech, which a user talking over less than half of that
    does not move. A coupling that falls is learned within two seconds, during which the user
    must speak up a little. One that rises suddenly (the volume turned up mid-reply) looks like
    the user until it is learned, within about three seconds, and may open the gate meanwhile.
    """

    mode: EchoMode = "gate"

    def __init__(
        self,
        reference: PlaybackTap,
        *,
        margin_db: float = 4.0,
        spread_factor: float = 3.0,
        open_ms: float = 150.0,
        window_ms: float = 250.0,
        release_ms: float = 400.0,
        hysteresis_db: float = 2.0,
        echo_floor_dbfs: float = -70.0,
        learn_after_open_ms: float = 1000.0,
        sample_rate: int = API_SAMPLE_RATE,
        path: EchoPathEstimator | None = None,
    ) -> None:
        self.status = STATUS_GATE
        self.reference = reference
        self.margin_db = margin_db
        self.spread_factor = spread_factor
        self.open_frames = max(1, round(open_ms / FRAME_MS))
        self.window_frames = max(self.open_frames, round(window_ms / FRAME_MS))
        self.window_ms = window_ms
        self.release_frames = max(1, round(release_ms / FRAME_MS))
        self.hysteresis_db = hysteresis_db
        self.echo_floor_dbfs = echo_floor_dbfs
        self.sample_rate = sample_rate
        self.tracker = EchoTracker(reference, sample_rate=sample_rate, path=path)
        self.path = self.tracker.path
        self.learn_after_open_ms = learn_after_open_ms
        self._open_ms = 0.0
        self._recent: deque[tuple[float, float]] = deque(
            maxlen=max(self.window_frames, self.release_frames)
        )
        """(microphone dB, predicted echo dB) of the latest frames while the bot is audible."""
        self._audible = False
        self.is_open = False
        self._held: deque[bytes] = deque()
        self._held_ms = 0.0
        self.blocks = 0
        self.blocks_gated = 0
        """Blocks replaced by silence (the bot was audible and the input not above its echo)."""
        self.blocks_passed_over_reply = 0
        """Blocks let through while the bot was audible (the user talking over it)."""
        self.openings = 0
        self.last_frames: EchoFrames | None = None
        """The frames of the latest block with their predicted echo (None before one)."""

    @property
    def counts(self) -> dict[str, int]:
        return {
            "blocks": self.blocks,
            "gated": self.blocks_gated,
            "passed_over_reply": self.blocks_passed_over_reply,
            "openings": self.openings,
        }

    @property
    def coupling_db(self) -> float:
        """The echo coupling in use (dB, microphone level minus played level)."""
        return self.path.coupling_db

    @property
    def delay_ms(self) -> float | None:
        """The echo delay found (played-to-read, ms), or None while unknown."""
        delay = self.path.delay_frames
        return None if delay is None else float(delay * FRAME_MS)

    @property
    def open_ms(self) -> float:
        """How long the gate has been open (ms; meaningless while shut)."""
        return self._open_ms

    @property
    def margin(self) -> float:
        """How far above the predicted echo a frame must be to count as the user (dB)."""
        return max(self.margin_db, self.spread_factor * self.path.spread_db)

    def process(self, mic_block_pcm16: bytes, capture_end: int | None = None) -> bytes:
        self.blocks += 1
        block_ms = len(mic_block_pcm16) / 2 * 1000.0 / self.sample_rate
        learn = not self.is_open or self._open_ms >= self.learn_after_open_ms
        frames = self.tracker.observe(mic_block_pcm16, learn=learn, capture_end=capture_end)
        self.last_frames = frames
        levels, predicted = frames.levels, frames.predicted
        if levels.shape[0]:  # a block shorter than a frame keeps the previous state
            self._audible = bool((frames.playing & (predicted >= self.echo_floor_dbfs)).any())
        if not self._audible:
            self.is_open = False
            self._recent.clear()
            if not self._held:
                return mic_block_pcm16
            return self._release_held(keep=True) + mic_block_pcm16
        self._recent.extend(zip(levels.tolist(), predicted.tolist(), strict=True))
        if self.is_open:
            self.blocks_passed_over_reply += 1
            self._open_ms += block_ms
            if self._user_stopped():
                self.is_open = False
            return mic_block_pcm16
        self._held.append(mic_block_pcm16)
        self._held_ms += block_ms
        qualifying = self._frames_above(self.margin, self.window_frames)
        if qualifying >= self.open_frames:
            self.is_open = True
            self._open_ms = 0.0
            self.openings += 1
            self.blocks_passed_over_reply += len(self._held)
            return self._release_held(keep=True)
        if qualifying == 0:
            self.blocks_gated += len(self._held)
            return self._release_held(keep=False)
        silenced = b""
        while self._held_ms > self.window_ms and len(self._held) > 1:
            oldest = self._held.popleft()
            self._held_ms -= len(oldest) / 2 * 1000.0 / self.sample_rate
            self.blocks_gated += 1
            silenced += bytes(len(oldest))
        return silenced

    def _frames_above(self, margin: float, frames: int) -> int:
        """How many of the latest `frames` frames are `margin` dB above the predicted echo."""
        recent = list(self._recent)[-frames:]
        return sum(1 for level, echo in recent if level - echo >= margin)

    def _user_stopped(self) -> bool:
        threshold = self.margin - self.hysteresis_db
        return self._frames_above(threshold, self.release_frames) * 4 < self.release_frames

    def _release_held(self, *, keep: bool) -> bytes:
        held = b"".join(self._held)
        self._held.clear()
        self._held_ms = 0.0
        return held if keep else bytes(len(held))


def _import_livekit_rtc() -> Any:
    try:
        from livekit import rtc
    except Exception as exc:  # ImportError, or OSError from its native library
        raise AudioUnavailableError(f"livekit did not load: {exc}") from exc
    return rtc


class AcousticEchoCanceller:
    """Echo mode ``aec``: WebRTC APM (echo cancellation, noise suppression, high-pass filter).

    The APM works on 10 ms frames. Each `process` call first feeds every sample played since
    the previous call (resampled to 24 kHz) as the far-end stream, then the mic samples as the
    near-end stream, frame by frame; a partial frame waits for the next call, so the output
    may be up to 10 ms shorter or longer than the input block. `stream_delay_ms` is the
    estimated delay from playing a sample to capturing its echo (output plus input latency);
    the APM refines it itself.

    The canceller leaks for a moment when the echo path changes (its delay shifts between
    replies, the volume moves): on the rig, with the echo at -38 dBFS and a VAD threshold of
    -46 dBFS, replies were now and then cut 0.1 to 0.7 s after they began; in simulation a
    20 ms shift of the delay let the echo through at -47 dBFS. So an `EchoTracker` follows the
    echo path on the raw microphone as the gate does, and an output frame more than
    `residual_margin_db` (10 dB) below the echo predicted for it while the bot plays can only
    be residual echo: it is replaced by silence. A user talking over the reply is far above
    that line (in-spec users are above the echo itself).

    In double talk the canceller's own suppressor holds the user down: on the rig, with the
    echo at -38 dBFS and the user 6 dB above it, its output stayed near -95 dBFS for all but
    50 to 100 ms of each second of speech, and one interjection in three went unheard. So the
    adaptive gate's decision runs on the raw microphone as well (`double_talk`, an `EchoGate`
    whose output is not used): while it is open (the input has been clearly above the
    predicted echo for 150 ms) the raw microphone goes out instead of the canceller's output,
    as in ``gate`` mode, until the user stops. The echo alone never opens it (the gate's
    side of the matrix). While it is shut, an output frame whose raw input was less than
    `echo_only_margin_db` (3 dB) above its predicted echo is silenced too: the raw input held
    nothing but the echo, so what the canceller let through is a leak (on the rig at -10 dB
    coupling one leaked past the first rule and interrupted a reply once in 67 s).
    """

    mode: EchoMode = "aec"

    def __init__(
        self,
        reference: PlaybackTap,
        *,
        stream_delay_ms: int = 0,
        noise_suppression: bool = True,
        residual_margin_db: float = 10.0,
        echo_only_margin_db: float = 3.0,
        sample_rate: int = API_SAMPLE_RATE,
    ) -> None:
        rtc = _import_livekit_rtc()
        self._rtc = rtc
        try:
            self._apm = rtc.AudioProcessingModule(
                echo_cancellation=True,
                noise_suppression=noise_suppression,
                high_pass_filter=True,
                auto_gain_control=False,
            )
        except Exception as exc:  # the native module failed to start
            raise AudioUnavailableError(f"the WebRTC processing module failed: {exc}") from exc
        self.status = STATUS_AEC
        # Generous alignment (+-50 ms): the delay shifts are what makes the canceller leak.
        self.tracker = EchoTracker(reference, sample_rate=sample_rate, tolerance_frames=5)
        self.double_talk = EchoGate(reference, sample_rate=sample_rate)
        """Decides when the user talks over the reply (see the class doc)."""
        self.echo_only_margin_db = echo_only_margin_db
        """A raw frame less than this above its predicted echo holds nothing but the echo."""
        self.frames_passed_raw = 0
        """Output frames that are the raw microphone (the user talking over the reply)."""
        self.residual_margin_db = residual_margin_db
        self.frames_suppressed = 0
        """Output frames replaced by silence as residual echo."""
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
            "suppressed_frames": self.frames_suppressed,
            "double_talk_openings": self.double_talk.openings,
            "raw_frames": self.frames_passed_raw,
        }

    def process(self, mic_block_pcm16: bytes, capture_end: int | None = None) -> bytes:
        self.blocks += 1
        gate = self.double_talk
        # As the gate: the first second of double talk is the user, not the echo path.
        learn = not gate.is_open or gate.open_ms >= gate.learn_after_open_ms
        echo = self.tracker.observe(mic_block_pcm16, learn=learn, capture_end=capture_end)
        gate.process(mic_block_pcm16, capture_end)
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
        if gate.is_open:
            self.frames_passed_raw += whole // self.frame_samples
            return mic[:whole].tobytes()
        self._suppress_residual(out, echo, gate.last_frames)
        return out.tobytes()

    def _suppress_residual(
        self, out: Int16Array, echo: EchoFrames, near: EchoFrames | None = None
    ) -> None:
        """Silence the output frames that can only be residual echo (see the class doc):
        far below the echo predicted for them, or (with `near`, the double-talk gate's view
        of the raw microphone) whose raw input held nothing above its own echo."""
        frames = out.shape[0] // self.frame_samples
        if frames == 0 or frames != echo.levels.shape[0]:  # the tracker frames the same stream
            return
        shaped = out.reshape(frames, self.frame_samples)
        levels = levels_dbfs(
            np.einsum("ij,ij->i", shaped, shaped, dtype=np.float64) / shaped.shape[1]
        )
        residual = echo.playing & (levels < echo.predicted - self.residual_margin_db)
        if near is not None and near.levels.shape[0] == frames:
            audible = near.playing & (near.predicted >= self.double_talk.echo_floor_dbfs)
            residual |= audible & (near.levels < near.predicted + self.echo_only_margin_db)
        if residual.any():
            shaped[residual] = 0
            self.frames_suppressed += int(residual.sum())

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


STATUS_AEC = "echo handling: aec (WebRTC echo cancellation)"
STATUS_GATE = "echo handling: gate (adaptive echo gate, as asked)"
STATUS_OFF = "echo handling: off (nothing removed: use headphones)"


def make_echo_processor(
    mode: EchoMode,
    reference: PlaybackTap,
    *,
    stream_delay_ms: int = 0,
    fallback: bool = True,
    quiet: bool = False,
) -> EchoProcessor:
    """The processor for `Settings.echo`, with its one-line `status` logged once (not with
    `quiet`).

    ``aec`` falls back to ``gate`` when the canceller cannot load (the status says why);
    with ``fallback=False`` that raises AudioUnavailableError instead.
    """
    processor: EchoProcessor
    if mode == "off":
        processor = PassThrough()
    elif mode == "gate":
        processor = EchoGate(reference)
    else:
        try:
            processor = AcousticEchoCanceller(reference, stream_delay_ms=stream_delay_ms)
        except AudioUnavailableError as exc:
            if not fallback:
                raise AudioUnavailableError(
                    f"Echo cancellation cannot run ({exc}): reinstall with "
                    "`pip install --force-reinstall livekit`, or use --echo gate"
                ) from exc
            processor = EchoGate(reference)
            processor.status = (
                f"echo handling: gate, because echo cancellation could not load ({exc}); "
                "`pip install --force-reinstall livekit` brings it back"
            )
            if not quiet:
                log.warning(
                    "echo_mode", mode=processor.mode, requested=mode, status=processor.status
                )
            return processor
    if not quiet:
        log.info("echo_mode", mode=processor.mode, requested=mode, status=processor.status)
    return processor


def echo_status(audio_in: object) -> str | None:
    """The start-up line about echo handling for an audio input (None: it has no echo
    processing, e.g. a WAV file or text mode)."""
    processor = getattr(audio_in, "echo", None)
    status = getattr(processor, "status", None)
    return status if isinstance(status, str) else None


def planned_echo_status(mode: EchoMode) -> str:
    """The start-up line a run with `Settings.echo` = `mode` would show, found without a
    device: the canceller is built (and dropped) to see whether it loads."""
    if mode == "off":
        return STATUS_OFF
    if mode == "gate":
        return STATUS_GATE
    tap = PlaybackTap(API_SAMPLE_RATE, capacity_ms=10)
    return make_echo_processor(mode, tap, quiet=True).status
