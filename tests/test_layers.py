"""The core is free of I/O: importing it brings in no network, audio or UI module, and none
of the shells (the rule the README's Architecture section states)."""

from __future__ import annotations

import json
import subprocess
import sys

IO_MODULES = ("websockets", "sounddevice", "numpy", "soxr", "openai", "httpx", "mcp", "typer")
SHELLS = (
    "realtime_voicebot.app",
    "realtime_voicebot.audio",
    "realtime_voicebot.audio_io",
    "realtime_voicebot.background",
    "realtime_voicebot.transport.client",
    "realtime_voicebot.ui",
    "realtime_voicebot.fake",
    "realtime_voicebot.tools.runner",
    "realtime_voicebot.summarization.openai_summarizer",
)


def imported_by(statement: str) -> list[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def test_the_core_imports_no_io_and_no_shell() -> None:
    modules = imported_by("import realtime_voicebot.core.session")
    assert "realtime_voicebot.core.turn_taking" in modules  # the import did happen
    assert [m for m in modules if m.split(".")[0] in IO_MODULES] == []
    assert [m for m in modules if m.startswith(SHELLS)] == []


def test_the_app_does_import_the_shells() -> None:
    """The twin: the same check sees I/O modules when they are imported."""
    modules = imported_by("import realtime_voicebot.app")
    assert "websockets" in modules and "realtime_voicebot.transport.client" in modules
