"""Function tools: schemas from type hints, the registry, the runner, the built-ins.

The bookkeeping of calls during a conversation (which response asked, outputs held until it
is done) is the session core's; this package only knows tools and how to run one.
"""

from realtime_voicebot.tools.registry import (
    Tool,
    ToolError,
    ToolFunction,
    ToolRegistry,
    ToolSource,
    ToolTimeout,
)
from realtime_voicebot.tools.runner import ToolResult, ToolRunner, ToolStats

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
