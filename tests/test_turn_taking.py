"""Turn-taking in the core, as sequences of inputs: a cough or an "mm-hm" over a reply pauses
it and then resumes it; a real interruption truncates at the paused position and is answered;
push-to-talk starts and ends turns with a key."""

from __future__ import annotations

import pytest

from realtime_voicebot.core import Playback
from realtime_voicebot.core import actions as a
from realtime_voicebot.core.turn_taking import is_backchannel

from .spec import validate_client
from .state_helpers import Conversation

PLAYING = Playback("a1", 500.0, audible=True, has_output=True)


def kinds(actions: list[a.Action]) -> list[str]:
    return [type(x).__name__ for x in actions]


def sent_types(conv: Conversation, start: int) -> list[str]:
    return [e["type"] for e in conv.sent[start:]]


@pytest.fixture(params=["ga", "beta"])
def conv(request: pytest.FixtureRequest) -> Conversation:
    """A reply (a1) streaming and playing, in resume mode."""
    conv = Conversation(request.param, false_interruption="resume", interruption_min_ms=250)
    conv.user_turn("u1", "Tell me about the weather.")
    conv.assistant_turn("r1", "a1", "one two three four five six", audio_ms=3000, finish=False)
    conv.playback = PLAYING
    return conv


def speak_over(conv: Conversation, item_id: str, ms: int) -> list[a.Action]:
    """The server's VAD hears ``ms`` of speech over the reply; the actions taken meanwhile."""
    srv = conv.srv
    before = len(conv.actions)
    conv.apply(srv.speech_started(item_id, 10_000))
    assert isinstance(conv.actions[before], a.PausePlayback)  # silent within one block
    conv.playback = Playback("a1", 500.0, audible=False, has_output=True)  # paused
    overhead = 300 + 500  # the VAD's prefix padding and closing silence, reported with it
    conv.apply(
        srv.speech_stopped(item_id, 10_000 + overhead + ms),
        srv.committed(item_id, "a1"),
        srv.item_added(srv.user_audio_item(item_id), previous_item_id="a1"),
    )
    return conv.actions[before:]


def test_semantic_vad_lets_only_the_transcript_decide() -> None:
    conv = Conversation("ga", false_interruption="resume", turn_detection="semantic_vad")
    conv.user_turn("u1", "Hi")
    conv.assistant_turn("r1", "a1", "one two three", audio_ms=3000, finish=False)
    conv.playback = PLAYING
    actions = speak_over(conv, "u2", 50)  # short, but its length is not known under semantic
    assert "ResumePlayback" not in kinds(actions)
    conv.apply(conv.srv.transcript_completed("u2", "hmm"))
    assert "ResumePlayback" in kinds(conv.actions[-4:])


def test_a_normal_turn_is_answered_when_the_server_commits_it() -> None:
    conv = Conversation("ga", false_interruption="resume")
    start = len(conv.sent)
    conv.user_turn("u1", "What time is it?")
    assert sent_types(conv, start) == ["response.create"]  # the client owns the reply


def test_noise_shorter_than_the_minimum_resumes_the_reply_and_leaves_no_trace(
    conv: Conversation,
) -> None:
    start = len(conv.sent)
    actions = speak_over(conv, "u2", 150)
    assert "ResumePlayback" in kinds(actions)
    assert [x.reason for x in actions if isinstance(x, a.InterruptionIgnored)] == ["short"]
    # No reply to the noise; its item is deleted once the server has it.
    assert sent_types(conv, start) == ["conversation.item.delete"]
    assert conv.sent[-1]["item_id"] == "u2"
    validate_client(conv.sent[-1], conv.srv.dialect)
    conv.apply(conv.srv.transcript_completed("u2", "*cough*"), conv.srv.item_deleted("u2"))
    assert "u2" not in conv.state.order
    records = conv.take_records() + conv.state.flush_records()
    assert "u2" not in [r["item_id"] for r in records]
    assert not any(isinstance(x, a.BargeIn) for x in conv.actions)
    assert conv.core.turns.stats.false_interruptions == 1


@pytest.mark.parametrize("words", ["mm-hm", "Yeah.", "", "ok, ok"])
def test_a_backchannel_or_empty_transcript_resumes_the_reply(
    conv: Conversation, words: str
) -> None:
    start = len(conv.sent)
    actions = speak_over(conv, "u2", 400)  # long enough to wait for the words
    assert "ResumePlayback" not in kinds(actions)
    assert any(isinstance(x, a.StartTimer) and x.key[0] == "interjection" for x in actions)
    assert sent_types(conv, start) == []  # no reply yet: not decided
    before = len(conv.actions)
    conv.apply(conv.srv.transcript_completed("u2", words))
    after = conv.actions[before:]
    assert "ResumePlayback" in kinds(after) and "InterruptionIgnored" in kinds(after)
    assert "UserTurn" not in kinds(after)  # not shown as something the user said
    assert sent_types(conv, start) == ["conversation.item.delete"]
    assert "u2" not in [r["item_id"] for r in conv.take_records()]


def test_a_real_interruption_truncates_at_the_paused_position_and_is_answered(
    conv: Conversation,
) -> None:
    start = len(conv.sent)
    speak_over(conv, "u2", 1000)
    conv.apply(conv.srv.transcript_completed("u2", "Wait, what about tomorrow?"))
    assert sent_types(conv, start) == ["conversation.item.truncate", "response.cancel"]
    truncate = conv.sent[start]
    assert truncate["item_id"] == "a1" and truncate["audio_end_ms"] == 500  # where it paused
    assert any(isinstance(x, a.StopPlayback) for x in conv.actions)
    [barge_in] = [x for x in conv.actions if isinstance(x, a.BargeIn)]
    assert barge_in.played_ms == 500.0
    # The cancelled reply ends, then the user's turn is answered.
    conv.apply(conv.srv.response_done("r1", status="cancelled"))
    assert sent_types(conv, start)[-1] == "response.create"
    for event in conv.sent[start:]:
        validate_client(event, conv.srv.dialect)
    assert "u2" in [r["item_id"] for r in conv.take_records()]


def test_the_truncate_is_where_the_user_began_not_where_the_device_stopped(
    conv: Conversation,
) -> None:
    """After the pause the block the device held still plays: the player's count moves on
    (here by 20 ms), but the user began talking at 500 ms, and that is what was heard."""
    start = len(conv.sent)
    speak_over(conv, "u2", 1000)
    conv.playback = Playback("a1", 520.0, audible=False, has_output=True)
    conv.apply(conv.srv.transcript_completed("u2", "Stop, I have a question."))
    truncate = conv.sent[start]
    assert truncate["type"] == "conversation.item.truncate" and truncate["audio_end_ms"] == 500
    # The twin: a barge-in without a pause before it (typed) reads the player as it is now.
    conv2 = Conversation("ga", false_interruption="resume")
    conv2.user_turn("u1", "Tell me a story.")
    conv2.assistant_turn("r1", "a1", "once upon a time", audio_ms=3000, finish=False)
    conv2.playback = Playback("a1", 520.0, audible=True, has_output=True)
    mark = len(conv2.sent)
    conv2.take(conv2.core.typed_line("Stop."))
    assert conv2.sent[mark]["type"] == "conversation.item.truncate"
    assert conv2.sent[mark]["audio_end_ms"] == 520


def test_no_transcript_in_time_counts_as_a_real_interruption(conv: Conversation) -> None:
    start = len(conv.sent)
    actions = speak_over(conv, "u2", 800)
    [timer] = [x for x in actions if isinstance(x, a.StartTimer)]
    conv.take(conv.core.timer_fired(timer.key))
    assert sent_types(conv, start) == ["conversation.item.truncate", "response.cancel"]


def test_speaking_on_makes_the_pending_interjection_real(conv: Conversation) -> None:
    start = len(conv.sent)
    speak_over(conv, "u2", 600)
    conv.apply(conv.srv.speech_started("u3", 11_000))
    assert sent_types(conv, start)[:2] == ["conversation.item.truncate", "response.cancel"]


def test_off_mode_cuts_the_reply_at_the_first_speech() -> None:
    conv = Conversation("ga", false_interruption="off", interrupt_response=True)
    conv.user_turn("u1", "Hi")
    conv.assistant_turn("r1", "a1", "one two three", audio_ms=3000, finish=False)
    conv.playback = PLAYING
    start = len(conv.sent)
    conv.apply(conv.srv.speech_started("u2", 10_000))
    assert sent_types(conv, start) == ["conversation.item.truncate"]  # server cancels itself
    assert not any(isinstance(x, a.PausePlayback) for x in conv.actions)


@pytest.mark.parametrize(
    ("text", "backchannel"),
    [
        ("mm-hm", True),
        ("Yeah.", True),
        ("ok ok", True),
        ("I see", True),
        ("", True),
        ("yeah but wait", False),
        ("stop", False),
        ("what time is it", False),
        ("no", False),
    ],
)
def test_backchannels_are_told_from_turns(text: str, backchannel: bool) -> None:
    assert is_backchannel(text) is backchannel


# --- push-to-talk ----------------------------------------------------------------------------


def test_push_to_talk_opens_the_turn_and_commits_it() -> None:
    conv = Conversation("ga", turn_detection="manual")
    start = len(conv.sent)
    pressed = conv.take(conv.core.push_to_talk()) and conv.actions[-4:]
    assert kinds(pressed)[-2:] == ["OpenMicrophone", "StatusChanged"]
    assert sent_types(conv, start) == ["input_audio_buffer.clear"]
    conv.take(conv.core.push_to_talk())
    assert isinstance(conv.actions[-3], a.CloseMicrophone)
    assert sent_types(conv, start) == ["input_audio_buffer.clear", "input_audio_buffer.commit"]
    # The reply is asked for once the server has the turn.
    conv.apply(conv.srv.committed("u1"))
    assert sent_types(conv, start)[-1] == "response.create"
    for event in conv.sent[start:]:
        validate_client(event, "ga")


def test_an_empty_push_to_talk_turn_gets_no_reply() -> None:
    conv = Conversation("ga", turn_detection="manual")
    conv.take(conv.core.push_to_talk())
    conv.take(conv.core.push_to_talk())
    commit = conv.sent[-1]
    start = len(conv.sent)
    conv.apply(conv.srv.error(commit["event_id"], "input_audio_buffer_commit_empty"))
    assert sent_types(conv, start) == []


def test_push_to_talk_over_a_reply_stops_and_truncates_it() -> None:
    conv = Conversation("ga", turn_detection="manual")
    conv.take(conv.core.push_to_talk())
    conv.take(conv.core.push_to_talk())
    conv.apply(conv.srv.committed("u1"), conv.srv.item_added(conv.srv.user_audio_item("u1")))
    conv.assistant_turn("r1", "a1", "one two three four", audio_ms=2000, finish=False)
    conv.playback = Playback("a1", 800.0, audible=True, has_output=True)
    start = len(conv.sent)
    conv.take(conv.core.push_to_talk())
    assert sent_types(conv, start) == [
        "conversation.item.truncate",
        "response.cancel",
        "input_audio_buffer.clear",
    ]
    assert conv.sent[start]["audio_end_ms"] == 800


def test_the_key_does_nothing_without_push_to_talk() -> None:
    conv = Conversation("ga")
    assert conv.core.push_to_talk() == []


# --- the reply watchdog ------------------------------------------------------------------------


def fire_latest(conv: Conversation, name: str) -> None:
    timers = [x for x in conv.actions if isinstance(x, a.StartTimer) and x.key[0] == name]
    conv.take(conv.core.timer_fired(timers[-1].key))


def test_a_mute_server_is_replaced_even_while_the_user_keeps_typing() -> None:
    conv = Conversation("ga", response_timeout_s=3.0)
    conv.take(conv.core.typed_line("hello?"))
    for _ in range(3):  # three silent periods: a stall
        fire_latest(conv, "watchdog")
    assert any(isinstance(x, a.ErrorReported) and x.code == "reply_timeout" for x in conv.actions)
    conv.take(conv.core.typed_line("anyone there?"))  # a new reply owed, a new watch
    fire_latest(conv, "mute")
    assert isinstance(conv.actions[-1], a.Reconnect)


def test_a_server_that_speaks_after_the_stall_is_kept() -> None:
    conv = Conversation("ga", response_timeout_s=3.0)
    conv.take(conv.core.typed_line("hello?"))
    for _ in range(3):
        fire_latest(conv, "watchdog")
    conv.apply(conv.srv.error(None, "response_cancel_not_active"))  # it answers the cancel
    fire_latest(conv, "mute")
    assert not any(isinstance(x, a.Reconnect) for x in conv.actions)


def test_events_that_keep_coming_are_never_a_stall() -> None:
    conv = Conversation("ga", response_timeout_s=3.0)
    conv.user_turn("u1", "Tell me a long story.")
    conv.apply(conv.srv.response_created("r1"))
    for _ in range(10):
        conv.apply(conv.srv.text_delta("r1", "a1", "and then "))
        fire_latest(conv, "watchdog")
    assert not any(isinstance(x, a.ErrorReported) for x in conv.actions)
