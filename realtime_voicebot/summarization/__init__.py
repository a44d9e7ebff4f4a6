"""Summarizers: a plain async function of items to text, knowing nothing of the transport."""

from realtime_voicebot.summarization.base import (
    FallbackSummarizer,
    Summarizer,
    SummarizerError,
    SummaryInput,
)
from realtime_voicebot.summarization.extractive import ExtractiveSummarizer
from realtime_voicebot.summarization.openai_summarizer import OpenAISummarizer, build_summarizer

__all__ = [
    "ExtractiveSummarizer",
    "FallbackSummarizer",
    "OpenAISummarizer",
    "Summarizer",
    "SummarizerError",
    "SummaryInput",
    "build_summarizer",
]
