"""Runs one function call: finds the tool, checks its arguments, runs it under a timeout.

Whatever happens (an unknown tool, arguments that are not JSON or nested past Python's
recursion limit, a tool that raises, hangs or returns something that is not JSON) the call
ends in an output string for the model: the tool's result, or ``{"error": "..."}``.
`ToolRunner.run` never raises.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from realtime_voicebot.tools.registry import ToolError, ToolRegistry, ToolTimeout

log = structlog.get_logger(component="tools")

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


@dataclass
class ToolStats:
    """Calls run, by tool and by outcome."""

    calls: int = 0
    errors: int = 0
    """Calls answered with an error, timeouts included."""
    timeouts: int = 0
    by_tool: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, name: str, outcome: Outcome) -> None:
        self.calls += 1
        self.errors += outcome != "ok"
        self.timeouts += outcome == "timeout"
        per_tool = self.by_tool.setdefault(name, {"calls": 0, "errors": 0, "timeouts": 0})
        per_tool["calls"] += 1
        per_tool["errors"] += outcome != "ok"
        per_tool["timeouts"] += outcome == "timeout"

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "by_tool": {name: dict(counts) for name, counts in sorted(self.by_tool.items())},
        }


def error_output(message: str) -> str:
    """The output the model gets for a failed call."""
    return json.dumps({"error": message[:MAX_ERROR_CHARS]}, ensure_ascii=False)


class ToolRunner:
    """Runs calls against a `ToolRegistry`, each under ``timeout_s``."""

    def __init__(self, registry: ToolRegistry, timeout_s: float = 10.0) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.registry = registry
        self.timeout_s = timeout_s
        self.stats = ToolStats()

    async def run(self, name: str | None, arguments: str, call_id: str = "") -> ToolResult:
        """The result of one call. Never raises (cancellation aside)."""
        started = time.monotonic()
        try:
            output, outcome = await self._run(name, arguments, call_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # RecursionError from absurd nesting, a bug in a check
            log.warning("tool_call_failed", tool=name, call_id=call_id, error=type(exc).__name__)
            output, outcome = error_output(f"tool {name} failed: {type(exc).__name__}"), "error"
        self.stats.count(name or "?", outcome)
        return ToolResult(output, outcome, time.monotonic() - started)

    async def _run(self, name: str | None, arguments: str, call_id: str) -> tuple[str, Outcome]:
        tool = self.registry.get(name) if name else None
        if tool is None:
            known = ", ".join(self.registry.names()) or "none"
            log.warning("tool_unknown", tool=name, call_id=call_id)
            return error_output(f"unknown tool {name!r}; available tools: {known}"), "error"
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            log.warning("tool_arguments_not_json", tool=name, call_id=call_id)
            return error_output(f"arguments for tool {name} are not valid JSON"), "error"
        if not isinstance(args, dict):
            return error_output(f"arguments for tool {name} must be a JSON object"), "error"
        problems = tool.argument_problems(args)
        if problems:
            log.warning("tool_arguments_invalid", tool=name, call_id=call_id, problems=problems)
            message = f"invalid arguments for tool {name}: " + "; ".join(problems)
            return error_output(message), "error"
        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                result = await tool.function(**args)
        except TimeoutError:
            if not deadline.expired():
                log.warning("tool_failed", tool=name, call_id=call_id, error="TimeoutError")
                return error_output(f"tool {name} failed: TimeoutError"), "error"
            log.warning("tool_timeout", tool=name, call_id=call_id, timeout_s=self.timeout_s)
            return error_output(f"tool {name} timed out after {self.timeout_s:g} s"), "timeout"
        except ToolTimeout as exc:
            log.warning("tool_timeout", tool=name, call_id=call_id, reason=str(exc))
            return error_output(str(exc)), "timeout"
        except ToolError as exc:
            log.info("tool_refused", tool=name, call_id=call_id, reason=str(exc))
            return error_output(str(exc)), "error"
        except Exception as exc:
            log.warning("tool_failed", tool=name, call_id=call_id, exc_info=True)
            return error_output(f"tool {name} failed: {type(exc).__name__}: {exc}"), "error"
        if isinstance(result, str):
            return result, "ok"
        try:
            return json.dumps(result, ensure_ascii=False), "ok"
        except (TypeError, ValueError, RecursionError):
            return error_output(f"tool {name} returned a result that is not JSON"), "error"
