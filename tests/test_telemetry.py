"""The tracer fed by the real session core, one input at a time, on a clock the test moves.

`Traced` drives the tests' `Conversation` (a `SessionCore` fed scripted server events) and
hands every action to `Telemetry` after each input, as `VoiceBot.subscribe` does; the SDK's
in-memory exporter and metric reader collect what it produced. Then: the OTEL_* environment
(which exporter, which protocol), a real OTLP/HTTP collector receiving a run's spans and
metrics at exit, the one line when the extra is missing, and nothing imported when off.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from realtime_voicebot.core import Playback
from realtime_voicebot.core import actions as a
from realtime_voicebot.errors import UserError
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.metrics import (
    BARGE_IN_TO_SILENCE,
    FIRST_DELTA_TO_FIRST_SAMPLE,
    LatencySample,
    Prices,
    billed_tokens,
)
from realtime_voicebot.telemetry import Telemetry, _exporters
from realtime_voicebot.testing import start_bot, test_settings
from realtime_voicebot.tools.runner import ToolResult
from realtime_voicebot.transport.payloads import parse_usage

from .state_helpers import Conversation, usage

JSON = dict[str, Any]
MS = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Traced:
    """A core whose actions feed a `Telemetry`, input by input."""

    def __init__(self, conv: Conversation, *, content: bool = False) -> None:
        self.conv = conv
        self.clock = Clock()
        self.exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.telemetry = Telemetry(
            tracer_provider,
            MeterProvider(metric_readers=[self.reader]),
            prices=Prices(),
            content=content,
            summarizer="extractive",
            clock=self.clock,
        )
        self.fed = 0
        self.feed()

    def feed(self, then_s: float = 0.1) -> int:
        """Hand the new actions to the tracer; then ``then_s`` passes. When they were fed
        (ns, as the spans count it)."""
        for action in self.conv.actions[self.fed :]:
            self.telemetry.on_action(action)
        self.fed = len(self.conv.actions)
        at = self.ns()
        self.clock.now += then_s
        return at

    def sample(self, name: str, seconds: float, item_id: str | None = None) -> None:
        self.telemetry.on_latency(LatencySample(name, seconds, self.clock.now, item_id))

    def ns(self) -> int:
        return self.telemetry._now()

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return sorted(
            (s for s in found if name is None or s.name == name), key=lambda s: s.start_time or 0
        )

    def children(self, parent: ReadableSpan, name: str) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans(name)
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]

    def counter(self, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
        data = self.reader.get_metrics_data()
        values: dict[tuple[tuple[str, Any], ...], float] = {}
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            values[tuple(sorted(point.attributes.items()))] = point.value
        return values


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def echo_typed(conv: Conversation) -> None:
    """The server adds the typed line the core just sent."""
    create = [e for e in conv.sent if e["type"] == "conversation.item.create"][-1]
    item = create["item"]
    text = item["content"][0]["text"]
    conv.apply(conv.srv.item_added(conv.srv.text_item(item["id"], "user", text), conv.last_id))
    conv.last_id = item["id"]


def typed(t: Traced, text: str) -> int:
    conv = t.conv
    conv.take(conv.core.typed_line(text))
    at = t.feed()
    echo_typed(conv)
    t.feed()
    return at


# --- what the core reports --------------------------------------------------------------------


def test_the_core_names_the_user_item_and_the_response() -> None:
    conv = Conversation("ga")
    conv.user_turn("u1", "Hello there.")
    conv.assistant_turn("r1", "a1", "Hi.")
    conv.take(conv.core.typed_line("And you?"))
    kinds = [x for x in conv.actions if isinstance(x, a.SpeechStarted | a.SpeechEnded)]
    assert kinds == [a.SpeechStarted("u1"), a.SpeechEnded("u1")]
    users = [x for x in conv.actions if isinstance(x, a.UserTurn)]
    typed_id = next(e for e in conv.sent if e["type"] == "conversation.item.create")["item"]["id"]
    assert users == [
        a.UserTurn("Hello there.", item_id="u1"),
        a.UserTurn("And you?", True, typed_id),
    ]
    assert [x for x in conv.actions if isinstance(x, a.ResponseCreated)] == [
        a.ResponseCreated("r1")
    ]


def test_an_out_of_band_response_is_not_reported_as_created() -> None:
    conv = Conversation("ga")
    srv = conv.srv
    conv.apply(
        srv.event(
            "response.created",
            response={
                "id": "oob1",
                "object": "realtime.response",
                "status": "in_progress",
                "conversation_id": None,
                "metadata": {"purpose": "summary"},
            },
        )
    )
    conv.apply(srv.response_created("r1"))
    assert [x for x in conv.actions if isinstance(x, a.ResponseCreated)] == [
        a.ResponseCreated("r1")
    ]


# --- turns, responses, barge-in ----------------------------------------------------------------


@pytest.mark.parametrize("content", [False, True])
def test_a_typed_line_over_a_reply_cuts_the_turn_it_interrupts(content: bool) -> None:
    t = Traced(Conversation("ga"), content=content)
    conv = t.conv
    asked = typed(t, "Tell me a story, then mail it to ada@example.com.")
    conv.assistant_turn("r1", "a1", "Once upon a time there was a fox.", finish=False)
    first_delta_at = t.feed(0.05)
    t.sample(FIRST_DELTA_TO_FIRST_SAMPLE, 0.05, "a1")
    conv.playback = Playback("a1", 400.0, audible=True, has_output=True)
    cut = typed(t, "Stop.")
    t.sample(BARGE_IN_TO_SILENCE, 0.1)
    conv.playback = Playback(has_output=True)
    conv.apply(conv.srv.response_done("r1", status="cancelled", usage=usage(300, 20)))
    conv.apply(conv.srv.response_created("r2"))
    t.feed()
    t.telemetry.end_open_spans("shutdown")

    first, second = t.spans("voicebot.turn")
    assert attrs(first)["voicebot.turn.input"] == attrs(second)["voicebot.turn.input"] == "typed"
    assert first.start_time == asked and first.end_time == second.start_time == cut
    assert attrs(first)["voicebot.turn.end"] == "next_turn"
    assert attrs(second)["voicebot.turn.end"] == "shutdown"
    (story,) = t.children(first, "voicebot.response")
    assert story.start_time == asked  # the reply was due when the line was sent
    assert attrs(story)["gen_ai.response.id"] == "r1"
    assert attrs(story)["voicebot.response.status"] == "cancelled"
    assert attrs(story)["voicebot.reply.truncated"] is True
    assert attrs(story)["gen_ai.usage.input_tokens"] == 300
    (first_delta,) = t.children(story, "voicebot.first_delta")
    assert (first_delta.start_time, first_delta.end_time) == (asked, first_delta_at)
    (first_sample,) = t.children(story, "voicebot.first_sample")
    assert (first_sample.start_time, first_sample.end_time) == (
        first_delta_at,
        first_delta_at + 50 * MS,
    )
    # The barge-in came after the new turn began, yet belongs to the turn it cut.
    (barge_in,) = t.children(first, "voicebot.barge_in")
    assert not t.children(second, "voicebot.barge_in")
    assert attrs(barge_in) == {
        "voicebot.item_id": "a1",
        "voicebot.barge_in.played_ms": 400,
        "voicebot.barge_in.cause": "typed",
        "voicebot.barge_in.silenced": True,
    }
    assert barge_in.end_time - barge_in.start_time == 100 * MS
    # The answer to the second line is the second turn's.
    (answer,) = t.children(second, "voicebot.response")
    assert attrs(answer)["gen_ai.response.id"] == "r2"
    assert attrs(answer)["voicebot.response.status"] == "shutdown"

    everything = json.dumps([attrs(s) for s in t.spans()])
    assert "ada@example.com" not in everything
    if content:
        assert attrs(first)["voicebot.user.text"] == "Tell me a story, then mail it to [email]."
        assert attrs(second)["voicebot.user.text"] == "Stop."
        assert attrs(story)["voicebot.reply.text"].startswith("Once upon a time")
    else:
        assert "story" not in everything and "Stop" not in everything and "fox" not in everything


def test_spoken_turns_end_when_the_bot_listens_again_and_count_their_tokens() -> None:
    t = Traced(Conversation("ga"))
    t.conv.exchange(3, tokens=5000)
    t.feed()
    turns = t.spans("voicebot.turn")
    assert [attrs(x)["voicebot.user.item_id"] for x in turns] == ["u0", "u1", "u2"]
    for turn, tag in zip(turns, "012", strict=True):
        assert attrs(turn)["voicebot.turn.end"] == "listening"
        assert attrs(turn)["voicebot.turn.responses"] == 1
        (speech,) = t.children(turn, "voicebot.user_speech")
        (transcription,) = t.children(turn, "voicebot.transcription")
        assert attrs(speech) == {"voicebot.item_id": f"u{tag}"}
        assert attrs(transcription) == {
            "voicebot.item_id": f"u{tag}",
            "voicebot.transcript.chars": len(f"My order number {tag} ships to Paris?"),
        }
        (response,) = t.children(turn, "voicebot.response")
        assert attrs(response)["voicebot.reply.item_ids"] == (f"a{tag}",)
        assert attrs(response)["gen_ai.usage.output_tokens"] == 10
    billed = billed_tokens(parse_usage(usage(5000, 10)) or {})
    tokens = t.counter("voicebot.tokens")
    assert tokens == {
        (("voicebot.token.kind", "text_input"),): 3 * billed.text_input,
        (("voicebot.token.kind", "text_output"),): 3 * billed.text_output,
    }
    assert t.counter("voicebot.cost") == {(): pytest.approx(3 * billed.cost(Prices()))}
    assert t.counter("voicebot.turns") == {(("voicebot.turn.input", "speech"),): 3}


def test_a_text_reply_times_its_first_text_delta() -> None:
    t = Traced(Conversation("ga"))
    conv, srv = t.conv, t.conv.srv
    asked = typed(t, "Hi.")
    item = srv.text_item("a1", "assistant", "", status="in_progress")
    conv.apply(srv.response_created("r1"), srv.output_item_added("r1", item), srv.item_added(item))
    t.feed()
    conv.apply(srv.text_delta("r1", "a1", "Hello"))
    first = t.feed()
    conv.apply(srv.text_delta("r1", "a1", " there."), srv.text_done("r1", "a1", "Hello there."))
    conv.apply(srv.response_done("r1", output=[srv.text_item("a1", "assistant", "Hello there.")]))
    t.feed()
    (response,) = t.spans("voicebot.response")
    (first_delta,) = t.children(response, "voicebot.first_delta")
    assert attrs(first_delta)["voicebot.delta.kind"] == "text"
    assert (first_delta.start_time, first_delta.end_time) == (asked, first)
    assert attrs(t.spans("voicebot.turn")[0])["voicebot.turn.end"] == "listening"


# --- tool calls ----------------------------------------------------------------------------------


def call(conv: Conversation, response_id: str, call_id: str, name: str) -> None:
    conv.apply(
        conv.srv.event(
            "response.function_call_arguments.done",
            response_id=response_id,
            item_id=f"fc_{call_id}",
            output_index=0,
            call_id=call_id,
            name=name,
            arguments='{"city": "Oslo"}',
        )
    )


def test_tool_calls_under_their_response_finished_or_cancelled() -> None:
    t = Traced(Conversation("ga"))
    conv, srv = t.conv, t.conv.srv
    conv.user_turn("u1", "Time in Oslo?")
    conv.apply(srv.response_created("r1"))
    call(conv, "r1", "c1", "clock")
    t.feed()
    conv.apply(srv.response_done("r1"))
    t.feed()
    output = '{"time": "12:00"}'
    conv.take(conv.core.tool_finished("c1", ToolResult(output, "ok", 0.1)))
    answered = t.feed()
    conv.assistant_turn("r2", "a2", "It is noon.")
    conv.user_turn("u2", "And in Lima?")
    conv.apply(srv.response_created("r3"))
    call(conv, "r3", "c2", "clock")
    t.feed()
    conv.new_session()
    t.feed()

    first, second = t.spans("voicebot.turn")
    asked, answer = t.children(first, "voicebot.response")
    assert answer.start_time == answered  # due when the output and response.create were sent
    (ok,) = t.children(asked, "voicebot.tool_call")
    assert attrs(ok) == {
        "gen_ai.tool.call.id": "c1",
        "gen_ai.tool.name": "clock",
        "voicebot.tool.arguments_chars": len('{"city": "Oslo"}'),
        "voicebot.tool.output_chars": len(output),
        "voicebot.tool.outcome": "ok",
    }
    assert ok.status.status_code is StatusCode.UNSET
    assert attrs(first)["voicebot.turn.end"] == "listening"
    (lost,) = t.children(second, "voicebot.response")
    assert attrs(lost)["voicebot.response.status"] == "session_ended"
    (cancelled,) = t.children(lost, "voicebot.tool_call")
    assert attrs(cancelled)["voicebot.tool.outcome"] == "cancelled"
    assert cancelled.status.status_code is StatusCode.ERROR
    assert t.counter("voicebot.tool_calls") == {
        (("gen_ai.tool.name", "clock"), ("voicebot.tool.outcome", "cancelled")): 1,
        (("gen_ai.tool.name", "clock"), ("voicebot.tool.outcome", "ok")): 1,
    }


# --- compaction ----------------------------------------------------------------------------------


def compaction_started(t: Traced) -> a.Summarize:
    """Ask for a compaction under a low threshold (all but the last two items)."""
    conv = t.conv
    policy = conv.core.policy
    threshold, policy.threshold_tokens = policy.threshold_tokens, 1000
    conv.take(conv.core.compactor.maybe_start())
    policy.threshold_tokens = threshold
    t.feed()
    return [x for x in conv.actions if isinstance(x, a.Summarize)][-1]


def test_a_compaction_whose_summary_is_never_confirmed_is_an_error() -> None:
    t = Traced(Conversation("ga", summary_keep_items=2, summary_threshold=10**9))
    conv = t.conv
    conv.exchange(3, tokens=5000)
    t.feed()
    request = compaction_started(t)
    conv.take(conv.core.summary_ready(request.job_id, "Never confirmed."))
    t.feed()
    compactor = conv.core.compactor
    for _ in range(10):  # nobody answers: every round of resends runs out
        if not compactor.in_flight:
            break
        timers = [x for x in conv.actions if isinstance(x, a.StartTimer) and "confirm" in x.key]
        conv.take(conv.core.timer_fired(timers[-1].key))
        t.feed()
    assert [x for x in conv.actions if isinstance(x, a.CompactionFailed)] == [
        a.CompactionFailed(request.job_id)
    ]
    (compaction,) = t.spans("voicebot.compaction")
    assert compaction.parent is not None
    assert compaction.parent.span_id == t.spans("voicebot.turn")[-1].context.span_id
    assert attrs(compaction)["voicebot.compaction.outcome"] == "failed"
    assert compaction.status.status_code is StatusCode.ERROR
    (summarize,) = t.children(compaction, "voicebot.summarize")
    assert attrs(summarize)["voicebot.summary.chars"] == len("Never confirmed.")
    assert attrs(summarize)["voicebot.summary.inputs"] == len(request.inputs) == 4
    assert t.counter("voicebot.compactions") == {(("voicebot.compaction.outcome", "failed"),): 1}


def test_a_new_session_abandons_the_compaction_in_flight() -> None:
    t = Traced(Conversation("ga", summary_keep_items=2, summary_threshold=10**9))
    conv = t.conv
    conv.exchange(3, tokens=5000)
    t.feed()
    compaction_started(t)
    conv.new_session()
    t.feed()
    (compaction,) = t.spans("voicebot.compaction")
    assert attrs(compaction)["voicebot.compaction.outcome"] == "abandoned"
    (summarize,) = t.children(compaction, "voicebot.summarize")
    assert attrs(summarize)["voicebot.summary.outcome"] == "abandoned"
    assert t.counter("voicebot.compactions") == {(("voicebot.compaction.outcome", "abandoned"),): 1}


# --- the OTEL_* environment ----------------------------------------------------------------------


@pytest.fixture
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def exporter_names(signal: str) -> list[str]:
    return [f"{type(e).__module__}.{type(e).__name__}" for e in _exporters(signal)]


def test_exporters_follow_the_standard_variables(clean_otel_env: pytest.MonkeyPatch) -> None:
    env = clean_otel_env
    http = "opentelemetry.exporter.otlp.proto.http"
    assert exporter_names("traces") == [f"{http}.trace_exporter.OTLPSpanExporter"]
    assert exporter_names("metrics") == [f"{http}.metric_exporter.OTLPMetricExporter"]
    env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    env.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
    assert exporter_names("traces") == [
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter.OTLPSpanExporter"
    ]
    assert exporter_names("metrics") == [f"{http}.metric_exporter.OTLPMetricExporter"]
    env.setenv("OTEL_TRACES_EXPORTER", "console,none")
    env.setenv("OTEL_METRICS_EXPORTER", "none")
    assert exporter_names("traces") == ["opentelemetry.sdk.trace.export.ConsoleSpanExporter"]
    assert exporter_names("metrics") == []


def test_exporters_the_environment_cannot_have_say_what_to_do(
    clean_otel_env: pytest.MonkeyPatch,
) -> None:
    env = clean_otel_env
    env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(UserError, match="OTEL_EXPORTER_OTLP_PROTOCOL to http/protobuf or grpc"):
        _exporters("traces")
    env.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(UserError, match=r"OTEL_TRACES_EXPORTER=zipkin: no OpenTelemetry .*pip"):
        _exporters("traces")


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector: keeps each request's path, headers and decoded body."""

    received: ClassVar[list[tuple[str, dict[str, str], Any]]] = []
    hold = threading.Event()
    """The first trace export waits for this, set by the test's event loop."""
    arrived: ClassVar[Callable[[], None]] = lambda: None
    held_until_released: ClassVar[list[bool]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        message: Any = (
            ExportTraceServiceRequest()
            if self.path == "/v1/traces"
            else ExportMetricsServiceRequest()
        )
        message.ParseFromString(body)
        type(self).received.append((self.path, dict(self.headers), message))
        if self.path == "/v1/traces" and not type(self).held_until_released:
            type(self).arrived()
            type(self).held_until_released.append(type(self).hold.wait(10))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.received = []
    Collector.hold = threading.Event()
    Collector.held_until_released = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    Collector.hold.set()
    server.shutdown()
    thread.join()


async def test_a_run_exports_to_the_otlp_endpoint_of_the_environment_at_exit(
    tmp_path: Path, clean_otel_env: pytest.MonkeyPatch, collector: str
) -> None:
    env = clean_otel_env
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=t0ken")
    env.setenv("OTEL_SERVICE_NAME", "voicebot-under-test")
    env.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # nothing leaves before the exit flush
    async with FakeRealtimeServer() as server:
        settings = test_settings(server, tmp_path, telemetry="otlp")
        running = start_bot(server, settings, text_lines=True)
        await running.type("Hello?")
        await running.until(lambda: running.view.assistant)
        assert not Collector.received
        # The export at exit runs off the loop: the loop hears it began and releases it.
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()
        Collector.arrived = staticmethod(lambda: loop.call_soon_threadsafe(arrived.set))  # type: ignore[assignment]
        running.bot.stop()

        async def release_once_it_arrives() -> None:
            await arrived.wait()
            Collector.hold.set()

        await asyncio.gather(release_once_it_arrives(), running.finish())

    assert Collector.held_until_released == [True]  # the loop released the collector
    paths = [path for path, _, _ in Collector.received]
    assert "/v1/traces" in paths and "/v1/metrics" in paths
    for _, headers, _ in Collector.received:
        assert headers.get("x-collector-token") == "t0ken"
    traces = [m for path, _, m in Collector.received if path == "/v1/traces"]
    names = {
        span.name
        for m in traces
        for rs in m.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }
    assert {"voicebot.turn", "voicebot.response", "voicebot.first_delta"} <= names
    service = {
        attribute.value.string_value
        for m in traces
        for rs in m.resource_spans
        for attribute in rs.resource.attributes
        if attribute.key == "service.name"
    }
    assert service == {"voicebot-under-test"}
    metrics = [m for path, _, m in Collector.received if path == "/v1/metrics"]
    metric_names = {
        metric.name
        for m in metrics
        for rm in m.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    assert {"voicebot.tokens", "voicebot.cost", "voicebot.turns"} <= metric_names


# --- without the extra, and off ------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["opentelemetry", "opentelemetry.sdk"])
async def test_without_the_extra_one_line_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.delitem(sys.modules, "realtime_voicebot.telemetry")
    for name in [m for m in sys.modules if m == missing or m.startswith(missing + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    async with FakeRealtimeServer() as server:
        running = start_bot(server, test_settings(server, tmp_path, telemetry="otlp"))
        assert await running.finish() == 2
    assert running.view.errors == [
        "telemetry otlp needs OpenTelemetry: pip install 'realtime_voicebot[otel]'"
    ]


CONVERSE = """
import asyncio, json, sys, tempfile
from pathlib import Path
from realtime_voicebot.testing import FakeRealtimeServer, FakeServerConfig, start_bot, test_settings

async def main() -> None:
    async with FakeRealtimeServer(FakeServerConfig(speed=0)) as server:
        with tempfile.TemporaryDirectory() as directory:
            settings = test_settings(server, Path(directory), telemetry=sys.argv[1])
            running = start_bot(server, settings, text_lines=True)
            await running.type("Hello?")
            await running.until(lambda: running.view.assistant)
            code = await running.stop()
    loaded = [m for m in sys.modules if m.split(".")[0] == "opentelemetry"]
    loaded += [m for m in sys.modules if m == "realtime_voicebot.telemetry"]
    print(json.dumps({"code": code, "replies": len(running.view.assistant), "loaded": loaded}))

asyncio.run(main())
"""


def converse_in_a_fresh_process(telemetry: str, tmp_path: Path) -> JSON:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
    done = subprocess.run(
        [sys.executable, "-c", CONVERSE, telemetry],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: JSON = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("telemetry", ["off", "otlp"])
def test_off_nothing_of_opentelemetry_is_imported(telemetry: str, tmp_path: Path) -> None:
    result = converse_in_a_fresh_process(telemetry, tmp_path)
    assert result["code"] == 0 and result["replies"] == 1
    if telemetry == "off":
        assert result["loaded"] == []
    else:  # the other side: on, it is (the same script sees it)
        assert "opentelemetry.sdk.trace" in result["loaded"]
        assert "realtime_voicebot.telemetry" in result["loaded"]
