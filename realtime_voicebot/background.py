"""The background work of one run: tasks (tool runs, summaries, watchers) and timers.

Every task is kept until it ends, so none is garbage-collected mid-flight and all are
cancelled at shutdown; a task that fails is logged with its traceback and counted. Tasks and
timers may carry a key: a new timer with the same key replaces the old one, and `cancel`
stops the task or timer of a key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

import structlog

log = structlog.get_logger(component="background")


class Background:
    def __init__(self) -> None:
        self.failures = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keyed: dict[Hashable, asyncio.Task[Any]] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}

    def spawn(
        self, coro: Coroutine[Any, Any, Any], name: str, key: Hashable | None = None
    ) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        if key is not None:
            self._keyed[key] = task
        task.add_done_callback(lambda done: self._finished(done, key))
        return task

    def call_later(self, key: Hashable, seconds: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` after ``seconds`` (replacing the timer of ``key``, if any)."""
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            callback()

        self._timers[key] = asyncio.get_running_loop().call_later(seconds, fire)

    def cancel(self, key: Hashable) -> None:
        """Cancel the task or timer of ``key`` (nothing if there is none)."""
        task = self._keyed.pop(key, None)
        if task is not None:
            task.cancel()
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def aclose(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def snapshot(self) -> dict[str, int]:
        return {"tasks_running": len(self._tasks), "timers": len(self._timers)}

    def _finished(self, task: asyncio.Task[Any], key: Hashable | None) -> None:
        self._tasks.discard(task)
        if key is not None and self._keyed.get(key) is task:
            del self._keyed[key]
        if not task.cancelled() and task.exception() is not None:
            self.failures += 1
            log.error("task_failed", task=task.get_name(), exc_info=task.exception())


class ChangeSignal:
    """Wakes every waiter on `notify` (synchronous, no task); `until` re-checks a condition."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def waiter(self) -> asyncio.Future[None]:
        """A future done at the next `notify`, registered now (a task that calls `wait`
        registers only once it runs, and misses a notify that comes first)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    async def wait(self) -> None:
        await self.waiter()

    async def until(self, predicate: Callable[[], object], timeout_s: float | None = None) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await self.wait()
