"""The audio layer: devices, microphone and file input, playback, resampling, echo handling.

Nothing here imports sounddevice or livekit at import time; they load when a device or AEC
is opened, so the rest of the bot works (and tests run) without PortAudio.
"""

from __future__ import annotations

from realtime_voicebot.audio.devices import (
    AudioUnavailableError,
    DeviceInfo,
    list_devices,
    print_devices,
    resolve_device,
)
from realtime_voicebot.audio.echo import EchoProcessor, make_echo_processor
from realtime_voicebot.audio.files import AudioFileError, WavFileInput
from realtime_voicebot.audio.input import AudioInput, MicrophoneInput
from realtime_voicebot.audio.output import (
    AudioOutput,
    AudioPlayer,
    PlaybackTap,
    SoundDevicePlayer,
    WavFilePlayer,
)
from realtime_voicebot.audio.resample import API_SAMPLE_RATE

__all__ = [
    "API_SAMPLE_RATE",
    "AudioFileError",
    "AudioInput",
    "AudioOutput",
    "AudioPlayer",
    "AudioUnavailableError",
    "DeviceInfo",
    "EchoProcessor",
    "MicrophoneInput",
    "PlaybackTap",
    "SoundDevicePlayer",
    "WavFileInput",
    "WavFilePlayer",
    "list_devices",
    "make_echo_processor",
    "print_devices",
    "resolve_device",
]
