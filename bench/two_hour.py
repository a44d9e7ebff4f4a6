"""A two-hour spoken conversation on the fake server: peak token window and input tokens billed.

Two hours of turns of 4 s of user speech and 8 s of spoken reply (about 560 turns),
spoken into the fake's server VAD and answered in audio, so every turn is counted as audio
tokens (user 10/s, assistant 20/s; the fake's `TokenRates`). The app is the real VoiceBot;
the audio is pushed and streamed as fast as the machine allows instead of at real time,
so the 60-minute session limit does not come into play. Three runs side by side:

- compaction on: the defaults (summarize at 20,000 tokens, keep 4 items; server truncation
  ``auto`` behind it as a safety net, never reached);
- compaction off, server truncation ``auto``: the window fills to the model's input limit
  (32k context minus 4,096 for output) and the server drops the oldest items just enough;
- compaction off, server truncation ``retention_ratio`` 0.8: the server drops the oldest
  items down to 80 % of the limit each time it is reached.

Figures come from the fake server's ``response.done`` usage: the largest ``input_tokens``
of one response (the peak window the model read) and their sum over the conversation (the
input billed; cached tokens are shown apart, they are billed at a discount). The baseline
is not in this benchmark: it only runs at real time from a device.
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
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.testing import PushInput

USER_S = 4.0
REPLY_S = 8.0
PAUSE_S = 0.8
TWO_HOURS_S = 2 * 3600.0
MS_PER_CHAR = 65.0
BLOCK_MS = 200
"""Microphone blocks: fewer events than 20 ms, the same audio."""
TURN_TIMEOUT_S = 30.0


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
class Result:
    name: str
    turns: int
    peak_input: int
    billed_input: int
    cached_input: int
    audio_input: int
    compactions: int
    truncated_items: int
    wall_s: float


async def converse(name: str, turns: int, **overrides: Any) -> Result:
    """One conversation of `turns` spoken turns with the given settings."""
    config = FakeServerConfig(
        speed=0, scenario=scenario(turns), ms_per_char=MS_PER_CHAR, audio_delta_ms=1000
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="two-hour-") as tmp:
        async with FakeRealtimeServer(config) as server:
            settings = bench_settings(server.url, Path(tmp), summarizer="extractive", **overrides)
            mic = PushInput(block_ms=BLOCK_MS)  # delivers as fast as the app reads
            bot = VoiceBot(settings, RunOptions(), QuietView(), audio_in=mic)
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
                    raise RuntimeError(f"{name}: no reply to turn {n}") from None
                if task.done():
                    raise RuntimeError(f"{name}: the bot stopped at turn {n}")
            await bot.until(lambda: not bot.core.compactor.in_flight, TURN_TIMEOUT_S)
            bot.stop()
            await task
            usages = [run.usage for s in server.sessions for run in s.responses if run.usage]
            truncated = sum(len(s.truncated_ids) for s in server.sessions)
    compactions = bot.core.compactor.stats.compactions
    return Result(
        name=name,
        turns=turns,
        peak_input=max(u["input_tokens"] for u in usages),
        billed_input=sum(u["input_tokens"] for u in usages),
        cached_input=sum(u["input_token_details"]["cached_tokens"] for u in usages),
        audio_input=sum(u["input_token_details"]["audio_tokens"] for u in usages),
        compactions=compactions,
        truncated_items=truncated,
        wall_s=time.perf_counter() - started,
    )


NEVER = 10**9


async def measure(turns: int) -> list[Result]:
    quiet_logs()
    return [
        await converse("compaction on (defaults)", turns),
        await converse(
            "compaction off, server truncation auto",
            turns,
            summary_threshold=NEVER,
            server_truncation="auto",
        ),
        await converse(
            "compaction off, server retention_ratio 0.8",
            turns,
            summary_threshold=NEVER,
            server_truncation="retention_ratio:0.8",
        ),
    ]


def figures(quick: bool) -> list[Figure]:
    turns = 150 if quick else math.ceil(TWO_HOURS_S / (USER_S + REPLY_S + PAUSE_S))
    results = asyncio.run(measure(turns))
    minutes = turns * (USER_S + REPLY_S + PAUSE_S) / 60
    on = results[0]
    rows: list[Figure] = []
    for r in results:
        ratio = r.billed_input / on.billed_input
        rows.append(
            Figure(
                f"{r.name}: peak token window",
                f"{r.peak_input:,} tokens",
                note=f"{r.turns} turns, ~{minutes:.0f} min spoken",
            )
        )
        rows.append(
            Figure(
                f"{r.name}: input tokens billed",
                f"{r.billed_input:,} ({ratio:.2f}x compaction on)",
                note=(
                    f"cached {r.cached_input:,}, audio {r.audio_input:,}; "
                    f"{r.compactions} compactions, {r.truncated_items} items truncated "
                    f"by the server; run {r.wall_s:.0f} s"
                ),
            )
        )
    return rows


def main() -> None:
    bench_main("Two-hour conversation: token window and input tokens", figures, __doc__)


if __name__ == "__main__":
    main()
