"""A conversation that outlives its sessions: reconnect, expiry and ``--resume``, end to end.

After a dropped connection or an expired session the new session is seeded with ONE system
item (the latest summary and the turns it does not cover) and the next reply is audio.
A transcript saved by one run seeds the first session of the next (``voicebot run
--resume``), through the API and through the CLI in a real process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.output import WavFilePlayer
from realtime_voicebot.core.recap import read_recap
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.testing import PushInput
from realtime_voicebot.transcript import load_transcript

from .app_harness import fake_config, settings_for, spoken_turn, start_bot
from .test_cli_run import clean_env, run_cli
from .test_compaction_e2e import (
    reply_line,
    seed_parts,
    started,
    transcript_records,
    turn_texts,
    user_line,
    validate_sent,
)


@pytest.mark.parametrize("how", ["drop", "expiry"])
async def test_new_session_holds_summary_and_recent_turns_and_replies_in_audio(
    tmp_path: Path, how: str
) -> None:
    turns = 8
    scenario = Scenario(
        user_transcripts=[user_line(n) for n in range(turns + 1)],
        replies=[reply_line(n) for n in range(turns + 1)],
    )
    async with FakeRealtimeServer(fake_config(speed=20, scenario=scenario)) as server:
        settings = settings_for(server, tmp_path, summary_threshold=150, summary_keep_items=2)
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", pace=20.0)
        running = start_bot(server, settings, RunOptions(), audio_in=mic, audio_out=player)
        observer = await started(running)
        for n in range(turns):
            await spoken_turn(running, mic, player, n)
        await running.until(lambda: not observer.compactor.in_flight, 10)
        assert observer.compactor.stats.compactions >= 1
        first = observer.session
        conversation = running.bot.core.conversation
        summary = conversation.summary
        carried = [
            f"{i.role.capitalize()}: {i.text}" for i in conversation.mirror if not i.is_summary
        ]
        if how == "drop":
            await server.drop_connection()
        else:
            await server.expire_session()
        second = await running.session(2)
        await running.until(lambda: running.bot.core.session_number == 2)
        mic.say(0.8, seed=turns)
        mic.pause(0.8)
        await running.until(lambda: len(running.view.assistant) > turns, 10)
        assert await running.stop() == 0

    assert first.ended_by == ("dropped" if how == "drop" else "expired")
    assert not running.view.errors
    # One system item at root seeds the new session: the summary and the recent turns.
    assert second.received_types()[:2] == ["session.update", "conversation.item.create"]
    assert second.received[0]["session"]["output_modalities"] == ["audio"]
    seeded_summary, recent = seed_parts(second)
    assert summary and seeded_summary == summary
    assert recent == carried and len(carried) == 2
    creates = [e for e in second.received if e["type"] == "conversation.item.create"]
    assert len(creates) == 1
    assert second.items[0].role == "system"
    assert read_recap(second.items[0].text)[0] == summary  # a recap (else ValueError)
    # The next reply is audio: deltas streamed and played.
    reply = second.items[-1]
    assert reply.role == "assistant" and reply.text == reply_line(turns)
    assert reply.audio_ms > 500
    assert second.sent_types().count("response.output_audio.delta") >= 5
    assert player.received_ms(reply.id) == pytest.approx(reply.audio_ms, abs=1)
    # Every turn once in the transcript, across both sessions.
    expected = [
        pair
        for n in range(turns + 1)
        for pair in (("user", user_line(n)), ("assistant", reply_line(n)))
    ]
    assert turn_texts(transcript_records(tmp_path / "transcript.jsonl")) == expected
    validate_sent(second)


async def _typed_run(
    server: FakeRealtimeServer,
    tmp_path: Path,
    transcript: str,
    lines: list[str],
    resume: Path | None = None,
) -> None:
    settings = settings_for(
        server,
        tmp_path,
        transcript_path=tmp_path / transcript,
        summary_threshold=120,
        summary_keep_items=2,
    )
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    number = len(server.sessions) + 1
    options = RunOptions(text=True, text_lines=queue, resume=resume)
    running = start_bot(server, settings, options)
    await running.session(number)
    for n, line in enumerate(lines):
        await queue.put(line)
        await running.until(lambda n=n: len(running.view.assistant) > n, 10)
    await queue.put(None)
    assert await running.finish() == 0


async def test_resume_seeds_the_first_session_from_a_saved_transcript(tmp_path: Path) -> None:
    first_lines = [user_line(n) for n in range(6)]
    async with FakeRealtimeServer(fake_config(speed=0)) as server:
        await _typed_run(server, tmp_path, "one.jsonl", first_lines)
        assert any(r["type"] == "summary" for r in transcript_records(tmp_path / "one.jsonl"))
        summary, turns = load_transcript(tmp_path / "one.jsonl")
        await _typed_run(
            server, tmp_path, "two.jsonl", ["what is my locker?"], resume=tmp_path / "one.jsonl"
        )
        resumed = server.sessions[1]

    assert summary and turns
    seeded_summary, recent = seed_parts(resumed)
    assert seeded_summary == summary
    assert recent == [f"{t.role.capitalize()}: {t.text}" for t in turns]
    # The seed came first, then the new turn.
    assert resumed.received_types()[:2] == ["session.update", "conversation.item.create"]
    assert [i.role for i in resumed.items][:2] == ["system", "user"]
    # The new run's transcript holds only its own turns.
    assert turn_texts(transcript_records(tmp_path / "two.jsonl")) == [
        ("user", "what is my locker?"),
        ("assistant", "You said: what is my locker?"),
    ]


async def test_cli_resume_seeds_the_next_run(tmp_path: Path) -> None:
    """`voicebot run --fake-server --text` saves a transcript; `voicebot run --resume` (a
    real process, against a server this test can inspect) starts from it."""
    saved = tmp_path / "saved.jsonl"
    lines = "".join(f"{user_line(n)}\n" for n in range(5)).encode()
    code, _, err, _ = await run_cli(
        "run",
        "--fake-server",
        "--text",
        "--transcript",
        str(saved),
        "--summary-every-turns",
        "3",
        "--summary-keep-items",
        "2",
        env=clean_env(),
        stdin=lines,
    )
    assert code == 0, err
    summary, turns = load_transcript(saved)
    assert summary and "Turn 0" in summary
    async with FakeRealtimeServer(fake_config(speed=0)) as server:
        code, out, err, _ = await run_cli(
            "run",
            "--text",
            "--url",
            server.url,
            "--resume",
            str(saved),
            "--transcript",
            str(tmp_path / "next.jsonl"),
            env=clean_env(OPENAI_API_KEY="sk-test"),
            stdin=b"and now?\n",
        )
        session = server.sessions[0]
    assert code == 0, err
    assert "resuming" in out + err
    seeded_summary, recent = seed_parts(session)
    assert seeded_summary == summary
    assert recent == [f"{t.role.capitalize()}: {t.text}" for t in turns]
    assert [i.role for i in session.items] == ["system", "user", "assistant"]
    assert session.items[-1].text == "You said: and now?"
