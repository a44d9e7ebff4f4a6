"""realtime_voicebot: long spoken conversations with the OpenAI Realtime API.

``from realtime_voicebot import tool`` marks a function of a tools module (``--tools-module``)
as a tool the model may call; it is imported on first use so that the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime_voicebot.tools.user import tool

__version__ = "0.1.0"
__all__ = ["__version__", "tool"]


def __getattr__(name: str) -> Any:
    if name == "tool":
        from realtime_voicebot.tools.user import tool

        return tool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
