"""One callback for the microphone and the speaker.

`MicrophoneInput` and `SoundDevicePlayer` each open a PortAudio stream with its own callback
thread, and every callback costs CPU every block. `DuplexAudio` serves both devices from one
callback, in one of two ways (`mode`):

- ``full-duplex``: one `sounddevice.RawStream`. The input block and the output block of a
  callback have the same stream position, so captured and played samples are on one clock.
  Used where PortAudio's duplex streams are the host API's own path (CoreAudio, WASAPI, ...).
- ``output-driven``: one callback stream for the speaker; its callback also drains the
  microphone's blocking-mode stream (PortAudio runs no thread for it), whole blocks at a time.
  Used on ALSA: through its plugin devices (``default``, ``pulse``, ``pipewire``) PortAudio's
  full-duplex stream busy-polls (measured on the rig: most of a core, callbacks at half
  rate), and an input callback stream polls far more often than an output one.
  Input frames are mapped to the speaker's clock by a fixed offset taken at the first read
  (re-taken after an overflow or drift of more than three blocks), so consecutive blocks get
  consecutive positions.

Either way the player's `PlaybackTap` position is stamped on each captured block
(`MicrophoneInput.capture_end_position`): the reference the echo canceller and the session
recorder line up against.

`DuplexAudio.microphone` (a `MicrophoneInput`: the same bounded slots, `read()` with
resampling and echo processing on the loop) is the app's `AudioInput`; `DuplexAudio.player`
(an `AudioPlayer`: jitter buffer, `played_ms`, flush with fade, `is_audible`, item callbacks)
is its `AudioOutput`. The streams open when the first of the two starts and close when both
have stopped; when they fail on their own, both sides report it.

The callback only copies: input bytes into a free slot of the microphone's preallocated ring
(handed to the loop with `call_soon_threadsafe`), and the player's next block, pulled into a
preallocated array, into PortAudio's output buffer. No array is built from PortAudio's buffers.

Should the device refuse the chosen way when it opens, two callback streams take over
(``separate``): the run goes on, at the two streams' cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import structlog

from realtime_voicebot.audio.devices import AudioUnavailableError, load_sounddevice
from realtime_voicebot.audio.input import MicrophoneInput
from realtime_voicebot.audio.output import AudioPlayer

if TYPE_CHECKING:
    from realtime_voicebot.audio.echo import EchoProcessor

log = structlog.get_logger(component="audio.duplex")

DuplexMode = Literal["full-duplex", "output-driven"]
StreamMode = Literal["full-duplex", "output-driven", "separate"]

REANCHOR_BLOCKS = 3
"""Output-driven mode: re-take the input-to-output offset when it is this many blocks off."""


def mode_for_hostapi(hostapi: str) -> DuplexMode:
    """How to serve both devices from one callback on a host API (see the module doc)."""
    return "output-driven" if hostapi == "ALSA" else "full-duplex"


STREAM_STOPPED = "the audio stream stopped unexpectedly (device unplugged or PortAudio failed)"


class DuplexPlayer(AudioPlayer):
    """The speaker side of a `DuplexAudio`: the player core, pulled by the shared callback."""

    def __init__(self, audio: DuplexAudio, **player_options: Any) -> None:
        super().__init__(sample_rate=audio.sample_rate, **player_options)
        self.real_time_pulls = True
        self.device = audio.output_device
        self.block_frames = audio.block_frames
        self.device_underflows = 0
        """Blocks PortAudio reported as output underflow (the callback came too late)."""
        self.callback_errors = 0
        self._audio = audio

    @property
    def stream_mode(self) -> StreamMode | None:
        """How the shared callback runs (None before the stream opens)."""
        return self._audio.mode

    async def start(self) -> None:
        await super().start()
        self._audio.acquire(self)
        self.output_latency_s = self._audio.output_latency_s

    async def stop(self) -> None:
        self._audio.release(self)


class DuplexMicrophone(MicrophoneInput):
    """The microphone side of a `DuplexAudio`: blocks stamped with the player's tap position."""

    def __init__(
        self,
        audio: DuplexAudio,
        *,
        chunk_ms: int,
        queue_blocks: int,
        echo: EchoProcessor | None = None,
    ) -> None:
        super().__init__(
            audio.input_device,
            chunk_ms=chunk_ms,
            device_rate=audio.sample_rate,
            queue_blocks=queue_blocks,
            echo=echo,
            latency=audio.latency,
            clock=audio.player.tap,
        )
        self._audio = audio

    @property
    def stream_mode(self) -> StreamMode | None:
        """How the shared callback runs (None before the stream opens)."""
        return self._audio.mode

    async def start(self) -> None:
        self.prepare()
        try:
            self._audio.acquire(self)
        except BaseException:
            self._closed = True
            raise
        self.input_latency_s = self._audio.input_latency_s

    async def stop(self) -> None:
        self._closed = True  # first: the stream's finished callback is expected now
        self._audio.release(self)
        if self._ready is not None:
            self._wake_reader()


class DuplexAudio:
    """One callback for a microphone and a speaker; `microphone` and `player` are the app's
    input and output. `sample_rate` must suit both devices (`shared_stream_support`).

    `block_ms` is the device block (the callback's period: a flush is heard within one);
    `mic_block_ms` (default: the same) is how much microphone audio each block handed to the
    loop holds. Larger microphone blocks wake the loop, and send a frame, less often.
    """

    def __init__(
        self,
        input_device: int | None,
        output_device: int | None,
        *,
        sample_rate: int,
        block_ms: int = 20,
        mic_block_ms: int | None = None,
        latency: float | str = "low",
        queue_blocks: int = 50,
        prefer: DuplexMode = "full-duplex",
        **player_options: Any,
    ) -> None:
        self.input_device = input_device
        self.output_device = output_device
        self.sample_rate = sample_rate
        self.block_frames = max(1, sample_rate * block_ms // 1000)
        self.latency = latency
        self.prefer = prefer
        self.mode: StreamMode | None = None
        """What runs: the preferred one-callback way, or two streams if the device refused it."""
        self.input_latency_s = 0.0
        self.output_latency_s = 0.0
        self.player = DuplexPlayer(self, **player_options)
        self.microphone = DuplexMicrophone(
            self, chunk_ms=mic_block_ms or block_ms, queue_blocks=queue_blocks
        )
        self._out_block = np.zeros(self.block_frames, dtype=np.int16)
        self._out_bytes = self._out_block.data.cast("B")
        self._streams: list[Any] = []
        self._users: set[int] = set()
        self._stopping = False
        # output-driven mode: the microphone's blocking-mode stream and its clock mapping
        self._input_stream: Any = None
        self._input_frames = 0
        self._input_offset: int | None = None
        self._input_failed = False
        self._read_error: type[Exception] = Exception
        self.reanchors = 0
        """Output-driven mode: times the input-to-output offset was re-taken (after an
        overflow, or clock drift between the two devices)."""

    @property
    def is_open(self) -> bool:
        return bool(self._streams)

    # --- opening and closing (event loop) -----------------------------------------------------

    def acquire(self, user: object) -> None:
        """A side starts: open the stream unless the other side already did."""
        if not self._streams:
            self._open()
        self._users.add(id(user))

    def release(self, user: object) -> None:
        """A side stops: close the stream once neither side uses it."""
        self._users.discard(id(user))
        if self._users or not self._streams:
            return
        self._stopping = True  # first: the streams' finished callbacks are expected now
        streams, self._streams = self._streams, []
        streams.reverse()  # the output first: its callback drains the input stream
        self._input_stream = None
        try:
            for stream in streams:
                stream.stop()
        finally:
            for stream in streams:
                stream.close()

    def _open(self) -> None:
        sd = load_sounddevice()
        self._stopping = False
        self._read_error = sd.PortAudioError
        common: dict[str, Any] = {
            "samplerate": self.sample_rate,
            "dtype": "int16",
            "blocksize": self.block_frames,
            "latency": self.latency,
        }
        try:
            if self.prefer == "full-duplex":
                self._open_full_duplex(sd, common)
            else:
                self._open_output_driven(sd, common)
        except (sd.PortAudioError, ValueError) as exc:
            log.warning("one-callback audio refused: two streams instead", reason=str(exc))
            try:
                self._open_separate(sd, common)
            except (sd.PortAudioError, ValueError) as exc2:
                raise AudioUnavailableError(
                    f"Cannot open the microphone and speaker ({exc2}): run `voicebot devices "
                    "list` and pick them with --input-device and --output-device"
                ) from exc2
        log.debug(
            "audio started",
            mode=self.mode,
            rate=self.sample_rate,
            input_latency_ms=round(self.input_latency_s * 1000, 1),
            output_latency_ms=round(self.output_latency_s * 1000, 1),
        )

    def _open_full_duplex(self, sd: Any, common: dict[str, Any]) -> None:
        stream = sd.RawStream(
            device=(self.input_device, self.output_device),
            channels=(1, 1),
            callback=self._on_duplex_block,
            finished_callback=self._on_stream_finished,
            **common,
        )
        self._start([stream])
        self.input_latency_s, self.output_latency_s = (float(s) for s in stream.latency)
        self.mode = "full-duplex"

    def _open_output_driven(self, sd: Any, common: dict[str, Any]) -> None:
        self._input_frames = 0
        self._input_offset = None
        self._input_failed = False
        input_stream = sd.RawInputStream(device=self.input_device, channels=1, **common)
        try:
            output_stream = sd.RawOutputStream(
                device=self.output_device,
                channels=1,
                callback=self._on_output_driven_block,
                finished_callback=self._on_stream_finished,
                **common,
            )
        except BaseException:
            input_stream.close()
            raise
        self._input_stream = input_stream
        try:
            self._start([input_stream, output_stream])  # the input first: it is drained
        except BaseException:
            self._input_stream = None
            raise
        self.input_latency_s = float(input_stream.latency)
        self.output_latency_s = float(output_stream.latency)
        self.mode = "output-driven"

    def _open_separate(self, sd: Any, common: dict[str, Any]) -> None:
        self._input_stream = None
        streams = [
            sd.RawInputStream(
                device=self.input_device,
                channels=1,
                callback=self._on_input_block,
                finished_callback=self._on_stream_finished,
                **common,
            ),
            sd.RawOutputStream(
                device=self.output_device,
                channels=1,
                callback=self._on_output_block,
                finished_callback=self._on_stream_finished,
                **common,
            ),
        ]
        self._start(streams)
        self.input_latency_s = float(streams[0].latency)
        self.output_latency_s = float(streams[1].latency)
        self.mode = "separate"

    def _start(self, streams: list[Any]) -> None:
        """Start the opened streams; close them all if one fails to start."""
        self._streams = streams
        try:
            for stream in streams:
                stream.start()
        except BaseException:
            self._stopping = True
            self._streams = []
            for stream in streams:
                stream.close()
            self._stopping = False
            raise

    # --- callback thread ----------------------------------------------------------------------

    def _on_duplex_block(
        self, indata: Any, outdata: Any, frames: int, time_info: Any, status: Any
    ) -> None:
        """PortAudio, full-duplex mode: one block captured and one to play, at the same
        stream position."""
        if status:
            if status.input_overflow:
                self.microphone.overflows += 1
            if status.output_underflow:
                self.player.device_underflows += 1
        self.microphone.capture_raw(indata, frames, self.player.tap.total_samples)
        self._play_into(outdata, frames)

    def _on_output_driven_block(
        self, outdata: Any, frames: int, time_info: Any, status: Any
    ) -> None:
        """PortAudio, output-driven mode: play the next block, then take the whole blocks
        the microphone's stream holds."""
        if status and status.output_underflow:
            self.player.device_underflows += 1
        end = self.player.tap.total_samples + frames  # the end of the block played now
        self._play_into(outdata, frames)
        stream = self._input_stream
        if stream is None or self._input_failed:
            return
        microphone = self.microphone
        block_frames = microphone.block_frames
        try:
            available = stream.read_available
            count = available - available % block_frames
            if count <= 0:
                return
            data, overflowed = stream.read(count)
        except self._read_error:
            self._input_failed = True  # the device is gone: say so once, read no more
            microphone._on_stream_finished()
            return
        except Exception:
            microphone.callback_errors += 1
            return
        if overflowed:
            microphone.overflows += 1
        # The data just read ends about where the block just played ends.
        position = end - count
        offset = self._input_offset
        if offset is None or abs(self._input_frames + offset - position) > REANCHOR_BLOCKS * (
            block_frames
        ):
            if offset is not None:
                self.reanchors += 1
            offset = self._input_offset = position - self._input_frames
        position = self._input_frames + offset
        self._input_frames += count
        microphone.capture_raw(data, count, position)

    def _on_input_block(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        """Separate mode: the input stream's callback."""
        if status and status.input_overflow:
            self.microphone.overflows += 1
        self.microphone.capture_raw(indata, frames, self.player.tap.total_samples)

    def _on_output_block(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        """Separate mode: the output stream's callback."""
        if status and status.output_underflow:
            self.player.device_underflows += 1
        self._play_into(outdata, frames)

    def _play_into(self, outdata: Any, frames: int) -> None:
        """Pull the player's next samples into the preallocated block and copy its bytes out."""
        player = self.player
        block_frames = self.block_frames
        try:
            if frames == block_frames:  # always, with the fixed block size the stream has
                player.pull_into(self._out_block)
                outdata[:] = self._out_bytes
                return
            done = 0
            while done < frames:
                count = min(frames - done, block_frames)
                player.pull_into(self._out_block[:count])
                outdata[done * 2 : (done + count) * 2] = self._out_bytes[: count * 2]
                done += count
        except Exception:
            outdata[:] = bytes(len(outdata))
            player.callback_errors += 1

    def _on_stream_finished(self) -> None:
        """PortAudio: a stream ended. Unless `release` ended it, the device failed."""
        if self._stopping:
            return
        self.player._device_failed(STREAM_STOPPED)
        self.microphone._on_stream_finished()
