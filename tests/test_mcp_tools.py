"""MCP servers on the user's side: real servers written with the ``mcp`` SDK (tests/mcp_server.py)
over stdio and streamable HTTP on loopback, reached through `McpToolSource` and the runner."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from realtime_voicebot.config import load_settings
from realtime_voicebot.testing import scaled
from realtime_voicebot.tools import Tool, ToolError, ToolRegistry, ToolRunner
from realtime_voicebot.tools.mcp import (
    McpToolsChanged,
    McpToolSource,
    exposed_name,
    summarize_result,
)
from realtime_voicebot.tools.mcp_config import (
    HttpServer,
    McpServerConfig,
    StdioServer,
    parse_server_spec,
)
from realtime_voicebot.transport.events import Dialect, session_update

from .spec import validate_client

SERVER = Path(__file__).with_name("mcp_server.py")
WAIT_S = scaled(20.0)  # a server start imports the SDK: about a second, more on a busy machine
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def stdio(name: str, *flags: str) -> StdioServer:
    return StdioServer(name, sys.executable, (str(SERVER), *flags))


@asynccontextmanager
async def http_server(*flags: str) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """The test server on streamable HTTP: its URL and its process."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SERVER), "--http", *flags, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(WAIT_S):
            port = int(await process.stdout.readline())
        yield f"http://127.0.0.1:{port}/mcp", process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


class Changes:
    """The ``on_tools_changed`` callback, and a way to wait for its next call."""

    def __init__(self) -> None:
        self.seen: list[McpToolsChanged] = []
        self._event = asyncio.Event()

    def __call__(self, change: McpToolsChanged) -> None:
        self.seen.append(change)
        self._event.set()

    async def next(self) -> McpToolsChanged:
        async with asyncio.timeout(WAIT_S):
            await self._event.wait()
        self._event.clear()
        return self.seen[-1]


@asynccontextmanager
async def started(
    servers: list[McpServerConfig], **options: Any
) -> AsyncIterator[tuple[McpToolSource, ToolRegistry, ToolRunner, list[str]]]:
    source = McpToolSource(servers, **options)
    registry = ToolRegistry()
    registry.add_source(source)
    try:
        problems = await source.start()
        yield source, registry, ToolRunner(registry, timeout_s=scaled(30.0)), problems
    finally:
        await source.aclose()


async def call(runner: ToolRunner, tool: str, /, **arguments: Any) -> Any:
    return await runner.run(tool, json.dumps(arguments))


# --- naming and results, without a server ---------------------------------------------------


def test_exposed_names_are_namespaced_valid_and_unique() -> None:
    taken: set[str] = set()
    first = exposed_name("notes", "search", taken)
    assert first == "notes__search"
    assert exposed_name("calendar", "search", taken) == "calendar__search"  # no clash
    dotted = exposed_name("notes", "notes.search", taken)
    assert dotted == "notes__notes_search"
    taken |= {"notes__search", "notes__notes_search"}
    twin = exposed_name("notes", "notes/search", taken)  # sanitizes to a taken name
    assert twin is not None and twin not in taken and twin.startswith("notes__notes_search_")
    long = exposed_name("a" * 24, "x" * 100, set())
    assert long is not None and len(long) == 64
    assert exposed_name("a" * 24, "x" * 101, set()) != long  # the hash tells them apart
    for name in (first, dotted, twin, long, exposed_name("s", "ünïcødé tool", set())):
        assert name is not None and _TOOL_NAME.match(name), name


def test_results_summarized_for_the_model_and_capped() -> None:
    from mcp_types import (
        BlobResourceContents,
        CallToolResult,
        EmbeddedResource,
        ImageContent,
        TextContent,
    )

    image = ImageContent(type="image", data="A" * 4000, mime_type="image/png")
    blob = EmbeddedResource(
        type="resource",
        resource=BlobResourceContents(
            uri="file:///a.bin", mime_type="application/zip", blob="QUJD"
        ),
    )
    result = CallToolResult(content=[TextContent(type="text", text="chart:"), image, blob])
    text = summarize_result(result, 10_000)
    assert text.splitlines() == [
        "chart:",
        "[image: image/png, 3 KB, not shown]",
        "[resource file:///a.bin: application/zip, 3 bytes]",
    ]
    assert "AAAA" not in text  # never the data itself
    capped = summarize_result(
        CallToolResult(content=[TextContent(type="text", text="y" * 500)]), 100
    )
    assert capped.startswith("y" * 100) and capped.endswith("[truncated: 400 more characters]")
    assert summarize_result(CallToolResult(content=[], structured_content={"t": 21}), 100) == (
        '{"t": 21}'
    )
    assert summarize_result(CallToolResult(content=[]), 100) == "[the tool returned no content]"


def test_a_registry_consults_its_sources_at_every_lookup_and_the_first_name_wins() -> None:
    async def mine() -> str:
        """Registered first."""
        return "mine"

    async def theirs() -> str:
        """From a source."""
        return "theirs"

    class Source:
        def __init__(self) -> None:
            self.offered: list[Tool] = []

        def tools(self) -> list[Tool]:
            return self.offered

    registry = ToolRegistry()
    registry.add(Tool.from_function(mine, name="s__tool"))
    source = Source()
    registry.add_source(source)
    assert registry.names() == ["s__tool"]
    source.offered = [
        Tool.from_function(theirs, name="s__tool"),  # taken: skipped
        Tool.from_function(theirs, name="s__other"),
    ]
    assert registry.names() == ["s__tool", "s__other"]
    assert [spec["name"] for spec in registry.specs()] == ["s__tool", "s__other"]
    assert registry.get("s__tool") is not None
    assert registry.get("s__tool").description == "Registered first."  # type: ignore[union-attr]
    source.offered = []
    assert "s__other" not in registry and len(registry) == 1


# --- a stdio server ---------------------------------------------------------------------------


async def test_stdio_server_tools_are_listed_namespaced_and_called() -> None:
    async with started([stdio("notes")], max_output_chars=1000) as (source, registry, runner, bad):
        assert bad == []
        names = registry.names()
        assert {"notes__add", "notes__notes_search", "notes__picture", "notes__grow"} <= set(names)
        assert all(_TOOL_NAME.match(name) for name in names)
        dialects: list[Dialect] = ["ga", "beta"]
        for dialect in dialects:
            event = session_update(load_settings(), dialect, tools=registry.specs())
            validate_client(event, dialect)
        add = next(spec for spec in registry.specs() if spec["name"] == "notes__add")
        assert add["description"] == "Add two whole numbers."
        assert add["parameters"]["required"] == ["a", "b"]

        assert (await call(runner, "notes__add", a=2, b=3)).output == "5"
        assert (await call(runner, "notes__notes_search", query="milk")).output == (
            "1 note matches 'milk'"
        )
        refused = await call(runner, "notes__add", a="two", b=3)  # checked before it is sent
        assert refused.outcome == "error" and "should be integer" in refused.output

        picture = (await call(runner, "notes__picture")).output
        assert picture.splitlines() == [
            "Here is the chart.",
            "[image: image/png, 70 bytes, not shown]",
            "[audio: audio/wav, 4 KB, not played]",
            "[resource file:///notes/today.md (text/markdown)]",
            "# Today",
            "[resource link report (application/pdf) file:///reports/q3.pdf: The Q3 report]",
        ]
        long = (await call(runner, "notes__long_text", size=5000)).output
        assert long == "x" * 1000 + "\n[truncated: 4000 more characters]"

        failed = await call(runner, "notes__fail")  # isError
        assert failed.outcome == "error"
        assert "the calendar is locked" in json.loads(failed.output)["error"]

        counts = source.snapshot()["servers"]["notes"]
        assert counts["state"] == "running" and counts["transport"] == "stdio"
        assert (counts["calls"], counts["errors"]) == (5, 1)  # the refused call never went


async def test_tool_list_change_mid_session_reaches_the_callback() -> None:
    """A 2026-07-28 server: the change comes on the ``subscriptions/listen`` stream."""
    changes = Changes()
    async with started([stdio("notes")], on_tools_changed=changes) as (source, registry, runner, _):
        assert "notes__shout" not in registry
        assert (await call(runner, "notes__grow", name="shout")).output == "added shout"
        change = await changes.next()
        assert (change.server, change.added, change.removed) == ("notes", ("notes__shout",), ())
        assert "notes__shout" in [tool.name for tool in change.tools]
        assert "notes__shout" in [spec["name"] for spec in registry.specs()]
        assert (await call(runner, "notes__shout", text="hi")).output == "HI"
        assert source.snapshot()["servers"]["notes"]["relists"] >= 1
    assert len(changes.seen) == 1  # stopping the source is not a change to announce


async def test_server_dying_mid_call_is_answered_and_restarted_on_demand() -> None:
    changes = Changes()
    async with started([stdio("notes")], on_tools_changed=changes) as (source, _, runner, _):
        died = await call(runner, "notes__die")
        assert died.outcome == "error"
        assert "stopped during the call" in died.output
        again = await call(runner, "notes__add", a=1, b=1)  # a new process, started by this call
        assert (again.outcome, again.output) == ("ok", "2")
        counts = source.snapshot()["servers"]["notes"]
        assert (counts["connects"], counts["stops"]) == (2, 1)
        assert changes.seen == []  # same tools after the restart: nothing to announce

        await call(runner, "notes__die")
        assert await source.refresh() == []  # started again without waiting for a call
        assert source.snapshot()["servers"]["notes"]["state"] == "running"
        assert (await call(runner, "notes__add", a=2, b=2)).output == "4"


async def test_slow_call_times_out_and_the_server_keeps_answering() -> None:
    # The limit every call must keep, the quick one after too: scaled for a slow machine.
    limit = scaled(0.5)
    async with started([stdio("notes")], call_timeout_s=limit) as (source, _, runner, _):
        slow = await call(runner, "notes__hang")
        assert slow.outcome == "timeout"
        assert f"did not answer hang within {limit:g} s" in slow.output
        assert (await call(runner, "notes__add", a=3, b=4)).output == "7"
        counts = source.snapshot()["servers"]["notes"]
        assert (counts["timeouts"], counts["stops"]) == (1, 0)


async def test_servers_that_cannot_start_are_one_line_each_and_the_rest_runs() -> None:
    servers: list[McpServerConfig] = [
        stdio("notes"),
        StdioServer("missing", "no-such-mcp-server-command"),
        stdio("broken", "--crash-at-start"),
        HttpServer("offline", "http://127.0.0.1:9/mcp"),
    ]
    async with started(servers) as (source, registry, runner, problems):
        assert len(problems) == 3
        for line in problems:
            assert "\n" not in line and line.endswith("running without its tools")
        by_server = dict(zip(["missing", "broken", "offline"], problems, strict=True))
        assert by_server["missing"].startswith("MCP server missing did not start: command")
        assert "not found; install it or fix the command" in by_server["missing"]
        assert "fatal: the notes directory does not exist" in by_server["broken"]
        assert "cannot connect to http://127.0.0.1:9" in by_server["offline"]
        assert {name.split("__")[0] for name in registry.names()} == {"notes"}
        assert (await call(runner, "notes__add", a=1, b=2)).output == "3"
        assert set(source.problems()) == {"missing", "broken", "offline"}


async def test_a_server_that_never_answers_is_given_up_after_the_connect_timeout() -> None:
    silent = StdioServer("silent", sys.executable, ("-c", "import sys; sys.stdin.read()"))
    async with started([silent], connect_timeout_s=0.3) as (source, registry, _, problems):
        assert problems == [
            "MCP server silent did not start: no answer within 0.3 s; check that the command "
            "starts an MCP server on stdio; running without its tools"
        ]
        assert registry.names() == []
        assert source.snapshot()["servers"]["silent"]["state"] == "failed"


# --- streamable HTTP ---------------------------------------------------------------------------


async def test_http_server_with_headers_and_an_unasked_tool_list_change() -> None:
    """A server on the handshake-era protocol sends the change notification unasked."""
    changes = Changes()
    async with (
        http_server("--legacy") as (url, _),
        started(
            [HttpServer("web", url, {"Authorization": "Bearer s3cret"})],
            on_tools_changed=changes,
        ) as (source, _, runner, problems),
    ):
        assert problems == []
        assert source.servers["web"].transport == "http"
        assert (await call(runner, "web__whoami")).output == "Bearer s3cret"
        assert (await call(runner, "web__add", a=20, b=22)).output == "42"
        await call(runner, "web__grow", name="louder")
        change = await changes.next()
        assert change.added == ("web__louder",)
        assert (await call(runner, "web__louder", text="ok")).output == "OK"
        assert "s3cret" not in repr(source.servers["web"].config)


async def test_http_server_dying_mid_call_then_unreachable() -> None:
    now = [0.0]
    changes = Changes()
    async with (
        http_server() as (url, process),
        started(
            [HttpServer("web", url)],
            on_tools_changed=changes,
            retry_after_s=30.0,
            clock=lambda: now[0],
        ) as (source, registry, runner, _),
    ):
        assert "web__add" in registry
        died = await call(runner, "web__die")
        assert died.outcome == "error" and "stopped during the call" in died.output
        await process.wait()
        gone = await call(runner, "web__add", a=1, b=1)  # tries to start it again: nobody there
        assert gone.outcome == "error" and "is not running: cannot connect" in gone.output
        change = await changes.next()
        assert "web__add" in change.removed and change.tools == ()
        assert registry.names() == []
        counts = source.snapshot()["servers"]["web"]
        assert (counts["connect_failures"], counts["state"]) == (1, "failed")

        # within retry_after_s the server is not tried again; after it, it is
        web = source.servers["web"]
        now[0] = 29.0
        with pytest.raises(ToolError, match="it is tried again in 1 s"):
            await web.call("add", {"a": 1, "b": 1})
        assert web.counters["connect_failures"] == 1
        now[0] = 31.0
        with pytest.raises(ToolError, match="is not running: cannot connect"):
            await web.call("add", {"a": 1, "b": 1})
        assert web.counters["connect_failures"] == 2


async def test_the_readme_mcp_server_works(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "MCPServer(" in b]
    (path := tmp_path / "notes_server.py").write_text(code)
    (line,) = [x for x in readme.splitlines() if "--mcp-server 'notes=python notes_server.py'" in x]
    spec = (
        line.split("'")[1].replace("python", sys.executable).replace("notes_server.py", str(path))
    )
    async with started([parse_server_spec(spec)]) as (_, registry, runner, problems):
        assert problems == []
        assert registry.names() == ["notes__add_note", "notes__read_notes"]
        assert (await call(runner, "notes__add_note", text="call mum")).output == "saved; 1 notes"
        assert (await call(runner, "notes__read_notes")).output == "call mum"
