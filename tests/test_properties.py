"""Property tests: arbitrary and malformed server input never breaks the receive path.

* `EventParser` takes any bytes, text or JSON: it never raises, and every frame it does not
  turn into an event is counted as dropped (or ignored) in its stats.
* `SessionCore` takes any sequence of parsed events, typed lines, timers, tool results and
  summaries without raising; the real app's wiring (core, view, metrics, tools, compaction)
  is fed arbitrary events too, and nothing fails.
* The core's `Conversation` is fed generated sequences of plausible and malformed events
  (items added after ids that exist, are missing, deleted or "root", done, deleted,
  truncated, transcripts, responses with odd usage, duplicates, reconnects): it never raises
  and its invariants hold.
  Structured sequences are also checked against a reference list of the server's order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from realtime_voicebot.app import RunOptions, VoiceBot
from realtime_voicebot.config import load_settings
from realtime_voicebot.core import CoreConfig, SessionCore
from realtime_voicebot.core.conversation import Conversation as Mirror
from realtime_voicebot.testing import RecordingView, scaled
from realtime_voicebot.tools.runner import ToolResult
from realtime_voicebot.transport.events import (
    IGNORED_WIRE_TYPES,
    EventParser,
    ServerEvent,
    ServerEventType,
    internal_name,
)

from .state_helpers import Conversation

JSON = dict[str, Any]
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies --------------------------------------------------------------------------------

WIRE_TYPES = sorted(
    {t.value for t in ServerEventType}
    | {
        "conversation.item.created",
        "response.audio.delta",
        "response.audio.done",
        "response.audio_transcript.delta",
        "response.text.delta",
    }
    | set(IGNORED_WIRE_TYPES)
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)
FIELD_NAMES = [
    "item",
    "item_id",
    "previous_item_id",
    "response",
    "response_id",
    "delta",
    "transcript",
    "text",
    "audio_start_ms",
    "audio_end_ms",
    "error",
    "session",
    "usage",
    "output",
    "content_index",
]
event_dicts = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(WIRE_TYPES), st.text(max_size=12), json_values)},
    optional={name: json_values for name in FIELD_NAMES},
)


@st.composite
def frames(draw: st.DrawFn) -> str | bytes:
    """Anything a socket could deliver: bytes, text, JSON of any shape, deep nesting."""
    kind = draw(st.sampled_from(["bytes", "text", "json", "event", "deep", "huge_number"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "text":
        return draw(st.text(max_size=64))
    if kind == "json":
        return json.dumps(draw(json_values))
    if kind == "event":
        frame = json.dumps(draw(event_dicts))
        return frame.encode() if draw(st.booleans()) else frame
    if kind == "deep":
        depth = draw(st.integers(min_value=500, max_value=200_000))
        opener = draw(st.sampled_from(["[", '{"a":', '{"type":"error","error":']))
        return opener * depth
    digits = draw(st.integers(min_value=4_000, max_value=50_000))
    return '{"type":"response.done","response":{"usage":{"input_tokens":' + "9" * digits + "}}}"


# --- the parser --------------------------------------------------------------------------------


@FAST
@given(st.lists(frames(), min_size=1, max_size=8))
def test_parser_never_raises_and_counts_every_frame(batch: list[str | bytes]) -> None:
    parser = EventParser()
    events = [parser.parse(frame) for frame in batch]
    stats = parser.stats
    parsed = [e for e in events if e is not None]
    assert stats.parsed == len(parsed)
    assert stats.parsed + stats.ignored + stats.dropped == len(batch)
    assert sum(stats.unknown_types.values()) == stats.unknown_type
    for event in parsed:
        assert isinstance(event, ServerEvent)
        assert internal_name(event.wire_type) is event.type
        assert isinstance(event.data, dict)
        # The accessors hold for any payload.
        assert event.item_id is None or isinstance(event.item_id, str)
        assert event.response_id is None or isinstance(event.response_id, str)


def test_parser_drops_what_it_cannot_use_by_reason() -> None:
    parser = EventParser()
    assert parser.parse("[" * 100_000) is None  # deeper than the JSON decoder can recurse
    assert parser.parse(b"\xff\xfe\x00") is None
    assert parser.parse("[1, 2]") is None
    assert parser.parse('{"no": "type"}') is None
    assert parser.parse('{"type": "response.brand_new"}') is None
    assert parser.parse('{"type": "transcription_session.updated"}') is None
    event = parser.parse(b'{"type": "conversation.item.created", "item": {"id": "a"}}')
    assert event is not None and event.type is ServerEventType.ITEM_ADDED
    stats = parser.stats
    assert (stats.malformed_json, stats.not_an_object, stats.missing_type) == (2, 1, 1)
    assert stats.unknown_types == {"response.brand_new": 1}
    assert (stats.ignored, stats.parsed, stats.dropped) == (1, 1, 5)


# --- the session core ------------------------------------------------------------------------


def _parse_all(kinds: list[ServerEventType], payloads: list[JSON]) -> list[ServerEvent]:
    parser = EventParser()
    events = []
    for kind, data in zip(kinds, payloads, strict=False):
        event = parser.parse(json.dumps({**data, "type": kind.value}, default=str))
        if event is not None:
            events.append(event)
    return events


parsed_events = (
    st.builds(
        lambda kind, data: _parse_all([kind], [data]),
        st.sampled_from(list(ServerEventType)),
        st.fixed_dictionaries({}, optional={name: json_values for name in FIELD_NAMES}),
    )
    .filter(bool)
    .map(lambda events: events[0])
)

core_inputs = st.one_of(
    st.tuples(st.just("event"), parsed_events),
    st.tuples(st.just("typed"), st.text(max_size=8)),
    st.tuples(st.just("timer"), json_values.map(lambda v: ("compaction", v, "confirm", 0))),
    st.tuples(st.just("timer"), json_values.map(lambda v: ("compaction", v, "summary"))),
    st.tuples(st.just("watchdog"), st.integers(0, 3)),
    st.tuples(st.just("tool"), st.text(max_size=6)),
    st.tuples(st.just("summary"), st.integers(0, 3), st.text(max_size=12)),
    st.tuples(st.just("session"), st.sampled_from(["reconnect", "rollover", "expired"])),
    st.tuples(st.just("interrupt"), st.sampled_from(["speech", "typed"])),
)


@FAST
@given(st.lists(core_inputs, min_size=1, max_size=25), st.booleans())
def test_the_core_takes_any_sequence_of_inputs(
    inputs: list[tuple[Any, ...]], summary_in_session: bool
) -> None:
    core = SessionCore(CoreConfig(summary_in_session=summary_in_session))
    core.session_started(1, "start", 60.0)
    with capture_logs():
        for step in inputs:
            kind = step[0]
            if kind == "event":
                core.server_event(step[1])
            elif kind == "typed":
                core.typed_line(step[1])
            elif kind == "timer":
                core.timer_fired(step[1])
            elif kind == "watchdog":
                core.timer_fired(("watchdog", step[1]))
            elif kind == "tool":
                core.tool_finished(step[1], ToolResult('{"ok": true}', "ok"))
            elif kind == "summary":
                core.summary_ready(step[1], step[2])
            elif kind == "session":
                core.session_started(core.session_number + 1, step[1], None)
            else:
                core.interrupt(step[1])
    check_invariants(core.conversation)


def feed_app(tmp: Path, events: list[ServerEvent]) -> tuple[VoiceBot, list[str]]:
    """The real app's wiring (not connected) fed ``events``; the handlers that failed."""

    async def body() -> VoiceBot:
        settings = load_settings(
            {
                "url": "ws://127.0.0.1:9/v1",
                "openai_api_key": "sk-test",
                "transcript_path": str(tmp / "t.jsonl"),
                "summarizer": "extractive",
                "summary_threshold": "50",
                "summary_keep_items": "1",
                "tools": "current_time",
            }
        )
        bot = VoiceBot(settings, RunOptions(text=True, text_lines=asyncio.Queue()), RecordingView())
        await bot._start()  # builds everything; nothing connects until _serve
        try:
            for event in events:
                bot._on_transport(event)  # what the client hands the app
                await asyncio.sleep(0)  # let spawned tasks (tools, summaries) take a step
            # Every task the events started (and the tasks those started) has ended, so a
            # failure of any of them has been counted before the check.
            async with asyncio.timeout(scaled(10)):
                while spawned := asyncio.all_tasks() - {asyncio.current_task()}:
                    await asyncio.wait(spawned)
        finally:
            await bot._shutdown()
        return bot

    with capture_logs() as logs:
        bot = asyncio.run(body())
    failed = [str(e["event"]) for e in logs if e["event"] in ("core_failed", "task_failed")]
    app = bot.snapshot()["app"]
    assert app["core_errors"] + app["task_failures"] == len(failed)
    return bot, failed


@settings(max_examples=40, deadline=None)
@given(st.lists(parsed_events, min_size=1, max_size=30))
def test_app_wiring_takes_arbitrary_events(tmp_path_factory: Any, events: list[Any]) -> None:
    """The core, the view, the metrics, tools and summaries never fail on arbitrary events."""
    _, failed = feed_app(tmp_path_factory.mktemp("app"), events)
    assert failed == []


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(
            ServerEvent.of(
                ServerEventType.ERROR, {"type": "error", "error": ["not", "an", "object"]}
            ),
            id="error-list",
        ),
        pytest.param(
            ServerEvent.of(ServerEventType.ERROR, {"type": "error", "error": {"code": [1, {}]}}),
            id="error-code-list",
        ),
        pytest.param(
            ServerEvent.of(
                ServerEventType.RESPONSE_DONE, {"type": "response.done", "response": [1]}
            ),
            id="response-list",
        ),
        pytest.param(
            ServerEvent.of(
                ServerEventType.RESPONSE_DONE,
                {"type": "response.done", "response": {"id": "r", "output": {"not": "a list"}}},
            ),
            id="output-object",
        ),
        pytest.param(
            ServerEvent.of(
                ServerEventType.RESPONSE_DONE,
                {"type": "response.done", "response": {"id": "r", "usage": {"input_tokens": "x"}}},
            ),
            id="usage-string",
        ),
        pytest.param(
            ServerEvent.of(
                ServerEventType.RESPONSE_DONE,
                {
                    "type": "response.done",
                    "response": {"id": "r", "usage": {"input_tokens": 1e308}},
                },
            ),
            id="usage-absurd",
        ),
        pytest.param(
            ServerEvent.of(
                ServerEventType.SESSION_CREATED, {"type": "session.created", "session": 7}
            ),
            id="session-not-an-object",
        ),
    ],
)
def test_app_own_handlers_take_malformed_events(tmp_path: Path, event: ServerEvent) -> None:
    _, failed = feed_app(tmp_path, [event])
    assert failed == []


# --- the conversation mirror ------------------------------------------------------------------

IDS = ["a", "b", "c", "d", "e"]
ABSENT = "<absent>"
ids = st.sampled_from(IDS)
previous_ids = st.sampled_from([ABSENT, None, "root", "missing", *IDS])
odd_ints = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.none(),
    st.text(max_size=4),
    st.floats(allow_nan=True),
    st.booleans(),
)
usages = st.one_of(
    st.none(),
    st.text(max_size=4),
    st.lists(odd_ints, max_size=2),
    st.fixed_dictionaries(
        {},
        optional={
            "input_tokens": odd_ints,
            "output_tokens": odd_ints,
            "total_tokens": odd_ints,
            "input_token_details": st.one_of(
                st.none(), st.dictionaries(st.sampled_from(["text_tokens", "x"]), odd_ints)
            ),
            "output_token_details": json_values,
        },
    ),
)


def item_json(item_id: str, role: str, status: str | None, text: str | None) -> JSON:
    item: JSON = {"id": item_id, "type": "message", "role": role}
    if status is not None:
        item["status"] = status
    if text is not None:
        part = "input_text" if role == "user" else "output_text"
        item["content"] = [{"type": part, "text": text}]
    return item


roles = st.sampled_from(["user", "assistant", "system"])
statuses = st.sampled_from([None, "in_progress", "completed", "incomplete"])
texts = st.one_of(st.none(), st.text(max_size=12))
response_ids = st.sampled_from(["r1", "r2", "r3"])

structured_steps = st.one_of(
    st.tuples(st.just("added"), ids, previous_ids, roles, statuses, texts),
    st.tuples(st.just("created_beta"), ids, previous_ids, roles, statuses, texts),
    st.tuples(st.just("done"), ids, previous_ids, roles, statuses, texts),
    st.tuples(st.just("deleted"), st.sampled_from([*IDS, "missing"])),
    st.tuples(st.just("truncated"), ids, odd_ints),
    st.tuples(st.just("transcript"), ids, st.text(max_size=10)),
    st.tuples(st.just("transcript_failed"), ids),
    st.tuples(st.just("transcript_delta"), ids, json_values),
    st.tuples(st.just("output_added"), response_ids, ids),
    st.tuples(
        st.just("audio_delta"),
        response_ids,
        ids,
        st.one_of(
            st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=8)
        ),
    ),
    st.tuples(st.just("text_delta"), response_ids, ids, json_values),
    st.tuples(st.just("created"), response_ids),
    st.tuples(
        st.just("response_done"),
        response_ids,
        st.sampled_from(["completed", "cancelled", "incomplete", "failed", 7, None]),
        usages,
        st.lists(st.one_of(st.builds(lambda i: {"id": i}, ids), json_values), max_size=3),
    ),
    st.tuples(st.just("speech"), ids, odd_ints, odd_ints),
    st.tuples(st.just("interrupt"), st.floats(min_value=-1e6, max_value=1e9), ids),
    st.tuples(st.just("new_session")),
)
random_steps = st.tuples(st.just("random"), event_dicts)


def to_event(parser: EventParser, data: JSON) -> ServerEvent | None:
    return parser.parse(json.dumps(data))


def step_event(step: tuple[Any, ...]) -> JSON | None:
    """The wire event of a structured step (None for steps that call the state directly)."""
    kind = step[0]
    if kind in ("added", "created_beta", "done"):
        _, item_id, previous, role, status, text = step
        wire = {
            "added": "conversation.item.added",
            "created_beta": "conversation.item.created",
            "done": "conversation.item.done",
        }[kind]
        data: JSON = {"type": wire, "item": item_json(item_id, role, status, text)}
        if previous != ABSENT:
            data["previous_item_id"] = previous
        return data
    if kind == "deleted":
        return {"type": "conversation.item.deleted", "item_id": step[1]}
    if kind == "truncated":
        return {
            "type": "conversation.item.truncated",
            "item_id": step[1],
            "content_index": 0,
            "audio_end_ms": step[2],
        }
    if kind == "transcript":
        return {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": step[1],
            "transcript": step[2],
        }
    if kind == "transcript_failed":
        return {
            "type": "conversation.item.input_audio_transcription.failed",
            "item_id": step[1],
            "error": {"code": "x"},
        }
    if kind == "transcript_delta":
        return {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": step[1],
            "delta": step[2],
        }
    if kind == "output_added":
        return {
            "type": "response.output_item.added",
            "response_id": step[1],
            "item": item_json(step[2], "assistant", "in_progress", None),
        }
    if kind == "audio_delta":
        return {
            "type": "response.output_audio.delta",
            "response_id": step[1],
            "item_id": step[2],
            "delta": step[3],
        }
    if kind == "text_delta":
        return {
            "type": "response.output_audio_transcript.delta",
            "response_id": step[1],
            "item_id": step[2],
            "delta": step[3],
        }
    if kind == "created":
        return {"type": "response.created", "response": {"id": step[1]}}
    if kind == "response_done":
        _, response_id, status, usage, output = step
        return {
            "type": "response.done",
            "response": {"id": response_id, "status": status, "usage": usage, "output": output},
        }
    if kind == "speech":
        return {
            "type": "input_audio_buffer.speech_started",
            "item_id": step[1],
            "audio_start_ms": step[2],
            "audio_end_ms": step[3],
        }
    if kind == "random":
        return dict(step[1])
    return None


def is_base64(value: Any) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return False
    return isinstance(value, str)


class ReferenceOrder:
    """The server's item order as the protocol defines it: a plain list."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def place(self, item_id: str, previous: Any, *, move: bool) -> None:
        if item_id in self.ids:
            if not move:
                return
            self.ids.remove(item_id)
        if previous == ABSENT:
            self.ids.append(item_id)
        elif previous is None or previous == "root":
            self.ids.insert(0, item_id)
        elif previous in self.ids:
            self.ids.insert(self.ids.index(previous) + 1, item_id)
        else:  # an id the server does not hold: the client appends
            self.ids.append(item_id)

    def apply(self, step: tuple[Any, ...], known: set[str]) -> None:
        kind = step[0]
        if kind in ("added", "created_beta"):
            self.place(step[1], step[2], move=step[2] != ABSENT)
        elif kind == "done" and step[1] not in known:
            self.place(step[1], step[2], move=True)
        elif kind == "deleted" and step[1] in self.ids:
            self.ids.remove(step[1])
        elif kind in ("output_added", "audio_delta", "text_delta") and step[2] not in known:
            if kind == "audio_delta" and not is_base64(step[3]):
                return  # a bad frame: dropped by the parser
            if kind == "text_delta" and not isinstance(step[3], str):
                return
            self.ids.append(step[2])
        elif kind == "new_session":
            self.ids.clear()


def check_invariants(state: Mirror) -> None:
    order = state.order
    assert len(order) == len(set(order)), order
    for item_id in order:
        item = state.items[item_id]
        assert item.on_server and not item.deleted, item
    for item in state.items.values():
        assert (item.id in order) == item.on_server, item
    assert state.window_tokens >= 0
    assert state.streaming_item_id is None or state.streaming_item_id in state.items


def run_steps(steps: list[tuple[Any, ...]], *, check_model: bool) -> list[JSON]:
    with capture_logs():
        return _run_steps(steps, check_model=check_model)


def _run_steps(steps: list[tuple[Any, ...]], *, check_model: bool) -> list[JSON]:
    conv = Conversation("ga", summary_threshold=10**9)
    state = conv.state
    parser = EventParser()
    model = ReferenceOrder()
    for step in steps:
        known = set(state.items)
        if step[0] == "interrupt":
            conv.interrupt(step[1], step[2])
        elif step[0] == "new_session":
            conv.new_session()
        else:
            data = step_event(step)
            assert data is not None
            event = to_event(parser, data)
            if event is not None:
                conv.apply(event)
        check_invariants(state)
        if step[0] == "deleted":
            assert step[1] not in state.order
            if step[1] in state.items:
                assert state.items[step[1]].deleted
        if step[0] in ("added", "created_beta") and step[2] in state.order and step[2] != step[1]:
            # Resolvable previous_item_id: the item sits right after it.
            index = state.order.index(step[1])
            assert index > 0 and state.order[index - 1] == step[2]
        if step[0] in ("added", "created_beta") and step[2] in (None, "root"):
            assert state.order[0] == step[1]
        if check_model:
            model.apply(step, known)
            assert state.order == model.ids, (step, state.order, model.ids)
    return conv.take_records() + state.flush_records()


@FAST
@given(st.lists(structured_steps, max_size=40))
def test_state_matches_the_reference_order(steps: list[tuple[Any, ...]]) -> None:
    records = run_steps(steps, check_model=True)
    turns = [r["item_id"] for r in records if r["type"] == "turn"]
    assert len(turns) == len(set(turns)), "a turn recorded twice"


@FAST
@given(st.lists(st.one_of(structured_steps, random_steps), max_size=40))
def test_state_survives_malformed_sequences(steps: list[tuple[Any, ...]]) -> None:
    records = run_steps(steps, check_model=False)
    turns = [r["item_id"] for r in records if r["type"] == "turn"]
    assert len(turns) == len(set(turns)), "a turn recorded twice"


@pytest.mark.parametrize("tokens", [-5, -(10**9)])
def test_negative_usage_keeps_the_window_non_negative(tokens: int) -> None:
    state = Mirror()
    parser = EventParser()
    event = to_event(
        parser,
        {
            "type": "response.done",
            "response": {"id": "r", "usage": {"input_tokens": tokens, "output_tokens": 3}},
        },
    )
    assert event is not None
    state.apply(event)
    assert state.window_tokens == 3
