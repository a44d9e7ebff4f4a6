"""The player's timing stamps (item started, flush silenced) and the app metrics built on them:
`first_delta_to_first_sample` and `barge_in_to_silence`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.output import AudioPlayer, WavFilePlayer
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.testing import PushInput, scaled

from .app_harness import fake_config, settings_for, start_bot

RATE = 24000
BLOCK = 480


def tone(ms: float, amplitude: float = 12000.0) -> np.ndarray:
    t = np.arange(round(RATE * ms / 1000)) / RATE
    return np.rint(amplitude * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16)


def test_item_started_is_reported_once_with_the_first_sample_time() -> None:
    started: list[tuple[str, float]] = []
    player = AudioPlayer(jitter_ms=0, on_item_started=lambda i, t: started.append((i, t)))
    player.write("a", tone(100).tobytes())
    assert started == []
    player.pull(BLOCK)
    player.pull(BLOCK)
    assert started == [("a", player.first_sample_at("a"))]


def test_silenced_at_is_stamped_by_the_pull_that_ends_the_fade() -> None:
    player = AudioPlayer(jitter_ms=0, fade_ms=5)
    player.write("a", tone(500).tobytes())
    player.pull(BLOCK)
    assert player.silenced_at is None and player.flushed_at is None
    assert player.flush() == "a"
    assert player.flushed_at is not None
    assert player.silenced_at is None  # the fade has not been handed to the device yet
    block = player.pull(BLOCK)
    assert player.silenced_at is not None and player.silenced_at >= player.flushed_at
    fade = player.fade_samples
    assert block[:fade].any() and not block[fade:].any()
    stamp = player.silenced_at
    player.pull(BLOCK)
    assert player.silenced_at == stamp  # later blocks do not move it


def test_fade_longer_than_a_block_is_silenced_by_the_block_holding_its_end() -> None:
    player = AudioPlayer(jitter_ms=0, fade_ms=30)  # 720 samples: ends in the second block
    player.write("a", tone(500).tobytes())
    player.pull(BLOCK)
    player.flush()
    player.pull(BLOCK)
    assert player.silenced_at is None
    player.pull(BLOCK)
    assert player.silenced_at is not None


async def test_wait_silenced_returns_the_stamp_set_by_the_device_thread() -> None:
    player = AudioPlayer(jitter_ms=0)
    await player.start()
    assert await player.wait_silenced() is None  # never flushed
    player.write("a", tone(500).tobytes())
    player.pull(BLOCK)
    player.flush()
    waiter = asyncio.create_task(player.wait_silenced())
    await asyncio.sleep(0)  # the waiter waits
    await asyncio.to_thread(player.pull, BLOCK)
    stamp = await asyncio.wait_for(waiter, scaled(2))
    # Only that pull stamps `silenced_at`: a waiter that returned before it would have None.
    assert stamp is not None and stamp == player.silenced_at


async def test_a_newer_flush_releases_a_waiter_on_the_older_one() -> None:
    player = AudioPlayer(jitter_ms=0)
    await player.start()
    player.write("a", tone(500).tobytes())
    player.pull(BLOCK)
    player.flush()
    waiter = asyncio.create_task(player.wait_silenced())
    await asyncio.sleep(0)
    player.flush()
    assert await asyncio.wait_for(waiter, scaled(2)) is None


async def test_app_records_first_sample_and_silence_metrics_on_a_barge_in(
    tmp_path: Path,
) -> None:
    long_reply = "A long reply that goes on and on so that the user can talk over it. " * 3
    config = fake_config(
        speed=1.5, scenario=Scenario(user_transcripts=["hi", "stop"], replies=[long_reply])
    )
    async with FakeRealtimeServer(config) as server:
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", jitter_ms=60)
        running = start_bot(
            server,
            settings_for(server, tmp_path, echo="off"),
            RunOptions(),
            audio_in=mic,
            audio_out=player,
        )
        session = await running.session(1)
        started = time.monotonic()
        mic.say(0.6, seed=1)
        mic.pause(0.7)
        metrics = running.bot.metrics

        def reply_started() -> bool:
            return any(i.role == "assistant" for i in session.items) and bool(
                metrics.timings.get("first_delta_to_first_sample")
            )

        await running.until(reply_started)  # the sample reaches the view, which wakes it
        # The player pulls in real time: talk over the reply once half a second of it played.
        reply_id = next(i.id for i in session.items if i.role == "assistant")
        assert await asyncio.wait_for(player.wait_played(reply_id, 500), scaled(5))
        barged_at = time.monotonic()
        mic.say(0.6, seed=2, pause_s=0.8)  # "stop": a real interruption, once it is heard
        await running.wait_for(lambda: "conversation.item.truncate" in session.received_types())
        await running.until(lambda: bool(metrics.timings.get("barge_in_to_silence")))
        assert await running.stop() == 0

    first = metrics.timings["first_delta_to_first_sample"][0]
    silence = metrics.timings["barge_in_to_silence"][0]
    # Each figure lies inside the span the test saw it in: a stamp on the wrong clock, or
    # never set, falls outside. Not a performance bound (that is bench/barge_in.py).
    first_sample_at = player.first_sample_at(reply_id)
    assert first_sample_at is not None and 0.0 < first <= first_sample_at - started
    assert player.silenced_at is not None and 0.0 < silence <= player.silenced_at - barged_at
    assert player.silenced_at is not None and player.flushed_at is not None
    assert player.silenced_at >= player.flushed_at
    summary = metrics.summary()["latency"]
    assert {"first_delta_to_first_sample", "barge_in_to_silence"} <= set(summary)


def test_played_ms_leaves_out_what_the_device_has_not_reached_in_the_latest_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("realtime_voicebot.audio.output.time.monotonic", lambda: clock[0])
    player = AudioPlayer(jitter_ms=0, output_latency_s=0.010)
    player.write("a", tone(200).tobytes())
    for _ in range(3):
        player.pull(BLOCK)  # 60 ms handed to the device, the last block at t = 100.0
    assert player.played_ms("a") == pytest.approx(50.0)  # only the output latency

    player.real_time_pulls = True  # a device clock drives the pulls
    readings = {}
    for since_ms in (0.0, 5.0, 20.0, 500.0):
        clock[0] = 100.0 + since_ms / 1000
        readings[since_ms] = player.played_ms("a")
    assert readings == pytest.approx({0.0: 30.0, 5.0: 35.0, 20.0: 50.0, 500.0: 50.0})

    player.write("b", tone(100).tobytes())
    player.end_item("a")
    clock[0] = 101.0
    while not player.is_finished("a"):
        player.pull(BLOCK)
    assert player.played_ms("a") == pytest.approx(200.0)  # played to its end: its full length
