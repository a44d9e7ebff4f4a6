"""Function calls during a conversation: which response asked, and when to answer.

A call arrives as a ``function_call`` output item whose JSON arguments stream in through
``response.function_call_arguments.delta`` and are complete at ``.done``. Then `ToolCalls`
asks the shell to run it (`RunTool`); the shell reports the result with `finished`. Outputs
are held until the response that asked is done and every one of its calls is answered; then
they go back as ``function_call_output`` items, in call order, and the core asks for one
reply about them all.

A response that ends other than ``completed`` (``cancelled`` by a barge-in, ``failed``,
``incomplete``) gets no outputs and no reply: its calls are dropped and their runs cancelled.
The user is speaking again and the server will answer that instead; a late
``response.create`` would collide with it. Calls of a session that ended are dropped the
same way: the new session does not know their ``call_id``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from realtime_voicebot.core.actions import (
    Action,
    CancelTool,
    RunTool,
    Send,
    ToolCallFinished,
    ToolCallStarted,
)
from realtime_voicebot.tools.runner import ToolResult, error_output
from realtime_voicebot.transport import payloads as pl
from realtime_voicebot.transport.events import ServerEvent, ServerEventType, function_output_create

log = structlog.get_logger(component="tool_calls")

MAX_OPEN_RESPONSES = 32
"""Responses with calls not answered yet; beyond this the oldest are dropped (counted)."""
MAX_ARGUMENT_CHARS = 1 << 20


def error_message(output: str) -> str:
    """The message of an error output (``{"error": "..."}``), else the output itself."""
    try:
        value = json.loads(output)
    except (ValueError, RecursionError):
        return output
    message = value.get("error") if isinstance(value, dict) else None
    return message if isinstance(message, str) else output


@dataclass
class ToolCallStats:
    calls: int = 0
    """Calls whose arguments were complete (each gets an output unless dropped)."""
    errors: int = 0
    """Calls answered with an error: unknown tool, bad arguments, failure, timeout."""
    timeouts: int = 0
    dropped: int = 0
    """Calls of responses that did not complete (or of a session that ended), never answered."""
    outputs_sent: int = 0
    replies_requested: int = 0


@dataclass
class _Call:
    call_id: str
    name: str | None = None
    deltas: list[str] = field(default_factory=list)
    started: bool = False
    result: ToolResult | None = None


@dataclass
class _Batch:
    """The calls of one response and the status it ended with."""

    calls: dict[str, _Call] = field(default_factory=dict)
    status: str | None = None


class ToolCalls:
    """Bookkeeping of the model's function calls; see the module docstring."""

    def __init__(self) -> None:
        self.stats = ToolCallStats()
        self._batches: dict[str, _Batch] = {}
        self._calls: dict[str, tuple[str, _Call]] = {}

    @property
    def pending(self) -> int:
        """Calls seen and not yet answered or dropped."""
        return len(self._calls)

    def snapshot(self) -> dict[str, Any]:
        return {**asdict(self.stats), "pending": self.pending}

    # --- inputs --------------------------------------------------------------------------

    def on_event(self, event: ServerEvent) -> tuple[list[Action], bool]:
        """Actions for one server event, and whether a reply about tool outputs is due."""
        payload = event.payload
        kind = event.type
        if isinstance(payload, pl.ItemEvent) and kind in (
            ServerEventType.OUTPUT_ITEM_ADDED,
            ServerEventType.OUTPUT_ITEM_DONE,
        ):
            item = payload.item
            if item.type != "function_call":
                return [], False
            call = self._call(payload.response_id, item.call_id, item.name)
            # A completed item whose .done event never came still carries its arguments.
            if (
                call is not None
                and kind is ServerEventType.OUTPUT_ITEM_DONE
                and item.status == "completed"
                and item.arguments is not None
            ):
                return self._start(call, item.arguments), False
        elif isinstance(payload, pl.Delta) and kind is ServerEventType.FUNCTION_ARGUMENTS_DELTA:
            call = self._call(payload.response_id, payload.call_id, None)
            if call is not None and sum(map(len, call.deltas)) < MAX_ARGUMENT_CHARS:
                call.deltas.append(payload.delta)
        elif isinstance(payload, pl.Done) and kind is ServerEventType.FUNCTION_ARGUMENTS_DONE:
            call = self._call(payload.response_id, payload.call_id, payload.name)
            if call is not None:
                arguments = payload.text if payload.text is not None else "".join(call.deltas)
                return self._start(call, arguments), False
        elif isinstance(payload, pl.ResponseDone) and payload.response_id in self._batches:
            response_id = payload.response_id
            self._batches[response_id].status = payload.status
            return self._answer(response_id)
        return [], False

    def finished(self, call_id: str, result: ToolResult) -> tuple[list[Action], bool]:
        """A call's run ended: hold its output until its response is done."""
        entry = self._calls.get(call_id)
        if entry is None or entry[1].result is not None:
            return [], False  # dropped meanwhile
        response_id, call = entry
        call.result = result
        self.stats.errors += not result.ok
        self.stats.timeouts += result.outcome == "timeout"
        finished = ToolCallFinished(
            call_id,
            call.name,
            result.outcome,
            len(result.output),
            result.duration_s,
            None if result.ok else error_message(result.output),
        )
        actions, reply = self._answer(response_id)
        return [finished, *actions], reply

    def drop_all(self) -> list[Action]:
        """A new session: forget every call of the old one, cancelling their runs."""
        actions: list[Action] = []
        for response_id in list(self._batches):
            actions += self._drop(response_id, "new session")
        return actions

    # --- internals -----------------------------------------------------------------------

    def _call(self, response_id: str | None, call_id: str | None, name: str | None) -> _Call | None:
        if not call_id:
            log.warning("tool_call_without_id", response_id=response_id)
            return None
        entry = self._calls.get(call_id)
        if entry is None:
            rid = response_id or ""
            batch = self._batches.get(rid)
            if batch is None:
                batch = self._batches[rid] = _Batch()
                while len(self._batches) > MAX_OPEN_RESPONSES:
                    self._drop(next(iter(self._batches)), "too many open responses")
            entry = (rid, _Call(call_id))
            batch.calls[call_id] = entry[1]
            self._calls[call_id] = entry
        call = entry[1]
        if call.name is None and name:
            call.name = name
        return call

    def _start(self, call: _Call, arguments: str) -> list[Action]:
        if call.started:
            return []
        call.started = True
        self.stats.calls += 1
        return [
            ToolCallStarted(call.call_id, call.name, arguments),
            RunTool(call.call_id, call.name, arguments),
        ]

    def _answer(self, response_id: str) -> tuple[list[Action], bool]:
        """Send the outputs of a completed response once every call has one."""
        batch = self._batches.get(response_id)
        if batch is None or batch.status is None:
            return [], False
        if batch.status != "completed":
            return self._drop(response_id, batch.status), False
        if any(c.started and c.result is None for c in batch.calls.values()):
            return [], False
        actions: list[Action] = []
        for call in batch.calls.values():
            if call.result is None:
                # Listed in a completed response, yet its arguments never completed.
                self.stats.calls += 1
                self.stats.errors += 1
                output = error_output(f"the arguments of call {call.call_id} never completed")
            else:
                output = call.result.output
            actions.append(Send(function_output_create(call.call_id, output)))
            self.stats.outputs_sent += 1
        self._forget(response_id)
        self.stats.replies_requested += 1
        return actions, True

    def _drop(self, response_id: str, reason: str) -> list[Action]:
        batch = self._batches.get(response_id)
        if batch is None:
            return []
        actions: list[Action] = [
            CancelTool(c.call_id) for c in batch.calls.values() if c.started and c.result is None
        ]
        self.stats.dropped += len(batch.calls)
        log.info(
            "tool_calls_dropped", response_id=response_id, reason=reason, calls=len(batch.calls)
        )
        self._forget(response_id)
        return actions

    def _forget(self, response_id: str) -> None:
        batch = self._batches.pop(response_id)
        for call_id in batch.calls:
            self._calls.pop(call_id, None)
