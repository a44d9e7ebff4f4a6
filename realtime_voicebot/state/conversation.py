"""The conversation, mirrored from server events, and everything ever said in it.

`ConversationState` is a plain object without I/O. `apply(event)` updates it from one
`ServerEvent` and returns the client events to send (usually none). It keeps two views:

* the **mirror**: the items the server holds now, in the server's order;
* the **history**: every item ever seen and every summary, never shrunk. The server forgets
  (compaction deletes items, a new session starts blank); we do not.

It also tracks responses (the active one, the cancelled ones whose late deltas must not be
played), the token window and usage totals, the barge-in decision (`interrupt`), the re-seed
of a new session (`seed_events`), and the transcript records of finished turns.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from realtime_voicebot.transport.events import (
    JSON,
    PCM_BYTES_PER_MS,
    Dialect,
    ServerEvent,
    ServerEventType,
    has_audio,
    item_delete,
    item_text,
    item_truncate,
    message_create,
    response_create,
)

log = structlog.get_logger(component="conversation")

INAUDIBLE = "[inaudible]"
"""The text of a user turn whose transcript failed or never came."""

SUMMARY_HEADER = "Summary of the conversation so far:"
RECENT_HEADER = "Recent turns:"
SEED_MAX_CHARS = 16_000

ROLE_LABELS = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}
DONE_STATUSES = frozenset({"completed", "incomplete"})

_S = ServerEventType


def new_item_id(prefix: str) -> str:
    """A client-assigned item id, ``<prefix>_<16 hex>`` (the API takes at most 32 chars)."""
    return f"{prefix}_{os.urandom(8).hex()}"


def utc_timestamp(seconds: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def b64_decoded_size(data: str) -> int:
    """Bytes a base64 string decodes to, without decoding it."""
    length = len(data)
    padding = 2 if data.endswith("==") else 1 if data.endswith("=") else 0
    return max(0, length * 3 // 4 - padding)


def cut_words(text: str, fraction: float) -> str:
    """The first ``fraction`` of the words of ``text`` (whole words, rounded down)."""
    words = text.split()
    if fraction >= 1.0:
        return " ".join(words)
    return " ".join(words[: max(0, math.floor(len(words) * fraction))])


@dataclass(slots=True)
class Item:
    """One conversation item as we know it (whether or not the server still holds it).

    ``role`` is ``user``, ``assistant`` or ``system`` for messages; a function call is the
    assistant's, a function call output is ``tool``'s. ``text`` is the transcript or text;
    ``heard_text`` what the user actually heard of a truncated assistant item.
    """

    id: str
    role: str = "user"
    kind: str = "message"
    text: str = ""
    status: str | None = None
    seq: int = 0
    created_at: float = field(default_factory=time.time)
    response_id: str | None = None
    audio_ms: float = 0.0
    audio_complete: bool = False
    truncated: bool = False
    truncated_at_ms: int | None = None
    heard_text: str | None = None
    transcript_pending: bool = False
    transcription_failed: bool = False
    on_server: bool = False
    deleted: bool = False
    summarized: bool = False
    is_summary: bool = False
    restored: bool = False
    name: str | None = None
    call_id: str | None = None
    recorded: bool = False
    """Written to the transcript (or restored from one): never recorded again."""

    @property
    def done(self) -> bool:
        """Finished on the server (not being generated any more)."""
        return self.status != "in_progress"

    @property
    def spoken_text(self) -> str:
        """What the conversation holds of this item: heard text when truncated."""
        if self.truncated:
            return self.heard_text or ""
        if self.transcription_failed and not self.text:
            return INAUDIBLE
        return self.text


@dataclass
class Summary:
    """A summary: its text, the items it covers, and the server item holding it."""

    text: str
    summarized_ids: tuple[str, ...]
    item_id: str | None = None
    replaced_item_ids: tuple[str, ...] = ()
    created_at: float = field(default_factory=time.time)
    confirmed: bool = False


@dataclass
class Usage:
    """Token totals over all responses, for cost accounting (missing fields count as 0)."""

    responses: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_cached_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0

    def add(self, usage: JSON) -> None:
        """Add one ``response.usage`` object."""
        inputs = _dict(usage.get("input_token_details"))
        outputs = _dict(usage.get("output_token_details"))
        self.responses += 1
        self.input_tokens += _int(usage.get("input_tokens"))
        self.output_tokens += _int(usage.get("output_tokens"))
        self.total_tokens += _int(usage.get("total_tokens"))
        self.input_text_tokens += _int(inputs.get("text_tokens"))
        self.input_audio_tokens += _int(inputs.get("audio_tokens"))
        self.input_cached_tokens += _int(inputs.get("cached_tokens"))
        self.output_text_tokens += _int(outputs.get("text_tokens"))
        self.output_audio_tokens += _int(outputs.get("audio_tokens"))


def _int(value: Any) -> int:
    """A count from the wire: a non-negative int, else 0 (counts are never negative)."""
    return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


@dataclass
class TypedTurn:
    """A typed user line the server has not answered yet (kept across sessions).

    ``sent_in`` is the session it was last sent to, ``confirmed`` whether that session
    holds its item, ``response_id`` the response answering it there.
    """

    item_id: str
    sent_in: int | None = None
    confirmed: bool = False
    response_id: str | None = None


RecordSink = Callable[[JSON], None]

RESPONSES_KEPT = 256
"""Responses whose status (and cancellation) is remembered; an hour-long conversation has a
few hundred, so memory stays flat however long it runs."""


def _forget_oldest(entries: dict[str, Any], keep: int) -> None:
    """Trim an insertion-ordered dict to its newest `keep` entries."""
    while len(entries) > keep:
        del entries[next(iter(entries))]


class RoleText(Protocol):
    """Anything with a role and a text, such as a turn read back from a transcript."""

    @property
    def role(self) -> str: ...

    @property
    def text(self) -> str: ...


class ConversationState:
    """Mirror of the server's conversation, local history, responses, usage, barge-in.

    ``interrupt_response`` is the session's VAD setting: when on, the server cancels the
    active response itself at ``speech_started``, so its late deltas are dropped. Transcript
    records go to ``on_record`` when given, else they wait for `drain_completed_records`.
    """

    def __init__(
        self, *, interrupt_response: bool = True, on_record: RecordSink | None = None
    ) -> None:
        self.interrupt_response = interrupt_response
        self.on_record = on_record
        self.items: dict[str, Item] = {}
        """Local history: every item ever seen, in first-seen order. Never shrunk."""
        self.summaries: list[Summary] = []
        """Every summary adopted, oldest first."""
        self.summary: str | None = None
        """The latest summary's text (covers everything summarized so far)."""
        self.summary_item_id: str | None = None
        """The server item holding the latest summary (or the re-seed), when it holds one."""
        self.usage = Usage()
        self.window_tokens = 0
        """Tokens the model holds: the latest response's input plus its output."""
        self.window_fresh = False
        """False until a response.done has measured the window since the last compaction."""
        self.active_response_id: str | None = None
        self.responses: dict[str, str] = {}
        """Status of the latest `RESPONSES_KEPT` responses by id (older ones are forgotten)."""
        self.streaming_item_id: str | None = None
        self.compaction_in_flight = False
        self.user_turns_since_compaction = 0
        self.sessions = 1
        self._order: list[str] = []
        self._seq = 0
        self._cancelled: dict[str, None] = {}  # an ordered set, bounded like `responses`
        self._carried: list[str] = []
        self._pending_summaries: dict[str, Summary] = {}
        self._pending_seeds: set[str] = set()
        self._typed: dict[str, TypedTurn] = {}
        self._speech_start_ms: dict[str, int] = {}
        self._speech_ms: dict[str, float] = {}
        self._unsettled: list[str] = []
        self._records: list[JSON] = []
        self._handlers: dict[ServerEventType, Callable[[ServerEvent], list[JSON]]] = {
            _S.ITEM_ADDED: self._on_item_added,
            _S.ITEM_DONE: self._on_item_done,
            _S.OUTPUT_ITEM_ADDED: self._on_output_item_added,
            _S.OUTPUT_ITEM_DONE: self._on_item_done,
            _S.ITEM_DELETED: self._on_item_deleted,
            _S.ITEM_TRUNCATED: self._on_item_truncated,
            _S.INPUT_TRANSCRIPT_DELTA: self._on_input_transcript_delta,
            _S.INPUT_TRANSCRIPT_COMPLETED: self._on_input_transcript_completed,
            _S.INPUT_TRANSCRIPT_FAILED: self._on_input_transcript_failed,
            _S.SPEECH_STARTED: self._on_speech_started,
            _S.SPEECH_STOPPED: self._on_speech_stopped,
            _S.RESPONSE_CREATED: self._on_response_created,
            _S.RESPONSE_DONE: self._on_response_done,
            _S.AUDIO_DELTA: self._on_audio_delta,
            _S.AUDIO_DONE: self._on_audio_done,
            _S.AUDIO_TRANSCRIPT_DELTA: self._on_output_text_delta,
            _S.TEXT_DELTA: self._on_output_text_delta,
            _S.AUDIO_TRANSCRIPT_DONE: self._on_output_text_done,
            _S.TEXT_DONE: self._on_output_text_done,
        }

    # --- views ---------------------------------------------------------------------------

    @property
    def order(self) -> list[str]:
        """Ids of the items the server holds, in server order (a copy)."""
        return list(self._order)

    @property
    def mirror(self) -> list[Item]:
        return [self.items[item_id] for item_id in self._order]

    @property
    def history(self) -> list[Item]:
        return list(self.items.values())

    @property
    def carried_ids(self) -> list[str]:
        """Unsummarized items of earlier sessions (or a resumed transcript) not on the server.

        The re-seed item holds them as text; the next compaction summarizes them.
        """
        return list(self._carried)

    def on_server(self, item_id: str) -> bool:
        return item_id in self.items and self.items[item_id].on_server

    def is_cancelled(self, response_id: str | None) -> bool:
        return response_id is not None and response_id in self._cancelled

    def _set_response_status(self, response_id: str, status: str) -> None:
        self.responses[response_id] = sys.intern(status)
        _forget_oldest(self.responses, RESPONSES_KEPT)

    def _cancel(self, response_id: str) -> None:
        """Drop this response's late deltas (ids of old responses are forgotten: none of
        their deltas can still be on the way)."""
        self._cancelled[response_id] = None
        _forget_oldest(self._cancelled, RESPONSES_KEPT)

    def should_play(self, event: ServerEvent) -> bool:
        """False for an audio delta of a cancelled response or of a truncated item."""
        if self.is_cancelled(event.response_id):
            return False
        item = self.items.get(event.item_id or "")
        return not (item is not None and (item.truncated or item.deleted))

    # --- applying server events ----------------------------------------------------------

    def apply(self, event: ServerEvent) -> list[JSON]:
        """Update from one server event; return the client events to send (usually none)."""
        handler = self._handlers.get(event.type)
        return handler(event) if handler is not None else []

    def _new_item(self, item_id: str, **fields: Any) -> Item:
        self._seq += 1
        item = Item(id=item_id, seq=self._seq, **fields)
        self.items[item_id] = item
        return item

    def _ensure(self, item_id: str, role: str, *, on_server: bool) -> Item:
        """The item with this id; one created (appended to the mirror if on_server) if new."""
        item = self.items.get(item_id)
        if item is None:
            item = self._new_item(item_id, role=role)
            if on_server:
                self._insert(item, None, has_previous=False)
        return item

    def _insert(self, item: Item, previous_item_id: str | None, *, has_previous: bool) -> None:
        """Place an item in the mirror after ``previous_item_id`` ("root"/None: at the start).

        Without a previous_item_id at all the item is appended. An id the mirror does not
        hold also appends (logged).
        """
        if item.id in self._order:
            if not has_previous:
                return
            self._order.remove(item.id)
        if not has_previous:
            index = len(self._order)
        elif previous_item_id is None or previous_item_id == "root":
            index = 0
        elif previous_item_id in self._order:
            index = self._order.index(previous_item_id) + 1
        else:
            log.debug("previous_item_unknown", item_id=item.id, previous_item_id=previous_item_id)
            index = len(self._order)
        self._order.insert(index, item.id)
        item.on_server = True
        item.deleted = False

    def _update(self, item: Item, data: JSON) -> None:
        """Copy what an item object says (type, role, status, text) onto our item."""
        # Interned: a handful of distinct values, kept by every item of a long conversation.
        kind = data.get("type")
        if isinstance(kind, str):
            item.kind = sys.intern(kind)
        role = data.get("role")
        if isinstance(role, str):
            item.role = sys.intern(role)
        elif item.kind == "function_call":
            item.role = "assistant"
        elif item.kind == "function_call_output":
            item.role = "tool"
        status = data.get("status")
        if isinstance(status, str):
            item.status = sys.intern(status)
        if item.kind == "function_call":
            item.name = data.get("name") or item.name
            item.call_id = data.get("call_id") or item.call_id
            arguments = data.get("arguments")
            if isinstance(arguments, str) and item.name:
                item.text = f"{item.name}({arguments})"
        elif item.kind == "function_call_output":
            item.call_id = data.get("call_id") or item.call_id
            output = data.get("output")
            if isinstance(output, str):
                item.text = output
        else:
            text = item_text(data)
            if text:
                item.text = text
                if item.role == "user":
                    item.transcript_pending = False
            elif (
                item.role == "user"
                and has_audio(data)
                and not item.transcription_failed
                and not item.recorded
                and not item.text
            ):
                item.transcript_pending = True

    def _on_item_added(self, event: ServerEvent) -> list[JSON]:
        data = event.object("item")
        item_id = data.get("id")
        if not isinstance(item_id, str):
            return []
        item = self.items.get(item_id)
        if item is None:
            item = self._new_item(item_id)
        first_added = not item.on_server and not item.deleted
        self._update(item, data)
        self._insert(
            item, event.get("previous_item_id"), has_previous="previous_item_id" in event.data
        )
        if item_id in self._pending_summaries:
            summary = self._pending_summaries.pop(item_id)
            item.is_summary = True
            self.summary_item_id = item_id
            summary.confirmed = True
            self.adopt_summary(summary)
        elif item_id in self._pending_seeds:
            self._pending_seeds.discard(item_id)
            item.is_summary = True
            self.summary_item_id = item_id
        elif item_id in self._typed:
            self._confirm_typed(item)
        elif first_added and item.kind == "message" and item.role == "user":
            self.user_turns_since_compaction += 1
            if item_id in self._speech_ms:
                item.audio_ms = self._speech_ms.pop(item_id)
            self._settle_assistants()
            if not item.transcript_pending and item.text:
                self._record_turn(item)
        if item.done:
            self._item_finished(item)
        return []

    def _on_output_item_added(self, event: ServerEvent) -> list[JSON]:
        data = event.object("item")
        item_id = data.get("id")
        if not isinstance(item_id, str):
            return []
        item = self._ensure(item_id, "assistant", on_server=True)
        item.response_id = event.response_id or item.response_id
        self._update(item, data)
        self._answered(item.response_id)
        return []

    def _on_item_done(self, event: ServerEvent) -> list[JSON]:
        data = event.object("item")
        item_id = data.get("id")
        if not isinstance(item_id, str):
            return []
        item = self.items.get(item_id)
        if item is None:
            item = self._new_item(item_id, role="assistant")
            self._insert(
                item, event.get("previous_item_id"), has_previous="previous_item_id" in event.data
            )
        if event.response_id:
            item.response_id = event.response_id
        self._update(item, data)
        if item.status is None or item.status == "in_progress":
            item.status = "completed"
        self._item_finished(item)
        return []

    def _on_item_deleted(self, event: ServerEvent) -> list[JSON]:
        if event.item_id is not None:
            self.mark_gone(event.item_id)
        return []

    def mark_gone(self, item_id: str) -> None:
        """The server no longer holds this item (deleted, or it answered "not found")."""
        if item_id in self._order:
            self._order.remove(item_id)
        item = self.items.get(item_id)
        if item is not None:
            item.on_server = False
            item.deleted = True
            if item.role == "assistant" and item.done:
                self._record_turn(item)
        if self.summary_item_id == item_id:
            self.summary_item_id = next(
                (i for i in reversed(self._order) if self.items[i].is_summary), None
            )
        if self.streaming_item_id == item_id:
            self.streaming_item_id = None

    def _on_item_truncated(self, event: ServerEvent) -> list[JSON]:
        item = self.items.get(event.item_id or "")
        if item is None:
            return []
        end_ms = _int(event.get("audio_end_ms"))
        if not item.truncated or item.heard_text is None:
            self._mark_truncated(item, end_ms)
        item.truncated_at_ms = end_ms
        if item.done:
            self._record_turn(item)
        return []

    def _on_input_transcript_delta(self, event: ServerEvent) -> list[JSON]:
        if event.item_id is None:
            return []
        item = self._ensure(event.item_id, "user", on_server=False)
        delta = event.get("delta")
        if item.transcript_pending and isinstance(delta, str):
            item.text += delta
        return []

    def _on_input_transcript_completed(self, event: ServerEvent) -> list[JSON]:
        if event.item_id is None:
            return []
        item = self._ensure(event.item_id, "user", on_server=False)
        transcript = event.get("transcript")
        if isinstance(transcript, str):
            item.text = transcript.strip()
        item.transcript_pending = False
        item.transcription_failed = False
        if item.summarized:
            log.info("transcript_after_summary", item_id=item.id)
        self._record_turn(item)
        return []

    def _on_input_transcript_failed(self, event: ServerEvent) -> list[JSON]:
        if event.item_id is None:
            return []
        item = self._ensure(event.item_id, "user", on_server=False)
        item.transcript_pending = False
        item.transcription_failed = True
        item.text = ""
        log.info("transcription_failed", item_id=item.id, error=event.object("error"))
        self._record_turn(item)
        return []

    def _on_speech_started(self, event: ServerEvent) -> list[JSON]:
        if event.item_id is not None and isinstance(event.get("audio_start_ms"), int):
            self._speech_start_ms[event.item_id] = event.get("audio_start_ms")
        if self.interrupt_response and self.active_response_id is not None:
            # The server cancels it: whatever it still sends is late.
            self._cancel(self.active_response_id)
        return []

    def _on_speech_stopped(self, event: ServerEvent) -> list[JSON]:
        item_id = event.item_id
        start = self._speech_start_ms.pop(item_id or "", None)
        end = event.get("audio_end_ms")
        if item_id is None or start is None or not isinstance(end, int):
            return []
        duration = float(max(0, end - start))
        if item_id in self.items:
            self.items[item_id].audio_ms = duration
        else:
            self._speech_ms[item_id] = duration
        return []

    def _on_response_created(self, event: ServerEvent) -> list[JSON]:
        response_id = event.response_id
        if response_id is None:
            return []
        self.active_response_id = response_id
        self._set_response_status(response_id, "in_progress")
        self._settle_assistants()
        for turn in self._typed.values():
            if turn.confirmed and turn.response_id is None:
                turn.response_id = response_id
        return []

    def _on_response_done(self, event: ServerEvent) -> list[JSON]:
        response = event.object("response")
        response_id = event.response_id
        raw_status = response.get("status")
        status = raw_status if isinstance(raw_status, str) else "completed"
        if response_id is not None:
            self._set_response_status(response_id, status)
            if status == "cancelled":
                self._cancel(response_id)
        if self.active_response_id == response_id:
            self.active_response_id = None
        self._answered(response_id)
        streaming = self.items.get(self.streaming_item_id or "")
        if streaming is not None and streaming.response_id == response_id:
            self.streaming_item_id = None
        for data in response.get("output") or []:
            if not isinstance(data, dict):
                continue
            item = self.items.get(data.get("id") or "")
            if item is None:
                continue
            self._update(item, data)
            if item.status is None or item.status == "in_progress":
                item.status = "completed" if status == "completed" else "incomplete"
            self._item_finished(item)
        usage = response.get("usage")
        if isinstance(usage, dict):
            self.usage.add(usage)
            # The reply is part of the conversation now: the next request holds it too.
            self.window_tokens = _int(usage.get("input_tokens")) + _int(usage.get("output_tokens"))
            self.window_fresh = True
        return []

    def _reply_delta(self, event: ServerEvent) -> tuple[Item, str] | None:
        """The assistant item a reply delta belongs to (created if unseen) and the delta."""
        item_id = event.item_id
        delta = event.get("delta")
        if item_id is None or not isinstance(delta, str):
            return None
        item = self._ensure(item_id, "assistant", on_server=True)
        item.response_id = event.response_id or item.response_id
        return item, delta

    def _on_audio_delta(self, event: ServerEvent) -> list[JSON]:
        found = self._reply_delta(event)
        if found is None:
            return []
        item, delta = found
        item.audio_ms += b64_decoded_size(delta) / PCM_BYTES_PER_MS
        if self.should_play(event):
            self.streaming_item_id = item.id
        return []

    def _on_audio_done(self, event: ServerEvent) -> list[JSON]:
        item = self.items.get(event.item_id or "")
        if item is not None:
            item.audio_complete = True
        if self.streaming_item_id == event.item_id:
            self.streaming_item_id = None
        return []

    def _on_output_text_delta(self, event: ServerEvent) -> list[JSON]:
        found = self._reply_delta(event)
        if found is None:
            return []
        item, delta = found
        item.text += delta
        return []

    def _on_output_text_done(self, event: ServerEvent) -> list[JSON]:
        item = self.items.get(event.item_id or "")
        if item is None:
            return []
        final = event.get("transcript", event.get("text"))
        if isinstance(final, str):
            item.text = final
        return []

    # --- barge-in ------------------------------------------------------------------------

    def interrupt(self, played_ms: float, now_playing_item_id: str | None) -> list[JSON]:
        """The user talked over the assistant: tell the server how much was heard.

        Returns a ``conversation.item.truncate`` at ``played_ms`` capped at the audio
        received for the item (floored to whole ms), a ``conversation.item.delete`` when
        nothing was heard, or nothing when playback had already finished. The item is
        marked truncated here with the heard share of its transcript; its response's late
        deltas will not be played.
        """
        item = self.items.get(now_playing_item_id or self.streaming_item_id or "")
        if item is None or item.role != "assistant" or not item.on_server:
            return []
        received = item.audio_ms
        if item.audio_complete and played_ms >= received:
            return []
        if item.response_id is not None:
            self._cancel(item.response_id)
        if self.streaming_item_id == item.id:
            self.streaming_item_id = None
        end_ms = math.floor(min(played_ms, received)) if played_ms > 0 else 0
        self._mark_truncated(item, end_ms)
        if item.done:
            self._record_turn(item)
        if end_ms <= 0:
            return [item_delete(item.id)]
        return [item_truncate(item.id, end_ms)]

    def needs_cancel(self, interrupt_response: bool) -> bool:
        """Whether a barge-in must send ``response.cancel`` (the server will not cancel)."""
        return not interrupt_response and self.active_response_id is not None

    def _mark_truncated(self, item: Item, end_ms: int) -> None:
        fraction = end_ms / item.audio_ms if item.audio_ms > 0 else 0.0
        item.truncated = True
        item.truncated_at_ms = end_ms
        item.heard_text = cut_words(item.text, min(1.0, fraction))

    # --- compaction hooks ----------------------------------------------------------------

    def expect_summary(self, summary: Summary) -> None:
        """A summary item is being created: adopt it when the server confirms it."""
        if summary.item_id is not None:
            self._pending_summaries[summary.item_id] = summary

    def adopt_summary(self, summary: Summary) -> None:
        """Make ``summary`` the latest: its items count as summarized. Idempotent."""
        if any(s is summary for s in self.summaries):
            return
        self.summaries.append(summary)
        self.summary = summary.text
        covered = set(summary.summarized_ids)
        for item_id in summary.summarized_ids:
            item = self.items.get(item_id)
            if item is not None:
                item.summarized = True
        self._carried = [i for i in self._carried if i not in covered]
        self.user_turns_since_compaction = 0
        self.window_fresh = False
        self._settle_assistants(only=covered)
        self._emit(
            {
                "type": "summary",
                "ts": utc_timestamp(summary.created_at),
                "item_id": summary.item_id,
                "text": summary.text,
                "summarized_ids": list(summary.summarized_ids),
                "replaced_item_ids": list(summary.replaced_item_ids),
            }
        )

    def forget_summary(self, item_id: str) -> None:
        """Stop waiting for a summary item (its compaction was abandoned)."""
        self._pending_summaries.pop(item_id, None)

    # --- typed turns ---------------------------------------------------------------------

    @property
    def pending_typed_ids(self) -> list[str]:
        """Ids of typed lines not answered yet, oldest first."""
        return list(self._typed)

    def add_typed_turn(self, text: str) -> str:
        """A line the user typed: a user item with a client-chosen id, pending until answered.

        It is recorded once, when the server first confirms its id. Until a reply to it
        starts (its first output item) or its response ends, `typed_turn_events` sends it
        again to every new session; a reply cut by a drop is carried like any other turn.
        """
        item = self._new_item(new_item_id("typed"), role="user", text=text, status="completed")
        self._typed[item.id] = TypedTurn(item.id)
        return item.id

    def typed_turn_events(self, dialect: Dialect) -> list[JSON]:
        """Client events for the pending typed lines not yet sent to the current session.

        Each line's ``conversation.item.create`` (its own id, appended), then one
        ``response.create``; nothing when every pending line was sent to this session.
        """
        events: list[JSON] = []
        for turn in self._typed.values():
            if turn.sent_in == self.sessions:
                continue
            turn.sent_in = self.sessions
            text = self.items[turn.item_id].text
            events.append(message_create("user", text, dialect, item_id=turn.item_id))
        if events:
            events.append(response_create())
        return events

    def _answered(self, response_id: str | None) -> None:
        """The reply to these typed lines began (or their response ended): not re-sent."""
        if response_id is None:
            return
        for turn in [t for t in self._typed.values() if t.response_id == response_id]:
            del self._typed[turn.item_id]

    def _confirm_typed(self, item: Item) -> None:
        self._typed[item.id].confirmed = True
        if item.recorded:  # confirmed again by a later session
            return
        self.user_turns_since_compaction += 1
        self._settle_assistants()
        self._record_turn(item)

    # --- new sessions --------------------------------------------------------------------

    def reset_for_new_session(self) -> None:
        """The server conversation is blank again: clear the mirror, keep the history.

        The mirror's unsummarized items become carried: the re-seed holds them as text
        and the next compaction summarizes them. A summary that was produced and sent but
        not confirmed before the session ended is adopted: the re-seed carries it.
        Typed lines not answered yet stay pending, not carried: `typed_turn_events` sends
        them again, after the seed.
        """
        for summary in list(self._pending_summaries.values()):
            self.adopt_summary(summary)
        self._settle_assistants()
        for item_id in self._order:
            item = self.items[item_id]
            item.on_server = False
            if item_id in self._typed:
                continue
            if not item.summarized and not item.is_summary and item_id not in self._carried:
                self._carried.append(item_id)
        for turn in self._typed.values():
            turn.confirmed = False
            turn.response_id = None
        self._carried.sort(key=lambda i: self.items[i].seq)
        self._order.clear()
        self.summary_item_id = None
        self.active_response_id = None
        self.streaming_item_id = None
        self.window_tokens = 0
        self.window_fresh = False
        self.compaction_in_flight = False
        self._pending_summaries.clear()
        self._pending_seeds.clear()
        self._speech_start_ms.clear()
        self._speech_ms.clear()
        self.sessions += 1

    def restore(self, summary: str | None, turns: Iterable[RoleText | tuple[str, str]]) -> None:
        """Load an earlier conversation (``voicebot run --resume``) into local history.

        ``turns``: objects with ``role`` and ``text`` (a `TranscriptTurn`) or pairs. They
        become carried items, so `seed_events` puts them in the new session.
        """
        if summary:
            self.summary = summary
        for turn in turns:
            role, text = turn if isinstance(turn, tuple) else (turn.role, turn.text)
            if not text.strip():
                continue
            item = self._new_item(
                new_item_id("restored"), role=role, text=text, status="completed", restored=True
            )
            item.recorded = True
            self._carried.append(item.id)

    def seed_events(self, dialect: Dialect, max_chars: int = SEED_MAX_CHARS) -> list[JSON]:
        """The re-seed of a new, empty session: ONE system item at root, or nothing.

        It holds the latest summary and the carried turns verbatim, newest kept when they
        exceed ``max_chars`` (older ones stay carried and go into the next summary).
        """
        summary = (self.summary or "").strip()
        if len(summary) > max_chars:
            summary = summary[-max_chars:]
        budget = max_chars - len(summary)
        lines: list[str] = []
        for item_id in reversed(self._carried):
            item = self.items[item_id]
            text = item.spoken_text.strip()
            if not text or item.kind != "message":
                continue
            line = f"{ROLE_LABELS.get(item.role, item.role)}: {text}"
            if len(line) + 1 > budget:
                break
            budget -= len(line) + 1
            lines.append(line)
        lines.reverse()
        if not summary and not lines:
            return []
        parts = []
        if summary:
            parts.append(f"{SUMMARY_HEADER}\n{summary}")
        if lines:
            parts.append(RECENT_HEADER + "\n" + "\n".join(lines))
        seed_id = new_item_id("seed")
        self._pending_seeds.add(seed_id)
        text = "\n\n".join(parts)
        return [message_create("system", text, dialect, previous_item_id="root", item_id=seed_id)]

    # --- transcript records --------------------------------------------------------------

    def drain_completed_records(self) -> list[JSON]:
        """Records of turns finished and summaries adopted since the last call, each once."""
        records, self._records = self._records, []
        return records

    def flush_records(self) -> list[JSON]:
        """At shutdown: record every turn not yet recorded, then drain."""
        self._settle_assistants()
        for item in self.items.values():
            self._record_turn(item)
        return self.drain_completed_records()

    def _item_finished(self, item: Item) -> None:
        if item.role != "assistant" or item.kind != "message" or item.recorded:
            return
        if item.truncated or not item.on_server or item.summarized:
            self._record_turn(item)
        elif item.id not in self._unsettled:
            # Recorded once settled: a barge-in may still truncate what is being played.
            self._unsettled.append(item.id)

    def _settle_assistants(self, only: set[str] | None = None) -> None:
        keep: list[str] = []
        for item_id in self._unsettled:
            if only is None or item_id in only:
                self._record_turn(self.items[item_id])
            else:
                keep.append(item_id)
        self._unsettled = keep

    def _record_turn(self, item: Item) -> None:
        if item.recorded or item.is_summary or item.restored:
            return
        if item.kind != "message" or item.role not in ("user", "assistant"):
            return
        if item.role == "assistant" and not item.text and not item.truncated:
            return
        item.recorded = True
        if item.id in self._unsettled:
            self._unsettled.remove(item.id)
        text = item.text or (INAUDIBLE if item.role == "user" else "")
        self._emit(
            {
                "type": "turn",
                "ts": utc_timestamp(),
                "seq": item.seq,
                "item_id": item.id,
                "role": item.role,
                "text": text,
                "truncated": item.truncated,
                "heard_text": item.heard_text if item.truncated else None,
                "audio_ms": round(item.audio_ms),
                "transcription_failed": item.transcription_failed,
                "summarized": item.summarized,
            }
        )

    def _emit(self, record: JSON) -> None:
        if self.on_record is not None:
            self.on_record(record)
        else:
            self._records.append(record)
