"""The session writes the summary itself (``summarizer realtime``): sequences of core inputs.

The compactor sends one out-of-band ``response.create`` and collects its text; nothing of
that response enters the mirror, plays, shows, answers a typed line or a tool call, or counts
as the active response. Barge-in, typed lines, tool calls and new user turns carry on beside
it. When it fails, is cancelled, comes back empty or is too slow, the shell's extractive
summarizer writes the summary instead.
"""

from __future__ import annotations

from typing import Any

import pytest

from realtime_voicebot.config import load_settings
from realtime_voicebot.core import CoreConfig, Playback
from realtime_voicebot.core import actions as a
from realtime_voicebot.core.out_of_band import OUR_REQUEST_KEY, OutOfBandResponses
from realtime_voicebot.core.recap import read_recap
from realtime_voicebot.summarization.prompts import IN_SESSION_REQUEST
from realtime_voicebot.tools.runner import ToolResult
from realtime_voicebot.transport.events import ServerEvent

from .spec import validate_client, validate_ga_response_create_with_references
from .state_helpers import Conversation, usage
from .test_compactor import Loopback, fire, start

JSON = dict[str, Any]
DIALECTS = ["ga", "beta"]
SUMMARY = "Ada has orders 0 and 1, both shipping to Paris on Monday."


def validate_sent(event: JSON, dialect: str) -> None:
    """Against the SDK: GA's pydantic union has no item reference, its request type has."""
    response = event.get("response") or {}
    refs = any(e.get("type") == "item_reference" for e in response.get("input") or [])
    if dialect == "ga" and refs:
        validate_ga_response_create_with_references(event)
    else:
        validate_client(event, dialect)


class SessionLoopback(Loopback):
    """The compactor tests' loopback, validating out-of-band requests the way the SDK can."""

    def pump(self) -> None:
        while self.answered < len(self.conv.sent):
            event = self.conv.sent[self.answered]
            self.answered += 1
            validate_sent(event, self.conv.srv.dialect)
            if self.connected:
                self.answer(event)

    def answer(self, event: JSON) -> None:
        item = event.get("item") or {}
        if item.get("type") == "function_call_output":
            output = {**item, "id": f"out_{item['call_id']}", "object": "realtime.item"}
            self.conv.apply(self.conv.srv.item_added(output, self.conv.last_id))
        elif event["type"] == "conversation.item.create" and item.get("role") == "user":
            return  # typed lines: the test confirms them itself
        else:
            super().answer(event)


def make(
    dialect: str = "ga", turns: int = 3, **config: Any
) -> tuple[Conversation, SessionLoopback]:
    conv = Conversation(
        dialect,
        summary_keep_items=2,
        summary_threshold=10**9,
        summary_in_session=True,
        **config,
    )
    conv.exchange(turns, tokens=5000)
    return conv, SessionLoopback(conv)


def requests(conv: Conversation) -> list[JSON]:
    """The out-of-band response.create events sent so far."""
    return [
        e
        for e in conv.sent
        if e["type"] == "response.create" and e.get("response", {}).get("conversation") == "none"
    ]


class SessionSummary:
    """Plays the server's side of one out-of-band summary, event by event."""

    def __init__(self, conv: Conversation, request: JSON, response_id: str = "oob1") -> None:
        self.conv = conv
        self.srv = conv.srv
        self.response_id = response_id
        self.item_id = f"item_{response_id}"
        self.metadata = dict(request["response"]["metadata"])

    def created(self) -> ServerEvent:
        return self.srv.response_created(self.response_id, out_of_band=True, metadata=self.metadata)

    def item(self, status: str = "in_progress", text: str | None = None) -> JSON:
        if text is None:
            return self.srv.assistant_item(self.item_id, status)
        return self.srv.text_item(self.item_id, "assistant", text, status)

    def item_added(self) -> ServerEvent:
        return self.srv.output_item_added(self.response_id, self.item())

    def deltas(self, text: str) -> list[ServerEvent]:
        words = text.split(" ")
        return [
            self.srv.text_delta(
                self.response_id, self.item_id, w + ("" if n == len(words) - 1 else " ")
            )
            for n, w in enumerate(words)
        ]

    def text_done(self, text: str) -> ServerEvent:
        return self.srv.text_done(self.response_id, self.item_id, text)

    def done(self, status: str = "completed", text: str = "") -> ServerEvent:
        output = [self.item("completed" if status == "completed" else "incomplete", text)]
        return self.srv.response_done(
            self.response_id,
            status,
            usage=usage(20_000, 90, in_cached_tokens=19_968, out_text_tokens=90),
            output=output,
            out_of_band=True,
            metadata=self.metadata,
        )

    def whole(self, text: str) -> list[ServerEvent]:
        return [
            self.created(),
            self.item_added(),
            *self.deltas(text),
            self.text_done(text),
            self.srv.output_item_done(self.response_id, self.item("completed", text)),
            self.done(text=text),
        ]


def begin(
    dialect: str = "ga", **config: Any
) -> tuple[Conversation, SessionLoopback, SessionSummary]:
    """A compaction whose summary the session is asked for."""
    conv, server = make(dialect, **config)
    start(conv)
    [request] = requests(conv)
    validate_sent(request, dialect)
    return conv, server, SessionSummary(conv, request)


LEAKS = (
    a.ReplyStarted,
    a.ReplyDelta,
    a.ReplyDone,
    a.PlayAudio,
    a.EndAudio,
    a.RunTool,
    a.ToolCallStarted,
    a.ResponseFinished,
)
"""What a reply of the conversation causes and an out-of-band response must not."""


def oob_leaks(conv: Conversation, oob: SessionSummary, since: int = 0) -> list[a.Action]:
    """Actions after ``since`` that would show, play or record the out-of-band response."""
    return [
        x
        for x in conv.actions[since:]
        if isinstance(x, LEAKS)
        or (isinstance(x, a.StartTimer) and x.key[0] == "watchdog")
        or (isinstance(x, a.StatusChanged) and x.status == "speaking")
    ]


# --- the request ---------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_request_reads_exactly_the_items_to_compact_then_asks(dialect: str) -> None:
    conv, _, _ = begin(dialect)
    [request] = requests(conv)
    assert not [x for x in conv.actions if isinstance(x, a.Summarize)]
    response = request["response"]
    modalities = "output_modalities" if dialect == "ga" else "modalities"
    assert set(response) == {
        "conversation",
        modalities,
        "metadata",
        "input",
        "max_output_tokens" if dialect == "ga" else "max_response_output_tokens",
        "tool_choice",
    }
    assert response["conversation"] == "none" and response[modalities] == ["text"]
    assert response["tool_choice"] == "none"
    assert response["metadata"]["purpose"] == "summary"
    assert response["metadata"][OUR_REQUEST_KEY].startswith("summary_")
    *refs, ask = response["input"]
    plan = conv.core.compactor.plan
    assert plan is not None
    # The conversation's own prefix, in the server's order: the cached part of its prompt.
    assert [r["type"] for r in refs] == ["item_reference"] * 4
    assert [r["id"] for r in refs] == list(plan.delete_ids) == conv.state.order[:4]
    assert ask["type"] == "message" and ask["role"] == "system"
    assert ask["content"][0]["text"].startswith(IN_SESSION_REQUEST)
    # The session's instructions apply (no instructions of its own), and it is timed.
    assert "instructions" not in response
    [timer] = [x for x in conv.actions if isinstance(x, a.StartTimer) and x.key[2:] == ("summary",)]
    assert timer.seconds == conv.core.config.summary_timeout_s


def test_own_instructions_layout_puts_the_request_in_instructions() -> None:
    conv, _server = make()
    conv.core.compactor.summary_layout = "instructions"
    start(conv)
    [request] = requests(conv)
    validate_sent(request, "ga")
    response = request["response"]
    assert response["instructions"].startswith(IN_SESSION_REQUEST)
    assert [e["type"] for e in response["input"]] == ["item_reference"] * 4


def test_the_summarizer_setting_chooses_who_writes_the_summary() -> None:
    realtime = CoreConfig.from_settings(load_settings({"summary_timeout_s": "7"}))
    assert realtime.summary_in_session is True and realtime.summary_timeout_s == 7.0
    for kind in ("auto", "openai", "extractive"):
        config = CoreConfig.from_settings(load_settings({"summarizer": kind}))
        assert config.summary_in_session is False


def test_the_shell_summarizer_path_is_unchanged_without_in_session() -> None:
    conv = Conversation("ga", summary_keep_items=2, summary_threshold=10**9)
    conv.exchange(3, tokens=5000)
    start(conv)
    assert requests(conv) == []
    assert [x for x in conv.actions if isinstance(x, a.Summarize)]


def test_it_does_not_wait_for_transcripts_the_model_hears_the_audio() -> None:
    conv = Conversation(
        "ga", summary_keep_items=2, summary_threshold=10**9, summary_in_session=True
    )
    conv.exchange(1, tokens=5000)
    conv.user_turn("u_late", None, complete=False)  # its transcript is still pending
    conv.assistant_turn("r_late", "a_late", "Noted.", usage=usage(5000, 10))
    conv.exchange(1, tokens=5000, prefix="x")
    start(conv)
    assert conv.core.compactor.phase == "summarizing"
    [request] = requests(conv)
    assert "u_late" in [e.get("id") for e in request["response"]["input"]]

    shell = Conversation("ga", summary_keep_items=2, summary_threshold=10**9)
    shell.exchange(1, tokens=5000)
    shell.user_turn("u_late", None, complete=False)
    shell.assistant_turn("r_late", "a_late", "Noted.", usage=usage(5000, 10))
    shell.exchange(1, tokens=5000, prefix="x")
    start(shell)
    assert shell.core.compactor.phase == "transcripts"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_after_a_new_session_the_seed_is_referenced_and_carried_turns_quoted(
    dialect: str,
) -> None:
    conv, server = make(dialect, turns=2)
    conv.new_session()
    [seed] = [e for e in conv.sent if e["type"] == "conversation.item.create"]
    seed_id = seed["item"]["id"]
    server.answered = len(conv.sent)
    conv.apply(conv.srv.item_added(conv.srv.text_item(seed_id, "system", "seed"), "root"))
    conv.last_id = seed_id
    conv.exchange(3, tokens=5000, prefix="n")
    start(conv)
    [request] = requests(conv)
    validate_sent(request, dialect)
    entries = request["response"]["input"]
    assert entries[0] == {"type": "item_reference", "id": seed_id}
    # Turns of the old session are not on the server: quoted as a record, after the seed.
    assert entries[1]["role"] == "system"
    summary, lines = read_recap(entries[1]["content"][0]["text"])
    assert summary is None
    assert lines == [
        "User: My order number 0 ships to Paris?",
        "Assistant: Order 0 ships to Paris on Monday.",
        "User: My order number 1 ships to Paris?",
        "Assistant: Order 1 ships to Paris on Monday.",
    ]
    assert [e.get("id") for e in entries[2:-1]] == ["un0", "an0", "un1", "an1"]


# --- the summary, collected and kept out of the conversation ------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_summary_is_collected_and_compacted_and_never_a_turn(dialect: str) -> None:
    conv, server, oob = begin(dialect)
    before = len(conv.actions)
    events = oob.whole(SUMMARY)
    conv.apply(*events)
    server.pump()
    compactor = conv.core.compactor
    assert not compactor.in_flight
    assert compactor.stats.compactions == 1 and compactor.stats.session_summaries == 1
    assert compactor.stats.fallbacks == 0
    [done] = [x for x in conv.actions if isinstance(x, a.Compacted)]
    assert done.fallback is False and done.summary_chars == len(SUMMARY)
    [create] = server.of_type("conversation.item.create")
    assert read_recap(create["item"]["content"][0]["text"])[0] == SUMMARY
    assert [d["item_id"] for d in server.of_type("conversation.item.delete")] == [
        "u0",
        "a0",
        "u1",
        "a1",
    ]
    # Nothing of the out-of-band response in the mirror, the history or the transcript.
    state = conv.state
    assert oob.item_id not in state.items and oob.item_id not in state.order
    assert state.active_response_id is None and state.streaming_item_id is None
    assert oob.response_id not in state.responses
    assert oob_leaks(conv, oob, before) == []
    assert not [r for r in conv.records if r.get("item_id") == oob.item_id]
    assert [r["text"] for r in conv.records if r["type"] == "summary"] == [SUMMARY]
    assert not conv.core.turns.reply_owed
    # Billed once, as an out-of-band response with its purpose.
    [billed] = [x for x in conv.actions if isinstance(x, a.OutOfBandFinished)]
    assert (billed.response_id, billed.status, billed.purpose) == ("oob1", "completed", "summary")
    assert billed.usage is not None and billed.usage.input_cached_tokens == 19_968
    assert conv.core.snapshot()["out_of_band"] == {"responses": 1, "events": len(events)}


def test_the_deltas_alone_make_the_summary_without_a_text_done() -> None:
    conv, server, oob = begin()
    conv.apply(oob.created(), oob.item_added(), *oob.deltas(SUMMARY))
    conv.apply(oob.done(text=""))
    server.pump()
    assert conv.state.summary == SUMMARY


@pytest.mark.parametrize(
    ("ending", "status"),
    [
        ("failed", "failed"),
        ("cancelled", "cancelled"),
        ("incomplete", "incomplete"),
        ("empty", "completed"),
    ],
)
def test_a_summary_that_does_not_complete_falls_back_to_the_shell(ending: str, status: str) -> None:
    conv, server, oob = begin()
    conv.apply(oob.created(), oob.item_added())
    if ending != "empty":
        conv.apply(*oob.deltas("Half a summ"))
    conv.apply(oob.done(status, text="" if ending == "empty" else "Half a summ"))
    [fallback] = [x for x in conv.actions if isinstance(x, a.Summarize)]
    assert [i.text for i in fallback.inputs][:1] == ["My order number 0 ships to Paris?"]
    # Nothing is cancelled: that response has ended.
    assert [e for e in conv.sent if e["type"] == "response.cancel"] == []
    assert fallback.fallback is True  # the shell reports what it writes as the fallback
    conv.take(conv.core.summary_ready(fallback.job_id, "Extractive words.", fallback.fallback))
    server.pump()
    stats = conv.core.compactor.stats
    assert (stats.compactions, stats.fallbacks, stats.session_summary_failures) == (1, 1, 1)
    assert conv.state.summary == "Extractive words."
    [done] = [x for x in conv.actions if isinstance(x, a.Compacted)]
    assert done.fallback is True


def test_a_rejected_request_falls_back_and_its_error_is_not_shown() -> None:
    conv, _server, _oob = begin()
    [request] = requests(conv)
    conv.apply(conv.srv.error(request["event_id"], "invalid_value", "bad input"))
    assert [x for x in conv.actions if isinstance(x, a.Summarize)]
    [error] = [x for x in conv.actions if isinstance(x, a.ErrorReported)]
    assert error.text is None  # counted, not shown
    # An error about something else is still shown.
    conv.apply(conv.srv.error("evt_other", "invalid_value", "something else"))
    assert [x.text for x in conv.actions if isinstance(x, a.ErrorReported)][-1] == (
        "server: something else"
    )


def test_a_slow_summary_times_out_is_cancelled_and_its_late_end_ignored() -> None:
    conv, server, oob = begin()
    conv.apply(oob.created(), oob.item_added(), *oob.deltas("Slow"))
    fire(conv, "summary")
    [cancel] = [e for e in conv.sent if e["type"] == "response.cancel"]
    validate_client(cancel, "ga")
    assert cancel["response_id"] == "oob1"  # only ours, never the conversation's reply
    [fallback] = [x for x in conv.actions if isinstance(x, a.Summarize)]
    assert conv.core.compactor.stats.session_summary_timeouts == 1
    # Its end after the cancel changes nothing; the fallback's summary is used.
    conv.apply(oob.done("cancelled", text="Slow"))
    assert fallback.fallback is True  # the shell reports what it writes as the fallback
    conv.take(conv.core.summary_ready(fallback.job_id, "Extractive words.", fallback.fallback))
    server.pump()
    assert conv.state.summary == "Extractive words."
    assert conv.core.compactor.stats.compactions == 1
    # The cancel's "not active" error would be counted only.
    conv.apply(conv.srv.error(cancel["event_id"], "response_cancel_not_active"))
    assert all(x.text is None for x in conv.actions if isinstance(x, a.ErrorReported))


def test_a_summary_that_starts_after_its_timeout_is_cancelled_on_sight() -> None:
    conv, _server, oob = begin()
    fire(conv, "summary")
    assert [e for e in conv.sent if e["type"] == "response.cancel"] == []
    conv.apply(oob.created())
    [cancel] = [e for e in conv.sent if e["type"] == "response.cancel"]
    assert cancel["response_id"] == "oob1"
    assert "oob1" not in conv.state.responses


def test_a_shell_summary_arriving_first_cancels_the_sessions() -> None:
    conv, server, oob = begin()
    conv.apply(oob.created(), oob.item_added())
    job = conv.core.compactor.job_id
    conv.take(conv.core.summary_ready(job, "From the shell."))
    [cancel] = [e for e in conv.sent if e["type"] == "response.cancel"]
    assert cancel["response_id"] == "oob1"
    conv.apply(*oob.deltas("Too late"), oob.done(text="Too late"))
    server.pump()
    assert conv.state.summary == "From the shell."
    assert conv.core.compactor.stats.compactions == 1


def test_a_summary_of_a_session_that_ended_is_dropped() -> None:
    conv, _server, oob = begin()
    conv.apply(oob.created(), oob.item_added())
    conv.new_session()
    assert not conv.core.compactor.in_flight
    assert conv.core.compactor.stats.abandoned == 1
    # Nothing of it survives: a stray event of it changes nothing.
    conv.apply(*oob.deltas("late"))
    assert conv.state.summary is None and not conv.core.compactor.in_flight


# --- the conversation goes on beside it ----------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_barge_in_during_the_summary_cuts_the_reply_not_the_summary(dialect: str) -> None:
    conv, server, oob = begin(dialect, interrupt_response=False)
    conv.apply(oob.created(), oob.item_added(), *oob.deltas("Ada has"))
    conv.user_turn("u9", "Tell me a story.")
    conv.assistant_turn("r9", "a9", "once upon a time there was", audio_ms=4000, finish=False)
    # Summary deltas arrive while the reply plays: neither the reply nor the player notices.
    conv.apply(*oob.deltas("orders 0 and 1"))
    assert conv.state.active_response_id == "r9" and conv.state.streaming_item_id == "a9"
    sent = conv.interrupt(1000, "a9")
    assert [e["type"] for e in sent] == ["conversation.item.truncate", "response.cancel"]
    truncate, cancel = sent
    assert truncate["item_id"] == "a9"
    assert "response_id" not in cancel  # the default conversation's response, not ours
    for event in sent:
        validate_sent(event, dialect)
    conv.apply(conv.srv.response_done("r9", "cancelled"))
    # The summary completes after the barge-in and is used.
    text = "Ada has orders 0 and 1"
    conv.apply(oob.text_done(text), oob.done(text=text))
    server.pump()
    assert conv.state.summary == text
    assert conv.state.items["a9"].truncated
    assert conv.core.turns.stats.barge_ins == 1


@pytest.mark.parametrize("dialect", DIALECTS)
def test_speech_during_the_summary_starts_a_new_turn_beside_it(dialect: str) -> None:
    conv, server, oob = begin(dialect)
    conv.apply(oob.created(), oob.item_added())
    before = len(conv.actions)
    conv.user_turn("u9", "And one more thing.")
    conv.assistant_turn("r9", "a9", "Yes?", finish=False)
    assert conv.state.active_response_id == "r9"
    assert any(isinstance(x, a.PlayAudio) and x.item_id == "a9" for x in conv.actions[before:])
    conv.apply(*oob.deltas(SUMMARY), oob.text_done(SUMMARY))
    assert conv.state.active_response_id == "r9" and conv.state.streaming_item_id == "a9"
    conv.apply(oob.done(text=SUMMARY))
    assert conv.state.active_response_id == "r9"  # the summary's end is not the reply's
    conv.apply(conv.srv.audio_done("r9", "a9"), conv.srv.response_done("r9"))
    server.pump()
    assert conv.state.summary == SUMMARY
    assert conv.state.order[-2:] == ["u9", "a9"]  # kept, untouched by the compaction
    assert [r["item_id"] for r in conv.records if r["type"] == "turn"][-1:] == ["u9"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_typed_line_during_the_summary_is_sent_and_answered_at_once(dialect: str) -> None:
    conv, server, oob = begin(dialect)
    conv.apply(oob.created(), oob.item_added(), *oob.deltas("Ada"))
    sent = conv.take(conv.core.typed_line("What is my order number?"))
    # The summary is not a response of the conversation: nothing to wait for or cancel.
    assert [e["type"] for e in sent] == ["conversation.item.create", "response.create"]
    assert "response" not in sent[1]
    typed_id = sent[0]["item"]["id"]
    conv.apply(conv.srv.item_added(conv.srv.text_item(typed_id, "user", "x"), conv.last_id))
    conv.last_id = typed_id
    conv.apply(conv.srv.response_created("r9"))
    assert conv.core.turns.pending_typed_ids == [typed_id]  # answered once the reply starts
    conv.apply(*oob.deltas("has orders"))
    conv.assistant_turn("r9", "a9", "Order 0.", chunks=1)
    assert conv.core.turns.pending_typed_ids == []
    conv.apply(oob.text_done("Ada has orders"), oob.done(text="Ada has orders"))
    server.pump()
    assert conv.state.summary == "Ada has orders"
    assert conv.state.order[-2:] == [typed_id, "a9"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_tool_call_during_the_summary_runs_and_is_answered(dialect: str) -> None:
    conv, server, oob = begin(dialect)
    srv = conv.srv
    conv.apply(oob.created(), oob.item_added())
    call = {
        "id": "fc1",
        "object": "realtime.item",
        "type": "function_call",
        "status": "in_progress",
        "call_id": "call_1",
        "name": "current_time",
        "arguments": "",
    }
    conv.apply(srv.response_created("r9"), srv.output_item_added("r9", call))
    conv.apply(*oob.deltas("Ada has"))
    conv.apply(
        srv.event(
            "response.function_call_arguments.done",
            response_id="r9",
            item_id="fc1",
            output_index=0,
            call_id="call_1",
            name="current_time",
            arguments="{}",
        )
    )
    [run] = [x for x in conv.actions if isinstance(x, a.RunTool)]
    assert run.call_id == "call_1"
    done_call = {**call, "status": "completed", "arguments": "{}"}
    conv.apply(oob.done(text="Ada has"))  # the summary ends first: no reply is due
    assert not any(
        e["type"] == "conversation.item.create" and "call_id" in e["item"] for e in conv.sent
    )
    conv.apply(srv.response_done("r9", output=[done_call]))
    sent = conv.take(conv.core.tool_finished("call_1", ToolResult("noon", "ok", 0.01)))
    assert [e["type"] for e in sent] == ["conversation.item.create", "response.create"]
    assert sent[0]["item"]["call_id"] == "call_1" and "response" not in sent[1]
    for event in sent:
        validate_sent(event, dialect)
    server.pump()
    assert conv.state.summary == "Ada has"


def test_a_function_call_in_the_summary_response_is_never_run() -> None:
    conv, _server, oob = begin()
    call = {
        "id": "fc_oob",
        "object": "realtime.item",
        "type": "function_call",
        "status": "in_progress",
        "call_id": "call_oob",
        "name": "current_time",
        "arguments": "",
    }
    srv = conv.srv
    conv.apply(oob.created(), srv.output_item_added(oob.response_id, call))
    conv.apply(
        srv.event(
            "response.function_call_arguments.done",
            response_id=oob.response_id,
            item_id="fc_oob",
            output_index=0,
            call_id="call_oob",
            name="current_time",
            arguments="{}",
        )
    )
    done = srv.response_done(
        oob.response_id,
        output=[{**call, "status": "completed", "arguments": "{}"}],
        out_of_band=True,
        metadata=oob.metadata,
    )
    conv.apply(done)
    assert not [x for x in conv.actions if isinstance(x, a.RunTool | a.ToolCallStarted)]
    assert "fc_oob" not in conv.state.items
    # No text came back: the shell writes the summary.
    assert [x for x in conv.actions if isinstance(x, a.Summarize)]


def test_out_of_band_events_never_arm_the_reply_watchdog_or_change_the_status() -> None:
    conv, _server, oob = begin()
    before = len(conv.actions)
    status = conv.core.status
    conv.playback = Playback(has_output=True)
    conv.apply(*oob.whole(SUMMARY))
    assert oob_leaks(conv, oob, before) == []
    assert conv.core.status == status
    assert conv.core.turns.idle()


# --- which responses are out of band: both sides ------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_out_of_band_responses_are_claimed_and_the_conversations_are_not(dialect: str) -> None:
    conv = Conversation(dialect)
    srv = conv.srv
    claims = OutOfBandResponses().claims
    # Out of band: conversation_id null, or our marker in the metadata.
    assert claims(srv.response_created("o1", out_of_band=True))
    assert claims(srv.response_created("o2", metadata={OUR_REQUEST_KEY: "summary_1"}))
    assert claims(srv.text_delta("o1", "i1", "x"))
    assert claims(srv.output_item_added("o2", srv.assistant_item("i2")))
    assert claims(srv.audio_delta("o1", "i1", 20))
    assert claims(srv.response_done("o2"))  # known by its id
    assert claims(srv.response_done("o3", out_of_band=True))
    # The conversation's: a plain response, even with foreign metadata, and its events.
    assert not claims(srv.response_created("r1", metadata={"topic": "x"}))
    assert not claims(srv.text_delta("r1", "i3", "x"))
    assert not claims(srv.output_item_added("r1", srv.assistant_item("i3")))
    assert not claims(srv.audio_delta("r1", "i3", 20))
    assert not claims(srv.response_done("r1"))
    assert not claims(srv.item_added(srv.assistant_item("i3"), None))
    assert not claims(srv.speech_started("u1", 0))
    assert not claims(srv.error("evt_1", "invalid_value"))
