"""The summary shell of a compaction: the summarizer under a timeout, the extractive fallback."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from realtime_voicebot.summarization.base import FallbackSummarizer, SummaryInput
from realtime_voicebot.summarization.extractive import ExtractiveSummarizer
from realtime_voicebot.summarization.runner import SummaryRunner

INPUTS = [
    SummaryInput("user", "My order number 0 ships to Paris?"),
    SummaryInput("assistant", "Order 0 ships to Paris on Monday."),
]


class Scripted:
    """Answers ``answer``, raises, or never answers (``hang``)."""

    def __init__(self, answer: str = "A summary.", *, fail: bool = False, hang: bool = False):
        self.answer = answer
        self.fail = fail
        self.hang = hang
        self.calls = 0

    async def summarize(
        self, items: Sequence[SummaryInput], previous_summary: str | None, language: str
    ) -> str:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            raise RuntimeError("summarizer down")
        return self.answer


async def test_a_working_summarizer_writes_the_summary() -> None:
    runner = SummaryRunner(Scripted("Ada ships to Paris."))
    assert await runner.summarize(INPUTS, None, "auto") == ("Ada ships to Paris.", False)


async def test_a_failing_summarizer_falls_back_to_extractive() -> None:
    text, fallback = await SummaryRunner(Scripted(fail=True)).summarize(INPUTS, None, "auto")
    assert fallback and "Paris" in text


async def test_a_hanging_summarizer_times_out_and_falls_back() -> None:
    runner = SummaryRunner(Scripted(hang=True), timeout_s=0.05)
    text, fallback = await runner.summarize(INPUTS, None, "auto")
    assert fallback and "Paris" in text


async def test_an_empty_summary_falls_back() -> None:
    text, fallback = await SummaryRunner(Scripted("   ")).summarize(INPUTS, None, "auto")
    assert fallback and "Paris" in text


async def test_fallbacks_inside_a_fallback_summarizer_are_counted() -> None:
    inner = FallbackSummarizer(Scripted(fail=True), ExtractiveSummarizer())
    text, fallback = await SummaryRunner(inner).summarize(INPUTS, None, "auto")
    assert fallback and "Paris" in text
