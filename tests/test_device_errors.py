"""Audio devices failing mid-run: one clear line, then text mode or a clean exit with code 1.

The app runs against the fake server. Devices fail three ways: an input whose iterator raises
`sounddevice.PortAudioError`, an output whose ``write`` raises, and the real `MicrophoneInput`
and `SoundDevicePlayer` on a stand-in PortAudio stream whose ``finished_callback`` fires while
the bot did not stop it (what PortAudio does when a device is unplugged). In every case the
transcript file holds every turn so far once the run has ended.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import sounddevice as sd

from realtime_voicebot import app as app_module
from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio import input as input_module
from realtime_voicebot.audio import output as output_module
from realtime_voicebot.audio.input import AudioDeviceError, MicrophoneInput
from realtime_voicebot.audio.output import AudioPlayer, SoundDevicePlayer
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.testing import PushInput
from realtime_voicebot.transport.events import PCM_RATE

from .app_harness import BLOCK_SAMPLES, Running, fake_config, settings_for, start_bot

UNPLUGGED = "Device unavailable [PaErrorCode -9985]"


def turns(path: Path) -> list[tuple[str, str]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["role"], r["text"]) for r in records if r["type"] == "turn"]


@pytest.fixture
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody can type: stdin is not a terminal (as under a service manager or a pipe)."""
    monkeypatch.setattr(app_module, "stdin_is_terminal", lambda: False)


class FailingMic(PushInput):
    """A scripted microphone that raises what PortAudio raised, when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: BaseException | None = None
        self.stopped = False

    def fail(self, exc: BaseException) -> None:
        self.failure = exc
        self._queue.put_nowait(b"")

    async def read(self) -> bytes:
        block = await self._queue.get()
        if not block and self.failure is not None:
            raise self.failure
        return block

    async def stop(self) -> None:
        self.stopped = True


class BrokenSpeaker(AudioPlayer):
    """An output whose device went away: every write raises."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.stopped = False

    def write(self, item_id: str, pcm16_24k: bytes) -> None:
        self.writes += 1
        raise sd.PortAudioError("Stream is stopped [PaErrorCode -9983]")

    async def stop(self) -> None:
        self.stopped = True


async def replies(running: Running, count: int) -> None:
    """Until the bot itself has finished ``count`` replies (not just the server sent them)."""
    await running.until(lambda: len(running.view.assistant) >= count, timeout_s=10)


def one_line_error(errors: list[str], prefix: str, flag: str) -> str:
    assert len(errors) == 1, errors
    message = errors[0]
    assert message.startswith(prefix), message
    assert "\n" not in message
    assert "voicebot devices list" in message and flag in message
    return message


async def test_microphone_error_without_a_terminal_exits_1_with_the_transcript_saved(
    tmp_path: Path, no_terminal: None
) -> None:
    config = fake_config(scenario=Scenario(user_transcripts=["what time is it"]))
    async with FakeRealtimeServer(config) as server:
        mic = FailingMic()
        running = start_bot(server, settings_for(server, tmp_path), RunOptions(), audio_in=mic)
        await running.session(1)
        mic.say(1.0, seed=1)
        mic.pause(1.0)
        await replies(running, 1)
        mic.fail(sd.PortAudioError(UNPLUGGED))
        assert await running.finish() == 1

    message = one_line_error(running.view.errors, "Microphone stopped: ", "--input-device")
    assert UNPLUGGED in message
    assert mic.stopped
    assert turns(tmp_path / "transcript.jsonl") == [
        ("user", "what time is it"),
        ("assistant", "You said: what time is it"),
    ]
    assert running.bot.snapshot()["app"]["audio_device_failures"] == 1


async def test_microphone_error_falls_back_to_typed_lines(tmp_path: Path) -> None:
    config = fake_config(scenario=Scenario(user_transcripts=["first by voice"]))
    async with FakeRealtimeServer(config) as server:
        mic = FailingMic()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        options = RunOptions(text_lines=lines)
        running = start_bot(server, settings_for(server, tmp_path), options, audio_in=mic)
        session = await running.session(1)
        mic.say(1.0, seed=2)
        mic.pause(1.0)
        await replies(running, 1)
        mic.fail(sd.PortAudioError(UNPLUGGED))
        await running.until(lambda: any("text mode" in n for n in running.view.notices))
        assert running.bot.audio_in is None
        mic.say(1.0, seed=3)  # a microphone that is gone sends nothing more
        await lines.put("then by keyboard")
        await replies(running, 2)
        await lines.put(None)  # the end of typed input now ends the run
        assert await running.finish() == 0

    one_line_error(running.view.errors, "Microphone stopped: ", "--input-device")
    assert session.input_ms < 2500  # only the first utterance and its pause
    assert turns(tmp_path / "transcript.jsonl") == [
        ("user", "first by voice"),
        ("assistant", "You said: first by voice"),
        ("user", "then by keyboard"),
        ("assistant", "You said: then by keyboard"),
    ]


async def test_speaker_write_error_without_a_terminal_exits_1(
    tmp_path: Path, no_terminal: None
) -> None:
    config = fake_config(scenario=Scenario(user_transcripts=["are you there"]))
    async with FakeRealtimeServer(config) as server:
        mic = FailingMic()
        speaker = BrokenSpeaker()
        running = start_bot(
            server, settings_for(server, tmp_path), RunOptions(), audio_in=mic, audio_out=speaker
        )
        await running.session(1)
        mic.say(1.0, seed=4)
        mic.pause(1.0)
        assert await running.finish() == 1

    one_line_error(running.view.errors, "Speaker stopped: ", "--output-device")
    assert speaker.writes == 1  # the first failure ends playback; no write after it
    assert speaker.stopped and mic.stopped
    saved = turns(tmp_path / "transcript.jsonl")
    assert saved[0] == ("user", "are you there")
    assert [role for role, _ in saved].count("user") == 1


async def test_speaker_write_error_in_a_typed_conversation_goes_on_silently(
    tmp_path: Path,
) -> None:
    async with FakeRealtimeServer(fake_config()) as server:
        speaker = BrokenSpeaker()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        options = RunOptions(text=True, text_lines=lines)
        running = start_bot(server, settings_for(server, tmp_path), options, audio_out=speaker)
        await running.session(1)
        await lines.put("one")
        await replies(running, 1)
        await lines.put("two")
        await replies(running, 2)
        await lines.put(None)
        assert await running.finish() == 0

    one_line_error(running.view.errors, "Speaker stopped: ", "--output-device")
    assert speaker.writes == 1
    assert [text for _, text, _ in running.view.assistant] == ["You said: one", "You said: two"]
    assert turns(tmp_path / "transcript.jsonl") == [
        ("user", "one"),
        ("assistant", "You said: one"),
        ("user", "two"),
        ("assistant", "You said: two"),
    ]


# --- the real device shells on a stand-in PortAudio stream -------------------------------------


class FakeStream:
    """A PortAudio stream stand-in: keeps the callbacks; `stop` ends it as PortAudio does
    (finished_callback after the last callback); `vanish` is the device being unplugged."""

    def __init__(
        self,
        *,
        callback: Callable[..., None],
        finished_callback: Callable[[], None] | None = None,
        **_: Any,
    ) -> None:
        self.callback = callback
        self.finished_callback = finished_callback
        self.latency = 0.01
        self.active = False

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        if self.active:
            self.active = False
            if self.finished_callback is not None:
                self.finished_callback()

    def close(self) -> None:
        return

    def vanish(self) -> None:
        """PortAudio aborts the stream on its own thread."""
        assert self.finished_callback is not None, "the shell did not ask to hear of it"
        self.active = False
        thread = threading.Thread(target=self.finished_callback)
        thread.start()
        thread.join()

    def feed(self, samples: np.ndarray[Any, Any]) -> None:
        """Deliver input blocks from a PortAudio-like thread."""

        def run() -> None:
            for start in range(0, len(samples) - BLOCK_SAMPLES + 1, BLOCK_SAMPLES):
                block = samples[start : start + BLOCK_SAMPLES].astype(np.int16)
                self.callback(block.reshape(-1, 1), BLOCK_SAMPLES, None, None)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()


@pytest.fixture
def streams(monkeypatch: pytest.MonkeyPatch) -> list[FakeStream]:
    """sounddevice with its streams replaced; the streams the shells opened, in order."""
    opened: list[FakeStream] = []

    def open_stream(**kwargs: Any) -> FakeStream:
        stream = FakeStream(**kwargs)
        opened.append(stream)
        return stream

    fake_sd = SimpleNamespace(
        InputStream=open_stream, OutputStream=open_stream, PortAudioError=sd.PortAudioError
    )
    for module in (input_module, output_module):
        monkeypatch.setattr(module, "load_sounddevice", lambda: fake_sd)
        monkeypatch.setattr(module, "supported_samplerate", lambda *_: PCM_RATE)
    return opened


async def test_microphone_stream_ending_on_its_own_raises_after_the_captured_blocks(
    streams: list[FakeStream],
) -> None:
    mic = MicrophoneInput(queue_blocks=100)
    await mic.start()
    stream = streams[0]
    stream.feed(speech_like(0.2, seed=5))
    stream.vanish()
    blocks = [await mic.read() for _ in range(10)]
    assert all(len(block) == BLOCK_SAMPLES * 2 for block in blocks)
    with pytest.raises(AudioDeviceError, match="stopped unexpectedly"):
        await mic.read()
    assert mic.device_error is not None


async def test_microphone_stop_is_not_a_device_error(streams: list[FakeStream]) -> None:
    mic = MicrophoneInput()
    await mic.start()
    await mic.stop()  # the stand-in calls finished_callback, as PortAudio does
    assert await mic.read() == b""
    assert mic.device_error is None


async def loop_ran_what_it_was_handed() -> None:
    """Until every callback handed to the loop so far, from any thread, has run: the loop runs
    them in the order they came, and this one comes after them."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.call_soon_threadsafe(done.set_result, None)
    await done


async def test_speaker_stream_ending_on_its_own_is_reported_once_on_the_loop(
    streams: list[FakeStream],
) -> None:
    player = SoundDevicePlayer()
    reasons: list[tuple[str, bool]] = []
    loop_thread = threading.get_ident()
    player.on_device_error = lambda reason: reasons.append(
        (reason, threading.get_ident() == loop_thread)
    )
    await player.start()
    streams[0].vanish()
    streams[0].vanish()
    await loop_ran_what_it_was_handed()  # both reports, had there been two
    assert len(reasons) == 1
    assert "stopped unexpectedly" in reasons[0][0] and reasons[0][1]
    await player.stop()

    quiet = SoundDevicePlayer()
    quiet.on_device_error = lambda reason: reasons.append((reason, True))
    await quiet.start()
    await quiet.stop()
    await loop_ran_what_it_was_handed()
    assert len(reasons) == 1  # a stop the bot asked for is not a failure


async def test_unplugged_microphone_ends_the_run_with_code_1(
    tmp_path: Path, streams: list[FakeStream], no_terminal: None
) -> None:
    config = fake_config(scenario=Scenario(user_transcripts=["before the cable came out"]))
    async with FakeRealtimeServer(config) as server:
        mic = MicrophoneInput(queue_blocks=1000)
        running = start_bot(server, settings_for(server, tmp_path), RunOptions(), audio_in=mic)
        await running.session(1)
        stream = streams[0]
        stream.feed(np.concatenate([speech_like(1.0, seed=6), silence(1.0)]))
        await replies(running, 1)
        stream.vanish()
        assert await running.finish() == 1

    message = one_line_error(running.view.errors, "Microphone stopped: ", "--input-device")
    assert "input stream stopped unexpectedly" in message
    assert turns(tmp_path / "transcript.jsonl") == [
        ("user", "before the cable came out"),
        ("assistant", "You said: before the cable came out"),
    ]


async def test_unplugged_speaker_falls_back_to_text_mode(
    tmp_path: Path, streams: list[FakeStream]
) -> None:
    async with FakeRealtimeServer(fake_config()) as server:
        player = SoundDevicePlayer()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        options = RunOptions(text_lines=lines)
        running = start_bot(server, settings_for(server, tmp_path), options, audio_out=player)
        await running.session(1)
        streams[0].vanish()
        await running.until(lambda: any("text mode" in n for n in running.view.notices))
        await lines.put("hello after the speaker went")
        await replies(running, 1)
        await lines.put(None)
        assert await running.finish() == 0

    message = one_line_error(running.view.errors, "Speaker stopped: ", "--output-device")
    assert "output stream stopped unexpectedly" in message
    assert turns(tmp_path / "transcript.jsonl") == [
        ("user", "hello after the speaker went"),
        ("assistant", "You said: hello after the speaker went"),
    ]
