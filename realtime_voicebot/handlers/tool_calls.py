"""Function calls during a conversation: which response asked, and when to answer.

A call arrives as a ``function_call`` output item whose JSON arguments stream in through
``response.function_call_arguments.delta`` and are complete at ``.done``. The tool then runs
as its own task (`ToolRunner`: timeout, every failure an error output). Its output goes back
as a ``function_call_output`` item with the same ``call_id``; nothing is ever raised into the
receive loop. Once the response that asked is done and every one of its calls is answered,
one ``response.create`` lets the model speak about the results.

Outputs are held until ``response.done`` so that a response which did not complete
(``cancelled`` by a barge-in, ``failed``, ``incomplete``) gets no outputs and no
``response.create``: its calls are dropped, their tasks cancelled. The user is speaking again
and the server will answer that instead; a late ``response.create`` would collide with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from realtime_voicebot.tools.registry import ToolRegistry
from realtime_voicebot.tools.runner import ToolRunner, error_output
from realtime_voicebot.transport.events import (
    JSON,
    ServerEvent,
    ServerEventType,
    function_output_create,
    response_create,
)

Send = Callable[[JSON], Awaitable[None]]
log = structlog.get_logger(component="tools")


@dataclass
class ToolCallStats:
    """Counters of one handler."""

    calls: int = 0
    """Calls whose arguments were complete (each gets an output unless dropped)."""
    errors: int = 0
    """Calls answered with an error: unknown tool, bad arguments, failure, timeout."""
    timeouts: int = 0
    dropped: int = 0
    """Calls of responses that did not complete, never answered."""
    outputs_sent: int = 0
    responses_created: int = 0


@dataclass
class _Call:
    call_id: str
    response_id: str
    name: str | None = None
    deltas: list[str] = field(default_factory=list)
    task: asyncio.Task[str] | None = None


@dataclass
class _Batch:
    """The calls of one response and the status it ended with."""

    response_id: str
    done: asyncio.Future[str]
    calls: dict[str, _Call] = field(default_factory=dict)
    finisher: asyncio.Task[None] | None = None


class ToolCallHandler:
    """Runs the model's function calls and answers them; fed every `ServerEvent` via `on_event`.

    ``on_event`` never blocks: it records and schedules tasks. All calls of one response are
    answered before one ``response.create``, sent after that response's ``response.done``.
    A response that ends other than ``completed`` gets no answers (see the module docstring).
    """

    def __init__(self, registry: ToolRegistry, send: Send, timeout_s: float = 10.0) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.registry = registry
        self.timeout_s = timeout_s
        self.runner = ToolRunner(registry, timeout_s)
        self.stats = ToolCallStats()
        self._send = send
        self._batches: dict[str, _Batch] = {}
        self._calls: dict[str, _Call] = {}
        self._closed = False

    @property
    def pending(self) -> int:
        """Calls seen and not yet answered or dropped."""
        return len(self._calls)

    def on_event(self, event: ServerEvent) -> None:
        if self._closed:
            return
        kind = event.type
        if kind in (ServerEventType.OUTPUT_ITEM_ADDED, ServerEventType.OUTPUT_ITEM_DONE):
            item = event.get("item")
            if not isinstance(item, dict) or item.get("type") != "function_call":
                return
            call = self._call(event.response_id, item.get("call_id"), item.get("name"))
            arguments = item.get("arguments")
            # A completed item whose .done event never came still carries its arguments.
            if (
                call is not None
                and kind is ServerEventType.OUTPUT_ITEM_DONE
                and item.get("status") == "completed"
                and isinstance(arguments, str)
            ):
                self._start(call, arguments)
        elif kind is ServerEventType.FUNCTION_ARGUMENTS_DELTA:
            call = self._call(event.response_id, event.get("call_id"), event.get("name"))
            delta = event.get("delta")
            if call is not None and isinstance(delta, str):
                call.deltas.append(delta)
        elif kind is ServerEventType.FUNCTION_ARGUMENTS_DONE:
            call = self._call(event.response_id, event.get("call_id"), event.get("name"))
            if call is not None:
                arguments = event.get("arguments")
                self._start(call, arguments if isinstance(arguments, str) else "".join(call.deltas))
        elif kind is ServerEventType.RESPONSE_DONE:
            batch = self._batches.get(event.response_id or "")
            response = event.get("response")
            status = response.get("status") if isinstance(response, dict) else None
            if batch is not None and not batch.done.done():
                batch.done.set_result(status if isinstance(status, str) else "completed")

    def _call(self, response_id: str | None, call_id: Any, name: Any) -> _Call | None:
        if not isinstance(call_id, str) or not call_id:
            log.warning("tool_call_without_id", response_id=response_id)
            return None
        call = self._calls.get(call_id)
        if call is None:
            rid = response_id or ""
            batch = self._batches.get(rid)
            if batch is None:
                loop = asyncio.get_running_loop()
                batch = _Batch(rid, loop.create_future())
                batch.finisher = loop.create_task(self._finish(batch), name=f"tools:{rid}")
                self._batches[rid] = batch
            call = _Call(call_id, rid)
            batch.calls[call_id] = call
            self._calls[call_id] = call
        if call.name is None and isinstance(name, str) and name:
            call.name = name
        return call

    def _start(self, call: _Call, arguments: str) -> None:
        if call.task is not None:
            return
        self.stats.calls += 1
        call.task = asyncio.get_running_loop().create_task(
            self._run(call.name, arguments, call.call_id), name=f"tool:{call.name}:{call.call_id}"
        )

    async def _run(self, name: str | None, arguments: str, call_id: str) -> str:
        result = await self.runner.run(name, arguments, call_id)
        self.stats.errors += not result.ok
        self.stats.timeouts += result.outcome == "timeout"
        return result.output

    async def _finish(self, batch: _Batch) -> None:
        """Wait for the response to end, then answer all its calls and ask for one reply."""
        try:
            status = await batch.done
            calls = list(batch.calls.values())
            tasks = [c.task for c in calls if c.task is not None]
            if status != "completed":
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self.stats.dropped += len(calls)
                log.info(
                    "tool_calls_dropped",
                    response_id=batch.response_id,
                    status=status,
                    calls=len(calls),
                )
                return
            for call in calls:
                if call.task is None:
                    # Listed in a completed response, yet its arguments never completed.
                    self.stats.calls += 1
                    self.stats.errors += 1
                    output = error_output(f"the arguments of call {call.call_id} never completed")
                else:
                    output = await call.task
                await self._send(function_output_create(call.call_id, output))
                self.stats.outputs_sent += 1
            await self._send(response_create())
            self.stats.responses_created += 1
        except asyncio.CancelledError:
            for call in batch.calls.values():
                if call.task is not None:
                    call.task.cancel()
            raise
        except Exception:
            log.exception("tool_outputs_not_sent", response_id=batch.response_id)
        finally:
            if self._batches.get(batch.response_id) is batch:
                del self._batches[batch.response_id]
            for call_id, call in batch.calls.items():
                if self._calls.get(call_id) is call:
                    del self._calls[call_id]

    async def join(self) -> None:
        """Wait until every response seen so far is answered or dropped."""
        finishers = [b.finisher for b in self._batches.values() if b.finisher is not None]
        await asyncio.gather(*finishers, return_exceptions=True)

    def reset(self) -> int:
        """A new session: forget every call of the old one; returns how many were dropped.

        The dead session will never send their ``response.done``, and the new one does not
        know their ``call_id``: their tools are cancelled and nothing is sent for them.
        Later events are handled as usual (unlike `aclose`).
        """
        dropped = len(self._calls)
        for batch in list(self._batches.values()):
            for call in batch.calls.values():
                if call.task is not None:
                    call.task.cancel()
            if batch.finisher is not None:
                batch.finisher.cancel()
        self._batches.clear()
        self._calls.clear()
        if dropped:
            self.stats.dropped += dropped
            log.info("tool_calls_dropped_on_new_session", calls=dropped)
        return dropped

    async def aclose(self) -> None:
        """Cancel running tools and pending answers; later events are ignored."""
        self._closed = True
        tasks: list[asyncio.Task[Any]] = []
        for batch in list(self._batches.values()):
            if batch.finisher is not None:
                tasks.append(batch.finisher)
            tasks += [c.task for c in batch.calls.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._batches.clear()
        self._calls.clear()
