"""The session's own summary end to end: the real app (``summarizer realtime``) and the fake.

While the fake holds the out-of-band summary open (`Faults.hold_out_of_band`), the user
barges in on a reply, types a turn and the model calls a tool; then the summary arrives and
the compaction completes. Nothing of the summary response is played, shown or written as a
turn, and the fake's conversation never holds its items. A summary that never comes is
cancelled after ``summary_timeout_s`` and the extractive fallback writes it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.output import WavFilePlayer
from realtime_voicebot.core.out_of_band import OUR_REQUEST_KEY
from realtime_voicebot.fake.config import Faults
from realtime_voicebot.fake.scenario import Reply, Scenario, ToolCall
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.metrics import Prices, usage_cost
from realtime_voicebot.summarization.prompts import IN_SESSION_REQUEST
from realtime_voicebot.testing import PushInput, scaled, start_bot
from realtime_voicebot.tools import Tool

from .app_harness import fake_config, settings_for, spoken_turn
from .spec import validate_client, validate_ga_response_create_with_references

JSON = dict[str, Any]
LONG_REPLY = "This answer goes on and on while the summary is being written. " * 3


def summary_requests(session: FakeSession) -> list[JSON]:
    return [
        e
        for e in session.received
        if e["type"] == "response.create"
        and (e.get("response") or {}).get("conversation") == "none"
    ]


def validate_received(session: FakeSession) -> None:
    """Every client event against the SDK; GA references through its request type."""
    for event in session.received:
        if event["type"] == "input_audio_buffer.append":
            continue
        if event in summary_requests(session) and session.dialect == "ga":
            validate_ga_response_create_with_references(event)
        else:
            validate_client(event, session.dialect)


def records(path: Path) -> list[JSON]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def lookup_tool(calls: list[str]) -> Tool:
    async def lookup(city: str) -> dict[str, Any]:
        """The weather in a city."""
        calls.append(city)
        return {"city": city, "sky": "clear"}

    return Tool.from_function(lookup)


def first_index(session: FakeSession, predicate: Any) -> int:
    return next(i for i, e in enumerate(session.sent) if predicate(e))


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_barge_in_typed_turn_and_tool_call_beside_the_sessions_summary(
    tmp_path: Path, dialect: str
) -> None:
    replies: list[Reply] = [
        "Hello Ada.",
        "Paris is lovely.",
        LONG_REPLY,
        "Stopped.",
        ToolCall("lookup", {"city": "Paris"}),
        "Clear skies in Paris.",
    ]
    scenario = Scenario(
        user_transcripts=["My name is Ada.", "I live in Paris.", "Tell me a story.", "Stop!"],
        replies=replies,
    )
    hold = asyncio.Event()
    calls: list[str] = []
    config = fake_config(speed=20, scenario=scenario, faults=Faults(hold_out_of_band=hold))
    async with FakeRealtimeServer(config) as server:
        settings = settings_for(
            server,
            tmp_path,
            dialect=dialect,
            summarizer="realtime",
            summary_threshold=60,
            summary_keep_items=2,
        )
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", pace=1.0)
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        options = RunOptions(text_lines=lines, extra_tools=[lookup_tool(calls)])
        running = start_bot(server, settings, options, audio_in=mic, audio_out=player)
        session = await running.session(1)
        compactor = running.bot.core.compactor
        for n in range(2):
            await spoken_turn(running, mic, player, n, seconds=0.6)
        # The compaction asked the session for its summary, which the fake holds open.
        await running.until(lambda: bool(session.out_of_band))
        assert compactor.phase == "summarizing"

        # 1. A barge-in on a reply that plays while the summary is being written.
        server.config.speed = 1.0
        earlier_reply = player.playing_item_id
        mic.say(0.6, seed=7, pause_s=0.8)
        await running.until(lambda: player.playing_item_id not in (None, earlier_reply), 5)
        story_id = player.playing_item_id
        assert story_id is not None
        assert await asyncio.wait_for(player.wait_played(story_id, 400), scaled(5))
        mic.say(0.6, seed=8, pause_s=0.8)
        await running.until(lambda: "conversation.item.truncate" in session.received_types())
        await running.until(lambda: len(running.view.assistant) >= 4)
        await running.until(lambda: not player.is_audible, 5)
        server.config.speed = 20.0

        # 2. A typed turn whose reply calls a tool, answered while the summary still runs.
        await lines.put("What is the weather in Paris?")
        await running.until(lambda: len(running.view.assistant) >= 5)
        assert running.view.assistant[-1][1] == "Clear skies in Paris."
        assert calls == ["Paris"]
        assert compactor.phase == "summarizing" and bool(session.out_of_band)

        # 3. The summary arrives: the compaction completes with it.
        hold.set()
        await running.until(lambda: compactor.stats.compactions >= 1 and not compactor.in_flight)
        await running.until(lambda: running.bot.core.conversation.order == session.conversation.ids)
        report = session.report()
        assert await running.stop() == 0

    stats = compactor.stats
    assert (stats.session_summaries, stats.fallbacks, stats.session_summary_failures) == (1, 0, 0)
    assert running.bot.core.turns.stats.barge_ins == 1
    # The request: the items to compact by reference, then the ask; marked as ours.
    [request] = summary_requests(session)
    response = request["response"]
    assert response["metadata"]["purpose"] == "summary" and OUR_REQUEST_KEY in response["metadata"]
    *refs, ask = response["input"]
    assert [r["type"] for r in refs] == ["item_reference", "item_reference"]
    assert ask["content"][0]["text"].startswith(IN_SESSION_REQUEST)
    validate_received(session)
    # The fake wrote the summary from what it read; the server holds it at the root.
    summary = running.bot.core.conversation.summary
    assert summary == "Summary:\nuser: My name is Ada.\nassistant: Hello Ada."
    assert session.conversation.ids[0] == running.bot.core.conversation.summary_item_id
    assert not {r["id"] for r in refs} & set(session.conversation.ids)
    # The summary ran beside the conversation and ended after all of it.
    oob = [r for r in report["responses"] if r["conversation"] == "none"]
    assert [(r["status"], r["metadata"]["purpose"]) for r in oob] == [("completed", "summary")]
    assert report["out_of_band_items_in_conversation"] == []
    oob_done = first_index(
        session,
        lambda e: e["type"] == "response.done" and e["response"]["conversation_id"] is None,
    )
    truncated = first_index(session, lambda e: e["type"] == "conversation.item.truncated")
    tool_reply = first_index(
        session,
        lambda e: (
            e["type"] == "response.done"
            and any(o.get("type") == "function_call" for o in e["response"]["output"])
        ),
    )
    assert truncated < tool_reply < oob_done
    # Nothing of it shown, played or written as a turn.
    texts = [t for _, t, _ in running.view.assistant] + [t for _, t in running.view.deltas]
    assert not any("Summary" in t for t in texts)
    oob_items = set(oob[0]["output"])
    assert not oob_items & set(running.bot.core.conversation.items)
    saved = records(tmp_path / "transcript.jsonl")
    turns = [(r["role"], r["text"]) for r in saved if r["type"] == "turn"]
    assert turns[:4] == [
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada."),
        ("user", "I live in Paris."),
        ("assistant", "Paris is lovely."),
    ]
    assert ("user", "What is the weather in Paris?") in turns
    assert turns[-1] == ("assistant", "Clear skies in Paris.")
    assert not any("Summary" in text for _, text in turns)
    assert not [r for r in saved if r.get("item_id") in oob_items]
    assert [r["text"] for r in saved if r["type"] == "summary"] == [summary]
    # Billed: the cost shown counts every response, the summary's included.
    prices = Prices.from_settings(settings)
    billed = sum(usage_cost(r["usage"], prices) for r in report["responses"] if r["usage"])
    assert running.bot.metrics.cost_usd == pytest.approx(billed)
    assert usage_cost(oob[0]["usage"], prices) > 0


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_a_summary_that_never_comes_is_cancelled_and_the_fallback_writes_it(
    tmp_path: Path, dialect: str
) -> None:
    hold = asyncio.Event()  # never set: the session's summary never starts
    replies = [f"Noted {n}." for n in range(6)]
    config = fake_config(
        speed=0, scenario=Scenario(replies=replies), faults=Faults(hold_out_of_band=hold)
    )
    async with FakeRealtimeServer(config) as server:
        settings = settings_for(
            server,
            tmp_path,
            dialect=dialect,
            summarizer="realtime",
            summary_threshold=60,
            summary_keep_items=2,
            summary_timeout_s=0.5,
        )
        running = start_bot(server, settings, text_lines=True)
        session = await running.session(1)
        compactor = running.bot.core.compactor
        facts = ["My name is Ada Lovelace.", "I was born in 1815.", "I like engines."]
        for n, line in enumerate(facts):
            await running.type(line)
            await running.until(lambda n=n: len(running.view.assistant) > n)
        await running.until(lambda: compactor.stats.compactions >= 1 and not compactor.in_flight)
        await running.until(lambda: not session.out_of_band)
        report = session.report()
        await running.lines.put(None)  # type: ignore[union-attr]
        assert await running.finish() == 0

    stats = compactor.stats
    assert stats.session_summary_timeouts >= 1 and stats.fallbacks >= 1
    assert stats.failures == 0
    # The app cancelled its own summary by id, never the conversation's reply.
    cancels = [e for e in session.received if e["type"] == "response.cancel"]
    oob = [r for r in report["responses"] if r["conversation"] == "none"]
    assert cancels and all("response_id" in e for e in cancels)
    assert {e["response_id"] for e in cancels} <= {r["id"] for r in oob}
    assert oob and all(r["status"] == "cancelled" for r in oob)
    assert report["out_of_band_items_in_conversation"] == []
    # The extractive fallback wrote it from the summarized turns; nothing alarming shown.
    summary = running.bot.core.conversation.summaries[0].text
    assert summary.startswith("User: My name is Ada Lovelace.")
    assert running.view.errors == []
    validate_received(session)
