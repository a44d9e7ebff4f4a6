"""Talking over a reply, end to end against the fake server: a cough or an "mm-hm" pauses the
reply and it resumes from the paused sample, with no reply to the noise and nothing of it in
the transcript; a real interruption truncates at the paused position and is answered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.output import WavFilePlayer
from realtime_voicebot.core import actions as a
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.testing import PushInput, Running

from .app_harness import fake_config, settings_for, start_bot
from .spec import validate_client

STORY = "Once upon a time a fox lived by the river and sang every night."
BLOCK_MS = 20


def turn_records(path: Path) -> list[tuple[str, str]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["role"], r["text"]) for r in records if r["type"] == "turn"]


async def story_playing(running: Running, mic: PushInput, player: WavFilePlayer) -> str:
    """The user asks for a story; once 600 ms of it have played, the story's item id."""
    mic.say(0.8, seed=1, pause_s=0.8)
    await running.until(lambda: player.playing_item_id is not None)
    story_id = player.playing_item_id
    assert story_id is not None
    await running.until(lambda: player.played_ms(story_id) >= 600)
    return story_id


def received(session: FakeSession, kind: str) -> list[dict[str, object]]:
    return [e for e in session.received if e.get("type") == kind]


@pytest.mark.parametrize(
    ("seconds", "heard", "reason"),
    [(0.15, "*cough*", "short"), (0.45, "mm-hm", "backchannel")],
    ids=["cough", "mm-hm"],
)
async def test_noise_over_a_reply_pauses_it_and_it_resumes(
    tmp_path: Path, seconds: float, heard: str, reason: str
) -> None:
    scenario = Scenario(
        user_transcripts=["tell me a story", heard, "thanks"],
        replies=[STORY, "You are welcome."],
    )
    async with FakeRealtimeServer(fake_config(speed=1.0, scenario=scenario)) as server:
        settings = settings_for(server, tmp_path, false_interruption="resume")
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", pace=1.0)
        running = start_bot(server, settings, RunOptions(), audio_in=mic, audio_out=player)
        ignored: list[str] = []
        running.bot.subscribe(
            lambda x: ignored.append(x.reason) if isinstance(x, a.InterruptionIgnored) else None
        )
        session = await running.session(1)
        story_id = await story_playing(running, mic, player)
        mic.say(seconds, seed=5, pause_s=1.0)  # over the story
        await running.until(lambda: running.bot.core.turns.stats.false_interruptions == 1, 10)
        assert player.pauses == 1
        assert await player.wait_finished(story_id)  # resumed and played to its end
        # The noise's item is deleted on the server; it got no reply of its own.
        await running.wait_for(lambda: "conversation.item.deleted" in session.sent_types())
        mic.say(0.8, seed=6, pause_s=0.8)  # the conversation goes on
        await running.until(lambda: len(running.view.assistant) == 2, 15)
        assert await running.stop() == 0

    assert ignored == [reason]
    story = next(i for i in session.items if i.id == story_id)
    assert abs(player.played_ms(story_id) - story.audio_ms) <= BLOCK_MS  # all of it heard
    assert received(session, "conversation.item.truncate") == []
    assert len(received(session, "response.create")) == 2  # the story and "thanks"
    assert [text for _, text, _ in running.view.assistant] == [STORY, "You are welcome."]
    assert heard not in running.view.user
    turns = turn_records(tmp_path / "transcript.jsonl")
    assert turns == [
        ("user", "tell me a story"),
        ("assistant", STORY),
        ("user", "thanks"),
        ("assistant", "You are welcome."),
    ]
    assert all(i.text != heard for i in session.items)
    for event in session.received:
        if event.get("type") != "input_audio_buffer.append":
            validate_client(event, session.dialect)


async def test_a_real_interruption_truncates_at_the_paused_position(tmp_path: Path) -> None:
    scenario = Scenario(
        user_transcripts=["tell me a story", "wait, what about the fox's name?"],
        replies=[STORY, "The fox was called Ada."],
    )
    async with FakeRealtimeServer(fake_config(speed=1.0, scenario=scenario)) as server:
        settings = settings_for(server, tmp_path, false_interruption="resume")
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", pace=1.0)
        running = start_bot(server, settings, RunOptions(), audio_in=mic, audio_out=player)
        session = await running.session(1)
        story_id = await story_playing(running, mic, player)
        mic.say(1.0, seed=7, pause_s=0.8)
        await running.until(lambda: player.pauses == 1)
        paused_at = player.played_ms(story_id)
        await running.wait_for(lambda: bool(received(session, "conversation.item.truncate")))
        await running.until(lambda: len(running.view.assistant) == 2, 15)
        assert await running.stop() == 0

    [truncate] = received(session, "conversation.item.truncate")
    assert truncate["item_id"] == story_id
    assert abs(int(truncate["audio_end_ms"]) - paused_at) <= BLOCK_MS  # where it paused
    assert not player.is_finished(story_id)
    assert running.view.assistant[0][2] is True  # shown as interrupted
    assert running.view.assistant[1][1] == "The fox was called Ada."
    assert running.bot.core.turns.stats.false_interruptions == 0


async def test_push_to_talk_end_to_end(tmp_path: Path) -> None:
    scenario = Scenario(
        user_transcripts=["tell me a story", "stop, what time is it?"],
        replies=[STORY, "It is noon."],
    )
    async with FakeRealtimeServer(fake_config(speed=1.0, scenario=scenario)) as server:
        settings = settings_for(server, tmp_path, push_to_talk=True)
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", pace=1.0)
        running = start_bot(server, settings, RunOptions(), audio_in=mic, audio_out=player)
        session = await running.session(1)
        await running.wait_for(lambda: bool(session.received))
        assert session.received[0]["session"]["audio"]["input"]["turn_detection"] is None
        mic.say(0.5, seed=1)  # talking without the key: never sent
        await running.until(lambda: mic._queue.empty())
        running.bot.push_to_talk()  # key down
        mic.say(0.8, seed=2)
        await running.until(lambda: mic._queue.empty())
        await running.wait_for(lambda: len(received(session, "input_audio_buffer.append")) >= 30)
        running.bot.push_to_talk()  # key up: commit, then the reply
        await running.until(lambda: player.playing_item_id is not None)
        story_id = player.playing_item_id
        assert story_id is not None
        await running.until(lambda: player.played_ms(story_id) >= 600)
        running.bot.push_to_talk()  # talking over the story: it stops, truncated
        mic.say(0.8, seed=3)
        await running.until(lambda: mic._queue.empty())
        running.bot.push_to_talk()
        await running.until(lambda: len(running.view.assistant) == 2, 15)
        assert await running.stop() == 0

    kinds = [e["type"] for e in session.received if e["type"] != "session.update"]
    first_clear = kinds.index("input_audio_buffer.clear")
    assert "input_audio_buffer.append" not in kinds[:first_clear]  # nothing before the key
    appends = len(received(session, "input_audio_buffer.append"))
    assert appends <= (0.8 + 0.8) * 50 + 2  # only what was said with the key down
    assert kinds.count("input_audio_buffer.commit") == 2
    assert kinds.count("response.create") == 2
    [truncate] = received(session, "conversation.item.truncate")
    assert truncate["item_id"] == story_id
    assert [text for _, text, _ in running.view.assistant][1] == "It is noon."
    assert running.view.assistant[0][2] is True  # the story was cut
    assert not any(t.startswith("input_audio_buffer.speech") for t in session.sent_types())


@pytest.mark.parametrize("detection", ["server_vad", "semantic_vad"])
async def test_each_turn_detection_holds_a_spoken_conversation(
    tmp_path: Path, detection: str
) -> None:
    scenario = Scenario(user_transcripts=["hello there"], replies=["Hi!"])
    async with FakeRealtimeServer(fake_config(speed=20.0, scenario=scenario)) as server:
        settings = settings_for(
            server, tmp_path, turn_detection=detection, noise_reduction="far_field"
        )
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", pace=20.0)
        running = start_bot(server, settings, RunOptions(), audio_in=mic, audio_out=player)
        session = await running.session(1)
        mic.say(0.8, seed=1, pause_s=1.2)
        await running.until(lambda: len(running.view.assistant) == 1, 15)
        assert await running.stop() == 0
    update = session.received[0]["session"]
    assert update["audio"]["input"]["turn_detection"]["type"] == detection
    assert update["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
    validate_client(session.received[0], "ga")
    assert running.view.assistant[0][1] == "Hi!"


async def test_an_idle_timeout_prompt_is_shown_and_answered(tmp_path: Path) -> None:
    scenario = Scenario(user_transcripts=["hello there"], replies=["Hi!", "Are you still there?"])
    async with FakeRealtimeServer(fake_config(speed=20.0, scenario=scenario)) as server:
        settings = settings_for(server, tmp_path, idle_timeout_ms=1000)
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", pace=20.0)
        running = start_bot(server, settings, RunOptions(), audio_in=mic, audio_out=player)
        await running.session(1)
        mic.say(0.8, seed=1, pause_s=1.0)
        await running.until(lambda: len(running.view.assistant) == 1, 15)
        mic.pause(3.0)  # the microphone stays open, the user says nothing
        await running.until(lambda: len(running.view.assistant) == 2, 15)
        assert await running.stop() == 0
    assert any("silent" in notice for notice in running.view.notices)
    assert running.view.assistant[1][1] == "Are you still there?"


async def test_a_setting_the_beta_api_lacks_is_refused_at_start_up(tmp_path: Path) -> None:
    async with FakeRealtimeServer(fake_config()) as server:
        settings = settings_for(server, tmp_path, dialect="beta", idle_timeout_ms=5000)
        running = start_bot(server, settings, RunOptions(text=True))
        assert await running.finish() == 2
    assert len(running.view.errors) == 1 and "idle_timeout_ms" in running.view.errors[0]
    assert server.sessions == []  # refused before connecting
