"""Barge-in: truncate what was heard, capped at the audio received; drop late deltas."""

from __future__ import annotations

import pytest

from realtime_voicebot.core import Playback
from realtime_voicebot.core import actions as a

from .spec import validate_client
from .state_helpers import Conversation

DIALECTS = ["ga", "beta"]


@pytest.fixture(params=DIALECTS)
def conv(request: pytest.FixtureRequest) -> Conversation:
    conv = Conversation(request.param)
    conv.user_turn("u1", "Tell me about the weather.")
    return conv


def test_truncate_at_played_ms(conv: Conversation) -> None:
    conv.assistant_turn("r1", "a1", "one two three four five six seven eight", audio_ms=4000)
    [event] = conv.interrupt(1000.7, "a1")
    validate_client(event, conv.srv.dialect)
    assert {k: v for k, v in event.items() if k != "event_id"} == {
        "type": "conversation.item.truncate",
        "item_id": "a1",
        "content_index": 0,
        "audio_end_ms": 1000,
    }
    item = conv.state.items["a1"]
    assert item.truncated and item.heard_text == "one two"
    [record] = conv.take_records()[-1:]
    assert record["item_id"] == "a1" and record["truncated"] is True
    assert record["heard_text"] == "one two"
    assert record["text"] == "one two three four five six seven eight"


def test_truncate_is_capped_at_audio_received(conv: Conversation) -> None:
    # Still streaming: 2450 ms received, the player claims more (it never can, but clocks lie).
    conv.assistant_turn("r1", "a1", "alpha beta gamma delta", audio_ms=2450, finish=False)
    [event] = conv.interrupt(2535, "a1")
    assert event["type"] == "conversation.item.truncate"
    assert event["item_id"] == "a1" and event["audio_end_ms"] == 2450


def test_nothing_heard_deletes_the_item(conv: Conversation) -> None:
    conv.assistant_turn("r1", "a1", "never heard", audio_ms=500, finish=False)
    [event] = conv.interrupt(0, "a1")
    validate_client(event, conv.srv.dialect)
    assert {k: v for k, v in event.items() if k != "event_id"} == {
        "type": "conversation.item.delete",
        "item_id": "a1",
    }
    assert conv.state.items["a1"].heard_text == ""
    # The mirror follows the server's confirmation, not the request.
    assert "a1" in conv.state.order
    conv.apply(conv.srv.item_deleted("a1"))
    assert "a1" not in conv.state.order


def test_nothing_sent_when_playback_had_finished(conv: Conversation) -> None:
    conv.assistant_turn("r1", "a1", "complete answer", audio_ms=1200)
    assert conv.interrupt(1200, "a1") == []
    assert conv.interrupt(5000, "a1") == []
    assert not conv.state.items["a1"].truncated


def test_nothing_sent_without_an_assistant_item(conv: Conversation) -> None:
    assert conv.interrupt(300, None) == []
    assert conv.interrupt(300, "u1") == []
    assert conv.interrupt(300, "unknown") == []


def test_late_deltas_of_an_interrupted_response_are_dropped(conv: Conversation) -> None:
    srv = conv.srv
    conv.assistant_turn("r1", "a1", "long reply here", audio_ms=3000, finish=False)
    late_before = srv.audio_delta("r1", "a1", 100)
    assert conv.should_play(late_before)
    conv.interrupt(800, "a1")
    late = srv.audio_delta("r1", "a1", 100)
    assert not conv.should_play(late)
    conv.apply(late)
    assert conv.state.streaming_item_id is None
    # The next response plays.
    conv.user_turn("u2", "Stop. What time is it?")
    conv.assistant_turn("r2", "a2", "It is noon.", finish=False)
    assert conv.should_play(srv.audio_delta("r2", "a2", 100))


def test_speech_started_marks_the_active_response_cancelled() -> None:
    conv = Conversation("ga", interrupt_response=True)
    conv.user_turn("u1", "Hi")
    conv.assistant_turn("r1", "a1", "Generating", finish=False)
    conv.apply(conv.srv.speech_started("u2", 5000))
    assert not conv.should_play(conv.srv.audio_delta("r1", "a1", 20))


def test_speech_started_without_server_interrupt_keeps_playing() -> None:
    conv = Conversation("ga", interrupt_response=False)
    conv.user_turn("u1", "Hi")
    conv.assistant_turn("r1", "a1", "Generating", finish=False)
    conv.apply(conv.srv.speech_started("u2", 5000))
    assert conv.should_play(conv.srv.audio_delta("r1", "a1", 20))


def test_cancelled_response_done_drops_its_deltas(conv: Conversation) -> None:
    conv.assistant_turn("r1", "a1", "x", finish=False)
    conv.apply(conv.srv.response_done("r1", status="cancelled"))
    assert not conv.should_play(conv.srv.audio_delta("r1", "a1", 20))


def test_barge_in_cancels_only_when_the_server_does_not_and_a_response_is_active() -> None:
    conv = Conversation("ga", interrupt_response=False)
    conv.user_turn("u1", "Hi")
    conv.assistant_turn("r1", "a1", "one two three", audio_ms=1000)  # done, still playing
    assert [e["type"] for e in conv.interrupt(300, "a1")] == ["conversation.item.truncate"]
    conv.user_turn("u2", "And?")
    conv.assistant_turn("r2", "a2", "speaking now", audio_ms=1000, finish=False)
    sent = conv.interrupt(300, "a2")  # active: the server will not cancel it itself
    assert [e["type"] for e in sent] == ["conversation.item.truncate", "response.cancel"]
    for event in sent:
        validate_client(event, conv.srv.dialect)

    served = Conversation("ga", interrupt_response=True)
    served.user_turn("u1", "Hi")
    served.assistant_turn("r1", "a1", "speaking now", audio_ms=1000, finish=False)
    assert [e["type"] for e in served.interrupt(300, "a1")] == ["conversation.item.truncate"]


def test_typing_over_a_reply_is_the_same_barge_in_and_cancels() -> None:
    conv = Conversation("ga", interrupt_response=True)
    conv.user_turn("u1", "Hi")
    conv.assistant_turn("r1", "a1", "one two three four", audio_ms=2000, finish=False)
    conv.playback = Playback("a1", 1000.0, audible=True, has_output=True)
    sent = conv.take(conv.core.typed_line("Stop, another question"))
    assert [e["type"] for e in sent] == ["conversation.item.truncate", "response.cancel"]
    assert sent[0]["audio_end_ms"] == 1000
    assert any(isinstance(x, a.BargeIn) and x.cause == "typed" for x in conv.actions)
    # The line waits for the cancelled response to end, then goes with its own reply.
    conv.playback = Playback(has_output=True)
    sent = conv.apply(conv.srv.response_done("r1", status="cancelled"))
    assert [e["type"] for e in sent] == ["conversation.item.create", "response.create"]


def test_interrupt_after_item_done_but_while_playing(conv: Conversation) -> None:
    # The reply is fully generated (faster than real time) and still playing.
    conv.assistant_turn("r1", "a1", "a b c d e f g h i j", audio_ms=5000)
    [event] = conv.interrupt(2500, "a1")
    assert event["audio_end_ms"] == 2500
    records = {r["item_id"]: r for r in conv.take_records()}
    assert records["a1"]["heard_text"] == "a b c d e"
    # The server's confirmation does not overwrite what we computed.
    conv.apply(conv.srv.item_truncated("a1", 2500))
    assert conv.state.items["a1"].heard_text == "a b c d e"
