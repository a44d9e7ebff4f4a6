"""The core's Conversation: the mirror, the history, transcripts, responses, window, records."""

from __future__ import annotations

import pytest

from realtime_voicebot.core import actions as a
from realtime_voicebot.core.conversation import INAUDIBLE, Presence, TranscriptState, cut_words

from .state_helpers import Conversation, pcm_b64, usage

DIALECTS = ["ga", "beta"]


@pytest.fixture(params=DIALECTS)
def conv(request: pytest.FixtureRequest) -> Conversation:
    return Conversation(request.param)


# --- ordering ---------------------------------------------------------------------------------


def test_items_follow_previous_item_id(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    conv.apply(
        srv.item_added(srv.text_item("a", "user", "first"), previous_item_id=None),
        srv.item_added(srv.text_item("b", "user", "second"), previous_item_id="a"),
        srv.item_added(srv.text_item("c", "user", "third"), previous_item_id="b"),
    )
    assert state.order == ["a", "b", "c"]
    # An insert after an id lands right after it, not at the end.
    conv.apply(srv.item_added(srv.text_item("x", "user", "after a"), previous_item_id="a"))
    assert state.order == ["a", "x", "b", "c"]
    # "root" inserts at the very start.
    conv.apply(srv.item_added(srv.text_item("s", "system", "note"), previous_item_id="root"))
    assert state.order == ["s", "a", "x", "b", "c"]


def test_null_previous_means_start_and_missing_means_append(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    conv.apply(
        srv.item_added(srv.text_item("a", "user", "one"), previous_item_id=None),
        srv.item_added(srv.text_item("b", "user", "two")),
    )
    assert state.order == ["a", "b"]
    conv.apply(srv.item_added(srv.text_item("z", "system", "zero"), previous_item_id=None))
    assert state.order == ["z", "a", "b"]
    # An unknown predecessor appends instead of failing.
    conv.apply(srv.item_added(srv.text_item("q", "user", "q"), previous_item_id="nope"))
    assert state.order == ["z", "a", "b", "q"]


def test_output_item_then_item_added_places_assistant_after_user(conv: Conversation) -> None:
    conv.user_turn("u1", "Hello there, I am Ada.")
    conv.assistant_turn("r1", "a1", "Hello Ada, nice to meet you.")
    conv.user_turn("u2", "What is 2 plus 2?")
    assert conv.state.order == ["u1", "a1", "u2"]
    assert [i.role for i in conv.state.mirror] == ["user", "assistant", "user"]
    a1 = conv.state.items["a1"]
    assert a1.kind == "message" and a1.status == "completed" and a1.response_id == "r1"
    assert a1.text == "Hello Ada, nice to meet you."


def test_item_done_updates_without_moving() -> None:
    conv = Conversation("ga")
    conv.user_turn("u1", "Hi")
    conv.assistant_turn("r1", "a1", "Hi back.")
    conv.apply(conv.srv.item_done(conv.srv.user_audio_item("u1", "Hi"), previous_item_id=None))
    assert conv.state.order == ["u1", "a1"]


# --- transcripts and audio lengths ------------------------------------------------------------


def test_user_transcript_deltas_then_completed(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    conv.user_turn("u1", None, speech_ms=1800)
    item = state.items["u1"]
    assert item.transcript is TranscriptState.PENDING and item.text == ""
    assert item.audio_ms == 1800
    conv.apply(srv.transcript_delta("u1", "I live "), srv.transcript_delta("u1", "in Lyon"))
    assert item.text == "I live in Lyon" and item.transcript is TranscriptState.PENDING
    conv.apply(srv.transcript_completed("u1", " I live in Lyon. "))
    assert item.text == "I live in Lyon." and item.transcript is TranscriptState.DONE


def test_failed_transcription_is_marked_inaudible(conv: Conversation) -> None:
    conv.user_turn("u1", None)
    conv.apply(conv.srv.transcript_failed("u1"))
    item = conv.state.items["u1"]
    assert item.transcript is TranscriptState.FAILED
    assert item.spoken_text == INAUDIBLE
    [record] = conv.take_records()
    assert record["text"] == INAUDIBLE and record["transcription_failed"] is True


def test_assistant_audio_length_from_base64_size(conv: Conversation) -> None:
    conv.user_turn("u1", "Tell me a story.")
    conv.assistant_turn("r1", "a1", "Once upon a time.", audio_ms=2450, chunks=7)
    item = conv.state.items["a1"]
    assert item.audio_ms == pytest.approx(2450, abs=1)
    assert item.audio_complete


def test_text_reply_deltas(conv: Conversation) -> None:
    srv = conv.srv
    conv.apply(
        srv.response_created("r1"),
        srv.output_item_added("r1", srv.assistant_item("a1")),
        srv.text_delta("r1", "a1", "Twelve "),
        srv.text_delta("r1", "a1", "apples"),
    )
    assert conv.state.items["a1"].text == "Twelve apples"
    conv.apply(srv.text_done("r1", "a1", "Twelve apples."))
    assert conv.state.items["a1"].text == "Twelve apples."


# --- deletion, truncation, history ------------------------------------------------------------


def test_deleted_items_leave_the_mirror_but_not_the_history(conv: Conversation) -> None:
    conv.exchange(2)
    conv.apply(conv.srv.item_deleted("u0"), conv.srv.item_deleted("a0"))
    state = conv.state
    assert state.order == ["u1", "a1"]
    assert [i.id for i in state.history] == ["u0", "a0", "u1", "a1"]
    assert state.items["u0"].deleted and not state.items["u0"].on_server
    assert state.items["u0"].text.startswith("My order number 0")


def test_transcript_after_its_item_was_deleted_goes_to_history(conv: Conversation) -> None:
    conv.user_turn("u1", None)
    conv.apply(conv.srv.item_deleted("u1"))
    conv.apply(conv.srv.transcript_completed("u1", "Late words about Berlin."))
    item = conv.state.items["u1"]
    assert item.text == "Late words about Berlin." and not item.on_server
    assert conv.state.order == []
    [record] = conv.take_records()
    assert record["item_id"] == "u1" and record["text"] == "Late words about Berlin."


def test_transcript_for_an_unknown_item_is_kept(conv: Conversation) -> None:
    conv.apply(conv.srv.transcript_completed("ghost", "Words from nowhere."))
    assert conv.state.items["ghost"].text == "Words from nowhere."
    assert conv.state.order == []


def test_server_truncation_sets_heard_text(conv: Conversation) -> None:
    conv.user_turn("u1", "Count for me.")
    conv.assistant_turn("r1", "a1", "one two three four five six seven eight", audio_ms=4000)
    conv.apply(conv.srv.item_truncated("a1", 2000))
    item = conv.state.items["a1"]
    assert item.truncated and item.truncated_at_ms == 2000
    assert item.heard_text == "one two three four"
    assert item.spoken_text == "one two three four"


def test_cut_words_is_whole_words_rounded_down() -> None:
    assert cut_words("a b c d", 0.74) == "a b"
    assert cut_words("a b c d", 0.0) == ""
    assert cut_words("a b c d", 1.5) == "a b c d"


# --- responses --------------------------------------------------------------------------------


def test_active_response_and_statuses(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    conv.apply(srv.response_created("r1"))
    assert state.active_response_id == "r1" and state.responses["r1"] == "in_progress"
    conv.apply(srv.response_done("r1", status="cancelled"))
    assert state.active_response_id is None and state.responses["r1"] == "cancelled"
    assert state.is_cancelled("r1")


def test_streaming_item_tracks_audio(conv: Conversation) -> None:
    conv.user_turn("u1", "Hi")
    conv.assistant_turn("r1", "a1", "Hello there friend.", finish=False)
    assert conv.state.streaming_item_id == "a1"
    conv.apply(conv.srv.audio_done("r1", "a1"))
    assert conv.state.streaming_item_id is None


# --- usage ------------------------------------------------------------------------------------


def test_usage_totals_and_window(conv: Conversation) -> None:
    conv.user_turn("u1", "Hi")
    conv.assistant_turn(
        "r1",
        "a1",
        "Hello.",
        usage=usage(
            1000, 200, in_text_tokens=100, in_audio_tokens=900, in_cached_tokens=64,
            out_text_tokens=40, out_audio_tokens=160,
        ),
    )  # fmt: skip
    conv.user_turn("u2", "More")
    conv.assistant_turn("r2", "a2", "Sure.", usage=usage(1500, 300, in_audio_tokens=1200))
    state = conv.state
    assert state.window_tokens == 1800  # latest input + its output
    assert state.window_fresh
    finished = [x for x in conv.actions if isinstance(x, a.ResponseFinished)]
    assert [f.window_tokens for f in finished] == [1200, 1800]
    first = finished[0].usage
    assert first is not None
    assert (first.input_text_tokens, first.input_audio_tokens, first.input_cached_tokens) == (
        100,
        900,
        64,
    )
    assert (first.output_text_tokens, first.output_audio_tokens) == (40, 160)


def test_usage_with_missing_fields_counts_zero(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    conv.apply(srv.response_created("r1"), srv.response_done("r1", usage={}))
    conv.apply(srv.response_created("r2"), srv.response_done("r2", usage=usage(output_tokens=7)))
    conv.apply(srv.response_created("r3"), srv.response_done("r3"))  # no usage at all
    usages = [x.usage for x in conv.actions if isinstance(x, a.ResponseFinished)]
    assert usages[2] is None and usages[0] is not None and usages[1] is not None
    assert usages[0].input_tokens == 0 and usages[1].output_tokens == 7
    assert state.window_tokens == 7


# --- records ----------------------------------------------------------------------------------


def test_records_each_turn_once_in_order(conv: Conversation) -> None:
    conv.exchange(2)
    records = conv.take_records()
    # The last assistant turn waits: a barge-in may still truncate what is being played.
    assert [r["item_id"] for r in records] == ["u0", "a0", "u1"]
    assert conv.take_records() == []
    conv.user_turn("u2", "Next question about Rome?")
    assert [r["item_id"] for r in conv.take_records()] == ["a1", "u2"]
    final = conv.state.flush_records()
    assert final == []  # a1 already recorded, a2 does not exist yet
    conv.assistant_turn("r2", "a2", "Rome answer.")
    assert [r["item_id"] for r in conv.state.flush_records()] == ["a2"]


def test_records_come_out_as_actions_in_order() -> None:
    conv = Conversation("ga")
    srv = conv.srv
    conv.apply(srv.item_added(srv.text_item("t1", "user", "typed text"), previous_item_id=None))
    records = [x.record for x in conv.actions if isinstance(x, a.Record)]
    assert [r["item_id"] for r in records] == ["t1"]
    assert conv.state.take_records() == []  # handed out once


def test_item_lifecycle_follows_the_server(conv: Conversation) -> None:
    conv.user_turn("u1", None)
    item = conv.state.items["u1"]
    assert item.presence is Presence.ON_SERVER
    assert item.transcript is TranscriptState.PENDING
    conv.apply(conv.srv.transcript_completed("u1", "Here it is."))
    assert item.transcript is TranscriptState.DONE and item.recorded
    conv.apply(conv.srv.item_deleted("u1"))
    assert item.presence is Presence.DELETED and "u1" not in conv.state.order


def test_late_transcript_record_is_marked_summarized() -> None:
    conv = Conversation("ga")
    conv.user_turn("u1", None)
    conv.state.items["u1"].summarized = True
    conv.apply(conv.srv.transcript_completed("u1", "Finally here."))
    [record] = conv.take_records()
    assert record["summarized"] is True


def test_unknown_events_are_ignored() -> None:
    conv = Conversation("ga")
    event = conv.srv.event("rate_limits.updated", rate_limits=[])
    assert conv.apply(event) == []
    assert pcm_b64(1)  # helper sanity: 1 ms is 48 bytes
