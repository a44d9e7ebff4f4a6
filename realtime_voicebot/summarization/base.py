"""What a summarizer takes and gives, and the fallback wrapper."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from realtime_voicebot.errors import VoicebotError

log = structlog.get_logger(component="summarizer")


@dataclass(frozen=True, slots=True)
class SummaryInput:
    """One turn to summarize: who said it (``user``, ``assistant``, ``system``, ``tool``)."""

    role: str
    text: str


class Summarizer(Protocol):
    """Progressive summarizer: the previous summary and new turns in, one summary out."""

    async def summarize(
        self, items: Sequence[SummaryInput], previous_summary: str | None, language: str
    ) -> str: ...


class SummarizerError(VoicebotError):
    """A summarizer could not produce a summary (empty answer, bad response)."""


def role_label(role: str) -> str:
    """How a role is shown in a transcript-like text: ``User``, ``Assistant``, ..."""
    return role[:1].upper() + role[1:] if role else "Unknown"


def format_turns(items: Sequence[SummaryInput]) -> str:
    """``Role: text`` lines, empty turns left out."""
    return "\n".join(
        f"{role_label(item.role)}: {item.text.strip()}" for item in items if item.text.strip()
    )


class FallbackSummarizer:
    """Try ``primary``; when it raises (timeout included), answer with ``fallback``."""

    def __init__(self, primary: Summarizer, fallback: Summarizer) -> None:
        self.primary = primary
        self.fallback = fallback
        self.fallbacks = 0

    async def summarize(
        self, items: Sequence[SummaryInput], previous_summary: str | None, language: str
    ) -> str:
        try:
            return await self.primary.summarize(items, previous_summary, language)
        except Exception as exc:
            self.fallbacks += 1
            log.warning("summarizer_fallback", error=repr(exc))
            return await self.fallback.summarize(items, previous_summary, language)
