"""Bench-side helpers for the PulseAudio virtual rig (`bash scripts/audio-rig.sh start`).

The rig has two null sinks: `vmic` (the bots' microphone: the default source is
`vmic.monitor`, so what we play into `vmic` is what they hear) and `vspk` (their speaker, the
default sink: we record `vspk.monitor`). The benches play and listen like a person at the
machine, and time everything on `time.monotonic()`, which on Linux is one clock for every
process on the machine, so a stamp taken in the fake server (this process) compares directly
with a stamp of the monitor recording.

- `require_rig()` / `run_bench()`: a clear message, not a traceback, when the rig is down.
- `Monitor` (tests/rig.py's `MonitorRecorder`, shared with the tests): records a source with
  `parecord`, stamps samples on the monotonic clock, finds bursts of sound.
- `play_into_mic()`: plays samples into `vmic`.
- `SendStamps`: time stamps of the frames a fake-server session sends (its send time).
- `BotProcess`: `voicebot run` or the baseline as a subprocess, with its CPU time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import Figure, bench_main

from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession, Transport

# One rig toolkit for tests and benches: the rig check, the monitor recorder, bursts of sound.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.rig import MonitorRecorder, rig_problem

Monitor = MonitorRecorder

RATE = 24000
REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "original" / "realtime_agent_cli.py"


class RigUnavailable(RuntimeError):
    """The virtual rig cannot be used; the message says why and how to fix it."""


def require_rig() -> None:
    problem = rig_problem()
    if problem:
        raise RigUnavailable(f"the audio rig is not usable: {problem}")


def run_bench(title: str, figures: Callable[[bool], list[Figure]], doc: str | None) -> None:
    """`bench_main`, but a rig problem or a failed run is one line on stderr and exit 2.

    The fake server in this process logs warnings only, so the figures stand out."""
    from realtime_voicebot.logging import configure_logging

    configure_logging("WARNING", "console")
    try:
        bench_main(title, figures, doc)
    except (RigUnavailable, BenchError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


class BenchError(RuntimeError):
    """A run did not go as scripted (a bot died, nothing was heard); the message says what."""


# --- listening --------------------------------------------------------------------------------


def play_into_mic(samples: np.ndarray[Any, Any], sink: str = "vmic") -> subprocess.Popen[bytes]:
    """Play PCM16 24 kHz samples into the bots' microphone; returns at once (pacat runs on)."""
    proc = subprocess.Popen(
        [
            "pacat",
            "--playback",
            f"--device={sink}",
            "--raw",
            "--format=s16le",
            f"--rate={RATE}",
            "--channels=1",
            "--latency-msec=20",
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    data = samples.astype("<i2").tobytes()

    def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(data)
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        proc.wait()

    threading.Thread(target=feed, name="pacat", daemon=True).start()
    return proc


# --- the fake server's send times ---------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One frame a session sent: when it was handed to the socket, its type and item."""

    at: float
    type: str
    item_id: str | None


class SendStamps:
    """Stamps every frame a `FakeSession` sends, by wrapping its transport.

    The stamp is taken just before the frame is handed to the WebSocket, on the event loop
    that also runs the session: the fake server's send time.
    """

    def __init__(self, session: FakeSession) -> None:
        self.sent: list[Sent] = []
        self._inner: Transport = session.transport
        session.transport = self

    async def send(self, frame: str) -> None:
        at = time.monotonic()
        await self._inner.send(frame)
        event = json.loads(frame)
        self.sent.append(Sent(at, str(event.get("type")), event.get("item_id")))

    async def close(self, code: int, reason: str) -> None:
        await self._inner.close(code, reason)

    def drop(self) -> None:
        self._inner.drop()

    def first(self, kind: str, after: float) -> Sent | None:
        """The first frame of type `kind` sent after `after`."""
        return next((s for s in self.sent if s.type == kind and s.at > after), None)


async def wait_sent(
    server: FakeRealtimeServer, stamps: SendStamps, kind: str, after: float, timeout_s: float
) -> Sent:
    """Wait until the server sends a frame of type `kind` after `after`."""
    try:
        await server.wait_for(lambda: stamps.first(kind, after) is not None, timeout_s)
    except TimeoutError:
        raise BenchError(f"the fake server sent no {kind} within {timeout_s:.0f} s") from None
    found = stamps.first(kind, after)
    assert found is not None
    return found


# --- bots as subprocesses -------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


def project_command(url: str, workdir: Path, *settings: str) -> list[str]:
    """`voicebot run` on the default devices (the rig) against `url`."""
    exe = shutil.which("voicebot")
    head = [exe] if exe else [sys.executable, "-m", "realtime_voicebot"]
    return [
        *head,
        "run",
        "--url",
        url,
        "--transcript-path",
        str(workdir / "transcript.jsonl"),
        "--metrics-file",
        str(workdir / "metrics.json"),
        "--log-format",
        "json",
        *settings,
    ]


BASELINE_LAUNCHER = """
import runpy, sys
import sounddevice
sounddevice.default.blocksize = 480
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
"""Runs the baseline unchanged, with PortAudio's default block size set to 480 frames (20 ms,
the baseline's own CHUNK). On the rig (ALSA's pulse plugin into a null sink), streams opened
with the default variable block size, as `sd.play` opens them, underrun on nearly every period
and most of the reply is never heard; a fixed block plays it whole. Nothing else changes."""


def baseline_command(url: str) -> list[str]:
    """The tutorial-style baseline against `url` (through `BASELINE_LAUNCHER`)."""
    return [
        sys.executable,
        "-c",
        BASELINE_LAUNCHER,
        str(BASELINE),
        "--url",
        url,
        "--api-key",
        "sk-test",
    ]


class BotProcess:
    """A bot running as a subprocess on the rig's default devices; output kept in a file."""

    def __init__(self, name: str, command: Sequence[str], workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self._log = (workdir / f"{name}.log").open("wb")
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONUNBUFFERED": "1"}
        env.pop("VOICEBOT_METRICS_FILE", None)
        self.proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        self.check_alive()
        return cpu_seconds(self.proc.pid)

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with {code}: {self.tail()}")

    def tail(self, lines: int = 5) -> str:
        self._log.flush()
        text = (self.workdir / f"{self.name}.log").read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-lines:])

    async def stop(self, timeout_s: float = 10.0) -> int:
        """SIGINT (the bots' Ctrl-C), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(self.proc.wait, timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = await asyncio.to_thread(self.proc.wait)
        self._log.close()
        return code

    def remove_workdir(self) -> None:
        """Delete the bot's working directory (its log, transcript, metrics) after a good run."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def metrics(self) -> dict[str, Any]:
        """The project's `--metrics-file` summary (after `stop`)."""
        path = self.workdir / "metrics.json"
        if not path.exists():
            raise BenchError(f"{self.name} wrote no metrics file: {self.tail()}")
        data: dict[str, Any] = json.loads(path.read_text())
        return data


async def wait_mic_streaming(
    server: FakeRealtimeServer, session: FakeSession, bot: BotProcess, seconds: float
) -> None:
    """Wait until the bot has streamed `seconds` of microphone audio: its devices are open
    and their callbacks run steadily (PortAudio on the rig bursts a few blocks at first)."""
    start = session.input_samples
    deadline = time.monotonic() + 20.0
    while session.input_samples - start < seconds * RATE:
        bot.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{bot.name} streamed no microphone audio: {bot.tail()}")
        with contextlib.suppress(TimeoutError):
            await server.wait_for(lambda: session.input_samples - start >= seconds * RATE, 0.5)


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
