"""`voicebot devices test` on the PulseAudio rig, through the CLI: with the speaker looped
back into the microphone at -18 dB it measures that coupling and a round trip, and advises
echo handling; without the loop it finds no echo and advises `off`."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .rig import echo_path, rig_problem

pytestmark = [pytest.mark.audio]


@pytest.fixture(scope="module")
def rig() -> None:
    problem = rig_problem()
    if problem:
        pytest.skip(problem)


def devices_test() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "realtime_voicebot", "devices", "test"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_devices_test_measures_the_echo_path_and_advises_aec(rig: None) -> None:
    with echo_path(gain_db=-18.0, latency_ms=30):
        output = devices_test()
    coupling = re.search(r"echo coupling: (-?\d+\.\d) dB", output)
    latency = re.search(r"round-trip latency: (\d+) ms", output)
    assert coupling and latency, output
    assert float(coupling.group(1)) == pytest.approx(-18.0, abs=1.5)
    # The loopback's 30 ms plus the devices' buffers, as the duplex stream sees them (on the
    # rig its capture side starts late, which adds a few hundred ms).
    assert 30 <= int(latency.group(1)) <= 1000
    assert "echo mode to use: --echo aec" in output


def test_devices_test_without_an_echo_path_advises_off(rig: None) -> None:
    output = devices_test()
    assert "echo coupling: none detected" in output, output
    assert "echo mode to use: --echo off" in output
    assert "input level:" in output
