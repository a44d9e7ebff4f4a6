"""The echo handling in use is told once at start-up (a view notice) and by `config show`.

`voicebot run` builds the microphone with its echo processor (`audio.build`); the app shows
that processor's `status` line. The real build on devices is checked on the rig
(`test_audio_echo_rig.py`); here the microphone is a `PushInput` carrying the processor the
build would give it, the canceller's fallback included.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio import echo as echo_module
from realtime_voicebot.audio.devices import AudioUnavailableError
from realtime_voicebot.audio.echo import (
    STATUS_AEC,
    STATUS_GATE,
    STATUS_OFF,
    make_echo_processor,
    planned_echo_status,
)
from realtime_voicebot.audio.output import PlaybackTap
from realtime_voicebot.cli import app
from realtime_voicebot.config import EchoMode
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.synth import silence
from realtime_voicebot.testing import PushInput

from .app_harness import fake_config, settings_for, start_bot, write_wav


class EchoMicrophone(PushInput):
    """A pushed microphone with the echo processor `audio.build` would give a device."""

    def __init__(self, mode: EchoMode) -> None:
        super().__init__()
        self.echo = make_echo_processor(mode, PlaybackTap(24000))


def no_livekit(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise AudioUnavailableError("livekit did not load: libwebrtc.so missing")

    monkeypatch.setattr(echo_module, "_import_livekit_rtc", fail)


async def notices_at_start(tmp_path: Path, mode: EchoMode) -> list[str]:
    async with FakeRealtimeServer(fake_config()) as server:
        mic = EchoMicrophone(mode)
        running = start_bot(server, settings_for(server, tmp_path), RunOptions(), audio_in=mic)
        await running.session(1)
        await running.until(lambda: any("echo handling" in n for n in running.view.notices))
        assert await running.stop() == 0
    return running.view.notices


@pytest.mark.parametrize(
    ("mode", "status"), [("aec", STATUS_AEC), ("gate", STATUS_GATE), ("off", STATUS_OFF)]
)
async def test_run_shows_the_echo_mode_in_use_once(
    tmp_path: Path, mode: EchoMode, status: str
) -> None:
    notices = await notices_at_start(tmp_path, mode)
    assert [n for n in notices if n.startswith("echo handling")] == [status]


async def test_run_shows_the_gate_fallback_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_livekit(monkeypatch)
    notices = await notices_at_start(tmp_path, "aec")
    [line] = [n for n in notices if n.startswith("echo handling")]
    assert line.startswith("echo handling: gate, because echo cancellation could not load")
    assert "libwebrtc.so missing" in line


async def test_no_echo_notice_without_a_microphone_that_has_echo_handling(
    tmp_path: Path,
) -> None:
    """The other side: a WAV file as the microphone has no echo handling to tell of."""
    wav = write_wav(tmp_path / "in.wav", [silence(1.0)])
    async with FakeRealtimeServer(fake_config()) as server:
        options = RunOptions(input_file=wav, output_file=tmp_path / "out.wav")
        running = start_bot(server, settings_for(server, tmp_path), options)
        await running.session(1)
        # Blocks are read once the audio is open and its notices shown.
        await running.until(lambda: getattr(running.bot.audio.audio_in, "blocks_read", 0) > 2)
        assert await running.stop() == 0
    assert not [n for n in running.view.notices if "echo handling" in n]


def test_config_show_names_the_echo_mode_a_run_would_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    shown = json.loads(runner.invoke(app, ["config", "show", "--json"]).output)
    assert shown["destinations"]["echo handling"] == "aec (WebRTC echo cancellation)"
    gate = json.loads(runner.invoke(app, ["config", "show", "--json", "--echo", "gate"]).output)
    assert gate["destinations"]["echo handling"].startswith("gate (adaptive echo gate")
    no_livekit(monkeypatch)
    table = runner.invoke(app, ["config", "show"]).output
    assert "echo handling: gate, because echo cancellation could not load" in table
    assert planned_echo_status("off") == STATUS_OFF
