"""The real app on real PortAudio devices: the PulseAudio virtual rig, end to end.

The bot runs as `voicebot run` builds it (`audio.build.build_audio`) against the fake server:
speaker on the default sink `vspk`, microphone on the default source `vmic.monitor`. Both are
on ALSA, so by default one callback serves them (`DuplexAudio`, output-driven); the barge-in
test also runs with two streams (`audio_streams=separate`: `SoundDevicePlayer`,
`MicrophoneInput`).
The test speaks by playing into `vmic` and listens on `vspk.monitor`, like a person at the
machine. Skipped when the rig is not up (`bash scripts/audio-rig.sh start`).

Tolerance of `audio_end_ms` (test 3): the monitor hears every sample handed to the device,
including the ones still in the device buffer when the flush happens, plus the flush's 5 ms
fade; `audio_end_ms` subtracts the output latency PortAudio reports (about 40 ms on the rig).
So the monitor's length of the interrupted item is `audio_end_ms + latency`, give or take one
20 ms block (a device callback may run between reading the position and flushing) plus the
fade. That is what is asserted, with the figures in the message.
"""

from __future__ import annotations

import asyncio
import importlib.util
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.duplex import DuplexMicrophone, DuplexPlayer
from realtime_voicebot.audio.input import MicrophoneInput
from realtime_voicebot.audio.output import AudioPlayer, SoundDevicePlayer
from realtime_voicebot.audio.recording import SessionRecorder
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.fake.vad import level_dbfs, threshold_dbfs
from realtime_voicebot.testing import scaled

from .app_harness import Running, settings_for, start_bot
from .rig import RATE, MonitorRecorder, echo_path, rig_problem, speak_into_mic

pytestmark = [pytest.mark.audio]

BLOCK_MS = 20.0
QUESTION = "what is the weather like today"
LONG_REPLY = "It is sunny with a light breeze, and it stays that way all afternoon. " * 2
SPEED = 1.25  # just faster than real time: the reply streams while it plays, no underruns


@pytest.fixture(scope="module")
def rig() -> None:
    problem = rig_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture
async def speaker_monitor(rig: None) -> AsyncIterator[MonitorRecorder]:
    recorder = MonitorRecorder("vspk.monitor").start()
    try:
        await asyncio.to_thread(recorder.wait_samples, RATE // 10, scaled(10))
        yield recorder
    finally:
        recorder.stop()


async def devices_running(
    running: Running, streams: str = "duplex"
) -> tuple[AudioPlayer, MicrophoneInput]:
    """Wait until the bot's devices exist and their callbacks run steadily.

    PortAudio on the rig delivers a few callbacks at once after a stream opens, then pauses;
    speaking before that would be heard late. `streams` is the kind build_audio should open.
    Every microphone block the bot reads reaches the fake server, whose event wakes the wait:
    the condition is checked on each block.
    """
    bot = running.bot
    await running.until(lambda: bot.audio_in is not None and bot.audio_out is not None, 10)
    player, mic = bot.audio_out, bot.audio_in
    if streams == "duplex":
        assert isinstance(player, DuplexPlayer), "build_audio should open one duplex stream"
        assert isinstance(mic, DuplexMicrophone)
        assert player.stream_mode in ("full-duplex", "output-driven"), player.stream_mode
    else:
        assert type(player) is SoundDevicePlayer, "build_audio should open the real speaker"
        assert type(mic) is MicrophoneInput, "build_audio should open the real microphone"
    await running.until(
        lambda: mic.blocks_read >= 25 and player.tap.total_samples >= player.sample_rate, 10
    )
    return player, mic


def utterance(seconds: float, seed: int) -> np.ndarray[Any, Any]:
    return np.concatenate([speech_like(seconds, seed=seed), silence(0.2)])


def count(session: FakeSession, kind: str, *, sent: bool) -> int:
    return (session.sent_types() if sent else session.received_types()).count(kind)


@pytest.mark.parametrize("streams", ["duplex", "separate"])
async def test_spoken_turn_reply_heard_and_barge_in_truncates_at_what_was_heard(
    tmp_path: Path, speaker_monitor: MonitorRecorder, streams: str
) -> None:
    monitor = speaker_monitor
    mic_monitor = MonitorRecorder("vmic.monitor").start()
    recording = tmp_path / "session.wav"
    config = FakeServerConfig(
        speed=SPEED,
        scenario=Scenario(user_transcripts=[QUESTION, "wait, stop"], replies=[LONG_REPLY]),
    )
    async with FakeRealtimeServer(config) as server:
        # Headphones: no echo path on this test, so no echo handling either.
        settings = settings_for(
            server, tmp_path, echo="off", audio_streams=streams, record_path=recording
        )
        running = start_bot(server, settings, RunOptions())
        session = await running.session(1)
        player, _ = await devices_running(running, streams)
        since = monitor.position
        mic_since = mic_monitor.position

        # 1. Speech played into the microphone becomes a user turn on the server.
        speak_into_mic(utterance(0.9, seed=1))
        await running.wait_for(lambda: any(i.role == "user" for i in session.items))
        user = [i for i in session.items if i.role == "user"]
        assert [i.text for i in user] == [QUESTION]
        assert user[0].audio_ms >= 900

        # 2. The reply is heard on the speaker.
        onset = await asyncio.to_thread(monitor.wait_onset, since, scaled(10))
        await asyncio.to_thread(monitor.wait_samples, onset + RATE, scaled(10))
        heard = monitor.samples[onset : onset + RATE]
        assert level_dbfs(heard) > -35, "the reply should be clearly audible on vspk.monitor"
        reply = next(i for i in session.items if i.role == "assistant")
        assert player.first_sample_at(reply.id) is not None

        # 3. Talking over it stops playback; the truncate says how much was heard.
        await asyncio.to_thread(monitor.wait_samples, onset + round(1.5 * RATE), scaled(10))
        speak_into_mic(utterance(0.6, seed=2))
        await running.wait_for(lambda: count(session, "conversation.item.truncate", sent=False))
        burst = await asyncio.to_thread(monitor.wait_quiet, since, 300, scaled(10))
        latency_ms = player.output_latency_s * 1000
        recorder = running.bot.audio.recorder
        assert recorder is not None
        assert await running.stop() == 0
    mic_monitor.stop()

    truncate = next(e for e in session.received if e["type"] == "conversation.item.truncate")
    assert truncate["item_id"] == reply.id
    audio_end_ms = truncate["audio_end_ms"]
    reply_ms = len(LONG_REPLY) * config.ms_per_char
    assert 1000 < audio_end_ms < reply_ms - 1000, "cut in the middle of the reply"
    assert burst.start == onset
    # What the monitor recorded of the item = audio_end_ms + the compensated latency,
    # within one block and the fade (see the module doc).
    fade_ms = player.fade_samples * 1000 / player.sample_rate
    error_ms = burst.ms - (audio_end_ms + latency_ms)
    assert abs(error_ms) <= BLOCK_MS + fade_ms, (
        f"monitor {burst.ms:.1f} ms, audio_end_ms {audio_end_ms}, latency {latency_ms:.1f} ms"
    )
    server_reply = next(i for i in session.items if i.id == reply.id)
    assert server_reply.audio_ms == audio_end_ms
    assert running.bot.metrics.timings["barge_in_to_silence"]
    check_recording_of_the_barge_in(recording, recorder, monitor, since, mic_monitor, mic_since)


def wav_bursts(samples: np.ndarray[Any, Any], level: int = 64) -> list[tuple[int, int]]:
    """(start, end) of the stretches of sound, split at 200 ms of quiet (as `bursts`)."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > level)
    if loud.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(loud) > RATE // 5)
    starts = np.concatenate([[loud[0]], loud[breaks + 1]])
    ends = np.concatenate([loud[breaks], [loud[-1]]]) + 1
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def check_recording_of_the_barge_in(
    path: Path,
    recorder: SessionRecorder,
    speaker: MonitorRecorder,
    speaker_since: int,
    mic: MonitorRecorder,
    mic_since: int,
) -> None:
    """The session recording shows the barge-in, and lines up with what the devices heard.

    Right: the reply, stopping once the server's VAD has heard `min_speech_ms` of the user's
    speech and the speaker has played out what it held (a server VAD cannot stop it sooner).
    Both channels' sounds start where the virtual devices' monitors heard them, mapped through
    the recording's clock (`started_at` is the monotonic time of its first frame).
    """
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, RATE)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), np.int16).reshape(-1, 2)
    stats = recorder.snapshot()
    assert stats.error is None and stats.mic_blocks_dropped == 0 and stats.started_at is not None
    left, right = wav_bursts(stereo[:, 0]), wav_bursts(stereo[:, 1])
    assert len(left) == 2 and right, (left, right)  # the question and the barge-in
    (reply_start, reply_end), (barge_start, _) = right[0], left[1]
    assert reply_start < barge_start < reply_end
    stop_ms = (reply_end - barge_start) * 1000 / RATE
    # Detection (30 ms of speech, in 40 ms blocks), the device's buffer, a block and the fade.
    budget_ms = 30 + 2 * 40 + recorder.played_delay_frames * 1000 / RATE + BLOCK_MS + 5
    assert 0 < stop_ms <= budget_ms, f"right channel stopped {stop_ms:.0f} ms after the speech"

    def file_time(frame: int) -> float:
        assert stats.started_at is not None
        return stats.started_at + frame / RATE

    heard_reply = speaker.bursts(speaker_since)[0].start
    heard_barge = mic.bursts(mic_since)[1].start
    right_off_ms = (file_time(reply_start) - speaker.time_of(heard_reply)) * 1000
    left_off_ms = (file_time(barge_start) - mic.time_of(heard_barge)) * 1000
    figures = (
        f"recording: delay {recorder.played_delay_frames * 1000 / RATE:.0f} ms, "
        f"right stops {stop_ms:.0f} ms after the barge-in speech begins; "
        f"offsets from the monitors: right {right_off_ms:.0f} ms, left {left_off_ms:.0f} ms"
    )
    # The file's clock is the microphone's capture clock: both channels sit the input latency
    # after the room, and the same amount, so they line up with each other within a block.
    input_latency_ms = float(getattr(recorder.microphone, "input_latency_s", 0.0)) * 1000
    assert abs(right_off_ms - left_off_ms) <= BLOCK_MS, figures
    assert abs(left_off_ms - input_latency_ms) <= 2 * BLOCK_MS, (input_latency_ms, figures)


needs_aec = pytest.mark.skipif(
    importlib.util.find_spec("livekit") is None, reason="aec needs the [aec] extra (livekit)"
)
ECHO_VOLUME_PERCENT = 50
ECHO_TAIL_S = 0.5
"""Microphone audio after a reply's end still to be judged: output latency, the loopback and
the server VAD's prefix, with room to spare."""
VAD_THRESHOLD = 0.4  # -46 dBFS; the echo peaks about 10 dB above it on the rig


@pytest.mark.parametrize(
    "echo", ["gate", pytest.param("aec", marks=needs_aec), "off"], ids=lambda m: f"echo-{m}"
)
async def test_echo_of_the_reply_does_not_interrupt_it(
    tmp_path: Path, rig: None, echo: str
) -> None:
    reply_text = "Here is a short answer that plays for a couple of seconds."
    config = FakeServerConfig(
        speed=SPEED, scenario=Scenario(user_transcripts=[QUESTION], replies=[reply_text])
    )
    mic_monitor = MonitorRecorder("vmic.monitor").start()
    try:
        async with FakeRealtimeServer(config) as server:
            # false_interruption off: the control shows the echo cutting the reply outright.
            settings = settings_for(
                server,
                tmp_path,
                echo=echo,
                vad_threshold=VAD_THRESHOLD,
                false_interruption="off",
            )
            with echo_path(ECHO_VOLUME_PERCENT):
                running = start_bot(server, settings, RunOptions())
                session = await running.session(1)
                player, _ = await devices_running(running)
                speak_into_mic(utterance(0.8, seed=1))
                await running.wait_for(lambda: any(i.role == "assistant" for i in session.items))
                reply = next(i for i in session.items if i.role == "assistant")
                await asyncio.wait_for(player.wait_played(reply.id, BLOCK_MS), scaled(10))
                started = player.first_sample_at(reply.id)
                assert started is not None
                if echo == "off":
                    # Control: without echo handling the reply's own echo barges in.
                    await running.wait_for(
                        lambda: count(session, "conversation.item.truncate", sent=False)
                    )
                else:
                    assert await asyncio.wait_for(player.wait_finished(reply.id), scaled(15))
                    # Whatever the reply's echo made the server's VAD say has been said once
                    # the server has judged the microphone audio until well after its end.
                    heard_until = session.input_samples + round(ECHO_TAIL_S * RATE)
                    await running.wait_for(lambda: session.input_samples >= heard_until)
                echo_heard = mic_monitor.samples[mic_monitor.sample_at(started) :]
                assert await running.stop() == 0
    finally:
        mic_monitor.stop()

    speech_starts = count(session, "input_audio_buffer.speech_started", sent=True)
    if echo == "off":
        # The control's proof that the echo path is real: the server's VAD heard the
        # reply's echo as speech (the level check below needs the whole reply, which
        # the control cuts short within a few blocks).
        assert speech_starts >= 2
        return
    # The echo path is real: the reply came back into the microphone loud enough for VAD.
    frames = [level_dbfs(echo_heard[i : i + 240]) for i in range(0, echo_heard.size - 240, 240)]
    assert max(frames) > threshold_dbfs(VAD_THRESHOLD) + 3
    assert speech_starts == 1, "only the user's own utterance"
    assert count(session, "conversation.item.truncate", sent=False) == 0
    assert count(session, "response.cancel", sent=False) == 0
    assert next(i for i in session.items if i.id == reply.id).text == reply_text
    assert running.bot.core.turns.stats.barge_ins == 0
