"""The user's own tools end to end: ``voicebot run --tools-module`` and an installed entry point,
in a real process against the fake Realtime server scripted to call them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.scenario import Scenario, ToolCall
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.tools.user import ENTRY_POINT_GROUP

from .spec import validate_client
from .test_cli_run import clean_env, run_cli

MODULE = """
from realtime_voicebot import tool


@tool
def add_note(text: str) -> dict:
    \"\"\"Save a note.\"\"\"
    return {"saved": text}
"""

PLUGIN = """
async def shout(text: str) -> str:
    \"\"\"Say it louder.\"\"\"
    return text.upper() + "!"
"""


def plugin_dir(root: Path) -> Path:
    """An installed distribution whose entry point names one function."""
    root.mkdir()
    (root / "voicebot_e2e_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "voicebot_e2e_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: voicebot-e2e-plugin\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nshout = voicebot_e2e_plugin:shout\n"
    )
    return root


def outputs(received: list[dict[str, Any]]) -> list[tuple[str, str]]:
    found = []
    for event in received:
        item = event.get("item") or {}
        if (
            event["type"] == "conversation.item.create"
            and item.get("type") == "function_call_output"
        ):
            found.append((item["call_id"], item["output"]))
    return found


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_a_tools_module_and_an_entry_point_tool_through_voicebot_run(
    tmp_path: Path, dialect: str
) -> None:
    module = tmp_path / "my_tools.py"
    module.write_text(textwrap.dedent(MODULE))
    calls = (ToolCall("add_note", {"text": "milk"}), ToolCall("shout", {"text": "hi"}))
    config = FakeServerConfig(speed=50.0, scenario=Scenario(replies=[calls, "Noted."]))
    async with FakeRealtimeServer(config) as server:
        code, out, err, _ = await run_cli(
            "run",
            "--text",
            "--url",
            server.url,
            "--dialect",
            dialect,
            "--exit-when-input-ends",
            "--tools-module",
            str(module),
            "--transcript",
            str(tmp_path / "t.jsonl"),
            stdin=b"remember milk, and shout hi\n",
            env=clean_env(OPENAI_API_KEY="sk-test", PYTHONPATH=str(plugin_dir(tmp_path / "site"))),
        )
        assert code == 0, err
        session = server.sessions[0]
    assert "Traceback" not in err
    assert "Noted." in out
    for event in session.received:
        validate_client(event, dialect)
    advertised = [t["name"] for t in session.received[0]["session"]["tools"]]
    assert advertised == ["add_note", "shout"]
    answered = [output for _, output in outputs(session.received)]
    assert answered == [json.dumps({"saved": "milk"}), "HI!"]
    # the console showed both calls as they happened (no MCP server: no server part)
    assert '-- tool add_note {"text":"milk"} …' in out and "-- tool shout: ok, 3 chars in" in out
    assert "tools: 2 calls, 0 errors, 0 timeouts; add_note 1, shout 1" in err


async def test_a_broken_tools_module_stops_voicebot_run_with_one_line(tmp_path: Path) -> None:
    module = tmp_path / "broken_tools.py"
    module.write_text("import os\nfrom realtime_voicebot import tool\nnope()\n")
    code, out, err, _ = await run_cli(
        "run",
        "--fake-server",
        "--text",
        "--tools-module",
        str(module),
        "--transcript",
        str(tmp_path / "t.jsonl"),
        env=clean_env(),
    )
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: cannot load tools module {module}: line 3: NameError: name 'nope' is not defined"
    ]
    assert "Traceback" not in err + out
