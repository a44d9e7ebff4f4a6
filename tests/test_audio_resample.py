"""Resampling and PCM helpers, the player at a 48 kHz device rate, and device selection."""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np
import pytest

from realtime_voicebot.audio import devices
from realtime_voicebot.audio.devices import AudioUnavailableError, DeviceInfo, choose_device
from realtime_voicebot.audio.output import AudioPlayer
from realtime_voicebot.audio.resample import (
    DBFS_FLOOR,
    StreamResampler,
    bytes_to_pcm16,
    float_to_pcm16,
    pcm16_to_float,
    rms_dbfs,
    to_mono,
)


def tone(freq: float, count: int, rate: int, amplitude: float = 16000.0) -> np.ndarray:
    return np.rint(amplitude * np.sin(2 * np.pi * freq * np.arange(count) / rate)).astype(np.int16)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.shape[0])))
    return float(np.fft.rfftfreq(samples.shape[0], 1 / rate)[np.argmax(spectrum)])


# --- helpers -------------------------------------------------------------------------------


def test_rms_dbfs() -> None:
    assert rms_dbfs(np.zeros(480, dtype=np.int16)) == DBFS_FLOOR
    assert rms_dbfs(np.zeros(0, dtype=np.int16)) == DBFS_FLOOR
    full_scale_sine = tone(1000, 24000, 24000, amplitude=32767)
    assert rms_dbfs(full_scale_sine) == pytest.approx(-3.01, abs=0.05)
    assert rms_dbfs(tone(1000, 24000, 24000, amplitude=3277)) == pytest.approx(-23.01, abs=0.05)
    assert rms_dbfs(np.full(10, 0.5, dtype=np.float32)) == pytest.approx(-6.02, abs=0.01)


def test_int16_float_round_trip_and_clipping() -> None:
    samples = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    assert np.array_equal(float_to_pcm16(pcm16_to_float(samples)), samples)
    clipped = float_to_pcm16(np.array([-2.0, 2.0]))
    assert clipped.tolist() == [-32768, 32767]
    assert bytes_to_pcm16(samples.tobytes()).tolist() == samples.tolist()


def test_to_mono_averages_channels() -> None:
    stereo = np.array([[100, 300], [-100, -300]], dtype=np.int16)
    assert to_mono(stereo).tolist() == [200, -200]
    assert to_mono(stereo[:, :1]).tolist() == [100, -100]


# --- StreamResampler -----------------------------------------------------------------------


def test_same_rate_is_a_no_op() -> None:
    resampler = StreamResampler(24000, 24000)
    block = tone(440, 480, 24000)
    assert resampler.process(block) is block
    assert resampler.finish().shape == (0,)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(48000, 24000), (44100, 24000), (24000, 48000)])
def test_streaming_resampler_keeps_length_and_frequency(in_rate: int, out_rate: int) -> None:
    resampler = StreamResampler(in_rate, out_rate)
    signal = tone(1000, in_rate, in_rate)  # 1 s
    block = in_rate // 50
    out = [resampler.process(signal[i : i + block]) for i in range(0, signal.shape[0], block)]
    out.append(resampler.finish())
    result = np.concatenate(out)
    assert abs(result.shape[0] - out_rate) <= 2
    assert dominant_hz(result, out_rate) == pytest.approx(1000, abs=2)
    # LQ streams steadily: after the first block, every 20 ms block yields output
    assert all(len(chunk) > 0 for chunk in out[1:-1])


def test_player_at_48k_device_keeps_tone_frequency_and_length() -> None:
    player = AudioPlayer(sample_rate=48000, jitter_ms=0)
    signal = tone(1000, 24000, 24000)  # 1 s at the API rate
    for start in range(0, signal.shape[0], 480):
        player.write("a", signal[start : start + 480].tobytes())
    player.end_item("a")
    blocks = []
    while not player.is_finished("a"):
        blocks.append(player.pull(960))
    played = np.concatenate(blocks)[: round(player.played_ms("a") * 48)]
    assert abs(played.shape[0] - 48000) <= 2
    assert player.played_ms("a") == pytest.approx(1000.0, abs=0.1)
    assert dominant_hz(played, 48000) == pytest.approx(1000, abs=2)


# --- devices -------------------------------------------------------------------------------

DEVICES = [
    DeviceInfo(0, "HDA Intel PCH: ALC3246 Analog", "ALSA", 2, 2, 48000.0, False, False),
    DeviceInfo(1, "USB Headset Mic", "ALSA", 1, 0, 16000.0, False, False),
    DeviceInfo(2, "pulse", "ALSA", 32, 32, 44100.0, False, False),
    DeviceInfo(3, "default", "ALSA", 32, 32, 44100.0, True, True),
    DeviceInfo(4, "HDMI 0", "ALSA", 0, 8, 48000.0, False, False),
]


def test_choose_device_by_index_and_name() -> None:
    assert choose_device(DEVICES, None, "input") is None  # PortAudio's default
    assert choose_device(DEVICES, "1", "input") == 1
    assert choose_device(DEVICES, " 4 ", "output") == 4
    assert choose_device(DEVICES, "headset", "input") == 1
    assert choose_device(DEVICES, "HDMI", "output") == 4
    assert choose_device(DEVICES, "Default", "output") == 3
    assert choose_device(DEVICES, "alc3246", "output") == 0


def test_choose_device_prefers_an_exact_name_and_the_right_direction() -> None:
    devices = [
        DeviceInfo(0, "Mic Array (pulse)", "ALSA", 2, 0, 48000.0, False, False),
        DeviceInfo(1, "pulse", "ALSA", 2, 2, 48000.0, True, True),
    ]
    assert choose_device(devices, "pulse", "input") == 1
    assert choose_device(devices, "mic", "input") == 0


@pytest.mark.parametrize(
    ("spec", "kind", "message"),
    [
        ("xyz", "input", "No device matches 'xyz': run `voicebot devices list`"),
        ("9", "output", "No device has index 9"),
        ("1", "output", "has no output channels"),
        ("HDMI", "input", "No input device matches 'HDMI'"),
    ],
)
def test_choose_device_errors_are_actionable(spec: str, kind: str, message: str) -> None:
    with pytest.raises(AudioUnavailableError, match="voicebot devices list") as caught:
        choose_device(DEVICES, spec, kind)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_no_input_device_at_all() -> None:
    outputs_only = [DeviceInfo(0, "HDMI", "ALSA", 0, 2, 48000.0, False, True)]
    with pytest.raises(AudioUnavailableError, match=r"No input device found: run `voicebot"):
        choose_device(outputs_only, None, "input")


def test_default_missing_falls_back_to_the_first_usable_device() -> None:
    devices = [
        DeviceInfo(0, "HDMI", "ALSA", 0, 2, 48000.0, False, False),
        DeviceInfo(1, "Mic", "ALSA", 1, 0, 48000.0, False, False),
    ]
    assert choose_device(devices, None, "input") == 1


def test_missing_portaudio_becomes_an_actionable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def fake_import(name: str, package: str | None = None) -> ModuleType:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    with pytest.raises(AudioUnavailableError, match=r"apt-get install libportaudio2"):
        devices.list_devices()
    with pytest.raises(AudioUnavailableError, match=r"libportaudio2"):
        devices.resolve_device("pulse", "output")


def test_missing_sounddevice_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "sounddevice", None)
    with pytest.raises(AudioUnavailableError, match=r"pip install sounddevice"):
        devices.load_sounddevice()


def test_devices_table_renders() -> None:
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(devices.devices_table(DEVICES))
    text = console.export_text()
    assert "USB Headset Mic" in text
    assert "default *in *out" in text
