"""The real app on real PortAudio devices: the PulseAudio virtual rig, end to end.

The bot runs as `voicebot run` builds it (`audio.build.build_audio`: `SoundDevicePlayer` on
the default sink `vspk`, `MicrophoneInput` on the default source `vmic.monitor`) against the
fake server.
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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.input import MicrophoneInput
from realtime_voicebot.audio.output import SoundDevicePlayer
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.fake.vad import level_dbfs, threshold_dbfs

from .app_harness import Running, settings_for, start_bot
from .rig import RATE, MonitorRecorder, echo_path, rig_problem, speak_into_mic
from .waiting import eventually

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
        await asyncio.to_thread(recorder.wait_samples, RATE // 10, 10)
        yield recorder
    finally:
        recorder.stop()


async def devices_running(running: Running) -> tuple[SoundDevicePlayer, MicrophoneInput]:
    """Wait until the bot's devices exist and their callbacks run steadily.

    PortAudio on the rig delivers a few callbacks at once after a stream opens, then pauses;
    speaking before that would be heard late.
    """
    bot = running.bot
    await eventually(lambda: bot.audio_in is not None and bot.audio_out is not None, 10)
    player, mic = bot.audio_out, bot.audio_in
    assert isinstance(player, SoundDevicePlayer), "build_audio should open the real speaker"
    assert isinstance(mic, MicrophoneInput), "build_audio should open the real microphone"
    await eventually(
        lambda: mic.blocks_read >= 25 and player.tap.total_samples >= player.sample_rate,
        timeout_s=10,
    )
    return player, mic


def utterance(seconds: float, seed: int) -> np.ndarray[Any, Any]:
    return np.concatenate([speech_like(seconds, seed=seed), silence(0.2)])


def count(session: FakeSession, kind: str, *, sent: bool) -> int:
    return (session.sent_types() if sent else session.received_types()).count(kind)


async def test_spoken_turn_reply_heard_and_barge_in_truncates_at_what_was_heard(
    tmp_path: Path, speaker_monitor: MonitorRecorder
) -> None:
    monitor = speaker_monitor
    config = FakeServerConfig(
        speed=SPEED,
        scenario=Scenario(user_transcripts=[QUESTION, "wait, stop"], replies=[LONG_REPLY]),
    )
    async with FakeRealtimeServer(config) as server:
        # Headphones: no echo path on this test, so no echo handling either.
        running = start_bot(server, settings_for(server, tmp_path, echo="off"), RunOptions())
        session = await running.session(1)
        player, _ = await devices_running(running)
        since = monitor.position

        # 1. Speech played into the microphone becomes a user turn on the server.
        speak_into_mic(utterance(0.9, seed=1))
        await running.wait_for(lambda: any(i.role == "user" for i in session.items))
        user = [i for i in session.items if i.role == "user"]
        assert [i.text for i in user] == [QUESTION]
        assert user[0].audio_ms >= 900

        # 2. The reply is heard on the speaker.
        onset = await asyncio.to_thread(monitor.wait_onset, since, 10)
        await asyncio.to_thread(monitor.wait_samples, onset + RATE, 10)
        heard = monitor.samples[onset : onset + RATE]
        assert level_dbfs(heard) > -35, "the reply should be clearly audible on vspk.monitor"
        reply = next(i for i in session.items if i.role == "assistant")
        assert player.first_sample_at(reply.id) is not None

        # 3. Talking over it stops playback; the truncate says how much was heard.
        await asyncio.to_thread(monitor.wait_samples, onset + round(1.5 * RATE), 10)
        speak_into_mic(utterance(0.6, seed=2))
        await running.wait_for(lambda: count(session, "conversation.item.truncate", sent=False))
        burst = await asyncio.to_thread(monitor.wait_quiet, since, 300, 10)
        latency_ms = player.output_latency_s * 1000
        assert await running.stop() == 0

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


needs_aec = pytest.mark.skipif(
    importlib.util.find_spec("livekit") is None, reason="aec needs the [aec] extra (livekit)"
)
ECHO_VOLUME_PERCENT = 50
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
            settings = settings_for(server, tmp_path, echo=echo, vad_threshold=VAD_THRESHOLD)
            with echo_path(ECHO_VOLUME_PERCENT):
                running = start_bot(server, settings, RunOptions())
                session = await running.session(1)
                player, _ = await devices_running(running)
                speak_into_mic(utterance(0.8, seed=1))
                await running.wait_for(lambda: any(i.role == "assistant" for i in session.items))
                reply = next(i for i in session.items if i.role == "assistant")
                await eventually(lambda: player.first_sample_at(reply.id) is not None, 10)
                started = player.first_sample_at(reply.id)
                assert started is not None
                if echo == "off":
                    # Control: without echo handling the reply's own echo barges in.
                    await running.wait_for(
                        lambda: count(session, "conversation.item.truncate", sent=False)
                    )
                else:
                    assert await asyncio.wait_for(player.wait_finished(reply.id), 15)
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
    assert "barge_ins" not in running.bot.metrics.counters
