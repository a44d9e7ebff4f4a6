"""Bench-side helpers for the PulseAudio virtual rig (`bash scripts/audio-rig.sh start`).

The rig has two null sinks: `vmic` (the bots' microphone: the default source is
`vmic.monitor`, so what we play into `vmic` is what they hear) and `vspk` (their speaker, the
default sink: we record `vspk.monitor`). The benches play and listen like a person at the
machine, and time everything on `time.monotonic()`, which on Linux is one clock for every
process on the machine, so a stamp taken in the fake server (this process) compares directly
with a stamp of the monitor recording.

- `require_rig()` / `run_bench()`: a clear message, not a traceback, when the rig is down.
- `Monitor`: records a source with `parecord`, stamps samples on the monotonic clock, finds
  bursts of sound.
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

RATE = 24000
READ_BYTES = RATE // 100 * 2  # 10 ms per read
REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "original" / "realtime_agent_cli.py"
START_HINT = "run bash scripts/audio-rig.sh start"


class RigUnavailable(RuntimeError):
    """The virtual rig cannot be used; the message says why and how to fix it."""


def rig_problem() -> str | None:
    """Why the rig is not usable (pulseaudio-utils, the daemon, the sinks, PortAudio)."""
    if not (shutil.which("pactl") and shutil.which("parecord") and shutil.which("pacat")):
        return "pulseaudio-utils are not installed (run bash scripts/audio-rig.sh install)"
    try:
        info = subprocess.run(["pactl", "info"], capture_output=True, timeout=5, check=False)
        sinks = subprocess.run(
            ["pactl", "list", "short", "sinks"], capture_output=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"pactl failed ({exc}); {START_HINT}"
    if info.returncode != 0:
        return f"PulseAudio is not running; {START_HINT}"
    names = {line.split()[1] for line in sinks.stdout.decode().splitlines() if line.strip()}
    if not {"vspk", "vmic"} <= names:
        return f"the vspk/vmic sinks are missing; {START_HINT}"
    from realtime_voicebot.audio.devices import AudioUnavailableError, list_devices

    try:
        if not list_devices():
            return f"PortAudio lists no device; {START_HINT}"
    except AudioUnavailableError as exc:
        return f"{exc}; {START_HINT}"
    return None


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
    except (RigUnavailable, BenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


class BenchError(RuntimeError):
    """A run did not go as scripted (a bot died, nothing was heard); the message says what."""


# --- listening --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    """A stretch of sound in a recording, in samples from its start."""

    start: int
    end: int  # one past the last loud sample

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000.0 / RATE


class Monitor:
    """`parecord` of a source into memory, read by a thread that stamps every read.

    Sample `n` was captured at `n / RATE + offset`, where `offset` is the smallest
    `arrival - samples_so_far / RATE` seen (the read that waited least bounds the capture
    clock best). What is left is the monitor source's own capture latency, a few ms on a null
    sink, which makes every stamp late by about the same amount; the benches do not correct it.
    """

    def __init__(self, device: str = "vspk.monitor", level: int = 64) -> None:
        self.device = device
        self.level = level
        """A sample is sound when its magnitude exceeds this (about -54 dBFS)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._data = bytearray()
        self._offset = float("inf")

    def start(self) -> Monitor:
        self._proc = subprocess.Popen(
            [
                "parecord",
                f"--device={self.device}",
                "--raw",
                "--format=s16le",
                f"--rate={RATE}",
                "--channels=1",
                "--latency-msec=10",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._thread = threading.Thread(target=self._read, name="monitor", daemon=True)
        self._thread.start()
        self.wait_samples(RATE // 10, 10.0)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        while chunk := stream.read1(READ_BYTES):  # type: ignore[attr-defined]
            now = time.monotonic()
            with self._cond:
                self._data += chunk
                self._offset = min(self._offset, now - len(self._data) // 2 / RATE)
                self._cond.notify_all()

    @property
    def position(self) -> int:
        """Samples recorded so far."""
        with self._cond:
            return len(self._data) // 2

    def samples(self, start: int = 0, end: int | None = None) -> np.ndarray[Any, Any]:
        with self._cond:
            stop = len(self._data) // 2 if end is None else end
            data = bytes(self._data[start * 2 : stop * 2])
        return np.frombuffer(data, dtype=np.int16)

    def time_of(self, sample: int) -> float:
        """`time.monotonic()` at which sample `sample` was captured."""
        with self._cond:
            return self._offset + sample / RATE

    def sample_at(self, when: float) -> int:
        with self._cond:
            return max(0, round((when - self._offset) * RATE))

    def wait_samples(self, count: int, timeout_s: float, what: str = "samples") -> None:
        """Block until `count` samples are recorded; BenchError naming `what` otherwise."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self._data) // 2 < count:
                if self._proc is None or self._proc.poll() is not None:
                    raise BenchError(f"parecord of {self.device} stopped")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"{self.device}: no {what} within the time allowed")
                self._cond.wait(left)

    def bursts(self, since: int, min_gap_ms: float) -> list[Burst]:
        """Bursts of sound after sample `since`, split at gaps of `min_gap_ms`."""
        loud = np.flatnonzero(np.abs(self.samples(since).astype(np.int32)) > self.level)
        if loud.size == 0:
            return []
        gap = round(min_gap_ms * RATE / 1000)
        breaks = np.flatnonzero(np.diff(loud) > gap)
        starts = np.concatenate([[loud[0]], loud[breaks + 1]])
        ends = np.concatenate([loud[breaks], [loud[-1]]]) + 1
        return [Burst(int(s) + since, int(e) + since) for s, e in zip(starts, ends, strict=True)]

    def wait_onset(self, since: int, timeout_s: float) -> int:
        """Block until sound starts after sample `since`; the first loud sample."""
        deadline = time.monotonic() + timeout_s
        checked = since
        while True:
            position = self.position
            loud = np.flatnonzero(
                np.abs(self.samples(checked, position).astype(np.int32)) > self.level
            )
            if loud.size:
                return checked + int(loud[0])
            checked = max(checked, position)
            self.wait_samples(position + RATE // 100, deadline - time.monotonic(), "sound")

    def wait_quiet(self, since: int, quiet_ms: float, timeout_s: float) -> Burst:
        """Block until the sound from `since` on is followed by `quiet_ms` of silence; that
        stretch of sound (gaps shorter than `quiet_ms` inside it)."""
        deadline = time.monotonic() + timeout_s
        quiet = round(quiet_ms * RATE / 1000)
        while True:
            found = self.bursts(since, quiet_ms)
            if found and self.position - found[0].end >= quiet:
                return found[0]
            left = deadline - time.monotonic()
            self.wait_samples(self.position + RATE // 100, left, "silence after the sound")


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
