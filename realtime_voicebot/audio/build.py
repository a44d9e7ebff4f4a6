"""Which audio input and output a run uses: WAV files, the PortAudio devices, or none."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime_voicebot.audio.input import AudioInput
    from realtime_voicebot.audio.output import AudioOutput
    from realtime_voicebot.config import Settings


def build_audio(
    settings: Settings,
    *,
    text: bool = False,
    input_file: Path | None = None,
    output_file: Path | None = None,
    input_pace: float = 1.0,
    output_pace: float = 1.0,
) -> tuple[AudioInput | None, AudioOutput | None]:
    """The input and output asked for: WAV files, devices, or none in text mode.

    Raises AudioUnavailableError when a device is asked for and cannot be had.
    """
    from realtime_voicebot.audio.devices import resolve_device
    from realtime_voicebot.audio.echo import make_echo_processor
    from realtime_voicebot.audio.files import WavFileInput
    from realtime_voicebot.audio.input import MicrophoneInput
    from realtime_voicebot.audio.output import SoundDevicePlayer, WavFilePlayer

    player_options: dict[str, Any] = {
        "jitter_ms": settings.jitter_ms,
        "latency_compensation": settings.output_latency_compensation,
    }
    audio_out: AudioOutput | None = None
    if output_file is not None:
        audio_out = WavFilePlayer(
            output_file,
            block_ms=settings.chunk_ms,
            pace=output_pace,
            **player_options,
        )
    elif not text and input_file is None:
        device = resolve_device(settings.output_device, "output")
        audio_out = SoundDevicePlayer(device, block_ms=settings.chunk_ms, **player_options)

    audio_in: AudioInput | None = None
    if input_file is not None:
        audio_in = WavFileInput(input_file, chunk_ms=settings.chunk_ms, pace=input_pace)
    elif not text:
        device = resolve_device(settings.input_device, "input")
        echo = make_echo_processor(settings.echo, audio_out.tap) if audio_out else None
        audio_in = MicrophoneInput(device, chunk_ms=settings.chunk_ms, echo=echo)
    return audio_in, audio_out
