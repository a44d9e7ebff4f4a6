"""`voicebot devices test`: play a short sound, record the microphone, say what was heard.

One full-duplex PortAudio stream plays the probe on the speaker and records the microphone
with the same sample clock, so the lag at which the recording best matches the probe is the
round-trip latency (output + acoustic path + input), in samples. Then:

- input level: the microphone's RMS before the probe could arrive (the room, the noise floor)
  and its loudest 10 ms frame overall;
- echo coupling: the echo's level (the recording at that lag, less the noise floor's power)
  relative to the probe's level, in dB; not detected when it is not clearly above the noise
  or does not match the probe;
- the echo mode to use: ``off`` when no echo comes back (headphones) or it is far too quiet
  to be taken for speech, otherwise ``aec`` (``gate`` when the canceller cannot load here).

The analysis (`analyse`, `recommend`) is pure and tested on synthetic signals; `run_check`
does the I/O.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from realtime_voicebot.audio.devices import (
    LIST_HINT,
    AudioUnavailableError,
    load_sounddevice,
    resolve_device,
)
from realtime_voicebot.audio.resample import DBFS_FLOOR, Int16Array, rms_dbfs
from realtime_voicebot.config import EchoMode

PROBE_DBFS = -20.0
"""The probe's RMS level: the level replies play at."""
PROBE_S = 0.5
LEAD_S = 1.0
"""Silence before the probe: the streams settle (on some hosts the capture side of a
duplex stream starts late), then the microphone's own level is measured in `NOISE_S`."""
NOISE_S = 0.3
TAIL_S = 1.0
"""Silence after the probe: the longest round trip looked for."""
NEGLIGIBLE_COUPLING_DB = -45.0
"""An echo this far below the reply is under any speech detector's threshold: ``off``."""
MIN_MATCH = 0.1
"""Normalised correlation of recording and probe at the lag below which no echo is claimed
(noise alone reaches about 0.03 over the lags searched; a reverberant room 0.2)."""
SILENT_DBFS = -90.0
CLIPPING_DBFS = -1.0
RATES = (24000, 48000, 44100, 16000)


@dataclass(frozen=True)
class DeviceCheck:
    """What `voicebot devices test` measured."""

    rate: int
    noise_dbfs: float
    """The microphone's RMS before the probe could arrive."""
    peak_dbfs: float
    """The loudest 10 ms frame of the recording."""
    coupling_db: float | None
    """The echo's level relative to the probe's; None when no echo was detected."""
    latency_ms: float | None
    """Round trip from handing the probe to the speaker to recording it; None without echo."""
    match: float
    """Normalised correlation of the recording with the probe at the latency (0 to 1)."""
    mode: EchoMode
    reason: str

    def report(self) -> list[str]:
        """The lines `voicebot devices test` prints."""
        lines = [
            f"input level: {self.noise_dbfs:.1f} dBFS in silence, "
            f"{self.peak_dbfs:.1f} dBFS at the loudest (10 ms frames)"
        ]
        if self.coupling_db is None or self.latency_ms is None:
            lines.append("echo coupling: none detected (headphones, or the speaker is muted)")
            lines.append("round-trip latency: not measurable without an echo")
        else:
            lines.append(
                f"echo coupling: {self.coupling_db:.1f} dB "
                f"(the echo of a reply at {PROBE_DBFS:g} dBFS arrives at "
                f"{PROBE_DBFS + self.coupling_db:.1f} dBFS)"
            )
            lines.append(f"round-trip latency: {self.latency_ms:.0f} ms")
        if self.noise_dbfs <= SILENT_DBFS and self.peak_dbfs <= SILENT_DBFS:
            lines.append("warning: the microphone recorded silence: is it muted?")
        elif self.peak_dbfs >= CLIPPING_DBFS:
            lines.append("warning: the microphone clips: lower its input gain")
        lines.append(f"echo mode to use: --echo {self.mode} ({self.reason})")
        return lines


def make_probe(rate: int) -> Int16Array:
    """Silence, a logarithmic sweep from 200 Hz to 4 kHz at `PROBE_DBFS`, silence."""
    count = round(PROBE_S * rate)
    t = np.arange(count) / rate
    low, high = 200.0, 4000.0
    k = math.log(high / low) / PROBE_S
    sweep = np.sin(2 * math.pi * low * (np.exp(k * t) - 1) / k)
    fade = round(0.01 * rate)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    sweep[:fade] *= ramp
    sweep[-fade:] *= ramp[::-1]
    sweep *= 32768 * 10 ** (PROBE_DBFS / 20) / math.sqrt(float(np.mean(sweep**2)))
    lead, tail = np.zeros(round(LEAD_S * rate)), np.zeros(round(TAIL_S * rate))
    return np.asarray(np.rint(np.concatenate([lead, sweep, tail])), dtype=np.int16)


def _frame_peak_dbfs(samples: Int16Array, rate: int) -> float:
    size = max(1, rate // 100)
    frames = samples.shape[0] // size
    if frames == 0:
        return rms_dbfs(samples)
    shaped = samples[: frames * size].astype(np.float64).reshape(frames, size)
    loudest = float(np.max(np.mean(shaped**2, axis=1))) / 32768.0**2
    return max(DBFS_FLOOR, 10 * math.log10(loudest)) if loudest > 0 else DBFS_FLOOR


def analyse(probe: Int16Array, recording: Int16Array, rate: int) -> DeviceCheck:
    """Latency, coupling and levels from the played probe and the recording (same clock)."""
    if recording.ndim != 1 or recording.shape[0] < probe.shape[0]:
        raise ValueError("the recording must be mono and at least as long as the probe")
    lead = round(LEAD_S * rate)
    sound = probe[lead : lead + round(PROBE_S * rate)].astype(np.float64)
    mic = recording.astype(np.float64)
    noise_end = max(1, lead - round(0.02 * rate))  # the probe cannot have arrived yet
    noise_start = max(0, noise_end - round(NOISE_S * rate))
    noise = mic[noise_start:noise_end]
    noise_power = float(np.mean(noise**2))
    noise_dbfs = rms_dbfs(recording[noise_start:noise_end])
    peak_dbfs = _frame_peak_dbfs(recording, rate)
    # Cross-correlation by FFT: lag 0 = the probe's first sample recorded at once.
    search = mic[lead:]
    size = 1 << (search.shape[0] + sound.shape[0]).bit_length()
    spectrum = np.fft.rfft(search, size) * np.conj(np.fft.rfft(sound, size))
    correlation = np.fft.irfft(spectrum, size)[: search.shape[0] - sound.shape[0] + 1]
    lag = int(np.argmax(np.abs(correlation))) if correlation.size else 0
    window = search[lag : lag + sound.shape[0]]
    window_energy = float(np.dot(window, window))
    sound_energy = float(np.dot(sound, sound))
    match = (
        abs(float(correlation[lag])) / math.sqrt(window_energy * sound_energy)
        if window_energy > 0 and sound_energy > 0
        else 0.0
    )
    echo_power = float(np.mean(window**2)) - noise_power if window.size else 0.0
    detected = match >= MIN_MATCH and echo_power > noise_power  # 3 dB above the noise
    coupling_db = latency_ms = None
    if detected:
        coupling_db = 10 * math.log10(echo_power / float(np.mean(sound**2)))
        latency_ms = lag * 1000.0 / rate
    mode, reason = recommend(coupling_db, aec_available())
    return DeviceCheck(
        rate=rate,
        noise_dbfs=noise_dbfs,
        peak_dbfs=peak_dbfs,
        coupling_db=coupling_db,
        latency_ms=latency_ms,
        match=match,
        mode=mode,
        reason=reason,
    )


def recommend(coupling_db: float | None, aec_loads: bool) -> tuple[EchoMode, str]:
    """The echo mode for a measured coupling, and why."""
    if coupling_db is None:
        return "off", "no echo came back: headphones need no echo handling"
    if coupling_db < NEGLIGIBLE_COUPLING_DB:
        return "off", f"the echo is {-coupling_db:.0f} dB down, too quiet to be taken for speech"
    if aec_loads:
        return "aec", "the speaker is heard in the microphone: echo cancellation removes it"
    return "gate", "the speaker is heard in the microphone and echo cancellation cannot load"


def aec_available() -> bool:
    """Whether livekit (the WebRTC canceller) is installed, without loading it."""
    return importlib.util.find_spec("livekit") is not None


def _common_rate(sd: Any, input_device: int | None, output_device: int | None) -> int:
    for rate in RATES:
        try:
            sd.check_input_settings(device=input_device, channels=1, dtype="int16", samplerate=rate)
            sd.check_output_settings(
                device=output_device, channels=1, dtype="int16", samplerate=rate
            )
        except (sd.PortAudioError, ValueError):
            continue
        return rate
    raise AudioUnavailableError(
        f"The microphone and speaker share no sample rate ({', '.join(map(str, RATES))} Hz): "
        f"{LIST_HINT} and pick another pair"
    )


def run_check(
    input_spec: str | None = None,
    output_spec: str | None = None,
    on_start: Callable[[], None] | None = None,
) -> DeviceCheck:
    """Play the probe on the output device while recording the input device; the analysis.

    `on_start` is called once the devices are found, just before the sound plays. Raises
    AudioUnavailableError (one line saying what to do) when the devices cannot be used.
    """
    sd = load_sounddevice()
    input_device = resolve_device(input_spec, "input")
    output_device = resolve_device(output_spec, "output")
    rate = _common_rate(sd, input_device, output_device)
    probe = make_probe(rate)
    if on_start is not None:
        on_start()
    try:
        recorded = sd.playrec(
            probe,
            samplerate=rate,
            channels=1,
            dtype="int16",
            device=(input_device, output_device),
            blocking=True,
        )
    except (sd.PortAudioError, ValueError) as exc:
        raise AudioUnavailableError(
            f"Cannot play and record at once ({exc}): {LIST_HINT} and pick a microphone and "
            "speaker with --input-device and --output-device"
        ) from exc
    return analyse(probe, np.asarray(recorded, dtype=np.int16).reshape(-1), rate)
