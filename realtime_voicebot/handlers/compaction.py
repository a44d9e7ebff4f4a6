"""Runs compactions in the background, never in the receive loop.

Wiring: after ``state.apply(event)``, the dispatcher calls ``runner.on_event(event)`` for
every event, and ``runner.maybe_start()`` after each ``response.done``. When the policy says
a compaction is due, one task waits (bounded) for the pending transcripts, summarizes
(bounded; on failure or timeout the extractive summarizer answers), sends the summary item
and the deletes, and waits (bounded, with resends) for the confirmations the dispatcher
feeds it. On a reconnect, ``runner.on_new_session()`` drops the work in flight and returns
the re-seed events of the new session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from realtime_voicebot.state.compaction import DEFAULT_MAX_RETRIES, Compaction
from realtime_voicebot.state.conversation import INAUDIBLE, ConversationState
from realtime_voicebot.state.policy import CompactionPlan, CompactionPolicy
from realtime_voicebot.summarization.base import Summarizer, SummarizerError, SummaryInput
from realtime_voicebot.summarization.extractive import ExtractiveSummarizer
from realtime_voicebot.transport.events import JSON, Dialect, ServerEvent, ServerEventType

log = structlog.get_logger(component="compaction")

Send = Callable[[JSON], Awaitable[None]]
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]]

MAX_TOOL_TEXT = 500
"""Function calls and outputs are clipped to this many characters for the summarizer."""

_WAKE_ON = frozenset(
    {
        ServerEventType.ITEM_ADDED,
        ServerEventType.ITEM_DONE,
        ServerEventType.ITEM_DELETED,
        ServerEventType.ERROR,
        ServerEventType.INPUT_TRANSCRIPT_COMPLETED,
        ServerEventType.INPUT_TRANSCRIPT_FAILED,
    }
)


@dataclass
class CompactionMetrics:
    """What the runner did, for the live console and the session summary."""

    started: int = 0
    compactions: int = 0
    """Compactions whose summary the server holds (all deletes confirmed or given up)."""
    failures: int = 0
    abandoned: int = 0
    fallbacks: int = 0
    """Summaries written by the extractive fallback (primary failed or timed out)."""
    items_summarized: int = 0
    items_deleted: int = 0
    delete_retries: int = 0
    delete_failures: int = 0
    transcript_timeouts: int = 0
    last_duration_s: float | None = None
    last_summary_chars: int = 0


def summary_inputs(state: ConversationState, item_ids: Sequence[str]) -> list[SummaryInput]:
    """The turns of ``item_ids`` as summarizer input; a transcript that never came is inaudible."""
    inputs: list[SummaryInput] = []
    for item_id in item_ids:
        item = state.items.get(item_id)
        if item is None or item.is_summary:
            continue
        text = item.spoken_text.strip()
        if not text and item.role == "user" and item.kind == "message":
            text = INAUDIBLE
        if item.kind != "message" and len(text) > MAX_TOOL_TEXT:
            text = text[: MAX_TOOL_TEXT - 1] + "…"
        if text:
            inputs.append(SummaryInput(item.role, text))
    return inputs


class CompactionRunner:
    """Drives compactions of ``state`` as background tasks, one at a time.

    ``send`` puts a client event on the wire. ``spawn`` starts the task (defaults to the
    running loop's ``create_task``; pass ``BackgroundTasks.spawn`` to have it tracked).
    ``on_summary(text, items_summarized)`` is called for each summary the server confirmed.
    """

    def __init__(
        self,
        state: ConversationState,
        policy: CompactionPolicy,
        summarizer: Summarizer,
        send: Send,
        *,
        dialect: Dialect = "ga",
        language: str = "auto",
        transcript_wait_s: float = 5.0,
        summary_timeout_s: float = 20.0,
        confirm_timeout_s: float = 10.0,
        confirm_rounds: int = 2,
        max_retries: int = DEFAULT_MAX_RETRIES,
        fallback: Summarizer | None = None,
        on_summary: Callable[[str, int], None] | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        self.state = state
        self.policy = policy
        self.summarizer = summarizer
        self.fallback: Summarizer = fallback or ExtractiveSummarizer()
        self.send = send
        self.dialect: Dialect = dialect
        self.language = language
        self.transcript_wait_s = transcript_wait_s
        self.summary_timeout_s = summary_timeout_s
        self.confirm_timeout_s = confirm_timeout_s
        self.confirm_rounds = confirm_rounds
        self.max_retries = max_retries
        self.on_summary = on_summary
        self.metrics = CompactionMetrics()
        self._spawn = spawn
        self._task: asyncio.Task[Any] | None = None
        self._compaction: Compaction | None = None
        self._generation = 0
        self._wakeup = asyncio.Event()
        self._outbox: list[JSON] = []

    @property
    def in_flight(self) -> bool:
        return self._task is not None

    @property
    def compaction(self) -> Compaction | None:
        """The server side of the compaction in flight, once it has begun."""
        return self._compaction

    def maybe_start(self) -> bool:
        """Start a compaction task if one is due and none runs. Returns at once."""
        if self._task is not None or self.state.compaction_in_flight:
            return False
        plan = self.policy.due(self.state)
        return plan is not None and self.start(plan)

    def start(self, plan: CompactionPlan) -> bool:
        """Start a compaction of ``plan`` (e.g. a forced one from `CompactionPolicy.snapshot`)."""
        if self._task is not None or self.state.compaction_in_flight:
            return False
        self.state.compaction_in_flight = True
        self._generation += 1
        self.metrics.started += 1
        log.info(
            "compaction_started",
            reason=plan.reason,
            window_tokens=plan.window_tokens,
            summarize=len(plan.summarize_ids),
            delete=len(plan.delete_ids),
        )
        coro = self._run(plan, self._generation)
        if self._spawn is not None:
            self._task = self._spawn(coro)
        else:
            self._task = asyncio.get_running_loop().create_task(coro, name="compaction")
        return True

    def on_event(self, event: ServerEvent) -> None:
        """Feed a server event (after ``state.apply``); never blocks."""
        if self._compaction is not None:
            self._outbox.extend(self._compaction.on_event(event))
        if event.type in _WAKE_ON:
            self._wakeup.set()

    def owns_request(self, event_id: object) -> bool:
        """Whether an ``error`` answering this client event id is the compaction's to handle."""
        return self._compaction is not None and self._compaction.tracks(event_id)

    def on_new_session(self) -> None:
        """A new, blank session: drop the compaction in flight; nothing more is sent for it.

        A summary already produced and sent is kept (the state adopts it), so the re-seed
        carries it; otherwise the re-seed holds the previous summary and the turns. Call it
        with ``state.reset_for_new_session()`` (in either order), then send
        ``state.seed_events(dialect)``.
        """
        task, compaction = self._task, self._compaction
        self._generation += 1
        self._task = None
        self._compaction = None
        self._outbox.clear()
        self.state.compaction_in_flight = False
        if task is not None:
            task.cancel()
            self.metrics.abandoned += 1
            log.info("compaction_abandoned", begun=compaction is not None)
        if compaction is not None:
            summary = compaction.summary
            if summary is not None and not compaction.summary_confirmed:
                self.state.adopt_summary(summary)
            compaction.abandon()

    async def wait_idle(self) -> None:
        """Until no compaction runs (for shutdown and tests)."""
        while self._task is not None:
            await asyncio.wait({self._task})

    async def aclose(self) -> None:
        task, self._task = self._task, None
        self._generation += 1
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.state.compaction_in_flight = False

    # --- the task ------------------------------------------------------------------------

    async def _run(self, plan: CompactionPlan, generation: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self._wait_for_transcripts(plan)
            text = await self._summarize(plan)
            compaction = Compaction(self.state, plan, max_retries=self.max_retries)
            events = compaction.begin(text, self.dialect)
            self._compaction = compaction
            for event in events:
                await self.send(event)
            await self._await_confirmations(compaction)
            self._account(compaction, plan, loop.time() - started)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.metrics.failures += 1
            log.exception("compaction_failed")
        finally:
            if generation == self._generation:
                self._task = None
                self._compaction = None
                self._outbox.clear()
                self.state.compaction_in_flight = False

    async def _wait(self, deadline: float) -> bool:
        """Wait for the next relevant event or the deadline; False once past the deadline."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), remaining)
        except TimeoutError:
            return False
        return True

    async def _wait_for_transcripts(self, plan: CompactionPlan) -> None:
        deadline = asyncio.get_running_loop().time() + self.transcript_wait_s
        while True:
            pending = [
                item_id
                for item_id in plan.pending_transcripts
                if self.state.items[item_id].transcript_pending
            ]
            if not pending:
                return
            if not await self._wait(deadline):
                self.metrics.transcript_timeouts += 1
                log.info("transcripts_still_pending", items=pending)
                return

    async def _summarize(self, plan: CompactionPlan) -> str:
        inputs = summary_inputs(self.state, plan.summarize_ids)
        previous = plan.previous_summary
        if not inputs and previous:
            return previous
        inner_fallbacks = getattr(self.summarizer, "fallbacks", 0)
        try:
            text = await asyncio.wait_for(
                self.summarizer.summarize(inputs, previous, self.language),
                self.summary_timeout_s,
            )
            if not text.strip():
                raise SummarizerError("empty summary")
            # A FallbackSummarizer may have fallen back inside: count it too.
            self.metrics.fallbacks += max(
                0, getattr(self.summarizer, "fallbacks", 0) - inner_fallbacks
            )
            return text
        except Exception as exc:
            self.metrics.fallbacks += 1
            log.warning("summary_fallback", error=repr(exc))
            return await self.fallback.summarize(inputs, previous, self.language)

    async def _flush_outbox(self) -> None:
        while self._outbox:
            await self.send(self._outbox.pop(0))

    async def _await_confirmations(self, compaction: Compaction) -> None:
        loop = asyncio.get_running_loop()
        for round_ in range(self.confirm_rounds + 1):
            if round_:
                self._outbox.extend(compaction.resend_unconfirmed())
            deadline = loop.time() + self.confirm_timeout_s
            while True:
                await self._flush_outbox()
                if compaction.done or not await self._wait(deadline):
                    break
            if compaction.done:
                return
        compaction.give_up()

    def _account(self, compaction: Compaction, plan: CompactionPlan, duration: float) -> None:
        metrics = self.metrics
        metrics.delete_retries += compaction.delete_retries
        metrics.delete_failures += len(compaction.failed_ids)
        metrics.items_deleted += len(compaction.confirmed_ids)
        metrics.last_duration_s = duration
        self.state.window_fresh = False
        summary = compaction.summary
        if summary is None or not compaction.summary_confirmed:
            metrics.failures += 1
            return
        metrics.compactions += 1
        metrics.items_summarized += len(plan.summarize_ids)
        metrics.last_summary_chars = len(summary.text)
        log.info(
            "compaction_done",
            duration_s=round(duration, 3),
            summarized=len(plan.summarize_ids),
            deleted=len(compaction.confirmed_ids),
            failed=len(compaction.failed_ids),
            retries=compaction.delete_retries,
        )
        if self.on_summary is not None:
            try:
                self.on_summary(summary.text, len(plan.summarize_ids))
            except Exception:
                log.exception("on_summary_failed")
