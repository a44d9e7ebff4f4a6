"""Helpers for tests and benchmarks on the PulseAudio virtual rig (`scripts/audio-rig.sh start`).

- `rig_problem()`: why the rig cannot be used (None when it can).
- `MonitorRecorder`: records a source (by default `vspk.monitor`, what the bot's speaker
  plays) with `parecord`, time-stamping the samples on the `time.monotonic()` clock so they
  can be compared with the bot's own stamps, and finds the bursts of sound in it.
- `speak_into_mic()`: plays samples into `vmic`, the bot's microphone.
- `echo_path()`: a real acoustic-like path from the speaker back into the microphone.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from realtime_voicebot.testing import scaled

RATE = 24000
CHUNK_BYTES = RATE // 100 * 2  # 10 ms reads


def rig_problem() -> str | None:
    """Why the rig is not usable (pulseaudio-utils, the daemon, the vspk/vmic sinks, PortAudio)."""
    if not all(shutil.which(tool) for tool in ("pactl", "parecord", "paplay", "pacat")):
        return "pulseaudio-utils are not installed (bash scripts/audio-rig.sh install)"
    try:
        info = subprocess.run(
            ["pactl", "info"], capture_output=True, timeout=scaled(5), check=False
        )
        sinks = subprocess.run(
            ["pactl", "list", "short", "sinks"], capture_output=True, timeout=scaled(5), check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"pactl failed: {exc}"
    if info.returncode != 0:
        return "PulseAudio is not running (bash scripts/audio-rig.sh start)"
    if b"vspk" not in sinks.stdout or b"vmic" not in sinks.stdout:
        return "the vspk/vmic sinks are missing (bash scripts/audio-rig.sh start)"
    from realtime_voicebot.audio.devices import AudioUnavailableError, list_devices

    try:
        if not list_devices():
            return "sounddevice lists no device"
    except AudioUnavailableError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Burst:
    """A stretch of sound in a recording, in samples from the start of the recording."""

    start: int
    end: int  # one past the last loud sample

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000.0 / RATE


class MonitorRecorder:
    """`parecord` of a source into memory, read by a thread that stamps every read.

    Sample `n` is given the time `n / RATE + offset`, where `offset` is the smallest
    `arrival - samples_so_far / RATE` seen: the read that waited least in pipes and buffers
    bounds the capture clock best. What remains is the capture latency of the monitor source
    itself (a few ms on a null sink), which biases every time stamp late by the same amount.
    """

    def __init__(self, device: str = "vspk.monitor", level: int = 64) -> None:
        self.device = device
        self.level = level
        """A sample counts as sound when its magnitude exceeds this (about -54 dBFS)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._data = bytearray()
        self._offset = float("inf")
        self._arrived = threading.Condition(self._lock)

    def start(self) -> MonitorRecorder:
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
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(scaled(5))
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> MonitorRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        while chunk := stream.read1(CHUNK_BYTES):  # type: ignore[attr-defined]
            now = time.monotonic()
            with self._arrived:
                self._data += chunk
                self._offset = min(self._offset, now - len(self._data) // 2 / RATE)
                self._arrived.notify_all()

    # --- reading ---------------------------------------------------------------------------

    @property
    def samples(self) -> np.ndarray[Any, np.dtype[np.int16]]:
        with self._lock:
            data = bytes(self._data[: len(self._data) // 2 * 2])
        return np.frombuffer(data, dtype=np.int16)

    @property
    def position(self) -> int:
        """Samples recorded so far."""
        with self._lock:
            return len(self._data) // 2

    def time_of(self, sample: int) -> float:
        """`time.monotonic()` at which sample `sample` was captured (see the class doc)."""
        with self._lock:
            return self._offset + sample / RATE

    def sample_at(self, when: float) -> int:
        with self._lock:
            return max(0, round((when - self._offset) * RATE))

    def wait_samples(self, count: int, timeout_s: float, what: str = "samples") -> None:
        """Block until `count` samples are recorded; TimeoutError naming `what` otherwise."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while len(self._data) // 2 < count:
                left = deadline - time.monotonic()
                if left <= 0 or self._proc is None or self._proc.poll() is not None:
                    raise TimeoutError(
                        f"{self.device}: no {what} within the time allowed "
                        f"(stalled at {len(self._data) // 2} samples)"
                    )
                self._arrived.wait(left)

    def bursts(self, since: int = 0, min_gap_ms: float = 200.0) -> list[Burst]:
        """The bursts of sound after sample `since`; the last may still be going on."""
        samples = self.samples[since:]
        loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > self.level)
        if loud.size == 0:
            return []
        gap = round(min_gap_ms * RATE / 1000)
        breaks = np.flatnonzero(np.diff(loud) > gap)
        starts = np.concatenate([[loud[0]], loud[breaks + 1]])
        ends = np.concatenate([loud[breaks], [loud[-1]]]) + 1
        return [Burst(int(s) + since, int(e) + since) for s, e in zip(starts, ends, strict=True)]

    def wait_onset(self, since: int, timeout_s: float) -> int:
        """Block until sound starts after sample `since`; the sample where it starts."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.bursts(since)
            if found:
                return found[0].start
            self.wait_samples(self.position + RATE // 100, deadline - time.monotonic(), "sound")

    def wait_quiet(self, since: int, quiet_ms: float, timeout_s: float) -> Burst:
        """Block until the burst starting at or after `since` is followed by `quiet_ms` of
        silence; that burst (with `min_gap_ms=quiet_ms`)."""
        deadline = time.monotonic() + timeout_s
        quiet = round(quiet_ms * RATE / 1000)
        while True:
            found = self.bursts(since, min_gap_ms=quiet_ms)
            if found and self.position - found[0].end >= quiet:
                return found[0]
            left = deadline - time.monotonic()
            self.wait_samples(self.position + RATE // 100, left, "silence after the sound")


def write_wav(path: Path, samples: np.ndarray[Any, Any], rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype(np.int16).tobytes())
    return path


def speak_into_mic(samples: np.ndarray[Any, Any], sink: str = "vmic") -> subprocess.Popen[bytes]:
    """Play samples into the bot's microphone (asynchronously: `paplay` runs on its own)."""
    with tempfile.NamedTemporaryFile(suffix=".wav", delete=False) as handle:
        path = Path(handle.name)
    write_wav(path, samples)
    proc = subprocess.Popen(
        ["paplay", f"--device={sink}", "--latency-msec=20", str(path)],
        stderr=subprocess.DEVNULL,
    )
    threading.Thread(target=_remove_after, args=(proc, path), daemon=True).start()
    return proc


def _remove_after(proc: subprocess.Popen[bytes], path: Path) -> None:
    proc.wait()
    path.unlink(missing_ok=True)


def pactl(*args: str) -> str:
    result = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=scaled(10))
    if result.returncode != 0:
        raise RuntimeError(f"pactl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


@contextlib.contextmanager
def echo_path(
    volume_percent: int = 50, latency_ms: int = 30, gain_db: float | None = None
) -> Iterator[int]:
    """Loop the speaker (`vspk.monitor`) back into the microphone (`vmic`), attenuated: the
    echo of laptop speakers. `gain_db` (the coupling, e.g. -18) overrides `volume_percent`
    (PulseAudio's volume is cubic: 50 % is -18 dB). Yields the module index; unloaded on exit."""
    module = int(
        pactl(
            "load-module",
            "module-loopback",
            "source=vspk.monitor",
            "sink=vmic",
            f"latency_msec={latency_ms}",
            "source_dont_move=true",
            "sink_dont_move=true",
        )
    )
    try:
        sink_input = _sink_input_of(module)
        # A linear factor: pactl reads "-18dB" as "18 dB quieter than now".
        volume = f"{volume_percent}%" if gain_db is None else f"{10 ** (gain_db / 20):.6f}"
        pactl("set-sink-input-volume", str(sink_input), volume)
        yield module
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            pactl("unload-module", str(module))


def _sink_input_of(module: int, timeout_s: float = 5.0) -> int:
    """PulseAudio tells of a new sink input through `pactl` only: asked every 50 ms."""
    deadline = time.monotonic() + scaled(timeout_s)
    while True:
        current: int | None = None
        for line in pactl("list", "sink-inputs").splitlines():
            text = line.strip()
            if text.startswith("Sink Input #"):
                current = int(text.removeprefix("Sink Input #"))
            elif text == f"Owner Module: {module}" and current is not None:
                return current
        if time.monotonic() > deadline:
            raise RuntimeError(f"module-loopback {module} has no sink input")
        time.sleep(0.05)
