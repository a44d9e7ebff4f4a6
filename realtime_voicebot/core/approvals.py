"""Hosted MCP tools (GA): the calls the service makes itself, shown, and their approvals.

A session tool ``{"type": "mcp", ...}`` makes the service list an MCP server's tools and call
them; the bot runs nothing. `HostedMcp` turns the service's events into what the user sees:

- a listing (``conversation.item.done`` of an ``mcp_list_tools`` item, or
  ``mcp_list_tools.failed``) becomes `HostedToolsListed`;
- a call (``response.mcp_call_arguments.done`` / ``.in_progress``, then the ``mcp_call`` item
  done with its output or error) becomes `HostedCallStarted` and `HostedCallFinished`;
- an ``mcp_approval_request`` item becomes `ApprovalRequested` and a timer. The user answers
  with a typed line (``y``/``yes`` or ``n``/``no``; the oldest request first), which goes back
  as an ``mcp_approval_response`` item. No answer within ``approval_timeout_s`` is a refusal.
  No ``response.create`` follows: the service goes on by itself (runs the call and speaks,
  or says it could not). A session that ends drops its requests: the next one does not
  know them.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from realtime_voicebot.core.actions import (
    Action,
    ApprovalAnswered,
    ApprovalRequested,
    HostedCallFinished,
    HostedCallStarted,
    HostedToolsListed,
    Send,
    StartTimer,
)
from realtime_voicebot.transport import payloads as pl
from realtime_voicebot.transport.events import (
    ItemType,
    ServerEvent,
    ServerEventType,
    mcp_approval_response_create,
)

log = structlog.get_logger(component="approvals")

_S = ServerEventType
APPROVE_WORDS = frozenset({"y", "yes"})
REFUSE_WORDS = frozenset({"n", "no"})
ITEMS_KEPT = 256
"""Hosted MCP items remembered (for their label and name); older ones are forgotten."""
TIMER = "mcp_approval"
_MCP_TYPES = frozenset({ItemType.MCP_LIST_TOOLS, ItemType.MCP_CALL, ItemType.MCP_APPROVAL_REQUEST})
_DONE_EVENTS = frozenset({_S.ITEM_DONE, _S.OUTPUT_ITEM_DONE})


def answer_word(text: str) -> bool | None:
    """True for yes, False for no, None for any other line."""
    word = text.strip().lower().rstrip(".!")
    if word in APPROVE_WORDS:
        return True
    if word in REFUSE_WORDS:
        return False
    return None


@dataclass
class _Item:
    """A hosted MCP item as far as the events told."""

    type: str
    server_label: str = "?"
    name: str = "?"
    arguments: str = ""
    started: bool = False
    finished: bool = False


@dataclass(frozen=True)
class Pending:
    request_id: str
    server_label: str
    name: str
    arguments: str


@dataclass
class HostedMcpStats:
    servers_listed: int = 0
    list_failures: int = 0
    calls: int = 0
    call_errors: int = 0
    approvals_requested: int = 0
    approved: int = 0
    refused: int = 0
    """Refused by the user."""
    timed_out: int = 0
    """Refused for want of an answer within the bound."""
    dropped: int = 0
    """Requests of a session that ended before they were answered."""


class HostedMcp:
    """See the module docstring."""

    def __init__(self, approval_timeout_s: float = 30.0) -> None:
        if approval_timeout_s <= 0:
            raise ValueError("approval_timeout_s must be positive")
        self.approval_timeout_s = approval_timeout_s
        self.stats = HostedMcpStats()
        self.pending: dict[str, Pending] = {}
        """Approval requests waiting for the user, oldest first."""
        self._items: dict[str, _Item] = {}
        self._answered: dict[str, None] = {}

    def snapshot(self) -> dict[str, Any]:
        return {**asdict(self.stats), "approvals_pending": len(self.pending)}

    # --- inputs --------------------------------------------------------------------------

    def on_event(self, event: ServerEvent) -> list[Action]:
        payload = event.payload
        kind = event.type
        if isinstance(payload, pl.ItemEvent) and payload.item.type in _MCP_TYPES:
            return self._on_item(kind, payload.item)
        if isinstance(payload, pl.ItemRef) and kind is _S.MCP_LIST_TOOLS_FAILED:
            item = self._items.get(payload.item_id)
            if item is not None and not item.finished:
                item.finished = True
                return self._listed(item.server_label, (), ok=False)
        elif isinstance(payload, pl.Done) and kind is _S.MCP_CALL_ARGUMENTS_DONE:
            item = self._item(payload.item_id or "", ItemType.MCP_CALL)
            if item is not None:
                item.arguments = payload.text if payload.text is not None else item.arguments
                return self._call_started(payload.item_id or "", item)
        elif isinstance(payload, pl.ItemRef) and kind is _S.MCP_CALL_IN_PROGRESS:
            item = self._item(payload.item_id, ItemType.MCP_CALL)
            if item is not None:
                return self._call_started(payload.item_id, item)
        elif isinstance(payload, pl.ResponseDone):
            # A call whose item.done never came: its final state is in the response.
            actions: list[Action] = []
            for output in payload.output:
                if output.type == ItemType.MCP_CALL:
                    actions += self._on_item(_S.OUTPUT_ITEM_DONE, output)
            return actions
        return []

    def typed_line(self, text: str) -> list[Action] | None:
        """The answer to the oldest pending request when the line is yes or no; None when
        nothing is pending or the line is anything else (then it is a normal typed line)."""
        if not self.pending:
            return None
        approve = answer_word(text)
        if approve is None:
            return None
        return self._answer(next(iter(self.pending)), approve, "user")

    def timer_fired(self, key: Hashable) -> list[Action]:
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == TIMER):
            return []
        request_id = key[1]
        if request_id not in self.pending:
            return []  # answered meanwhile
        return self._answer(request_id, False, "timeout")

    def session_started(self) -> list[Action]:
        """A new, blank session: requests of the old one can no longer be answered."""
        actions: list[Action] = []
        for request in self.pending.values():
            self.stats.dropped += 1
            actions.append(
                ApprovalAnswered(
                    request.request_id, request.server_label, request.name, False, "session ended"
                )
            )
        self.pending.clear()
        self._items.clear()
        return actions

    # --- internals -----------------------------------------------------------------------

    def _item(self, item_id: str, item_type: str) -> _Item | None:
        item = self._items.get(item_id)
        if item is None and item_id:
            item = self._items[item_id] = _Item(item_type)
            while len(self._items) > ITEMS_KEPT:
                del self._items[next(iter(self._items))]
        return item

    def _on_item(self, kind: ServerEventType, data: pl.ItemData) -> list[Action]:
        item = self._item(data.id, data.type)
        if item is None:
            return []
        item.server_label = data.server_label or item.server_label
        item.name = data.name or item.name
        if data.arguments:
            item.arguments = data.arguments
        if kind not in _DONE_EVENTS or item.finished:
            return []
        if data.type == ItemType.MCP_LIST_TOOLS:
            if data.status == "in_progress":
                return []
            item.finished = True
            ok = data.status in (None, "completed") or bool(data.tool_names)
            return self._listed(item.server_label, data.tool_names, ok=ok)
        if data.type == ItemType.MCP_CALL:
            if data.status == "in_progress":
                return []
            item.finished = True
            actions = self._call_started(data.id, item)
            ok = data.error is None
            self.stats.call_errors += not ok
            log.info("hosted_mcp_call", server=item.server_label, tool=item.name, ok=ok)
            output = data.output or ""
            finished = HostedCallFinished(
                data.id, item.server_label, item.name, ok, len(output), data.error
            )
            return [*actions, finished]
        return self._request(data.id, item)

    def _listed(self, label: str, tools: tuple[str, ...], *, ok: bool) -> list[Action]:
        if ok:
            self.stats.servers_listed += 1
        else:
            self.stats.list_failures += 1
            log.warning("hosted_mcp_list_failed", server=label)
        return [HostedToolsListed(label, tools, ok)]

    def _call_started(self, item_id: str, item: _Item) -> list[Action]:
        if item.started:
            return []
        item.started = True
        self.stats.calls += 1
        return [HostedCallStarted(item_id, item.server_label, item.name, item.arguments)]

    def _request(self, request_id: str, item: _Item) -> list[Action]:
        item.finished = True
        if request_id in self.pending or request_id in self._answered:
            return []
        self.pending[request_id] = Pending(request_id, item.server_label, item.name, item.arguments)
        self.stats.approvals_requested += 1
        log.info("mcp_approval_requested", server=item.server_label, tool=item.name)
        return [
            ApprovalRequested(
                request_id, item.server_label, item.name, item.arguments, self.approval_timeout_s
            ),
            StartTimer((TIMER, request_id), self.approval_timeout_s),
        ]

    def _answer(self, request_id: str, approve: bool, how: str) -> list[Action]:
        request = self.pending.pop(request_id)
        self._answered[request_id] = None
        while len(self._answered) > ITEMS_KEPT:
            del self._answered[next(iter(self._answered))]
        if approve:
            self.stats.approved += 1
        elif how == "timeout":
            self.stats.timed_out += 1
        else:
            self.stats.refused += 1
        reason = None
        if how == "timeout":
            reason = f"no answer from the user within {self.approval_timeout_s:g} s"
        log.info("mcp_approval_answered", server=request.server_label, approve=approve, how=how)
        return [
            Send(mcp_approval_response_create(request_id, approve, reason=reason)),
            ApprovalAnswered(request_id, request.server_label, request.name, approve, how),
        ]
