"""Talking over a reply on the PulseAudio rig, through the real devices: a 150 ms noise burst
and a 300 ms "mm-hm" pause the reply and it resumes from the paused sample (no reply to the
noise, nothing of it in the transcript); a real 1 s interruption truncates at the paused
position, within one block. Both sides of the same filter, with the sound played into the
virtual microphone and the reply heard on the speaker's monitor.

Headphones (no echo path), so no echo handling: what is judged is the user's sound alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.core import actions as a
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.testing import scaled

from .app_harness import settings_for, start_bot
from .rig import RATE, MonitorRecorder, rig_problem, speak_into_mic
from .test_audio_devices_e2e import SPEED, count, devices_running, utterance

pytestmark = [pytest.mark.audio]

BLOCK_MS = 20.0
STORY = "Once upon a time a fox lived by the river and sang to the moon every night. " * 2


@pytest.fixture
async def speaker() -> AsyncIterator[MonitorRecorder]:
    problem = rig_problem()
    if problem:
        pytest.skip(problem)
    monitor = MonitorRecorder("vspk.monitor").start()
    try:
        await asyncio.to_thread(monitor.wait_samples, RATE // 10, scaled(10))
        yield monitor
    finally:
        monitor.stop()


def turns(path: Path) -> list[tuple[str, str]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["role"], r["text"].strip()) for r in records if r["type"] == "turn"]


@pytest.mark.parametrize(
    ("seconds", "heard", "reason"),
    [(0.15, "*cough*", "short"), (0.3, "mm-hm", "backchannel")],
    ids=["noise-150ms", "mm-hm-300ms"],
)
async def test_noise_over_a_reply_on_the_devices_pauses_it_and_it_resumes(
    tmp_path: Path, speaker: MonitorRecorder, seconds: float, heard: str, reason: str
) -> None:
    scenario = Scenario(user_transcripts=["tell me a story", heard], replies=[STORY])
    async with FakeRealtimeServer(FakeServerConfig(speed=SPEED, scenario=scenario)) as server:
        settings = settings_for(server, tmp_path, echo="off", false_interruption="resume")
        running = start_bot(server, settings, RunOptions())
        ignored: list[str] = []
        running.bot.subscribe(
            lambda x: ignored.append(x.reason) if isinstance(x, a.InterruptionIgnored) else None
        )
        session = await running.session(1)
        player, _ = await devices_running(running)
        speak_into_mic(utterance(0.8, seed=1))
        await running.until(lambda: player.playing_item_id is not None, 10)
        story_id = player.playing_item_id
        assert story_id is not None
        assert await asyncio.wait_for(player.wait_played(story_id, 1000), scaled(10))

        speak_into_mic(utterance(seconds, seed=5))  # over the story
        await running.until(lambda: player.pauses == 1, 10)
        paused_at = player.played_ms(story_id)
        await running.until(lambda: running.bot.core.turns.stats.false_interruptions == 1, 10)
        assert await asyncio.wait_for(player.wait_finished(story_id), scaled(20))
        since = speaker.sample_at(player.first_sample_at(story_id) or 0.0)
        await running.wait_for(lambda: "conversation.item.deleted" in session.sent_types())
        assert await running.stop() == 0

    assert ignored == [reason]
    story = next(i for i in session.items if i.id == story_id)
    # Resumed from the paused sample: every millisecond of the story was handed to the device
    # once, and the speaker's monitor heard it go on after the pause.
    assert abs(player.played_ms(story_id) - story.audio_ms) <= BLOCK_MS
    assert 1000 <= paused_at < story.audio_ms - 1000
    # Heard: the story in two parts around the pause, nothing skipped and nothing twice (the
    # sum misses the two 5 ms fades and the quietest edges of the synthetic speech).
    before, after, *rest = speaker.bursts(since, min_gap_ms=200)
    assert rest == [], rest
    assert (after.start - before.end) * 1000 / RATE >= 200  # the pause was heard as silence
    heard_ms = before.ms + after.ms
    assert abs(heard_ms - story.audio_ms) <= 4 * BLOCK_MS, (heard_ms, story.audio_ms)
    assert count(session, "conversation.item.truncate", sent=False) == 0
    assert count(session, "response.create", sent=False) == 1  # no reply to the noise
    assert turns(tmp_path / "transcript.jsonl") == [
        ("user", "tell me a story"),
        ("assistant", STORY.strip()),
    ]
    assert all(i.text != heard for i in session.items)


async def test_a_real_interruption_on_the_devices_truncates_where_it_paused(
    tmp_path: Path, speaker: MonitorRecorder
) -> None:
    scenario = Scenario(
        user_transcripts=["tell me a story", "wait, what was the fox called?"],
        replies=[STORY, "The fox was called Ada."],
    )
    async with FakeRealtimeServer(FakeServerConfig(speed=SPEED, scenario=scenario)) as server:
        settings = settings_for(server, tmp_path, echo="off", false_interruption="resume")
        running = start_bot(server, settings, RunOptions())
        session = await running.session(1)
        player, _ = await devices_running(running)
        speak_into_mic(utterance(0.8, seed=1))
        await running.until(lambda: player.playing_item_id is not None, 10)
        story_id = player.playing_item_id
        assert story_id is not None
        assert await asyncio.wait_for(player.wait_played(story_id, 1000), scaled(10))

        speak_into_mic(utterance(1.0, seed=7))
        await running.until(lambda: player.pauses == 1, 10)
        paused_at = player.played_ms(story_id)
        await running.wait_for(lambda: count(session, "conversation.item.truncate", sent=False))
        await running.until(lambda: len(running.view.assistant) == 2, 20)
        assert await running.stop() == 0

    truncate = next(e for e in session.received if e["type"] == "conversation.item.truncate")
    assert truncate["item_id"] == story_id
    assert abs(int(truncate["audio_end_ms"]) - paused_at) <= BLOCK_MS, (truncate, paused_at)
    assert not player.is_finished(story_id)
    assert running.view.assistant[1][1] == "The fox was called Ada."
    assert running.bot.core.turns.stats.false_interruptions == 0
