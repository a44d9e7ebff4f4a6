"""What the user gives the bot besides the microphone: typed lines from stdin."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading

TYPED_LINES_LIMIT = 256


def stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdin
        return False


def stdin_lines() -> asyncio.Queue[str | None]:
    """Lines typed on stdin (None at its end), read by a daemon thread.

    A blocked read never holds up exit. While the queue is full the thread waits: typed lines
    are delayed, never dropped.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue(TYPED_LINES_LIMIT)

    def put(line: str | None) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(line), loop).result()

    def read() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the run is over
            for line in sys.stdin:  # one line as soon as it is typed, not at end of input
                put(line)
            put(None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return queue
