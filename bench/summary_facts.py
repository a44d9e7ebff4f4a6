"""The extractive summarizer: facts kept through chained compactions, and what it costs.

- Facts: the planted conversation of `tests/planted_facts.py` (12 one-fact user turns,
  assistant replies, filler turns) summarized through 10 and through 24 compactions, each
  from the previous summary and the new turns, as the compaction runner chains them; how
  many of the 12 facts the last summary holds, its size against the budget, and how many
  filler sentences it kept.
- Cost: `summarize_now` on a large input (the planted conversation repeated, several
  hundred kilobytes of transcript in one compaction) and on one the size of a compaction at
  the default 20,000-token threshold, all text (80,000 characters); median of a few runs.
- Event loop: the lag of a 10 ms probe while `summarize` (a worker thread) works on the
  large input, next to the stall the same work would cause called on the loop.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Figure, bench_main, median
from headless import LagProbe

from realtime_voicebot.summarization.base import SummaryInput, format_turns
from realtime_voicebot.summarization.extractive import DEFAULT_MAX_CHARS, ExtractiveSummarizer
from tests.planted_facts import FACTS, batches, facts_held, filler_sentences, planted_items

DEFAULT_THRESHOLD_CHARS = 20_000 * 4
"""A compaction at the default threshold, all text at 4 characters a token."""


def chained(summarizer: ExtractiveSummarizer, rounds: int) -> str:
    summary: str | None = None
    for turns in batches(planted_items(), rounds):
        summary = summarizer.summarize_now(turns, summary)
    return summary or ""


def fact_figures() -> list[Figure]:
    summarizer = ExtractiveSummarizer()
    figures = []
    for rounds in (10, 24):
        last = chained(summarizer, rounds)
        filler = [s for s in filler_sentences() if s in last]
        figures.append(
            Figure(
                f"planted facts in the last of {rounds} chained extractive summaries",
                f"{len(facts_held(last))}/{len(FACTS)}",
                target=f">= 11/{len(FACTS)}",
                note=f"{len(last)} of {DEFAULT_MAX_CHARS} chars; {len(filler)} filler "
                f"sentences kept; input {len(format_turns(planted_items()))} chars",
            )
        )
    return figures


def sized(chars: int) -> list[SummaryInput]:
    items: list[SummaryInput] = []
    total = 0
    while total < chars:
        for item in planted_items():
            items.append(item)
            total += len(item.text)
    return items


def timed(summarizer: ExtractiveSummarizer, items: Sequence[SummaryInput], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        summarizer.summarize_now(items, None)
        times.append(time.perf_counter() - started)
    return median(times)


async def loop_lag(summarizer: ExtractiveSummarizer, items: Sequence[SummaryInput]) -> float:
    """The worst lag of a 10 ms probe while `summarize` runs (in its worker thread)."""
    probe = LagProbe().start()
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await summarizer.summarize(items, None, "auto")
    ended = time.monotonic()
    await asyncio.sleep(0.03)
    await probe.stop()
    return max(probe.lags(started, ended + 0.02), default=0.0)


def cost_figures(quick: bool) -> list[Figure]:
    summarizer = ExtractiveSummarizer()
    runs = 3 if quick else 7
    large = sized(400_000)
    large_chars = sum(len(i.text) for i in large)
    at_threshold = sized(DEFAULT_THRESHOLD_CHARS)
    large_s = timed(summarizer, large, runs)
    threshold_s = timed(summarizer, at_threshold, runs)
    lag_s = asyncio.run(loop_lag(summarizer, large))
    return [
        Figure(
            "extractive summary of a large input (one compaction)",
            f"{large_s * 1000:.0f} ms",
            note=f"{len(large)} turns, {large_chars:,} chars; median of {runs}",
        ),
        Figure(
            "extractive summary at the default threshold (20,000 tokens of text)",
            f"{threshold_s * 1000:.1f} ms",
            note=f"{len(at_threshold)} turns, ~{DEFAULT_THRESHOLD_CHARS:,} chars; median of {runs}",
        ),
        Figure(
            "event-loop lag while it summarizes the large input (10 ms probe, max)",
            f"{lag_s * 1000:.1f} ms",
            target="< 20 ms",
            note=f"in a worker thread; on the loop it would stall it {large_s * 1000:.0f} ms",
        ),
    ]


def figures(quick: bool) -> list[Figure]:
    return fact_figures() + cost_figures(quick)


def main() -> None:
    bench_main("Extractive summarizer: facts and cost", figures, __doc__)


if __name__ == "__main__":
    main()
