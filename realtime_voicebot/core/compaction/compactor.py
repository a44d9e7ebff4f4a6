"""Drives one compaction at a time through its phases, without I/O or a clock.

After each ``response.done`` the core asks `Compactor.maybe_start`. When the policy says a
compaction is due, the compactor takes a snapshot (`CompactionPlan`) and goes through:

1. ``transcripts``: wait (a timer, `transcript_wait_s`) for the user transcripts the plan
   still lacks; the ones that never come are summarized as inaudible;
2. ``summarizing``: ask the shell to summarize (`Summarize`); the shell answers with
   `summary_ready`, falling back to the extractive summarizer when the primary one fails or
   times out, so a compaction never waits on the network for long. With ``in_session``
   the session writes it instead: an out-of-band response (`in_session`) whose events the
   core hands to `on_out_of_band`; when it fails, is cancelled, comes back empty or takes
   longer than ``summary_timeout_s`` (a timer), the shell's `Summarize` (extractive) writes
   it. The model hears the turns themselves, so it does not wait for their transcripts;
3. ``confirming``: send the summary item and the deletes (`Compaction`, the procedure), and
   wait (timers, `confirm_timeout_s`, with `confirm_rounds` rounds of resends) for the
   server's confirmations, which arrive as ordinary server events.

A new session abandons whatever is in flight: nothing more is sent for it, and a summary
already produced is adopted so that the re-seed carries it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import structlog

from realtime_voicebot.core.actions import (
    Action,
    Compacted,
    CompactionFailed,
    CompactionStarted,
    Send,
    StartTimer,
    Summarize,
    SummaryAsked,
    SummaryReady,
)
from realtime_voicebot.core.compaction.in_session import (
    InSessionSummary,
    SummaryLayout,
    SummaryOutcome,
    summary_request,
)
from realtime_voicebot.core.compaction.policy import CompactionPlan, CompactionPolicy
from realtime_voicebot.core.compaction.procedure import DEFAULT_MAX_RETRIES, Compaction
from realtime_voicebot.core.conversation import INAUDIBLE, Conversation, TranscriptState
from realtime_voicebot.core.out_of_band import our_request
from realtime_voicebot.summarization.base import SummaryInput
from realtime_voicebot.transport import payloads as pl
from realtime_voicebot.transport.events import (
    Dialect,
    ServerEvent,
    ServerEventType,
    response_cancel,
)

log = structlog.get_logger(component="compactor")

MAX_TOOL_TEXT = 500
"""Function calls and outputs are clipped to this many characters for the summarizer."""
REQUESTS_KEPT = 32
"""Event ids of our out-of-band requests and cancels remembered (their errors are ours)."""

_TRANSCRIPT_EVENTS = frozenset(
    {
        ServerEventType.ITEM_ADDED,
        ServerEventType.ITEM_DONE,
        ServerEventType.INPUT_TRANSCRIPT_COMPLETED,
        ServerEventType.INPUT_TRANSCRIPT_FAILED,
    }
)

Phase = Literal["idle", "transcripts", "summarizing", "confirming"]


@dataclass
class CompactionStats:
    """What the compactor did, for the session summary."""

    started: int = 0
    compactions: int = 0
    """Compactions whose summary the server holds (all deletes confirmed or given up)."""
    failures: int = 0
    abandoned: int = 0
    fallbacks: int = 0
    """Summaries written by the extractive fallback (primary failed or timed out)."""
    session_summaries: int = 0
    """Summaries the session wrote itself (``in_session``)."""
    session_summary_failures: int = 0
    """Out-of-band summaries that failed, were cancelled or rejected, or came back empty."""
    session_summary_timeouts: int = 0
    items_summarized: int = 0
    items_deleted: int = 0
    delete_retries: int = 0
    delete_failures: int = 0
    transcript_timeouts: int = 0
    last_summary_chars: int = 0


def summary_inputs(conversation: Conversation, item_ids: Sequence[str]) -> list[SummaryInput]:
    """The turns of ``item_ids`` as summarizer input; a transcript that never came is inaudible."""
    inputs: list[SummaryInput] = []
    for item_id in item_ids:
        item = conversation.items.get(item_id)
        if item is None or item.is_summary or item.discarded:
            continue
        text = item.spoken_text.strip()
        if not text and item.role == "user" and item.kind == "message":
            text = INAUDIBLE
        if item.kind != "message" and len(text) > MAX_TOOL_TEXT:
            text = text[: MAX_TOOL_TEXT - 1] + "…"
        if text:
            inputs.append(SummaryInput(item.role, text))
    return inputs


class Compactor:
    """One compaction of ``conversation`` at a time; see the module docstring."""

    def __init__(
        self,
        conversation: Conversation,
        policy: CompactionPolicy,
        *,
        dialect: Dialect = "ga",
        language: str = "auto",
        transcript_wait_s: float = 5.0,
        confirm_timeout_s: float = 10.0,
        confirm_rounds: int = 2,
        max_retries: int = DEFAULT_MAX_RETRIES,
        in_session: bool = False,
        summary_timeout_s: float = 20.0,
    ) -> None:
        self.conversation = conversation
        self.policy = policy
        self.dialect: Dialect = dialect
        self.language = language
        self.transcript_wait_s = transcript_wait_s
        self.confirm_timeout_s = confirm_timeout_s
        self.confirm_rounds = confirm_rounds
        self.max_retries = max_retries
        self.in_session = in_session
        """The session writes the summary (an out-of-band response), not the shell."""
        self.summary_timeout_s = summary_timeout_s
        self.summary_layout: SummaryLayout = "prefix"
        """How the out-of-band request lays out its prompt (see `in_session`)."""
        self.stats = CompactionStats()
        self.phase: Phase = "idle"
        self.job_id = 0
        self.plan: CompactionPlan | None = None
        self.compaction: Compaction | None = None
        """The server side of the compaction in flight, once its summary exists."""
        self._round = 0
        self._fallback = False
        self._request: InSessionSummary | None = None
        """The out-of-band summary being written now."""
        self._given_up: dict[str, None] = {}
        """Markers of requests we stopped waiting for before they started: cancel on sight."""
        self._sent: dict[str, None] = {}

    @property
    def in_flight(self) -> bool:
        return self.phase != "idle"

    def owns_request(self, event_id: str | None) -> bool:
        """Whether an ``error`` answering this client event id is the compaction's to handle."""
        if event_id is not None and event_id in self._sent:
            return True
        return self.compaction is not None and self.compaction.tracks(event_id)

    def snapshot(self) -> dict[str, Any]:
        return asdict(self.stats)

    # --- inputs --------------------------------------------------------------------------

    def maybe_start(self) -> list[Action]:
        """Start a compaction if one is due and none runs."""
        if self.in_flight:
            return []
        plan = self.policy.due(self.conversation)
        return [] if plan is None else self.start(plan)

    def start(self, plan: CompactionPlan) -> list[Action]:
        """Start a compaction of ``plan`` (e.g. a forced one from `CompactionPolicy.snapshot`)."""
        if self.in_flight:
            return []
        self.job_id += 1
        self.plan = plan
        self.stats.started += 1
        self._fallback = False
        log.info(
            "compaction_started",
            job_id=self.job_id,
            reason=plan.reason,
            window_tokens=plan.window_tokens,
            summarize=len(plan.summarize_ids),
            delete=len(plan.delete_ids),
        )
        actions: list[Action] = [CompactionStarted(self.job_id, plan.reason, len(plan.delete_ids))]
        if not self.in_session and self._missing_transcripts():
            self.phase = "transcripts"
            actions.append(StartTimer(self._timer("transcripts"), self.transcript_wait_s))
            return actions
        return actions + self._summarize()

    def on_event(self, event: ServerEvent) -> list[Action]:
        """Feed a server event (after the conversation has applied it)."""
        if self._request is not None and isinstance(event.payload, pl.ServerError):
            return self._follow(event)  # the out-of-band request may have been refused
        if self.phase == "transcripts" and event.type in _TRANSCRIPT_EVENTS:
            return [] if self._missing_transcripts() else self._summarize()
        if self.phase == "confirming" and self.compaction is not None:
            actions: list[Action] = [Send(e) for e in self.compaction.on_event(event)]
            if self.compaction.done:
                actions += self._finish()
            return actions
        return []

    def on_out_of_band(self, event: ServerEvent) -> list[Action]:
        """Feed an event of a response outside the conversation (see `core.out_of_band`):
        the session's summary, or one we stopped waiting for (cancelled when it starts)."""
        payload = event.payload
        if isinstance(payload, pl.ResponseCreated):
            marker = our_request(payload.metadata)
            if marker is not None and marker in self._given_up:
                del self._given_up[marker]
                return [self._send_tracked(response_cancel(payload.response_id))]
        if self._request is None:
            return []
        return self._follow(event)

    def summary_ready(self, job_id: int, text: str, fallback: bool = False) -> list[Action]:
        """The summary of job ``job_id`` (written by the fallback summarizer if ``fallback``)."""
        if job_id != self.job_id or self.phase != "summarizing":
            return []  # abandoned meanwhile
        self._fallback = fallback
        self.stats.fallbacks += fallback
        return [SummaryReady(job_id, len(text), fallback), *self._begin(text)]

    def timer_fired(self, key: Hashable) -> list[Action]:
        if not (isinstance(key, tuple) and key[:2] == ("compaction", self.job_id)):
            return []
        if key[2] == "transcripts" and self.phase == "transcripts":
            self.stats.transcript_timeouts += 1
            log.info("transcripts_still_pending", items=self._missing_transcripts())
            return self._summarize()
        if key[2] == "confirm" and self.phase == "confirming" and key[3] == self._round:
            return self._next_round()
        if key[2] == "summary" and self.phase == "summarizing" and self._request is not None:
            self.stats.session_summary_timeouts += 1
            log.warning("session_summary_timeout", job_id=self.job_id)
            return self._fall_back("timeout")
        return []

    def on_new_session(self) -> None:
        """A new, blank session: drop the compaction in flight; nothing more is sent for it.

        A summary already produced and sent is kept (the conversation adopts it), so the
        re-seed carries it; otherwise the re-seed holds the previous summary and the turns.
        """
        self._given_up.clear()  # their responses ended with the old session
        if not self.in_flight:
            return
        compaction = self.compaction
        self.stats.abandoned += 1
        log.info("compaction_abandoned", job_id=self.job_id, phase=self.phase)
        if compaction is not None:
            summary = compaction.summary
            if summary is not None and not compaction.summary_confirmed:
                self.conversation.adopt_summary(summary)
            compaction.abandon()
        self._reset()

    # --- phases --------------------------------------------------------------------------

    def _timer(self, *name: object) -> tuple[object, ...]:
        return ("compaction", self.job_id, *name)

    def _missing_transcripts(self) -> list[str]:
        assert self.plan is not None
        items = self.conversation.items
        return [
            item_id
            for item_id in self.plan.pending_transcripts
            if items[item_id].transcript is TranscriptState.PENDING
        ]

    def _summarize(self) -> list[Action]:
        assert self.plan is not None
        inputs = summary_inputs(self.conversation, self.plan.summarize_ids)
        previous = self.plan.previous_summary
        self.phase = "summarizing"
        if not inputs and previous:
            return self._begin(previous)
        if self.in_session:
            return self._ask_session()
        return [Summarize(self.job_id, inputs, previous, self.language)]

    def _ask_session(self) -> list[Action]:
        """Send the out-of-band summary request, with its timer."""
        assert self.plan is not None
        request = summary_request(
            self.conversation,
            self.plan,
            dialect=self.dialect,
            language=self.language,
            layout=self.summary_layout,
        )
        if request is None:
            return self._fall_back("nothing on the server")
        self._request = request
        inputs = len(summary_inputs(self.conversation, self.plan.summarize_ids))
        asked = SummaryAsked(
            self.job_id, inputs, self.plan.previous_summary is not None, self.language
        )
        return [
            asked,
            self._send_tracked(request.event),
            StartTimer(self._timer("summary"), self.summary_timeout_s),
        ]

    def _follow(self, event: ServerEvent) -> list[Action]:
        """One event of the out-of-band summary; its outcome once it has ended."""
        assert self._request is not None
        outcome = self._request.on_event(event)
        if outcome is None:
            return []
        self._request = None
        return self._session_summary(outcome)

    def _session_summary(self, outcome: SummaryOutcome) -> list[Action]:
        if outcome.status == "completed":
            self.stats.session_summaries += 1
            ready = SummaryReady(self.job_id, len(outcome.text), fallback=False)
            return [ready, *self._begin(outcome.text)]
        self.stats.session_summary_failures += 1
        log.warning("session_summary_failed", status=outcome.status, reason=outcome.reason)
        return self._fall_back(outcome.status)

    def _fall_back(self, why: str) -> list[Action]:
        """The session will not write this summary: the shell's (extractive) summarizer does.
        A request still running is cancelled (once it has started, if it has not yet)."""
        assert self.plan is not None
        dropped = self._drop_request()
        log.info("session_summary_fallback", job_id=self.job_id, why=why)
        inputs = summary_inputs(self.conversation, self.plan.summarize_ids)
        previous = self.plan.previous_summary
        summarize = Summarize(self.job_id, inputs, previous, self.language, fallback=True)
        return [*dropped, summarize]

    def _drop_request(self) -> list[Action]:
        """Stop waiting for the session's summary: cancel it by its id, or, if it has not
        started yet, as soon as it does."""
        request, self._request = self._request, None
        if request is None:
            return []
        if request.response_id is not None:
            return [self._send_tracked(response_cancel(request.response_id))]
        self._given_up[request.request_id] = None
        _forget_oldest(self._given_up)
        return []

    def _send_tracked(self, event: dict[str, Any]) -> Send:
        """A client event whose ``error`` is the compactor's to handle."""
        self._sent[event["event_id"]] = None
        _forget_oldest(self._sent)
        return Send(event)

    def _begin(self, text: str) -> list[Action]:
        assert self.plan is not None
        dropped = self._drop_request()  # the shell answered first: the session's is not needed
        self.compaction = Compaction(self.conversation, self.plan, max_retries=self.max_retries)
        events = self.compaction.begin(text, self.dialect)
        self.phase = "confirming"
        self._round = 0
        actions: list[Action] = [*dropped, *(Send(e) for e in events)]
        if self.compaction.done:
            return actions + self._finish()
        return [*actions, StartTimer(self._timer("confirm", 0), self.confirm_timeout_s)]

    def _next_round(self) -> list[Action]:
        assert self.compaction is not None
        if self._round >= self.confirm_rounds:
            self.compaction.give_up()
            return self._finish()
        self._round += 1
        actions: list[Action] = [Send(e) for e in self.compaction.resend_unconfirmed()]
        if self.compaction.done:
            return actions + self._finish()
        timer = StartTimer(self._timer("confirm", self._round), self.confirm_timeout_s)
        return [*actions, timer]

    def _finish(self) -> list[Action]:
        compaction, plan = self.compaction, self.plan
        assert compaction is not None and plan is not None
        stats = self.stats
        stats.delete_retries += compaction.delete_retries
        stats.delete_failures += len(compaction.failed_ids)
        stats.items_deleted += len(compaction.confirmed_ids)
        self.conversation.window_fresh = False
        summary = compaction.summary
        job_id, fallback = self.job_id, self._fallback
        self._reset()
        if summary is None or not compaction.summary_confirmed:
            stats.failures += 1
            return [CompactionFailed(job_id)]
        stats.compactions += 1
        stats.items_summarized += len(plan.summarize_ids)
        stats.last_summary_chars = len(summary.text)
        log.info(
            "compaction_done",
            job_id=job_id,
            summarized=len(plan.summarize_ids),
            deleted=len(compaction.confirmed_ids),
            failed=len(compaction.failed_ids),
            retries=compaction.delete_retries,
        )
        return [Compacted(job_id, len(plan.summarize_ids), len(summary.text), fallback)]

    def _reset(self) -> None:
        self.phase = "idle"
        self.plan = None
        self.compaction = None
        self._round = 0
        self._request = None


def _forget_oldest(entries: dict[str, None], keep: int = REQUESTS_KEPT) -> None:
    while len(entries) > keep:
        del entries[next(iter(entries))]
