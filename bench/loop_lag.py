"""The receive loop's lag while a compaction's summary takes 2 s (LLM latency), project vs baseline.

Both run against the same kind of set-up in this process: the fake Realtime server, and
`FakeChatServer` answering chat completions after `CHAT_DELAY_S`. The summary threshold is
low and two turns are kept, so the compaction starts after the second spoken turn. The
microphone streams a 20 ms block every 20 ms the whole time (silence between utterances).

Black-box figure, measured the same way for both: the fake server stamps every client frame
it receives from the connection (`time.monotonic()`); the longest gap between two frames
around the summary (from just before the chat request arrives to 1 s after the summary is
back) is how long the client stopped talking. With the microphone streaming every 20 ms,
any gap much above 20 ms is the receive loop (or the whole event loop) stalled.

- Project: the real `VoiceBot`, headless: `PacedInput` (real-time microphone), a
  `CountingPlayer` speaker, summarizer `openai` pointed at the fake chat server. In-process
  probe as well: a task sleeping 10 ms measures how late it wakes up (`LagProbe`); its max
  and p99 over the summary window (chat request arrival -> compaction done) are the event
  loop's lag. The fake servers share that event loop (and the GIL), so this includes their
  cost: an upper bound.
- Baseline: `original/realtime_agent_cli.py` in a child process. It reads the microphone
  through sounddevice, so it gets a PulseAudio null sink as its microphone
  (`PULSE_SOURCE=lag_mic.monitor`, its speaker `PULSE_SINK=lag_spk`), and the utterances
  are played into that sink with `paplay`. Its summary call is blocking inside its receive
  loop, so no frame leaves while the chat request is in flight. It has no probe: black-box only.

The null sinks are loaded with `pactl load-module` and unloaded at the end; without
PulseAudio (pactl, paplay, a running daemon) the baseline is reported as not run, with why.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import shutil
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from common import Figure, bench_main
from headless import CountingPlayer, LagProbe, PacedInput, QuietView, bench_settings, percentile
from headless import quiet_logs as _quiet_logs
from numpy.typing import NDArray

from realtime_voicebot.app import RunOptions, VoiceBot
from realtime_voicebot.fake.chat import FakeChatConfig, FakeChatServer
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.transport.events import PCM_RATE

CHAT_DELAY_S = 2.0
THRESHOLD_TOKENS = 50
"""Low enough that the window passes it on the first reply; two items kept: due after turn 2."""
MAX_TURNS = 6
AFTER_S = 1.0
"""Streaming kept up after the summary is back, so the window closes on normal traffic."""
T = TypeVar("T")
BASELINE = Path(__file__).resolve().parent.parent / "original" / "realtime_agent_cli.py"


@dataclass
class Stall:
    """What the fake server saw of one client around one summary."""

    longest_gap_s: float
    first_frame_after_request_s: float
    frames: int


def stamp_frames(session: FakeSession) -> list[float]:
    """Stamp every client frame the session receives from now on (`time.monotonic()`)."""
    stamps: list[float] = []
    handle = session.handle_frame

    async def stamped(frame: str | bytes) -> None:
        stamps.append(time.monotonic())
        await handle(frame)

    session.handle_frame = stamped  # type: ignore[method-assign]
    return stamps


def stall(stamps: list[float], start: float, end: float) -> Stall:
    """The longest gap between client frames whose later frame falls in [start, end]."""
    gaps = [b - a for a, b in itertools.pairwise(stamps) if start <= b <= end]
    after = [t for t in stamps if t >= start]
    return Stall(
        longest_gap_s=max(gaps, default=float("nan")),
        first_frame_after_request_s=(after[0] - start) if after else float("nan"),
        frames=sum(1 for t in stamps if start <= t <= end),
    )


async def within(waiting: Awaitable[object], what: str) -> None:
    """Await an event-driven wait (it has its own timeout); its TimeoutError names `what`."""
    try:
        await waiting
    except TimeoutError:
        raise TimeoutError(f"timed out waiting for {what}") from None


def responses_done(session: FakeSession, count: int) -> bool:
    return len(session.responses) >= count and session.active_response is None


# --- project ---------------------------------------------------------------------------------


@dataclass
class ProjectResult:
    stall: Stall
    lag_max_s: float
    lag_p99_s: float
    probe_samples: int
    turns: int


async def run_project(tmp: Path) -> ProjectResult:
    chat = FakeChatServer(FakeChatConfig(delay_s=CHAT_DELAY_S)).start()
    server = FakeRealtimeServer(FakeServerConfig(speed=4.0))
    await server.start()
    probe = LagProbe().start()
    try:
        settings = bench_settings(
            server.url,
            tmp,
            summarizer="openai",
            summary_base_url=chat.base_url,
            summary_threshold=THRESHOLD_TOKENS,
            summary_keep_items=2,
            summary_timeout_s=CHAT_DELAY_S + 10,
        )
        mic, player, view = PacedInput(), CountingPlayer(), QuietView()
        bot = VoiceBot(settings, RunOptions(), view, audio_in=mic, audio_out=player)
        task = asyncio.create_task(bot.run())
        session = await server.wait_for_session(1, timeout_s=20)
        stamps = stamp_frames(session)
        turns = 0
        while not chat.request_times and turns < MAX_TURNS:
            mic.say(1.0, seed=turns)
            turns += 1
            done = functools.partial(responses_done, session, turns)
            await within(server.wait_for(done, 20), f"reply {turns}")
            reply_id = [i for i in session.items if i.role == "assistant"][-1].id
            await within(asyncio.wait_for(player.wait_finished(reply_id), 20), "the reply played")
        compacted = bot.until(lambda: bool(view.compactions_at), CHAT_DELAY_S + 15)
        await within(compacted, "the compaction")
        await asyncio.sleep(AFTER_S)  # measure: keep streaming after the summary is back
        bot.stop()
        async with asyncio.timeout(20):
            await task
    finally:
        await probe.stop()
        await server.stop()
        chat.stop()
    requested, done = chat.request_times[0], view.compactions_at[0]
    lags = probe.lags(requested, done)
    return ProjectResult(
        stall=stall(stamps, requested, done + AFTER_S),
        lag_max_s=max(lags, default=float("nan")),
        lag_p99_s=percentile(lags, 99),
        probe_samples=len(lags),
        turns=turns,
    )


# --- baseline --------------------------------------------------------------------------------


def pulse_problem() -> str | None:
    """Why PulseAudio cannot give the baseline a microphone here (None when it can)."""
    for tool in ("pactl", "paplay"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (pulseaudio-utils)"
    return None


async def _run(*cmd: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode(errors="replace").strip()


@contextlib.asynccontextmanager
async def null_sinks(*names: str) -> AsyncIterator[None]:
    """Load one PulseAudio null sink per name (24 kHz mono); unload them on exit."""
    code, out = await _run("pactl", "info")
    if code != 0:
        raise RuntimeError(f"PulseAudio is not running: {out.splitlines()[-1] if out else code}")
    modules: list[str] = []
    try:
        for name in names:
            code, out = await _run(
                "pactl",
                "load-module",
                "module-null-sink",
                f"sink_name={name}",
                f"rate={PCM_RATE}",
                "channels=1",
            )
            if code != 0:
                raise RuntimeError(f"pactl load-module module-null-sink {name}: {out}")
            modules.append(out.split()[-1])
        yield
    finally:
        for module in modules:
            await _run("pactl", "unload-module", module)


def write_wav(path: Path, samples: NDArray[np.int16]) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(PCM_RATE)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


@dataclass
class BaselineResult:
    stall: Stall
    turns: int


async def run_baseline(tmp: Path) -> BaselineResult:
    utterances = [
        write_wav(tmp / f"say{n}.wav", np.concatenate([speech_like(1.0, seed=n), silence(0.2)]))
        for n in range(MAX_TURNS)
    ]
    chat = FakeChatServer(FakeChatConfig(delay_s=CHAT_DELAY_S)).start()
    server = FakeRealtimeServer(FakeServerConfig(speed=4.0))
    await server.start()
    env = {**os.environ, "PULSE_SOURCE": "lag_mic.monitor", "PULSE_SINK": "lag_spk"}
    process: asyncio.subprocess.Process | None = None
    try:
        async with null_sinks("lag_mic", "lag_spk"):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(BASELINE),
                "--url",
                server.url,
                "--api-key",
                "sk-test",
                "--summary-base-url",
                chat.base_url,
                "--threshold",
                str(THRESHOLD_TOKENS),
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            session = await _or_exit(process, server.wait_for_session(1, timeout_s=30))
            stamps = stamp_frames(session)
            appends = len(session.received)
            await _or_exit(
                process,
                server.wait_for(lambda: len(session.received) > appends + 10, timeout_s=10),
                "no microphone audio reached the server",
            )
            turns = 0
            while not chat.request_times and turns < MAX_TURNS:
                code, out = await _run("paplay", "--device=lag_mic", str(utterances[turns]))
                if code != 0:
                    raise RuntimeError(f"paplay failed: {out}")
                turns += 1
                done = functools.partial(responses_done, session, turns)
                await _or_exit(process, within(server.wait_for(done, 20), f"reply {turns}"))
            if not chat.request_times:
                raise RuntimeError(f"the baseline did not summarize after {turns} turns")
            # Measure: the summary takes CHAT_DELAY_S, then streaming resumes (or not).
            await asyncio.sleep(CHAT_DELAY_S + AFTER_S)
    finally:
        if process is not None and process.returncode is None:
            process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 5)
            if process.returncode is None:
                process.kill()
                await process.wait()
        await server.stop()
        chat.stop()
    requested = chat.request_times[0]
    return BaselineResult(stall(stamps, requested, requested + CHAT_DELAY_S + AFTER_S), turns)


async def _or_exit(process: asyncio.subprocess.Process, waiting: Awaitable[T], why: str = "") -> T:
    """Await `waiting`; if the child exits first or it times out, raise with its stderr."""
    wait_task = asyncio.ensure_future(waiting)
    exit_task = asyncio.ensure_future(process.wait())
    try:
        done, _ = await asyncio.wait({wait_task, exit_task}, return_when=asyncio.FIRST_COMPLETED)
        if wait_task in done and wait_task.exception() is None:
            return wait_task.result()
    finally:
        wait_task.cancel()
        exit_task.cancel()
    stderr = b""
    if process.returncode is not None and process.stderr is not None:
        stderr = await process.stderr.read()
    last = stderr.decode(errors="replace").strip().splitlines()[-1:] or [why or "timed out"]
    state = f"exited {process.returncode}" if process.returncode is not None else "timed out"
    raise RuntimeError(f"baseline {state}: {why + ': ' if why else ''}{last[0]}")


# --- figures ---------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


async def measure() -> tuple[ProjectResult, BaselineResult | str]:
    with tempfile.TemporaryDirectory(prefix="bench-loop-lag-") as tmp:
        project = await run_project(Path(tmp))
        problem = pulse_problem()
        baseline: BaselineResult | str
        if problem is not None:
            baseline = problem
        else:
            try:
                baseline = await run_baseline(Path(tmp))
            except (RuntimeError, TimeoutError) as exc:
                baseline = f"not run: {exc}"
    return project, baseline


def figures(quick: bool) -> list[Figure]:
    del quick  # one compaction is the measurement; it takes ~10 s either way
    _quiet_logs()
    project, baseline = asyncio.run(measure())
    if isinstance(baseline, str):
        base_gap, base_note = "not run", baseline
    else:
        base_gap = _ms(baseline.stall.longest_gap_s)
        base_note = (
            f"baseline: first frame {_ms(baseline.stall.first_frame_after_request_s)} after "
            f"the chat request, {baseline.turns} turns"
        )
    return [
        Figure(
            f"Receive loop stall during a {CHAT_DELAY_S:.0f} s summary "
            "(longest gap between client frames at the server)",
            _ms(project.stall.longest_gap_s),
            base_gap,
            target="< 50 ms (mic block 20 ms)",
            note=f"project: {project.stall.frames} frames in the window; {base_note}",
        ),
        Figure(
            "Event-loop lag during that compaction, max / p99 (10 ms probe)",
            f"{_ms(project.lag_max_s)} / {_ms(project.lag_p99_s)}",
            "n/a (black-box only)",
            target="p99 < 20 ms",
            note=f"{project.probe_samples} probe wake-ups; includes the in-process fake servers",
        ),
    ]


def main() -> None:
    bench_main("Receive-loop lag during a compaction", figures, __doc__)


if __name__ == "__main__":
    main()
