"""Resident memory growth of the app over many turns, headless.

The real `VoiceBot` in text mode (typed turns, as fast as the fake server answers: speed 0,
spoken replies of about 2 s each whose audio is received and dropped, no speaker), with
compaction on (extractive summarizer, low threshold: one compaction every few dozen turns)
and the JSONL transcript on. The fake server runs in its own process (it keeps every event
for inspection, which would count as our growth). VmRSS of this process is read after a
`gc.collect()` at the end of warm-up and every `STEP` turns after it; the growth is
(RSS at the end - RSS after warm-up), and per 1,000 turns over the turns in between.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import Figure, bench_main
from headless import QuietView, bench_settings, fake_server_process, quiet_logs, rss_mb

from realtime_voicebot.app import RunOptions, VoiceBot

WARMUP_TURNS = 500
STEP = 500


@dataclass
class MemoryRun:
    turns: int
    seconds: float
    warmup_rss_mb: float
    final_rss_mb: float
    series: list[tuple[int, float]] = field(default_factory=list)
    compactions: int = 0
    errors: int = 0

    @property
    def growth_mb(self) -> float:
        return self.final_rss_mb - self.warmup_rss_mb

    @property
    def per_1k_mb(self) -> float:
        return self.growth_mb / max(1, self.turns - WARMUP_TURNS) * 1000


def _sample() -> float:
    gc.collect()
    return rss_mb()


async def run(turns: int) -> MemoryRun:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        async with fake_server_process(speed=0.0) as url:
            settings = bench_settings(
                url,
                Path(tmp),
                summarizer="extractive",
                summary_threshold=3000,
                summary_keep_items=4,
            )
            lines: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)
            view = QuietView()
            bot = VoiceBot(settings, RunOptions(text=True, text_lines=lines), view)
            series: list[tuple[int, float]] = []
            started = time.monotonic()

            async def feed() -> None:
                sent = 0
                next_sample = WARMUP_TURNS
                while True:
                    # A put returns once the bot took the previous line: it is done with the
                    # turn before that one, so `completed_replies` moves in step.
                    await lines.put(f"Box {sent} is blue.")
                    sent += 1
                    done = bot.core.stats.completed_replies
                    if done >= next_sample:
                        series.append((done, _sample()))
                        next_sample += STEP
                    if done >= turns:
                        bot.stop()
                        return

            feeder = asyncio.create_task(feed())
            try:
                async with asyncio.timeout(60 + turns * 0.2):
                    code = await bot.run()
            finally:
                feeder.cancel()
            elapsed = time.monotonic() - started
    if code != 0 or len(series) < 2:
        raise RuntimeError(f"the run failed (exit {code}, errors {view.errors[:3]})")
    return MemoryRun(
        turns=series[-1][0],
        seconds=elapsed,
        warmup_rss_mb=series[0][1],
        final_rss_mb=series[-1][1],
        series=series,
        compactions=bot.core.compactor.stats.compactions,
        errors=len(view.errors),
    )


def figures(quick: bool) -> list[Figure]:
    quiet_logs()
    result = asyncio.run(run(1_000 if quick else 10_000))
    every = max(1, len(result.series) // 5)
    tail = ", ".join(f"{n}: {mb:.1f}" for n, mb in result.series[::every])
    return [
        Figure(
            f"Resident memory growth over {result.turns:,} turns (headless, after "
            f"{WARMUP_TURNS} warm-up)",
            f"{result.growth_mb:+.1f} MB ({result.per_1k_mb:+.2f} MB / 1k turns)",
            target="flat (no growth per turn)",
            note=(
                f"RSS {result.warmup_rss_mb:.1f} -> {result.final_rss_mb:.1f} MB; "
                f"{result.compactions} compactions, {result.errors} errors; "
                f"{result.turns / result.seconds:.0f} turns/s; RSS MB by turn: {tail}"
            ),
        )
    ]


def main() -> None:
    bench_main("Memory over many turns", figures, __doc__)


if __name__ == "__main__":
    main()
