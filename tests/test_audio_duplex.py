"""One duplex stream: its callback driven with synthetic buffers, its life on a stand-in
PortAudio, and how `build_audio` chooses it. No sound card (the rig tests use the real one).

The buffers PortAudio hands a raw stream's callback are cffi buffers; the tests hand the same.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import sounddevice as sd
from cffi import FFI

from realtime_voicebot.audio import build as build_module
from realtime_voicebot.audio import devices as devices_module
from realtime_voicebot.audio import duplex as duplex_module
from realtime_voicebot.audio import output as output_module
from realtime_voicebot.audio.build import build_audio
from realtime_voicebot.audio.devices import AudioUnavailableError, choose_duplex_samplerate
from realtime_voicebot.audio.duplex import (
    DuplexAudio,
    DuplexMicrophone,
    DuplexPlayer,
    mode_for_hostapi,
)
from realtime_voicebot.audio.echo import EchoGate
from realtime_voicebot.audio.input import AudioDeviceError, MicrophoneInput
from realtime_voicebot.audio.output import SoundDevicePlayer
from realtime_voicebot.config import Settings
from realtime_voicebot.testing import scaled

RATE = 24000
BLOCK = 480  # 20 ms
ffi = FFI()


class Status:
    """Stands in for sounddevice.CallbackFlags."""

    def __init__(self, input_overflow: bool = False, output_underflow: bool = False) -> None:
        self.input_overflow = input_overflow
        self.output_underflow = output_underflow

    def __bool__(self) -> bool:
        return self.input_overflow or self.output_underflow


def port_buffer(samples: np.ndarray | None = None, frames: int = BLOCK) -> Any:
    """A cffi buffer like the ones PortAudio's raw callbacks get (zeros, or `samples`)."""
    buffer = ffi.buffer(ffi.new("char[]", frames * 2))
    if samples is not None:
        buffer[:] = samples.astype("<i2").tobytes()
    return buffer


def samples_of(buffer: Any) -> np.ndarray:
    return np.frombuffer(bytes(buffer), dtype=np.int16)


def tone(count: int, freq: float = 440.0, amplitude: float = 12000.0) -> np.ndarray:
    t = np.arange(count) / RATE
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def prepared(**options: Any) -> DuplexAudio:
    """A duplex device whose sides are ready for callbacks, without opening a stream."""
    audio = DuplexAudio(None, None, sample_rate=RATE, block_ms=20, **options)
    audio.microphone.prepare()
    audio.player.bind_loop(asyncio.get_running_loop())
    return audio


def callback(audio: DuplexAudio, mic: np.ndarray, status: Status | None = None) -> np.ndarray:
    """One duplex callback with `mic` as the captured block; returns the block played."""
    out = port_buffer()
    audio._on_duplex_block(port_buffer(mic), out, BLOCK, None, status or Status())
    return samples_of(out)


# --- the callback ------------------------------------------------------------------------------


async def test_callback_captures_the_mic_and_plays_the_reply_on_one_clock() -> None:
    audio = prepared(jitter_ms=0)
    player, mic = audio.player, audio.microphone
    reply = tone(3 * BLOCK)
    player.write("r1", reply.tobytes())
    player.end_item("r1")
    played = []
    for k in range(4):
        played.append(callback(audio, np.full(BLOCK, k + 1, dtype=np.int16)))
    assert np.array_equal(np.concatenate(played[:3]), reply)
    assert not played[3].any()  # idle silence after the reply
    assert await asyncio.wait_for(player.wait_finished("r1"), 5)
    assert player.played_ms("r1") == pytest.approx(60.0)
    assert player.first_sample_at("r1") is not None
    # The mic blocks arrive in order, each stamped with the stream position it was captured
    # at: the same position as the block played in the same callback.
    ends = []
    for k in range(4):
        block = np.frombuffer(await asyncio.wait_for(mic.read(), 5), dtype=np.int16)
        assert np.all(block == k + 1) and block.shape == (BLOCK,)
        ends.append(mic.capture_end_position)
    assert ends == [BLOCK, 2 * BLOCK, 3 * BLOCK, 4 * BLOCK]
    assert player.tap.total_samples == 4 * BLOCK
    assert np.array_equal(player.tap.recent(4 * BLOCK)[: 3 * BLOCK], reply)
    assert mic.callback_errors == player.callback_errors == 0


async def test_the_mic_ring_is_bounded_and_counts_drops_while_playback_goes_on() -> None:
    audio = prepared(queue_blocks=3, jitter_ms=0)
    reply = tone(5 * BLOCK)
    audio.player.write("r1", reply.tobytes())
    played = [callback(audio, np.full(BLOCK, k + 1, dtype=np.int16)) for k in range(5)]
    assert audio.microphone.dropped_blocks == 2  # the loop did not read in between
    assert np.array_equal(np.concatenate(played), reply)  # the speaker did not suffer
    firsts = [int(np.frombuffer(await audio.microphone.read(), np.int16)[0]) for _ in range(3)]
    assert firsts == [1, 2, 3]
    callback(audio, np.full(BLOCK, 9, dtype=np.int16))  # a slot is free again
    assert int(np.frombuffer(await audio.microphone.read(), np.int16)[0]) == 9
    assert audio.microphone.dropped_blocks == 2


async def test_callback_copies_so_later_changes_to_portaudio_buffers_do_not_leak() -> None:
    audio = prepared()
    captured = port_buffer(np.full(BLOCK, 5, dtype=np.int16))
    audio._on_duplex_block(captured, port_buffer(), BLOCK, None, Status())
    captured[:] = np.full(BLOCK, 77, dtype="<i2").tobytes()  # PortAudio reuses its buffer
    assert np.all(np.frombuffer(await audio.microphone.read(), np.int16) == 5)


async def test_status_flags_are_counted_per_side() -> None:
    audio = prepared()
    callback(audio, np.zeros(BLOCK, np.int16), Status(input_overflow=True))
    callback(audio, np.zeros(BLOCK, np.int16), Status(output_underflow=True))
    callback(audio, np.zeros(BLOCK, np.int16), Status(True, True))
    callback(audio, np.zeros(BLOCK, np.int16))
    assert audio.microphone.overflows == 2
    assert audio.player.device_underflows == 2


async def test_flush_fades_out_within_one_block_of_the_duplex_callback() -> None:
    audio = prepared(jitter_ms=0)
    player = audio.player
    player.write("r1", np.full(10 * BLOCK, 10000, dtype=np.int16).tobytes())
    assert np.all(callback(audio, np.zeros(BLOCK, np.int16)) == 10000)
    assert player.is_audible
    assert player.flush() == "r1"
    faded = callback(audio, np.zeros(BLOCK, np.int16))
    fade = player.fade_samples
    assert 0 < faded[0] <= 10000 and np.all(np.diff(faded[:fade].astype(int)) <= 0)
    assert not faded[fade:].any()
    assert await asyncio.wait_for(player.wait_silenced(), 5) is not None
    assert not callback(audio, np.zeros(BLOCK, np.int16)).any()
    assert not player.is_audible
    assert not await player.wait_finished("r1")


async def test_jitter_buffer_and_underruns_hold_in_the_duplex_callback() -> None:
    audio = prepared(jitter_ms=40)  # two blocks
    player = audio.player
    player.write("r1", tone(BLOCK).tobytes())
    assert not callback(audio, np.zeros(BLOCK, np.int16)).any()  # waiting for 40 ms
    player.write("r1", tone(2 * BLOCK)[BLOCK:].tobytes())
    assert callback(audio, np.zeros(BLOCK, np.int16)).any()
    assert callback(audio, np.zeros(BLOCK, np.int16)).any()
    assert not callback(audio, np.zeros(BLOCK, np.int16)).any()  # ran dry before its end
    assert player.underruns == 1


async def test_a_failing_pull_plays_silence_and_the_mic_still_captures() -> None:
    audio = prepared()

    def broken(out: np.ndarray) -> int:
        raise RuntimeError("bug")

    audio.player.pull_into = broken  # type: ignore[method-assign]
    out = port_buffer(np.full(BLOCK, 123, dtype=np.int16))  # stale bytes in PortAudio's buffer
    audio._on_duplex_block(port_buffer(np.full(BLOCK, 4, np.int16)), out, BLOCK, None, Status())
    assert not samples_of(out).any()
    assert audio.player.callback_errors == 1
    assert np.all(np.frombuffer(await audio.microphone.read(), np.int16) == 4)


async def test_odd_block_sizes_are_played_whole() -> None:
    audio = prepared(jitter_ms=0)
    reply = tone(3 * BLOCK)
    audio.player.write("r1", reply.tobytes())
    out = port_buffer(frames=2 * BLOCK + 100)
    mic = np.zeros(2 * BLOCK + 100, np.int16)
    audio._on_duplex_block(port_buffer(mic, 2 * BLOCK + 100), out, 2 * BLOCK + 100, None, Status())
    assert np.array_equal(samples_of(out), reply[: 2 * BLOCK + 100])


async def test_mic_blocks_before_the_mic_starts_are_ignored() -> None:
    """The speaker side may open the stream first: its callbacks do not fill the mic ring."""
    audio = DuplexAudio(None, None, sample_rate=RATE, block_ms=20)
    audio.player.bind_loop(asyncio.get_running_loop())
    callback(audio, np.full(BLOCK, 3, np.int16))
    audio.microphone.prepare()
    callback(audio, np.full(BLOCK, 4, np.int16))
    assert np.all(np.frombuffer(await audio.microphone.read(), np.int16) == 4)
    assert audio.microphone.capture_end_position == 2 * BLOCK
    assert audio.microphone.dropped_blocks == 0


async def test_mic_resamples_on_the_loop_when_the_stream_runs_at_48k() -> None:
    audio = DuplexAudio(None, None, sample_rate=48000, block_ms=20)
    audio.microphone.prepare()
    audio.player.bind_loop(asyncio.get_running_loop())
    signal = tone(48000 // 2, freq=1000.0)  # played at 48 kHz: a 2 kHz tone
    for start in range(0, signal.shape[0], 960):
        mic = port_buffer(signal[start : start + 960], 960)
        audio._on_duplex_block(mic, port_buffer(frames=960), 960, None, Status())
    await asyncio.sleep(0)  # let the loop take the handed-over blocks
    await audio.microphone.stop()
    result = np.concatenate([np.frombuffer(b, np.int16) async for b in audio.microphone])
    assert 12000 - 500 <= result.shape[0] <= 12000  # the filter holds back ≤ ~20 ms
    spectrum = np.abs(np.fft.rfft(result.astype(float) * np.hanning(result.shape[0])))
    peak_hz = float(np.fft.rfftfreq(result.shape[0], 1 / RATE)[np.argmax(spectrum)])
    assert peak_hz == pytest.approx(2000, abs=3)
    assert audio.microphone.capture_end_position == signal.shape[0]  # the 48 kHz clock


async def test_mic_blocks_larger_than_device_blocks_are_filled_across_callbacks() -> None:
    audio = DuplexAudio(None, None, sample_rate=RATE, block_ms=20, mic_block_ms=40)
    audio.microphone.prepare()
    audio.player.bind_loop(asyncio.get_running_loop())
    assert audio.microphone.block_frames == 2 * BLOCK
    speech = tone(5 * BLOCK)
    for k in range(5):  # 100 ms of device blocks: two whole 40 ms blocks and a half
        callback(audio, speech[k * BLOCK : (k + 1) * BLOCK])
    first = np.frombuffer(await audio.microphone.read(), np.int16)
    assert np.array_equal(first, speech[: 2 * BLOCK])
    assert audio.microphone.capture_end_position == 2 * BLOCK
    second = np.frombuffer(await audio.microphone.read(), np.int16)
    assert np.array_equal(second, speech[2 * BLOCK : 4 * BLOCK])
    assert audio.microphone.capture_end_position == 4 * BLOCK
    await asyncio.sleep(0)
    assert not audio.microphone._ready  # the half block waits for the next callback


async def test_mic_blocks_smaller_than_device_blocks_are_split() -> None:
    audio = DuplexAudio(None, None, sample_rate=RATE, block_ms=20, mic_block_ms=10)
    audio.microphone.prepare()
    audio.player.bind_loop(asyncio.get_running_loop())
    speech = tone(BLOCK)
    callback(audio, speech)
    halves = [np.frombuffer(await audio.microphone.read(), np.int16) for _ in range(2)]
    assert np.array_equal(np.concatenate(halves), speech)
    assert audio.microphone.capture_end_position == BLOCK


# --- the stream's life on a stand-in PortAudio ---------------------------------------------------


class FakeRawStream:
    """A PortAudio stream stand-in: keeps the callback; `stop` ends it as PortAudio does.

    Without a callback it is a blocking-mode input stream: `captured` is what the device has
    recorded and not yet been read."""

    def __init__(
        self,
        *,
        callback: Any = None,
        finished_callback: Any = None,
        latency: Any = None,
        refuse: bool = False,
        **kwargs: Any,
    ) -> None:
        if refuse:
            raise sd.PortAudioError("Invalid number of channels")
        self.callback = callback
        self.finished_callback = finished_callback
        self.kwargs = kwargs
        self.duplex = isinstance(kwargs.get("channels"), tuple)
        self.latency: Any = (0.02, 0.03) if self.duplex else 0.025
        self.active = False
        self.closed = False
        self.captured = bytearray()
        self.overflowed = False
        self.gone = False

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        if self.active:
            self.active = False
            if self.finished_callback is not None:
                self.finished_callback()

    def close(self) -> None:
        self.closed = True

    def vanish(self) -> None:
        """The device is unplugged: PortAudio ends the stream on its own thread."""
        self.active = False
        thread = threading.Thread(target=self.finished_callback)
        thread.start()
        thread.join()

    @property
    def read_available(self) -> int:
        if self.gone:
            raise sd.PortAudioError("Unanticipated host error")
        return len(self.captured) // 2

    def read(self, frames: int) -> tuple[Any, bool]:
        data = port_buffer(np.frombuffer(bytes(self.captured[: frames * 2]), np.int16), frames)
        del self.captured[: frames * 2]
        overflowed, self.overflowed = self.overflowed, False
        return data, overflowed


@pytest.fixture
def portaudio(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """sounddevice with its raw streams replaced; `opened` lists the streams in order."""
    state = SimpleNamespace(opened=[], refuse_duplex=False)

    def raw_stream(**kwargs: Any) -> FakeRawStream:
        stream = FakeRawStream(refuse=state.refuse_duplex, **kwargs)
        state.opened.append(stream)
        return stream

    def one_way(**kwargs: Any) -> FakeRawStream:
        stream = FakeRawStream(**kwargs)
        state.opened.append(stream)
        return stream

    fake_sd = SimpleNamespace(
        RawStream=raw_stream,
        RawInputStream=one_way,
        RawOutputStream=one_way,
        PortAudioError=sd.PortAudioError,
    )
    monkeypatch.setattr(duplex_module, "load_sounddevice", lambda: fake_sd)
    return state


async def test_one_stream_opens_with_the_first_side_and_closes_after_the_last(
    portaudio: SimpleNamespace,
) -> None:
    audio = DuplexAudio(3, 5, sample_rate=RATE, block_ms=20)
    await audio.player.start()
    await audio.microphone.start()
    assert len(portaudio.opened) == 1
    stream = portaudio.opened[0]
    assert audio.mode == audio.player.stream_mode == "full-duplex" and stream.active
    assert stream.kwargs["device"] == (3, 5) and stream.kwargs["channels"] == (1, 1)
    assert stream.kwargs["dtype"] == "int16" and stream.kwargs["blocksize"] == BLOCK
    assert audio.microphone.input_latency_s == 0.02
    assert audio.player.output_latency_s == 0.03
    stream.callback(port_buffer(np.full(BLOCK, 8, np.int16)), port_buffer(), BLOCK, None, Status())
    assert np.all(np.frombuffer(await audio.microphone.read(), np.int16) == 8)
    await audio.microphone.stop()
    assert stream.active  # the speaker still uses it
    assert await audio.microphone.read() == b""
    await audio.player.stop()
    assert not stream.active and stream.closed
    assert audio.microphone.device_error is None and audio.player.device_error is None


async def test_output_driven_the_speaker_callback_drains_the_microphone_stream(
    portaudio: SimpleNamespace,
) -> None:
    audio = DuplexAudio(
        3, 5, sample_rate=RATE, block_ms=20, mic_block_ms=40, prefer="output-driven", jitter_ms=0
    )
    await audio.player.start()
    await audio.microphone.start()
    assert audio.mode == audio.microphone.stream_mode == "output-driven"
    mic_stream, speaker_stream = portaudio.opened
    assert mic_stream.callback is None, "the microphone stream runs no callback of its own"
    assert mic_stream.kwargs["device"] == 3 and speaker_stream.kwargs["device"] == 5
    assert (audio.microphone.input_latency_s, audio.player.output_latency_s) == (0.025, 0.025)
    reply = tone(4 * BLOCK)
    audio.player.write("r1", reply.tobytes())
    speech = tone(7 * BLOCK, freq=300.0)

    def speaker_callback(captured: np.ndarray) -> np.ndarray:
        mic_stream.captured += captured.astype("<i2").tobytes()
        out = port_buffer()
        speaker_stream.callback(out, BLOCK, None, Status())
        return samples_of(out)

    # The microphone's data arrives unevenly: the callback takes whole 40 ms blocks only.
    played = [
        speaker_callback(speech[:BLOCK]),  # 20 ms waiting: nothing taken
        speaker_callback(speech[BLOCK : 4 * BLOCK]),  # 80 ms: two blocks, 20 ms left
        speaker_callback(speech[4 * BLOCK : 5 * BLOCK]),  # 40 ms: one block
        speaker_callback(speech[5 * BLOCK : 7 * BLOCK]),  # 40 ms: one block
    ]
    assert np.array_equal(np.concatenate(played), reply)
    blocks = []
    ends = []
    for _ in range(3):
        blocks.append(np.frombuffer(await audio.microphone.read(), np.int16))
        ends.append(audio.microphone.capture_end_position)
    assert np.array_equal(np.concatenate(blocks), speech[: 6 * BLOCK])
    # One offset maps microphone frames onto the speaker's clock: the first read (two blocks,
    # in the second callback) ends where the block played with it ends (2 * BLOCK), and every
    # later block follows on, whatever the sizes of the later reads.
    assert ends == [0, 2 * BLOCK, 4 * BLOCK]
    assert audio.reanchors == 0 and len(mic_stream.captured) == BLOCK * 2
    await audio.player.stop()
    assert mic_stream.active  # the microphone side still uses it
    await audio.microphone.stop()
    assert mic_stream.closed and speaker_stream.closed


async def test_output_driven_clock_mapping_is_retaken_after_a_jump(
    portaudio: SimpleNamespace,
) -> None:
    audio = DuplexAudio(None, None, sample_rate=RATE, block_ms=20, prefer="output-driven")
    await audio.player.start()
    await audio.microphone.start()
    mic_stream, speaker_stream = portaudio.opened
    for _ in range(3):
        mic_stream.captured += bytes(BLOCK * 2)
        speaker_stream.callback(port_buffer(), BLOCK, None, Status())
    for _ in range(5):  # the microphone delivers nothing for 100 ms (an overflow), then...
        speaker_stream.callback(port_buffer(), BLOCK, None, Status())
    mic_stream.captured += bytes(BLOCK * 2)
    mic_stream.overflowed = True
    speaker_stream.callback(port_buffer(), BLOCK, None, Status())
    ends = []
    for _ in range(4):
        await audio.microphone.read()
        ends.append(audio.microphone.capture_end_position)
    assert ends == [BLOCK, 2 * BLOCK, 3 * BLOCK, 9 * BLOCK]
    assert audio.reanchors == 1 and audio.microphone.overflows == 1
    await audio.microphone.stop()
    await audio.player.stop()


async def test_output_driven_a_microphone_gone_fails_the_microphone_once(
    portaudio: SimpleNamespace,
) -> None:
    audio = DuplexAudio(None, None, sample_rate=RATE, block_ms=20, prefer="output-driven")
    await audio.player.start()
    await audio.microphone.start()
    mic_stream, speaker_stream = portaudio.opened
    mic_stream.captured += np.full(BLOCK, 3, "<i2").tobytes()
    speaker_stream.callback(port_buffer(), BLOCK, None, Status())
    mic_stream.gone = True
    speaker_stream.callback(port_buffer(), BLOCK, None, Status())
    speaker_stream.callback(port_buffer(), BLOCK, None, Status())  # reads no more
    assert np.all(np.frombuffer(await audio.microphone.read(), np.int16) == 3)
    with pytest.raises(AudioDeviceError, match="stopped unexpectedly"):
        await audio.microphone.read()
    assert audio.player.device_error is None  # the speaker plays on
    await audio.microphone.stop()
    await audio.player.stop()


@pytest.mark.parametrize("prefer", ["full-duplex", "output-driven"])
async def test_a_stream_ending_on_its_own_fails_both_sides_once(
    portaudio: SimpleNamespace, prefer: str
) -> None:
    audio = DuplexAudio(None, None, sample_rate=RATE, block_ms=20, prefer=prefer)  # type: ignore[arg-type]
    reasons: list[str] = []
    failed = asyncio.Event()

    def on_device_error(reason: str) -> None:
        reasons.append(reason)
        failed.set()

    audio.player.on_device_error = on_device_error
    await audio.player.start()
    await audio.microphone.start()
    stream = portaudio.opened[-1]  # the one with the callback
    if prefer == "full-duplex":
        stream.callback(port_buffer(np.full(BLOCK, 2, np.int16)), port_buffer(), BLOCK, None, 0)
    else:
        portaudio.opened[0].captured += np.full(BLOCK, 2, "<i2").tobytes()
        stream.callback(port_buffer(), BLOCK, None, 0)
    stream.vanish()
    await asyncio.wait_for(failed.wait(), scaled(5))
    assert len(reasons) == 1 and "stopped unexpectedly" in reasons[0]
    assert np.all(np.frombuffer(await audio.microphone.read(), np.int16) == 2)  # captured first
    with pytest.raises(AudioDeviceError, match="stopped unexpectedly"):
        await audio.microphone.read()
    await audio.microphone.stop()
    await audio.player.stop()
    await asyncio.sleep(0)
    assert len(reasons) == 1


@pytest.mark.parametrize("prefer", ["full-duplex", "output-driven"])
async def test_a_refused_one_callback_stream_falls_back_to_two_callback_streams(
    portaudio: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, prefer: str
) -> None:
    if prefer == "full-duplex":
        portaudio.refuse_duplex = True
    else:
        monkeypatch.setattr(
            DuplexAudio, "_open_output_driven", lambda *_: (_ for _ in ()).throw(ValueError("no"))
        )
    audio = DuplexAudio(1, 2, sample_rate=RATE, block_ms=20, jitter_ms=0, prefer=prefer)  # type: ignore[arg-type]
    await audio.player.start()
    await audio.microphone.start()
    assert audio.mode == "separate"
    input_stream, output_stream = portaudio.opened[-2:]
    assert input_stream.callback is not None and output_stream.callback is not None
    assert input_stream.kwargs["device"] == 1 and output_stream.kwargs["device"] == 2
    reply = tone(BLOCK)
    audio.player.write("r1", reply.tobytes())
    out = port_buffer()
    output_stream.callback(out, BLOCK, None, Status())
    assert np.array_equal(samples_of(out), reply)
    input_stream.callback(port_buffer(np.full(BLOCK, 6, np.int16)), BLOCK, None, Status())
    assert np.all(np.frombuffer(await audio.microphone.read(), np.int16) == 6)
    assert audio.microphone.capture_end_position == 2 * BLOCK  # stamped on the speaker's tap
    await audio.microphone.stop()
    await audio.player.stop()
    assert input_stream.closed and output_stream.closed


async def test_a_device_refusing_everything_is_one_line_to_act_on(
    portaudio: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(**_: Any) -> Any:
        raise sd.PortAudioError("Device unavailable")

    monkeypatch.setattr(
        duplex_module,
        "load_sounddevice",
        lambda: SimpleNamespace(
            RawStream=refuse,
            RawInputStream=refuse,
            RawOutputStream=refuse,
            PortAudioError=sd.PortAudioError,
        ),
    )
    audio = DuplexAudio(None, None, sample_rate=RATE)
    with pytest.raises(AudioUnavailableError, match="--input-device and --output-device"):
        await audio.player.start()
    assert not audio.is_open


async def test_stop_without_start_and_a_second_stop_are_harmless(
    portaudio: SimpleNamespace,
) -> None:
    audio = DuplexAudio(None, None, sample_rate=RATE, block_ms=20)
    await audio.microphone.stop()
    await audio.player.start()
    await audio.player.stop()
    await audio.player.stop()
    assert len(portaudio.opened) == 1 and portaudio.opened[0].closed


# --- choosing the one-callback audio -------------------------------------------------------------


def test_duplex_rate_needs_one_host_api_and_a_rate_both_accept() -> None:
    def accepts(*rates: int) -> Any:
        return lambda rate: rate in rates

    assert choose_duplex_samplerate(0, 0, [24000, 48000, 44100], accepts(24000, 48000)) == 24000
    assert choose_duplex_samplerate(0, 0, [24000, 48000, 44100], accepts(44100)) == 44100
    assert choose_duplex_samplerate(0, 1, [24000], accepts(24000)) is None  # two host APIs
    assert choose_duplex_samplerate(2, 2, [24000, 48000], accepts()) is None


def test_alsa_is_served_output_driven_other_host_apis_by_a_duplex_stream() -> None:
    assert mode_for_hostapi("ALSA") == "output-driven"
    assert mode_for_hostapi("Core Audio") == "full-duplex"
    assert mode_for_hostapi("Windows WASAPI") == "full-duplex"


@pytest.fixture
def device_facts(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Devices resolved without PortAudio; `support` is what shared_stream_support answers."""
    facts = SimpleNamespace(support=(RATE, "ALSA"))
    monkeypatch.setattr(devices_module, "resolve_device", lambda spec, kind: None)
    monkeypatch.setattr(devices_module, "shared_stream_support", lambda i, o, p: facts.support)
    monkeypatch.setattr(output_module, "supported_samplerate", lambda *_: RATE)
    return facts


def test_build_audio_chooses_one_callback_when_the_devices_allow_it(
    device_facts: SimpleNamespace,
) -> None:
    audio_in, audio_out = build_audio(Settings(echo="gate", chunk_ms=20, mic_block_ms=40))
    assert isinstance(audio_in, DuplexMicrophone) and isinstance(audio_out, DuplexPlayer)
    assert audio_out._audio.prefer == "output-driven"
    assert audio_in.clock is audio_out.tap
    assert isinstance(audio_in.echo, EchoGate) and audio_in.echo.reference is audio_out.tap
    assert (audio_out.block_frames, audio_in.block_frames) == (BLOCK, 2 * BLOCK)
    device_facts.support = (48000, "Core Audio")
    audio_in, audio_out = build_audio(Settings(audio_streams="duplex"))
    assert isinstance(audio_out, DuplexPlayer) and audio_out._audio.prefer == "full-duplex"
    assert audio_out.sample_rate == 48000


def test_build_audio_falls_back_to_two_streams_when_they_do_not(
    device_facts: SimpleNamespace,
) -> None:
    device_facts.support = None
    audio_in, audio_out = build_audio(Settings(mic_block_ms=40))
    assert type(audio_in) is MicrophoneInput and type(audio_out) is SoundDevicePlayer
    assert audio_in.clock is audio_out.tap
    assert audio_in.chunk_ms == 40
    with pytest.raises(AudioUnavailableError, match="cannot share one stream"):
        build_audio(Settings(audio_streams="duplex"))


def test_build_audio_uses_two_streams_when_asked_and_files_without_devices(
    device_facts: SimpleNamespace, tmp_path: Path
) -> None:
    audio_in, audio_out = build_audio(Settings(audio_streams="separate"))
    assert type(audio_in) is MicrophoneInput and type(audio_out) is SoundDevicePlayer
    audio_in, audio_out = build_audio(Settings(), output_file=tmp_path / "out.wav")
    assert type(audio_in) is MicrophoneInput and not isinstance(audio_out, DuplexPlayer)
    assert build_audio(Settings(), text=True) == (None, None)
    assert build_module.NO_SHARED_STREAM.startswith("The microphone and speaker")
