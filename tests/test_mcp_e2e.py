"""Client-side MCP servers end to end: a real MCP server (tests/mcp_server.py, the ``mcp``
SDK's own server) called by the fake Realtime server scripted with `ToolCall`, through the
real app (`start_bot`) and through ``voicebot run`` in a subprocess, over stdio and over
streamable HTTP: calls answered, the server dying mid-call, a slow call timing out, the tool
list changing mid-session (a ``session.update`` with the new list reaches the fake)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from realtime_voicebot.testing import (
    FakeRealtimeServer,
    FakeServerConfig,
    Running,
    Scenario,
    ToolCall,
    start_bot,
    test_settings,
)

from .spec import validate_client
from .test_cli_run import clean_env, run_cli
from .test_mcp_tools import SERVER, http_server

WAIT_S = 30.0  # starting an MCP server imports the SDK


def outputs(received: list[dict[str, Any]]) -> list[str]:
    """The function call outputs the server got, in order."""
    return [
        event["item"]["output"]
        for event in received
        if event["type"] == "conversation.item.create"
        and event["item"].get("type") == "function_call_output"
    ]


def tool_names(event: dict[str, Any]) -> list[str]:
    return [tool["name"] for tool in event["session"].get("tools", [])]


@asynccontextmanager
async def server_entry(transport: str) -> AsyncIterator[str]:
    """The ``--mcp-server`` entry of the test server named ``notes``."""
    if transport == "stdio":
        yield f"notes={sys.executable} {SERVER}"
    else:
        async with http_server() as (url, _):
            yield f"notes={url}"


async def first_session(running: Running) -> Any:
    """The first session, once the bot has configured it."""
    await running.until(lambda: running.bot.core.session_number >= 1, WAIT_S)
    return await running.session()


async def say(running: Running, line: str, replies: int) -> None:
    """Type a line and wait until ``replies`` replies have ended in all."""
    await running.type(line)
    await running.until(lambda: len(running.view.assistant) >= replies, WAIT_S)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_mcp_tools_through_the_app(tmp_path: Path, transport: str) -> None:
    scenario = Scenario(
        replies=[
            ToolCall("notes__add", {"a": 2, "b": 3}),
            "Five.",
            ToolCall("notes__grow", {"name": "shout"}),
            "Grown.",
            ToolCall("notes__shout", {"text": "hi"}),
            "Shouted.",
            ToolCall("notes__hang"),
            "Too slow.",
            ToolCall("notes__die"),
            "It died.",
        ]
    )
    async with (
        server_entry(transport) as entry,
        FakeRealtimeServer(FakeServerConfig(scenario=scenario, speed=0)) as server,
    ):
        settings = test_settings(
            server, tmp_path, mcp_servers=json.dumps([entry]), tool_timeout_s=1.5
        )
        running = start_bot(server, settings, text_lines=True)
        session = await first_session(running)
        advertised = tool_names(session.received[0])
        assert {"notes__add", "notes__hang", "notes__die", "notes__grow"} <= set(advertised)
        assert "notes__shout" not in advertised
        await say(running, "add two and three", 1)
        await say(running, "grow a shout tool", 2)
        # the server said its tools changed: the live session gets the new list
        await running.wait_for(
            lambda: any(
                e["type"] == "session.update" and "notes__shout" in tool_names(e)
                for e in session.received[1:]
            ),
            WAIT_S,
        )
        await say(running, "shout hi", 3)
        await say(running, "take your time", 4)
        await say(running, "now die", 5)
        view = running.view
        assert await running.stop() == 0
    for event in session.received:
        validate_client(event, "ga")
    update = next(e for e in session.received[1:] if e["type"] == "session.update")
    assert set(update["session"]) == {"type", "tools", "tool_choice"}  # the tools only
    answers = outputs(session.received)
    assert answers[:3] == ["5", "added shout", "HI"]
    assert "did not answer hang within 1.5 s" in json.loads(answers[3])["error"] or (
        "timed out" in json.loads(answers[3])["error"]
    )
    assert "stopped" in json.loads(answers[4])["error"]
    shown = [(call.server, call.name, result.outcome) for call, result in view.tool_results]
    assert shown == [
        ("notes", "add", "ok"),
        ("notes", "grow", "ok"),
        ("notes", "shout", "ok"),
        ("notes", "hang", "timeout"),
        ("notes", "die", "error"),
    ]
    assert [call.arguments for call in view.tool_calls][:1] == ['{"a":2,"b":3}']
    assert any("tools changed; added notes__shout" in n for n in view.notices)
    assert view.listings[0].server == "notes" and "add" in view.listings[0].tools
    by_tool = view.summaries[0]["parts"]["tools"]["by_tool"]
    assert by_tool["notes__hang"] == {"calls": 1, "errors": 1, "timeouts": 1}
    assert by_tool["notes__die"] == {"calls": 1, "errors": 1, "timeouts": 0}
    assert by_tool["notes__add"] == {"calls": 1, "errors": 0, "timeouts": 0}
    assert view.summaries[0]["parts"]["mcp"]["servers"]["notes"]["calls"] == 5


async def test_a_dead_stdio_server_starts_again_at_the_next_call(tmp_path: Path) -> None:
    scenario = Scenario(
        replies=[ToolCall("notes__die"), "It died.", ToolCall("notes__add", {"a": 1, "b": 1}), "2"]
    )
    async with FakeRealtimeServer(FakeServerConfig(scenario=scenario, speed=0)) as server:
        entry = f"notes={sys.executable} {SERVER}"
        settings = test_settings(server, tmp_path, mcp_servers=json.dumps([entry]))
        running = start_bot(server, settings, text_lines=True)
        session = await first_session(running)
        await say(running, "die", 1)
        await say(running, "add one and one", 2)
        assert await running.stop() == 0
    answers = outputs(session.received)
    assert "stopped during the call" in answers[0] and answers[1] == "2"


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_mcp_tools_through_voicebot_run(tmp_path: Path, transport: str) -> None:
    """The CLI in a subprocess: a server that cannot start is one line and the bot runs on
    with the other's tools; the console shows each call and the summary counts them."""
    calls = (ToolCall("notes__add", {"a": 20, "b": 22}), ToolCall("notes__notes_search", {}))
    config = FakeServerConfig(speed=50.0, scenario=Scenario(replies=[calls, "All done."]))
    broken = f"broken={sys.executable} {SERVER} --crash-at-start"
    async with server_entry(transport) as entry, FakeRealtimeServer(config) as server:
        code, out, err, _ = await run_cli(
            "run",
            "--text",
            "--url",
            server.url,
            "--exit-when-input-ends",
            "--mcp-server",
            entry,
            "--mcp-server",
            broken,
            "--transcript",
            str(tmp_path / "t.jsonl"),
            stdin=b"add twenty and twenty-two, and search my notes\n",
            env=clean_env(OPENAI_API_KEY="sk-test"),
            timeout_s=60,
        )
        session = server.sessions[0]
    assert code == 0, err
    assert "Traceback" not in err + out
    assert "All done." in out
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: MCP server broken did not start: it exited before")
    assert "the notes directory does not exist" in errors[0]
    assert "running without its tools" in errors[0]
    advertised = tool_names(session.received[0])
    assert "notes__add" in advertised and not any(n.startswith("broken") for n in advertised)
    assert outputs(session.received)[0] == "42"
    assert '-- tool notes.add {"a":20,"b":22} …' in out
    assert "-- tool notes.add: ok, 2 chars in" in out
    assert "-- tool notes.notes_search: failed" in out  # a required argument is missing
    assert "tools: 2 calls, 1 errors, 0 timeouts; notes__add 1, notes__notes_search 1" in err


async def test_a_server_that_could_not_start_is_tried_again_after_a_reconnect(
    tmp_path: Path,
) -> None:
    """Refresh after every new session: a server down at start-up that can start now comes
    back, and its tools reach the new session with a tools-only ``session.update``."""
    ready = tmp_path / "ready"
    script = f'test -f "{ready}" && exec "{sys.executable}" "{SERVER}"; echo not ready >&2; exit 1'
    entry = f"notes=sh -c {json.dumps(script)}"
    async with FakeRealtimeServer(FakeServerConfig(speed=0)) as server:
        settings = test_settings(server, tmp_path, mcp_servers=json.dumps([entry]))
        running = start_bot(server, settings, text_lines=True)
        first = await first_session(running)
        assert not [n for n in tool_names(first.received[0]) if n.startswith("notes__")]
        assert running.view.errors == [
            'MCP server notes did not start: it exited before answering (its last words: "not '
            'ready"); run the command by hand to see why; running without its tools'
        ]
        ready.touch()
        first.drop()
        await running.until(lambda: running.bot.core.session_number >= 2, WAIT_S)
        second = await running.session(2)
        await running.wait_for(
            lambda: any(
                e["type"] == "session.update" and "notes__add" in tool_names(e)
                for e in second.received
            ),
            WAIT_S,
        )
        assert await running.stop() == 0
    assert "notes__add" not in tool_names(second.received[0])  # the handshake came first
    for event in second.received:
        validate_client(event, "ga")
