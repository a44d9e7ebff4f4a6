"""The sans-I/O Compaction: exact events, confirmations, errors by event_id, retries."""

from __future__ import annotations

from typing import Any

import pytest

from realtime_voicebot.core.compaction import Compaction, CompactionPlan, CompactionPolicy
from realtime_voicebot.core.compaction.procedure import summary_item_text
from realtime_voicebot.core.recap import read_recap
from realtime_voicebot.transport.events import ServerEvent

from .spec import validate_client
from .state_helpers import Conversation

POLICY = CompactionPolicy(threshold_tokens=1000, keep_items=2)


@pytest.fixture(params=["ga", "beta"])
def conv(request: pytest.FixtureRequest) -> Conversation:
    conv = Conversation(request.param)
    conv.exchange(3, tokens=5000)
    return conv


def plan_of(conv: Conversation) -> CompactionPlan:
    plan = POLICY.due(conv.state)
    assert plan is not None
    return plan


def feed(conv: Conversation, compaction: Compaction, *events: ServerEvent) -> list[dict[str, Any]]:
    """What the dispatcher does: the state first, then the compaction."""
    out: list[dict[str, Any]] = []
    for event in events:
        conv.apply(event)
        out.extend(compaction.on_event(event))
    return out


def confirm_create(conv: Conversation, compaction: Compaction, create: dict[str, Any]) -> None:
    srv = conv.srv
    item = srv.text_item(create["item"]["id"], "system", create["item"]["content"][0]["text"])
    feed(conv, compaction, srv.item_added(item, previous_item_id=None))


def test_begin_sends_one_system_item_at_root_and_exact_deletes(conv: Conversation) -> None:
    plan = plan_of(conv)
    compaction = Compaction(conv.state, plan)
    events = compaction.begin("Ada ordered 3 books.", conv.srv.dialect)
    for event in events:
        validate_client(event, conv.srv.dialect)
    create, *deletes = events
    assert set(create) == {"type", "event_id", "previous_item_id", "item"}
    assert create["type"] == "conversation.item.create"
    assert create["previous_item_id"] == "root"
    item = create["item"]
    assert item["type"] == "message" and item["role"] == "system"
    text = summary_item_text("Ada ordered 3 books.")
    assert item["content"] == [{"type": "input_text", "text": text}]
    assert read_recap(item["content"][0]["text"]) == ("Ada ordered 3 books.", [])
    assert item["id"] == compaction.summary_item_id
    assert item["id"].startswith("sum_") and len(item["id"]) <= 32
    assert [d["type"] for d in deletes] == ["conversation.item.delete"] * 4
    assert [d["item_id"] for d in deletes] == ["u0", "a0", "u1", "a1"]
    assert all(set(d) == {"type", "event_id", "item_id"} for d in deletes)
    assert len({e["event_id"] for e in events}) == len(events)


def test_confirmations_complete_it_and_update_the_mirror(conv: Conversation) -> None:
    state, srv = conv.state, conv.srv
    compaction = Compaction(state, plan_of(conv))
    create, *deletes = compaction.begin("Ada ordered 3 books.", srv.dialect)
    conv.take_records()
    confirm_create(conv, compaction, create)
    assert not compaction.done and compaction.summary_confirmed
    for delete in deletes:
        feed(conv, compaction, srv.item_deleted(delete["item_id"]))
    assert compaction.done
    assert compaction.confirmed_ids == ["u0", "a0", "u1", "a1"] and compaction.failed_ids == []
    assert state.order == [compaction.summary_item_id, "u2", "a2"]
    assert state.summary == "Ada ordered 3 books."
    assert state.summary_item_id == compaction.summary_item_id
    for item_id in ("u0", "a0", "u1", "a1"):
        item = state.items[item_id]
        assert item.summarized and item.deleted and not item.on_server
    assert [i.id for i in state.history][:6] == ["u0", "a0", "u1", "a1", "u2", "a2"]
    [summary_record] = [r for r in conv.take_records() if r["type"] == "summary"]
    assert summary_record["summarized_ids"] == ["u0", "a0", "u1", "a1"]
    assert summary_record["text"] == "Ada ordered 3 books."
    assert summary_record["item_id"] == compaction.summary_item_id


def test_second_compaction_replaces_the_first_summary(conv: Conversation) -> None:
    state, srv = conv.state, conv.srv
    first = Compaction(state, plan_of(conv))
    create, *deletes = first.begin("First summary.", srv.dialect)
    confirm_create(conv, first, create)
    feed(conv, first, *(srv.item_deleted(d["item_id"]) for d in deletes))
    conv.exchange(2, tokens=5000, prefix="b")
    plan = plan_of(conv)
    assert plan.delete_ids == (first.summary_item_id, "u2", "a2", "ub0", "ab0")
    assert plan.previous_summary == "First summary."
    second = Compaction(state, plan)
    create2, *deletes2 = second.begin("Second summary.", srv.dialect)
    assert [d["item_id"] for d in deletes2] == list(plan.delete_ids)
    confirm_create(conv, second, create2)
    feed(conv, second, *(srv.item_deleted(d["item_id"]) for d in deletes2))
    assert second.done
    assert state.order == [second.summary_item_id, "ub1", "ab1"]
    assert [s.text for s in state.summaries] == ["First summary.", "Second summary."]
    assert state.summaries[1].replaced_item_ids == (first.summary_item_id,)


def test_failed_delete_is_retried_by_event_id(conv: Conversation) -> None:
    srv = conv.srv
    compaction = Compaction(conv.state, plan_of(conv), max_retries=2)
    create, *deletes = compaction.begin("S.", srv.dialect)
    confirm_create(conv, compaction, create)
    target = deletes[1]
    # An error for someone else's request is not ours.
    assert feed(conv, compaction, srv.error("evt_other", "server_error")) == []
    [retry] = feed(conv, compaction, srv.error(target["event_id"], "server_error"))
    assert retry["type"] == "conversation.item.delete" and retry["item_id"] == target["item_id"]
    assert retry["event_id"] != target["event_id"]
    for delete in deletes:
        if delete is not target:
            feed(conv, compaction, srv.item_deleted(delete["item_id"]))
    assert not compaction.done
    feed(conv, compaction, srv.item_deleted(target["item_id"]))
    assert compaction.done and compaction.delete_retries == 1
    assert target["item_id"] not in conv.state.order


def test_item_not_found_counts_as_gone(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    compaction = Compaction(state, plan_of(conv))
    create, *deletes = compaction.begin("S.", srv.dialect)
    confirm_create(conv, compaction, create)
    feed(conv, compaction, *(srv.item_deleted(d["item_id"]) for d in deletes[1:]))
    out = feed(conv, compaction, srv.error(deletes[0]["event_id"], "item_not_found"))
    assert out == [] and compaction.done
    assert compaction.failed_ids == []
    assert "u0" not in state.order  # the server does not hold it: neither does the mirror


def test_giving_up_keeps_the_mirror_as_the_server_holds_it(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    compaction = Compaction(state, plan_of(conv), max_retries=1)
    create, *deletes = compaction.begin("S.", srv.dialect)
    confirm_create(conv, compaction, create)
    feed(conv, compaction, *(srv.item_deleted(d["item_id"]) for d in deletes[1:]))
    [retry] = feed(conv, compaction, srv.error(deletes[0]["event_id"], "server_error"))
    assert feed(conv, compaction, srv.error(retry["event_id"], "server_error")) == []
    assert compaction.done and compaction.failed_ids == ["u0"]
    assert state.order == [compaction.summary_item_id, "u0", "u2", "a2"]
    assert state.items["u0"].on_server and state.items["u0"].summarized
    # The next compaction deletes it again without summarizing it twice.
    conv.exchange(2, tokens=5000, prefix="c")
    plan = plan_of(conv)
    assert "u0" in plan.delete_ids and "u0" not in plan.summarize_ids


def test_item_deleted_during_the_summary_is_not_deleted_again(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    plan = plan_of(conv)
    conv.apply(srv.item_deleted("a0"))  # e.g. a barge-in at 0 ms, while summarizing
    compaction = Compaction(state, plan)
    create, *deletes = compaction.begin("S.", srv.dialect)
    assert [d["item_id"] for d in deletes] == ["u0", "u1", "a1"]
    assert compaction.confirmed_ids == ["a0"]
    confirm_create(conv, compaction, create)
    feed(conv, compaction, *(srv.item_deleted(d["item_id"]) for d in deletes))
    assert compaction.done and state.items["a0"].summarized


def test_items_arriving_meanwhile_are_untouched(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    compaction = Compaction(state, plan_of(conv))
    conv.exchange(1, prefix="new")
    create, *deletes = compaction.begin("S.", srv.dialect)
    assert {d["item_id"] for d in deletes}.isdisjoint({"unew0", "anew0"})
    confirm_create(conv, compaction, create)
    feed(conv, compaction, *(srv.item_deleted(d["item_id"]) for d in deletes))
    assert state.order == [compaction.summary_item_id, "u2", "a2", "unew0", "anew0"]
    assert not state.items["unew0"].summarized


def test_create_error_is_retried_then_given_up_with_the_summary_kept(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    compaction = Compaction(state, plan_of(conv), max_retries=1)
    create, *deletes = compaction.begin("Kept facts: 42.", srv.dialect)
    [retry] = feed(conv, compaction, srv.error(create["event_id"], "invalid_value"))
    assert retry["item"]["id"] == create["item"]["id"] and retry["previous_item_id"] == "root"
    feed(conv, compaction, srv.error(retry["event_id"], "invalid_value"))
    assert compaction.summary_failed
    feed(conv, compaction, *(srv.item_deleted(d["item_id"]) for d in deletes))
    assert compaction.done
    # Never lost: the state holds the summary and the re-seed or next compaction carries it.
    assert state.summary == "Kept facts: 42."
    assert state.items["u0"].summarized


def test_resend_unconfirmed_after_silence(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    compaction = Compaction(state, plan_of(conv), max_retries=1)
    create, *_ = compaction.begin("S.", srv.dialect)
    confirm_create(conv, compaction, create)
    feed(conv, compaction, srv.item_deleted("u0"), srv.item_deleted("a0"))
    resent = compaction.resend_unconfirmed()
    assert [e["item_id"] for e in resent] == ["u1", "a1"]
    assert compaction.delete_retries == 2
    assert compaction.resend_unconfirmed() == []  # out of tries: given up
    assert compaction.done and compaction.failed_ids == ["u1", "a1"]
    assert {"u1", "a1"} <= set(state.order)


def test_give_up_and_abandon(conv: Conversation) -> None:
    srv, state = conv.srv, conv.state
    compaction = Compaction(state, plan_of(conv))
    create, *_ = compaction.begin("S.", srv.dialect)
    compaction.abandon()
    assert compaction.done and compaction.abandoned
    assert compaction.on_event(srv.item_deleted("u0")) == []
    # An abandoned summary item is not adopted when it shows up after all.
    confirm_create(conv, compaction, create)
    assert state.summary is None


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_transcript_after_its_item_was_summarized(dialect: str) -> None:
    conv2 = Conversation(dialect)
    conv2.user_turn("u0", None)  # pending
    conv2.assistant_turn("r0", "a0", "Answer.")
    conv2.exchange(1, tokens=5000, prefix="t")
    plan = plan_of(conv2)
    assert plan.pending_transcripts == ("u0",)
    compaction = Compaction(conv2.state, plan)
    create, *deletes = compaction.begin("User said something inaudible.", dialect)
    confirm_create(conv2, compaction, create)
    feed(conv2, compaction, *(conv2.srv.item_deleted(d["item_id"]) for d in deletes))
    assert compaction.done
    conv2.take_records()
    conv2.apply(conv2.srv.transcript_completed("u0", "My cat is called Tom."))
    item = conv2.state.items["u0"]
    assert item.text == "My cat is called Tom." and item.summarized and not item.on_server
    [record] = conv2.take_records()
    assert record["item_id"] == "u0" and record["summarized"] is True
