"""OpenTelemetry spans and metrics of a conversation (``telemetry: otlp``, the ``[otel]`` extra).

Imported only when telemetry is on. `Telemetry` is fed what the session core reported
(`VoiceBot.subscribe`, every action after it was performed) and the latency samples of
`LatencyTracker` (`LatencyTracker.add_listener`); it decides nothing and never touches the
conversation. Each callback does a dictionary lookup and, for the few actions it traces, starts
or ends a span; no I/O happens here: the SDK exports in its own threads.

One trace per turn (a user's utterance or typed line and everything the bot did about it)::

    voicebot.turn                       speech start (or typed line) -> listening again
    ├── voicebot.user_speech            speech_started -> speech_stopped
    ├── voicebot.transcription          speech_stopped -> the user's transcript
    ├── voicebot.response               reply due (speech end, response.create) -> response.done
    │   ├── voicebot.first_delta        reply due -> the model's first delta
    │   ├── voicebot.first_sample       first audio delta -> its first sample played
    │   └── voicebot.tool_call          the function call -> its result (or cancelled)
    ├── voicebot.barge_in               barge-in decided -> the reply silent
    └── voicebot.compaction             compaction started -> summary confirmed (or not)
        └── voicebot.summarize          the summarizer call

Attributes are ids, counts, tokens, cost and outcomes; never a key, and never what was said
unless ``telemetry_content`` is set (then transcripts, replies, typed lines and tool
arguments, passed through `redact` as logs are). Metrics: the latencies as histograms
(``voicebot.latency.*``, seconds), ``voicebot.tokens`` by kind, ``voicebot.cost`` (USD), and
counters of turns, barge-ins, tool calls and compactions.

The providers are either given (tests, an application that embeds the bot) or built from the
standard ``OTEL_*`` environment: ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` (default
``otlp``; ``console``, ``none`` or any installed exporter's entry point name),
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf`` by default, or ``grpc``), and whatever each
exporter reads itself (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``_HEADERS``, ``_TIMEOUT``...),
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_SDK_DISABLED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
from opentelemetry.metrics import Counter, Histogram, Meter, MeterProvider
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
)
from opentelemetry.trace import Span, Status, StatusCode, TracerProvider

from realtime_voicebot import __version__
from realtime_voicebot.core import actions as a
from realtime_voicebot.errors import UserError
from realtime_voicebot.metrics import (
    BARGE_IN_TO_SILENCE,
    FIRST_DELTA_TO_FIRST_SAMPLE,
    LATENCY_NAMES,
    LatencySample,
    Prices,
    billed_tokens,
)
from realtime_voicebot.redact import redact
from realtime_voicebot.transport.events import is_conversation_response_create
from realtime_voicebot.transport.payloads import Usage

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    from realtime_voicebot.config import Settings

__all__ = ["SPAN_NAMES", "Telemetry", "providers_from_environment"]

log = structlog.get_logger(component="telemetry")

INSTRUMENTATION_NAME = "realtime_voicebot"
DEFAULT_SERVICE_NAME = "voicebot"
DEFAULT_OTLP_PROTOCOL = "http/protobuf"
"""The OpenTelemetry specification's default (the Python auto-configuration's is grpc)."""
OTLP_EXPORTERS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
FLUSH_TIMEOUT_MS = 3_000
SHUTDOWN_TIMEOUT_S = 5.0
"""Longest wait at exit for the last export (an unreachable collector is given up)."""
KEPT = 64
MAX_TEXT_CHARS = 4096
"""Characters of a reply kept for its span with ``telemetry_content``."""
"""Items, transcripts and tool calls remembered at most (oldest forgotten first)."""

SPAN_TURN = "voicebot.turn"
SPAN_USER_SPEECH = "voicebot.user_speech"
SPAN_TRANSCRIPTION = "voicebot.transcription"
SPAN_RESPONSE = "voicebot.response"
SPAN_FIRST_DELTA = "voicebot.first_delta"
SPAN_FIRST_SAMPLE = "voicebot.first_sample"
SPAN_TOOL_CALL = "voicebot.tool_call"
SPAN_BARGE_IN = "voicebot.barge_in"
SPAN_COMPACTION = "voicebot.compaction"
SPAN_SUMMARIZE = "voicebot.summarize"
SPAN_NAMES = (
    SPAN_TURN,
    SPAN_USER_SPEECH,
    SPAN_TRANSCRIPTION,
    SPAN_RESPONSE,
    SPAN_FIRST_DELTA,
    SPAN_FIRST_SAMPLE,
    SPAN_TOOL_CALL,
    SPAN_BARGE_IN,
    SPAN_COMPACTION,
    SPAN_SUMMARIZE,
)

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
TOKEN_KINDS = (
    "text_input",
    "text_cached",
    "audio_input",
    "audio_cached",
    "text_output",
    "audio_output",
)

# --- providers from the standard environment ----------------------------------------------------


def providers_from_environment() -> tuple[SdkTracerProvider, SdkMeterProvider]:
    """A tracer and a meter provider exporting as the ``OTEL_*`` variables say.

    Raises UserError (one line) for an exporter that is not installed or cannot start.
    """
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = _resource()
    tracer_provider = SdkTracerProvider(resource=resource, shutdown_on_exit=False)
    for exporter in _exporters("traces"):
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    readers = [
        exporter if isinstance(exporter, MetricReader) else PeriodicExportingMetricReader(exporter)
        for exporter in _exporters("metrics")
    ]
    meter_provider = SdkMeterProvider(
        resource=resource, metric_readers=readers, shutdown_on_exit=False
    )
    return tracer_provider, meter_provider


def _resource() -> Any:
    """``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``; ``voicebot`` and our version when
    they do not say."""
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    detected = Resource.create()
    defaults: dict[str, str] = {}
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        defaults[SERVICE_NAME] = DEFAULT_SERVICE_NAME
    if SERVICE_VERSION not in detected.attributes:
        defaults[SERVICE_VERSION] = __version__
    return detected.merge(Resource(defaults))


def _exporters(signal: str) -> list[Any]:
    """The exporters ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` name (default otlp),
    loaded from their entry points as the SDK's own configuration does."""
    variable = OTEL_TRACES_EXPORTER if signal == "traces" else OTEL_METRICS_EXPORTER
    names = [n.strip() for n in (os.environ.get(variable) or "otlp").split(",") if n.strip()]
    exporters = []
    for name in names:
        if name.lower() == "none":
            continue
        entry_name = _otlp_entry_name(signal) if name == "otlp" else name
        group = f"opentelemetry_{signal}_exporter"
        found = list(entry_points(group=group, name=entry_name))
        if not found:
            raise UserError(
                f"{variable}={name}: no OpenTelemetry {signal} exporter {entry_name!r} is "
                f"installed; pip install 'realtime_voicebot[otel]' or choose another"
            )
        try:
            exporters.append(found[0].load()())
        except Exception as exc:  # a bad endpoint, a missing transport: the user's to fix
            detail = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise UserError(f"cannot start the OpenTelemetry exporter {name}: {detail}") from None
    return exporters


def _otlp_entry_name(signal: str) -> str:
    specific = (
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
        if signal == "traces"
        else OTEL_EXPORTER_OTLP_METRICS_PROTOCOL
    )
    protocol = (
        os.environ.get(specific) or os.environ.get(OTEL_EXPORTER_OTLP_PROTOCOL) or ""
    ).strip() or DEFAULT_OTLP_PROTOCOL
    if protocol not in OTLP_EXPORTERS:
        raise UserError(
            f"OTLP protocol {protocol!r} is not supported here: set {OTEL_EXPORTER_OTLP_PROTOCOL} "
            f"to {' or '.join(OTLP_EXPORTERS)}"
        )
    return OTLP_EXPORTERS[protocol]


# --- what is being traced ------------------------------------------------------------------------


@dataclass
class _Turn:
    span: Span
    context: Context
    number: int
    responses: int = 0


@dataclass
class _Response:
    span: Span
    context: Context
    turn: _Turn
    start_ns: int
    response_id: str | None = None
    item_ids: list[str] = field(default_factory=list)
    first_delta: bool = False
    audio: bool = False
    """Audio came: the turn goes on while it plays (until the bot listens again)."""
    first_text_delta_ns: int | None = None
    truncated: bool = False
    reply_text: list[str] = field(default_factory=list)
    """What the model said (``telemetry_content`` only), up to `MAX_TEXT_CHARS`."""
    reply_chars: int = 0


@dataclass
class _BargeIn:
    parent: Context
    start_ns: int
    item_id: str
    played_ms: float
    cause: str


@dataclass
class _Compaction:
    span: Span
    context: Context
    summarize: Span | None = None


class Telemetry:
    """Spans and metrics of one conversation; see the module docstring.

    ``clock`` is `time.monotonic` (the latency samples' clock); span times are that clock
    moved onto the wall clock once, at start. ``owned`` providers are flushed and shut down
    by `aclose`; given ones belong to whoever gave them.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        *,
        prices: Prices | None = None,
        content: bool = False,
        summarizer: str = "",
        clock: Callable[[], float] = time.monotonic,
        owned: tuple[SdkTracerProvider, SdkMeterProvider] | None = None,
    ) -> None:
        self._tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME, __version__)
        self._prices = prices or Prices()
        self._content = content
        self._summarizer = summarizer
        self._clock = clock
        self._owned = owned
        self._offset_ns = time.time_ns() - round(clock() * 1e9)
        self._instruments(meter_provider.get_meter(INSTRUMENTATION_NAME, __version__))

        self._session = 0
        self._turns = 0
        self._turn: _Turn | None = None
        self._last_turn: _Turn | None = None
        self._answered_turn: _Turn | None = None
        """The turn of the latest response that ended (a compaction follows a response)."""
        self._speech: Span | None = None
        self._transcripts: OrderedDict[str, tuple[int, Context]] = OrderedDict()
        self._due: tuple[int, _Turn] | None = None
        """When a reply became due, and for which turn; taken by the next response."""
        self._response: _Response | None = None
        self._items: OrderedDict[str, _Response] = OrderedDict()
        self._tools: OrderedDict[str, tuple[Span, str]] = OrderedDict()
        """Open tool call spans and their tool names, by call id."""
        self._barge_in: _BargeIn | None = None
        self._compactions: dict[int, _Compaction] = {}
        self._handlers: dict[type[a.Action], Callable[[Any], None]] = {
            a.SessionBegan: self._session_began,
            a.SpeechStarted: self._speech_started,
            a.SpeechEnded: self._speech_ended,
            a.UserTurn: self._user_turn,
            a.Send: self._send,
            a.ResponseCreated: self._response_created,
            a.ReplyStarted: self._reply_started,
            a.ReplyDelta: self._reply_delta,
            a.ResponseFinished: self._response_finished,
            a.StatusChanged: self._status_changed,
            a.BargeIn: self._barge_in_decided,
            a.ToolCallStarted: self._tool_started,
            a.ToolCallFinished: self._tool_finished,
            a.CancelTool: self._tool_cancelled,
            a.CompactionStarted: self._compaction_started,
            a.Summarize: self._summarize,
            a.SummaryAsked: self._summarize,
            a.SummaryReady: self._summary_ready,
            a.Compacted: self._compacted,
            a.CompactionFailed: self._compaction_failed,
            a.ErrorReported: self._error_reported,
        }

    @classmethod
    def start(
        cls,
        settings: Settings,
        prices: Prices,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> Telemetry:
        """Telemetry for a run: the given providers, else ones built from ``OTEL_*``."""
        owned = None
        if tracer_provider is None or meter_provider is None:
            owned = providers_from_environment()
            tracer_provider = tracer_provider or owned[0]
            meter_provider = meter_provider or owned[1]
        log.info("telemetry_started", content=settings.telemetry_content)
        return cls(
            tracer_provider,
            meter_provider,
            prices=prices,
            content=settings.telemetry_content,
            summarizer=settings.summarizer,
            owned=owned,
        )

    def _instruments(self, meter: Meter) -> None:
        self._latency: dict[str, Histogram] = {
            name: meter.create_histogram(
                f"voicebot.latency.{name}",
                unit="s",
                description=f"Latency {name.replace('_', ' ')}.",
                explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
            )
            for name in LATENCY_NAMES
        }
        self._tokens: Counter = meter.create_counter(
            "voicebot.tokens", unit="{token}", description="Tokens billed, by kind."
        )
        self._cost: Counter = meter.create_counter(
            "voicebot.cost", unit="USD", description="Cost of the responses at the set prices."
        )
        self._turn_count: Counter = meter.create_counter(
            "voicebot.turns", unit="{turn}", description="User turns, by input."
        )
        self._barge_in_count: Counter = meter.create_counter(
            "voicebot.barge_ins", unit="{barge_in}", description="Replies cut by the user."
        )
        self._tool_count: Counter = meter.create_counter(
            "voicebot.tool_calls", unit="{call}", description="Tool calls, by tool and outcome."
        )
        self._compaction_count: Counter = meter.create_counter(
            "voicebot.compactions", unit="{compaction}", description="Compactions, by outcome."
        )

    # --- inputs ------------------------------------------------------------------------------

    def on_action(self, action: a.Action) -> None:
        """One action the core returned, after the app performed it (`VoiceBot.subscribe`)."""
        handler = self._handlers.get(type(action))
        if handler is not None:
            handler(action)

    def on_latency(self, sample: LatencySample) -> None:
        """One latency sample (`LatencyTracker.add_listener`)."""
        histogram = self._latency.get(sample.name)
        if histogram is not None:
            histogram.record(sample.seconds)
        end_ns = self._ns(sample.at)
        start_ns = end_ns - round(sample.seconds * 1e9)
        if sample.name == FIRST_DELTA_TO_FIRST_SAMPLE and sample.item_id is not None:
            response = self._items.get(sample.item_id)
            if response is not None:
                attributes = {"voicebot.item_id": sample.item_id}
                self._span(SPAN_FIRST_SAMPLE, response.context, start_ns, attributes).end(end_ns)
        elif sample.name == BARGE_IN_TO_SILENCE and self._barge_in is not None:
            barge_in, self._barge_in = self._barge_in, None
            self._end_barge_in(barge_in, start_ns, end_ns, silenced=True)

    async def aclose(self) -> None:
        """End what is still open, then flush and shut down the providers we built, off the
        event loop (bounded by the exporters' own timeouts and `SHUTDOWN_TIMEOUT_S`)."""
        self.end_open_spans("shutdown")
        owned, self._owned = self._owned, None
        if owned is None:
            return
        # A daemon thread, not the loop's executor: an unreachable collector may hold it for
        # the exporters' timeouts, and the process must still exit after SHUTDOWN_TIMEOUT_S.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def shut_down() -> None:
            try:
                _shut_down(*owned)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    loop.call_soon_threadsafe(_resolve, done)

        threading.Thread(target=shut_down, name="otel-shutdown", daemon=True).start()
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                await done
        except TimeoutError:
            log.warning(
                "telemetry_export_unfinished",
                waited_s=SHUTDOWN_TIMEOUT_S,
                hint="is the collector at OTEL_EXPORTER_OTLP_ENDPOINT reachable?",
            )

    def end_open_spans(self, reason: str) -> None:
        """End every span still open (at exit), marked with ``reason``."""
        now = self._now()
        if self._barge_in is not None:
            barge_in, self._barge_in = self._barge_in, None
            self._end_barge_in(barge_in, barge_in.start_ns, barge_in.start_ns, silenced=False)
        for call_id in list(self._tools):
            self._end_tool(call_id, reason, now)
        for job_id in list(self._compactions):
            self._end_compaction(job_id, reason, now)
        if self._response is not None:
            self._response.span.set_attribute("voicebot.response.status", reason)
            self._response.span.end(now)
            self._response = None
        if self._speech is not None:
            self._speech.end(now)
            self._speech = None
        self._end_turn(reason, now)

    # --- turns -------------------------------------------------------------------------------

    def _new_turn(self, source: str, now: int) -> _Turn:
        self._end_turn("next_turn", now)
        self._turns += 1
        attributes: dict[str, Any] = {
            "voicebot.turn.number": self._turns,
            "voicebot.turn.input": source,
            "voicebot.session.number": self._session,
        }
        span = self._span(SPAN_TURN, Context(), now, attributes)  # a root: a trace per turn
        turn = _Turn(span, trace.set_span_in_context(span, Context()), self._turns)
        self._turn = self._last_turn = turn
        self._turn_count.add(1, {"voicebot.turn.input": source})
        return turn

    def _current_turn(self, now: int) -> _Turn:
        """The open turn; one without a user input when the bot acts on its own."""
        return self._turn if self._turn is not None else self._new_turn("none", now)

    def _end_turn(self, reason: str, now: int) -> None:
        turn, self._turn = self._turn, None
        if turn is None:
            return
        turn.span.set_attributes(
            {"voicebot.turn.end": reason, "voicebot.turn.responses": turn.responses}
        )
        turn.span.end(now)

    def _maybe_end_turn(self, now: int, turn: _Turn | None = None) -> None:
        """Nothing owed, nothing running, the user silent: the turn (``turn`` only if it is
        still the current one) is over."""
        if turn is not None and turn is not self._turn:
            return
        idle = self._response is None and self._due is None
        if idle and not self._tools and self._speech is None:
            self._end_turn("listening", now)

    def _session_began(self, action: a.SessionBegan) -> None:
        now = self._now()
        self._session = action.number
        if action.number <= 1:
            return
        # A new, blank session: what ran in the old one is gone (the core re-seeds it).
        for job_id in list(self._compactions):
            self._end_compaction(job_id, "abandoned", now)
        if self._response is not None:
            self._response.span.set_attribute("voicebot.response.status", "session_ended")
            self._response.span.end(now)
            self._response = None

    def _speech_started(self, action: a.SpeechStarted) -> None:
        now = self._now()
        turn = self._new_turn("speech", now)
        if self._speech is not None:
            self._speech.end(now)
        self._speech = self._span(SPAN_USER_SPEECH, turn.context, now, _item(action.item_id))
        if action.item_id is not None:
            turn.span.set_attribute("voicebot.user.item_id", action.item_id)

    def _speech_ended(self, action: a.SpeechEnded) -> None:
        now = self._now()
        turn = self._current_turn(now)
        if self._speech is not None:
            self._speech.end(now)
            self._speech = None
        self._due = (now, turn)
        if action.item_id is not None:
            self._remember(self._transcripts, action.item_id, (now, turn.context))

    def _user_turn(self, action: a.UserTurn) -> None:
        now = self._now()
        if action.typed:
            turn = self._new_turn("typed", now)
            if action.item_id is not None:
                turn.span.set_attribute("voicebot.user.item_id", action.item_id)
            if self._content:
                turn.span.set_attribute("voicebot.user.text", redact(action.text))
            return
        pending = self._transcripts.pop(action.item_id, None) if action.item_id else None
        if pending is None:
            return
        start_ns, parent = pending
        attributes: dict[str, Any] = {
            "voicebot.item_id": action.item_id,
            "voicebot.transcript.chars": len(action.text),
        }
        if self._content:
            attributes["voicebot.transcript.text"] = redact(action.text)
        self._span(SPAN_TRANSCRIPTION, parent, start_ns, attributes).end(now)

    def _send(self, action: a.Send) -> None:
        if is_conversation_response_create(action.event):
            now = self._now()
            self._due = (now, self._current_turn(now))

    # --- responses ---------------------------------------------------------------------------

    def _response_created(self, action: a.ResponseCreated) -> None:
        now = self._now()
        running = self._response
        if running is not None and running.response_id not in (None, action.response_id):
            # Its response.done never came (one response at a time): it is over.
            running.span.set_attribute("voicebot.response.status", "unknown")
            running.span.end(now)
            self._response = None
        response = self._open_response(now)
        response.response_id = action.response_id
        response.span.set_attribute("gen_ai.response.id", action.response_id)

    def _open_response(self, now: int) -> _Response:
        """The response running now; a new one starts when the reply became due."""
        if self._response is not None:
            return self._response
        due, self._due = self._due, None
        start_ns, turn = due if due is not None else (now, self._current_turn(now))
        span = self._span(SPAN_RESPONSE, turn.context, start_ns)
        turn.responses += 1
        response = _Response(span, trace.set_span_in_context(span, turn.context), turn, start_ns)
        self._response = response
        return response

    def _reply_started(self, action: a.ReplyStarted) -> None:
        """The first audio of a reply: the model's first delta (text deltas count when no
        audio comes, in text mode)."""
        now = self._now()
        response = self._open_response(now)
        response.audio = True
        self._add_item(response, action.item_id)
        if not response.first_delta:
            self._first_delta(response, action.item_id, "audio", now)

    def _reply_delta(self, action: a.ReplyDelta) -> None:
        now = self._now()
        response = self._open_response(now)
        self._add_item(response, action.item_id)
        if response.first_text_delta_ns is None:
            response.first_text_delta_ns = now
        if self._content and response.reply_chars < MAX_TEXT_CHARS:
            response.reply_text.append(action.text[: MAX_TEXT_CHARS - response.reply_chars])
            response.reply_chars += len(response.reply_text[-1])

    def _first_delta(self, response: _Response, item_id: str, kind: str, end_ns: int) -> None:
        response.first_delta = True
        attributes = {"voicebot.item_id": item_id, "voicebot.delta.kind": kind}
        self._span(SPAN_FIRST_DELTA, response.context, response.start_ns, attributes).end(end_ns)

    def _response_finished(self, action: a.ResponseFinished) -> None:
        now = self._now()
        response = self._open_response(now)
        self._response = None
        self._answered_turn = response.turn
        if not response.first_delta and response.first_text_delta_ns is not None:
            item = response.item_ids[0] if response.item_ids else ""
            self._first_delta(response, item, "text", response.first_text_delta_ns)
        attributes: dict[str, Any] = {
            "voicebot.response.status": action.status,
            "voicebot.window_tokens": action.window_tokens,
            "voicebot.reply.truncated": response.truncated,
        }
        if response.item_ids:
            attributes["voicebot.reply.item_ids"] = response.item_ids
        if action.response_id is not None:
            attributes["gen_ai.response.id"] = action.response_id
        if response.reply_text:
            attributes["voicebot.reply.text"] = redact("".join(response.reply_text))
        if action.usage is not None:
            attributes.update(self._count_usage(action.usage))
        response.span.set_attributes(attributes)
        if action.status == "failed":
            response.span.set_status(Status(StatusCode.ERROR, "response failed"))
        response.span.end(now)
        if not response.audio:  # nothing to play: answered once nothing more is owed
            self._maybe_end_turn(now, response.turn)

    def _count_usage(self, usage: Usage) -> dict[str, Any]:
        """Count a response's tokens and cost in the metrics; its span attributes."""
        billed = billed_tokens(usage)
        for kind in TOKEN_KINDS:
            count = getattr(billed, kind)
            if count:
                self._tokens.add(count, {"voicebot.token.kind": kind})
        cost = billed.cost(self._prices)
        self._cost.add(cost)
        return {
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "voicebot.usage.cached_input_tokens": round(billed.cached),
            **{f"voicebot.tokens.{kind}": round(getattr(billed, kind)) for kind in TOKEN_KINDS},
            "voicebot.cost_usd": cost,
        }

    def _add_item(self, response: _Response, item_id: str) -> None:
        if item_id not in self._items:
            response.item_ids.append(item_id)
            self._remember(self._items, item_id, response)

    def _status_changed(self, action: a.StatusChanged) -> None:
        if action.status == "listening":
            self._maybe_end_turn(self._now())

    # --- barge-in ----------------------------------------------------------------------------

    def _barge_in_decided(self, action: a.BargeIn) -> None:
        now = self._now()
        if self._barge_in is not None:  # a newer flush: the older one is never timed
            previous, self._barge_in = self._barge_in, None
            self._end_barge_in(previous, previous.start_ns, previous.start_ns, silenced=False)
        response = self._items.get(action.item_id)
        if response is not None:
            response.truncated = True
            parent = response.turn.context
        else:
            parent = self._current_turn(now).context
        self._barge_in = _BargeIn(parent, now, action.item_id, action.played_ms, action.cause)
        self._barge_in_count.add(1, {"voicebot.barge_in.cause": action.cause})

    def _end_barge_in(self, barge_in: _BargeIn, start_ns: int, end_ns: int, silenced: bool) -> None:
        attributes = {
            "voicebot.item_id": barge_in.item_id,
            "voicebot.barge_in.played_ms": round(barge_in.played_ms),
            "voicebot.barge_in.cause": barge_in.cause,
            "voicebot.barge_in.silenced": silenced,
        }
        self._span(SPAN_BARGE_IN, barge_in.parent, start_ns, attributes).end(end_ns)

    # --- tool calls --------------------------------------------------------------------------

    def _tool_started(self, action: a.ToolCallStarted) -> None:
        now = self._now()
        parent = self._tool_parent(now)
        attributes: dict[str, Any] = {
            "gen_ai.tool.call.id": action.call_id,
            "gen_ai.tool.name": action.name or "",
            "voicebot.tool.arguments_chars": len(action.arguments),
        }
        if self._content:
            attributes["voicebot.tool.arguments"] = redact(action.arguments)
        span = self._span(SPAN_TOOL_CALL, parent, now, attributes)
        self._tools[action.call_id] = (span, action.name or "")
        while len(self._tools) > KEPT:
            self._end_tool(next(iter(self._tools)), "forgotten", now)

    def _tool_parent(self, now: int) -> Context:
        if self._response is not None:
            return self._response.context
        return self._current_turn(now).context

    def _tool_finished(self, action: a.ToolCallFinished) -> None:
        entry = self._tools.get(action.call_id)
        if entry is not None:
            entry[0].set_attribute("voicebot.tool.output_chars", action.output_chars)
            self._end_tool(action.call_id, action.outcome, self._now())

    def _tool_cancelled(self, action: a.CancelTool) -> None:
        if action.call_id in self._tools:
            self._end_tool(action.call_id, "cancelled", self._now())

    def _end_tool(self, call_id: str, outcome: str, now: int) -> None:
        span, name = self._tools.pop(call_id)
        span.set_attribute("voicebot.tool.outcome", outcome)
        if outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end(now)
        self._tool_count.add(1, {"gen_ai.tool.name": name, "voicebot.tool.outcome": outcome})

    # --- compaction --------------------------------------------------------------------------

    def _compaction_started(self, action: a.CompactionStarted) -> None:
        now = self._now()
        turn = self._answered_turn or self._turn or self._last_turn
        parent = turn.context if turn is not None else Context()
        attributes = {
            "voicebot.compaction.job_id": action.job_id,
            "voicebot.compaction.reason": action.reason,
            "voicebot.compaction.items_to_delete": action.items,
        }
        span = self._span(SPAN_COMPACTION, parent, now, attributes)
        self._compactions[action.job_id] = _Compaction(span, trace.set_span_in_context(span))
        while len(self._compactions) > 4:
            self._end_compaction(next(iter(self._compactions)), "forgotten", now)

    def _summarize(self, action: a.Summarize | a.SummaryAsked) -> None:
        """A summary begins: the session's own (`SummaryAsked`), the summarizer's, or the
        fallback's after the session's did not come (which ends that one's span)."""
        compaction = self._compactions.get(action.job_id)
        if compaction is None:
            return
        now = self._now()
        if isinstance(action, a.SummaryAsked):
            inputs, previous, writer = action.inputs, action.previous_summary, "realtime"
        else:
            inputs, previous = len(action.inputs), action.previous_summary is not None
            writer = "extractive" if action.fallback else self._summarizer
        if compaction.summarize is not None:  # the session's summary did not come
            compaction.summarize.set_attribute("voicebot.summary.fallback", True)
            compaction.summarize.end(now)
        attributes: dict[str, Any] = {
            "voicebot.summary.inputs": inputs,
            "voicebot.summary.previous": previous,
            "voicebot.summary.language": action.language,
            "voicebot.summarizer": writer,
        }
        compaction.summarize = self._span(SPAN_SUMMARIZE, compaction.context, now, attributes)

    def _summary_ready(self, action: a.SummaryReady) -> None:
        compaction = self._compactions.get(action.job_id)
        if compaction is None or compaction.summarize is None:
            return
        compaction.summarize.set_attributes(
            {
                "voicebot.summary.chars": action.summary_chars,
                "voicebot.summary.fallback": action.fallback,
            }
        )
        compaction.summarize.end(self._now())
        compaction.summarize = None

    def _compacted(self, action: a.Compacted) -> None:
        compaction = self._compactions.get(action.job_id)
        if compaction is None:
            return
        compaction.span.set_attributes(
            {
                "voicebot.compaction.items_summarized": action.items,
                "voicebot.summary.chars": action.summary_chars,
                "voicebot.summary.fallback": action.fallback,
            }
        )
        self._end_compaction(action.job_id, "compacted", self._now())

    def _compaction_failed(self, action: a.CompactionFailed) -> None:
        if action.job_id in self._compactions:
            self._end_compaction(action.job_id, "failed", self._now())

    def _end_compaction(self, job_id: int, outcome: str, now: int) -> None:
        compaction = self._compactions.pop(job_id)
        if compaction.summarize is not None:
            compaction.summarize.set_attribute("voicebot.summary.outcome", outcome)
            compaction.summarize.end(now)
        compaction.span.set_attribute("voicebot.compaction.outcome", outcome)
        if outcome == "failed":
            compaction.span.set_status(Status(StatusCode.ERROR, "summary not confirmed"))
        compaction.span.end(now)
        self._compaction_count.add(1, {"voicebot.compaction.outcome": outcome})

    def _error_reported(self, action: a.ErrorReported) -> None:
        if self._turn is not None:
            self._turn.span.add_event(
                "voicebot.error", {"voicebot.error.code": action.code}, self._now()
            )

    # --- helpers -----------------------------------------------------------------------------

    def _now(self) -> int:
        return self._ns(self._clock())

    def _ns(self, monotonic_s: float) -> int:
        return round(monotonic_s * 1e9) + self._offset_ns

    def _span(
        self,
        name: str,
        parent: Context,
        start_ns: int,
        attributes: dict[str, Any] | None = None,
    ) -> Span:
        return self._tracer.start_span(
            name, context=parent, attributes=attributes, start_time=start_ns
        )

    @staticmethod
    def _remember(store: OrderedDict[str, Any], key: str, value: Any) -> None:
        store[key] = value
        while len(store) > KEPT:
            store.popitem(last=False)


def _item(item_id: str | None) -> dict[str, Any]:
    return {} if item_id is None else {"voicebot.item_id": item_id}


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _shut_down(tracer_provider: SdkTracerProvider, meter_provider: SdkMeterProvider) -> None:
    """In a worker thread: export what is left, then stop the exporters."""
    tracer_provider.force_flush(FLUSH_TIMEOUT_MS)
    tracer_provider.shutdown()
    meter_provider.shutdown(timeout_millis=FLUSH_TIMEOUT_MS)
