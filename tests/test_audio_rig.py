"""Real PortAudio devices on the PulseAudio virtual rig (`bash scripts/audio-rig.sh start`).

The bot's speaker is the sink `vspk` (recorded through `vspk.monitor`); its microphone is
`vmic.monitor`, fed by playing into `vmic`. Skipped when the rig is not up. The speaker and the
microphone are tried alone (two streams) and together from one callback (`DuplexAudio`), with
a session recording of the latter.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from realtime_voicebot.audio.devices import shared_stream_support
from realtime_voicebot.audio.duplex import DuplexAudio, mode_for_hostapi
from realtime_voicebot.audio.input import MicrophoneInput
from realtime_voicebot.audio.output import SoundDevicePlayer
from realtime_voicebot.audio.recording import SessionRecorder
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


MIC_TONE_HZ = 600.0


def tone(ms: float, amplitude: float = 12000.0, hz: float = TONE_HZ) -> np.ndarray:
    t = np.arange(round(RATE * ms / 1000)) / RATE
    return np.rint(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def has_tone(samples: np.ndarray, rate: int, hz: float = TONE_HZ) -> bool:
    """Loud enough and dominated by the test tone."""
    if samples.shape[0] < rate // 100 or np.sqrt(np.mean(samples.astype(np.float64) ** 2)) < 300:
        return False
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.shape[0])))
    peak = float(np.fft.rfftfreq(samples.shape[0], 1 / rate)[np.argmax(spectrum)])
    return bool(abs(peak - hz) <= rate / samples.shape[0])  # within one FFT bin


def tone_windows(samples: np.ndarray, hz: float, window: int = 2400) -> int:
    """How many 100 ms windows of `samples` hold the tone."""
    starts = range(0, samples.shape[0] - window + 1, window)
    return sum(has_tone(samples[i : i + window], RATE, hz) for i in starts)


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


async def test_one_callback_plays_and_captures_at_once_and_records_both(
    rig: None, tmp_path: Path
) -> None:
    support = shared_stream_support(None, None, RATE)
    assert support is not None, "the rig's devices share ALSA and 24 kHz"
    rate, hostapi = support
    audio = DuplexAudio(
        None, None, sample_rate=rate, mic_block_ms=40, prefer=mode_for_hostapi(hostapi)
    )
    player, mic = audio.player, audio.microphone
    path = tmp_path / "mic.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(tone(1500, hz=MIC_TONE_HZ).tobytes())
    monitor = await asyncio.create_subprocess_exec(
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
    await player.start()
    await mic.start()
    assert audio.mode == mode_for_hostapi(hostapi)
    recorder = SessionRecorder.for_devices(tmp_path / "session.wav", mic, player)
    await recorder.start()
    speaker: asyncio.subprocess.Process | None = None
    try:
        audio_out = tone(1000)
        player.write("a", audio_out.tobytes())
        player.end_item("a")
        speaker = await asyncio.create_subprocess_exec(
            "paplay", "--device=vmic", str(path), stderr=asyncio.subprocess.DEVNULL
        )

        stamps: list[tuple[int | None, int]] = []
        """(capture_end_position, the tap's position) as each microphone block was read."""

        async def hear_mic_tone() -> None:
            tone_blocks = 0
            while tone_blocks < 8:  # 320 ms of the tone played into the microphone
                block = await mic.read()
                stamps.append((mic.capture_end_position, player.tap.total_samples))
                recorder.mic(block)
                if has_tone(np.frombuffer(block, dtype=np.int16), RATE, MIC_TONE_HZ):
                    tone_blocks += 1

        async def hear_speaker_tone() -> None:
            assert monitor.stdout is not None
            heard = bytearray()
            while True:  # until 0.5 s of the monitor recording is the tone
                heard += await monitor.stdout.read(4800)
                samples = np.frombuffer(bytes(heard[: len(heard) // 2 * 2]), dtype=np.int16)
                if tone_windows(samples, TONE_HZ) >= 5:
                    return

        await asyncio.wait_for(asyncio.gather(hear_mic_tone(), hear_speaker_tone()), 10)
        assert await asyncio.wait_for(player.wait_finished("a"), 10)
        assert player.played_ms("a") == pytest.approx(1000, abs=1)
        # The microphone's stamps follow the speaker's clock: the block just read ends
        # within the device buffers (and a few blocks of loop delay) of the speaker's position
        # when it was read (not later: nothing reads the microphone while the tone ends).
        end, position = stamps[-1]
        assert end is not None
        assert abs(position - end) < rate // 4
        assert mic.callback_errors == player.callback_errors == 0
    finally:
        await recorder.close()
        await mic.stop()
        await player.stop()
        monitor.terminate()
        await monitor.wait()
        if speaker is not None and speaker.returncode is None:
            speaker.terminate()
        if speaker is not None:
            await speaker.wait()
    assert not audio.is_open
    with wave.open(str(tmp_path / "session.wav"), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, RATE)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    assert tone_windows(stereo[:, 1], TONE_HZ) >= 8, "the right channel holds what was played"
    assert tone_windows(stereo[:, 0], MIC_TONE_HZ) >= 3, "the left holds the microphone sent"
    assert tone_windows(stereo[:, 0], TONE_HZ) == 0 and tone_windows(stereo[:, 1], MIC_TONE_HZ) == 0
    stats = recorder.snapshot()
    assert stats.error is None and stats.mic_blocks_dropped == stats.mic_samples_late == 0
