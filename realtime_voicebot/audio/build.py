"""Which audio input and output a run uses: WAV files, the PortAudio devices, or none.

With a microphone and a speaker, one callback (`audio.duplex.DuplexAudio`) serves both when
the two devices share a host API and a sample rate (`Settings.audio_streams` auto or duplex);
otherwise `MicrophoneInput` and `SoundDevicePlayer` each open their own stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime_voicebot.audio.input import AudioInput
    from realtime_voicebot.audio.output import AudioOutput
    from realtime_voicebot.config import Settings

NO_SHARED_STREAM = (
    "The microphone and speaker cannot share one stream (different host APIs or no common "
    "sample rate): use --audio-streams auto, or pick devices with `voicebot devices list`"
)


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
    if not text and input_file is None and output_file is None:
        duplex = build_duplex(settings, player_options)
        if duplex is not None:
            return duplex

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
        clock = audio_out.tap if audio_out else None
        audio_in = MicrophoneInput(device, chunk_ms=settings.mic_block_ms, echo=echo, clock=clock)
    return audio_in, audio_out


def build_duplex(
    settings: Settings, player_options: dict[str, Any]
) -> tuple[AudioInput, AudioOutput] | None:
    """The microphone and speaker served by one callback, or None when two streams it is."""
    from realtime_voicebot.audio.devices import (
        AudioUnavailableError,
        resolve_device,
        shared_stream_support,
    )
    from realtime_voicebot.audio.duplex import DuplexAudio, mode_for_hostapi
    from realtime_voicebot.audio.echo import make_echo_processor
    from realtime_voicebot.audio.resample import API_SAMPLE_RATE

    if settings.audio_streams == "separate":
        return None
    input_device = resolve_device(settings.input_device, "input")
    output_device = resolve_device(settings.output_device, "output")
    support = shared_stream_support(input_device, output_device, API_SAMPLE_RATE)
    if support is None:
        if settings.audio_streams == "duplex":
            raise AudioUnavailableError(NO_SHARED_STREAM)
        return None
    rate, hostapi = support
    audio = DuplexAudio(
        input_device,
        output_device,
        sample_rate=rate,
        block_ms=settings.chunk_ms,
        mic_block_ms=settings.mic_block_ms,
        prefer=mode_for_hostapi(hostapi),
        **player_options,
    )
    audio.microphone.echo = make_echo_processor(settings.echo, audio.player.tap)
    return audio.microphone, audio.player
