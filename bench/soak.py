"""Soak: the real app against the fake server while faults land at random moments.

The app runs headless (no sound card, no terminal) in text mode; a typist sends uniquely
worded user turns one after another. A seeded injector picks random moments for dropped
connections (no close frame), ``error`` events, malformed frames and session expiries; a
summarizer double is slow (past the summary timeout) or fails on a seeded share of the
compactions, which run every two user turns, so the runner's extractive fallback must cope.
At the end: every user turn is in the transcript file exactly once, the client is
connected, and the count of each fault and of each recovery is printed.

    python bench/soak.py [--faults 300] [--seed 1] [--quick]

`run_soak` is the driver; tests/test_soak.py imports this file by path and runs it smaller.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Figure, print_figures
from headless import QuietView, bench_settings

from realtime_voicebot.app import RunOptions, VoiceBot
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.errors import SessionEnded
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.summarization.base import SummarizerError, SummaryInput
from realtime_voicebot.summarization.extractive import ExtractiveSummarizer
from realtime_voicebot.transcript import read_records

SERVER_FAULTS = {"drop": 3, "error": 3, "malformed": 3, "expire": 1}
"""Faults the injector picks from, with their weights."""
SUMMARY_TIMEOUT_S = 0.2
SESSION_MAX_S = 3.0
"""The fake's session limit: a session that no fault ends is rolled over (or expires)."""
REPLY_WAIT_S = 1.0
"""How long the typist waits for a reply before typing on (a drop may have eaten it)."""
CALM_AFTER_CONNECT_S = (0.25, 0.6)
"""A connection fault lands this long after the session opened: longer than twice the
backoff ceiling, so the client's reconnect budget is reset as for a session that worked."""
LATE_SHARE = 0.15
"""Share of connection faults aimed anywhere in the session's life, even past its limit."""


class FlakySummarizer:
    """A summarizer double: of every three calls, in a seeded order, one is slow (past the
    runner's timeout), one fails, and one answers (extractively)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.calls: Counter[str] = Counter()
        self._inner = ExtractiveSummarizer()
        self._next: list[str] = []

    async def summarize(
        self, items: Sequence[SummaryInput], previous_summary: str | None, language: str
    ) -> str:
        if not self._next:
            self._next = self.rng.sample(["slow_summary", "failing_summary", "summary_ok"], 3)
        kind = self._next.pop()
        self.calls[kind] += 1
        if kind == "slow_summary":
            await asyncio.sleep(SUMMARY_TIMEOUT_S * 5)  # the runner's timeout cuts this short
        elif kind == "failing_summary":
            raise SummarizerError("injected summarizer failure")
        return await self._inner.summarize(items, previous_summary, language)

    @property
    def faults(self) -> int:
        return self.calls["slow_summary"] + self.calls["failing_summary"]


@dataclass
class SoakView(QuietView):
    """Shows nothing; counts finished replies so the typist can pace itself."""

    replies: int = 0
    notices: list[str] = field(default_factory=list)
    reply_seen: asyncio.Event = field(default_factory=asyncio.Event)

    def assistant_done(self, item_id: str, text: str, truncated: bool) -> None:
        self.replies += 1
        self.reply_seen.set()

    def notice(self, text: str) -> None:
        self.notices.append(text)


@dataclass
class SoakResult:
    """What a soak run did and what it found."""

    faults: Counter[str]
    recoveries: dict[str, int]
    typed: list[str]
    transcript_counts: dict[str, int]
    connected_at_end: bool
    exit_code: int
    seconds: float
    errors_shown: int
    lost_sends: dict[str, int]
    """Client events the app dropped: sent while offline, or queued for a session that ended."""

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())

    @property
    def missing_turns(self) -> list[str]:
        return [t for t in self.typed if self.transcript_counts.get(t, 0) == 0]

    @property
    def duplicated_turns(self) -> list[str]:
        return [t for t in self.typed if self.transcript_counts.get(t, 0) > 1]

    @property
    def ok(self) -> bool:
        return (
            self.connected_at_end
            and self.exit_code == 0
            and not self.missing_turns
            and not self.duplicated_turns
        )


async def _wait_reply(view: SoakView, seen: int, timeout_s: float) -> bool:
    """Until the view has shown more than ``seen`` replies; False after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while view.replies <= seen:
                view.reply_seen.clear()
                await view.reply_seen.wait()
    except TimeoutError:
        return False
    return True


async def _inject(
    server: FakeRealtimeServer,
    bot: VoiceBot,
    rng: random.Random,
    counts: Counter[str],
    done: asyncio.Event,
    late_share: float,
) -> None:
    """Faults at random moments until ``done``; connection faults only on a working session."""
    assert bot.client is not None
    kinds = list(SERVER_FAULTS)
    weights = list(SERVER_FAULTS.values())
    while not done.is_set():
        kind = rng.choices(kinds, weights)[0]
        await bot.client.wait_connected()
        session = server.current_session
        if session is None:  # the client has not noticed yet that its session ended
            await server.wait_for(lambda: server.current_session is not None, timeout_s=30)
            continue
        if kind in ("drop", "expire"):
            low, high = CALM_AFTER_CONNECT_S
            if rng.random() < late_share:  # late in the session: a rollover may come first
                high = server.config.session_max_s * 1.2
            await asyncio.sleep(max(0.0, session.opened_at + rng.uniform(low, high) - time.time()))
        else:
            await asyncio.sleep(rng.uniform(0.02, 0.2))
        if done.is_set():
            return
        if session.ended_by is not None or session is not server.current_session:
            continue  # it ended meanwhile (expired, rolled over): pick a new moment
        try:
            if kind == "drop":
                await server.drop_connection(session)
            elif kind == "error":
                await server.inject_error(message="injected fault", session=session)
            elif kind == "malformed":
                await server.send_malformed_frame(session)
            else:
                await server.expire_session(session)
        except SessionEnded:  # it ended while the fault was on its way
            continue
        counts[kind] += 1


async def run_soak(
    faults: int,
    seed: int = 1,
    workdir: Path | None = None,
    *,
    late_share: float = LATE_SHARE,
    session_max_s: float = SESSION_MAX_S,
) -> SoakResult:
    """Drive the app until at least ``faults`` faults have happened; check what it kept.

    ``late_share`` of the connection faults aim anywhere in a session's life (so that some
    sessions live to be rolled over); with 0 and a long ``session_max_s`` none is.
    """
    from realtime_voicebot.logging import configure_logging

    configure_logging("CRITICAL", "json")  # handler failures would flood the figures
    rng = random.Random(seed)
    summarizer = FlakySummarizer(random.Random(seed + 1))
    counts: Counter[str] = Counter()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        base = workdir or Path(tmp)
        config = FakeServerConfig(speed=20.0, session_max_s=session_max_s)
        async with FakeRealtimeServer(config) as server:
            settings = bench_settings(
                server.url,
                base,
                backoff_initial_s=0.02,
                backoff_max_s=0.1,
                summary_every_turns=2,
                summary_keep_items=2,
                summary_timeout_s=SUMMARY_TIMEOUT_S,
                transcript_wait_s=0.5,
                summarizer="auto",  # the shell's summarizer (the flaky double), not the session's
            )
            lines: asyncio.Queue[str | None] = asyncio.Queue()
            view = SoakView()
            bot = VoiceBot(
                settings, RunOptions(text=True, text_lines=lines), view, summarizer=summarizer
            )
            run_task = asyncio.create_task(bot.run(), name="bot")
            done = asyncio.Event()
            injector: asyncio.Task[None] | None = None
            typed: list[str] = []
            try:
                await server.wait_for_session(1, timeout_s=10)  # the bot is built and connecting
                injector = asyncio.create_task(_inject(server, bot, rng, counts, done, late_share))
                while sum(counts.values()) + summarizer.faults < faults:
                    if run_task.done():
                        break
                    text = f"turn {len(typed) + 1:05d} {rng.getrandbits(32):08x}"
                    typed.append(text)
                    seen = view.replies
                    await lines.put(text)
                    await _wait_reply(view, seen, REPLY_WAIT_S)
                done.set()
                await injector
                # One last turn, answered: the conversation works after everything.
                final = f"final turn {rng.getrandbits(32):08x}"
                typed.append(final)
                seen = view.replies
                await lines.put(final)
                await _wait_reply(view, seen, 15.0)
                connected = bot.client.connected
            finally:
                done.set()
                if injector is not None:
                    injector.cancel()
                bot.stop()
                exit_code = await run_task
        counts.update({k: v for k, v in summarizer.calls.items() if k != "summary_ok"})
        records = read_records(settings.transcript_path or base / "transcript.jsonl")
    user_texts = Counter(
        str(r.get("text")) for r in records if r.get("type") == "turn" and r.get("role") == "user"
    )
    assert bot.client is not None
    stats = bot.client.stats
    recoveries = {
        "reconnects": stats.reconnects,
        "expiries_recovered": stats.expiries,
        "rollovers": stats.rollovers,
        "compactions": bot.core.compactor.stats.compactions,
        "compaction_fallbacks": bot.core.compactor.stats.fallbacks,
        "compactions_abandoned": bot.core.compactor.stats.abandoned,
        "malformed_frames_dropped": bot.client.parser.stats.malformed_json,
        "replies": view.replies,
    }
    lost_sends = {
        "outbox_discarded_on_new_session": stats.outbox_discarded_on_new_session,
        "outbox_dropped": stats.outbox_dropped,
    }
    return SoakResult(
        faults=counts,
        recoveries=recoveries,
        typed=typed,
        transcript_counts={t: user_texts.get(t, 0) for t in typed},
        connected_at_end=connected,
        exit_code=exit_code,
        seconds=time.monotonic() - started,
        errors_shown=len(view.errors),
        lost_sends=lost_sends,
    )


def report(result: SoakResult) -> list[Figure]:
    """The soak's figures: each fault and each recovery counted, and the verdict."""

    def listed(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in counts.items())

    return [
        Figure(
            "soak: faults injected",
            str(result.total_faults),
            target=">= requested",
            note=listed(dict(sorted(result.faults.items()))),
        ),
        Figure(
            "soak: recoveries",
            listed({k: result.recoveries.get(k, 0) for k in ("reconnects", "rollovers")}),
            note=f"{listed(result.recoveries)}; dropped by the app: {listed(result.lost_sends)}",
        ),
        Figure(
            "soak: user turns in the transcript exactly once",
            f"{len(result.typed) - len(result.missing_turns) - len(result.duplicated_turns)}"
            f"/{len(result.typed)}",
            target="all",
            note=f"missing {len(result.missing_turns)}, duplicated {len(result.duplicated_turns)}",
        ),
        Figure(
            "soak: client connected at the end",
            str(result.connected_at_end),
            target="True",
            note=f"wall time {result.seconds:.1f} s",
        ),
    ]


def figures(quick: bool, faults: int = 300, seed: int = 1) -> list[Figure]:
    result = asyncio.run(run_soak(40 if quick else faults, seed))
    return report(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=300, help="faults to inject (default 300)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault schedule")
    parser.add_argument("--quick", action="store_true", help="40 faults (CI, smoke)")
    args = parser.parse_args()
    result = asyncio.run(run_soak(40 if args.quick else args.faults, args.seed))
    print_figures("Soak with injected faults", report(result))
    if not result.ok:
        for text in result.missing_turns:
            print(f"missing from the transcript: {text!r}")
        for text in result.duplicated_turns:
            print(f"more than once in the transcript: {text!r}")
        sys.exit(1)


if __name__ == "__main__":
    main()
