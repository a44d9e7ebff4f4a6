"""The session's tools, for the app: what the model may call, and what the service calls.

`Toolbox` builds, from the settings, the registry (built-ins, ``--tools-module`` files,
installed entry points), the client-side MCP servers (`McpToolSource`, started at once; a
server that cannot start is one line and the bot runs without its tools), the runner, and
the hosted MCP servers (GA: session tools the service calls itself). `specs` is the tool list
of a ``session.update``, built fresh at every call: the client's handshake and a mid-session
update (the MCP tools changed) both read it.

Its lifecycle: `start` once, before the first session (user code is imported and files are
read in worker threads); `refresh` after every new session (servers that stopped are started
again; a server that comes back announces its tools through ``on_tools_changed``); `aclose`
at exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from realtime_voicebot.tool_display import ToolListing
from realtime_voicebot.tools import Tool, ToolRunner

if TYPE_CHECKING:
    from realtime_voicebot.config import Settings
    from realtime_voicebot.tools.hosted_mcp import HostedMcpServer
    from realtime_voicebot.tools.mcp import McpToolsChanged, McpToolSource
    from realtime_voicebot.tools.registry import ToolRegistry

log = structlog.get_logger(component="toolbox")

JSON = dict[str, Any]


class Toolbox:
    """See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        extra_tools: list[Tool] | None = None,
        *,
        on_tools_changed: Callable[[McpToolsChanged], None] | None = None,
    ) -> None:
        self.settings = settings
        self.extra_tools = list(extra_tools or [])
        self.on_tools_changed = on_tools_changed
        self.registry: ToolRegistry | None = None
        self.runner: ToolRunner | None = None
        self.mcp: McpToolSource | None = None
        self.hosted: list[HostedMcpServer] = []

    async def start(self) -> list[str]:
        """Build everything and start the MCP servers: one line per server that did not
        start. Raises `ToolLoadError` or `McpConfigError` (one line) for a tools module or
        an MCP entry to fix."""
        from realtime_voicebot.tools.builtin import build_registry
        from realtime_voicebot.tools.hosted_mcp import resolve_hosted

        settings = self.settings
        registry = await asyncio.to_thread(build_registry, settings)
        for tool in self.extra_tools:
            registry.add(tool)
        self.registry = registry
        self.runner = ToolRunner(registry, settings.tool_timeout_s)
        if settings.hosted_mcp:
            self.hosted = await asyncio.to_thread(resolve_hosted, settings.hosted_mcp)
        if not (settings.mcp_servers or settings.mcp_config):
            return []
        from realtime_voicebot.tools.mcp import McpToolSource

        self.mcp = await asyncio.to_thread(
            McpToolSource.from_settings, settings, self._tools_changed
        )
        registry.add_source(self.mcp)
        return await self.mcp.start()

    def _tools_changed(self, change: McpToolsChanged) -> None:
        if self.on_tools_changed is not None:
            self.on_tools_changed(change)

    def specs(self) -> list[JSON]:
        """Every tool of a ``session.update``: functions (the MCP servers' as they are now),
        then the hosted MCP servers."""
        functions = self.registry.specs() if self.registry is not None else []
        return functions + [server.tool() for server in self.hosted]

    def mcp_server_names(self) -> frozenset[str]:
        return frozenset(self.mcp.servers) if self.mcp is not None else frozenset()

    def listings(self) -> list[ToolListing]:
        """What each client-side MCP server offers now."""
        if self.mcp is None:
            return []
        problems = self.mcp.problems()
        return [
            ToolListing(
                name,
                tuple(tool.name.partition("__")[2] for tool in server.tools.values()),
                problem=problems.get(name),
            )
            for name, server in self.mcp.servers.items()
        ]

    async def refresh(self) -> list[str]:
        """After a new session: start again the MCP servers that are not running."""
        return await self.mcp.refresh() if self.mcp is not None else []

    async def aclose(self) -> None:
        if self.mcp is not None:
            await self.mcp.aclose()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``tools`` (calls per tool, errors, timeouts) and ``mcp`` (per server)."""
        parts: dict[str, dict[str, Any]] = {}
        if self.runner is not None:
            parts["tools"] = self.runner.stats.snapshot()
        if self.mcp is not None:
            parts["mcp"] = self.mcp.snapshot()
        return parts
