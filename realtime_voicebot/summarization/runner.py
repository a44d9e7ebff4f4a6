"""Runs one summary for a compaction: the configured summarizer under a timeout, and the
extractive one when it fails, times out or answers nothing. A compaction never fails for lack
of a network, and never waits longer than the timeout for one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from realtime_voicebot.summarization.base import Summarizer, SummarizerError, SummaryInput
from realtime_voicebot.summarization.extractive import ExtractiveSummarizer

log = structlog.get_logger(component="summarizer")


class SummaryRunner:
    """``summarize`` returns the text and whether the fallback wrote it."""

    def __init__(
        self,
        summarizer: Summarizer,
        *,
        timeout_s: float = 20.0,
        fallback: Summarizer | None = None,
    ) -> None:
        self.summarizer = summarizer
        self.fallback: Summarizer = fallback or ExtractiveSummarizer()
        self.timeout_s = timeout_s

    async def summarize(
        self, inputs: Sequence[SummaryInput], previous: str | None, language: str
    ) -> tuple[str, bool]:
        # A FallbackSummarizer may fall back inside: that counts as a fallback too.
        inner_before = getattr(self.summarizer, "fallbacks", 0)
        try:
            text = await asyncio.wait_for(
                self.summarizer.summarize(inputs, previous, language), self.timeout_s
            )
            if not text.strip():
                raise SummarizerError("empty summary")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("summary_fallback", error=repr(exc))
            return await self.fallback.summarize(inputs, previous, language), True
        return text, getattr(self.summarizer, "fallbacks", 0) > inner_before
