"""CompactionRunner: background task, bounded waits, fallback, retries, reconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from realtime_voicebot.handlers.compaction import CompactionRunner
from realtime_voicebot.state.conversation import INAUDIBLE, SUMMARY_HEADER
from realtime_voicebot.state.policy import CompactionPolicy
from realtime_voicebot.summarization.base import FallbackSummarizer, SummaryInput
from realtime_voicebot.summarization.extractive import ExtractiveSummarizer
from realtime_voicebot.transport.events import ServerEvent

from .spec import validate_client
from .state_helpers import Conversation

JSON = dict[str, Any]
WAIT = 5.0


class GatedSummarizer:
    """Answers only once ``gate`` is set (a summary that takes as long as the test wants)."""

    def __init__(self, answer: str = "Gated summary.", *, fail: bool = False) -> None:
        self.gate = asyncio.Event()
        self.called = asyncio.Event()
        self.calls: list[tuple[list[SummaryInput], str | None, str]] = []
        self.answer = answer
        self.fail = fail

    async def summarize(
        self, items: Sequence[SummaryInput], previous_summary: str | None, language: str
    ) -> str:
        self.calls.append((list(items), previous_summary, language))
        self.called.set()
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("summarizer down")
        return self.answer


class LoopbackServer:
    """The far end of ``send``: confirms creates and deletes like the service would.

    Each sent event is answered in a later loop iteration (never inside ``send``), through
    the dispatcher's order: ``state.apply`` then ``runner.on_event``.
    """

    def __init__(self, conv: Conversation) -> None:
        self.conv = conv
        self.runner: CompactionRunner | None = None
        self.sent: list[JSON] = []
        self.fail_deletes: dict[str, list[str]] = {}  # item id -> error codes to answer first
        self.ignore_deletes: dict[str, int] = {}  # item id -> requests to leave unanswered
        self.auto = True
        self.changed = asyncio.Event()

    async def send(self, event: JSON) -> None:
        validate_client(event, self.conv.srv.dialect)
        self.sent.append(event)
        self.changed.set()
        if self.auto:
            asyncio.get_running_loop().call_soon(self.answer, event)

    def deliver(self, *events: ServerEvent) -> None:
        for event in events:
            self.conv.apply(event)
            assert self.runner is not None
            self.runner.on_event(event)

    def answer(self, event: JSON) -> None:
        srv = self.conv.srv
        if event["type"] == "conversation.item.create":
            item = event["item"]
            self.deliver(
                srv.item_added(
                    srv.text_item(item["id"], "system", item["content"][0]["text"]), None
                )
            )
        elif event["type"] == "conversation.item.delete":
            item_id = event["item_id"]
            if self.ignore_deletes.get(item_id, 0) > 0:
                self.ignore_deletes[item_id] -= 1
                return
            codes = self.fail_deletes.get(item_id)
            if codes:
                self.deliver(srv.error(event["event_id"], codes.pop(0)))
            elif self.conv.state.on_server(item_id):
                self.deliver(srv.item_deleted(item_id))
            else:
                self.deliver(srv.error(event["event_id"], "item_not_found"))

    def of_type(self, event_type: str) -> list[JSON]:
        return [e for e in self.sent if e["type"] == event_type]

    async def wait_sent(self, event_type: str, count: int) -> None:
        """Until ``count`` events of a type were sent (bounded)."""
        while len(self.of_type(event_type)) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), WAIT)


def make(
    summarizer: Any,
    *,
    dialect: str = "ga",
    turns: int = 3,
    **runner_args: Any,
) -> tuple[Conversation, LoopbackServer, CompactionRunner]:
    conv = Conversation(dialect)
    conv.exchange(turns, tokens=5000)
    server = LoopbackServer(conv)
    args: dict[str, Any] = {
        "dialect": dialect,
        "language": "auto",
        "transcript_wait_s": WAIT,
        "summary_timeout_s": WAIT,
        "confirm_timeout_s": WAIT,
    }
    args.update(runner_args)
    runner = CompactionRunner(
        conv.state,
        CompactionPolicy(threshold_tokens=1000, keep_items=2),
        summarizer,
        server.send,
        **args,
    )
    server.runner = runner
    return conv, server, runner


async def idle(runner: CompactionRunner) -> None:
    await asyncio.wait_for(runner.wait_idle(), WAIT)


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_runner_returns_at_once_and_the_loop_stays_responsive(dialect: str) -> None:
    summarizer = GatedSummarizer("Ada has orders 0 and 1 for Paris.")
    summaries: list[tuple[str, int]] = []
    conv, server, runner = make(
        summarizer, dialect=dialect, on_summary=lambda text, n: summaries.append((text, n))
    )
    started = time.perf_counter()
    assert runner.maybe_start()
    assert time.perf_counter() - started < 0.05
    assert not runner.maybe_start()  # one at a time
    await asyncio.wait_for(summarizer.called.wait(), WAIT)
    # While the summary is being written, the receive loop goes on: events are applied,
    # other tasks run, new turns arrive, barge-ins are answered.
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        for _ in range(20):
            ticks += 1
            await asyncio.sleep(0)

    await asyncio.wait_for(heartbeat(), WAIT)
    assert ticks == 20
    conv.exchange(1, prefix="live")
    server.deliver()  # nothing pending
    assert server.sent == []  # nothing sent before the summary exists
    summarizer.gate.set()
    await idle(runner)

    [(items, previous, language)] = summarizer.calls
    assert [(i.role, i.text) for i in items] == [
        ("user", "My order number 0 ships to Paris?"),
        ("assistant", "Order 0 ships to Paris on Monday."),
        ("user", "My order number 1 ships to Paris?"),
        ("assistant", "Order 1 ships to Paris on Monday."),
    ]
    assert previous is None and language == "auto"
    [create] = server.of_type("conversation.item.create")
    assert create["previous_item_id"] == "root"
    assert create["item"]["content"][0]["text"] == (
        f"{SUMMARY_HEADER}\nAda has orders 0 and 1 for Paris."
    )
    assert [d["item_id"] for d in server.of_type("conversation.item.delete")] == [
        "u0",
        "a0",
        "u1",
        "a1",
    ]
    state = conv.state
    assert state.order == [create["item"]["id"], "u2", "a2", "ulive0", "alive0"]
    assert state.summary == "Ada has orders 0 and 1 for Paris."
    assert not state.compaction_in_flight and not runner.in_flight
    metrics = runner.metrics
    assert (metrics.compactions, metrics.items_summarized, metrics.items_deleted) == (1, 4, 4)
    assert metrics.fallbacks == 0 and metrics.last_duration_s is not None
    assert summaries == [("Ada has orders 0 and 1 for Paris.", 4)]
    # The window is stale until the next response measures it: not due again.
    assert not runner.maybe_start()


async def test_failing_summarizer_falls_back_to_extractive() -> None:
    summarizer = GatedSummarizer(fail=True)
    summarizer.gate.set()
    conv, _server, runner = make(summarizer)
    assert runner.maybe_start()
    await idle(runner)
    assert runner.metrics.fallbacks == 1 and runner.metrics.compactions == 1
    assert conv.state.summary is not None
    assert "User: My order number 0 ships to Paris?" in conv.state.summary
    assert conv.state.items["u0"].summarized


async def test_fallbacks_inside_a_fallback_summarizer_are_counted() -> None:
    failing = GatedSummarizer(fail=True)
    failing.gate.set()
    conv, _server, runner = make(FallbackSummarizer(failing, ExtractiveSummarizer()))
    assert runner.maybe_start()
    await idle(runner)
    assert runner.metrics.fallbacks == 1 and runner.metrics.compactions == 1
    assert conv.state.summary is not None and "Paris" in conv.state.summary


async def test_slow_summarizer_times_out_and_falls_back() -> None:
    summarizer = GatedSummarizer()  # never released
    conv, _server, runner = make(summarizer, summary_timeout_s=0.05)
    assert runner.maybe_start()
    await idle(runner)
    assert runner.metrics.fallbacks == 1 and runner.metrics.compactions == 1
    assert conv.state.summary is not None and "Paris" in conv.state.summary


async def test_waits_for_a_pending_transcript() -> None:
    summarizer = GatedSummarizer()
    summarizer.gate.set()
    conv = Conversation("ga")
    conv.user_turn("u0", None)  # transcript pending
    conv.assistant_turn("r0", "a0", "Answer zero.")
    conv.exchange(1, tokens=5000, prefix="x")
    server = LoopbackServer(conv)
    runner = CompactionRunner(
        conv.state,
        CompactionPolicy(threshold_tokens=1000, keep_items=2),
        summarizer,
        server.send,
        transcript_wait_s=WAIT,
    )
    server.runner = runner
    assert runner.maybe_start()
    for _ in range(5):
        await asyncio.sleep(0)
    assert summarizer.calls == []  # still waiting for the words
    server.deliver(conv.srv.transcript_completed("u0", "My locker code is 4521."))
    await idle(runner)
    [(items, _, _)] = summarizer.calls
    assert items[0] == SummaryInput("user", "My locker code is 4521.")


async def test_a_transcript_that_never_comes_is_summarized_as_inaudible() -> None:
    summarizer = GatedSummarizer()
    summarizer.gate.set()
    conv = Conversation("beta")
    conv.user_turn("u0", None)
    conv.assistant_turn("r0", "a0", "Answer zero.")
    conv.exchange(1, tokens=5000, prefix="x")
    server = LoopbackServer(conv)
    runner = CompactionRunner(
        conv.state,
        CompactionPolicy(threshold_tokens=1000, keep_items=2),
        summarizer,
        server.send,
        dialect="beta",
        transcript_wait_s=0.02,
    )
    server.runner = runner
    assert runner.maybe_start()
    await idle(runner)
    [(items, _, _)] = summarizer.calls
    assert items[0] == SummaryInput("user", INAUDIBLE)
    assert runner.metrics.transcript_timeouts == 1


async def test_failed_delete_is_retried_and_item_not_found_counts_as_gone() -> None:
    summarizer = GatedSummarizer()
    conv, server, runner = make(summarizer)
    server.fail_deletes = {"a0": ["server_error"], "u0": ["item_not_found"]}
    assert runner.maybe_start()
    await asyncio.wait_for(summarizer.called.wait(), WAIT)
    server.deliver(conv.srv.item_deleted("u1"))  # e.g. deleted by a barge-in meanwhile
    summarizer.gate.set()
    await idle(runner)
    deletes = [d["item_id"] for d in server.of_type("conversation.item.delete")]
    assert deletes == ["u0", "a0", "a1", "a0"]  # u1 was already gone; a0 retried once
    assert runner.metrics.delete_retries == 1 and runner.metrics.delete_failures == 0
    assert runner.metrics.compactions == 1
    assert conv.state.order[1:] == ["u2", "a2"]
    assert conv.state.items["u1"].summarized


async def test_unanswered_deletes_are_resent_after_the_bounded_wait() -> None:
    summarizer = GatedSummarizer()
    summarizer.gate.set()
    conv, server, runner = make(summarizer, confirm_timeout_s=0.02)
    server.ignore_deletes = {"u1": 1}
    assert runner.maybe_start()
    await idle(runner)
    deletes = [d["item_id"] for d in server.of_type("conversation.item.delete")]
    assert deletes == ["u0", "a0", "u1", "a1", "u1"]
    assert runner.metrics.compactions == 1 and runner.metrics.delete_retries == 1
    assert "u1" not in conv.state.order


async def test_a_delete_that_keeps_failing_leaves_the_item_in_the_mirror() -> None:
    summarizer = GatedSummarizer()
    summarizer.gate.set()
    conv, server, runner = make(summarizer, max_retries=1)
    server.fail_deletes = {"a1": ["server_error", "server_error"]}
    assert runner.maybe_start()
    await idle(runner)
    assert runner.metrics.delete_failures == 1
    assert conv.state.order[1:] == ["a1", "u2", "a2"]
    assert conv.state.items["a1"].summarized


async def test_reconnect_while_summarizing_reseeds_from_the_previous_state() -> None:
    summarizer = GatedSummarizer("Too late.")
    conv, server, runner = make(summarizer)
    assert runner.maybe_start()
    await asyncio.wait_for(summarizer.called.wait(), WAIT)
    conv.state.reset_for_new_session()
    runner.on_new_session()
    [seed] = conv.state.seed_events("ga")
    assert not runner.in_flight and not conv.state.compaction_in_flight
    assert runner.metrics.abandoned == 1
    text = seed["item"]["content"][0]["text"]
    for n in range(3):
        assert f"User: My order number {n} ships to Paris?" in text
    summarizer.gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert server.sent == []  # the old compaction sends nothing, ever
    assert conv.state.summary is None
    # The new session goes on and compacts later, with the carried turns included.
    server.deliver(
        conv.srv.item_added(conv.srv.text_item(seed["item"]["id"], "system", "seed"), None)
    )
    conv.last_id = seed["item"]["id"]
    conv.exchange(3, tokens=5000, prefix="n")
    fresh = GatedSummarizer("All facts.")
    fresh.gate.set()
    runner.summarizer = fresh
    assert runner.maybe_start()
    await idle(runner)
    [(items, _, _)] = fresh.calls
    assert len(items) == 6 + 4  # the carried turns, then the new session's snapshot
    assert conv.state.carried_ids == []
    assert conv.state.order == [
        server.of_type("conversation.item.create")[0]["item"]["id"],
        "un2",
        "an2",
    ]


@pytest.mark.parametrize("runner_first", [True, False])
async def test_reconnect_after_the_summary_was_sent_keeps_it(runner_first: bool) -> None:
    summarizer = GatedSummarizer("Orders 0 and 1 go to Paris.")
    summarizer.gate.set()
    conv, server, runner = make(summarizer)
    server.auto = False  # the connection died: nothing comes back
    assert runner.maybe_start()
    await server.wait_sent("conversation.item.delete", 4)
    if runner_first:
        runner.on_new_session()
        conv.state.reset_for_new_session()
    else:
        conv.state.reset_for_new_session()
        runner.on_new_session()
    [seed] = conv.state.seed_events("ga")
    text = seed["item"]["content"][0]["text"]
    assert text.startswith(f"{SUMMARY_HEADER}\nOrders 0 and 1 go to Paris.")
    assert "number 0" not in text and "number 1" not in text  # summarized: not duplicated
    assert "User: My order number 2 ships to Paris?" in text  # the tail: not lost
    assert conv.state.summary == "Orders 0 and 1 go to Paris."
    await asyncio.sleep(0)
    assert not runner.in_flight


async def test_empty_summary_falls_back() -> None:
    summarizer = GatedSummarizer("   ")
    summarizer.gate.set()
    conv, _server, runner = make(summarizer)
    assert runner.maybe_start()
    await idle(runner)
    assert runner.metrics.fallbacks == 1
    assert conv.state.summary and "Paris" in conv.state.summary


async def test_aclose_cancels_the_task() -> None:
    summarizer = GatedSummarizer()
    conv, _server, runner = make(summarizer)
    assert runner.maybe_start()
    await asyncio.wait_for(summarizer.called.wait(), WAIT)
    await asyncio.wait_for(runner.aclose(), WAIT)
    assert not runner.in_flight and not conv.state.compaction_in_flight


async def test_an_abandoned_task_never_clobbers_the_next_compaction() -> None:
    old = GatedSummarizer("Old.")
    conv, server, runner = make(old)
    assert runner.maybe_start()
    await asyncio.wait_for(old.called.wait(), WAIT)
    conv.state.reset_for_new_session()
    runner.on_new_session()
    # Without yielding: the new session fills up and compacts before the old task unwinds.
    conv.last_id = None
    conv.exchange(3, tokens=5000, prefix="n")
    new = GatedSummarizer("New.")
    runner.summarizer = new
    assert runner.maybe_start()
    await asyncio.wait_for(new.called.wait(), WAIT)  # the old task has unwound meanwhile
    assert runner.in_flight and conv.state.compaction_in_flight
    assert not runner.maybe_start()
    new.gate.set()
    await idle(runner)
    assert conv.state.summary == "New." and runner.metrics.compactions == 1
    assert [e["item_id"] for e in server.of_type("conversation.item.delete")][-4:] == [
        "un0",
        "an0",
        "un1",
        "an1",
    ]
