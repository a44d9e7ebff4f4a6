"""The tools that ship with the bot, enabled by name in ``Settings.tools``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING

import httpx
import structlog

from realtime_voicebot.tools.builtin.current_time import current_time_tool
from realtime_voicebot.tools.builtin.http_get import Resolver, http_get_tool
from realtime_voicebot.tools.registry import Tool, ToolRegistry

if TYPE_CHECKING:
    from realtime_voicebot.config import Settings

log = structlog.get_logger(component="tools")


def build_registry(
    settings: Settings,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
    clock: Callable[[], datetime] | None = None,
    entry_points: Iterable[EntryPoint] | None = None,
) -> ToolRegistry:
    """The session's tools: the built-ins enabled in ``settings.tools`` (none by default),
    the ``@tool`` functions of every ``settings.tools_modules``, then the tools installed
    packages declare (``settings.tool_entry_points``; ``entry_points`` replaces the installed
    ones in tests). MCP servers are added with ``registry.add_source(McpToolSource(...))``.

    Imports user code: call it before the event loop runs or in a thread. Raises
    `ToolLoadError` (one line naming the file) for a tools module that cannot be used or a
    name already taken; an entry point that cannot be used is skipped with a warning.
    """
    from realtime_voicebot.tools.user import (
        ToolLoadError,
        load_tools_module,
        tools_from_entry_points,
    )

    registry = ToolRegistry()
    for name in dict.fromkeys(settings.tools):
        if name == "current_time":
            registry.add(current_time_tool(clock))
        elif name == "http_get":
            if not settings.http_allowlist:
                log.warning("http_get_without_allowlist", hint="set http_allowlist")
            registry.add(
                http_get_tool(
                    settings.http_allowlist,
                    max_bytes=settings.http_max_bytes,
                    timeout_s=settings.tool_timeout_s,
                    transport=http_transport,
                    resolver=resolver,
                )
            )
    limit = settings.tool_output_max_chars
    for spec in settings.tools_modules:
        for tool in load_tools_module(spec, max_output_chars=limit):
            if tool.name in registry:
                raise ToolLoadError(
                    f"tools module {spec}: a tool named {tool.name} already exists; "
                    "rename the function or use @tool(name=...)"
                )
            registry.add(tool)
    if settings.tool_entry_points:
        found = tools_from_entry_points(entry_points, max_output_chars=limit)
        for problem in found.problems:
            log.warning("tool_entry_point_skipped", reason=problem)
        for tool in found.tools:
            _add_installed(registry, tool)
    return registry


def _add_installed(registry: ToolRegistry, tool: Tool) -> None:
    if tool.name in registry:
        log.warning("tool_entry_point_skipped", reason=f"a tool named {tool.name} already exists")
    else:
        registry.add(tool)
