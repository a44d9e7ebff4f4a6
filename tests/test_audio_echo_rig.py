"""Echo on the real devices of the PulseAudio rig, both sides, for the default mode and `gate`.

The echo path is a `module-loopback` from the speaker's monitor into the microphone at
-18 dB (laptop speakers). The app runs as `voicebot run` builds it (`VoiceBot` + `run()`)
against the fake server, whose VAD threshold is 0.4 (-46 dBFS): the reply's echo (-38 dBFS)
would be speech to it. One side: three seconds of the reply with its echo in the microphone
bring no `speech_started` and no truncate. The other: the user talking over the reply at a
normal level (-12 dB relative to the reply, 6 dB above its echo) is heard, and the reply is
truncated at the played position (as in test_audio_devices_e2e, within one block and the fade).
The `off` control (the echo path is real and interrupts) is in test_audio_devices_e2e.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.echo import echo_status
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.fake.synth import silence, speech_like

from .app_harness import settings_for, start_bot
from .rig import RATE, MonitorRecorder, echo_path, rig_problem, speak_into_mic
from .test_audio_devices_e2e import devices_running

pytestmark = [pytest.mark.audio]

BLOCK_MS = 20.0
REPLY_DBFS = -20.0  # the fake server's replies
COUPLING_DB = -18.0
USER_RE_REPLY_DB = -12.0
QUESTION = "tell me about the weather"
REPLY = "It is sunny with a light breeze, and it stays that way all afternoon. " * 2


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


def said(seconds: float, level_dbfs: float, seed: int) -> np.ndarray[Any, Any]:
    return np.concatenate([speech_like(seconds, seed=seed, level_dbfs=level_dbfs), silence(0.2)])


def sent(session: FakeSession, kind: str) -> int:
    return session.sent_types().count(kind)


def received(session: FakeSession, kind: str) -> int:
    return session.received_types().count(kind)


@pytest.mark.parametrize("echo", ["default", "gate"], ids=lambda m: f"echo-{m}")
async def test_echo_does_not_interrupt_and_the_user_is_heard_over_it(
    tmp_path: Path, speaker_monitor: MonitorRecorder, echo: str
) -> None:
    monitor = speaker_monitor
    config = FakeServerConfig(
        speed=1.25, scenario=Scenario(user_transcripts=[QUESTION, "wait"], replies=[REPLY] * 3)
    )
    overrides: dict[str, Any] = {"vad_threshold": 0.4}
    if echo != "default":
        overrides["echo"] = echo
    async with FakeRealtimeServer(config) as server:
        with echo_path(gain_db=COUPLING_DB):
            running = start_bot(server, settings_for(server, tmp_path, **overrides), RunOptions())
            session = await running.session(1)
            player, mic = await devices_running(running)
            status = echo_status(mic)
            assert status is not None
            assert status.startswith(
                "echo handling: aec" if echo == "default" else "echo handling: gate"
            )
            # `voicebot run` shows it once, as the view's notice.
            assert [n for n in running.view.notices if n.startswith("echo handling")] == [status]
            since = monitor.position
            speak_into_mic(said(0.8, REPLY_DBFS - 6, seed=1))
            await running.wait_for(lambda: any(i.role == "assistant" for i in session.items))
            reply = next(i for i in session.items if i.role == "assistant")
            onset = await asyncio.to_thread(monitor.wait_onset, since, 10)

            # 1. Three seconds of the reply, its echo in the microphone: nobody interrupts.
            await asyncio.to_thread(monitor.wait_samples, onset + 3 * RATE, 10)
            assert sent(session, "input_audio_buffer.speech_started") == 1, "the question only"
            assert received(session, "conversation.item.truncate") == 0
            assert running.bot.audio_out is player and player.playing_item_id == reply.id

            # 2. The user talks over it at a normal level: heard, and the reply truncated.
            speak_into_mic(said(1.0, REPLY_DBFS + USER_RE_REPLY_DB, seed=2))
            await running.wait_for(lambda: received(session, "conversation.item.truncate"), 10)
            burst = await asyncio.to_thread(monitor.wait_quiet, onset, 300, 10)
            latency_ms = player.output_latency_s * 1000
            assert await running.stop() == 0

    assert sent(session, "input_audio_buffer.speech_started") == 2
    truncate = next(e for e in session.received if e["type"] == "conversation.item.truncate")
    assert truncate["item_id"] == reply.id
    reply_ms = len(REPLY) * config.ms_per_char
    assert 3000 < truncate["audio_end_ms"] < reply_ms - 1000, "cut where the user came in"
    fade_ms = player.fade_samples * 1000 / player.sample_rate
    error_ms = burst.ms - (truncate["audio_end_ms"] + latency_ms)
    assert abs(error_ms) <= BLOCK_MS + fade_ms, (
        f"monitor {burst.ms:.1f} ms, audio_end_ms {truncate['audio_end_ms']}, "
        f"latency {latency_ms:.1f} ms"
    )
