"""Running the real app headless for benchmarks: no sound card, no terminal, no tests/ imports.

- `PacedInput`: an AudioInput that streams 20 ms blocks at real time, silence between the
  utterances queued with `say`, like a microphone that is always open.
- `CountingPlayer`: an AudioPlayer pulled at real time into nothing (a speaker that counts).
- `QuietView`: a ConversationView that shows nothing and stamps each compaction.
- `LagProbe`: the event loop's lag, sampled by a task sleeping 10 ms at a time.
- `fake_server_process`: `voicebot fake-server` in its own process, so its cost is not the app's.
- `bench_settings`: Settings for the app against a given server URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realtime_voicebot.audio.output import AudioPlayer
from realtime_voicebot.config import Settings, load_settings
from realtime_voicebot.fake.synth import speech_like
from realtime_voicebot.transport.events import PCM_RATE

BLOCK_SAMPLES = PCM_RATE // 50  # 20 ms
BLOCK_S = BLOCK_SAMPLES / PCM_RATE


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[min(rank, len(ordered) - 1)]


def rss_mb() -> float:
    """This process's resident set size now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


class PacedInput:
    """A microphone that is always open: 20 ms blocks at real time, speech when `say` queued it."""

    sample_rate = PCM_RATE

    def __init__(self) -> None:
        self.level_dbfs = -90.0
        self.dropped_blocks = 0
        self.overflows = 0
        self.blocks_sent = 0
        self._pending: deque[bytes] = deque()
        self._silence = bytes(BLOCK_SAMPLES * 2)
        self._started: float | None = None

    async def start(self) -> None:
        return

    async def stop(self) -> None:
        return

    def say(self, seconds: float, seed: int = 0) -> None:
        """Queue an utterance; it streams after what is already queued."""
        pcm = speech_like(seconds, seed=seed).astype("<i2").tobytes()
        step = BLOCK_SAMPLES * 2
        for start in range(0, len(pcm), step):
            self._pending.append(pcm[start : start + step].ljust(step, b"\0"))

    @property
    def speaking(self) -> bool:
        return bool(self._pending)

    async def read(self) -> bytes:
        loop = asyncio.get_running_loop()
        if self._started is None:
            self._started = loop.time()
        self.blocks_sent += 1
        # Absolute deadlines: a late wake-up shortens the next wait, so there is no drift.
        await asyncio.sleep(max(0.0, self._started + self.blocks_sent * BLOCK_S - loop.time()))
        return self._pending.popleft() if self._pending else self._silence

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            yield await self.read()


class CountingPlayer(AudioPlayer):
    """A speaker that plays into nothing: pulls 20 ms blocks at real time and counts them."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.samples_played = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await super().start()
        self._task = asyncio.create_task(self._run(), name="counting-player")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        block = np.zeros(BLOCK_SAMPLES, dtype=np.int16)
        started = loop.time()
        blocks = 0
        while True:
            self.samples_played += self.pull_into(block)
            blocks += 1
            await asyncio.sleep(max(0.0, started + blocks * BLOCK_S - loop.time()))


@dataclass
class QuietView:
    """A ConversationView that shows nothing; it stamps compactions and keeps errors.

    Methods the view protocol gains later are no-ops here too (`__getattr__`).
    """

    compactions_at: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def compaction(self, items: int, summary_chars: int) -> None:
        self.compactions_at.append(time.monotonic())

    def notice(self, text: str) -> None:
        return

    def error(self, text: str) -> None:
        self.errors.append(text)

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):
            raise AttributeError(name)
        return _ignore


def _ignore(*args: Any, **kwargs: Any) -> None:
    return


class LagProbe:
    """Event-loop lag: how late a 10 ms sleep wakes up, stamped with `time.monotonic()`."""

    def __init__(self, period_s: float = 0.010) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> LagProbe:
        self._task = asyncio.create_task(self._run(), name="lag-probe")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            expected = time.monotonic() + self.period_s
            await asyncio.sleep(self.period_s)
            now = time.monotonic()
            self.samples.append((now, max(0.0, now - expected)))

    def lags(self, start: float = 0.0, end: float = math.inf) -> list[float]:
        """The lags of the wake-ups between `start` and `end` (monotonic seconds)."""
        return [lag for at, lag in self.samples if start <= at <= end]


def bench_settings(url: str, tmp: Path, **overrides: Any) -> Settings:
    """Settings for the app against the server at `url`, its transcript under `tmp`."""
    values: dict[str, Any] = {
        "url": url,
        "openai_api_key": "sk-bench",
        "transcript_path": str(tmp / "transcript.jsonl"),
        "log_level": "WARNING",
    }
    values.update({k: str(v) for k, v in overrides.items()})
    return load_settings(values)


def quiet_logs() -> None:
    """Warnings and errors only, on stderr: a benchmark prints its figures on stdout."""
    from realtime_voicebot.logging import configure_logging

    configure_logging("WARNING", "console")


@contextlib.asynccontextmanager
async def fake_server_process(speed: float, session_max_s: float = 3600.0) -> AsyncIterator[str]:
    """`voicebot fake-server` in a child process; yields its base URL, stops it on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "realtime_voicebot",
        "fake-server",
        "--port",
        "0",
        "--speed",
        str(speed),
        "--session-max-s",
        str(session_max_s),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    drain: asyncio.Task[bytes] | None = None
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.search(r"(ws://[\d.]+:\d+/v1)", line)
        if match is None:
            raise RuntimeError(f"the fake server did not start: {line!r}")
        drain = asyncio.create_task(process.stdout.read())  # never let its pipe fill up
        yield match.group(1)
    finally:
        if process.returncode is None:
            process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
        if process.returncode is None:
            process.kill()
            await process.wait()
        if drain is not None:
            drain.cancel()
