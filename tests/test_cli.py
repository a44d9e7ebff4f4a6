from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from realtime_voicebot import __version__
from realtime_voicebot.cli import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "config" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_config_show_masks_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret123")
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert "secret123" not in result.output
    data = json.loads(result.output)
    assert data["openai_api_key"] == {"value": "********", "source": "env OPENAI_API_KEY"}
    table = runner.invoke(app, ["config", "show"])
    assert table.exit_code == 0
    assert "secret123" not in table.output and "********" in table.output


def test_config_show_reports_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEBOT_VOICE", "alloy")
    result = runner.invoke(
        app, ["config", "show", "--json", "--model", "m1", "--no-interrupt-response"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["model"] == {"value": "m1", "source": "cli"}
    assert data["voice"] == {"value": "alloy", "source": "env VOICEBOT_VOICE"}
    assert data["interrupt_response"] == {"value": "False", "source": "cli"}
    assert data["chunk_ms"]["source"] == "default"


def test_invalid_flag_is_one_line_naming_the_setting() -> None:
    result = runner.invoke(app, ["config", "show", "--summary-threshold", "-5"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "summary_threshold" in lines[0]
    assert "Traceback" not in result.output


def test_unknown_provider_rejected() -> None:
    result = runner.invoke(app, ["config", "show", "--provider", "nope"])
    assert result.exit_code == 2
    assert "provider" in result.output


def test_secret_flags_are_not_offered() -> None:
    result = runner.invoke(app, ["config", "show", "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert "--openai-api-key" not in result.output
    assert "--summary-threshold" in result.output


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys; from realtime_voicebot.cli import app\n"
        "heavy = [m for m in ('openai', 'numpy', 'sounddevice', 'websockets')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_readme_quickstart_is_two_lines_and_ci_runs_the_second() -> None:
    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quickstart, flags=re.S)
    lines = [block.strip() for block in blocks]
    assert lines == ["pip install . && voicebot run --fake-server", "bash scripts/check.sh"]
    assert "bash scripts/check.sh" in (root / ".ci" / "run").read_text()
    # The first line's command exists with that flag.
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0 and "--fake-server" in result.output
