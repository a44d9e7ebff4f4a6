"""A two-hour spoken conversation on the fake server, per summarizer: token window, input
tokens (cached and not) and what the two hours cost.

Two hours of turns of 4 s of user speech and 8 s of spoken reply (about 560 turns),
spoken into the fake's server VAD and answered in audio, so every turn is counted as audio
tokens (user 10/s, assistant 20/s; the fake's `TokenRates`). The app is the real VoiceBot;
the audio is pushed and streamed as fast as the machine allows instead of at real time,
so the 60-minute session limit does not come into play. A compaction, which at real time is
done within one turn (12.8 s), is waited for before the next turn, whatever the
summarizer, so that fast turns do not pile up behind it. Side by side, in one run:

- compaction on (summarize at 20,000 tokens, keep 4 items) with each summarizer:
  ``realtime`` (the session's own out-of-band response; its prompt laid out as the
  conversation's cached prefix, the default, and with its own instructions, which shares no
  prefix), ``extractive`` (offline, free), and ``openai`` (Chat Completions, against the
  fake chat endpoint `fake/chat.py`; its tokens priced as gpt-4o-mini);
- compaction off, server truncation ``auto``: the window fills to the model's input limit
  (32k context minus 4,096 for output) and the server drops the oldest items just enough;
- compaction off, server truncation ``retention_ratio`` 0.8: the server drops the oldest
  items down to 80 % of the limit each time it is reached.

Figures come from the fake server's ``response.done`` usage of every response, the
session's summaries included: the largest ``input_tokens`` a reply read (the peak window),
the input over the conversation split into cached and uncached, and the cost at
`metrics.Prices` (gpt-realtime list prices; cached input at a tenth of text and a
eightieth of audio), plus the chat summarizer's own calls where there are any. How much a
summary costs depends on how long it is: the fake's summaries are bounded like a model's
asked for about 250 words (1,500 characters), the extractive one at 1,200 characters, the
fake chat endpoint's at 60 words. The baseline is not in this benchmark: it only runs at
real time from a device.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import Figure, bench_main
from headless import QuietView, bench_settings, quiet_logs

from realtime_voicebot.app import RunOptions, VoiceBot
from realtime_voicebot.core.compaction.in_session import SummaryLayout
from realtime_voicebot.fake.chat import FakeChatServer
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.metrics import BilledTokens, Prices, billed_tokens
from realtime_voicebot.testing import PushInput

USER_S = 4.0
REPLY_S = 8.0
PAUSE_S = 0.8
TWO_HOURS_S = 2 * 3600.0
MS_PER_CHAR = 65.0
BLOCK_MS = 200
"""Microphone blocks: fewer events than 20 ms, the same audio."""
TURN_TIMEOUT_S = 30.0
NEVER = 10**9
CHAT_PRICE_INPUT = 0.15
CHAT_PRICE_OUTPUT = 0.60
"""gpt-4o-mini list prices, USD per million tokens (the chat summarizer's default model)."""
CHAT_OUTPUT_TOKENS = 60
"""What the fake chat endpoint reports per answer (``completion_tokens``)."""


def scenario(turns: int) -> Scenario:
    """A fact per user turn (for the summary) and replies that last `REPLY_S` spoken."""
    chars = round(REPLY_S * 1000 / MS_PER_CHAR)
    replies = []
    for n in range(turns):
        text = f"Noted, item {n} goes with code {n * 37 % 1000}. "
        replies.append((text * (chars // len(text) + 1))[:chars])
    users = [f"Turn {n}: remember that item {n} has code {n * 37 % 1000}." for n in range(turns)]
    return Scenario(user_transcripts=users, replies=replies)


@dataclass
class Run:
    """One configuration of the conversation."""

    name: str
    settings: dict[str, Any]
    layout: SummaryLayout | None = None
    chat: bool = False


@dataclass
class Result:
    name: str
    turns: int
    peak_window: int
    conversation: BilledTokens
    summaries: BilledTokens
    summary_responses: int
    chat_input: int
    chat_calls: int
    compactions: int
    fallbacks: int
    truncated_items: int
    wall_s: float

    @property
    def input(self) -> float:
        return self.conversation.input + self.summaries.input

    @property
    def cached(self) -> float:
        return self.conversation.cached + self.summaries.cached

    @property
    def chat_cost(self) -> float:
        return (
            self.chat_input * CHAT_PRICE_INPUT
            + self.chat_calls * CHAT_OUTPUT_TOKENS * CHAT_PRICE_OUTPUT
        ) / 1_000_000

    def cost(self, prices: Prices) -> float:
        return self.conversation.cost(prices) + self.summaries.cost(prices) + self.chat_cost


async def converse(run: Run, turns: int) -> Result:
    """One conversation of `turns` spoken turns with the run's settings."""
    config = FakeServerConfig(
        speed=0, scenario=scenario(turns), ms_per_char=MS_PER_CHAR, audio_delta_ms=1000
    )
    chat = FakeChatServer().start() if run.chat else None
    started = time.perf_counter()
    overrides = dict(run.settings)
    if chat is not None:
        overrides["openai_base_url"] = chat.base_url
    try:
        with tempfile.TemporaryDirectory(prefix="two-hour-") as tmp:
            async with FakeRealtimeServer(config) as server:
                settings = bench_settings(server.url, Path(tmp), **overrides)
                mic = PushInput(block_ms=BLOCK_MS)  # delivers as fast as the app reads
                bot = VoiceBot(settings, RunOptions(), QuietView(), audio_in=mic)
                if run.layout is not None:
                    bot.core.compactor.summary_layout = run.layout
                task = asyncio.create_task(bot.run())
                speech = speech_like(USER_S, seed=1)
                pause = silence(PAUSE_S)
                for n in range(turns):
                    mic.push(speech)
                    mic.push(pause)
                    try:
                        await bot.until(
                            lambda n=n: bot.core.stats.completed_replies > n or task.done(),
                            TURN_TIMEOUT_S,
                        )
                    except TimeoutError:
                        raise RuntimeError(f"{run.name}: no reply to turn {n}") from None
                    if task.done():
                        raise RuntimeError(f"{run.name}: the bot stopped at turn {n}")
                    # At real time a compaction is done within a turn (12.8 s); here turns
                    # come as fast as the machine allows, so the next one waits for it.
                    await bot.until(lambda: not bot.core.compactor.in_flight, TURN_TIMEOUT_S)
                await bot.until(lambda: not bot.core.compactor.in_flight, TURN_TIMEOUT_S)
                bot.stop()
                await task
                responses = [r for s in server.sessions for r in s.responses if r.usage]
                truncated = sum(len(s.truncated_ids) for s in server.sessions)
    finally:
        if chat is not None:
            chat.stop()
    conversation, summaries = BilledTokens(), BilledTokens()
    for response in responses:
        assert response.usage is not None
        if response.in_conversation:
            conversation += billed_tokens(response.usage)
        else:
            summaries += billed_tokens(response.usage)
    chat_requests = chat.requests if chat is not None else []
    chat_input = sum(
        len(str(m.get("content", ""))) // 4 for body in chat_requests for m in body["messages"]
    )
    stats = bot.core.compactor.stats
    return Result(
        name=run.name,
        turns=turns,
        peak_window=max(r.usage["input_tokens"] for r in responses if r.in_conversation),  # type: ignore[index]
        conversation=conversation,
        summaries=summaries,
        summary_responses=sum(not r.in_conversation for r in responses),
        chat_input=chat_input,
        chat_calls=len(chat_requests),
        compactions=stats.compactions,
        fallbacks=stats.fallbacks,
        truncated_items=truncated,
        wall_s=time.perf_counter() - started,
    )


RUNS = [
    Run("realtime (conversation prefix)", {"summarizer": "realtime"}, layout="prefix"),
    Run("realtime (own instructions)", {"summarizer": "realtime"}, layout="instructions"),
    Run("extractive", {"summarizer": "extractive"}),
    Run("openai chat (fake endpoint)", {"summarizer": "openai"}, chat=True),
    Run(
        "compaction off, server truncation auto",
        {"summary_threshold": NEVER, "server_truncation": "auto", "summarizer": "extractive"},
    ),
    Run(
        "compaction off, server retention_ratio 0.8",
        {
            "summary_threshold": NEVER,
            "server_truncation": "retention_ratio:0.8",
            "summarizer": "extractive",
        },
    ),
]


async def measure(turns: int) -> list[Result]:
    quiet_logs()
    return [await converse(run, turns) for run in RUNS]


def figures(quick: bool) -> list[Figure]:
    turns = 150 if quick else math.ceil(TWO_HOURS_S / (USER_S + REPLY_S + PAUSE_S))
    results = asyncio.run(measure(turns))
    minutes = turns * (USER_S + REPLY_S + PAUSE_S) / 60
    prices = Prices()
    reference = next(r for r in results if r.name == "extractive").cost(prices)
    rows: list[Figure] = []
    for r in results:
        summary_note = ""
        if r.summary_responses:
            summary_note = (
                f"; session summaries: {r.summary_responses} responses, input "
                f"{r.summaries.input:,.0f} (cached {r.summaries.cached:,.0f}), output "
                f"{r.summaries.output:,.0f}, ${r.summaries.cost(prices):.2f}"
            )
        if r.chat_calls:
            summary_note = (
                f"; chat summaries: {r.chat_calls} calls, input {r.chat_input:,} tokens, "
                f"${r.chat_cost:.4f}"
            )
        rows.append(
            Figure(
                f"two hours, {r.name}: peak window / input tokens (uncached + cached)",
                f"{r.peak_window:,} / {r.input - r.cached:,.0f} + {r.cached:,.0f}",
                note=f"{r.turns} turns, ~{minutes:.0f} min spoken; {r.compactions} compactions, "
                f"{r.fallbacks} fallbacks, {r.truncated_items} items truncated by the server"
                f"{summary_note}; run {r.wall_s:.0f} s",
            )
        )
        cost = r.cost(prices)
        rows.append(
            Figure(
                f"two hours, {r.name}: cost",
                f"${cost:.2f} ({cost / reference:.2f}x extractive)",
                note=f"conversation ${r.conversation.cost(prices):.2f}, uncached audio input "
                f"{r.conversation.audio_input + r.summaries.audio_input:,.0f} tokens",
            )
        )
    return rows


def main() -> None:
    bench_main(
        "Two-hour conversation: window, input tokens and cost by summarizer", figures, __doc__
    )


if __name__ == "__main__":
    main()
