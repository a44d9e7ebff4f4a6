"""The Compactor inside the session core: phases, bounded waits as timers, retries, reconnects.

No task, no clock: a compaction is a sequence of inputs (server events, the summary, timers
firing) and the actions the core returns. `Loopback` plays the server: it answers the
core's creates and deletes with the events the service would send.
"""

from __future__ import annotations

from typing import Any

import pytest

from realtime_voicebot.core import actions as a
from realtime_voicebot.core.conversation import INAUDIBLE
from realtime_voicebot.core.recap import read_recap
from realtime_voicebot.summarization.base import SummaryInput

from .spec import validate_client
from .state_helpers import Conversation

JSON = dict[str, Any]


class Loopback:
    """Answers the client events the core sends, like the service would."""

    def __init__(self, conv: Conversation) -> None:
        self.conv = conv
        self.fail_deletes: dict[str, list[str]] = {}  # item id -> error codes to answer first
        self.ignore_deletes: dict[str, int] = {}  # item id -> requests to leave unanswered
        self.answered = len(conv.sent)
        self.connected = True

    def pump(self) -> None:
        """Answer every client event not answered yet (answers may cause more)."""
        while self.answered < len(self.conv.sent):
            event = self.conv.sent[self.answered]
            self.answered += 1
            validate_client(event, self.conv.srv.dialect)
            if self.connected:
                self.answer(event)

    def answer(self, event: JSON) -> None:
        conv, srv = self.conv, self.conv.srv
        if event["type"] == "conversation.item.create":
            item = event["item"]
            text = item["content"][0]["text"]
            conv.apply(srv.item_added(srv.text_item(item["id"], "system", text), None))
        elif event["type"] == "conversation.item.delete":
            item_id = event["item_id"]
            if self.ignore_deletes.get(item_id, 0) > 0:
                self.ignore_deletes[item_id] -= 1
                return
            codes = self.fail_deletes.get(item_id)
            if codes:
                conv.apply(srv.error(event["event_id"], codes.pop(0)))
            elif conv.state.on_server(item_id):
                conv.apply(srv.item_deleted(item_id))
            else:
                conv.apply(srv.error(event["event_id"], "item_not_found"))

    def of_type(self, event_type: str) -> list[JSON]:
        return [e for e in self.conv.sent if e["type"] == event_type]


def make(dialect: str = "ga", turns: int = 3, **config: Any) -> tuple[Conversation, Loopback]:
    """``turns`` exchanges of 5,000 tokens each, under a threshold they do not reach."""
    conv = Conversation(dialect, summary_keep_items=2, summary_threshold=10**9, **config)
    conv.exchange(turns, tokens=5000)
    return conv, Loopback(conv)


def start(conv: Conversation) -> list[a.Action]:
    """Ask for a compaction under a threshold of 1,000 tokens (all but the last 2 items)."""
    policy = conv.core.policy
    threshold, policy.threshold_tokens = policy.threshold_tokens, 1000
    actions = conv.core.compactor.maybe_start()
    policy.threshold_tokens = threshold
    conv.take(actions)
    return actions


def summarize_request(conv: Conversation) -> a.Summarize:
    return [x for x in conv.actions if isinstance(x, a.Summarize)][-1]


def summary_ready(conv: Conversation, text: str, fallback: bool = False) -> None:
    job = summarize_request(conv).job_id
    conv.take(conv.core.summary_ready(job, text, fallback))


def fire(conv: Conversation, *names: str) -> None:
    """Fire the latest compaction timer whose key holds ``names``."""
    timers = [
        x
        for x in conv.actions
        if isinstance(x, a.StartTimer)
        and x.key[0] == "compaction"
        and x.key[2:][: len(names)] == names
    ]
    conv.take(conv.core.timer_fired(timers[-1].key))


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_a_due_compaction_summarizes_then_inserts_and_deletes(dialect: str) -> None:
    conv, server = make(dialect)
    compactor = conv.core.compactor
    started = start(conv)
    assert isinstance(started[0], a.CompactionStarted)
    request = summarize_request(conv)
    assert start(conv) == []  # one at a time
    assert [(i.role, i.text) for i in request.inputs] == [
        ("user", "My order number 0 ships to Paris?"),
        ("assistant", "Order 0 ships to Paris on Monday."),
        ("user", "My order number 1 ships to Paris?"),
        ("assistant", "Order 1 ships to Paris on Monday."),
    ]
    assert request.previous_summary is None and request.language == "auto"
    # While the summary is being written the conversation goes on; nothing is sent for it.
    conv.exchange(1, prefix="live")
    assert server.of_type("conversation.item.create") == []
    summary_ready(conv, "Ada has orders 0 and 1 for Paris.")
    server.pump()
    [create] = server.of_type("conversation.item.create")
    assert create["previous_item_id"] == "root"
    assert read_recap(create["item"]["content"][0]["text"]) == (
        "Ada has orders 0 and 1 for Paris.",
        [],
    )
    deletes = [d["item_id"] for d in server.of_type("conversation.item.delete")]
    assert deletes == ["u0", "a0", "u1", "a1"]
    state = conv.state
    assert state.order == [create["item"]["id"], "u2", "a2", "ulive0", "alive0"]
    assert state.summary == "Ada has orders 0 and 1 for Paris."
    assert not compactor.in_flight
    stats = compactor.stats
    assert (stats.compactions, stats.items_summarized, stats.items_deleted) == (1, 4, 4)
    assert stats.fallbacks == 0
    [done] = [x for x in conv.actions if isinstance(x, a.Compacted)]
    assert (done.items, done.summary_chars, done.fallback) == (4, 33, False)
    # The window is stale until the next response measures it: not due again.
    assert start(conv) == []


def test_a_fallback_summary_is_counted() -> None:
    conv, server = make()
    start(conv)
    summary_ready(conv, "Written by the fallback.", fallback=True)
    server.pump()
    assert conv.core.compactor.stats.fallbacks == 1
    assert [x.fallback for x in conv.actions if isinstance(x, a.Compacted)] == [True]


def test_waits_for_a_pending_transcript_then_summarizes() -> None:
    conv = Conversation("ga", summary_keep_items=2, summary_threshold=10**9)
    conv.user_turn("u0", None)  # transcript pending
    conv.assistant_turn("r0", "a0", "Answer zero.")
    conv.exchange(1, tokens=5000, prefix="x")
    start(conv)
    assert not any(isinstance(x, a.Summarize) for x in conv.actions)  # waiting for the words
    assert conv.core.compactor.phase == "transcripts"
    conv.apply(conv.srv.transcript_completed("u0", "My locker code is 4521."))
    assert summarize_request(conv).inputs[0] == SummaryInput("user", "My locker code is 4521.")


def test_a_transcript_that_never_comes_is_summarized_as_inaudible() -> None:
    conv = Conversation("beta", summary_keep_items=2, summary_threshold=10**9)
    conv.user_turn("u0", None)
    conv.assistant_turn("r0", "a0", "Answer zero.")
    conv.exchange(1, tokens=5000, prefix="x")
    start(conv)
    fire(conv, "transcripts")
    assert summarize_request(conv).inputs[0] == SummaryInput("user", INAUDIBLE)
    assert conv.core.compactor.stats.transcript_timeouts == 1


def test_failed_delete_is_retried_and_item_not_found_counts_as_gone() -> None:
    conv, server = make()
    server.fail_deletes = {"a0": ["server_error"], "u0": ["item_not_found"]}
    start(conv)
    conv.apply(conv.srv.item_deleted("u1"))  # e.g. deleted by a barge-in meanwhile
    summary_ready(conv, "Summary.")
    server.pump()
    deletes = [d["item_id"] for d in server.of_type("conversation.item.delete")]
    assert deletes == ["u0", "a0", "a1", "a0"]  # u1 was already gone; a0 retried once
    stats = conv.core.compactor.stats
    assert stats.delete_retries == 1 and stats.delete_failures == 0 and stats.compactions == 1
    assert conv.state.order[1:] == ["u2", "a2"]
    assert conv.state.items["u1"].summarized


def test_unanswered_deletes_are_resent_when_the_wait_ends() -> None:
    conv, server = make()
    server.ignore_deletes = {"u1": 1}
    start(conv)
    summary_ready(conv, "Summary.")
    server.pump()
    assert conv.core.compactor.in_flight  # u1 unconfirmed
    fire(conv, "confirm", 0)
    server.pump()
    deletes = [d["item_id"] for d in server.of_type("conversation.item.delete")]
    assert deletes == ["u0", "a0", "u1", "a1", "u1"]
    stats = conv.core.compactor.stats
    assert stats.compactions == 1 and stats.delete_retries == 1
    assert "u1" not in conv.state.order


def test_a_stale_timer_does_nothing() -> None:
    conv, server = make()
    start(conv)
    summary_ready(conv, "Summary.")
    server.pump()  # all confirmed: done
    before = len(conv.actions)
    conv.take(conv.core.timer_fired(("compaction", 1, "confirm", 0)))
    conv.take(conv.core.timer_fired(("compaction", 99, "transcripts")))
    assert conv.actions[before:] == []


def test_a_delete_that_keeps_failing_leaves_the_item_in_the_mirror() -> None:
    conv, server = make()
    conv.core.compactor.max_retries = 1
    server.fail_deletes = {"a1": ["server_error", "server_error"]}
    start(conv)
    summary_ready(conv, "Summary.")
    server.pump()
    stats = conv.core.compactor.stats
    assert stats.delete_failures == 1 and stats.compactions == 1
    assert conv.state.order[1:] == ["a1", "u2", "a2"]
    assert conv.state.items["a1"].summarized


def test_deletes_never_confirmed_are_given_up_after_the_rounds() -> None:
    conv, server = make()
    server.ignore_deletes = {"a1": 99}
    start(conv)
    summary_ready(conv, "Summary.")
    server.pump()
    for round_ in range(conv.core.compactor.confirm_rounds + 1):
        fire(conv, "confirm", round_)
        server.pump()
    compactor = conv.core.compactor
    assert not compactor.in_flight and compactor.stats.delete_failures == 1
    assert "a1" in conv.state.order  # as on the server


def test_reconnect_while_summarizing_reseeds_from_the_previous_state() -> None:
    conv, server = make()
    start(conv)
    job = summarize_request(conv).job_id
    sent = conv.new_session()
    compactor = conv.core.compactor
    assert not compactor.in_flight and compactor.stats.abandoned == 1
    [seed] = sent
    _, recent = read_recap(seed["item"]["content"][0]["text"])
    for n in range(3):
        assert f"User: My order number {n} ships to Paris?" in recent
    before = len(conv.sent)
    conv.take(conv.core.summary_ready(job, "Too late."))
    assert conv.sent[before:] == []  # the old compaction sends nothing, ever
    assert conv.state.summary is None
    # The new session goes on and compacts later, with the carried turns included.
    server.answered = len(conv.sent) - 1
    server.pump()  # the seed is confirmed
    conv.last_id = seed["item"]["id"]
    conv.exchange(3, tokens=5000, prefix="n")
    start(conv)
    assert len(summarize_request(conv).inputs) == 6 + 4  # carried turns, then the snapshot
    summary_ready(conv, "All facts.")
    server.pump()
    assert conv.state.carried_ids == []
    assert conv.state.order == [
        server.of_type("conversation.item.create")[-1]["item"]["id"],
        "un2",
        "an2",
    ]


def test_reconnect_after_the_summary_was_sent_keeps_it() -> None:
    conv, server = make()
    start(conv)
    summary_ready(conv, "Orders 0 and 1 go to Paris.")
    server.connected = False  # the connection died: nothing comes back
    server.pump()
    [seed] = conv.new_session()
    summary, recent = read_recap(seed["item"]["content"][0]["text"])
    assert summary == "Orders 0 and 1 go to Paris."
    assert "number 0" not in " ".join(recent)  # summarized: not duplicated
    assert "User: My order number 2 ships to Paris?" in recent  # the tail: not lost
    assert conv.state.summary == "Orders 0 and 1 go to Paris."
    assert not conv.core.compactor.in_flight


def test_an_abandoned_job_never_clobbers_the_next_compaction() -> None:
    conv, server = make()
    start(conv)
    old_job = summarize_request(conv).job_id
    server.answered = len(conv.sent)
    conv.new_session()
    server.answered = len(conv.sent)
    conv.exchange(3, tokens=5000, prefix="n")
    start(conv)
    new_job = summarize_request(conv).job_id
    assert new_job != old_job
    conv.take(conv.core.summary_ready(old_job, "Old."))  # late: ignored
    assert conv.core.compactor.in_flight and conv.state.summary is None
    summary_ready(conv, "New.")
    server.pump()
    assert conv.state.summary == "New." and conv.core.compactor.stats.compactions == 1
    assert [e["item_id"] for e in server.of_type("conversation.item.delete")][-4:] == [
        "un0",
        "an0",
        "un1",
        "an1",
    ]


def test_the_core_starts_a_compaction_itself_after_a_response() -> None:
    conv = Conversation("ga", summary_threshold=1000, summary_keep_items=2)
    conv.exchange(1, tokens=5000)
    assert not conv.core.compactor.in_flight  # only the kept tail: nothing to summarize
    conv.exchange(1, tokens=5000, prefix="b")
    assert conv.core.compactor.in_flight
    assert [i.text for i in summarize_request(conv).inputs][:1] == [
        "My order number 0 ships to Paris?"
    ]
