"""`voicebot run` end to end: the real app, client and fake server over a loopback socket."""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path
from typing import Any

import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.fake.config import Faults
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.testing import PushInput
from realtime_voicebot.transport.events import PCM_RATE

from .app_harness import fake_config, settings_for, start_bot, write_wav
from .spec import validate_client

QUESTIONS = ["what is the capital of France", "and of Spain", "thank you"]


def user_texts(session: FakeSession) -> list[str]:
    return [i.text for i in session.items if i.role == "user"]


def assistant_items(session: FakeSession) -> list[Any]:
    return [i for i in session.items if i.role == "assistant"]


def validate_sent(session: FakeSession) -> None:
    """Every client event the app sent validates against the SDK (audio was replaced by size)."""
    for event in session.received:
        if event.get("type") != "input_audio_buffer.append":
            validate_client(event, session.dialect)


def transcript_turns(path: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["type"] == "turn"]


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_wav_conversation_produces_turns_and_audio(tmp_path: Path, dialect: str) -> None:
    wav_in = write_wav(
        tmp_path / "in.wav",
        [
            part
            for seed in range(len(QUESTIONS))
            for part in (silence(0.3), speech_like(1.0, seed=seed), silence(3.0))
        ],
    )
    config = fake_config(scenario=Scenario(user_transcripts=list(QUESTIONS)))
    async with FakeRealtimeServer(config) as server:
        settings = settings_for(server, tmp_path, dialect=dialect)
        options = RunOptions(
            input_file=wav_in,
            output_file=tmp_path / "out.wav",
            exit_when_input_ends=True,
            input_pace=8.0,
            output_pace=8.0,
        )
        running = start_bot(server, settings, options)
        assert await running.finish(30) == 0
        session = server.sessions[0]

    assert session.dialect == dialect
    assert user_texts(session) == QUESTIONS
    replies = assistant_items(session)
    assert [r.text for r in replies] == [f"You said: {q}" for q in QUESTIONS]
    validate_sent(session)
    assert running.view.user == QUESTIONS
    assert [text for _, text, _ in running.view.assistant] == [r.text for r in replies]
    # The output file holds every reply as it played: all of it, nothing interrupted.
    with wave.open(str(tmp_path / "out.wav")) as wav:
        played_ms = wav.getnframes() / wav.getframerate() * 1000
    expected_ms = sum(r.audio_ms for r in replies)
    assert abs(played_ms - expected_ms) <= 40, (played_ms, expected_ms)
    turns = transcript_turns(tmp_path / "transcript.jsonl")
    assert [t["role"] for t in turns] == ["user", "assistant"] * 3


async def test_drop_mid_utterance_resends_the_audio_in_flight(tmp_path: Path) -> None:
    config = fake_config(scenario=Scenario(user_transcripts=["first", "spoken across a blip"]))
    async with FakeRealtimeServer(config) as server:
        mic = PushInput()
        running = start_bot(server, settings_for(server, tmp_path), RunOptions(), audio_in=mic)
        first = await running.session(1)
        mic.say(1.0, seed=1)
        mic.pause(1.0)
        await running.wait_for(
            lambda: len(assistant_items(first)) == 1 and not first.active_response
        )
        # The user starts talking; the connection dies once the server has heard the start.
        mic.say(0.6, seed=2)
        await running.wait_for(
            lambda: first.sent_types().count("input_audio_buffer.speech_started") == 2
        )
        await server.drop_connection()
        mic.say(0.6, seed=3)
        mic.pause(1.0)
        second = await running.session(2)
        await running.wait_for(lambda: len(assistant_items(second)) == 1, timeout_s=15)
        assert await running.stop() == 0

    # The new session was configured, then re-seeded with the first turn, before any audio.
    kinds = second.received_types()
    assert kinds[0] == "session.update"
    assert kinds[1] == "conversation.item.create"
    seed = second.received[1]
    assert seed["previous_item_id"] == "root"
    assert seed["item"]["role"] == "system"
    assert "first" in seed["item"]["content"][0]["text"]
    # The whole utterance reached the new session: the start sent before the drop as well.
    utterance = [i for i in second.items if i.role == "user"]
    assert [i.text for i in utterance] == ["spoken across a blip"]
    assert utterance[0].audio_ms >= 1100
    assert running.bot.client is not None
    assert running.bot.client.audio.replayed_blocks > 0
    assert running.bot.summary()["reconnects"] == 1
    validate_sent(second)


async def test_drop_mid_reply_reconnects_and_conversation_goes_on(tmp_path: Path) -> None:
    long_reply = "This is a long answer that keeps talking for quite a while. " * 4
    config = fake_config(
        speed=1.0,
        scenario=Scenario(
            user_transcripts=["tell me a story", "again"], replies=[long_reply, "Sure."]
        ),
    )
    async with FakeRealtimeServer(config) as server:
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        running = start_bot(
            server, settings_for(server, tmp_path), RunOptions(text=True, text_lines=lines)
        )
        first = await running.session(1)
        await lines.put("tell me a story")
        await running.wait_for(lambda: first.sent_types().count("response.output_audio.delta") >= 3)
        await server.drop_connection()
        second = await running.session(2)
        await lines.put("again")
        await running.wait_for(lambda: len(assistant_items(second)) == 1, timeout_s=15)
        await lines.put(None)
        assert await running.finish() == 0

    seed_text = second.received[1]["item"]["content"][0]["text"]
    assert "tell me a story" in seed_text
    assert [i.text for i in assistant_items(second)] == ["Sure."]
    assert any("connection lost" in n for n in running.view.notices)


async def test_rollover_before_the_session_limit(tmp_path: Path) -> None:
    config = fake_config(session_max_s=2.5)
    async with FakeRealtimeServer(config) as server:
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        running = start_bot(
            server, settings_for(server, tmp_path), RunOptions(text=True, text_lines=lines)
        )
        first = await running.session(1)
        await lines.put("remember the number 42")
        await running.wait_for(lambda: len(assistant_items(first)) == 1)
        second = await running.session(2, timeout_s=10)
        await lines.put("what number")
        await running.wait_for(lambda: len(assistant_items(second)) == 1)
        await lines.put(None)
        assert await running.finish() == 0

    # The client left first, cleanly, before the server's limit.
    assert first.ended_by == "client" and first.close_code == 1000
    assert "session_expired" not in json.dumps(first.sent)
    assert "remember the number 42" in second.received[1]["item"]["content"][0]["text"]
    assert running.bot.summary()["rollovers"] >= 1


async def test_recovers_when_the_server_expires_the_session(tmp_path: Path) -> None:
    async with FakeRealtimeServer(fake_config()) as server:
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        running = start_bot(
            server, settings_for(server, tmp_path), RunOptions(text=True, text_lines=lines)
        )
        first = await running.session(1)
        await lines.put("my name is Ada")
        await running.wait_for(lambda: len(assistant_items(first)) == 1)
        await server.expire_session()
        second = await running.session(2)
        await lines.put("who am I")
        await running.wait_for(lambda: len(assistant_items(second)) == 1)
        await lines.put(None)
        assert await running.finish() == 0

    assert first.close_code == 1001
    assert "my name is Ada" in second.received[1]["item"]["content"][0]["text"]
    assert running.bot.client is not None and running.bot.client.stats.expiries == 1
    assert not running.view.errors  # an expiry is routine, not an error for the user


async def test_bad_key_stops_at_once_with_a_message(tmp_path: Path) -> None:
    async with FakeRealtimeServer(fake_config(api_keys=frozenset({"sk-good"}))) as server:
        running = start_bot(
            server,
            settings_for(server, tmp_path),
            RunOptions(text=True, text_lines=asyncio.Queue()),
        )
        assert await running.finish(5) == 1
    assert len(running.view.errors) == 1
    assert "API key" in running.view.errors[0] and "401" in running.view.errors[0]


async def test_malformed_and_unknown_frames_are_counted_and_ignored(tmp_path: Path) -> None:
    faults = Faults(malformed_after_events=4, unknown_event_after_events=6)
    async with FakeRealtimeServer(fake_config(faults=faults)) as server:
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        running = start_bot(
            server, settings_for(server, tmp_path), RunOptions(text=True, text_lines=lines)
        )
        session = await running.session(1)
        await lines.put("hello")
        await lines.put("still there?")
        await running.wait_for(lambda: len(assistant_items(session)) == 2)
        await lines.put(None)
        assert await running.finish() == 0
    assert running.bot.client is not None
    stats = running.bot.client.parser.stats
    assert stats.malformed_json >= 1 and stats.unknown_type >= 1
    assert [t for _, t, _ in running.view.assistant] == [
        "You said: hello",
        "You said: still there?",
    ]


async def test_max_turns_ends_the_run(tmp_path: Path) -> None:
    async with FakeRealtimeServer(fake_config()) as server:
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        for line in ("one", "two", "three"):
            lines.put_nowait(line)
        running = start_bot(
            server,
            settings_for(server, tmp_path),
            RunOptions(text=True, text_lines=lines, max_turns=2),
        )
        assert await running.finish() == 0
    assert len(running.view.assistant) == 2


def test_pcm_rate_is_what_the_fake_plays() -> None:
    assert PCM_RATE == 24000
