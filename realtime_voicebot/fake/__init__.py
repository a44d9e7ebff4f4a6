"""Fakes of the remote services, for tests and offline runs: a protocol-faithful Realtime
server (`FakeRealtimeServer`) and a Chat Completions endpoint (`chat.FakeChatServer`).

Imports are lazy so that ``realtime_voicebot.fake.chat`` does not pull in numpy and websockets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime_voicebot.fake.config import FakeServerConfig, Faults
    from realtime_voicebot.fake.scenario import McpCall, Scenario, ToolCall
    from realtime_voicebot.fake.server import FakeRealtimeServer
    from realtime_voicebot.fake.session import FakeSession

__all__ = [
    "FakeRealtimeServer",
    "FakeServerConfig",
    "FakeSession",
    "Faults",
    "McpCall",
    "Scenario",
    "ToolCall",
]

_HOMES = {
    "FakeRealtimeServer": "server",
    "FakeServerConfig": "config",
    "Faults": "config",
    "FakeSession": "session",
    "McpCall": "scenario",
    "Scenario": "scenario",
    "ToolCall": "scenario",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
