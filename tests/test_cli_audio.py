"""`voicebot devices list` and falling back to text mode when no audio device can be had."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from realtime_voicebot.app import RunOptions, VoiceBot
from realtime_voicebot.audio import devices
from realtime_voicebot.cli import app
from realtime_voicebot.config import load_settings
from realtime_voicebot.testing import RecordingView, scaled

from .rig import rig_problem

runner = CliRunner()


@pytest.mark.audio
def test_devices_list_shows_the_rig_devices_and_marks_the_defaults() -> None:
    problem = rig_problem()
    if problem:
        pytest.skip(problem)
    result = runner.invoke(app, ["devices", "list"])
    assert result.exit_code == 0, result.output
    assert "Audio devices (* = default)" in result.output
    rows = {
        cells[1].strip(): cells
        for line in result.output.splitlines()
        if len(cells := line.split("│")) > 3 and cells[1].strip().isdigit()
    }
    names = " ".join(cells[2] for cells in rows.values())
    assert "pulse" in names and "default" in names
    defaults = [cells[2] for cells in rows.values() if "*in" in cells[2]]
    assert len(defaults) == 1 and "*out" in defaults[0]
    assert sum("*out" in cells[2] for cells in rows.values()) == 1


def test_devices_list_without_portaudio_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = importlib.import_module

    def import_module(name: str, package: str | None = None) -> ModuleType:
        if name == "sounddevice":  # what sounddevice raises when libportaudio is missing
            raise OSError("PortAudio library not found")
        return real_import(name, package)

    monkeypatch.setattr(devices.importlib, "import_module", import_module)
    result = runner.invoke(app, ["devices", "list"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: PortAudio is not installed")
    assert "libportaudio2" in lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_devices_list_with_no_device_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_devices() -> list[devices.DeviceInfo]:
        raise devices.AudioUnavailableError(f"No output device found: {devices.LIST_HINT}")

    monkeypatch.setattr(devices, "list_devices", no_devices)
    result = runner.invoke(app, ["devices", "list"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: No output device found: run `voicebot devices list`"


async def test_run_without_a_usable_device_falls_back_to_text_mode(tmp_path: Path) -> None:
    """A microphone spec that matches nothing: build_audio fails for real, the bot goes on
    in text mode (with PortAudio missing the same fallback happens, with another reason)."""
    settings = load_settings(
        {
            "transcript_path": str(tmp_path / "t.jsonl"),
            "input_device": "no-such-device",
            "summarizer": "extractive",
        }
    )
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    lines.put_nowait("hello there")
    lines.put_nowait(None)
    view = RecordingView()
    bot = VoiceBot(settings, RunOptions(fake_server=True, text_lines=lines), view)
    async with asyncio.timeout(scaled(20)):
        assert await bot.run() == 0
    fallback = [n for n in view.notices if "falling back to text mode" in n]
    assert len(fallback) == 1, view.notices
    if rig_problem() is None:
        assert "No device matches 'no-such-device'" in fallback[0]
    assert bot.text_only and not bot.options.text  # the options are never rewritten
    assert bot.audio_in is None and bot.audio_out is None
    assert [text for _, text, _ in view.assistant] == ["You said: hello there"]
    assert not view.errors
