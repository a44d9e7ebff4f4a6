"""Summarizers: a plain async function of items to text, knowing nothing of the transport.

The protocol and its data (`base`) are imported at once; the summarizers themselves (the
OpenAI client above all) only when asked for, so the session core can name `SummaryInput`
without importing a network client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from realtime_voicebot.summarization.base import (
    FallbackSummarizer,
    Summarizer,
    SummarizerError,
    SummaryInput,
)

if TYPE_CHECKING:
    from realtime_voicebot.summarization.extractive import ExtractiveSummarizer
    from realtime_voicebot.summarization.openai_summarizer import (
        OpenAISummarizer,
        build_summarizer,
    )

_LAZY = {
    "ExtractiveSummarizer": "realtime_voicebot.summarization.extractive",
    "OpenAISummarizer": "realtime_voicebot.summarization.openai_summarizer",
    "build_summarizer": "realtime_voicebot.summarization.openai_summarizer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "ExtractiveSummarizer",
    "FallbackSummarizer",
    "OpenAISummarizer",
    "Summarizer",
    "SummarizerError",
    "SummaryInput",
    "build_summarizer",
]
