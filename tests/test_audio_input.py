"""MicrophoneInput's callback and queue (driven directly, no device) and WavFileInput."""

from __future__ import annotations

import asyncio
import threading
import time
import wave
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from realtime_voicebot.audio.files import AudioFileError, WavFileInput, load_wav_pcm16_24k
from realtime_voicebot.audio.input import MicrophoneInput
from realtime_voicebot.testing import scaled

RATE = 24000


class Status:
    """Stands in for sounddevice.CallbackFlags."""

    def __init__(self, input_overflow: bool = False) -> None:
        self.input_overflow = input_overflow

    def __bool__(self) -> bool:
        return self.input_overflow


def tone(freq: float, count: int, rate: int = RATE, amplitude: float = 8000.0) -> np.ndarray:
    return np.rint(amplitude * np.sin(2 * np.pi * freq * np.arange(count) / rate)).astype(np.int16)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.shape[0])))
    return float(np.fft.rfftfreq(samples.shape[0], 1 / rate)[np.argmax(spectrum)])


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.int16)


def write_wav(
    path: Path, samples: np.ndarray, rate: int, channels: int = 1, width: int = 2
) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())


# --- MicrophoneInput -----------------------------------------------------------------------


async def test_callback_copies_blocks_and_the_bounded_queue_counts_drops() -> None:
    mic = MicrophoneInput(chunk_ms=20, device_rate=RATE, queue_blocks=4)
    mic.prepare()
    indata = np.zeros((480, 1), dtype=np.int16)
    for value in range(6):  # the loop does not run in between: the reader is behind
        indata[:, 0] = value + 1
        mic._on_block(indata, 480, None, Status())
    indata[:] = 99  # the callback copied: changing its buffer afterwards changes nothing
    mic._on_block(indata, 480, None, Status(input_overflow=True))
    assert mic.dropped_blocks == 3
    assert mic.overflows == 1
    blocks = [pcm(await asyncio.wait_for(mic.read(), scaled(5))) for _ in range(4)]
    assert [int(block[0]) for block in blocks] == [1, 2, 3, 4]
    assert all(block.shape == (480,) and np.all(block == block[0]) for block in blocks)
    indata[:, 0] = 7  # slots are free again once read
    mic._on_block(indata, 480, None, Status())
    assert int(pcm(await asyncio.wait_for(mic.read(), scaled(5)))[0]) == 7
    assert mic.dropped_blocks == 3
    assert mic.level_dbfs == pytest.approx(20 * np.log10(7 / 32768), abs=0.01)


async def test_blocks_from_a_callback_thread_arrive_in_order() -> None:
    mic = MicrophoneInput(chunk_ms=10, device_rate=RATE, queue_blocks=100)
    mic.prepare()

    def device() -> None:
        block = np.zeros((240, 1), dtype=np.int16)
        for value in range(50):
            block[:, 0] = value
            mic._on_block(block, 240, None, Status())

    thread = threading.Thread(target=device)
    thread.start()
    firsts = [int(pcm(await asyncio.wait_for(mic.read(), scaled(5)))[0]) for _ in range(50)]
    thread.join()
    assert firsts == list(range(50))
    assert mic.dropped_blocks == 0


async def test_microphone_resamples_48k_to_24k_on_the_loop() -> None:
    mic = MicrophoneInput(chunk_ms=20, device_rate=48000, queue_blocks=50)
    mic.prepare()
    signal = tone(1000, 48000, rate=48000)
    for start in range(0, signal.shape[0], 960):
        mic._on_block(signal[start : start + 960].reshape(-1, 1), 960, None, Status())
    await asyncio.sleep(0)  # let the loop run the handed-over blocks into the queue
    await mic.stop()
    result = np.concatenate(
        [pcm(block) for block in await asyncio.wait_for(_collect(mic), scaled(5))]
    )
    assert mic.dropped_blocks == 0
    assert 24000 - 1000 <= result.shape[0] <= 24000  # the filter holds back ≤ ~20 ms
    assert dominant_hz(result, RATE) == pytest.approx(1000, abs=2)
    assert mic.level_dbfs == pytest.approx(20 * np.log10(8000 / 32768) - 3.01, abs=0.1)


async def test_echo_hook_runs_on_the_loop_before_yielding() -> None:
    class Silencer:
        calls = 0

        def process(self, mic_block_pcm16: bytes, capture_end: int | None = None) -> bytes:
            self.calls += 1
            return bytes(len(mic_block_pcm16))

        @property
        def counts(self) -> dict[str, int]:
            return {"blocks": self.calls}

    echo = Silencer()
    mic = MicrophoneInput(chunk_ms=20, device_rate=RATE, queue_blocks=2, echo=echo)
    mic.prepare()
    mic._on_block(tone(440, 480).reshape(-1, 1), 480, None, Status())
    assert echo.calls == 0  # nothing runs in the callback
    block = pcm(await asyncio.wait_for(mic.read(), scaled(5)))
    assert echo.calls == 1
    assert not block.any()
    assert mic.level_dbfs > -30  # the level shows the raw mic


async def test_stop_ends_reading_and_iteration() -> None:
    mic = MicrophoneInput(chunk_ms=20, device_rate=RATE, queue_blocks=2)
    mic.prepare()
    mic._on_block(tone(440, 480).reshape(-1, 1), 480, None, Status())
    await asyncio.sleep(0)
    reader = asyncio.create_task(_collect(mic))
    await asyncio.sleep(0)
    await mic.stop()
    blocks = await asyncio.wait_for(reader, scaled(5))
    assert len(blocks) == 1
    assert await mic.read() == b""
    mic._on_block(tone(440, 480).reshape(-1, 1), 480, None, Status())  # late callback: ignored
    assert mic.dropped_blocks == 0


async def _collect(source: MicrophoneInput) -> list[bytes]:
    return [block async for block in source]


# --- WavFileInput --------------------------------------------------------------------------


async def test_wav_input_streams_in_order_resampled_then_silence(tmp_path: Path) -> None:
    rate = 48000
    first, second = tone(500, rate // 4, rate), tone(1500, rate // 4, rate)
    mono = np.concatenate([first, second])
    stereo = np.stack([mono, mono], axis=1)
    path = tmp_path / "speech.wav"
    write_wav(path, stereo, rate, channels=2)
    source = WavFileInput(path, chunk_ms=20, pace=50.0)
    await source.start()
    assert source.duration_s == pytest.approx(0.5, abs=0.001)
    blocks = []
    while not source.finished.is_set():
        blocks.append(pcm(await asyncio.wait_for(source.read(), scaled(5))))
    assert len(blocks) == 25  # 0.5 s in 20 ms blocks
    assert all(block.shape == (480,) for block in blocks)
    audio = np.concatenate(blocks)
    assert dominant_hz(audio[:5760], RATE) == pytest.approx(500, abs=5)
    assert dominant_hz(audio[6240:], RATE) == pytest.approx(1500, abs=5)
    after = pcm(await asyncio.wait_for(source.read(), scaled(5)))
    assert after.shape == (480,) and not after.any()
    await source.stop()
    assert await source.read() == b""


def read_if_due(source: WavFileInput) -> bytes | None:
    """The next block if `read()` returns it without waiting, else None (nothing consumed)."""
    read = source.read()
    try:
        read.send(None)
    except StopIteration as done:
        return cast(bytes, done.value)
    read.close()
    return None


async def test_wav_input_is_paced_by_absolute_deadlines(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    write_wav(path, tone(440, RATE), RATE)
    block_s = 0.004
    source = WavFileInput(path, chunk_ms=20, pace=5.0)  # a block every 4 ms
    await source.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for index in range(11):
        await asyncio.wait_for(source.read(), scaled(5))
        assert loop.time() >= started + (index + 1) * block_s - 0.001, "never ahead of time"
    time.sleep(0.15)  # noqa: ASYNC251 - a stalled loop: the source must catch up, not drift
    # Every block due during the stall comes at once (a drifting source would make each wait).
    overdue = int(0.15 / block_s) - 2
    assert all(read_if_due(source) for _ in range(overdue))
    assert source.blocks_read == 11 + overdue


async def test_wav_input_decodes_8_and_24_bit(tmp_path: Path) -> None:
    values = np.array([0, 1000, -1000, 32767, -32768], dtype=np.int16)
    path24 = tmp_path / "24.wav"
    as_int32 = values.astype(np.int32) << 8
    raw24 = np.stack([(as_int32 >> shift) & 0xFF for shift in (0, 8, 16)], axis=1).astype(np.uint8)
    write_wav(path24, raw24.reshape(-1), RATE, width=3)
    assert load_wav_pcm16_24k(path24).tolist() == values.tolist()
    path8 = tmp_path / "8.wav"
    write_wav(path8, np.array([128, 255, 0], dtype=np.uint8), RATE, width=1)
    assert load_wav_pcm16_24k(path8).tolist() == [0, 127 << 8, -32768]


async def test_wav_input_errors_say_how_to_fix(tmp_path: Path) -> None:
    bad = tmp_path / "notwav.wav"
    bad.write_bytes(b"ID3 not a wav file at all")
    with pytest.raises(AudioFileError, match="sox"):
        await WavFileInput(bad).start()
    with pytest.raises(AudioFileError, match="No such audio file"):
        await WavFileInput(tmp_path / "missing.wav").start()


async def test_empty_wav_is_finished_at_once(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    write_wav(path, np.zeros(0, dtype=np.int16), RATE)
    source = WavFileInput(path, pace=100.0)
    await source.start()
    assert source.finished.is_set()
    assert not pcm(await asyncio.wait_for(source.read(), scaled(5))).any()


async def test_blocks_are_stamped_with_the_speaker_clock_when_given_one() -> None:
    from realtime_voicebot.audio.output import PlaybackTap

    clock = PlaybackTap(48000)  # the speaker runs at 48 kHz, the mic at 24 kHz
    mic = MicrophoneInput(chunk_ms=20, device_rate=RATE, queue_blocks=4, clock=clock)
    mic.prepare()
    clock.append(np.zeros(960, dtype=np.int16))
    mic._on_block(tone(440, 480).reshape(-1, 1), 480, None, Status())
    clock.append(np.zeros(960, dtype=np.int16))
    mic._on_block(tone(440, 480).reshape(-1, 1), 480, None, Status())
    await mic.read()
    assert mic.capture_end_position == 960 + 960  # captured from 960 on, 20 ms at 48 kHz
    await mic.read()
    assert mic.capture_end_position == 1920 + 960

    unclocked = MicrophoneInput(chunk_ms=20, device_rate=RATE, queue_blocks=4)
    unclocked.prepare()
    unclocked._on_block(tone(440, 480).reshape(-1, 1), 480, None, Status())
    await unclocked.read()
    assert unclocked.capture_end_position is None
