"""CPU seconds per minute of conversation on the virtual rig: `voicebot run` vs the baseline.

Each bot runs as a subprocess on the rig's default devices (microphone `vmic.monitor`,
speaker `vspk`) against a fake Realtime server in this process, and is measured from
`/proc/<pid>/stat` (user + system time of all its threads, 10 ms ticks) over one window per
mode:

- LISTENING: the microphone streams room noise (-60 dBFS, under the VAD threshold) and no
  reply plays: the idle cost of an open conversation.
- SPEAKING: a long reply plays. The window starts at the reply's first sound on
  `vspk.monitor`, for both bots; the project is still receiving the reply for the first part
  of it (the server streams at `SPEED` times real time), while the baseline received all of
  it before it started to play.

The project runs with its defaults (echo gate on, plain output as stdout is not a terminal),
so the figure is what a headless `voicebot run` costs. The target is under 1% of one core:
0.6 CPU-seconds per minute.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from common import Figure
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
from realtime_voicebot.transport.events import ServerEventType

SPEED = 2.0
"""The fake server streams replies at twice real time (as in bench/barge_in.py)."""
MS_PER_CHAR = 65.0
NOISE_DBFS = -60.0
TARGET_CPU_S_PER_MIN = 0.6


@dataclass(frozen=True)
class Window:
    """CPU time a bot used over a stretch of wall time."""

    cpu_s: float
    wall_s: float

    @property
    def per_minute(self) -> float:
        return self.cpu_s / self.wall_s * 60.0


def room_noise(seconds: float, seed: int = 7) -> np.ndarray[Any, Any]:
    """White noise at `NOISE_DBFS` RMS: an open microphone in a quiet room."""
    rng = np.random.default_rng(seed)
    level = 32767.0 * 10 ** (NOISE_DBFS / 20)
    return np.clip(rng.normal(0.0, level, round(seconds * RATE)), -32768, 32767).astype(np.int16)


async def measure(bot: BotProcess, seconds: float) -> Window:
    """The bot's CPU time over the next `seconds` of wall time (the window is the point)."""
    cpu0, wall0 = bot.cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    return Window(bot.cpu_seconds() - cpu0, time.monotonic() - wall0)


def reply_text(seconds: float) -> str:
    sentence = "This is a long answer that keeps playing for a while. "
    chars = round(seconds * 1000 / MS_PER_CHAR)
    return (sentence * (chars // len(sentence) + 1))[:chars]


async def run_bot(name: str, window_s: float, monitor: Monitor) -> tuple[Window, Window, float]:
    """The bot's listening and speaking windows, and the share of the speaking window during
    which the reply was audible on the monitor."""
    reply = reply_text(window_s + 3.0)
    config = FakeServerConfig(
        speed=SPEED, ms_per_char=MS_PER_CHAR, scenario=Scenario(replies=[reply])
    )
    async with FakeRealtimeServer(config) as server:
        work = workdir(f"bench-cpu-{name}-")
        command = (
            project_command(server.url, work) if name == "project" else baseline_command(server.url)
        )
        bot = BotProcess(name, command, work)
        try:
            session = await server.wait_for_session(1, 30)
            stamps = SendStamps(session)
            await wait_mic_streaming(server, session, bot, 1.0)

            play_into_mic(room_noise(window_s + 1.0))
            received = session.input_samples
            listening = await measure(bot, window_s)
            heard = (session.input_samples - received) / RATE
            if heard < 0.8 * listening.wall_s:
                raise BenchError(f"{name} streamed {heard:.1f} s of microphone audio only")
            if stamps.first(ServerEventType.SPEECH_STARTED.value, 0.0) is not None:
                raise BenchError("the room noise was taken for speech")

            since = monitor.position
            spoke = time.monotonic()
            play_into_mic(np.concatenate([speech_like(0.6, seed=1), silence(0.1)]))
            await wait_sent(server, stamps, ServerEventType.AUDIO_DELTA.value, spoke, 15)
            await asyncio.to_thread(monitor.wait_onset, since, 15 + window_s)
            start = monitor.position
            speaking = await measure(bot, window_s)
            audible = audible_fraction(monitor, start, monitor.position)
            if audible < 0.5:
                raise BenchError(f"{name}: the reply was audible for {audible:.0%} of the window")
            bot.check_alive()
        finally:
            await bot.stop()
    bot.remove_workdir()
    return listening, speaking, audible


def audible_fraction(monitor: Monitor, start: int, end: int) -> float:
    """The share of 10 ms frames of the monitor recording between `start` and `end` that
    hold sound."""
    frame = RATE // 100
    samples = np.abs(monitor.samples[start:end].astype(np.int32))
    frames = samples[: samples.size // frame * frame].reshape(-1, frame)
    return float(np.mean(frames.max(axis=1) > monitor.level)) if frames.size else 0.0


STREAMS_ONLY = """
import json, os, sys, time
import numpy as np
import sounddevice as sd
mode, seconds = sys.argv[1], float(sys.argv[2])
streams = [sd.RawInputStream(samplerate=24000, channels=1, dtype="int16", blocksize=480,
                             callback=lambda *args: None)]
if mode == "in+out":
    def fill(outdata, frames, time_info, status):
        outdata.fill(0)
    streams.append(sd.OutputStream(samplerate=24000, channels=1, dtype="int16", blocksize=480,
                                   latency="low", callback=fill))
for stream in streams:
    stream.start()
time.sleep(1.0)
before, wall = os.times(), time.monotonic()
time.sleep(seconds)
after = os.times()
cpu = after.user - before.user + after.system - before.system
print(json.dumps({"cpu_s": cpu, "wall_s": time.monotonic() - wall}))
"""
"""The floor under any bot on this machine: PortAudio streams at 20 ms blocks that do nothing
(`in`: the microphone alone, like the baseline while listening; `in+out`: microphone and
speaker, like the project, whose speaker stream stays open), measured by the process itself."""


def start_streams_only(mode: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", STREAMS_ONLY, mode, str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def streams_only_result(proc: subprocess.Popen[str]) -> Window:
    out, _ = proc.communicate(timeout=60)
    if proc.returncode != 0 or not out.strip():
        raise BenchError(f"the streams-only probe failed with {proc.returncode}")
    data = json.loads(out.strip().splitlines()[-1])
    return Window(float(data["cpu_s"]), float(data["wall_s"]))


def shown(window: Window) -> str:
    return f"{window.per_minute:.2f} CPU-s/min ({window.per_minute / 60 * 100:.2f}% of one core)"


def figures(quick: bool) -> list[Figure]:
    require_rig()
    window_s = 8.0 if quick else 20.0
    # The floor probes run alongside the project's start-up and listening window: they only
    # open streams, so they cost the bot little, and they add no wall time to the bench.
    probes = [start_streams_only(mode, window_s) for mode in ("in+out", "in")]
    with Monitor("vspk.monitor") as monitor:
        monitor.wait_samples(RATE // 10, 10, "recording")
        project = asyncio.run(run_bot("project", window_s, monitor))
        baseline = asyncio.run(run_bot("baseline", window_s, monitor))
    floor_in_out, floor_in = (streams_only_result(probe) for probe in probes)
    target = f"< {TARGET_CPU_S_PER_MIN} CPU-s/min (1% of one core)"
    return [
        Figure(
            "CPU of idle PortAudio streams alone (20 ms blocks, no work)",
            "in+out " + shown(floor_in_out),
            baseline="in " + shown(floor_in),
            target=target,
            note="the floor on this machine's ALSA -> PulseAudio path: the project keeps a "
            "microphone and a speaker stream open, the baseline a microphone while listening",
        ),
        Figure(
            "CPU while listening (mic streaming room noise)",
            shown(project[0]),
            baseline=shown(baseline[0]),
            target=target,
            note=f"{window_s:g} s window, /proc/<pid>/stat utime+stime",
        ),
        Figure(
            "CPU while speaking (a long reply playing)",
            shown(project[1]),
            baseline=shown(baseline[1]),
            target=target,
            note=f"{window_s:g} s window from the first sound, reply audible "
            f"{project[2]:.0%} / {baseline[2]:.0%} of it; server at {SPEED:g}x real time",
        ),
    ]


def main() -> None:
    run_bench("CPU per minute of conversation on the virtual rig", figures, __doc__)


if __name__ == "__main__":
    main()
