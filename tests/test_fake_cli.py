"""`voicebot fake-server`: a real process that serves until Ctrl-C and exits 0."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path

from typer.testing import CliRunner
from websockets.asyncio.client import connect

from realtime_voicebot.cli import app
from realtime_voicebot.testing import scaled
from tests.spec import validate_server

runner = CliRunner()


async def test_fake_server_command_serves_until_ctrl_c(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.txt"
    scenario.write_text("assistant: Hello from the command line.\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "realtime_voicebot",
        "fake-server",
        "--port",
        "0",
        "--speed",
        "0",
        "--scenario",
        str(scenario),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), scaled(20))).decode()
        match = re.search(r"(ws://127\.0\.0\.1:\d+/v1)", first)
        assert match, first
        url = match.group(1)
        hint = (await asyncio.wait_for(process.stdout.readline(), scaled(5))).decode()
        assert f"voicebot run --url {url}" in hint
        headers = {"Authorization": "Bearer sk-fake"}
        async with connect(f"{url}/realtime?model=gpt-realtime", additional_headers=headers) as ws:
            created = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
            validate_server(created, "ga")
            assert created["type"] == "session.created"
            await ws.send(json.dumps({"type": "response.create"}))
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))
                validate_server(event, "ga")
                if event["type"] == "response.done":
                    break
            transcript = event["response"]["output"][0]["content"][0]["transcript"]
            assert transcript == "Hello from the command line."
        process.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(process.communicate(), scaled(10))
        assert process.returncode == 0
        assert "stopped" in out.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_fake_server_command_rejects_bad_options(tmp_path: Path) -> None:
    result = runner.invoke(app, ["fake-server", "--dialect", "v2"])
    assert result.exit_code == 2
    assert "ga or beta" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"replies": [42]}')
    result = runner.invoke(app, ["fake-server", "--scenario", str(bad)])
    assert result.exit_code == 2
    assert "replies[0]" in result.output
    help_text = runner.invoke(app, ["--help"]).output
    assert "fake-server" in help_text
