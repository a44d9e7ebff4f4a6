"""The extractive summarizer keeps the facts through chained compactions, and drops filler.

Chained as the compaction runner chains them: each round summarizes the new turns together
with the previous round's summary (``CompactionRunner._summarize``), through the async
``summarize`` the runner awaits.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from realtime_voicebot.summarization.base import SummaryInput, format_turns
from realtime_voicebot.summarization.extractive import (
    DEFAULT_MAX_CHARS,
    ExtractiveSummarizer,
    tidy,
)

from .planted_facts import (
    FACTS,
    FILLER,
    batches,
    facts_held,
    filler_sentences,
    planted_items,
)

U = lambda text: SummaryInput("user", text)  # noqa: E731
A = lambda text: SummaryInput("assistant", text)  # noqa: E731


async def chain(
    summarizer: ExtractiveSummarizer, rounds: Sequence[Sequence[SummaryInput]]
) -> list[str]:
    """Every round's summary, each made from the previous one and that round's turns."""
    summaries: list[str] = []
    previous: str | None = None
    for turns in rounds:
        previous = await summarizer.summarize(turns, previous, "auto")
        summaries.append(previous)
    return summaries


# --- the planted conversation ----------------------------------------------------------------


@pytest.mark.parametrize("rounds", [10, 24], ids=["10-compactions", "one-per-turn"])
async def test_planted_facts_survive_chained_compactions(rounds: int) -> None:
    summarizer = ExtractiveSummarizer()
    items = planted_items()
    summaries = await chain(summarizer, batches(items, rounds))
    assert len(summaries) == rounds
    last = summaries[-1]
    held = facts_held(last)
    print(f"\n{rounds} compactions: {len(held)}/{len(FACTS)} facts, {len(last)} chars")
    assert len(held) >= 11, [f.needles for f in FACTS if f not in held]
    assert all(len(s) <= DEFAULT_MAX_CHARS for s in summaries)
    # Carried forward: once a fact is in a summary, every later summary still holds it.
    for index, summary in enumerate(summaries):
        for fact in facts_held(summary):
            assert all(fact.held_by(later) for later in summaries[index:]), fact.needles


async def test_planted_filler_is_dropped() -> None:
    items = planted_items()
    last = (await chain(ExtractiveSummarizer(), batches(items, 10)))[-1]
    kept = [s for s in filler_sentences() if s in last]
    assert not kept, kept
    assert len(last) < 0.5 * len(format_turns(items))  # not everything, by far
    # Each kept line is a fact's or adds a name of its own (Tagus, Sintra; Indian, Italian).
    for line in last.splitlines():
        assert line.startswith("User: ") or any(w[:1].isupper() for w in line.split()[2:])


async def test_filler_alone_adds_nothing_and_removes_nothing() -> None:
    summarizer = ExtractiveSummarizer()
    facts = await summarizer.summarize(planted_items(), None, "auto")
    filler = [
        SummaryInput(role, text)
        for turn in FILLER
        for role, text in zip(("user", "assistant"), turn, strict=True)
    ]
    assert len(facts_held(facts)) == 12
    # Fifty compactions of nothing but filler after the facts: the summary does not move.
    previous = facts
    for _ in range(50):
        previous = await summarizer.summarize(filler, previous, "auto")
        assert previous == facts


# --- both sides of the filter ----------------------------------------------------------------


async def test_greetings_thanks_backchannels_and_chit_chat_are_dropped() -> None:
    previous = "User: My locker code is 4471."
    turns = [
        U("Hi!"),
        A("Hello! How can I help you today?"),
        U("Thanks, that's great."),
        A("You're welcome! Is there anything else I can help you with?"),
        U("Mhm. Yeah, okay. Hmm, let me think."),
        A("Take your time. Of course!"),
        U("[inaudible]"),
    ]
    assert await ExtractiveSummarizer().summarize(turns, previous, "auto") == previous


async def test_user_facts_and_new_assistant_facts_pass() -> None:
    turns = [
        U("Um, so I'm allergic to shellfish."),
        A("Thank you for telling me, that is really important."),  # chit-chat: dropped
        U("Book a table for Saturday, please."),
        A("Your table at Casa Nova is booked for 8 pm on Saturday."),  # new place, new time
        A("Would you like me to add anything else?"),  # a question without a number
        U("I'd rather sit outside."),
        A("Sure, I noted that you are allergic to shellfish."),  # an echo of the user
    ]
    summary = await ExtractiveSummarizer().summarize(turns, None, "auto")
    assert summary.splitlines() == [
        "User: I'm allergic to shellfish.",
        "User: Book a table for Saturday, please.",
        "Assistant: Your table at Casa Nova is booked for 8 pm on Saturday.",
        "User: I'd rather sit outside.",
    ]


def test_tidy_cuts_interjections_in_front_only() -> None:
    assert tidy("Hi, um, my name is Alice.") == "My name is Alice."
    assert tidy("Oh, and I have a dog.") == "I have a dog."
    assert tidy("Well, the meeting is at 9.") == "The meeting is at 9."
    assert tidy("Wellington is far.") == "Wellington is far."  # a word, not "well,"
    assert tidy("So I said no so what.") == "I said no so what."
    assert tidy("Okay.") == "Okay."  # nothing left to keep: unchanged


# --- carried forward, and bounded ------------------------------------------------------------


async def test_an_llm_summary_is_carried_forward_as_it_is() -> None:
    previous = (
        "Alice lives in Lisbon and is allergic to peanuts.\n"
        "She decided to book the hotel by the beach."
    )
    summary = await ExtractiveSummarizer().summarize(
        [U("My flight leaves at 7:45."), A("Great, have a nice trip!")], previous, "auto"
    )
    assert summary.splitlines() == [*previous.splitlines(), "User: My flight leaves at 7:45."]


async def test_over_budget_the_least_fact_bearing_lines_go_first() -> None:
    summarizer = ExtractiveSummarizer(max_chars=200)
    old = [U("Tell me about the history of bridges."), U("I am allergic to peanuts.")]
    first = await summarizer.summarize(old, None, "auto")
    assert first.splitlines() == [
        "User: Tell me about the history of bridges.",
        "User: I am allergic to peanuts.",
    ]
    newer = [U(f"Locker {n} is mine.") for n in range(1, 8)]
    second = await summarizer.summarize(newer, first, "auto")
    assert len(second) <= 200
    lines = second.splitlines()
    assert "User: I am allergic to peanuts." in lines  # the weightiest line stays
    assert "User: Tell me about the history of bridges." not in lines  # no fact: first out
    # Among equals, the oldest went first: the lockers kept are the newest.
    lockers = [line for line in lines if "Locker" in line]
    assert lockers == [f"User: Locker {n} is mine." for n in range(8 - len(lockers), 8)]


async def test_a_long_conversation_stays_within_budget_and_keeps_the_weightiest() -> None:
    summarizer = ExtractiveSummarizer()
    rounds: list[list[SummaryInput]] = [[U("I am allergic to peanuts."), A("Noted.")]]
    for n in range(300):
        rounds.append(
            [
                U(f"Order {1000 + n} goes to room {n % 40}."),
                A(f"Done, order {1000 + n} is on its way to room {n % 40}."),
                U("Thanks!"),
                A("You're welcome, anything else?"),
            ]
        )
    summaries = await chain(summarizer, rounds)
    assert all(len(s) <= DEFAULT_MAX_CHARS for s in summaries)
    last = summaries[-1]
    assert "allergic to peanuts" in last
    assert "Order 1299 goes to room 19." in last  # the newest of equals
    assert "Order 1000 " not in last  # the oldest of equals made room
    assert "Thanks" not in last and "welcome" not in last


def test_large_input_in_one_go_is_bounded() -> None:
    items = planted_items() * 200
    summary = ExtractiveSummarizer().summarize_now(items, None)
    assert len(summary) <= DEFAULT_MAX_CHARS
    assert len(facts_held(summary)) == 12  # a repeated fact is one line, not twelve hundred
