"""`voicebot devices test`: the analysis on synthetic recordings (both sides: an echo is
found and measured; no echo, or one buried in noise, is not claimed), the advice, the report,
and the command's one-line errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from realtime_voicebot.audio import check, devices
from realtime_voicebot.audio.check import (
    LEAD_S,
    PROBE_DBFS,
    DeviceCheck,
    analyse,
    make_probe,
    recommend,
)
from realtime_voicebot.audio.resample import rms_dbfs
from realtime_voicebot.cli import app

RATE = 48000
runner = CliRunner()


def recording_of(
    probe: np.ndarray,
    *,
    delay_ms: float,
    gain_db: float | None,
    noise_dbfs: float | None = -75.0,
    reverb_ms: float = 0.0,
    seed: int = 1,
) -> np.ndarray:
    """What the microphone records while the probe plays: its echo (delayed, attenuated,
    optionally reverberated) plus the room's noise."""
    rng = np.random.default_rng(seed)
    mic = np.zeros(probe.shape[0])
    if gain_db is not None:
        signal = probe.astype(np.float64)
        if reverb_ms:
            t = np.arange(round(reverb_ms * RATE / 1000)) / RATE
            tail = rng.standard_normal(t.shape[0]) * np.exp(-6.9 * t / (reverb_ms / 1000))
            tail[0] = 0.0
            response = tail / np.sqrt(np.sum(tail**2))  # as loud as the direct sound: 1 m
            response[0] = 1.0
            signal = np.convolve(signal, response / np.sqrt(2.0))
            signal = signal[: probe.shape[0]]
        delay = round(delay_ms * RATE / 1000)
        mic[delay:] = signal[: probe.shape[0] - delay] * 10 ** (gain_db / 20)
    if noise_dbfs is not None:
        mic += rng.standard_normal(mic.shape[0]) * 32768 * 10 ** (noise_dbfs / 20)
    return np.asarray(np.clip(np.rint(mic), -32768, 32767), dtype=np.int16)


def test_probe_is_a_sweep_at_the_reply_level_between_silences() -> None:
    probe = make_probe(RATE)
    lead = round(LEAD_S * RATE)
    assert not probe[:lead].any()
    assert rms_dbfs(probe[lead : lead + RATE // 2]) == pytest.approx(PROBE_DBFS, abs=0.2)
    assert not probe[-RATE // 2 :].any()


@pytest.mark.parametrize(("gain_db", "delay_ms"), [(-18.0, 120.0), (-10.0, 45.0), (-30.0, 300.0)])
def test_an_echo_is_measured_coupling_and_latency(gain_db: float, delay_ms: float) -> None:
    probe = make_probe(RATE)
    result = analyse(probe, recording_of(probe, delay_ms=delay_ms, gain_db=gain_db), RATE)
    assert result.coupling_db == pytest.approx(gain_db, abs=0.5)
    assert result.latency_ms == pytest.approx(delay_ms, abs=1.0)
    assert result.noise_dbfs == pytest.approx(-75.0, abs=1.0)
    assert result.mode == ("aec" if check.aec_available() else "gate")


def test_a_reverberant_echo_is_measured_by_its_energy() -> None:
    probe = make_probe(RATE)
    recording = recording_of(probe, delay_ms=80.0, gain_db=-12.0, reverb_ms=300.0)
    result = analyse(probe, recording, RATE)
    assert result.coupling_db is not None
    assert result.coupling_db == pytest.approx(-12.0, abs=2.0)
    assert result.latency_ms == pytest.approx(80.0, abs=2.0)


def test_headphones_no_echo_is_claimed_and_off_is_advised() -> None:
    probe = make_probe(RATE)
    result = analyse(probe, recording_of(probe, delay_ms=0.0, gain_db=None), RATE)
    assert result.coupling_db is None and result.latency_ms is None
    assert result.mode == "off"
    assert "echo coupling: none detected" in "\n".join(result.report())


def test_an_echo_buried_in_the_noise_is_not_claimed() -> None:
    probe = make_probe(RATE)
    recording = recording_of(probe, delay_ms=100.0, gain_db=-60.0, noise_dbfs=-70.0)
    result = analyse(probe, recording, RATE)
    assert result.coupling_db is None
    assert result.mode == "off"


def test_a_faint_echo_is_measured_and_judged_negligible() -> None:
    probe = make_probe(RATE)
    recording = recording_of(probe, delay_ms=100.0, gain_db=-55.0, noise_dbfs=-100.0)
    result = analyse(probe, recording, RATE)
    assert result.coupling_db == pytest.approx(-55.0, abs=1.0)
    assert result.mode == "off"
    assert "too quiet" in result.reason


def test_recommendation_for_each_case() -> None:
    assert recommend(None, aec_loads=True)[0] == "off"
    assert recommend(-60.0, aec_loads=True)[0] == "off"
    assert recommend(-18.0, aec_loads=True)[0] == "aec"
    assert recommend(-18.0, aec_loads=False)[0] == "gate"


def test_report_warns_about_a_silent_or_clipping_microphone() -> None:
    probe = make_probe(RATE)
    silent = analyse(probe, np.zeros(probe.shape[0], dtype=np.int16), RATE)
    assert any("is it muted" in line for line in silent.report())
    loud = np.full(probe.shape[0], 32767, dtype=np.int16)
    loud[::2] = -32768
    clipping = analyse(probe, loud, RATE)
    assert any("clips" in line for line in clipping.report())
    normal = analyse(probe, recording_of(probe, delay_ms=50.0, gain_db=-20.0), RATE)
    assert not any(line.startswith("warning") for line in normal.report())
    assert normal.report()[-1].startswith("echo mode to use: --echo ")


# --- the command -------------------------------------------------------------------------


class NoDevices:
    """A sounddevice stand-in on a machine with PortAudio but no devices."""

    class PortAudioError(Exception):
        pass

    def query_devices(self) -> list[Any]:
        return []


def test_devices_test_without_a_device_says_to_list_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(check, "load_sounddevice", NoDevices)
    monkeypatch.setattr(devices, "list_devices", list)
    result = runner.invoke(app, ["devices", "test"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["error: No input device found: run `voicebot devices list`"]


def test_devices_test_prints_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    measured = DeviceCheck(
        rate=24000,
        noise_dbfs=-70.0,
        peak_dbfs=-35.0,
        coupling_db=-18.2,
        latency_ms=112.0,
        match=0.98,
        mode="aec",
        reason="the speaker is heard in the microphone: echo cancellation removes it",
    )
    asked: list[tuple[str | None, str | None]] = []

    def fake_run_check(inp: str | None, out: str | None, on_start: Any = None) -> DeviceCheck:
        asked.append((inp, out))
        on_start()
        return measured

    monkeypatch.setattr(check, "run_check", fake_run_check)
    result = runner.invoke(
        app, ["devices", "test", "--input-device", "mic", "--output-device", "2"]
    )
    assert result.exit_code == 0, result.output
    assert asked == [("mic", "2")]
    assert "echo coupling: -18.2 dB" in result.output
    assert "round-trip latency: 112 ms" in result.output
    assert "echo mode to use: --echo aec" in result.output
