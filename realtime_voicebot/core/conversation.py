"""The conversation: the server's items mirrored from events, and everything ever said.

`Conversation` is a plain object. `apply(event)` updates it from one parsed `ServerEvent`; it
decides nothing and sends nothing (barge-in, tool calls and compaction are decided by the
other parts of the core, which read it). It keeps two views:

* the **mirror**: the items the server holds now, in the server's order;
* the **history**: every item ever seen and every summary, never shrunk. The server forgets
  (compaction deletes items, a new session starts blank); we do not.

It also remembers the recent responses (the active one, the cancelled ones whose late deltas
must not be played), the token window, and the transcript records of finished turns, which
the core hands out with `take_records`.

Each `Item` has an explicit lifecycle instead of a row of booleans: where it is
(`Presence`), how far its user transcript got (`TranscriptState`), its audio (received,
complete, truncated at), and whether a summary covers it and the transcript holds it.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

import structlog

from realtime_voicebot.transport import payloads as pl
from realtime_voicebot.transport.events import (
    PCM_BYTES_PER_MS,
    ServerEvent,
    ServerEventType,
)

log = structlog.get_logger(component="conversation")

JSON = dict[str, Any]
_S = ServerEventType

INAUDIBLE = "[inaudible]"
"""The text of a user turn whose transcript failed or never came."""

RESPONSES_KEPT = 256
"""Responses whose status (and cancellation) is remembered; an hour-long conversation has a
few hundred, so memory stays flat however long it runs."""


def new_item_id(prefix: str) -> str:
    """A client-assigned item id, ``<prefix>_<16 hex>`` (the API takes at most 32 chars)."""
    return f"{prefix}_{os.urandom(8).hex()}"


def utc_timestamp(seconds: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cut_words(text: str, fraction: float) -> str:
    """The first ``fraction`` of the words of ``text`` (whole words, rounded down)."""
    words = text.split()
    if fraction >= 1.0:
        return " ".join(words)
    return " ".join(words[: max(0, math.floor(len(words) * fraction))])


class Presence(StrEnum):
    """Where an item is, seen from the server."""

    LOCAL = "local"
    """Known here only: a typed line not confirmed yet, a restored turn, or an item of a
    session that has ended (carried into the next one as text)."""
    ON_SERVER = "on_server"
    """In the server's conversation now (the mirror)."""
    DELETED = "deleted"
    """The server deleted it (or answered that it no longer has it)."""


class TranscriptState(StrEnum):
    """How far the transcript of a spoken user turn got."""

    NONE = "none"
    """Not a spoken turn, or its words came with it."""
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


Origin = Literal["server", "typed", "restored", "summary"]
"""Who made the item: the server, a typed line, a saved transcript, or our summary/seed."""


@dataclass(slots=True)
class Item:
    """One conversation item as we know it, whether or not the server still holds it.

    ``role`` is ``user``, ``assistant`` or ``system`` for messages; a function call is the
    assistant's, a function call output is ``tool``'s. ``text`` is the transcript or text;
    ``heard_text`` what the user actually heard of a truncated assistant item.
    """

    id: str
    role: str = "user"
    kind: str = "message"
    text: str = ""
    origin: Origin = "server"
    presence: Presence = Presence.LOCAL
    status: str | None = None
    """The server's status: ``in_progress``, ``completed``, ``incomplete`` (None: unknown)."""
    transcript: TranscriptState = TranscriptState.NONE
    seq: int = 0
    created_at: float = field(default_factory=time.time)
    response_id: str | None = None
    audio_ms: float = 0.0
    audio_complete: bool = False
    truncated_at_ms: int | None = None
    heard_text: str | None = None
    summarized: bool = False
    """A summary covers it."""
    recorded: bool = False
    """Written to the transcript (or restored from one): never recorded again."""
    discarded: bool = False
    """Noise taken for speech (a false interruption): deleted on the server, never recorded."""
    name: str | None = None
    call_id: str | None = None

    @property
    def on_server(self) -> bool:
        return self.presence is Presence.ON_SERVER

    @property
    def deleted(self) -> bool:
        return self.presence is Presence.DELETED

    @property
    def truncated(self) -> bool:
        return self.truncated_at_ms is not None

    @property
    def is_summary(self) -> bool:
        return self.origin == "summary"

    @property
    def done(self) -> bool:
        """Finished on the server (not being generated any more)."""
        return self.status != "in_progress"

    @property
    def spoken_text(self) -> str:
        """What the conversation holds of this item: the heard part when truncated."""
        if self.truncated:
            return self.heard_text or ""
        if self.transcript is TranscriptState.FAILED and not self.text:
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


class RoleText(Protocol):
    """Anything with a role and a text, such as a turn read back from a transcript."""

    @property
    def role(self) -> str: ...

    @property
    def text(self) -> str: ...


def _forget_oldest(entries: dict[str, Any], keep: int) -> None:
    """Trim an insertion-ordered dict to its newest `keep` entries."""
    while len(entries) > keep:
        del entries[next(iter(entries))]


class Conversation:
    """Mirror of the server's conversation, local history, responses and the token window."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        """Local history: every item ever seen, in first-seen order. Never shrunk."""
        self.summaries: list[Summary] = []
        """Every summary adopted, oldest first."""
        self.summary: str | None = None
        """The latest summary's text (covers everything summarized so far)."""
        self.summary_item_id: str | None = None
        """The server item holding the latest summary (or the re-seed), when it holds one."""
        self.window_tokens = 0
        """Tokens the model holds: the latest response's input plus its output."""
        self.window_fresh = False
        """False until a response.done has measured the window since the last compaction."""
        self.active_response_id: str | None = None
        self.responses: dict[str, str] = {}
        """Status of the latest `RESPONSES_KEPT` responses by id (older ones are forgotten)."""
        self.streaming_item_id: str | None = None
        """The assistant item whose audio is arriving now."""
        self.user_turns_since_compaction = 0
        self.sessions = 1
        self._order: list[str] = []
        self._seq = 0
        self._cancelled: dict[str, None] = {}  # an ordered set, bounded like `responses`
        self._carried: list[str] = []
        self._pending_summaries: dict[str, Summary] = {}
        self._pending_seeds: set[str] = set()
        self._speech_start_ms: dict[str, int] = {}
        self._speech_ms: dict[str, float] = {}
        self._unsettled: list[str] = []
        self._held: set[str] = set()
        self._records: list[JSON] = []

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
        item = self.items.get(item_id)
        return item is not None and item.on_server

    def is_cancelled(self, response_id: str | None) -> bool:
        return response_id is not None and response_id in self._cancelled

    def should_play(self, item_id: str, response_id: str | None) -> bool:
        """False for audio of a cancelled response or of a truncated or deleted item."""
        if self.is_cancelled(response_id):
            return False
        item = self.items.get(item_id)
        return not (item is not None and (item.truncated or item.deleted))

    def speech_ms(self, item_id: str) -> float | None:
        """How long the user spoke in this item, as the server's VAD measured it."""
        if item_id in self._speech_ms:
            return self._speech_ms[item_id]
        item = self.items.get(item_id)
        return item.audio_ms if item is not None and item.audio_ms > 0 else None

    def is_discarded(self, item_id: str) -> bool:
        item = self.items.get(item_id)
        return item is not None and item.discarded

    def hold(self, item_id: str) -> None:
        """Do not record this user turn yet: it may be noise (`discard`) or real (`release`)."""
        self._held.add(item_id)

    def release(self, item_id: str) -> None:
        """A held turn is real: record it as usual (now, if its words are in)."""
        self._held.discard(item_id)
        item = self.items.get(item_id)
        if item is not None and item.transcript is not TranscriptState.PENDING and item.text:
            self._record_turn(item)

    def discard(self, item_id: str) -> None:
        """A held turn was noise: it never reaches the transcript, nor counts as a turn."""
        self._held.discard(item_id)
        item = self.items.get(item_id) or self._new_item(item_id, role="user")
        if not item.discarded and item.presence is not Presence.LOCAL:
            self.user_turns_since_compaction = max(0, self.user_turns_since_compaction - 1)
        item.discarded = True

    def take_records(self) -> list[JSON]:
        """Transcript records of turns finished and summaries adopted since the last call."""
        records, self._records = self._records, []
        return records

    def snapshot(self) -> dict[str, int]:
        return {
            "items_known": len(self.items),
            "items_on_server": len(self._order),
            "items_carried": len(self._carried),
            "summaries": len(self.summaries),
            "window_tokens": self.window_tokens,
            "sessions": self.sessions,
        }

    # --- applying server events ----------------------------------------------------------

    def apply(self, event: ServerEvent) -> None:
        """Update the mirror and history from one server event of the conversation.

        Events of out-of-band responses never come here: `SessionCore` keeps them away from
        every part but the compactor (see `core.out_of_band`)."""
        payload = event.payload
        kind = event.type
        if isinstance(payload, pl.ItemEvent):
            if kind is _S.ITEM_ADDED:
                self._on_item_added(payload)
            elif kind is _S.OUTPUT_ITEM_ADDED:
                self._on_output_item_added(payload)
            else:  # ITEM_DONE, OUTPUT_ITEM_DONE
                self._on_item_done(payload)
        elif isinstance(payload, pl.ItemRef):
            self._apply_item_ref(kind, payload)
        elif isinstance(payload, pl.AudioDelta):
            item = self._reply_item(payload.item_id, payload.response_id)
            item.audio_ms += len(payload.pcm) / PCM_BYTES_PER_MS
            if self.should_play(item.id, payload.response_id):
                self.streaming_item_id = item.id
        elif isinstance(payload, pl.Delta) and kind in (_S.AUDIO_TRANSCRIPT_DELTA, _S.TEXT_DELTA):
            self._reply_item(payload.item_id, payload.response_id).text += payload.delta
        elif isinstance(payload, pl.Done):
            self._on_part_done(kind, payload)
        elif isinstance(payload, pl.SpeechStarted):
            self._on_speech_started(payload)
        elif isinstance(payload, pl.SpeechStopped):
            self._on_speech_stopped(payload)
        elif isinstance(payload, pl.ResponseCreated) and not payload.out_of_band:
            if self.responses.get(payload.response_id, "in_progress") != "in_progress":
                log.info("stale_response_created", response_id=payload.response_id)
                return  # a response that already ended cannot start again
            self.active_response_id = payload.response_id
            self._set_response_status(payload.response_id, "in_progress")
            self._settle_assistants()
        elif isinstance(payload, pl.ResponseDone):
            self._on_response_done(payload)

    def _apply_item_ref(self, kind: ServerEventType, ref: pl.ItemRef) -> None:
        if kind is _S.ITEM_DELETED:
            self.mark_gone(ref.item_id)
        elif kind is _S.ITEM_TRUNCATED:
            self._on_item_truncated(ref)
        elif kind is _S.INPUT_TRANSCRIPT_DELTA:
            item = self._ensure(ref.item_id, "user")
            if item.transcript is TranscriptState.PENDING:
                item.text += ref.text
        elif kind is _S.INPUT_TRANSCRIPT_COMPLETED:
            item = self._ensure(ref.item_id, "user")
            item.text = ref.text.strip()
            item.transcript = TranscriptState.DONE
            if item.summarized:
                log.info("transcript_after_summary", item_id=item.id)
            self._record_turn(item)
        elif kind is _S.INPUT_TRANSCRIPT_FAILED:
            item = self._ensure(ref.item_id, "user")
            item.transcript = TranscriptState.FAILED
            item.text = ""
            log.info("transcription_failed", item_id=item.id)
            self._record_turn(item)

    def _new_item(self, item_id: str, **fields: Any) -> Item:
        self._seq += 1
        item = Item(id=item_id, seq=self._seq, **fields)
        self.items[item_id] = item
        return item

    def _ensure(self, item_id: str, role: str) -> Item:
        """The item with this id; a new local one if unseen."""
        item = self.items.get(item_id)
        return item if item is not None else self._new_item(item_id, role=role)

    def _reply_item(self, item_id: str, response_id: str | None) -> Item:
        """The assistant item a reply delta belongs to; added to the mirror if unseen."""
        item = self.items.get(item_id)
        if item is None:
            item = self._new_item(item_id, role="assistant")
            self._insert(item, None, has_previous=False)
        item.response_id = response_id or item.response_id
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
        item.presence = Presence.ON_SERVER

    def _update(self, item: Item, data: pl.ItemData) -> None:
        """Copy what an item object says (type, role, status, text) onto our item. Items we
        made ourselves (typed lines, summaries) keep what we know of them."""
        if item.origin != "server":
            if data.status is not None:
                item.status = sys.intern(data.status[:32])
            return
        # Interned: a handful of distinct values, kept by every item of a long conversation.
        item.kind = sys.intern(data.type)
        if data.role is not None:
            item.role = sys.intern(data.role)
        elif item.kind == "function_call":
            item.role = "assistant"
        elif item.kind == "function_call_output":
            item.role = "tool"
        if data.status is not None:
            item.status = sys.intern(data.status)
        if item.kind == "function_call":
            item.name = data.name or item.name
            item.call_id = data.call_id or item.call_id
            if data.arguments is not None and item.name:
                item.text = f"{item.name}({data.arguments})"
        elif item.kind == "function_call_output":
            item.call_id = data.call_id or item.call_id
            if data.output is not None:
                item.text = data.output
        elif data.text:
            item.text = data.text
            if item.role == "user" and item.transcript is TranscriptState.PENDING:
                item.transcript = TranscriptState.DONE
        elif (
            item.role == "user"
            and data.has_audio
            and item.transcript is TranscriptState.NONE
            and not item.recorded
            and not item.text
        ):
            item.transcript = TranscriptState.PENDING

    def _on_item_added(self, event: pl.ItemEvent) -> None:
        data = event.item
        item = self.items.get(data.id) or self._new_item(data.id)
        first_added = item.presence is Presence.LOCAL
        self._update(item, data)
        self._insert(item, event.previous_item_id, has_previous=event.has_previous)
        if data.id in self._pending_summaries:
            summary = self._pending_summaries.pop(data.id)
            item.origin = "summary"
            self.summary_item_id = data.id
            summary.confirmed = True
            self.adopt_summary(summary)
        elif data.id in self._pending_seeds:
            self._pending_seeds.discard(data.id)
            item.origin = "summary"
            self.summary_item_id = data.id
        elif first_added and item.kind == "message" and item.role == "user" and not item.recorded:
            # A new user turn (a typed line is confirmed once, whichever session holds it).
            self.user_turns_since_compaction += not item.discarded
            if data.id in self._speech_ms:
                item.audio_ms = self._speech_ms.pop(data.id)
            self._settle_assistants()
            if item.transcript is not TranscriptState.PENDING and item.text:
                self._record_turn(item)
        if item.done:
            self._item_finished(item)

    def _on_output_item_added(self, event: pl.ItemEvent) -> None:
        item = self._reply_item(event.item.id, event.response_id)
        self._update(item, event.item)

    def _on_item_done(self, event: pl.ItemEvent) -> None:
        data = event.item
        item = self.items.get(data.id)
        if item is not None and item.presence is Presence.LOCAL and item.origin != "server":
            self._on_item_added(event)  # its conversation.item.added was lost: it is there
        elif item is None:
            item = self._new_item(data.id, role="assistant")
            self._insert(item, event.previous_item_id, has_previous=event.has_previous)
        if event.response_id:
            item.response_id = event.response_id
        self._update(item, data)
        if item.status is None or item.status == "in_progress":
            item.status = "completed"
        self._item_finished(item)

    def mark_gone(self, item_id: str) -> None:
        """The server no longer holds this item (deleted, or it answered "not found")."""
        if item_id in self._order:
            self._order.remove(item_id)
        item = self.items.get(item_id)
        if item is not None:
            item.presence = Presence.DELETED
            if item.role == "assistant" and item.done:
                self._record_turn(item)
        if self.summary_item_id == item_id:
            self.summary_item_id = next(
                (i for i in reversed(self._order) if self.items[i].is_summary), None
            )
        if self.streaming_item_id == item_id:
            self.streaming_item_id = None

    def _on_item_truncated(self, ref: pl.ItemRef) -> None:
        item = self.items.get(ref.item_id)
        if item is None:
            return
        if not item.truncated or item.heard_text is None:
            self.mark_truncated(item, ref.audio_end_ms)
        item.truncated_at_ms = ref.audio_end_ms
        if item.done:
            self._record_turn(item)

    def _on_part_done(self, kind: ServerEventType, done: pl.Done) -> None:
        item = self.items.get(done.item_id or "")
        if kind is _S.AUDIO_DONE:
            if item is not None:
                item.audio_complete = True
            if self.streaming_item_id == done.item_id:
                self.streaming_item_id = None
        elif kind in (_S.AUDIO_TRANSCRIPT_DONE, _S.TEXT_DONE) and item and done.text is not None:
            item.text = done.text

    def _on_speech_started(self, speech: pl.SpeechStarted) -> None:
        if speech.item_id is not None and speech.audio_start_ms is not None:
            self._speech_start_ms[speech.item_id] = speech.audio_start_ms
            _forget_oldest(self._speech_start_ms, 16)

    def _on_speech_stopped(self, speech: pl.SpeechStopped) -> None:
        item_id = speech.item_id
        start = self._speech_start_ms.pop(item_id or "", None)
        if item_id is None or start is None or speech.audio_end_ms is None:
            return
        duration = float(max(0, speech.audio_end_ms - start))
        if item_id in self.items:
            self.items[item_id].audio_ms = duration
        else:
            self._speech_ms[item_id] = duration
            _forget_oldest(self._speech_ms, 16)

    def _on_response_done(self, done: pl.ResponseDone) -> None:
        response_id = done.response_id
        if response_id is not None:
            self._set_response_status(response_id, done.status)
            if done.status == "cancelled":
                self.cancel(response_id)
        if self.active_response_id == response_id:
            self.active_response_id = None
        streaming = self.items.get(self.streaming_item_id or "")
        if streaming is not None and streaming.response_id == response_id:
            self.streaming_item_id = None
        for data in done.output:
            item = self.items.get(data.id)
            if item is None:
                continue
            self._update(item, data)
            if item.status is None or item.status == "in_progress":
                item.status = "completed" if done.status == "completed" else "incomplete"
            self._item_finished(item)
        if done.usage is not None:
            # The reply is part of the conversation now: the next request holds it too.
            self.window_tokens = done.usage.window_tokens
            self.window_fresh = True

    def _set_response_status(self, response_id: str, status: str) -> None:
        self.responses[response_id] = sys.intern(status)
        _forget_oldest(self.responses, RESPONSES_KEPT)

    # --- what the other parts of the core change ----------------------------------------

    def cancel(self, response_id: str) -> None:
        """Drop this response's late deltas (ids of old responses are forgotten: none of
        their deltas can still be on the way)."""
        self._cancelled[response_id] = None
        _forget_oldest(self._cancelled, RESPONSES_KEPT)

    def cancel_active(self) -> None:
        """The running response is being cancelled: whatever it still sends is late."""
        if self.active_response_id is not None:
            self.cancel(self.active_response_id)

    def mark_truncated(self, item: Item, end_ms: int) -> None:
        """The user heard ``end_ms`` of this assistant item: keep that share of its words."""
        fraction = end_ms / item.audio_ms if item.audio_ms > 0 else 0.0
        item.truncated_at_ms = end_ms
        item.heard_text = cut_words(item.text, min(1.0, fraction))
        if self.streaming_item_id == item.id:
            self.streaming_item_id = None
        if item.response_id is not None:
            self.cancel(item.response_id)
        if item.done:
            self._record_turn(item)

    def add_typed_line(self, text: str) -> Item:
        """A line the user typed: a local user item with a client-chosen id."""
        return self._new_item(
            new_item_id("typed"), role="user", text=text, status="completed", origin="typed"
        )

    def expect_seed(self, item_id: str) -> None:
        """A re-seed item is being created: it counts as the summary item once added."""
        self._pending_seeds.add(item_id)

    def expect_summary(self, summary: Summary) -> None:
        """A summary item is being created: adopt it when the server confirms it."""
        if summary.item_id is not None:
            self._pending_summaries[summary.item_id] = summary

    def forget_summary(self, item_id: str) -> None:
        """Stop waiting for a summary item (its compaction was abandoned)."""
        self._pending_summaries.pop(item_id, None)

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
        self._records.append(
            {
                "type": "summary",
                "ts": utc_timestamp(summary.created_at),
                "item_id": summary.item_id,
                "text": summary.text,
                "summarized_ids": list(summary.summarized_ids),
                "replaced_item_ids": list(summary.replaced_item_ids),
            }
        )

    # --- sessions ------------------------------------------------------------------------

    def reset_for_new_session(self, keep_local: Iterable[str] = ()) -> None:
        """The server conversation is blank again: clear the mirror, keep the history.

        The mirror's unsummarized items become carried: the re-seed holds them as text and
        the next compaction summarizes them. A summary that was produced and sent but not
        confirmed before the session ended is adopted: the re-seed carries it. Items in
        ``keep_local`` (typed lines not answered yet) are not carried: they are sent again.
        """
        keep = set(keep_local)
        for summary in list(self._pending_summaries.values()):
            self.adopt_summary(summary)
        self._settle_assistants()
        for item_id in self._order:
            item = self.items[item_id]
            item.presence = Presence.LOCAL
            if item_id in keep or item.summarized or item.is_summary:
                continue
            if item_id not in self._carried:
                self._carried.append(item_id)
        self._carried.sort(key=lambda i: self.items[i].seq)
        self._order.clear()
        self.summary_item_id = None
        self.active_response_id = None
        self.streaming_item_id = None
        self.window_tokens = 0
        self.window_fresh = False
        self._pending_summaries.clear()
        self._pending_seeds.clear()
        self._speech_start_ms.clear()
        self._speech_ms.clear()
        self.sessions += 1

    def restore(self, summary: str | None, turns: Iterable[RoleText | tuple[str, str]]) -> None:
        """Load an earlier conversation (``voicebot run --resume``) into local history.

        ``turns``: objects with ``role`` and ``text`` (a `TranscriptTurn`) or pairs. They
        become carried items, so the re-seed puts them in the new session.
        """
        if summary:
            self.summary = summary
        for turn in turns:
            role, text = turn if isinstance(turn, tuple) else (turn.role, turn.text)
            if not text.strip():
                continue
            item = self._new_item(
                new_item_id("restored"),
                role=role,
                text=text,
                status="completed",
                origin="restored",
                recorded=True,
            )
            self._carried.append(item.id)

    # --- transcript records --------------------------------------------------------------

    def flush_records(self) -> list[JSON]:
        """At shutdown: record every turn not yet recorded, then take all records."""
        self._settle_assistants()
        for item in self.items.values():
            self._record_turn(item)
        return self.take_records()

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
        if item.recorded or item.discarded or item.id in self._held:
            return
        if item.origin in ("summary", "restored"):
            return
        if item.kind != "message" or item.role not in ("user", "assistant"):
            return
        if item.role == "assistant" and not item.text and not item.truncated:
            return
        item.recorded = True
        if item.id in self._unsettled:
            self._unsettled.remove(item.id)
        text = item.text or (INAUDIBLE if item.role == "user" else "")
        self._records.append(
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
                "transcription_failed": item.transcript is TranscriptState.FAILED,
                "summarized": item.summarized,
            }
        )
