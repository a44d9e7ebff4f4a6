"""One compaction on the server, without I/O: create the summary item, delete the rest.

`Compaction.begin` returns the client events (one system item at root holding the summary,
then one delete per snapshot item the server still holds); `on_event` consumes the server's
confirmations and errors (matched by ``error.event_id``) and returns retries. The
`Conversation` sees the same events and updates the mirror from the confirmations, so
where a delete keeps failing the item simply stays in the mirror, as on the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import structlog

from realtime_voicebot.core.compaction.policy import CompactionPlan
from realtime_voicebot.core.conversation import Conversation, Summary, new_item_id
from realtime_voicebot.core.recap import recap_text
from realtime_voicebot.transport import payloads as pl
from realtime_voicebot.transport.events import (
    JSON,
    Dialect,
    ErrorCode,
    ServerEvent,
    ServerEventType,
    item_delete,
    message_create,
)

log = structlog.get_logger(component="compaction")

DEFAULT_MAX_RETRIES = 2
_GONE_PHRASES = ("not found", "does not exist", "no such item")

RequestKind = Literal["create", "delete"]


def summary_item_text(summary: str) -> str:
    """The content of a summary item: the summary, quoted as a record."""
    return recap_text(summary)


def _is_item_gone(error: pl.ServerError) -> bool:
    message = error.message.lower()
    return error.code == ErrorCode.ITEM_NOT_FOUND or any(p in message for p in _GONE_PHRASES)


@dataclass
class Compaction:
    """The server side of one `CompactionPlan`. ``max_retries`` resends per request."""

    conversation: Conversation = field(repr=False)
    plan: CompactionPlan
    max_retries: int = DEFAULT_MAX_RETRIES
    summary_item_id: str = field(default_factory=lambda: new_item_id("sum"))
    summary: Summary | None = field(default=None, init=False)
    summary_confirmed: bool = field(default=False, init=False)
    summary_failed: bool = field(default=False, init=False)
    confirmed_ids: list[str] = field(default_factory=list, init=False)
    failed_ids: list[str] = field(default_factory=list, init=False)
    delete_retries: int = field(default=0, init=False)
    create_retries: int = field(default=0, init=False)
    abandoned: bool = field(default=False, init=False)
    _done: bool = field(default=False, init=False)
    _dialect: Dialect = field(default="ga", init=False)
    _requests: dict[str, tuple[RequestKind, str]] = field(default_factory=dict, init=False)
    _sent_ids: set[str] = field(default_factory=set, init=False)
    """Every client event id this compaction sent: its errors are its own to handle."""
    _attempts: dict[str, int] = field(default_factory=dict, init=False)
    _outstanding: list[str] = field(default_factory=list, init=False)

    @property
    def begun(self) -> bool:
        return self.summary is not None

    @property
    def done(self) -> bool:
        """All requests confirmed or given up (or the compaction abandoned)."""
        return self._done

    @property
    def outstanding(self) -> list[str]:
        """Deletes not confirmed yet."""
        return list(self._outstanding)

    def begin(self, summary_text: str, dialect: Dialect) -> list[JSON]:
        """The events to send: the summary item at root, then exactly the deletes."""
        if self.begun:
            raise RuntimeError("a compaction begins once")
        self._dialect = dialect
        self.summary = Summary(
            text=summary_text.strip(),
            summarized_ids=self.plan.summarize_ids,
            item_id=self.summary_item_id,
            replaced_item_ids=tuple(i for i in self.plan.delete_ids if self._is_summary(i)),
        )
        self.conversation.expect_summary(self.summary)
        events = [self._create()]
        for item_id in self.plan.delete_ids:
            if self.conversation.on_server(item_id):
                self._outstanding.append(item_id)
                events.append(self._delete(item_id))
            else:
                # Deleted meanwhile (a barge-in, an earlier retry): the server no longer has it.
                self.confirmed_ids.append(item_id)
        return events

    def on_event(self, event: ServerEvent) -> list[JSON]:
        """Consume a confirmation or an error; return the retries to send."""
        if self._done or not self.begun:
            return []
        retries: list[JSON] = []
        payload = event.payload
        if event.type is ServerEventType.ITEM_ADDED and isinstance(payload, pl.ItemEvent):
            if payload.item.id == self.summary_item_id:
                self.summary_confirmed = True
        elif event.type is ServerEventType.ITEM_DELETED and isinstance(payload, pl.ItemRef):
            if payload.item_id in self._outstanding:
                self._confirm(payload.item_id)
        elif isinstance(payload, pl.ServerError):
            retries = self._on_error(payload)
        self._check_done()
        return retries

    def resend_unconfirmed(self) -> list[JSON]:
        """After waiting in vain: resend what is unconfirmed, give up what ran out of tries."""
        if self._done or not self.begun:
            return []
        events: list[JSON] = []
        if not self.summary_confirmed and not self.summary_failed:
            if self.conversation.on_server(self.summary_item_id):
                self.summary_confirmed = True
            elif self._attempts[self.summary_item_id] <= self.max_retries:
                self.create_retries += 1
                events.append(self._create())
            else:
                self._summary_given_up()
        for item_id in list(self._outstanding):
            if not self.conversation.on_server(item_id):
                self._confirm(item_id)
            elif self._attempts[item_id] <= self.max_retries:
                self.delete_retries += 1
                events.append(self._delete(item_id))
            else:
                self._fail(item_id)
        self._check_done()
        return events

    def give_up(self) -> None:
        """Stop waiting: unconfirmed deletes failed (their items stay in the mirror)."""
        if self._done or not self.begun:
            self._done = True
            return
        if not self.summary_confirmed and not self.summary_failed:
            if self.conversation.on_server(self.summary_item_id):
                self.summary_confirmed = True
            else:
                self._summary_given_up()
        for item_id in list(self._outstanding):
            if self.conversation.on_server(item_id):
                self._fail(item_id)
            else:
                self._confirm(item_id)
        self._done = True

    def abandon(self) -> None:
        """The session is gone: nothing more will be confirmed. Sends nothing."""
        self.abandoned = True
        self._done = True
        self.conversation.forget_summary(self.summary_item_id)

    def tracks(self, event_id: str | None) -> bool:
        """Whether a client event with this id was sent by this compaction."""
        return event_id is not None and event_id in self._sent_ids

    # --- internals -----------------------------------------------------------------------

    def _is_summary(self, item_id: str) -> bool:
        item = self.conversation.items.get(item_id)
        return item is not None and item.is_summary

    def _track(self, event: JSON, kind: RequestKind, item_id: str) -> JSON:
        self._requests[event["event_id"]] = (kind, item_id)
        self._sent_ids.add(event["event_id"])
        self._attempts[item_id] = self._attempts.get(item_id, 0) + 1
        return event

    def _create(self) -> JSON:
        assert self.summary is not None
        event = message_create(
            "system",
            summary_item_text(self.summary.text),
            self._dialect,
            previous_item_id="root",
            item_id=self.summary_item_id,
        )
        return self._track(event, "create", self.summary_item_id)

    def _delete(self, item_id: str) -> JSON:
        return self._track(item_delete(item_id), "delete", item_id)

    def _on_error(self, error: pl.ServerError) -> list[JSON]:
        request = self._requests.pop(error.event_id or "", None)
        if request is None:
            return []
        kind, item_id = request
        log.info("compaction_error", request=kind, item_id=item_id, code=error.code)
        if kind == "create":
            if self.summary_confirmed or self.summary_failed:
                return []
            if self._attempts[item_id] <= self.max_retries:
                self.create_retries += 1
                return [self._create()]
            self._summary_given_up()
            return []
        if item_id not in self._outstanding:
            return []
        if _is_item_gone(error) or not self.conversation.on_server(item_id):
            self.conversation.mark_gone(item_id)
            self._confirm(item_id)
        elif self._attempts[item_id] <= self.max_retries:
            self.delete_retries += 1
            return [self._delete(item_id)]
        else:
            self._fail(item_id)
        return []

    def _confirm(self, item_id: str) -> None:
        self._outstanding.remove(item_id)
        self.confirmed_ids.append(item_id)

    def _fail(self, item_id: str) -> None:
        self._outstanding.remove(item_id)
        self.failed_ids.append(item_id)
        log.warning("compaction_delete_failed", item_id=item_id)

    def _summary_given_up(self) -> None:
        """The server never took the summary: keep it locally, so nothing is lost."""
        assert self.summary is not None
        self.summary_failed = True
        self.conversation.forget_summary(self.summary_item_id)
        self.conversation.adopt_summary(self.summary)
        log.warning("compaction_summary_not_created", item_id=self.summary_item_id)

    def _check_done(self) -> None:
        if (self.summary_confirmed or self.summary_failed) and not self._outstanding:
            self._done = True
