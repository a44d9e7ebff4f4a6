"""How many headless sessions one process drives at real time with event-loop lag p99 < 20 ms.

One process runs N `VoiceBot`s on one event loop, each with its own connection to the fake
server, a real-time microphone (`PacedInput`: a 20 ms block every 20 ms, a 1 s utterance
every `TURN_S` seconds, the sessions staggered) and a speaker pulled at real time
(`CountingPlayer`). The fake server answers at real-time speed (1.0) from its own process, so
its cost is not counted here. A `LagProbe` (a task sleeping 10 ms) measures the loop's lag
over 12 s (4 s with --quick) after a warm-up; N doubles (1, 2, 4, ...) until the p99 passes
the target or the last step; the full run then tries once halfway between the last N under
the target and the first over it. The figure is the largest N whose p99 stayed under it.
Replies completed are counted to show the sessions really talked.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import Figure, bench_main
from headless import (
    CountingPlayer,
    LagProbe,
    PacedInput,
    QuietView,
    bench_settings,
    fake_server_process,
    percentile,
    quiet_logs,
)

from realtime_voicebot.app import RunOptions, VoiceBot

TARGET_P99_S = 0.020
TURN_S = 4.0
WARMUP_S = 2.0


@dataclass
class Step:
    sessions: int
    lag_p99_s: float
    lag_max_s: float
    replies: int
    errors: int

    @property
    def ok(self) -> bool:
        return self.lag_p99_s < TARGET_P99_S


async def _talk(mic: PacedInput, offset_s: float, seed: int) -> None:
    """The user: an utterance every TURN_S seconds, starting after `offset_s`."""
    await asyncio.sleep(offset_s)
    turn = 0
    while True:
        mic.say(1.0, seed=seed * 1000 + turn)
        turn += 1
        await asyncio.sleep(TURN_S)


async def run_step(url: str, tmp: Path, sessions: int, measure_s: float) -> Step:
    bots: list[VoiceBot] = []
    tasks: list[asyncio.Task[int]] = []
    users: list[asyncio.Task[None]] = []
    views: list[QuietView] = []
    probe = LagProbe().start()
    try:
        for n in range(sessions):
            folder = tmp / f"s{sessions}-{n}"
            folder.mkdir()
            settings = bench_settings(url, folder, summarizer="extractive")
            mic, view = PacedInput(), QuietView()
            bot = VoiceBot(settings, RunOptions(), view, audio_in=mic, audio_out=CountingPlayer())
            bots.append(bot)
            views.append(view)
            tasks.append(asyncio.create_task(bot.run()))
            users.append(asyncio.create_task(_talk(mic, n * TURN_S / sessions, n)))
        await asyncio.sleep(WARMUP_S)  # connections and session set-up are not the steady state
        start = time.monotonic()
        replies_before = sum(bot.core.stats.completed_replies for bot in bots)
        await asyncio.sleep(measure_s)  # the measurement itself
        end = time.monotonic()
        replies = sum(bot.core.stats.completed_replies for bot in bots) - replies_before
    finally:
        await probe.stop()
        for user in users:
            user.cancel()
        for bot in bots:
            bot.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(*tasks, *users, return_exceptions=True)
    lags = probe.lags(start, end)
    return Step(
        sessions=sessions,
        lag_p99_s=percentile(lags, 99),
        lag_max_s=max(lags, default=float("nan")),
        replies=replies,
        errors=sum(len(view.errors) for view in views),
    )


async def ramp(quick: bool) -> list[Step]:
    counts = [1, 2, 4, 8, 16, 32] if quick else [1, 2, 4, 8, 16, 32, 64, 128]
    measure_s = 4.0 if quick else 12.0
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="bench-concurrent-") as tmp:
        async with fake_server_process(speed=1.0) as url:
            for sessions in counts:
                step = await run_step(url, Path(tmp), sessions, measure_s)
                steps.append(step)
                if not step.ok:
                    break
            last_ok = max((s.sessions for s in steps if s.ok), default=0)
            between = (last_ok + steps[-1].sessions) // 2
            if not quick and not steps[-1].ok and last_ok < between < steps[-1].sessions:
                steps.append(await run_step(url, Path(tmp), between, measure_s))
    return sorted(steps, key=lambda s: s.sessions)


def figures(quick: bool) -> list[Figure]:
    quiet_logs()
    steps = asyncio.run(ramp(quick))
    passing = [s.sessions for s in steps if s.ok]
    best = max(passing, default=0)
    ramp_text = ", ".join(
        f"N={s.sessions}: p99 {s.lag_p99_s * 1000:.1f} ms, {s.replies} replies" for s in steps
    )
    failing = [s.sessions for s in steps if not s.ok]
    limit = (
        f"N={min(failing)} missed the target"
        if failing
        else f"ramp ended at N={steps[-1].sessions} still under target"
    )
    return [
        Figure(
            "Concurrent real-time sessions in one process (event-loop lag p99 < 20 ms)",
            f"{best}",
            "- (one process per session)",
            target="lag p99 < 20 ms",
            note=f"{limit}; {ramp_text}; errors {sum(s.errors for s in steps)}",
        )
    ]


def main() -> None:
    bench_main("Concurrent headless sessions", figures, __doc__)


if __name__ == "__main__":
    main()
