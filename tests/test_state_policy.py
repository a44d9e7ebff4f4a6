"""CompactionPolicy: when a compaction is due, and the exact snapshot it takes."""

from __future__ import annotations

import pytest

from realtime_voicebot.core.compaction import CompactionPolicy
from realtime_voicebot.core.conversation import Summary

from .state_helpers import Conversation, usage


@pytest.fixture(params=["ga", "beta"])
def conv(request: pytest.FixtureRequest) -> Conversation:
    return Conversation(request.param)


def test_not_due_below_threshold(conv: Conversation) -> None:
    conv.exchange(4, tokens=989)  # window 989 + 10 output = 999
    assert CompactionPolicy(threshold_tokens=1000, keep_items=2).due(conv.state) is None


def test_due_at_threshold_snapshots_all_but_the_tail(conv: Conversation) -> None:
    conv.exchange(3, tokens=990)  # window 990 + 10 = 1000
    plan = CompactionPolicy(threshold_tokens=1000, keep_items=2).due(conv.state)
    assert plan is not None
    assert plan.reason == "tokens" and plan.window_tokens == 1000
    assert plan.summarize_ids == ("u0", "a0", "u1", "a1")
    assert plan.delete_ids == ("u0", "a0", "u1", "a1")
    assert plan.anchor_id == "u2"
    assert plan.previous_summary_item_id is None and plan.previous_summary is None
    assert plan.pending_transcripts == ()


def test_not_due_when_the_tail_holds_everything(conv: Conversation) -> None:
    conv.exchange(2, tokens=5000)
    assert CompactionPolicy(threshold_tokens=1000, keep_items=4).due(conv.state) is None


def test_not_started_while_one_is_in_flight() -> None:
    conv = Conversation("ga", summary_threshold=1000, summary_keep_items=2)
    conv.exchange(4, tokens=5000)  # due: the core started one
    compactor = conv.core.compactor
    assert compactor.in_flight and compactor.stats.started == 1
    conv.exchange(2, tokens=5000, prefix="n")
    assert compactor.maybe_start() == [] and compactor.stats.started == 1


def test_not_due_until_the_window_is_measured_again(conv: Conversation) -> None:
    conv.exchange(4, tokens=5000)
    conv.state.window_fresh = False  # what a finished compaction leaves
    policy = CompactionPolicy(threshold_tokens=1000, keep_items=2)
    assert policy.due(conv.state) is None
    conv.user_turn("u9", "Another question about 7 apples?")
    conv.assistant_turn("r9", "a9", "Seven apples.", usage=usage(4000, 10))
    assert policy.due(conv.state) is not None


def test_every_n_user_turns(conv: Conversation) -> None:
    policy = CompactionPolicy(threshold_tokens=10**9, keep_items=2, every_turns=3)
    conv.exchange(2)
    assert policy.due(conv.state) is None
    conv.exchange(1, prefix="x")
    plan = policy.due(conv.state)
    assert plan is not None and plan.reason == "turns"
    assert plan.summarize_ids == ("u0", "a0", "u1", "a1")


def test_previous_summary_item_is_replaced_and_not_counted(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    summary = Summary(text="Earlier: Ada lives in Lyon.", summarized_ids=(), item_id="sum_1")
    state.expect_summary(summary)
    conv.apply(srv.item_added(srv.text_item("sum_1", "system", "Summary..."), "root"))
    assert state.summary_item_id == "sum_1" and state.summary == "Earlier: Ada lives in Lyon."
    conv.exchange(1, tokens=5000)  # two items, both in the tail
    policy = CompactionPolicy(threshold_tokens=1000, keep_items=2)
    assert policy.due(state) is None
    conv.exchange(1, tokens=5000, prefix="b")
    plan = policy.due(state)
    assert plan is not None
    assert plan.delete_ids == ("sum_1", "u0", "a0")
    assert plan.summarize_ids == ("u0", "a0")
    assert plan.previous_summary_item_id == "sum_1"
    assert plan.previous_summary == "Earlier: Ada lives in Lyon."


def test_pending_transcripts_are_listed(conv: Conversation) -> None:
    conv.user_turn("u0", None)  # transcript still pending
    conv.assistant_turn("r0", "a0", "Answer zero.")
    conv.exchange(1, tokens=5000, prefix="n")
    plan = CompactionPolicy(threshold_tokens=1000, keep_items=2).due(conv.state)
    assert plan is not None
    assert plan.summarize_ids == ("u0", "a0")
    assert plan.pending_transcripts == ("u0",)


def test_never_snapshots_an_item_being_generated(conv: Conversation) -> None:
    conv.exchange(2, tokens=5000)
    conv.user_turn("u2", "Question three?")
    conv.assistant_turn("r2", "a2", "streaming answer", finish=False)
    policy = CompactionPolicy(threshold_tokens=1000, keep_items=0)
    plan = policy.due(conv.state)
    assert plan is not None
    assert "a2" not in plan.summarize_ids and "a2" not in plan.delete_ids
    assert plan.delete_ids == ("u0", "a0", "u1", "a1", "u2")
    assert plan.anchor_id == "a2"


def test_function_call_is_kept_with_its_output() -> None:
    conv = Conversation("ga")
    srv = conv.srv
    conv.exchange(2, tokens=5000)
    call = {
        "id": "fc1",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_1",
        "name": "lookup",
        "arguments": "{}",
    }
    output = {"id": "fo1", "type": "function_call_output", "call_id": "call_1", "output": "42"}
    conv.apply(
        srv.item_added(call, previous_item_id="a1"),
        srv.item_added(output, previous_item_id="fc1"),
    )
    assert conv.state.items["fc1"].role == "assistant"
    assert conv.state.items["fc1"].text == "lookup({})"
    assert conv.state.items["fo1"].role == "tool"
    plan = CompactionPolicy(threshold_tokens=1000, keep_items=1).due(conv.state)
    assert plan is not None
    assert plan.delete_ids == ("u0", "a0", "u1", "a1")
    assert plan.anchor_id == "fc1"


def test_settings_build_the_policy() -> None:
    from realtime_voicebot.config import load_settings

    policy = CompactionPolicy.from_settings(
        load_settings({"summary_threshold": 1234, "summary_keep_items": 6})
    )
    assert (policy.threshold_tokens, policy.keep_items, policy.every_turns) == (1234, 6, None)
    with pytest.raises(ValueError):
        CompactionPolicy(threshold_tokens=0)
