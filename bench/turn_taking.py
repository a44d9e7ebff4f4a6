"""Turn-taking with false-interruption handling: what it costs a real turn, and where to put
`interruption_min_ms`.

1. Latency of a real turn (`speech_end_to_first_delta`, the app's metric: the server's
   `speech_stopped` handled -> the reply's first audio delta) over spoken turns, with
   `false_interruption off` (the server creates each reply) and `resume` (the client asks for
   it once the server commits the turn), side by side in one run, next to the WebSocket
   round trip to the same server (a ping). Target: the difference within one round trip plus
   one 20 ms block.
2. Speech over a reply, by length: what the server VAD reports (less its prefix padding and
   closing silence) for a noise burst, an "mm-hm", a short word and a real interruption, and
   what the bot decided with the default `interruption_min_ms`.

The fake server's VAD is an energy detector; the real service's may report lengths a little
differently, which is why the transcript (empty, or only a backchannel) decides too.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Figure, bench_main, median
from headless import CountingPlayer, PacedInput, QuietView, bench_settings, quiet_logs

from realtime_voicebot.app import RunOptions, VoiceBot
from realtime_voicebot.config import Settings
from realtime_voicebot.core import actions as a
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer

TURN_S = 0.8
PAUSE_S = 2.5
STORY = "Once upon a time a fox lived by the river and sang every single night. " * 2
BURSTS = [
    (0.08, "*click*"),
    (0.15, "*cough*"),
    (0.3, "mm-hm"),
    (0.45, "yeah"),
    (0.4, "no"),
    (1.0, "wait, what was the fox called?"),
]


async def ws_round_trip_ms(settings: Settings, pings: int = 20) -> float:
    from websockets.asyncio.client import connect

    from realtime_voicebot.transport.endpoint import build_endpoint

    endpoint = build_endpoint(settings)
    async with connect(endpoint.url, additional_headers=endpoint.headers, compression=None) as ws:
        await ws.recv()  # session.created
        times = []
        for _ in range(pings):
            started = time.perf_counter()
            await (await ws.ping())
            times.append((time.perf_counter() - started) * 1000)
    return median(times)


async def run_turns(mode: str, turns: int) -> tuple[list[float], float]:
    """Spoken turns, each waiting for its reply; the latencies and the round trip."""
    replies = [f"Answer number {n}." for n in range(turns)]
    scenario = Scenario(user_transcripts=[f"question {n}" for n in range(turns)], replies=replies)
    async with FakeRealtimeServer(FakeServerConfig(speed=4.0, scenario=scenario)) as server:
        with tempfile.TemporaryDirectory() as tmp:
            settings = bench_settings(server.url, Path(tmp), false_interruption=mode)
            rtt = await ws_round_trip_ms(settings)
            mic, player = PacedInput(), CountingPlayer()
            bot = VoiceBot(settings, RunOptions(), QuietView(), audio_in=mic, audio_out=player)
            task = asyncio.create_task(bot.run())
            for n in range(turns):
                mic.say(TURN_S, seed=n)
                await bot.until(lambda n=n: bot.core.stats.completed_replies > n, 30)
                await bot.audio.played_out()
            bot.stop()
            await task
    return list(bot.metrics.timings.get("speech_end_to_first_delta", [])), rtt


async def run_bursts(settings_overrides: dict[str, Any]) -> list[tuple[float, str, float, str]]:
    """Each burst over a playing reply: (seconds, words, net ms reported, decision)."""
    results = []
    for seconds, words in BURSTS:
        scenario = Scenario(user_transcripts=["tell me a story", words], replies=[STORY, "Ada."])
        async with FakeRealtimeServer(FakeServerConfig(speed=1.0, scenario=scenario)) as server:
            with tempfile.TemporaryDirectory() as tmp:
                settings: Settings = bench_settings(server.url, Path(tmp), **settings_overrides)
                mic, player = PacedInput(), CountingPlayer()
                bot = VoiceBot(settings, RunOptions(), QuietView(), audio_in=mic, audio_out=player)
                decisions: list[str] = []
                bot.subscribe(
                    lambda x, d=decisions: (
                        d.append(x.reason if isinstance(x, a.InterruptionIgnored) else "barge-in")
                        if isinstance(x, a.InterruptionIgnored | a.BargeIn)
                        else None
                    )
                )
                task = asyncio.create_task(bot.run())
                mic.say(TURN_S, seed=1)
                await bot.until(lambda p=player: p.playing_item_id is not None, 30)
                await asyncio.sleep(0.8)  # into the story
                mic.say(seconds, seed=2)
                await bot.until(lambda d=decisions: bool(d), 30)
                session = server.sessions[-1]
                starts = [e for e in session.sent if e["type"].endswith("speech_started")]
                stops = [e for e in session.sent if e["type"].endswith("speech_stopped")]
                overhead = settings.vad_prefix_padding_ms + settings.vad_silence_ms
                net = stops[-1]["audio_end_ms"] - starts[-1]["audio_start_ms"] - overhead
                bot.stop()
                await task
        results.append((seconds, words, float(net), decisions[0]))
    return results


def figures(quick: bool) -> list[Figure]:
    quiet_logs()
    turns = 6 if quick else 20
    off, rtt_off = asyncio.run(run_turns("off", turns))
    resume, rtt_resume = asyncio.run(run_turns("resume", turns))
    rtt = median([rtt_off, rtt_resume])
    difference = median(resume) - median(off)
    budget = rtt + 20.0 / 1000 * 1000
    rows = [
        Figure(
            "Real turn, speech_stopped -> first delta (median), false_interruption resume vs off",
            f"{median(resume) * 1000:.1f} ms (resume, n={len(resume)})",
            f"{median(off) * 1000:.1f} ms (off, n={len(off)})",
            f"difference <= round trip + 20 ms ({budget:.1f} ms)",
            f"difference {difference * 1000:+.1f} ms; WebSocket round trip {rtt:.2f} ms "
            "(loopback, median of 20 pings); fake server at 4x real time",
        )
    ]
    bursts = asyncio.run(run_bursts({"false_interruption": "resume"}))
    for seconds, words, net, decision in bursts:
        rows.append(
            Figure(
                f"Speech over a reply: {seconds * 1000:.0f} ms ({words!r})",
                f"{decision}",
                target="noise/backchannel resumed, words barge in",
                note=f"VAD reported {net:.0f} ms of speech (padding and silence removed); "
                "interruption_min_ms 250",
            )
        )
    return rows


def main() -> None:
    bench_main("Turn-taking", figures, __doc__)


if __name__ == "__main__":
    main()
