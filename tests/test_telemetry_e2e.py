"""Tracing end to end: the real app against the fake server, exported to the SDK's in-memory
exporter and metric reader.

One scripted spoken conversation holds a tool call, a barge-in and a compaction; the span
tree, the attributes and the metrics are read back from what the SDK exported. The other
side: with telemetry off, the same providers get nothing at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.output import WavFilePlayer
from realtime_voicebot.fake.scenario import Scenario, ToolCall
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.metrics import LATENCY_NAMES
from realtime_voicebot.testing import PushInput, scaled
from realtime_voicebot.testing import start_bot as start_typing_bot
from realtime_voicebot.tools import Tool

from .app_harness import Running, fake_config, settings_for, start_bot

STORY = "Once upon a time a fox lived by a river and talked all day long. " * 4
SCENARIO = Scenario(
    user_transcripts=["What time is it in Oslo?", "Tell me a story.", "Stop, thanks."],
    replies=[ToolCall("clock", {"city": "Oslo"}), "It is noon in Oslo.", STORY, "Stopped."],
)


@dataclass
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.spans.get_finished_spans()

    def points(self) -> dict[str, list[Any]]:
        """Every metric's data points by metric name."""
        data = self.metrics.get_metrics_data()
        found: dict[str, list[Any]] = {}
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


@pytest.fixture
def otel() -> Otel:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    return Otel(spans, reader, tracer_provider, MeterProvider(metric_readers=[reader]))


def clock_tool() -> Tool:
    async def clock(city: str) -> dict[str, str]:
        """The time in a city."""
        return {"city": city, "time": "12:00"}

    return Tool.from_function(clock)


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


def parent_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    return next(s for s in spans if s.context.span_id == span.parent.span_id)


def attr(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(key)


async def converse(running: Running, mic: PushInput, player: WavFilePlayer) -> None:
    """Ask for the time (a tool call), ask for a story, cut it short, and wait for the
    compaction the low threshold brings."""
    view = running.view
    await running.session(1)
    mic.say(0.6, seed=1, pause_s=0.8)
    await running.until(lambda: len(view.assistant) >= 1, 10)
    await running.until(lambda: not player.is_audible and player.playing_item_id is None, 10)
    running.server.config.speed = 1.0  # the story streams in real time: there is time to cut
    mic.say(0.6, seed=2, pause_s=0.8)
    await running.until(lambda: player.playing_item_id is not None, 10)
    story_id = player.playing_item_id
    assert story_id is not None
    assert await asyncio.wait_for(player.wait_played(story_id, 300), scaled(10))
    mic.say(0.6, seed=3, pause_s=0.8)  # barge-in
    await running.until(lambda: len(view.assistant) >= 3, 15)
    await running.until(lambda: view.compactions, 15)
    await running.until(lambda: not player.is_audible and player.playing_item_id is None, 15)
    await running.until(lambda: not running.bot.core.compactor.in_flight, 10)


async def test_span_tree_of_a_conversation_with_a_tool_call_a_barge_in_and_a_compaction(
    tmp_path: Path, otel: Otel
) -> None:
    async with FakeRealtimeServer(fake_config(speed=20, scenario=SCENARIO)) as server:
        settings = settings_for(
            server, tmp_path, telemetry="otlp", summary_threshold=120, summary_keep_items=2
        )
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", pace=1.0)
        running = start_bot(
            server,
            settings,
            RunOptions(extra_tools=[clock_tool()]),
            audio_in=mic,
            audio_out=player,
            tracer_provider=otel.tracer_provider,
            meter_provider=otel.meter_provider,
        )
        await converse(running, mic, player)
        assert await running.stop() == 0
        session = server.sessions[0]

    spans = otel.finished()
    by_name = {name: named(spans, name) for name in {s.name for s in spans}}

    # One trace per turn: three spoken turns, each a root of its own trace.
    turns = by_name["voicebot.turn"]
    assert [attr(t, "voicebot.turn.input") for t in turns] == ["speech"] * 3
    assert all(t.parent is None for t in turns)
    assert len({t.context.trace_id for t in turns}) == 3
    user_items = [e["item_id"] for e in session.sent if e["type"].endswith("speech_started")]
    assert [attr(t, "voicebot.user.item_id") for t in turns] == user_items

    def children(parent: ReadableSpan, name: str) -> list[ReadableSpan]:
        return [s for s in by_name.get(name, []) if parent_of(s, spans) is parent]

    # Each turn: the user's speech and its transcription.
    for turn, item_id in zip(turns, user_items, strict=True):
        (speech,) = children(turn, "voicebot.user_speech")
        (transcription,) = children(turn, "voicebot.transcription")
        assert attr(speech, "voicebot.item_id") == item_id
        assert attr(transcription, "voicebot.item_id") == item_id
        assert speech.end_time is not None and transcription.start_time is not None
        assert transcription.start_time >= speech.end_time
    # Never what was said (telemetry_content is off).
    said = [*SCENARIO.user_transcripts, "noon", "fox", "Stopped"]
    for span in spans:
        for value in (span.attributes or {}).values():
            assert not any(words in str(value) for words in said), (span.name, value)

    # Turn 1: a response that calls the tool, then the reply about its result.
    call_response, answer = children(turns[0], "voicebot.response")
    assert attr(call_response, "gen_ai.response.id") != attr(answer, "gen_ai.response.id")
    (tool,) = children(call_response, "voicebot.tool_call")
    assert attr(tool, "gen_ai.tool.name") == "clock"
    assert attr(tool, "voicebot.tool.outcome") == "ok"
    assert attr(tool, "voicebot.tool.output_chars") > 0
    assert attr(tool, "gen_ai.tool.call.id")
    assert tool.end_time is not None and answer.start_time is not None
    assert answer.start_time >= tool.end_time  # the answer was due once the result was sent
    assert not children(call_response, "voicebot.first_sample")  # it said nothing

    # Every reply that spoke: the first delta and the first sample played, under its response.
    spoken = [
        answer,
        *children(turns[1], "voicebot.response"),
        *children(turns[2], "voicebot.response"),
    ]
    assert len(spoken) == 3
    for response in spoken:
        (first_delta,) = children(response, "voicebot.first_delta")
        (first_sample,) = children(response, "voicebot.first_sample")
        assert attr(first_delta, "voicebot.delta.kind") == "audio"
        assert first_delta.start_time == response.start_time
        assert first_sample.start_time == pytest.approx(first_delta.end_time, abs=5_000_000)
        item_ids = attr(response, "voicebot.reply.item_ids")
        assert attr(first_delta, "voicebot.item_id") == item_ids[0]
        assert attr(first_sample, "voicebot.item_id") == item_ids[0]
        assert attr(response, "gen_ai.usage.output_tokens") > 0
        assert attr(response, "voicebot.cost_usd") > 0

    # Turn 2: the story, cut by the barge-in that opened turn 3.
    (story,) = children(turns[1], "voicebot.response")
    (barge_in,) = children(turns[1], "voicebot.barge_in")
    story_item = attr(story, "voicebot.reply.item_ids")[0]
    assert attr(barge_in, "voicebot.item_id") == story_item
    assert attr(barge_in, "voicebot.barge_in.cause") == "speech"
    assert attr(barge_in, "voicebot.barge_in.silenced") is True
    assert attr(barge_in, "voicebot.barge_in.played_ms") >= 300
    truncate = next(e for e in session.received if e["type"] == "conversation.item.truncate")
    assert truncate["item_id"] == story_item
    assert attr(story, "voicebot.reply.truncated") is True
    assert barge_in.start_time is not None and turns[2].start_time is not None
    assert abs(barge_in.start_time - turns[2].start_time) < 50_000_000  # the same moment

    # Each compaction, under the turn whose reply brought it, with its summarizer call.
    compactions = by_name["voicebot.compaction"]
    assert len(compactions) == len(running.view.compactions) >= 1
    responses = by_name["voicebot.response"]
    for compaction in compactions:
        assert compaction.start_time is not None
        brought_it = max(
            (r for r in responses if (r.end_time or 0) <= compaction.start_time),
            key=lambda r: r.end_time or 0,
        )
        assert parent_of(compaction, spans) is parent_of(brought_it, spans)
        assert attr(compaction, "voicebot.compaction.outcome") == "compacted"
        assert attr(compaction, "voicebot.compaction.items_summarized") > 0
        assert attr(compaction, "voicebot.compaction.items_to_delete") > 0
        assert attr(compaction, "voicebot.summary.chars") > 0
        (summarize,) = children(compaction, "voicebot.summarize")
        assert attr(summarize, "voicebot.summarizer") == "extractive"
        assert attr(summarize, "voicebot.summary.chars") == attr(
            compaction, "voicebot.summary.chars"
        )
        assert attr(summarize, "voicebot.summary.inputs") > 0
        assert compaction.start_time is not None and compaction.end_time is not None
        assert compaction.start_time <= summarize.start_time <= summarize.end_time
        assert summarize.end_time <= compaction.end_time
    assert [
        (attr(c, "voicebot.compaction.items_summarized"), attr(c, "voicebot.summary.chars"))
        for c in compactions
    ] == running.view.compactions

    # Metrics: the latencies, the tokens by kind and the cost agree with the app's own.
    points = otel.points()
    summary = running.bot.summary()
    for name in LATENCY_NAMES:
        (histogram,) = points[f"voicebot.latency.{name}"]
        assert histogram.count == summary["latency"][name]["count"] > 0
    tokens = {p.attributes["voicebot.token.kind"]: p.value for p in points["voicebot.tokens"]}
    expected = summary["tokens"]["billed"]
    assert {k: round(v, 1) for k, v in tokens.items()} == {k: v for k, v in expected.items() if v}
    (cost,) = points["voicebot.cost"]
    assert cost.value == pytest.approx(summary["cost_usd"], abs=1e-6)
    (barge_ins,) = points["voicebot.barge_ins"]
    assert barge_ins.value == 1
    (tool_calls,) = points["voicebot.tool_calls"]
    assert tool_calls.value == 1
    assert dict(tool_calls.attributes) == {
        "gen_ai.tool.name": "clock",
        "voicebot.tool.outcome": "ok",
    }
    (compacted,) = points["voicebot.compactions"]
    assert compacted.value == len(compactions)
    assert dict(compacted.attributes) == {"voicebot.compaction.outcome": "compacted"}


async def test_telemetry_off_gives_the_providers_nothing(tmp_path: Path, otel: Otel) -> None:
    async with FakeRealtimeServer(fake_config(speed=0, scenario=SCENARIO)) as server:
        settings = settings_for(server, tmp_path)
        assert settings.telemetry == "off"
        running = start_typing_bot(
            server,
            settings,
            text_lines=True,
            tools=[clock_tool()],
            tracer_provider=otel.tracer_provider,
            meter_provider=otel.meter_provider,
        )
        await running.type("What time is it in Oslo?")
        await running.until(lambda: running.view.assistant)
        assert await running.stop() == 0
    assert running.bot.telemetry is None
    assert running.view.assistant[-1][1] == "It is noon in Oslo."
    assert otel.finished() == ()
    assert otel.points() == {}
