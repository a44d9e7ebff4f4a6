"""The session writes the summary itself: an out-of-band response over the items to compact.

`summary_request` builds the ``response.create`` (``conversation: "none"``, text output, no
tool calls, ``metadata`` marking it as ours); `InSessionSummary` follows that one request
through the events the compactor hands it (the events of out-of-band responses, see
`core.out_of_band`, and the ``error`` answering the request) and says how it ended. The
compactor turns a summary into the usual confirmed insert-and-delete, and anything else
(failed, cancelled, incomplete, empty, rejected, or too slow) into the extractive fallback.

What the response reads (``input``) is laid out for the prompt cache. ``prefix`` (the
default): the session's own instructions (none of its own), references to exactly the items
the compaction deletes, in the server's order (the previous summary at the root first), then
one system message asking for the summary. That prompt starts like the conversation's latest
one, which the service has just cached, so the summary reads the conversation's tokens at
the cached price, audio included. ``instructions``: the summary request as the response's
instructions; cleaner, but the prompt shares no prefix with the conversation's and every
token is billed in full. `bench/two_hour.py` measures both.

Turns the server no longer holds (carried over from an earlier session, or a summary it
never took) go in as one quoted record after the summary items, as the seed does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from realtime_voicebot.core.compaction.policy import CompactionPlan
from realtime_voicebot.core.conversation import Conversation, new_item_id
from realtime_voicebot.core.out_of_band import OUR_REQUEST_KEY, our_request, response_id_of
from realtime_voicebot.core.recap import ROLE_LABELS, recap_text
from realtime_voicebot.summarization.prompts import in_session_instructions
from realtime_voicebot.transport import payloads as pl
from realtime_voicebot.transport.events import (
    JSON,
    Dialect,
    ServerEvent,
    ServerEventType,
    item_reference,
    message_item,
    out_of_band_response_create,
)

SummaryLayout = Literal["prefix", "instructions"]
SUMMARY_PURPOSE = "summary"
MAX_OUTPUT_TOKENS = 1024
"""A guard, not a target: the request asks for about 250 words (some 350 tokens). A summary
cut at this limit ends ``incomplete`` and the fallback writes it instead."""
MAX_SUMMARY_CHARS = 32_000
"""Text collected from one response at most (a runaway answer is cut, then refused)."""

Outcome = Literal["completed", "failed", "cancelled", "incomplete", "empty", "rejected"]


@dataclass(frozen=True, slots=True)
class SummaryOutcome:
    """How the session's summary ended: ``completed`` with its text, or why not."""

    status: Outcome
    text: str = ""
    reason: str = ""


def summary_request(
    conversation: Conversation,
    plan: CompactionPlan,
    *,
    dialect: Dialect,
    language: str,
    layout: SummaryLayout = "prefix",
) -> InSessionSummary | None:
    """The out-of-band request summarizing ``plan``; None when the server holds none of it
    and nothing else is left to summarize."""
    items = conversation.items
    held = [i for i in plan.delete_ids if conversation.on_server(i)]
    summaries = [i for i in held if items[i].is_summary]
    turns = [i for i in held if not items[i].is_summary]
    carried = [
        line
        for item_id in plan.summarize_ids
        if not conversation.on_server(item_id)
        and (line := _record_line(conversation, item_id)) is not None
    ]
    previous = plan.previous_summary if not summaries else None
    entries: list[JSON] = [item_reference(i) for i in summaries]
    if previous or carried:
        recap = recap_text(previous, carried)
        entries.append(message_item("system", recap, dialect))
    if not turns and not entries:
        return None
    entries += [item_reference(i) for i in turns]
    instructions = in_session_instructions(language)
    request_id = new_item_id("summary")
    metadata = {"purpose": SUMMARY_PURPOSE, OUR_REQUEST_KEY: request_id}
    if layout == "prefix":
        entries.append(message_item("system", instructions, dialect))
        event = out_of_band_response_create(
            dialect,
            instructions=None,
            metadata=metadata,
            input_items=entries,
            max_output_tokens=MAX_OUTPUT_TOKENS,
            tool_choice="none",
        )
    else:
        event = out_of_band_response_create(
            dialect,
            instructions=instructions,
            metadata=metadata,
            input_items=entries,
            max_output_tokens=MAX_OUTPUT_TOKENS,
            tool_choice="none",
        )
    return InSessionSummary(event, request_id)


def _record_line(conversation: Conversation, item_id: str) -> str | None:
    """One line of a turn the server does not hold, as the seed writes it."""
    item = conversation.items.get(item_id)
    if item is None or item.kind != "message" or item.is_summary:
        return None
    words = " ".join(item.spoken_text.split())
    return f"{ROLE_LABELS.get(item.role, item.role)}: {words}" if words else None


@dataclass
class InSessionSummary:
    """One out-of-band summary request, from sending it to its ``response.done``."""

    event: JSON
    """The ``response.create`` to send."""
    request_id: str
    """Our marker in the request's ``metadata`` (echoed by ``response.created``/``.done``)."""
    response_id: str | None = None
    chunks: list[str] = field(default_factory=list)
    chars: int = 0
    overflow: bool = False
    """Deltas beyond `MAX_SUMMARY_CHARS` arrived (and were dropped)."""
    final_text: str | None = None

    @property
    def event_id(self) -> str:
        return str(self.event["event_id"])

    def on_event(self, event: ServerEvent) -> SummaryOutcome | None:
        """Follow one event; the outcome once the request has ended (else None)."""
        payload = event.payload
        if isinstance(payload, pl.ServerError):
            if payload.event_id == self.event_id and self.response_id is None:
                return SummaryOutcome("rejected", reason=payload.label)
            return None
        if isinstance(payload, pl.ResponseCreated):
            if our_request(payload.metadata) == self.request_id:
                self.response_id = payload.response_id
            return None
        if isinstance(payload, pl.ResponseDone):
            if self._is_ours(payload.response_id, payload.metadata):
                return self._outcome(payload)
            return None
        if not self._is_ours(response_id_of(payload), {}):
            return None
        if isinstance(payload, pl.Delta) and event.type is ServerEventType.TEXT_DELTA:
            if self.chars + len(payload.delta) <= MAX_SUMMARY_CHARS:
                self.chunks.append(payload.delta)
                self.chars += len(payload.delta)
            else:
                self.overflow = True
        elif isinstance(payload, pl.Done) and event.type is ServerEventType.TEXT_DONE:
            self.final_text = payload.text
        return None

    def _is_ours(self, response_id: str | None, metadata: dict[str, str]) -> bool:
        if our_request(metadata) == self.request_id:
            return True
        return response_id is not None and response_id == self.response_id

    def _outcome(self, done: pl.ResponseDone) -> SummaryOutcome:
        if done.status == "cancelled":
            return SummaryOutcome("cancelled", reason=done.status)
        if done.status == "incomplete":
            return SummaryOutcome("incomplete", reason=done.status)
        if done.status != "completed":
            return SummaryOutcome("failed", reason=done.status)
        if self.final_text is not None:
            text = self.final_text
        elif self.overflow:
            return SummaryOutcome("failed", reason="too long")
        else:
            text = "".join(self.chunks)
        if not text.strip():
            text = " ".join(o.text for o in done.output if o.type == "message" and o.text)
        if len(text) > MAX_SUMMARY_CHARS:
            return SummaryOutcome("failed", reason="too long")
        text = text.strip()
        if not text:
            return SummaryOutcome("empty", reason="no text")
        return SummaryOutcome("completed", text)
