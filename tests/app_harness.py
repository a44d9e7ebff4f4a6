"""Running the real app against the in-process fake server: `realtime_voicebot.testing`,
with the few helpers only this suite needs."""

from __future__ import annotations

import wave
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.output import AudioOutput
from realtime_voicebot.config import Settings
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.testing import PushInput, Running, test_settings
from realtime_voicebot.testing import start_bot as testing_start_bot
from realtime_voicebot.transport.events import PCM_RATE

BLOCK_SAMPLES = PCM_RATE // 50  # 20 ms


def write_wav(path: Path, segments: Iterable[np.ndarray[Any, Any]], rate: int = PCM_RATE) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        for segment in segments:
            wav.writeframes(segment.astype(np.int16).tobytes())
    return path


def settings_for(server: FakeRealtimeServer, tmp_path: Path, **overrides: Any) -> Settings:
    return test_settings(server, tmp_path, **overrides)


def start_bot(
    server: FakeRealtimeServer, settings: Settings, options: RunOptions, **bot_kwargs: Any
) -> Running:
    return testing_start_bot(server, settings, options, **bot_kwargs)


async def spoken_turn(
    running: Running, mic: PushInput, player: AudioOutput, turn: int, seconds: float = 0.8
) -> None:
    """User turn number ``turn`` (0-based) spoken, then until its reply has been played out."""
    mic.say(seconds, seed=turn, pause_s=0.8)
    await running.until(lambda: len(running.view.assistant) > turn, 10)
    reply_id = running.view.assistant[turn][0]
    # The player's end of the item reaches the bot's core, which wakes `until`.
    await running.until(lambda: player.is_finished(reply_id), 5)


def fake_config(**kwargs: Any) -> FakeServerConfig:
    kwargs.setdefault("speed", 20.0)
    return FakeServerConfig(**kwargs)
