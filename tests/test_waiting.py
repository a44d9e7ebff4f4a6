"""The suite's one way to wait: `Running.until` (the bot, its view and the fake server wake it),
the player's `wait_played`, and timeouts scaled by ``VOICEBOT_TEST_TIMEOUT_FACTOR``."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from realtime_voicebot.audio.output import AudioPlayer
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.testing import (
    TIMEOUT_FACTOR_ENV,
    RecordingView,
    running_bot,
    scaled,
    test_settings,
    timeout_factor,
)

from .conftest import remove_settings_from_env

RATE = 24000
BLOCK = 480  # 20 ms


def tone(ms: float) -> bytes:
    count = round(RATE * ms / 1000)
    wave = 12000 * np.sin(2 * np.pi * 440 * np.arange(count) / RATE)
    return np.rint(wave).astype(np.int16).tobytes()


# --- the timeout factor ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "factor"), [(None, 1.0), ("3", 3.0), ("2.5", 2.5), ("0.5", 1.0), ("slow", 1.0)]
)
def test_the_factor_comes_from_the_environment_and_never_shortens(
    monkeypatch: pytest.MonkeyPatch, value: str | None, factor: float
) -> None:
    if value is None:
        monkeypatch.delenv(TIMEOUT_FACTOR_ENV, raising=False)
    else:
        monkeypatch.setenv(TIMEOUT_FACTOR_ENV, value)
    assert timeout_factor() == factor
    assert scaled(4.0) == 4.0 * factor


def test_the_clean_environment_keeps_the_factor_and_drops_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TIMEOUT_FACTOR_ENV, "3")
    monkeypatch.setenv("VOICEBOT_MODEL", "from-the-shell")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-shell")
    remove_settings_from_env(monkeypatch)
    assert os.environ.get(TIMEOUT_FACTOR_ENV) == "3"
    assert "VOICEBOT_MODEL" not in os.environ and "OPENAI_API_KEY" not in os.environ


# --- Running.until -----------------------------------------------------------------------------


async def test_until_wakes_on_the_server_the_core_and_the_view(tmp_path: Path) -> None:
    async with FakeRealtimeServer(FakeServerConfig(speed=0)) as server:
        settings = test_settings(server, tmp_path)
        async with running_bot(server, settings, text_lines=True) as running:
            session = await running.session(1)
            # The server alone: the bot's session.update, received.
            await running.until(lambda: "session.update" in session.received_types())
            # The core alone: a typed line's reply, as the bot saw it.
            await running.type("hello")
            await running.until(lambda: running.bot.core.stats.completed_replies == 1)
            # The view alone: something shown outside the core, once the wait has begun.
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, running.view.notice, "shown outside the core")
            await running.until(lambda: "shown outside the core" in running.view.notices)
            assert running.view.assistant[0][1] == "You said: hello"


async def test_until_fails_at_once_when_the_bot_stops(tmp_path: Path) -> None:
    config = FakeServerConfig(api_keys=frozenset({"sk-right"}))
    async with FakeRealtimeServer(config) as server:
        settings = test_settings(server, tmp_path)  # sends sk-test: refused
        async with running_bot(server, settings, text_lines=True) as running:
            with pytest.raises(RuntimeError, match=r"the bot stopped \(exit 1\)"):
                await running.until(lambda: False, timeout_s=60)
            assert running.task.done() and running.view.errors


def test_the_recording_view_announces_every_call() -> None:
    view = RecordingView()
    calls = 0

    def count() -> None:
        nonlocal calls
        calls += 1

    view.changed.notify = count  # type: ignore[method-assign]
    view.user_said("u")
    view.assistant_delta("i", "d")
    view.assistant_done("i", "t", False)
    view.status("s")
    view.notice("n")
    view.error("e")
    view.level(-20.0)
    view.window(1, 2)
    view.latency("x", 0.1)
    view.cost(0.01)
    view.compaction(1, 2)
    view.summary({})
    view.close()
    assert calls == 13


# --- AudioPlayer.wait_played -------------------------------------------------------------------


async def test_wait_played_wakes_when_the_device_thread_gets_there() -> None:
    player = AudioPlayer(jitter_ms=0)
    await player.start()
    player.write("a", tone(300))
    player.end_item("a")
    waiter = asyncio.create_task(player.wait_played("a", 100))
    await asyncio.sleep(0)  # the waiter waits
    assert player._played_watches  # one watch, checked by the pulls

    def device() -> None:
        while not waiter.done() and not player.is_finished("a"):
            player.pull(BLOCK)

    thread = threading.Thread(target=device)
    thread.start()
    try:
        assert await asyncio.wait_for(waiter, scaled(5)) is True
    finally:
        thread.join()
    assert player.played_ms("a") >= 100
    assert player._played_watches == ()  # the watch is gone once it fired


async def test_wait_played_counts_what_came_out_of_the_speaker() -> None:
    """With latency compensation the device's latency is not heard yet: 100 ms heard takes
    140 ms handed over with a 40 ms output latency."""
    player = AudioPlayer(jitter_ms=0, output_latency_s=0.04)
    await player.start()
    player.write("a", tone(400))
    waiter = asyncio.create_task(player.wait_played("a", 100))
    await asyncio.sleep(0)
    for _ in range(6):  # 120 ms handed over: 80 ms heard
        player.pull(BLOCK)
    player.pull(BLOCK)  # 140 ms: 100 ms heard
    assert await asyncio.wait_for(waiter, scaled(5)) is True
    assert player.played_ms("a") == pytest.approx(100)


async def test_wait_played_waits_for_an_item_not_written_yet() -> None:
    player = AudioPlayer(jitter_ms=0)
    await player.start()
    waiter = asyncio.create_task(player.wait_played("later", 20))
    await asyncio.sleep(0)
    player.pull(BLOCK)  # nothing to play: the watch stays
    player.write("later", tone(100))
    player.pull(BLOCK)
    assert await asyncio.wait_for(waiter, scaled(5)) is True


async def test_wait_played_is_false_when_the_item_ends_or_is_flushed_short_of_it() -> None:
    player = AudioPlayer(jitter_ms=0)
    await player.start()
    player.write("short", tone(40))
    player.end_item("short")
    ended = asyncio.create_task(player.wait_played("short", 100))
    await asyncio.sleep(0)
    for _ in range(3):
        player.pull(BLOCK)
    assert await asyncio.wait_for(ended, scaled(5)) is False
    assert player.is_finished("short")

    player.write("cut", tone(500))
    flushed = asyncio.create_task(player.wait_played("cut", 300))
    await asyncio.sleep(0)
    player.pull(BLOCK)
    player.flush()
    player.pull(BLOCK)  # the next block tells the waiter
    assert await asyncio.wait_for(flushed, scaled(5)) is False
    assert await player.wait_played("cut", 10) is True  # what it did play still counts
    assert await player.wait_played("cut", 300) is False  # answered at once now
