"""What one tool call ended in: plain data the session core reads (no I/O, no asyncio)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

MAX_ERROR_CHARS = 300
Outcome = Literal["ok", "error", "timeout"]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The output of one call for the model, and how the call went."""

    output: str
    outcome: Outcome
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def error_output(message: str) -> str:
    """The output the model gets for a failed call."""
    return json.dumps({"error": message[:MAX_ERROR_CHARS]}, ensure_ascii=False)
