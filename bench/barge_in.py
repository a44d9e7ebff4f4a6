"""Playback start and barge-in on the virtual rig: `voicebot run` vs the tutorial baseline.

Both bots run as subprocesses on the rig's default devices (microphone `vmic.monitor`,
speaker `vspk`) against a fake Realtime server in this process, with the same server config.
The bench talks like a person at the machine: it plays a short utterance into `vmic`, hears
the reply on `vspk.monitor`, and after `INTERRUPT_AFTER_S` of it talks over it with the next
utterance, whose reply is the next one measured (a chain of replies, each interrupted).

Time stamps are all `time.monotonic()` (one clock for every process on Linux): the fake
server's send time of each frame (`SendStamps`) and the capture time of each monitor sample
(`Monitor`, late by the monitor's own capture latency of a few ms, not corrected).

Figures, per reply:
- first audio delta sent -> first sound on the monitor (black-box, both bots). This includes
  the device's output latency (printed: what PortAudio reports for a stream like the
  player's), which the target (one 20 ms block + the 60 ms jitter target) leaves out; the
  project's own metric `first_delta_to_first_sample` stops where the sample is handed to the
  device, and is printed too. The fake server's deltas hold 100 ms of audio (its default),
  so the first delta alone fills the jitter target and playback starts at the next block.
- `speech_started` sent -> the reply's last sound on the monitor. The project flushes with a
  5 ms fade; what the device already buffered still plays out. The baseline cannot be
  interrupted: the rest of the reply plays, measured as it is.
- `audio_end_ms` of the truncate the server received, against what the monitor had played
  of that item when the server sent `speech_started` (the moment the user is taken to have
  cut in). The baseline sends no truncate.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from common import Figure, median
from rig import (
    RATE,
    BenchError,
    BotProcess,
    Monitor,
    SendStamps,
    baseline_command,
    play_into_mic,
    project_command,
    require_rig,
    run_bench,
    wait_mic_streaming,
    wait_sent,
    workdir,
)

from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.transport.events import ClientEventType, ServerEventType

SPEED = 2.0
"""The fake server streams replies at twice real time (both bots)."""
REPLY = "Sure, here is a short answer."
REPLY_MS = len(REPLY) * FakeServerConfig().ms_per_char  # 1.9 s
UTTERANCE_S = 0.4
INTERRUPT_AFTER_S = 0.6
"""How much of each reply is heard before the next utterance talks over it."""
QUIET_MS = 150.0
"""Silence that ends a reply on the monitor (the rest of a reply has no gap this long)."""
BLOCK_MS = 20.0
JITTER_MS = 60.0
PROJECT_SETTINGS = ("--echo", "off", "--chunk-ms", "20", "--jitter-ms", "60")
"""Headphones (no echo path on the rig, and the baseline has no echo handling); the defaults
of block and jitter, spelled out because the targets depend on them."""


@dataclass(frozen=True)
class Reply:
    """What was measured of one reply."""

    item_id: str | None
    first_sound_s: float  # first delta sent -> first sound on the monitor
    silence_s: float  # speech_started sent -> last sound of the reply on the monitor
    heard_at_cut_ms: float  # reply audio on the monitor when speech_started was sent
    heard_ms: float  # all of the reply the monitor heard


@dataclass
class Run:
    name: str
    replies: list[Reply]
    truncates: dict[str, int]  # item_id -> audio_end_ms the server received
    metrics: dict[str, Any] | None


def server_config(replies: int) -> FakeServerConfig:
    return FakeServerConfig(speed=SPEED, scenario=Scenario(replies=[REPLY] * (replies + 3)))


def utterance(seed: int) -> np.ndarray[Any, Any]:
    return np.concatenate([speech_like(UTTERANCE_S, seed=seed), silence(0.1)])


async def run_bot(name: str, count: int, monitor: Monitor) -> Run:
    """Run one bot through `count` interrupted replies; what was measured."""
    delta = ServerEventType.AUDIO_DELTA.value
    created = ServerEventType.RESPONSE_CREATED.value
    started_kind = ServerEventType.SPEECH_STARTED.value
    replies: list[Reply] = []
    async with FakeRealtimeServer(server_config(count)) as server:
        work = workdir(f"bench-barge-{name}-")
        command = (
            project_command(server.url, work, *PROJECT_SETTINGS)
            if name == "project"
            else baseline_command(server.url)
        )
        bot = BotProcess(name, command, work)
        try:
            session = await server.wait_for_session(1, 30)
            stamps = SendStamps(session)
            await wait_mic_streaming(server, session, bot, 0.5)
            previous_end = monitor.position
            spoke = time.monotonic()
            play_into_mic(utterance(0))
            for index in range(count):
                bot.check_alive()
                response = await wait_sent(server, stamps, created, spoke, 15)
                first = await wait_sent(server, stamps, delta, response.at, 15)
                since = max(previous_end, monitor.sample_at(first.at))
                onset = await asyncio.to_thread(monitor.wait_onset, since, 15)
                await asyncio.to_thread(
                    monitor.wait_samples, onset + round(INTERRUPT_AFTER_S * RATE), 15
                )
                spoke = time.monotonic()
                play_into_mic(utterance(index + 1))
                cut = await wait_sent(server, stamps, started_kind, spoke, 10)
                burst = await asyncio.to_thread(monitor.wait_quiet, onset, QUIET_MS, 15)
                if burst.start != onset or burst.ms > REPLY_MS + QUIET_MS:
                    raise BenchError(
                        f"{name}: reply {index} heard as {burst.ms:.0f} ms of sound from "
                        f"{burst.start - onset} samples after its onset: not one reply"
                    )
                replies.append(
                    Reply(
                        item_id=first.item_id,
                        first_sound_s=monitor.time_of(onset) - first.at,
                        silence_s=monitor.time_of(burst.end) - cut.at,
                        heard_at_cut_ms=(monitor.sample_at(cut.at) - onset) * 1000.0 / RATE,
                        heard_ms=burst.ms,
                    )
                )
                previous_end = burst.end
        finally:
            await bot.stop()
        truncates = {
            str(event["item_id"]): int(event["audio_end_ms"])
            for event in session.received
            if event.get("type") == ClientEventType.ITEM_TRUNCATE.value
        }
    metrics = bot.metrics() if name == "project" else None
    bot.remove_workdir()
    return Run(name, replies, truncates, metrics)


def output_latency_ms() -> float:
    """The output latency PortAudio reports for a stream like the project's player."""
    from realtime_voicebot.audio.devices import load_sounddevice, supported_samplerate

    sd = load_sounddevice()
    rate = supported_samplerate(None, "output", RATE)
    stream = sd.OutputStream(
        samplerate=rate, channels=1, dtype="int16", blocksize=rate // 50, latency="low"
    )
    try:
        return float(stream.latency) * 1000
    finally:
        stream.close()


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if ordered else 0.0


def stat_ms(values: list[float]) -> str:
    """Median, p95 and count of values given in ms."""
    if not values:
        return "no data"
    return f"{median(values):.1f} ms (p95 {p95(values):.1f}, n={len(values)})"


def app_metric(run: Run, name: str) -> str:
    latency = (run.metrics or {}).get("latency", {}).get(name)
    if not latency:
        return "not recorded"
    return f"{latency['median_ms']:.1f} ms (p95 {latency['p95_ms']:.1f}, n={latency['count']})"


def truncate_errors(run: Run) -> tuple[list[float], list[float]]:
    """audio_end_ms - what the monitor had heard at the cut; and the monitor's tail after it."""
    errors, tails = [], []
    for reply in run.replies:
        end = run.truncates.get(reply.item_id or "")
        if end is None:
            continue
        errors.append(end - reply.heard_at_cut_ms)
        tails.append(reply.heard_ms - end)
    return errors, tails


def figures(quick: bool) -> list[Figure]:
    require_rig()
    count = 10 if quick else 30
    latency = output_latency_ms()
    with Monitor("vspk.monitor") as monitor:
        monitor.wait_samples(RATE // 10, 10, "recording")
        project = asyncio.run(run_bot("project", count, monitor))
        baseline = asyncio.run(run_bot("baseline", count, monitor))
    errors, tails = truncate_errors(project)
    missing = len(project.replies) - len(errors)
    config = f"fake server at {SPEED:g}x real time, replies of {REPLY_MS / 1000:.1f} s"
    return [
        Figure(
            "first delta -> first sample handed to the device (app metric)",
            app_metric(project, "first_delta_to_first_sample"),
            baseline="n/a (no metric; it plays after response.done)",
            target=f"<= {BLOCK_MS + JITTER_MS:.0f} ms (one block + jitter target)",
        ),
        Figure(
            "first delta sent -> first sound on vspk.monitor (black-box)",
            stat_ms([r.first_sound_s * 1000 for r in project.replies]),
            baseline=stat_ms([r.first_sound_s * 1000 for r in baseline.replies]),
            target=f"<= {BLOCK_MS + JITTER_MS:.0f} ms + device latency",
            note=f"includes the device output latency PortAudio reports, {latency:.1f} ms; "
            + config,
        ),
        Figure(
            "speech_started -> last sample handed to the device (app metric)",
            app_metric(project, "barge_in_to_silence"),
            baseline="n/a (cannot be interrupted)",
            target=f"<= {BLOCK_MS:.0f} ms",
        ),
        Figure(
            "speech_started sent -> silence on vspk.monitor (black-box)",
            stat_ms([r.silence_s * 1000 for r in project.replies]),
            baseline=stat_ms([r.silence_s * 1000 for r in baseline.replies]),
            target=f"<= {BLOCK_MS:.0f} ms + device latency",
            note=f"baseline: the rest of the reply plays; cut after {INTERRUPT_AFTER_S:g} s heard",
        ),
        Figure(
            "audio_end_ms - reply heard on the monitor at speech_started",
            stat_ms(errors) + f", |error| median {median([abs(e) for e in errors]):.1f} ms",
            baseline="n/a (no truncate)",
            target=f"within {BLOCK_MS:.0f} ms",
            note=f"{missing} replies without a truncate; after the cut the monitor still heard "
            f"{median(tails):.1f} ms (median) of the item",
        ),
    ]


def main() -> None:
    run_bench("Barge-in on the virtual rig (project vs baseline)", figures, __doc__)


if __name__ == "__main__":
    main()
