"""The tools that ship with the bot, enabled by name in ``Settings.tools``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import httpx
import structlog

from realtime_voicebot.tools.builtin.current_time import current_time_tool
from realtime_voicebot.tools.builtin.http_get import Resolver, http_get_tool
from realtime_voicebot.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from realtime_voicebot.config import Settings

log = structlog.get_logger(component="tools")


def build_registry(
    settings: Settings,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
    clock: Callable[[], datetime] | None = None,
) -> ToolRegistry:
    """The built-in tools enabled in ``settings.tools`` (none by default)."""
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
    return registry
