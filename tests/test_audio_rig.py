"""Real PortAudio devices on the PulseAudio virtual rig (`bash scripts/audio-rig.sh start`).

The bot's speaker is the sink `vspk` (recorded through `vspk.monitor`); its microphone is
`vmic.monitor`, fed by playing into `vmic`. Skipped when the rig is not up.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from realtime_voicebot.audio.input import MicrophoneInput
from realtime_voicebot.audio.output import SoundDevicePlayer
from realtime_voicebot.testing import scaled

from .rig import rig_problem

RATE = 24000
TONE_HZ = 1000.0


pytestmark = [pytest.mark.audio]


@pytest.fixture(scope="module")
def rig() -> None:
    problem = rig_problem()
    if problem:
        pytest.skip(problem)


def tone(ms: float, amplitude: float = 12000.0) -> np.ndarray:
    t = np.arange(round(RATE * ms / 1000)) / RATE
    return np.rint(amplitude * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)


def has_tone(samples: np.ndarray, rate: int) -> bool:
    """Loud enough and dominated by the test tone."""
    if samples.shape[0] < rate // 100 or np.sqrt(np.mean(samples.astype(np.float64) ** 2)) < 300:
        return False
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.shape[0])))
    peak = float(np.fft.rfftfreq(samples.shape[0], 1 / rate)[np.argmax(spectrum)])
    return bool(abs(peak - TONE_HZ) <= rate / samples.shape[0])  # within one FFT bin


async def test_sound_device_player_is_heard_on_the_speaker(rig: None) -> None:
    recorder = await asyncio.create_subprocess_exec(
        "parecord",
        "--device=vspk.monitor",
        "--raw",
        "--format=s16le",
        f"--rate={RATE}",
        "--channels=1",
        "--latency-msec=20",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    player = SoundDevicePlayer(None, block_ms=20, jitter_ms=60)
    await player.start()
    try:
        assert player.output_latency_s > 0
        audio = tone(1000)
        for start in range(0, audio.shape[0], 480):
            player.write("a", audio[start : start + 480].tobytes())
        player.end_item("a")
        assert await asyncio.wait_for(player.wait_finished("a"), scaled(10))
        assert player.played_ms("a") == pytest.approx(1000, abs=1)
        assert player.first_sample_at("a") is not None

        async def hear_tone() -> None:
            assert recorder.stdout is not None
            heard = bytearray()
            while True:  # until 0.5 s of the recording is the tone
                heard += await recorder.stdout.read(4800)
                samples = np.frombuffer(bytes(heard[: len(heard) // 2 * 2]), dtype=np.int16)
                windows = [
                    has_tone(samples[i : i + 2400], RATE)
                    for i in range(0, samples.shape[0] - 2400, 2400)
                ]
                if sum(windows) >= 5:
                    return

        await asyncio.wait_for(hear_tone(), scaled(10))
    finally:
        await player.stop()
        recorder.terminate()
        await recorder.wait()


async def test_microphone_hears_audio_played_into_vmic(rig: None, tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(tone(1500).tobytes())
    mic = MicrophoneInput(None, chunk_ms=20)
    await mic.start()
    speaker = await asyncio.create_subprocess_exec(
        "paplay", "--device=vmic", str(path), stderr=asyncio.subprocess.DEVNULL
    )
    try:

        async def hear_tone() -> int:
            tone_blocks = 0
            blocks = 0
            while tone_blocks < 15:  # 300 ms of tone
                block = np.frombuffer(await mic.read(), dtype=np.int16)
                blocks += 1
                if has_tone(block, RATE):
                    tone_blocks += 1
            return blocks

        await asyncio.wait_for(hear_tone(), scaled(10))
        assert mic.level_dbfs > -30
        assert mic.callback_errors == 0
    finally:
        await mic.stop()
        if speaker.returncode is None:
            speaker.terminate()
        await speaker.wait()
