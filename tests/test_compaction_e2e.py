"""Compaction end to end: the real app (VoiceBot) against the in-process fake server.

What the server holds after each compaction, the token window, the local history and the
transcript file over hundreds of turns; a summarizer that takes seconds while audio plays
and the user barges in; the LLM summarizer failing; deletes the server rejects; a
connection lost in the middle of a compaction.

The 200-turn run uses typed turns (a user text item and ``response.create``) so that it
stays fast; the replies are still audio, counted as audio tokens. The audio runs speak
into the server VAD through `PushInput`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.output import WavFilePlayer
from realtime_voicebot.config import SettingsError, load_settings
from realtime_voicebot.core import actions as a
from realtime_voicebot.core.compaction import CompactionPlan, Compactor
from realtime_voicebot.core.recap import read_recap
from realtime_voicebot.fake.chat import FakeChatConfig, FakeChatServer
from realtime_voicebot.fake.config import Faults
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.summarization.base import SummaryInput
from realtime_voicebot.summarization.extractive import ExtractiveSummarizer
from realtime_voicebot.testing import PushInput, scaled
from realtime_voicebot.transport.events import message_create, response_create, session_update

from .app_harness import Running, fake_config, settings_for, spoken_turn, start_bot
from .spec import validate_client

JSON = dict[str, Any]


# --- observing the app -----------------------------------------------------------------------


@dataclass
class CompactionSeen:
    """The server's conversation when a compaction started and when it was done."""

    plan: CompactionPlan
    before: list[str]
    after: list[str] = field(default_factory=list)
    summary_item_id: str = ""
    summary_text: str = ""
    window_after: int = 0


class Observer:
    """Records every compaction of a running bot from the actions its core returns; the
    server side is read from the fake session."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.seen: list[CompactionSeen] = []
        running.bot.subscribe(self._on_action)

    def _on_action(self, action: a.Action) -> None:
        if isinstance(action, a.CompactionStarted):
            plan = self.compactor.plan
            assert plan is not None
            self.seen.append(CompactionSeen(plan, self.session.conversation.ids))
        elif isinstance(action, a.Compacted):
            conversation = self.running.bot.core.conversation
            seen = self.seen[-1]
            seen.after = self.session.conversation.ids
            seen.summary_item_id = conversation.summary_item_id or ""
            seen.summary_text = conversation.summary or ""
            seen.window_after = self.session.window_tokens.total

    @property
    def compactor(self) -> Compactor:
        return self.running.bot.core.compactor

    @property
    def session(self) -> FakeSession:
        return self.running.server.sessions[-1]


async def started(running: Running) -> Observer:
    observer = Observer(running)
    await running.session(1)
    return observer


def check_compaction(seen: CompactionSeen, session: FakeSession, keep: int) -> None:
    """After the compaction the server holds [summary at root] + the kept tail + newer items."""
    item = {i.id: i for i in session.items}.get(seen.summary_item_id)
    after = seen.after
    assert after[0] == seen.summary_item_id, after[:3]
    if item is not None:  # still there (a later compaction replaces it)
        assert item.role == "system"
        assert read_recap(item.text)[0] == seen.summary_text
    deleted = set(seen.plan.delete_ids)
    kept = [i for i in seen.before if i not in deleted]
    assert not deleted & set(after), "a summarized item is still on the server"
    assert after[1 : 1 + len(kept)] == kept, "the kept tail changed"
    assert len(kept) == keep, (len(kept), keep)
    assert seen.plan.anchor_id == kept[0]
    newer = after[1 + len(kept) :]
    assert not set(newer) & set(seen.before), "items that arrived meanwhile"


def transcript_records(path: Path) -> list[JSON]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def turn_texts(records: Sequence[JSON]) -> list[tuple[str, str]]:
    return [(r["role"], r["text"]) for r in records if r["type"] == "turn"]


def history_texts(running: Running) -> list[tuple[str, str]]:
    return [
        (item.role, item.text)
        for item in running.bot.core.conversation.history
        if item.kind == "message" and item.role in ("user", "assistant") and not item.is_summary
    ]


def validate_sent(session: FakeSession) -> None:
    for event in session.received:
        if event.get("type") != "input_audio_buffer.append":
            validate_client(event, session.dialect)


async def quiesce(running: Running, observer: Observer) -> None:
    """No compaction running and the mirror equal to what the server holds."""
    conversation, compactor = running.bot.core.conversation, observer.compactor
    await running.until(
        lambda: not compactor.in_flight and conversation.order == observer.session.conversation.ids,
        10,
    )


# --- 1. hundreds of turns --------------------------------------------------------------------

TURNS = 200
KEEP = 4
THRESHOLD = 550


def user_line(n: int) -> str:
    return f"Turn {n}: my locker number is {n * 7 + 3}."


def reply_line(n: int) -> str:
    return f"OK, noted {n}."


async def test_two_hundred_typed_turns_compact_repeatedly(tmp_path: Path) -> None:
    """Typed turns for speed (replies are audio): every compaction leaves exactly
    [summary] + tail + newer items, the window below the threshold, nothing lost locally."""
    scenario = Scenario(replies=[reply_line(n) for n in range(TURNS)])
    async with FakeRealtimeServer(fake_config(speed=0, scenario=scenario)) as server:
        settings = settings_for(
            server, tmp_path, summary_threshold=THRESHOLD, summary_keep_items=KEEP
        )
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        running = start_bot(server, settings, RunOptions(text=True, text_lines=lines))
        observer = await started(running)
        for n in range(TURNS):
            await lines.put(user_line(n))
            await running.until(lambda n=n: len(running.view.assistant) > n, 10)
        await quiesce(running, observer)
        session = observer.session
        final_ids = session.conversation.ids
        usages = [run.usage for run in session.responses if run.usage]
        await lines.put(None)
        assert await running.finish() == 0

    stats = observer.compactor.stats
    assert len(observer.seen) >= 20, len(observer.seen)
    assert stats.compactions == len(observer.seen)
    assert stats.failures == 0 and stats.delete_failures == 0
    for seen in observer.seen:
        check_compaction(seen, session, KEEP)
        assert seen.window_after < THRESHOLD, seen.window_after
    # The model never read more than the threshold plus one turn.
    assert max(u["input_tokens"] for u in usages) < THRESHOLD + 60
    assert final_ids[0] == observer.seen[-1].summary_item_id
    assert running.bot.core.conversation.order == final_ids

    expected = [
        pair
        for n in range(TURNS)
        for pair in (("user", user_line(n)), ("assistant", reply_line(n)))
    ]
    assert history_texts(running) == expected
    records = transcript_records(tmp_path / "transcript.jsonl")
    assert turn_texts(records) == expected
    turn_ids = [r["item_id"] for r in records if r["type"] == "turn"]
    assert len(set(turn_ids)) == len(turn_ids) == 2 * TURNS
    summaries = [r for r in records if r["type"] == "summary"]
    assert [s["item_id"] for s in summaries] == [s.summary_item_id for s in observer.seen]
    validate_sent(session)


async def test_spoken_turns_compact_with_the_same_guarantees(tmp_path: Path) -> None:
    """Audio turns through the server VAD: the same invariants as the typed run."""
    turns = 24
    keep, threshold = 2, 440  # above the summary item (cap ~300 tokens + its preface) plus a turn
    scenario = Scenario(
        user_transcripts=[user_line(n) for n in range(turns)],
        replies=[reply_line(n) for n in range(turns)],
    )
    async with FakeRealtimeServer(fake_config(speed=20, scenario=scenario)) as server:
        settings = settings_for(
            server, tmp_path, summary_threshold=threshold, summary_keep_items=keep
        )
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", pace=20.0)
        running = start_bot(server, settings, RunOptions(), audio_in=mic, audio_out=player)
        observer = await started(running)
        for n in range(turns):
            await spoken_turn(running, mic, player, n)
        await quiesce(running, observer)
        session = observer.session
        assert await running.stop() == 0

    assert len(observer.seen) >= 3
    for seen in observer.seen:
        check_compaction(seen, session, keep)
        assert seen.window_after < threshold
    user_items = [i for i in running.bot.core.conversation.history if i.role == "user"]
    assert all(i.audio_ms >= 700 for i in user_items)  # spoken, counted as audio
    expected = [
        pair
        for n in range(turns)
        for pair in (("user", user_line(n)), ("assistant", reply_line(n)))
    ]
    assert history_texts(running) == expected
    assert turn_texts(transcript_records(tmp_path / "transcript.jsonl")) == expected
    assert running.bot.core.turns.stats.barge_ins == 0
    validate_sent(session)


# --- 2. a summarizer that takes seconds ------------------------------------------------------


async def test_slow_summary_does_not_hold_audio_or_barge_in(tmp_path: Path) -> None:
    """The summary is held back until the test lets it go: meanwhile a long reply streams and
    plays, and the user barges in on it. A summary that held audio or the barge-in would make
    those waits time out; no clock is read."""
    long_reply = "This answer goes on and on while the summary is being written. " * 3
    scenario = Scenario(
        user_transcripts=["My name is Ada.", "I live in Paris.", "Tell me a story.", "Stop!"],
        replies=["Hello Ada.", "Paris is lovely.", long_reply, "Stopped."],
    )
    summarizer = GatedSummarizer()
    async with FakeRealtimeServer(fake_config(speed=20, scenario=scenario)) as server:
        settings = settings_for(server, tmp_path, summary_threshold=60, summary_keep_items=2)
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", pace=1.0)
        running = start_bot(
            server, settings, RunOptions(), audio_in=mic, audio_out=player, summarizer=summarizer
        )
        observer = await started(running)
        during: list[a.Action] = []  # audio the bot played on while the summary was pending

        def keep_audio(action: a.Action) -> None:
            if isinstance(action, a.PlayAudio) and summarizer.pending:
                during.append(action)

        running.bot.subscribe(keep_audio)
        for n in range(2):
            await spoken_turn(running, mic, player, n, seconds=0.6)
        async with asyncio.timeout(scaled(5)):
            await summarizer.called.wait()
        session = observer.session
        server.config.speed = 1.0  # the story streams at real time, during the summary
        before = session.conversation.ids
        mic.say(0.6, seed=7)
        mic.pause(0.8)
        await running.until(lambda: len([i for i in session.items if i.role == "assistant"]) == 3)
        story_id = [i for i in session.items if i.role == "assistant"][-1].id
        assert await asyncio.wait_for(player.wait_played(story_id, 400), scaled(5))
        mic.say(0.6, seed=8)  # barge-in while the summarizer still runs
        mic.pause(0.8)
        await running.until(lambda: "conversation.item.truncate" in session.received_types(), 5)
        await running.until(lambda: len(running.view.assistant) >= 4, 10)
        assert observer.compactor.in_flight and not observer.compactor.stats.compactions
        summarizer.gate.set()
        await running.until(lambda: observer.compactor.stats.compactions == 1, 10)
        await quiesce(running, observer)
        assert await running.stop() == 0

    assert len(during) >= 5, len(during)  # audio kept arriving while the summary was written
    truncate = next(e for e in session.received if e["type"] == "conversation.item.truncate")
    assert truncate["item_id"] == story_id and 0 < truncate["audio_end_ms"] < 4000
    seen = observer.seen[0]
    assert set(seen.plan.delete_ids) <= set(before)
    # The turns that arrived during the summary are all still on the server, in order.
    assert session.conversation.ids[0] == seen.summary_item_id
    arrived = [i for i in session.conversation.ids[1:] if i not in before]
    assert story_id in arrived
    assert [i.role for i in session.items if i.id in arrived] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    story = next(i for i in running.bot.core.conversation.history if i.id == story_id)
    assert story.truncated and story.heard_text and len(story.heard_text) < len(long_reply)


# --- 3. the LLM summarizer failing -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["error", "hang"])
async def test_failing_llm_summarizer_falls_back_and_the_compaction_completes(
    tmp_path: Path, mode: str
) -> None:
    chat = FakeChatServer(FakeChatConfig(mode="error" if mode == "error" else "hang")).start()
    try:
        async with FakeRealtimeServer(fake_config(speed=0)) as server:
            settings = settings_for(
                server,
                tmp_path,
                summarizer="openai",
                summary_base_url=chat.base_url,
                summary_timeout_s=0.5,
                summary_threshold=120,
                summary_keep_items=2,
            )
            lines: asyncio.Queue[str | None] = asyncio.Queue()
            running = start_bot(server, settings, RunOptions(text=True, text_lines=lines))
            observer = await started(running)
            facts = ["My name is Ada Lovelace.", "I was born in 1815.", "I like engines."]
            for n, line in enumerate(facts):
                await lines.put(line)
                await running.until(lambda n=n: len(running.view.assistant) > n, 10)
            await running.until(lambda: observer.compactor.stats.compactions >= 1, 10)
            await quiesce(running, observer)
            session = observer.session
            await lines.put(None)
            assert await running.finish() == 0
    finally:
        chat.stop()

    metrics = observer.compactor.stats
    assert chat.requests, "the OpenAI summarizer was really called"
    assert chat.requests[0]["model"] == settings.summary_model
    assert metrics.fallbacks >= 1 and metrics.failures == 0
    seen = observer.seen[0]
    check_compaction(seen, session, 2)
    # The extractive fallback wrote it from the summarized turn.
    assert seen.summary_text.startswith("User: My name is Ada Lovelace.")


# --- 4. deletes the server rejects -----------------------------------------------------------


async def test_rejected_deletes_are_retried_and_state_matches_the_server(tmp_path: Path) -> None:
    faults = Faults()
    async with FakeRealtimeServer(fake_config(speed=0, faults=faults)) as server:
        settings = settings_for(server, tmp_path, summary_threshold=150, summary_keep_items=2)
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        running = start_bot(server, settings, RunOptions(text=True, text_lines=lines))
        observer = await started(running)
        faults.reject_deletes = 2
        n = 0
        while not observer.seen:
            await lines.put(user_line(n))
            await running.until(lambda n=n: len(running.view.assistant) > n, 10)
            n += 1
        await quiesce(running, observer)
        session = observer.session
        await lines.put(None)
        assert await running.finish() == 0

    assert session.faults_fired.count("reject_deletes") == 2
    deletes = [e for e in session.received if e["type"] == "conversation.item.delete"]
    rejected = [
        e["error"]["event_id"]
        for e in session.sent
        if e["type"] == "error" and e["error"]["code"] == "server_error"
    ]
    by_event = {e["event_id"]: e["item_id"] for e in deletes}
    assert len(rejected) == 2 and all(r in by_event for r in rejected)
    # Each rejected delete was sent again for the same item, and that one went through.
    for event_id in rejected:
        item_id = by_event[event_id]
        assert [e["item_id"] for e in deletes].count(item_id) == 2
        assert item_id not in session.conversation.ids
    metrics = observer.compactor.stats
    assert metrics.delete_retries == 2 and metrics.delete_failures == 0
    check_compaction(observer.seen[0], session, 2)
    # The compaction handled those errors itself: nothing alarming on the user's screen.
    assert running.view.errors == []
    assert running.bot.core.conversation.order == session.conversation.ids


async def test_a_delete_that_keeps_failing_leaves_state_as_the_server_holds_it(
    tmp_path: Path,
) -> None:
    faults = Faults()
    async with FakeRealtimeServer(fake_config(speed=0, faults=faults)) as server:
        settings = settings_for(server, tmp_path, summary_threshold=150, summary_keep_items=2)
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        running = start_bot(server, settings, RunOptions(text=True, text_lines=lines))
        observer = await started(running)
        faults.reject_deletes = 10_000
        n = 0
        while observer.compactor.stats.delete_failures == 0:
            await lines.put(user_line(n))
            await running.until(lambda n=n: len(running.view.assistant) > n, 10)
            n += 1
            await running.until(lambda: not observer.compactor.in_flight, 30)
        session = observer.session
        stuck = list(session.conversation.ids)
        await quiesce(running, observer)
        first = observer.seen[0]
        # Nothing could be deleted: the summary is at root and every item is still there.
        assert stuck[0] == first.summary_item_id
        assert set(first.plan.delete_ids) <= set(stuck)
        assert running.bot.core.conversation.order == session.conversation.ids
        # The server recovers: the next compaction deletes everything it has to.
        faults.reject_deletes = 0
        while len(observer.seen) < 2 or observer.compactor.in_flight:
            await lines.put(user_line(n))
            await running.until(lambda n=n: len(running.view.assistant) > n, 10)
            n += 1
            await running.until(lambda: not observer.compactor.in_flight, 30)
        await quiesce(running, observer)
        await lines.put(None)
        assert await running.finish() == 0

    last = observer.seen[-1]
    check_compaction(last, session, 2)
    assert set(first.plan.delete_ids) <= set(last.plan.delete_ids)
    assert running.bot.core.conversation.order == session.conversation.ids
    assert observer.compactor.stats.delete_failures >= len(first.plan.delete_ids)


# --- 5. a connection lost in the middle of a compaction --------------------------------------


class GatedSummarizer:
    """Answers only when the test opens the gate (a summary that takes as long as it must)."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.gate = asyncio.Event()

    @property
    def pending(self) -> bool:
        """Called and not let go yet."""
        return self.called.is_set() and not self.gate.is_set()

    async def summarize(
        self, items: Sequence[SummaryInput], previous_summary: str | None, language: str
    ) -> str:
        self.called.set()
        await self.gate.wait()
        return ExtractiveSummarizer().summarize_now(items, previous_summary)


def seed_parts(session: FakeSession) -> tuple[str, list[str]]:
    """The summary and the recent lines of a session's seed (its first item create)."""
    creates = [e for e in session.received if e["type"] == "conversation.item.create"]
    seed = creates[0]
    assert seed["previous_item_id"] == "root" and seed["item"]["role"] == "system"
    text: str = seed["item"]["content"][0]["text"]
    summary, recent = read_recap(text)
    return summary or "", recent


@pytest.mark.parametrize("moment", ["while_summarizing", "before_delete_confirmations"])
async def test_reconnect_mid_compaction_loses_and_duplicates_nothing(
    tmp_path: Path, moment: str
) -> None:
    faults = Faults()
    gated = GatedSummarizer()
    scenario = Scenario(replies=[reply_line(n) for n in range(20)])
    async with FakeRealtimeServer(fake_config(speed=0, faults=faults, scenario=scenario)) as server:
        settings = settings_for(server, tmp_path, summary_threshold=150, summary_keep_items=2)
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        kwargs = {"summarizer": gated} if moment == "while_summarizing" else {}
        running = start_bot(server, settings, RunOptions(text=True, text_lines=lines), **kwargs)
        observer = await started(running)
        if moment == "before_delete_confirmations":
            faults.drop_on_client_event = "conversation.item.delete"
        n = 0
        while not observer.seen:
            await lines.put(user_line(n))
            await running.until(lambda n=n: len(running.view.assistant) > n, 10)
            n += 1
        first = observer.session
        if moment == "while_summarizing":
            async with asyncio.timeout(scaled(5)):
                await gated.called.wait()
            await server.drop_connection()
        second = await running.session(2)
        await running.until(lambda: running.bot.core.session_number == 2)  # the app saw it
        gated.gate.set()  # too late: that compaction was abandoned with its session
        assert first.ended_by == "dropped"
        await lines.put(user_line(n))
        await running.until(lambda: len(running.view.assistant) > n, 10)
        n += 1
        await lines.put(None)
        assert await running.finish() == 0

    plan = observer.seen[0].plan
    summary, recent = seed_parts(second)
    if moment == "before_delete_confirmations":
        # The summary reached the first session; the new one carries it.
        created = next(
            e
            for e in first.received
            if e["type"] == "conversation.item.create" and e["item"]["id"].startswith("sum_")
        )
        assert first.conversation.ids[0] == created["item"]["id"]
        assert summary == read_recap(created["item"]["content"][0]["text"])[0]
        carried = [i for i in first.conversation.ids[1:] if i not in plan.delete_ids]
    else:
        assert summary == ""  # no summary had been made
        carried = first.conversation.ids  # nothing was deleted
    # The recent turns of the seed: exactly the turns no summary covers, once, in order.
    items = running.bot.core.conversation.items
    expected = [
        f"{items[i].role.capitalize()}: {items[i].text}"
        for i in carried
        if items[i].role in ("user", "assistant")
    ]
    assert recent == expected
    # Only one item seeds the new session.
    assert second.received_types()[:2] == ["session.update", "conversation.item.create"]
    assert [i.role for i in second.items][:1] == ["system"]
    expected_turns = [
        pair for k in range(n) for pair in (("user", user_line(k)), ("assistant", reply_line(k)))
    ]
    records = transcript_records(tmp_path / "transcript.jsonl")
    assert turn_texts(records) == expected_turns
    assert history_texts(running) == expected_turns
    validate_sent(second)


# --- server-side truncation: the setting and the fake's behaviour ----------------------------

ITEM_TOKENS = 100


async def _respond_over_limit(truncation: Any, items: int = 6) -> tuple[JSON, FakeSession, list]:
    """``items`` 100-token user items in a 600-token window with 100 kept for output (input limit
    500, instructions 3 tokens), then one response; its ``response.done`` or ``error``."""
    from .fake_harness import connect_client, ga_session

    config = fake_config(speed=0, context_window_tokens=600)
    async with FakeRealtimeServer(config) as server, connect_client(server) as client:
        session_cfg = ga_session(output_modalities=["text"], max_output_tokens=100)
        session_cfg["truncation"] = truncation
        await client.update_session(session_cfg)
        for n in range(items):
            await client.send(message_create("user", f"{n}" * (4 * ITEM_TOKENS), "ga"))
            await client.recv_until("conversation.item.done")
        await client.send(response_create())
        done, before = await client.recv_until(lambda e: e["type"] in ("response.done", "error"))
        session = server.sessions[0]
        return done, session, [*before, done]


@pytest.mark.parametrize(
    ("truncation", "dropped"),
    [
        ("auto", 2),  # 603 > 500: drop just enough (400 + 3 left)
        ({"type": "retention_ratio", "retention_ratio": 0.5}, 4),  # keep <= 248 of 497
        (
            {
                "type": "retention_ratio",
                "retention_ratio": 0.8,
                "token_limits": {"post_instructions": 300},
            },
            4,  # over 300: keep <= 240
        ),
    ],
)
async def test_fake_truncation_drops_the_oldest_items_silently(
    truncation: Any, dropped: int
) -> None:
    done, session, events = await _respond_over_limit(truncation)
    assert done["type"] == "response.done"
    ids = session.truncated_ids
    assert len(ids) == dropped
    assert not set(ids) & set(session.conversation.ids)
    assert done["response"]["usage"]["input_tokens"] == 3 + (6 - dropped) * ITEM_TOKENS
    assert "conversation.item.deleted" not in [e["type"] for e in events]


async def test_fake_truncation_disabled_refuses_a_response_over_the_limit() -> None:
    done, session, events = await _respond_over_limit("disabled")
    assert done["type"] == "error" and done["error"]["code"] == "context_length_exceeded"
    assert done["error"]["event_id"] is not None
    assert "response.created" not in [e["type"] for e in events]
    assert len(session.conversation.ids) == 6 and not session.truncated_ids


async def test_fake_truncation_under_the_limit_keeps_everything() -> None:
    done, session, _ = await _respond_over_limit(
        {"type": "retention_ratio", "retention_ratio": 0.5}, 4
    )
    assert done["type"] == "response.done" and not session.truncated_ids


def test_server_truncation_setting_sends_the_ga_shape_and_refuses_beta() -> None:
    settings = load_settings({"server_truncation": "retention_ratio:0.8"})
    event = session_update(settings, "ga")
    assert event["session"]["truncation"] == {"type": "retention_ratio", "retention_ratio": 0.8}
    validate_client(event, "ga")
    for value in ("auto", "disabled"):
        event = session_update(load_settings({"server_truncation": value}), "ga")
        assert event["session"]["truncation"] == value
        validate_client(event, "ga")
    for bad in ("retention_ratio:1.5", "retention", "always"):
        with pytest.raises(SettingsError):
            load_settings({"server_truncation": bad})
    with pytest.raises(SettingsError, match="GA"):
        load_settings({"server_truncation": "retention_ratio:0.8", "dialect": "beta"})
    beta = session_update(load_settings({"dialect": "beta"}), "beta")
    assert "truncation" not in beta["session"]
