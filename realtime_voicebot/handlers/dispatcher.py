"""Routes each server event to the handlers registered for its type.

Handlers are plain synchronous callables: they update state and enqueue work, and never
block. Anything slow (summaries, tools, file writes) runs as a background task started with
`BackgroundTasks.spawn`. A handler that raises is logged with the event type; the receive
loop goes on.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from realtime_voicebot.transport.events import ServerEvent, ServerEventType

Handler = Callable[[ServerEvent], None]
log = structlog.get_logger(component="dispatcher")


class Dispatcher:
    """Event type to handlers; `ANY` handlers see every event first."""

    def __init__(self) -> None:
        self._handlers: dict[ServerEventType | None, list[Handler]] = defaultdict(list)
        self.handler_errors = 0
        self.dispatched = 0

    def on(self, *event_types: ServerEventType) -> Callable[[Handler], Handler]:
        """Decorator: register a handler for one or more event types."""

        def register(handler: Handler) -> Handler:
            for event_type in event_types:
                self._handlers[event_type].append(handler)
            return handler

        return register

    def add(self, handler: Handler, *event_types: ServerEventType) -> None:
        """Register a handler for the given types, or for every event when none are given."""
        for event_type in event_types or (None,):
            self._handlers[event_type].append(handler)

    def dispatch(self, event: ServerEvent) -> None:
        self.dispatched += 1
        for handler in (*self._handlers.get(None, ()), *self._handlers.get(event.type, ())):
            try:
                handler(event)
            except Exception:
                self.handler_errors += 1
                log.exception(
                    "handler_failed",
                    event_type=event.type.value,
                    handler=getattr(handler, "__qualname__", repr(handler)),
                    item_id=event.item_id,
                )


class BackgroundTasks:
    """Tasks started by handlers: kept referenced, failures logged, cancelled together."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failures = 0

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures += 1
            log.error("task_failed", task=task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
