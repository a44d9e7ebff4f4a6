"""AudioPlayer core (jitter, underrun, flush with fade, played-samples counting) and WavFilePlayer.

The device callback is simulated by calling `pull` directly with synthetic PCM.
"""

from __future__ import annotations

import asyncio
import threading
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realtime_voicebot.audio.output import AudioPlayer, PlaybackTap, WavFilePlayer
from realtime_voicebot.testing import scaled

RATE = 24000


def tone(freq: float, ms: float, amplitude: float = 16000.0, rate: int = RATE) -> np.ndarray:
    count = round(rate * ms / 1000)
    return np.rint(amplitude * np.sin(2 * np.pi * freq * np.arange(count) / rate)).astype(np.int16)


def ms_of(samples: int, rate: int = RATE) -> float:
    return samples * 1000.0 / rate


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.shape[0])))
    return float(np.fft.rfftfreq(samples.shape[0], 1 / rate)[np.argmax(spectrum)])


class ObservedWavPlayer(WavFilePlayer):
    """A WavFilePlayer that sets `reached` once `condition` holds after a pull (on the loop)."""

    def __init__(self, *args: Any, condition: Callable[[WavFilePlayer], bool], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.condition = condition
        self.reached = asyncio.Event()

    def pull_into(self, out: np.ndarray) -> int:
        active = super().pull_into(out)
        if self.condition(self):
            self.reached.set()
        return active


# --- jitter buffer -------------------------------------------------------------------------


def test_item_does_not_start_before_jitter_is_buffered() -> None:
    player = AudioPlayer(jitter_ms=60)
    player.write("a", tone(440, 40).tobytes())
    block = player.pull(480)
    assert not block.any()
    assert player.played_ms("a") == 0.0
    assert player.playing_item_id is None
    assert not player.is_audible
    player.write("a", tone(440, 19).tobytes())  # 59 ms: still one sample short of 60 ms
    assert not player.pull(480).any()
    player.write("a", tone(440, 1).tobytes())  # 60 ms
    block = player.pull(480)
    assert np.array_equal(block, tone(440, 60)[:480])
    assert player.playing_item_id == "a"
    assert player.is_audible
    assert player.played_ms("a") == 20.0
    assert player.underruns == 0


def test_complete_item_starts_immediately_and_finishes() -> None:
    finished: list[str] = []
    player = AudioPlayer(jitter_ms=60, on_item_finished=finished.append)
    audio = tone(440, 10)
    player.write("a", audio.tobytes())
    assert not player.pull(480).any()
    player.end_item("a")
    block = player.pull(480)
    assert np.array_equal(block[:240], audio)
    assert not block[240:].any()
    assert finished == ["a"]
    assert player.is_finished("a")
    assert player.played_ms("a") == 10.0
    assert player.underruns == 0
    assert player.first_sample_at("a") is not None


def test_next_item_plays_after_the_previous_one() -> None:
    finished: list[str] = []
    player = AudioPlayer(jitter_ms=0, on_item_finished=finished.append)
    first, second = tone(440, 10), tone(880, 10)
    player.write("a", first.tobytes())
    player.write("b", second.tobytes())  # a new item completes the previous one
    player.end_item("b")
    block = player.pull(600)
    assert np.array_equal(block[:240], first)
    assert np.array_equal(block[240:480], second)
    assert not block[480:].any()
    assert finished == ["a", "b"]
    assert player.playing_item_id == "b"


# --- underruns -----------------------------------------------------------------------------


def test_underrun_plays_silence_counts_once_and_rebuffers() -> None:
    player = AudioPlayer(jitter_ms=60)
    audio = tone(440, 100)
    player.write("a", audio[:1440].tobytes())  # 60 ms
    played = np.concatenate([player.pull(480) for _ in range(3)])
    assert np.array_equal(played, audio[:1440])
    assert player.underruns == 0  # drained exactly at a block boundary
    for _ in range(3):
        assert not player.pull(480).any()
    assert player.underruns == 1  # one episode, however long
    assert player.underrun_samples == 3 * 480
    assert player.playing_item_id is None
    player.write("a", audio[1440:1920].tobytes())  # 20 ms: below the jitter again
    assert not player.pull(480).any()
    player.end_item("a")  # complete: plays the rest at once
    assert np.array_equal(player.pull(480), audio[1440:1920])
    assert player.played_ms("a") == 80.0
    assert player.received_ms("a") == 80.0
    assert player.underruns == 1


def test_underrun_mid_block_counts() -> None:
    player = AudioPlayer(jitter_ms=0)
    player.write("a", tone(440, 10).tobytes())
    block = player.pull(480)
    assert block[:240].any()
    assert not block[240:].any()
    assert player.underruns == 1


# --- played / received counting ------------------------------------------------------------


def test_played_ms_counts_samples_handed_to_the_device() -> None:
    player = AudioPlayer(jitter_ms=0)
    for _ in range(50):  # 1 s in 20 ms deltas
        player.write("a", tone(440, 20).tobytes())
    for _ in range(7):
        player.pull(333)
    assert player.played_ms("a") == ms_of(7 * 333)
    assert player.received_ms("a") == 1000.0
    assert player.buffered_ms == pytest.approx(1000.0 - ms_of(7 * 333))
    assert player.played_ms("unknown") == 0.0
    assert player.received_ms("unknown") == 0.0


def test_played_ms_subtracts_output_latency_when_compensating() -> None:
    player = AudioPlayer(jitter_ms=0, output_latency_s=0.030)
    player.write("a", tone(440, 200).tobytes())
    player.pull(2400)  # 100 ms
    assert player.played_ms("a") == pytest.approx(70.0)
    player.latency_compensation = False
    assert player.played_ms("a") == pytest.approx(100.0)
    player.latency_compensation = True
    player.output_latency_s = 0.5
    assert player.played_ms("a") == 0.0  # never negative
    player.end_item("a")
    player.pull(2400)
    assert player.is_finished("a")
    assert player.played_ms("a") == pytest.approx(200.0)  # played to its end: all of it


def test_played_ms_counts_at_the_device_rate() -> None:
    player = AudioPlayer(sample_rate=48000, jitter_ms=0)
    player.write("a", tone(440, 100).tobytes())
    player.end_item("a")
    for _ in range(3):
        player.pull(1000)
    assert player.played_ms("a") == pytest.approx(ms_of(3000, 48000))


def test_writes_beyond_the_buffer_bound_are_dropped_and_counted() -> None:
    player = AudioPlayer(jitter_ms=0, max_buffer_s=0.1)
    player.write("a", tone(440, 80).tobytes())
    player.write("a", tone(440, 40).tobytes())
    assert player.dropped_writes == 1
    assert player.received_ms("a") == 80.0


def test_odd_byte_deltas_are_joined() -> None:
    player = AudioPlayer(jitter_ms=0)
    data = tone(440, 10).tobytes()
    player.write("a", data[:101])
    player.write("a", data[101:])
    assert np.array_equal(player.pull(240), tone(440, 10))


# --- flush ---------------------------------------------------------------------------------


def test_flush_fades_out_within_one_block_without_a_click() -> None:
    player = AudioPlayer(jitter_ms=60, fade_ms=5)
    audio = tone(1000, 1000)
    player.write("a", audio.tobytes())
    before = player.pull(487)  # ends on a crest of the 1 kHz tone
    assert before[-1] > 15000
    assert player.flush() == "a"
    after = player.pull(480)
    fade = player.fade_samples
    assert fade == 120
    joined = np.concatenate([before[-1:], after[:fade]]).astype(np.int32)
    natural_step = 2 * np.pi * 1000 / RATE * 16000  # the tone's own largest step
    assert np.max(np.abs(np.diff(joined))) <= natural_step + 16000 / fade + 1
    envelope = 16000 * (1 - np.arange(1, fade + 1) / fade) + 1
    assert np.all(np.abs(after[:fade].astype(np.int32)) <= envelope)
    assert not after[fade:].any()
    assert player.played_ms("a") == ms_of(487)  # the fade is not counted as heard
    assert player.is_audible  # the block held the fade
    assert player.playing_item_id is None
    assert not player.pull(480).any()
    assert not player.is_audible


def test_hard_cut_would_fail_the_click_check() -> None:
    """The click bound above is meaningful: cutting to zero at a crest jumps far beyond it."""
    before = tone(1000, 1000)[:487]
    natural_step = 2 * np.pi * 1000 / RATE * 16000
    assert abs(int(before[-1]) - 0) > natural_step + 16000 / 120 + 1


def test_pause_goes_silent_within_one_block_and_keeps_the_position() -> None:
    player = AudioPlayer(jitter_ms=0, fade_ms=5)
    audio = tone(1000, 1000)
    player.write("a", audio[:12000].tobytes())
    before = player.pull(487)
    player.pause()
    paused = player.pull(480).astype(np.int32)
    fade = player.fade_samples
    steps = np.abs(np.diff(np.concatenate([[int(before[-1])], paused[: fade + 1]])))
    assert np.max(steps) <= abs(int(before[-1])) / fade + 1  # a ramp, no click
    assert not paused[fade:].any()
    assert not player.pull(480).any() and not player.is_audible
    assert player.played_ms("a") == ms_of(487)  # nothing more counted as heard
    assert player.head_item_id == "a" and player.playing_item_id is None
    player.write("a", audio[12000:].tobytes())  # the reply keeps arriving while paused
    player.resume()
    resumed = player.pull(480).astype(np.int32)
    # Resumes at the very next sample, ramped in over the fade length.
    ramp = np.arange(1, fade + 1) / fade
    expected_head = np.rint(audio[487 : 487 + fade] * ramp)
    assert np.max(np.abs(resumed[:fade] - expected_head)) <= 1
    assert np.array_equal(resumed[fade:], audio[487 + fade : 487 + 480].astype(np.int32))
    assert player.played_ms("a") == ms_of(487 + 480)


def test_a_player_that_is_not_paused_plays_through() -> None:
    player = AudioPlayer(jitter_ms=0, fade_ms=5)
    audio = tone(1000, 100)
    player.write("a", audio.tobytes())
    player.resume()  # resuming what was never paused changes nothing
    out = player.pull(960)
    assert np.array_equal(out, audio[:960]) and player.played_ms("a") == ms_of(960)


def test_flush_while_paused_discards_and_plays_the_next_reply() -> None:
    player = AudioPlayer(jitter_ms=0, fade_ms=5)
    player.write("a", tone(1000, 200).tobytes())
    player.pull(480)
    player.pause()
    assert player.flush() == "a"
    player.write("b", tone(500, 100).tobytes())
    player.pull(480)  # the flush's fade
    assert player.pull(480).any() and player.playing_item_id == "b"


def test_flush_with_nothing_buffered_ramps_from_the_last_level() -> None:
    player = AudioPlayer(jitter_ms=0, fade_ms=5)
    audio = tone(1000, 1000)[:487]
    player.write("a", audio.tobytes())
    player.pull(487)  # everything played, the item is not complete
    assert player.flush() == "a"
    after = player.pull(480).astype(np.int32)
    steps = np.abs(np.diff(np.concatenate([[int(audio[-1])], after[:121]])))
    assert np.max(steps) <= int(audio[-1]) / 120 + 1
    assert not after[120:].any()


def test_late_writes_of_a_flushed_item_are_dropped() -> None:
    finished: list[str] = []
    player = AudioPlayer(jitter_ms=0, on_item_finished=finished.append)
    player.write("a", tone(440, 100).tobytes())
    player.pull(480)
    assert player.flush() == "a"
    player.write("a", tone(440, 100).tobytes())
    player.end_item("a")
    assert player.discarded_writes == 1
    assert player.buffered_ms == 0.0
    assert player.received_ms("a") == 100.0
    player.pull(480)  # the fade
    assert not player.pull(480).any()
    assert player.played_ms("a") == 20.0
    assert not player.is_finished("a")
    assert finished == []
    player.write("b", tone(440, 20).tobytes())  # the next reply plays normally
    assert player.pull(480).any()
    assert player.playing_item_id == "b"


def test_flush_with_nothing_pending_returns_none() -> None:
    player = AudioPlayer(jitter_ms=0)
    assert player.flush() is None
    player.write("a", tone(440, 10).tobytes())
    player.end_item("a")
    player.pull(480)
    assert player.flush() is None  # already played to its end: nothing to truncate


def test_flush_of_an_item_still_buffering_returns_it() -> None:
    player = AudioPlayer(jitter_ms=60)
    player.write("a", tone(440, 20).tobytes())
    player.pull(480)
    assert player.flush() == "a"
    assert player.played_ms("a") == 0.0
    assert not player.pull(480).any()


def test_discard_item_before_its_audio_arrives() -> None:
    player = AudioPlayer(jitter_ms=0)
    player.discard_item("cancelled")
    player.write("cancelled", tone(440, 20).tobytes())
    assert player.discarded_writes == 1
    assert not player.pull(480).any()


# --- notifications, threads, tap ----------------------------------------------------------


async def test_wait_finished_from_a_callback_thread() -> None:
    finished: list[str] = []
    player = AudioPlayer(jitter_ms=60, on_item_finished=finished.append)
    await player.start()
    player.write("a", tone(440, 100).tobytes())
    player.end_item("a")
    stop = threading.Event()

    def device() -> None:
        while not stop.is_set() and not player.is_finished("a"):
            player.pull(240)

    thread = threading.Thread(target=device)
    thread.start()
    try:
        assert await asyncio.wait_for(player.wait_finished("a"), scaled(5)) is True
    finally:
        stop.set()
        thread.join()
    assert finished == ["a"]
    assert await player.wait_finished("unknown") is False


async def test_wait_finished_returns_false_on_flush() -> None:
    player = AudioPlayer(jitter_ms=0)
    await player.start()
    player.write("a", tone(440, 100).tobytes())
    waiter = asyncio.create_task(player.wait_finished("a"))
    await asyncio.sleep(0)
    player.flush()
    assert await asyncio.wait_for(waiter, scaled(5)) is False


def test_tap_records_everything_pulled() -> None:
    player = AudioPlayer(jitter_ms=0, tap_ms=100)
    audio = tone(440, 10)
    player.write("a", audio.tobytes())
    player.pull(480)
    played, position = player.tap.read_since(0)
    assert position == 480
    assert np.array_equal(played[:240], audio)
    assert not played[240:].any()
    assert np.array_equal(player.tap.recent(240), played[240:])


def test_tap_ring_wraps_and_reports_skipped_samples() -> None:
    tap = PlaybackTap(1000, capacity_ms=100)  # 100 samples
    data = np.arange(250, dtype=np.int16)
    for start in range(0, 250, 30):
        tap.append(data[start : start + 30])
    assert tap.total_samples == 250
    assert np.array_equal(tap.recent(40), data[-40:])
    samples, position = tap.read_since(100)
    assert position == 250
    assert np.array_equal(samples, data[150:])
    assert tap.skipped_samples == 50


# --- WavFilePlayer -------------------------------------------------------------------------


async def test_wav_file_player_writes_the_interrupted_reply(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    player = ObservedWavPlayer(
        path, pace=20.0, block_ms=20, jitter_ms=60, condition=lambda p: p.played_ms("a") >= 300
    )
    await player.start()
    try:
        first, second = tone(440, 1000), tone(880, 200)
        for start in range(0, first.shape[0], 480):
            player.write("a", first[start : start + 480].tobytes())
        player.end_item("a")
        await asyncio.wait_for(player.reached.wait(), scaled(5))
        assert player.flush() == "a"
        played_a = round(player.played_ms("a") * RATE / 1000)
        player.write("b", second.tobytes())
        player.end_item("b")
        assert await asyncio.wait_for(player.wait_finished("b"), scaled(5))
    finally:
        await player.stop()
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE)
        written = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    fade = player.fade_samples
    assert 300 * 24 <= played_a < 1000 * 24
    assert written.shape[0] == played_a + fade + second.shape[0]
    assert np.array_equal(written[:played_a], first[:played_a])
    assert np.array_equal(written[played_a + fade :], second)
    assert player.frames_written == written.shape[0]


async def test_wav_file_player_can_follow_the_wall_clock(tmp_path: Path) -> None:
    path = tmp_path / "clock.wav"
    player = ObservedWavPlayer(
        path,
        pace=50.0,
        block_ms=20,
        include_idle_silence=True,
        condition=lambda p: p.frames_written >= 10 * 480,
    )
    await player.start()
    try:
        await asyncio.wait_for(player.reached.wait(), scaled(5))
    finally:
        await player.stop()
    with wave.open(str(path), "rb") as wav:
        assert wav.getnframes() % 480 == 0
        assert wav.getnframes() >= 10 * 480
