"""Function tools: schemas from type hints, the registry, the runner, the built-ins.

The bookkeeping of calls during a conversation (which response asked, outputs held until it
is done) is the session core's; this package only knows tools and how to run one. Its names
are imported when first used, so the core can read `tools.results` alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime_voicebot.tools.registry import (
        Tool,
        ToolError,
        ToolFunction,
        ToolRegistry,
        ToolSource,
        ToolTimeout,
    )
    from realtime_voicebot.tools.results import ToolResult
    from realtime_voicebot.tools.runner import ToolRunner, ToolStats

_LAZY = {
    "Tool": "registry",
    "ToolError": "registry",
    "ToolFunction": "registry",
    "ToolRegistry": "registry",
    "ToolSource": "registry",
    "ToolTimeout": "registry",
    "ToolResult": "results",
    "ToolRunner": "runner",
    "ToolStats": "runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "Tool",
    "ToolError",
    "ToolFunction",
    "ToolRegistry",
    "ToolResult",
    "ToolRunner",
    "ToolSource",
    "ToolStats",
    "ToolTimeout",
]
