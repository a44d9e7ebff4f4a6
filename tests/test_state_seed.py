"""A new session: reset the mirror, keep the history, re-seed with ONE system item at root."""

from __future__ import annotations

import pytest

from realtime_voicebot.state.compaction import Compaction
from realtime_voicebot.state.conversation import RECENT_HEADER, SUMMARY_HEADER, ConversationState
from realtime_voicebot.state.policy import CompactionPolicy

from .spec import validate_client
from .state_helpers import Conversation

POLICY = CompactionPolicy(threshold_tokens=1000, keep_items=2)


@pytest.fixture(params=["ga", "beta"])
def conv(request: pytest.FixtureRequest) -> Conversation:
    return Conversation(request.param)


def compact(conv: Conversation, text: str) -> Compaction:
    plan = POLICY.due(conv.state)
    assert plan is not None
    compaction = Compaction(conv.state, plan)
    create, *deletes = compaction.begin(text, conv.srv.dialect)
    srv = conv.srv
    events = [srv.item_added(srv.text_item(create["item"]["id"], "system", "s"), None)]
    events += [srv.item_deleted(d["item_id"]) for d in deletes]
    for event in events:
        conv.apply(event)
        compaction.on_event(event)
    assert compaction.done
    return compaction


def test_nothing_to_seed_in_an_empty_conversation() -> None:
    assert ConversationState().seed_events("ga") == []


def test_seed_is_one_system_item_at_root_with_the_turns(conv: Conversation) -> None:
    conv.exchange(2)
    conv.state.reset_for_new_session()
    [event] = conv.state.seed_events(conv.srv.dialect)
    validate_client(event, conv.srv.dialect)
    assert set(event) == {"type", "event_id", "previous_item_id", "item"}
    assert event["type"] == "conversation.item.create" and event["previous_item_id"] == "root"
    item = event["item"]
    assert item["role"] == "system" and item["id"].startswith("seed_") and len(item["id"]) <= 32
    [part] = item["content"]
    assert part["type"] == "input_text"
    assert part["text"] == (
        f"{RECENT_HEADER}\n"
        "User: My order number 0 ships to Paris?\n"
        "Assistant: Order 0 ships to Paris on Monday.\n"
        "User: My order number 1 ships to Paris?\n"
        "Assistant: Order 1 ships to Paris on Monday."
    )


def test_seed_holds_the_summary_and_only_the_unsummarized_turns(conv: Conversation) -> None:
    conv.exchange(3, tokens=5000)
    compact(conv, "Ada has three orders shipping to Paris.")
    conv.state.reset_for_new_session()
    [event] = conv.state.seed_events(conv.srv.dialect)
    text = event["item"]["content"][0]["text"]
    assert text.startswith(f"{SUMMARY_HEADER}\nAda has three orders shipping to Paris.\n\n")
    assert "order number 0" not in text and "order number 1" not in text
    assert text.endswith(
        f"{RECENT_HEADER}\nUser: My order number 2 ships to Paris?\n"
        "Assistant: Order 2 ships to Paris on Monday."
    )


def test_reset_clears_the_mirror_and_keeps_the_history(conv: Conversation) -> None:
    conv.exchange(2, tokens=3000)
    state = conv.state
    state.reset_for_new_session()
    assert state.order == [] and state.window_tokens == 0 and state.active_response_id is None
    assert len(state.history) == 4 and all(not i.on_server for i in state.history)
    assert state.carried_ids == ["u0", "a0", "u1", "a1"]
    assert state.usage.responses == 2  # cost totals survive sessions


def test_confirmed_seed_becomes_the_summary_item_and_is_replaced_next(
    conv: Conversation,
) -> None:
    conv.exchange(2)
    state, srv = conv.state, conv.srv
    state.reset_for_new_session()
    [event] = state.seed_events(srv.dialect)
    seed_id = event["item"]["id"]
    conv.apply(srv.item_added(srv.text_item(seed_id, "system", "seed"), previous_item_id=None))
    assert state.summary_item_id == seed_id and state.items[seed_id].is_summary
    conv.last_id = seed_id
    conv.exchange(3, tokens=5000, prefix="n")
    plan = POLICY.due(state)
    assert plan is not None
    assert plan.delete_ids == (seed_id, "un0", "an0", "un1", "an1")
    # The seeded turns are summarized along with the new ones: nothing lost.
    assert plan.summarize_ids == ("u0", "a0", "u1", "a1", "un0", "an0", "un1", "an1")
    compact(conv, "All of it.")
    assert state.carried_ids == []
    assert state.items["u0"].summarized


def test_seed_trims_the_oldest_turns_to_max_chars(conv: Conversation) -> None:
    conv.exchange(5)
    conv.state.reset_for_new_session()
    [event] = conv.state.seed_events(conv.srv.dialect, max_chars=200)
    text = event["item"]["content"][0]["text"]
    assert len(text) <= 200 + len(RECENT_HEADER) + 1
    assert "Order 4 ships" in text and "number 0" not in text
    # Trimmed turns stay carried: the next compaction summarizes them.
    assert conv.state.carried_ids[0] == "u0"


def test_seed_uses_what_was_heard_of_a_truncated_reply(conv: Conversation) -> None:
    conv.user_turn("u1", "Read the list.")
    conv.assistant_turn("r1", "a1", "apples pears plums cherries", audio_ms=4000)
    conv.state.interrupt(2000, "a1")
    conv.state.reset_for_new_session()
    [event] = conv.state.seed_events(conv.srv.dialect)
    assert event["item"]["content"][0]["text"].endswith("Assistant: apples pears")


def test_a_produced_but_unconfirmed_summary_is_adopted_at_reset(conv: Conversation) -> None:
    conv.exchange(3, tokens=5000)
    plan = POLICY.due(conv.state)
    assert plan is not None
    Compaction(conv.state, plan).begin("Produced before the drop.", conv.srv.dialect)
    conv.state.reset_for_new_session()  # the session died before any confirmation
    assert conv.state.summary == "Produced before the drop."
    [event] = conv.state.seed_events(conv.srv.dialect)
    text = event["item"]["content"][0]["text"]
    assert "Produced before the drop." in text
    assert "number 0" not in text and "number 2" in text


def test_restore_from_a_transcript_seeds_the_new_session() -> None:
    state = ConversationState()
    state.restore("Bob likes jazz.", [("user", "Play something."), ("assistant", "Miles Davis.")])
    assert state.drain_completed_records() == []
    [event] = state.seed_events("ga")
    assert event["item"]["content"][0]["text"] == (
        f"{SUMMARY_HEADER}\nBob likes jazz.\n\n{RECENT_HEADER}\n"
        "User: Play something.\nAssistant: Miles Davis."
    )
