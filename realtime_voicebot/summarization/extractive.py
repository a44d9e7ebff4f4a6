"""A deterministic, offline summarizer: keeps the sentences that carry facts.

Language neutral by design: a sentence scores for digits (numbers, dates, times), words
capitalized inside it (names, places), a question mark (open questions), its length, and
for being the user's (preferences and decisions are the user's). The previous summary's
facts are kept; when the result outgrows ``max_chars`` the oldest facts go first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from realtime_voicebot.summarization.base import SummaryInput, format_turns, role_label

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])|\n+")
_QUESTION_MARKS = frozenset("?？¿")
_STRIP = "\"'“”‘’«»()[]{}.,;:!?¡¿…-–—"

KEEP_SCORE = 2
MAX_FACT_CHARS = 240


def sentences(text: str) -> list[str]:
    """Sentences of a text, stripped, empty ones left out."""
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s and s.strip()]


def score(sentence: str, role: str) -> int:
    """How likely a sentence is to carry a fact worth keeping."""
    words = sentence.split()
    points = 0
    if any(ch.isdigit() for ch in sentence):
        points += 2
    if any(ch in _QUESTION_MARKS for ch in sentence):
        points += 2
    capitalized = sum(
        1 for word in words[1:] if len(w := word.strip(_STRIP)) > 1 and w[0].isupper()
    )
    points += min(capitalized, 3)
    if len(words) >= 8 or len(sentence) >= 40:
        points += 1
    if len(words) < 3 and len(sentence) < 12:
        points -= 1
    if role == "user":
        points += 1
    return points


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


def _key(fact: str) -> str:
    return " ".join(fact.lower().split())


class ExtractiveSummarizer:
    """Never fails, never needs a network; output at most ``max_chars`` characters."""

    def __init__(self, max_chars: int = 1200, max_fact_chars: int = MAX_FACT_CHARS) -> None:
        if max_chars < 40:
            raise ValueError("max_chars must be at least 40")
        self.max_chars = max_chars
        self.max_fact_chars = min(max_fact_chars, max_chars)

    def facts(self, items: Sequence[SummaryInput]) -> list[str]:
        """The labelled sentences of ``items`` worth keeping, in conversation order."""
        kept: list[str] = []
        for item in items:
            candidates = sentences(item.text)
            chosen = [s for s in candidates if score(s, item.role) >= KEEP_SCORE]
            if not chosen and item.role == "user" and candidates:
                best = max(candidates, key=lambda s: (score(s, item.role), len(s)))
                if len(best.split()) >= 3 or len(best) >= 12:
                    chosen = [best]
            label = role_label(item.role)
            kept.extend(_clip(f"{label}: {s}", self.max_fact_chars) for s in chosen)
        return kept

    async def summarize(
        self, items: Sequence[SummaryInput], previous_summary: str | None, language: str
    ) -> str:
        return self.summarize_now(items, previous_summary)

    def summarize_now(self, items: Sequence[SummaryInput], previous_summary: str | None) -> str:
        """The synchronous core of `summarize` (the language is the conversation's anyway)."""
        facts: list[str] = []
        for line in (previous_summary or "").splitlines():
            line = line.strip()
            if not line:
                continue
            if len(line) > self.max_fact_chars:
                facts.extend(_clip(s, self.max_fact_chars) for s in sentences(line))
            else:
                facts.append(line)
        seen = {_key(f) for f in facts}
        for fact in self.facts(items):
            if _key(fact) not in seen:
                seen.add(_key(fact))
                facts.append(fact)
        if not facts:
            return _clip(format_turns(items), self.max_chars)
        while len(facts) > 1 and len("\n".join(facts)) > self.max_chars:
            facts.pop(0)
        return _clip("\n".join(facts), self.max_chars)
