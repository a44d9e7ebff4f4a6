"""Hosted MCP servers as the fake service simulates them (GA only). Pure logic; the session
and the response stream the events.

A session tool ``{"type": "mcp", "server_label", "server_url" | "connector_id", ...}`` is
checked on ``session.update`` (beta has function tools only and refuses it). After
``session.updated`` each new server is listed: ``conversation.item.added`` of an
``mcp_list_tools`` item (no tools yet), ``mcp_list_tools.in_progress``, then
``mcp_list_tools.completed`` and ``conversation.item.done`` with the tools, or
``mcp_list_tools.failed`` (a label in `FakeServerConfig.mcp_unreachable`, or a connector
without ``authorization``). A server is listed again only when its configuration changes.

The fake does not contact any server: every server offers `DEFAULT_MCP_TOOLS` (or the tools
`FakeServerConfig.mcp_tools` gives its label), filtered by ``allowed_tools``, and answers
calls with `run_tool`. A scripted `McpCall` reply runs one call:

- no approval needed: the ``mcp_call`` item (``response.output_item.added``,
  ``conversation.item.added``, ``response.mcp_call_arguments.delta``/``.done``,
  ``response.mcp_call.in_progress``, ``.completed`` or ``.failed``,
  ``response.output_item.done``, ``conversation.item.done``), then, in the same response, a
  message saying the result;
- approval needed (``require_approval`` "always", the default, or a filter naming the tool):
  the response holds only an ``mcp_approval_request`` item and ends; the client answers with
  ``conversation.item.create`` of an ``mcp_approval_response`` item, and the service starts a
  response by itself: approved, the call (its ``approval_request_id`` set) and the result;
  refused, a message saying it could not use the tool. That response starts as soon as no
  other default-conversation response runs.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from realtime_voicebot.fake.errors import RequestError
from realtime_voicebot.fake.scenario import McpCall
from realtime_voicebot.transport.events import ErrorCode

JSON = dict[str, Any]

CONNECTOR_IDS = frozenset(
    {
        "connector_dropbox",
        "connector_gmail",
        "connector_googlecalendar",
        "connector_googledrive",
        "connector_microsoftteams",
        "connector_outlookcalendar",
        "connector_outlookemail",
        "connector_sharepoint",
    }
)
SECRET_KEYS = ("authorization", "headers")
"""Kept by the fake but never echoed in ``session.updated`` (a client must not log them)."""

DEFAULT_MCP_TOOLS: tuple[JSON, ...] = (
    {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "send_message",
        "description": "Send a short text message to a contact.",
        "input_schema": {
            "type": "object",
            "properties": {"to": {"type": "string"}, "text": {"type": "string"}},
            "required": ["to", "text"],
        },
        "annotations": {"readOnlyHint": False},
    },
)


def _invalid(param: str, message: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_VALUE, message, param)


def _check_filter(value: Any, param: str) -> None:
    if not isinstance(value, dict) or set(value) - {"tool_names", "read_only"}:
        raise _invalid(param, f"'{param}' must be an object with tool_names and/or read_only.")
    names = value.get("tool_names")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise _invalid(f"{param}.tool_names", "tool_names must be a list of strings.")
    if value.get("read_only") is not None and not isinstance(value["read_only"], bool):
        raise _invalid(f"{param}.read_only", "read_only must be a boolean.")


def check_tool(tool: JSON, param: str) -> None:
    """Validate an ``mcp`` session tool; raises `RequestError` naming the parameter."""
    label = tool.get("server_label")
    if not isinstance(label, str) or not label:
        raise RequestError(
            ErrorCode.MISSING_PARAMETER,
            f"Missing required parameter: '{param}.server_label'.",
            f"{param}.server_label",
        )
    targets = [key for key in ("server_url", "connector_id", "tunnel_id") if tool.get(key)]
    if len(targets) != 1:
        raise _invalid(
            param, "Exactly one of server_url, connector_id or tunnel_id must be provided."
        )
    url = tool.get("server_url")
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("https://", "http://"))
    ):
        raise _invalid(f"{param}.server_url", "server_url must be an http(s) URL.")
    connector = tool.get("connector_id")
    if connector is not None and connector not in CONNECTOR_IDS:
        raise _invalid(f"{param}.connector_id", f"Invalid value: '{connector}'.")
    for key in ("authorization", "server_description"):
        if tool.get(key) is not None and not isinstance(tool[key], str):
            raise _invalid(f"{param}.{key}", f"{key} must be a string.")
    headers = tool.get("headers")
    if headers is not None and (
        not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())
    ):
        raise _invalid(f"{param}.headers", "headers must be an object of strings.")
    allowed = tool.get("allowed_tools")
    if isinstance(allowed, list):
        if not all(isinstance(name, str) for name in allowed):
            raise _invalid(f"{param}.allowed_tools", "allowed_tools must list tool names.")
    elif allowed is not None:
        _check_filter(allowed, f"{param}.allowed_tools")
    approval = tool.get("require_approval")
    if isinstance(approval, dict):
        if not approval or set(approval) - {"always", "never"}:
            raise _invalid(
                f"{param}.require_approval", "require_approval takes 'always' and/or 'never'."
            )
        for key, value in approval.items():
            _check_filter(value, f"{param}.require_approval.{key}")
    elif approval not in (None, "always", "never"):
        raise _invalid(
            f"{param}.require_approval",
            f"Invalid value: '{approval}'. Supported values are: 'always' and 'never'.",
        )


def echoed(tool: JSON) -> JSON:
    """The tool as ``session.updated`` shows it: without its secrets."""
    return {key: value for key, value in tool.items() if key not in SECRET_KEYS}


def _matches(flt: JSON | None, tool: JSON) -> bool:
    """Whether a ``{tool_names, read_only}`` filter selects a tool (every given key must)."""
    if not flt:
        return False
    names = flt.get("tool_names")
    if names is not None and tool.get("name") not in names:
        return False
    read_only = flt.get("read_only")
    hint = (tool.get("annotations") or {}).get("readOnlyHint")
    return read_only is None or bool(hint) == read_only


@dataclass(frozen=True)
class McpServer:
    """One ``mcp`` session tool as configured."""

    config: JSON

    @property
    def label(self) -> str:
        return str(self.config["server_label"])

    @property
    def key(self) -> str:
        """Identity for re-listing: the whole configuration."""
        return json.dumps(self.config, sort_keys=True)

    def list_error(self, unreachable: frozenset[str]) -> str | None:
        """Why listing fails, or None."""
        if self.label in unreachable:
            return f"Could not connect to MCP server '{self.label}'."
        if self.config.get("connector_id") and not self.config.get("authorization"):
            return f"Connector '{self.config['connector_id']}' needs an authorization token."
        return None

    def tools(self, catalogue: dict[str, list[JSON]]) -> list[JSON]:
        """The tools the server offers, after ``allowed_tools``."""
        offered = catalogue.get(self.label, list(DEFAULT_MCP_TOOLS))
        allowed = self.config.get("allowed_tools")
        if isinstance(allowed, list):
            offered = [t for t in offered if t.get("name") in allowed]
        elif isinstance(allowed, dict):
            offered = [t for t in offered if _matches(allowed, t)]
        return copy.deepcopy(offered)

    def needs_approval(self, tool: JSON) -> bool:
        """``require_approval``: "always" (the default), "never", or filters; a tool that
        no filter names needs approval."""
        approval = self.config.get("require_approval")
        if approval is None or approval == "always":
            return True
        if approval == "never":
            return False
        return not _matches(approval.get("never"), tool)


def servers(tools: Any) -> list[McpServer]:
    """The MCP servers among a list of tools, in order."""
    if not isinstance(tools, list):
        return []
    return [McpServer(t) for t in tools if isinstance(t, dict) and t.get("type") == "mcp"]


def run_tool(name: str, arguments: JSON) -> str:
    """What the fake's MCP tools answer (deterministic)."""
    if name == "get_weather":
        return f"Sunny and 21 degrees in {arguments.get('city', 'that city')}."
    if name == "send_message":
        return f"Message sent to {arguments.get('to', 'them')}."
    return json.dumps({"tool": name, "arguments": arguments}, sort_keys=True)


@dataclass(frozen=True)
class PendingApproval:
    """An approval request the service waits on."""

    call: McpCall
    server_label: str


@dataclass(frozen=True)
class McpFollowUp:
    """The reply of the response the service starts after an approval response."""

    call: McpCall
    server_label: str
    approval_request_id: str
    approved: bool


def result_speech(call: McpCall, output: str | None, error: str | None) -> str:
    """What the model says after a call."""
    if call.say is not None:
        return call.say
    if error is not None:
        return f"The {call.name} tool failed: {error}"
    return f"The {call.name} tool says: {output}"


def refusal_speech(call: McpCall) -> str:
    return f"I could not use {call.name}: you did not approve it."


def unavailable_speech(call: McpCall) -> str:
    return f"I could not use {call.name}: no such tool is available."
