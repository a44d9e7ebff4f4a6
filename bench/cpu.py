"""CPU seconds per minute of conversation on the virtual rig: `voicebot run` vs the baseline.

Five bots run as subprocesses on the rig's default devices (microphone `vmic.monitor`,
speaker `vspk`) against a fake Realtime server in this process: the project as it runs by
default (one callback for microphone and speaker, `DuplexAudio`, output-driven on ALSA, 40 ms
microphone blocks, echo cancellation), the same with echo handling off, with two streams
(`--audio-streams separate`), the project as it ran before (two streams, 20 ms microphone
blocks), and the baseline: the first pair is the canceller's cost, the next two isolate one
callback against two streams and the microphone block size. They
run in turn, in `ROUNDS` rounds (the order rotates), so that the load other processes put on
the machine falls on all of them alike. Each is measured from
`/proc/<pid>/task/*/schedstat` (nanoseconds on a CPU of all its threads) over `WINDOWS`
consecutive windows per mode; a figure is the median over every window of every round:

- LISTENING: the microphone streams room noise (-60 dBFS, under the VAD threshold) and no
  reply plays: the idle cost of an open conversation.
- SPEAKING: a long reply plays. The window starts at the reply's first sound on
  `vspk.monitor`, for both bots; the project is still receiving the reply for the first part
  of it (the server streams at `SPEED` times real time), while the baseline received all of
  it before it started to play.

The project runs with its defaults (echo cancellation on, plain output as stdout is not a
terminal), so the first figure is what a headless `voicebot run` costs; the others turn echo
handling off, the work the baseline does, to compare the audio plumbing itself. The target
is under 1% of one core: 0.6 CPU-seconds per minute.

The first figure is the floor under any bot: PortAudio streams at 20 ms blocks whose
callbacks do nothing, measured alone before the bots, the same way (median of windows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
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
ROUNDS = 2
WINDOWS = 4
WINDOW_S = 5.0
BOTS: dict[str, tuple[str, ...]] = {
    "one callback, aec (default)": (),
    "one callback, echo off (the baseline's work)": ("--echo", "off"),
    "two streams, echo off": ("--audio-streams", "separate", "--echo", "off"),
    "two streams, 20 ms mic blocks, echo off (before)": (
        "--audio-streams",
        "separate",
        "--mic-block-ms",
        "20",
        "--echo",
        "off",
    ),
    "baseline": (),
}
"""The bots measured: the project's settings for each (the baseline takes none)."""
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


def thread_cpu_ns(pid: int) -> dict[str, int]:
    """Nanoseconds each thread of a process has run on a CPU (`/proc/<pid>/task/*/schedstat`:
    exact, where `/proc/<pid>/stat` counts 10 ms ticks)."""
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):  # the thread just ended
            times[task.name] = int((task / "schedstat").read_text().split()[0])
    return times


def cpu_between(before: dict[str, int], after: dict[str, int]) -> float:
    """CPU seconds between two `thread_cpu_ns` readings (a thread that ended in between
    loses its share of the window; the bots' threads live as long as they do)."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items()) / 1e9


async def measure(bot: BotProcess, seconds: float, windows: int) -> list[Window]:
    """The bot's CPU time over the next `windows` consecutive windows of `seconds` each
    (the windows are the point)."""
    result = []
    bot.check_alive()
    cpu0, wall0 = thread_cpu_ns(bot.pid), time.monotonic()
    for _ in range(windows):
        await asyncio.sleep(seconds)
        bot.check_alive()
        cpu1, wall1 = thread_cpu_ns(bot.pid), time.monotonic()
        result.append(Window(cpu_between(cpu0, cpu1), wall1 - wall0))
        cpu0, wall0 = cpu1, wall1
    return result


def median_window(windows: list[Window]) -> Window:
    """The window of median CPU per wall time (the lower middle one for an even count)."""
    ranked = sorted(windows, key=lambda w: w.per_minute)
    return ranked[(len(ranked) - 1) // 2]


def reply_text(seconds: float) -> str:
    sentence = "This is a long answer that keeps playing for a while. "
    chars = round(seconds * 1000 / MS_PER_CHAR)
    return (sentence * (chars // len(sentence) + 1))[:chars]


@dataclass
class BotRun:
    """One bot's windows over the rounds."""

    listening: list[Window]
    speaking: list[Window]
    audible: list[float]


async def run_bot(name: str, windows: int, monitor: Monitor, run: BotRun) -> None:
    """Measure one bot: `windows` listening windows, then as many speaking windows while a
    long reply plays; adds them to `run`."""
    window_s = WINDOW_S * windows
    reply = reply_text(window_s + 3.0)
    config = FakeServerConfig(
        speed=SPEED, ms_per_char=MS_PER_CHAR, scenario=Scenario(replies=[reply])
    )
    async with FakeRealtimeServer(config) as server:
        work = workdir(f"bench-cpu-{name.replace(' ', '-')}-")
        command = (
            baseline_command(server.url)
            if name == "baseline"
            else project_command(server.url, work, *BOTS[name])
        )
        bot = BotProcess(name, command, work)
        try:
            session = await server.wait_for_session(1, 30)
            stamps = SendStamps(session)
            await wait_mic_streaming(server, session, bot, 1.0)

            play_into_mic(room_noise(window_s + 1.0))
            received = session.input_samples
            listening = await measure(bot, WINDOW_S, windows)
            heard = (session.input_samples - received) / RATE
            listened = sum(w.wall_s for w in listening)
            if heard < 0.8 * listened:
                raise BenchError(f"{name} streamed {heard:.1f} s of microphone audio only")
            if stamps.first(ServerEventType.SPEECH_STARTED.value, 0.0) is not None:
                raise BenchError("the room noise was taken for speech")

            since = monitor.position
            spoke = time.monotonic()
            play_into_mic(np.concatenate([speech_like(0.6, seed=1), silence(0.1)]))
            await wait_sent(server, stamps, ServerEventType.AUDIO_DELTA.value, spoke, 15)
            await asyncio.to_thread(monitor.wait_onset, since, 15 + window_s)
            start = monitor.position
            speaking = await measure(bot, WINDOW_S, windows)
            audible = audible_fraction(monitor, start, monitor.position)
            if audible < 0.5:
                raise BenchError(f"{name}: the reply was audible for {audible:.0%} of the window")
            bot.check_alive()
        finally:
            await bot.stop()
    bot.remove_workdir()
    run.listening.extend(listening)
    run.speaking.extend(speaking)
    run.audible.append(audible)


def audible_fraction(monitor: Monitor, start: int, end: int) -> float:
    """The share of 10 ms frames of the monitor recording between `start` and `end` that
    hold sound."""
    frame = RATE // 100
    samples = np.abs(monitor.samples[start:end].astype(np.int32))
    frames = samples[: samples.size // frame * frame].reshape(-1, frame)
    return float(np.mean(frames.max(axis=1) > monitor.level)) if frames.size else 0.0


STREAMS_ONLY = """
import json, os, sys, time
from pathlib import Path
import sounddevice as sd
def cpu_ns():
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total
mode, seconds, windows = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
options = dict(samplerate=24000, dtype="int16", blocksize=480, latency="low")
silence = bytes(960)
def play(outdata, frames, time_info, status):
    outdata[:] = silence
if mode == "in":
    streams = [sd.RawInputStream(channels=1, callback=lambda *args: None, **options)]
elif mode == "in+out":
    streams = [sd.RawInputStream(channels=1, callback=lambda *args: None, **options),
               sd.RawOutputStream(channels=1, callback=play, **options)]
elif mode == "output-driven":
    mic = sd.RawInputStream(channels=1, **options)
    def play_and_drain(outdata, frames, time_info, status):
        outdata[:] = silence
        available = mic.read_available
        if available >= 480:
            mic.read(available - available % 480)
    streams = [mic, sd.RawOutputStream(channels=1, callback=play_and_drain, **options)]
else:  # full-duplex
    def duplex(indata, outdata, frames, time_info, status):
        outdata[:] = silence
    streams = [sd.RawStream(channels=(1, 1), callback=duplex, **options)]
for stream in streams:
    stream.start()
time.sleep(1.0)
results = []
for _ in range(windows):
    before, wall = cpu_ns(), time.monotonic()
    time.sleep(seconds)
    results.append({"cpu_s": (cpu_ns() - before) / 1e9, "wall_s": time.monotonic() - wall})
print(json.dumps(results))
"""
"""The floor under any bot on this machine: PortAudio streams at 20 ms blocks whose callbacks
do nothing, measured by the process itself. `in`: a microphone callback stream (the baseline
while listening); `in+out`: microphone and speaker callback streams (the project with two
streams); `output-driven`: one speaker callback that also drains a blocking-mode microphone
stream (the project's one callback on ALSA); `full-duplex`: one PortAudio duplex stream
(`sounddevice.RawStream`), which PortAudio's ALSA host API runs through the PulseAudio plugin
by busy-polling."""

FLOOR_MODES = ("in", "in+out", "output-driven", "full-duplex")


def streams_only(mode: str, seconds: float, windows: int) -> list[Window]:
    proc = subprocess.run(
        [sys.executable, "-c", STREAMS_ONLY, mode, str(seconds), str(windows)],
        capture_output=True,
        text=True,
        timeout=60 + seconds * windows,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise BenchError(f"the {mode} streams-only probe failed with {proc.returncode}")
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    return [Window(float(row["cpu_s"]), float(row["wall_s"])) for row in rows]


def shown(window: Window) -> str:
    return f"{window.per_minute:.2f} CPU-s/min ({window.per_minute / 60 * 100:.2f}% of one core)"


def percent(windows: list[Window]) -> str:
    return f"{median_window(windows).per_minute / 60 * 100:.2f}%"


def figures(quick: bool) -> list[Figure]:
    require_rig()
    rounds, windows = (1, 2) if quick else (ROUNDS, WINDOWS)
    floors = {mode: streams_only(mode, WINDOW_S, windows) for mode in FLOOR_MODES}
    runs = {name: BotRun([], [], []) for name in BOTS}
    names = list(BOTS)
    with Monitor("vspk.monitor") as monitor:
        monitor.wait_samples(RATE // 10, 10, "recording")
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                asyncio.run(run_bot(name, windows, monitor, runs[name]))
    target = f"< {TARGET_CPU_S_PER_MIN} CPU-s/min (1% of one core)"
    count = f"median of {rounds * windows} windows of {WINDOW_S:g} s over {rounds} rounds"

    def project(mode: str) -> str:
        default, *others = (name for name in BOTS if name != "baseline")
        return f"{default} {shown(median_window(getattr(runs[default], mode)))}; " + "; ".join(
            f"{name} {percent(getattr(runs[name], mode))}" for name in others
        )

    audible = ", ".join(f"{min(run.audible):.0%}" for run in runs.values())
    return [
        Figure(
            "CPU of idle PortAudio streams alone (20 ms blocks, no work)",
            f"one callback (output-driven) {shown(median_window(floors['output-driven']))}; "
            f"in+out {percent(floors['in+out'])}; "
            f"full-duplex RawStream {percent(floors['full-duplex'])}",
            baseline="in " + shown(median_window(floors["in"])),
            target=target,
            note="the floor on this machine's ALSA -> PulseAudio path, each alone, median of "
            f"{windows} windows of {WINDOW_S:g} s: the project serves microphone and speaker "
            "from one callback (two streams as the fallback), the baseline keeps a "
            "microphone stream while listening; PortAudio's full-duplex stream busy-polls here",
        ),
        Figure(
            "CPU while listening (mic streaming room noise)",
            project("listening"),
            baseline=shown(median_window(runs["baseline"].listening)),
            target=target,
            note=f"{count}, CPU time of all threads from /proc/<pid>/task/*/schedstat",
        ),
        Figure(
            "CPU while speaking (a long reply playing)",
            project("speaking"),
            baseline=shown(median_window(runs["baseline"].speaking)),
            target=target,
            note=f"{count} from the first sound; reply audible at least {audible} of it "
            f"({', '.join(BOTS)}); server at {SPEED:g}x real time",
        ),
    ]


def main() -> None:
    run_bench("CPU per minute of conversation on the virtual rig", figures, __doc__)


if __name__ == "__main__":
    main()
