"""Tool calls as the console shows them: what the views get, and the lines they print.

`ToolDisplay` turns the core's tool actions (`ToolCallStarted`/`ToolCallFinished` of the
bot's own calls, `HostedCallStarted`/`HostedCallFinished` of the service's MCP calls, MCP
listings and approval requests) into view calls with everything ready to show: the tool's
name and its server (an MCP tool's exposed name is ``server__tool``), its arguments redacted
(`redact.redact`) and cut to a line, the duration (the service's calls are timed here, the
core has no clock), the size of the result, and what went wrong. The line helpers are shared
by the plain and the live view; the JSON view emits the fields.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from realtime_voicebot.core import actions as a
from realtime_voicebot.redact import redact

if TYPE_CHECKING:
    from realtime_voicebot.ui import ConversationView

ARGUMENT_CHARS = 120
ERROR_CHARS = 200
HOSTED_KEPT = 64
"""Hosted calls whose start time is remembered (a call that never finishes is forgotten)."""


def one_line(text: str, limit: int) -> str:
    """Redacted, on one line, at most ``limit`` characters (an ellipsis when cut)."""
    flat = " ".join(redact(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class ToolCallShown:
    """A call as shown: ``name`` is the tool's own name, ``server`` its MCP server (None for
    the bot's own tools), ``hosted`` when the service calls it."""

    call_id: str
    name: str
    server: str | None
    arguments: str
    """Redacted and cut to one line."""
    hosted: bool = False

    @property
    def title(self) -> str:
        if self.server is None:
            return self.name
        return f"{self.server}.{self.name}" + (" (hosted)" if self.hosted else "")


@dataclass(frozen=True, slots=True)
class ToolResultShown:
    outcome: str
    """ok, error or timeout."""
    duration_s: float | None
    output_chars: int
    error: str | None = None
    """Redacted and cut to one line."""


@dataclass(frozen=True, slots=True)
class ApprovalShown:
    """A hosted MCP call waiting for the user's yes or no."""

    request_id: str
    server: str
    name: str
    arguments: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class ToolListing:
    """The tools an MCP server offers now (``problem``: why it offers none)."""

    server: str
    tools: tuple[str, ...]
    hosted: bool = False
    problem: str | None = None


# --- lines for the plain and the live view -----------------------------------------------


def started_line(call: ToolCallShown) -> str:
    return f"tool {call.title} {call.arguments or '{}'} …"


def finished_line(call: ToolCallShown, result: ToolResultShown) -> str:
    took = "" if result.duration_s is None else f" in {result.duration_s:.2f} s"
    if result.outcome == "ok":
        return f"tool {call.title}: ok, {result.output_chars} chars{took}"
    what = "timed out" if result.outcome == "timeout" else "failed"
    reason = f": {result.error}" if result.error else ""
    return f"tool {call.title}: {what}{took}{reason}"


def approval_line(request: ApprovalShown) -> str:
    return (
        f"approve {request.server}.{request.name} {request.arguments or '{}'}? "
        f"type y or n (no answer in {request.timeout_s:g} s is no)"
    )


def answered_line(request: ApprovalShown, approved: bool, how: str) -> str:
    verdict = "approved" if approved else "refused"
    why = {"timeout": " (no answer in time)", "session ended": " (the session ended)"}
    return f"{verdict} {request.server}.{request.name}{why.get(how, '')}"


def listing_line(listing: ToolListing) -> str:
    kind = "hosted MCP server" if listing.hosted else "MCP server"
    if listing.problem is not None:
        return f"{kind} {listing.server}: no tools ({listing.problem})"
    names = ", ".join(listing.tools[:12]) + (", …" if len(listing.tools) > 12 else "")
    count = len(listing.tools)
    return f"{kind} {listing.server}: {count} tool{'s' * (count != 1)}" + (
        f" ({names})" if names else ""
    )


def tool_summary_lines(data: dict[str, Any]) -> list[str]:
    """The session summary's tool lines: calls per tool, errors, timeouts; hosted MCP."""
    parts = data.get("parts", {})
    lines = []
    tools = parts.get("tools", {})
    if tools.get("calls"):
        per_tool = []
        for name, counts in tools.get("by_tool", {}).items():
            extra = [f"{counts[k]} {k}" for k in ("errors", "timeouts") if counts.get(k)]
            suffix = f" ({', '.join(extra)})" if extra else ""
            per_tool.append(f"{name} {counts.get('calls', 0)}{suffix}")
        lines.append(
            f"tools: {tools['calls']} calls, {tools.get('errors', 0)} errors, "
            f"{tools.get('timeouts', 0)} timeouts; " + ", ".join(per_tool)
        )
    hosted = parts.get("core", {}).get("hosted_mcp", {})
    if hosted.get("calls") or hosted.get("approvals_requested"):
        lines.append(
            f"hosted MCP: {hosted.get('calls', 0)} calls, {hosted.get('call_errors', 0)} errors; "
            f"approvals {hosted.get('approved', 0)} yes, {hosted.get('refused', 0)} no, "
            f"{hosted.get('timed_out', 0)} unanswered"
        )
    return lines


# --- from actions to the view ------------------------------------------------------------


class ToolDisplay:
    """Shows the core's tool actions on a view; see the module docstring."""

    def __init__(
        self,
        view: ConversationView,
        *,
        mcp_servers: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.view = view
        self.mcp_servers = frozenset(mcp_servers)
        """Names of the client-side MCP servers: ``server__tool`` names are split by them."""
        self.clock = clock
        self._calls: dict[str, ToolCallShown] = {}
        self._hosted_started: dict[str, float] = {}
        self._approvals: dict[str, ApprovalShown] = {}

    def split(self, name: str | None) -> tuple[str | None, str]:
        """``(server, tool)`` of an exposed tool name."""
        shown = name or "?"
        server, sep, tool = shown.partition("__")
        if sep and server in self.mcp_servers:
            return server, tool
        return None, shown

    def show(self, action: a.Action) -> bool:
        """Show ``action`` if it is about tools; False when it is not."""
        view = self.view
        match action:
            case a.ToolCallStarted(call_id, name, arguments):
                server, tool = self.split(name)
                call = ToolCallShown(call_id, tool, server, one_line(arguments, ARGUMENT_CHARS))
                self._remember(self._calls, call_id, call)
                view.tool_started(call)
            case a.ToolCallFinished(call_id, name, outcome, chars, duration_s, error):
                seen = self._calls.pop(call_id, None)
                call = seen if seen is not None else self._unseen(call_id, name)
                shown_error = one_line(error, ERROR_CHARS) if error else None
                view.tool_finished(call, ToolResultShown(outcome, duration_s, chars, shown_error))
            case a.HostedCallStarted(item_id, label, name, arguments):
                call = ToolCallShown(
                    item_id, name, label, one_line(arguments, ARGUMENT_CHARS), hosted=True
                )
                self._remember(self._calls, item_id, call)
                self._remember(self._hosted_started, item_id, self.clock())
                view.tool_started(call)
            case a.HostedCallFinished(item_id, label, name, ok, chars, error):
                seen = self._calls.pop(item_id, None)
                call = seen or ToolCallShown(item_id, name, label, "", hosted=True)
                started = self._hosted_started.pop(item_id, None)
                took = None if started is None else self.clock() - started
                result = ToolResultShown(
                    "ok" if ok else "error",
                    took,
                    chars,
                    one_line(error, ERROR_CHARS) if error else None,
                )
                view.tool_finished(call, result)
            case a.HostedToolsListed(label, tools, ok):
                problem = None if ok else "the service could not list them"
                view.tools_listed(ToolListing(label, tools, hosted=True, problem=problem))
            case a.ApprovalRequested(request_id, label, name, arguments, timeout_s):
                request = ApprovalShown(
                    request_id, label, name, one_line(arguments, ARGUMENT_CHARS), timeout_s
                )
                self._remember(self._approvals, request_id, request)
                view.approval_requested(request)
            case a.ApprovalAnswered(request_id, label, name, approved, how):
                asked = self._approvals.pop(request_id, None)
                request = asked or ApprovalShown(request_id, label, name, "", 0.0)
                view.approval_answered(request, approved, how)
            case _:
                return False
        return True

    def _unseen(self, call_id: str, name: str | None) -> ToolCallShown:
        server, tool = self.split(name)
        return ToolCallShown(call_id, tool, server, "")

    @staticmethod
    def _remember(entries: dict[str, Any], key: str, value: Any) -> None:
        entries[key] = value
        while len(entries) > HOSTED_KEPT:
            del entries[next(iter(entries))]
