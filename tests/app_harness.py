"""Running the real app against the in-process fake server, with scripted input."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realtime_voicebot.app import RunOptions, VoiceBot
from realtime_voicebot.audio.output import AudioOutput
from realtime_voicebot.config import Settings, load_settings
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.selftest import PushInput
from realtime_voicebot.transport.events import PCM_RATE

from .waiting import eventually

BLOCK_SAMPLES = PCM_RATE // 50  # 20 ms


@dataclass
class RecordingView:
    """A ConversationView that keeps what it was shown."""

    user: list[str] = field(default_factory=list)
    deltas: list[tuple[str, str]] = field(default_factory=list)
    assistant: list[tuple[str, str, bool]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    levels: list[float] = field(default_factory=list)
    windows: list[tuple[int, int]] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    compactions: list[tuple[int, int]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False

    def user_said(self, text: str) -> None:
        self.user.append(text)

    def assistant_delta(self, item_id: str, text: str) -> None:
        self.deltas.append((item_id, text))

    def assistant_done(self, item_id: str, text: str, truncated: bool) -> None:
        self.assistant.append((item_id, text, truncated))

    def status(self, text: str) -> None:
        self.statuses.append(text)

    def notice(self, text: str) -> None:
        self.notices.append(text)

    def error(self, text: str) -> None:
        self.errors.append(text)

    def level(self, dbfs: float) -> None:
        self.levels.append(dbfs)

    def window(self, tokens: int, threshold: int) -> None:
        self.windows.append((tokens, threshold))

    def latency(self, name: str, seconds: float) -> None:
        self.latencies.append((name, seconds))

    def cost(self, usd: float) -> None:
        self.costs.append(usd)

    def compaction(self, items: int, summary_chars: int) -> None:
        self.compactions.append((items, summary_chars))

    def summary(self, data: dict[str, Any]) -> None:
        self.summaries.append(data)

    def close(self) -> None:
        self.closed = True


def write_wav(path: Path, segments: Iterable[np.ndarray[Any, Any]], rate: int = PCM_RATE) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        for segment in segments:
            wav.writeframes(segment.astype(np.int16).tobytes())
    return path


def settings_for(server: FakeRealtimeServer, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "url": server.url,
        "openai_api_key": "sk-test",
        "transcript_path": str(tmp_path / "transcript.jsonl"),
        "backoff_initial_s": "0.05",
        "backoff_max_s": "0.2",
        "summarizer": "extractive",
    }
    values.update({k: str(v) for k, v in overrides.items()})
    return load_settings(values)


@dataclass
class Running:
    bot: VoiceBot
    server: FakeRealtimeServer
    task: asyncio.Task[int]
    view: RecordingView

    async def finish(self, timeout_s: float = 20.0) -> int:
        async with asyncio.timeout(timeout_s):
            return await self.task

    async def stop(self) -> int:
        self.bot.stop()
        return await self.finish()

    async def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> None:
        await self.server.wait_for(predicate, timeout_s)

    async def session(self, number: int, timeout_s: float = 10.0) -> FakeSession:
        return await self.server.wait_for_session(number, timeout_s)


def start_bot(
    server: FakeRealtimeServer,
    settings: Settings,
    options: RunOptions,
    **bot_kwargs: Any,
) -> Running:
    view = RecordingView()
    bot = VoiceBot(settings, options, view, **bot_kwargs)
    task = asyncio.create_task(bot.run())
    return Running(bot, server, task, view)


async def spoken_turn(
    running: Running, mic: PushInput, player: AudioOutput, turn: int, seconds: float = 0.8
) -> None:
    """User turn number ``turn`` (0-based) spoken, then until its reply has been played out."""
    mic.say(seconds, seed=turn, pause_s=0.8)
    await eventually(lambda: len(running.view.assistant) > turn, 10)
    await eventually(lambda: not player.is_audible, 5)


def fake_config(**kwargs: Any) -> FakeServerConfig:
    kwargs.setdefault("speed", 20.0)
    return FakeServerConfig(**kwargs)
