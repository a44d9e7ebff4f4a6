"""A conversation with twelve planted facts, and how many of them a summary still holds.

Twelve user turns each state one fact, worded as people say them (a filler word in front,
a contraction, a trailing "so please keep that in mind"); the assistant answers as a voice
assistant does (an echo of the fact, a compliment, a question back); filler turns (greetings,
thanks, backchannels) sit between them. Shared by the summarizer tests, the end-to-end run
against the fake server and ``bench/summary_facts.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from realtime_voicebot.summarization.base import SummaryInput


@dataclass(frozen=True)
class Fact:
    """A user turn stating one fact, the assistant's reply, and the words that prove it kept."""

    said: str
    reply: str
    needles: tuple[str, ...]

    def held_by(self, summary: str) -> bool:
        """Whether every needle occurs in ``summary`` as a word (case-insensitive)."""
        return all(
            re.search(rf"(?<!\w){re.escape(needle)}", summary, re.IGNORECASE)
            for needle in self.needles
        )


FACTS: tuple[Fact, ...] = (
    Fact(
        "Hi, um, my name is Alice and I live in Lisbon.",
        "Nice to meet you, Alice! Lisbon is a beautiful city, I hear the trams and the views "
        "from the Alfama are wonderful. How can I help you today?",
        ("Alice", "Lisbon"),
    ),
    Fact(
        "I have a dog called Pepper.",
        "Pepper is a lovely name for a dog! Dogs are such good company. What breed is she, "
        "and how old is she?",
        ("Pepper",),
    ),
    Fact(
        "I am allergic to peanuts, so please keep that in mind.",
        "Thank you for telling me, that is really important. I will keep your peanut allergy "
        "in mind whenever we talk about food or recipes.",
        ("allergic", "peanut"),
    ),
    Fact(
        "Oh, and my birthday is on the fourteenth of March.",
        "Happy early birthday! That is coming up soon. Do you have anything special planned "
        "for the day?",
        ("birthday", "March"),
    ),
    Fact(
        "I work as a nurse at the children's hospital.",
        "Nursing is such important work, and working with children must be very rewarding. "
        "That must keep you busy, though. How long have you been doing it?",
        ("nurse",),
    ),
    Fact(
        "So my sister Maria is coming to visit next Friday.",
        "How lovely that Maria is visiting! Do you have plans for her stay? Maybe a walk "
        "along the Tagus or a trip to Sintra if the weather is nice.",
        ("Maria", "Friday"),
    ),
    Fact(
        "I prefer tea to coffee, no sugar.",
        "Tea without sugar, noted. There are so many wonderful teas to try. Do you have a "
        "favourite kind, like Earl Grey or green tea?",
        ("prefer tea",),
    ),
    Fact(
        "My phone number ends in 4471.",
        "Got it, your number ends in 4471. Is there anything you would like me to do with it?",
        ("4471",),
    ),
    Fact(
        "We decided to go with the hotel by the beach.",
        "Great choice, that sounds wonderful! Waking up to the sound of the sea is hard to "
        "beat. I hope you have a relaxing time there.",
        ("hotel", "beach"),
    ),
    Fact(
        "Please remind me to call the dentist on Tuesday.",
        "Sure, I will remind you to call the dentist on Tuesday. Would you like the reminder "
        "in the morning or in the afternoon?",
        ("dentist", "Tuesday"),
    ),
    Fact(
        "Yeah, I don't eat meat, I'm vegetarian.",
        "Understood, no meat for you. There are lots of good vegetarian recipes to try, from "
        "Indian curries to Italian pasta dishes.",
        ("vegetarian",),
    ),
    Fact(
        "My flight to Berlin leaves at 7:45 in the morning.",
        "Have a good flight! Berlin is lovely in spring. Make sure to get to the airport "
        "early, since morning flights can have long security lines.",
        ("Berlin", "7:45"),
    ),
)

FILLER: tuple[tuple[str, str], ...] = (
    ("Hello there!", "Hello! How can I help you today?"),
    ("Thanks, that's great.", "You're welcome!"),
    ("Yeah, okay.", "Alright."),
    ("Hmm, let me think.", "Take your time."),
    ("Sounds good, thank you so much!", "Of course! Is there anything else I can help you with?"),
    ("Okay, cool.", "Great."),
    ("Mhm, right.", "Yes, exactly."),
    ("Thank you, that's all for now. Bye!", "Goodbye, take care!"),
)
"""Greetings, thanks and backchannels, answered by the assistant's chit-chat."""

FILLER_AFTER_FACT = (0, 2, 4, 7, 9)
"""After which facts (0-based) a filler turn follows; the rest of the filler closes the talk."""


def planted_turns() -> list[tuple[str, str]]:
    """(user, assistant) turns: the facts in order, filler between them and at the end."""
    turns: list[tuple[str, str]] = [FILLER[0]]
    filler = iter(FILLER[1:])
    for index, fact in enumerate(FACTS):
        turns.append((fact.said, fact.reply))
        if index in FILLER_AFTER_FACT:
            turns.append(next(filler))
    turns.extend(filler)
    return turns


def planted_items() -> list[SummaryInput]:
    """The planted conversation as summarizer input, user and assistant alternating."""
    return [
        SummaryInput(role, text)
        for user, assistant in planted_turns()
        for role, text in (("user", user), ("assistant", assistant))
    ]


def batches(items: Sequence[SummaryInput], rounds: int) -> list[list[SummaryInput]]:
    """``items`` cut into ``rounds`` consecutive, nearly equal batches (one per compaction)."""
    size, extra = divmod(len(items), rounds)
    cut: list[list[SummaryInput]] = []
    start = 0
    for index in range(rounds):
        end = start + size + (1 if index < extra else 0)
        cut.append(list(items[start:end]))
        start = end
    return cut


def facts_held(summary: str) -> list[Fact]:
    """The planted facts ``summary`` still holds."""
    return [fact for fact in FACTS if fact.held_by(summary)]


def filler_sentences() -> list[str]:
    """Every sentence of the filler turns and of the assistant's chit-chat."""
    chit_chat = [
        "How can I help you today?",
        "Dogs are such good company.",
        "That is coming up soon.",
        "Do you have anything special planned for the day?",
        "That must keep you busy, though.",
        "How long have you been doing it?",
        "Do you have plans for her stay?",
        "There are so many wonderful teas to try.",
        "Great choice, that sounds wonderful!",
        "I hope you have a relaxing time there.",
        "Have a good flight!",
    ]
    said = [text for turn in FILLER for text in turn]
    return [s for text in said for s in re.split(r"(?<=[.!?])\s+", text)] + chit_chat
