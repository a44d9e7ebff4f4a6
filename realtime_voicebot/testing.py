"""Test your instructions and tools against the built-in fake Realtime server.

Everything the project's own tests and `voicebot test --fake-server` use to hold a scripted
conversation with the real bot, no key, no network, no sound card::

    from realtime_voicebot.testing import (
        FakeRealtimeServer, FakeServerConfig, PushInput, RecordingView, Scenario, ToolCall,
        start_bot, test_settings,
    )

    async def test_my_tool(tmp_path):
        scenario = Scenario(replies=[ToolCall("weather", {"city": "Oslo"}), "Cold, as usual."])
        async with FakeRealtimeServer(FakeServerConfig(scenario=scenario, speed=0)) as server:
            settings = test_settings(server, tmp_path)
            running = start_bot(server, settings, text_lines=True, tools=[weather_tool])
            await running.type("What is the weather in Oslo?")
            await running.until(lambda: running.view.assistant)
            assert running.view.assistant[-1][1] == "Cold, as usual."
            await running.stop()

Waits are event-driven: `Running.until` re-checks its condition each time the bot's core
handled something, the bot showed something, or the fake server sent or received an event,
never on a timer. What the speaker played has its own waits on the player
(`AudioPlayer.wait_played`, `wait_finished`, `wait_silenced`). Every timeout is multiplied by
``VOICEBOT_TEST_TIMEOUT_FACTOR`` (default 1; e.g. 3 on a slow or busy machine): the
`Running` waits do it, and `scaled` does it for any other timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realtime_voicebot.app import RunOptions, VoiceBot
from realtime_voicebot.background import ChangeSignal
from realtime_voicebot.config import Settings, load_settings
from realtime_voicebot.fake.config import FakeServerConfig, Faults
from realtime_voicebot.fake.scenario import Scenario, ToolCall
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.tool_display import (
    ApprovalShown,
    ToolCallShown,
    ToolListing,
    ToolResultShown,
)
from realtime_voicebot.tools import Tool
from realtime_voicebot.transport.events import PCM_RATE
from realtime_voicebot.ui import ConversationView

__all__ = [
    "TIMEOUT_FACTOR_ENV",
    "FakeRealtimeServer",
    "FakeServerConfig",
    "FakeSession",
    "Faults",
    "PushInput",
    "RecordingView",
    "Running",
    "Scenario",
    "ToolCall",
    "running_bot",
    "scaled",
    "start_bot",
    "test_settings",
    "timeout_factor",
]

BLOCK_MS = 20


TIMEOUT_FACTOR_ENV = "VOICEBOT_TEST_TIMEOUT_FACTOR"


def timeout_factor() -> float:
    """``VOICEBOT_TEST_TIMEOUT_FACTOR``: how much longer than usual waits may take (>= 1)."""
    try:
        return max(1.0, float(os.environ.get(TIMEOUT_FACTOR_ENV, "1")))
    except ValueError:
        return 1.0


def scaled(seconds: float) -> float:
    """A test timeout of ``seconds`` on this machine: times `timeout_factor`."""
    return seconds * timeout_factor()


class PushInput:
    """An `AudioInput` fed programmatically: pushed samples reach the app in blocks, in order.

    A full queue drops the block and counts it in ``dropped_blocks``.
    """

    sample_rate = PCM_RATE

    def __init__(self, max_blocks: int = 50_000, block_ms: int = BLOCK_MS) -> None:
        self.level_dbfs = -90.0
        self.dropped_blocks = 0
        self.overflows = 0
        self._block_bytes = PCM_RATE * block_ms // 1000 * 2
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=max_blocks)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def push(self, samples: np.ndarray[Any, Any]) -> None:
        pcm = samples.astype("<i2").tobytes()
        for start in range(0, len(pcm), self._block_bytes):
            try:
                self._queue.put_nowait(pcm[start : start + self._block_bytes])
            except asyncio.QueueFull:
                self.dropped_blocks += 1

    def say(self, seconds: float, seed: int = 0, pause_s: float = 0.0) -> None:
        """Speech-like audio, then ``pause_s`` of silence (long enough ends the turn)."""
        self.push(speech_like(seconds, seed=seed))
        if pause_s > 0:
            self.pause(pause_s)

    def pause(self, seconds: float) -> None:
        self.push(silence(seconds))

    async def read(self) -> bytes:
        return await self._queue.get()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            yield await self.read()


@dataclass
class RecordingView(ConversationView):
    """A silent `ConversationView` that keeps everything the bot showed.

    ``changed`` is notified after each call, so a wait wakes on what the bot shows outside
    its core too (a device failure, a notice, the session summary at exit).
    """

    user: list[str] = field(default_factory=list)
    deltas: list[tuple[str, str]] = field(default_factory=list)
    assistant: list[tuple[str, str, bool]] = field(default_factory=list)
    """(item id, text heard, interrupted) of each reply that ended."""
    notices: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    levels: list[float] = field(default_factory=list)
    windows: list[tuple[int, int]] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    compactions: list[tuple[int, int]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    typing: list[str] = field(default_factory=list)
    tool_calls: list[ToolCallShown] = field(default_factory=list)
    tool_results: list[tuple[ToolCallShown, ToolResultShown]] = field(default_factory=list)
    listings: list[ToolListing] = field(default_factory=list)
    approvals: list[ApprovalShown] = field(default_factory=list)
    approval_answers: list[tuple[ApprovalShown, bool, str]] = field(default_factory=list)
    """(request, approved, how) of each answer."""
    closed: bool = False
    changed: ChangeSignal = field(default_factory=ChangeSignal, repr=False, compare=False)

    def _keep(self, into: list[Any], value: Any) -> None:
        into.append(value)
        self.changed.notify()

    def user_said(self, text: str) -> None:
        self._keep(self.user, text)

    def assistant_delta(self, item_id: str, text: str) -> None:
        self._keep(self.deltas, (item_id, text))

    def assistant_done(self, item_id: str, text: str, truncated: bool) -> None:
        self._keep(self.assistant, (item_id, text, truncated))

    def status(self, text: str) -> None:
        self._keep(self.statuses, text)

    def notice(self, text: str) -> None:
        self._keep(self.notices, text)

    def error(self, text: str) -> None:
        self._keep(self.errors, text)

    def level(self, dbfs: float) -> None:
        self._keep(self.levels, dbfs)

    def window(self, tokens: int, threshold: int) -> None:
        self._keep(self.windows, (tokens, threshold))

    def latency(self, name: str, seconds: float) -> None:
        self._keep(self.latencies, (name, seconds))

    def cost(self, usd: float) -> None:
        self._keep(self.costs, usd)

    def compaction(self, items: int, summary_chars: int) -> None:
        self._keep(self.compactions, (items, summary_chars))

    def summary(self, data: dict[str, Any]) -> None:
        self._keep(self.summaries, data)

    def input_line(self, text: str) -> None:
        self.typing.append(text)

    def tool_started(self, call: ToolCallShown) -> None:
        self._keep(self.tool_calls, call)

    def tool_finished(self, call: ToolCallShown, result: ToolResultShown) -> None:
        self._keep(self.tool_results, (call, result))

    def tools_listed(self, listing: ToolListing) -> None:
        self._keep(self.listings, listing)

    def approval_requested(self, request: ApprovalShown) -> None:
        self._keep(self.approvals, request)

    def approval_answered(self, request: ApprovalShown, approved: bool, how: str) -> None:
        self._keep(self.approval_answers, (request, approved, how))

    def close(self) -> None:
        self.closed = True
        self.changed.notify()


def test_settings(server: FakeRealtimeServer, directory: Path, **overrides: Any) -> Settings:
    """Settings that point the bot at ``server``, with its transcript in ``directory``, quick
    reconnects and the offline summarizer. ``overrides`` are settings by name."""
    values: dict[str, Any] = {
        "url": server.url,
        "openai_api_key": "sk-test",
        "transcript_path": str(Path(directory) / "transcript.jsonl"),
        "backoff_initial_s": "0.05",
        "backoff_max_s": "0.2",
        "summarizer": "extractive",
    }
    values.update({k: str(v) for k, v in overrides.items()})
    return load_settings(values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


@dataclass
class Running:
    """A bot running against a fake server, and event-driven waits on both."""

    bot: VoiceBot
    server: FakeRealtimeServer
    task: asyncio.Task[int]
    view: RecordingView
    lines: asyncio.Queue[str | None] | None = None

    async def until(self, predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checked whenever the bot or the server moved.

        Each source has its own waiter, which checks and starts waiting in one step, so no
        change slips in between: the bot's core (after each input it handled), the view
        (whatever the bot showed) and the fake server (every event in or out). Raises
        TimeoutError after ``timeout_s`` (times `timeout_factor`), and RuntimeError when the
        bot stops first.
        """
        if predicate():
            return
        watchers = [
            asyncio.ensure_future(self.bot.changed.until(predicate)),
            asyncio.ensure_future(self.view.changed.until(predicate)),
            asyncio.ensure_future(self.server.wait_for(lambda: bool(predicate()), None)),
        ]
        try:
            async with asyncio.timeout(scaled(timeout_s)):
                await asyncio.wait([*watchers, self.task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        if not predicate():
            raise RuntimeError(f"the bot stopped (exit {self.task.result()})")

    async def session(self, number: int = 1, timeout_s: float = 10.0) -> FakeSession:
        """The ``number``-th session of the server (1-based), once it has begun."""
        return await self.server.wait_for_session(number, scaled(timeout_s))

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait for a condition on the server side only (re-checked on every event)."""
        await self.server.wait_for(predicate, scaled(timeout_s))

    async def type(self, line: str) -> None:
        """Type a line (the bot must have been started with ``text_lines=True``)."""
        assert self.lines is not None, "start_bot(..., text_lines=True) to type"
        await self.lines.put(line)

    async def finish(self, timeout_s: float = 20.0) -> int:
        async with asyncio.timeout(scaled(timeout_s)):
            return await self.task

    async def stop(self) -> int:
        self.bot.stop()
        return await self.finish()


def start_bot(
    server: FakeRealtimeServer,
    settings: Settings,
    options: RunOptions | None = None,
    *,
    text_lines: bool = False,
    tools: list[Tool] | None = None,
    **bot_kwargs: Any,
) -> Running:
    """Start a `VoiceBot` against ``server`` in a task, with a `RecordingView`.

    ``text_lines=True`` gives it a keyboard (`Running.type`), in text mode unless ``options``
    say otherwise; ``tools`` are added to the session's tools.
    """
    lines: asyncio.Queue[str | None] | None = None
    if options is None:
        options = RunOptions(text=text_lines)
    if text_lines:
        lines = asyncio.Queue()
        options.text_lines = lines
    if tools:
        options.extra_tools.extend(tools)
    view = RecordingView()
    bot = VoiceBot(settings, options, view, **bot_kwargs)
    task = asyncio.create_task(bot.run(), name="voicebot")
    return Running(bot, server, task, view, lines)


@contextlib.asynccontextmanager
async def running_bot(
    server: FakeRealtimeServer, settings: Settings, **kwargs: Any
) -> AsyncIterator[Running]:
    """`start_bot` as a context: the bot is stopped on the way out."""
    running = start_bot(server, settings, **kwargs)
    try:
        yield running
    finally:
        if not running.task.done():
            running.bot.stop()
            with contextlib.suppress(Exception):
                await running.finish()
