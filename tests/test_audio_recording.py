"""SessionRecorder: both channels on the tap's sample clock, a WAV valid while it is written,
a bounded queue that counts drops, a private file that never follows a symlink."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realtime_voicebot.audio.output import PlaybackTap
from realtime_voicebot.audio.recording import (
    RecordingError,
    SessionRecorder,
    wav_header,
)
from realtime_voicebot.testing import scaled

RATE = 24000
BLOCK = 480


class Mic:
    """The app's input as the recorder sees it: where the block it last returned ends."""

    def __init__(self) -> None:
        self.capture_end_position: int | None = None


def tone(count: int, freq: float = 1000.0, amplitude: float = 12000.0, rate: int = RATE) -> Any:
    t = np.arange(count) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def read_wav(path: Path) -> tuple[Any, Any]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, RATE)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    stereo = frames.reshape(-1, 2)
    return stereo[:, 0], stereo[:, 1]


def loud(channel: Any, level: int = 1000) -> tuple[int, int]:
    """First and one-past-last sample above `level`."""
    where = np.flatnonzero(np.abs(channel.astype(np.int32)) > level)
    assert where.size, "nothing loud in the channel"
    return int(where[0]), int(where[-1]) + 1


async def test_played_tone_and_mic_burst_land_at_their_sample_offsets(tmp_path: Path) -> None:
    tap = PlaybackTap(RATE)
    tap.append(np.zeros(5000, np.int16))  # played before the recording starts: not in it
    mic = Mic()
    path = tmp_path / "session.wav"
    delay_s = 0.05  # output + input latency: the right channel sounds 1200 samples later
    recorder = SessionRecorder(path, reference=tap, microphone=mic, played_delay_s=delay_s)
    await recorder.start()
    # The device plays 0.1 s of silence, then a 0.2 s tone, then silence, block by block.
    played = np.concatenate([np.zeros(2400, np.int16), tone(4800), np.zeros(9600, np.int16)])
    burst = tone(2400, freq=300.0)
    for start in range(0, played.shape[0], BLOCK):
        tap.append(played[start : start + BLOCK])
        position = tap.total_samples - 5000
        if position == 4800 + BLOCK:  # the user speaks from 0.2 s (tap position 4800) on
            for offset in range(0, burst.shape[0], BLOCK):
                mic.capture_end_position = 5000 + 4800 + offset + BLOCK
                recorder.mic(burst[offset : offset + BLOCK].tobytes())
        elif position > 4800 + BLOCK and position <= 4800 + 2400:
            continue  # those mic blocks were sent above
        else:
            mic.capture_end_position = tap.total_samples
            recorder.mic(bytes(2 * BLOCK))  # quiet room
    await recorder.close()

    left, right = read_wav(path)
    assert left.shape[0] == right.shape[0] >= played.shape[0]
    tone_start, tone_end = loud(right)
    assert (tone_start, tone_end) == pytest.approx((2400 + 1200, 2400 + 4800 + 1200), abs=2)
    assert np.array_equal(right[tone_start - 1 : tone_start - 1 + 4800], tone(4800))
    burst_start, burst_end = loud(left)
    assert (burst_start, burst_end) == pytest.approx((4800, 4800 + 2400), abs=2)
    assert np.array_equal(left[4800 : 4800 + 2400], burst)
    stats = recorder.snapshot()
    assert stats.mic_blocks == (played.shape[0] // BLOCK)
    assert stats.mic_blocks_dropped == stats.mic_samples_late == stats.played_samples_skipped == 0
    assert stats.frames_written == left.shape[0] and stats.error is None


async def test_the_played_side_follows_a_48k_speaker_on_the_24k_clock(tmp_path: Path) -> None:
    tap = PlaybackTap(48000)
    mic = Mic()
    recorder = SessionRecorder(tmp_path / "r.wav", reference=tap, microphone=mic)
    await recorder.start()
    played = np.concatenate([np.zeros(9600, np.int16), tone(9600, freq=500.0, rate=48000)])
    for start in range(0, played.shape[0], 960):
        tap.append(played[start : start + 960])
    mic.capture_end_position = 9600 + 960  # a mic block captured at 0.2 s, 20 ms at 48 kHz
    recorder.mic(tone(BLOCK, freq=2000.0).tobytes())
    await recorder.close()
    left, right = read_wav(tmp_path / "r.wav")
    start, end = loud(right)
    assert start == pytest.approx(4800, abs=30)  # the resampler's delay: about a millisecond
    assert end - start == pytest.approx(4800, abs=30)
    assert loud(left) == pytest.approx((4800, 4800 + BLOCK), abs=2)


async def test_unstamped_blocks_follow_each_other_and_a_recording_needs_no_speaker(
    tmp_path: Path,
) -> None:
    recorder = SessionRecorder(tmp_path / "mic-only.wav")
    await recorder.start()
    blocks = [np.full(BLOCK, 100 * (k + 1), np.int16) for k in range(5)]
    for block in blocks:
        recorder.mic(block.tobytes())
    await recorder.close()
    left, right = read_wav(tmp_path / "mic-only.wav")
    assert np.array_equal(left, np.concatenate(blocks))
    assert not right.any()


async def test_the_header_is_valid_while_the_recording_is_written(tmp_path: Path) -> None:
    tap = PlaybackTap(RATE)
    path = tmp_path / "live.wav"
    recorder = SessionRecorder(path, reference=tap, flush_interval_s=0.05, hold_s=0.1)
    await recorder.start()
    with wave.open(str(path), "rb") as wav:  # before any audio: a valid, empty WAV
        assert wav.getnframes() == 0 and wav.getnchannels() == 2
    tap.append(tone(RATE))  # one second played
    assert await asyncio.to_thread(recorder.wait_written, RATE - 2400, scaled(10))
    _, right = read_wav(path)  # while the writer runs: parsed whole by `wave`
    assert right.shape[0] == recorder.snapshot().frames_written
    assert np.array_equal(right, tone(RATE)[: right.shape[0]])
    assert path.stat().st_size == 44 + right.shape[0] * 4
    tap.append(tone(RATE))
    await recorder.close()
    _, right = read_wav(path)
    assert right.shape[0] == 2 * RATE
    assert recorder.snapshot().flushes >= 2


class StalledTap(PlaybackTap):
    """A tap whose reads hang until released: the writer thread is stuck on it."""

    def __init__(self) -> None:
        super().__init__(RATE)
        self.reading = threading.Event()
        self.release = threading.Event()

    def read_since(self, position: int) -> Any:
        self.reading.set()
        self.release.wait(10)
        return super().read_since(position)


async def test_a_full_queue_drops_blocks_and_counts_them(tmp_path: Path) -> None:
    tap = StalledTap()
    path = tmp_path / "drops.wav"
    recorder = SessionRecorder(path, reference=tap, queue_blocks=2)
    await recorder.start()
    await asyncio.to_thread(tap.reading.wait, 10)  # the writer is stuck: nothing is taken
    blocks = [np.full(BLOCK, 1000 * (k + 1), np.int16).tobytes() for k in range(5)]
    for block in blocks:
        recorder.mic(block)  # never blocks the loop
    stats = recorder.snapshot()
    assert (stats.mic_blocks, stats.mic_blocks_dropped) == (2, 3)
    tap.release.set()
    await recorder.close()
    left, _ = read_wav(path)
    assert np.array_equal(left, np.frombuffer(b"".join(blocks[:2]), np.int16))


async def test_blocks_later_than_the_written_part_are_counted_not_misplaced(
    tmp_path: Path,
) -> None:
    tap = PlaybackTap(RATE)
    mic = Mic()
    path = tmp_path / "late.wav"
    recorder = SessionRecorder(
        path, reference=tap, microphone=mic, flush_interval_s=0.05, hold_s=0.0
    )
    await recorder.start()
    tap.append(np.zeros(RATE, np.int16))
    assert await asyncio.to_thread(recorder.wait_written, RATE, scaled(10))
    mic.capture_end_position = BLOCK  # captured at the very start: its place is written
    recorder.mic(np.full(BLOCK, 5000, np.int16).tobytes())
    mic.capture_end_position = RATE + BLOCK  # on time
    recorder.mic(np.full(BLOCK, 7000, np.int16).tobytes())
    tap.append(np.zeros(BLOCK, np.int16))
    await recorder.close()
    left, _ = read_wav(path)
    assert recorder.snapshot().mic_samples_late == BLOCK
    assert not left[:RATE].any()
    assert np.all(left[RATE : RATE + BLOCK] == 7000)


async def test_the_file_is_created_private(tmp_path: Path) -> None:
    old = os.umask(0)  # a permissive umask: the mode must come from the recorder
    try:
        recorder = SessionRecorder(tmp_path / "private.wav")
        await recorder.start()
        await recorder.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private.wav").stat().st_mode) == 0o600


async def test_a_symlink_at_the_path_is_refused_and_a_plain_file_is_overwritten(
    tmp_path: Path,
) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    link = tmp_path / "session.wav"
    link.symlink_to(target)
    with pytest.raises(RecordingError, match="symbolic link"):
        await SessionRecorder(link).start()
    assert target.read_text() == "keep me"

    plain = tmp_path / "old.wav"
    plain.write_bytes(b"x" * 1000)
    recorder = SessionRecorder(plain)
    await recorder.start()
    recorder.mic(np.full(BLOCK, 9, np.int16).tobytes())
    await recorder.close()
    left, _ = read_wav(plain)
    assert np.all(left == 9) and plain.stat().st_size == 44 + BLOCK * 4


async def test_a_fifo_or_folder_at_the_path_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(RecordingError, match="pipe"):
        await SessionRecorder(fifo).start()
    with pytest.raises(RecordingError, match="folder"):
        await SessionRecorder(tmp_path).start()


def test_wav_header_sizes() -> None:
    header = wav_header(4000)
    assert len(header) == 44
    assert int.from_bytes(header[4:8], "little") == 36 + 4000
    assert int.from_bytes(header[40:44], "little") == 4000


async def test_for_devices_takes_the_tap_and_both_latencies(tmp_path: Path) -> None:
    class Out:
        tap = PlaybackTap(RATE)
        output_latency_s = 0.04

    class In:
        input_latency_s = 0.02
        capture_end_position = None

    recorder = SessionRecorder.for_devices(tmp_path / "d.wav", In(), Out())
    assert recorder.reference is Out.tap
    assert recorder.played_delay_frames == round(0.06 * RATE)
    assert SessionRecorder.for_devices(tmp_path / "e.wav", None, None).reference is None


def test_record_flag_and_setting_name_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from realtime_voicebot import app as app_module
    from realtime_voicebot.cli import app

    seen: list[Any] = []

    class StubBot:
        def __init__(self, settings: Any, options: Any, view: Any) -> None:
            seen.append(settings.record_path)

        async def run(self) -> int:
            return 0

    monkeypatch.setattr(app_module, "VoiceBot", StubBot)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    for name in [n for n in os.environ if n.startswith("VOICEBOT_")]:
        monkeypatch.delenv(name)
    runner = CliRunner()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    base = ["run", "--text"]
    for args in (["--record", "a.wav"], ["--record-path", "b.wav"], []):
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == 0, result.output
    assert seen == [Path("a.wav"), Path("b.wav"), None]


async def test_the_app_records_what_was_sent_and_what_was_played(tmp_path: Path) -> None:
    """`voicebot run --record` in the app: the spoken turn on the left, the reply on the right,
    the file private, its figures in the session summary; without --record, no file."""
    from realtime_voicebot.app import RunOptions
    from realtime_voicebot.audio.output import WavFilePlayer
    from realtime_voicebot.fake.scenario import Scenario
    from realtime_voicebot.fake.server import FakeRealtimeServer
    from realtime_voicebot.testing import PushInput

    from .app_harness import fake_config, settings_for, spoken_turn, start_bot

    scenario = Scenario(user_transcripts=["Hello there."], replies=["Hi, how can I help?"])
    for record in (True, False):
        path = tmp_path / f"session-{record}.wav"
        async with FakeRealtimeServer(fake_config(speed=1.0, scenario=scenario)) as server:
            overrides: dict[str, Any] = {"record_path": path} if record else {}
            settings = settings_for(server, tmp_path, **overrides)
            mic, player = PushInput(), WavFilePlayer(tmp_path / f"out-{record}.wav", pace=1.0)
            running = start_bot(server, settings, RunOptions(), audio_in=mic, audio_out=player)
            await running.session(1)
            await spoken_turn(running, mic, player, 0, seconds=0.6)
            assert await running.stop() == 0
        if not record:
            assert not path.exists() and "recording" not in running.bot.snapshot()
            continue
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        left, right = read_wav(path)
        assert np.count_nonzero(np.abs(left.astype(np.int32)) > 1000) > RATE // 4  # speech
        assert np.count_nonzero(np.abs(right.astype(np.int32)) > 1000) > RATE // 4  # the reply
        assert any(n.startswith("recording to ") for n in running.view.notices)
        parts = running.bot.summary()["parts"]["recording"]
        assert parts["frames_written"] == left.shape[0] and parts["mic_blocks_dropped"] == 0
