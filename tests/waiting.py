"""Waiting on conditions that no event signals (state inside the app, tool calls)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

POLL_S = 0.005


async def eventually(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Wait until ``predicate()`` is truthy; TimeoutError after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - a condition of plain objects, no event to wait on
            await asyncio.sleep(POLL_S)
