"""MCP servers on the service's side (GA): ``--hosted-mcp`` entries as session tools.

The service itself lists a hosted server's tools and calls them; the bot only configures the
server and answers approval requests (see `core.approvals`). One entry, split like a shell
line::

    LABEL=TARGET [allowed_tools=a,b] [require_approval=always|never|never:a,b]
                 [authorization=TOKEN] [description=TEXT]

``TARGET`` is the server's http(s) URL or a connector id (``connector_googlecalendar``...).
``require_approval`` defaults to ``always``; ``never:a,b`` lets the tools ``a`` and ``b`` run
without asking and asks for every other one. ``${VAR}`` in the URL or the authorization is
replaced from the environment (then ``.env``) at start-up, so a token never needs to be
typed in a flag: ``authorization=${CALENDAR_TOKEN}``. The authorization is a secret: it never
appears in a ``repr``, a log line, an error or ``voicebot config show``.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from realtime_voicebot.tools.mcp_config import MASK, McpConfigError, expand_text, mask_url

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_TOOL = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
Approval = Literal["always", "never"] | dict[str, Any]
OPTIONS = ("allowed_tools", "require_approval", "authorization", "description")


@dataclass(frozen=True, slots=True)
class HostedMcpServer:
    """One hosted MCP server as configured."""

    label: str
    server_url: str | None = field(default=None, repr=False)
    connector_id: str | None = None
    authorization: str | None = field(default=None, repr=False)
    allowed_tools: tuple[str, ...] | None = None
    require_approval: Approval = "always"
    description: str | None = None

    def tool(self) -> dict[str, Any]:
        """The ``session.tools`` entry (holds the authorization: never log it)."""
        from realtime_voicebot.transport.events import mcp_tool

        return mcp_tool(
            self.label,
            server_url=self.server_url,
            connector_id=self.connector_id,
            authorization=self.authorization,
            allowed_tools=list(self.allowed_tools) if self.allowed_tools is not None else None,
            require_approval=self.require_approval,
            server_description=self.description,
        )


def _names(label: str, key: str, value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    for name in names:
        if not _TOOL.match(name):
            raise McpConfigError(f"hosted MCP server {label}: {key}: {name[:40]!r} is not a name")
    return names


def _approval(label: str, value: str) -> Approval:
    text = value.strip().lower()
    if text == "always":
        return "always"
    if text == "never":
        return "never"
    kind, sep, names = value.partition(":")
    if sep and kind.strip().lower() == "never":
        return {"never": {"tool_names": list(_names(label, "require_approval", names))}}
    raise McpConfigError(
        f"hosted MCP server {label}: require_approval is always, never, or never:TOOL,TOOL "
        "(those run without asking)"
    )


def parse_hosted_spec(text: str) -> HostedMcpServer:
    """``LABEL=TARGET [key=value ...]`` -> a server (``${VAR}`` not expanded yet)."""
    label, sep, rest = text.strip().partition("=")
    label = label.strip()
    if not sep or not _LABEL.match(label):
        raise McpConfigError(
            "a hosted MCP server is LABEL=https://URL or LABEL=connector_ID with a label of "
            "letters, digits, - or _, e.g. 'calendar=https://mcp.example.com/mcp'"
        )
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise McpConfigError(f"hosted MCP server {label}: cannot split the entry: {exc}") from None
    if not words:
        raise McpConfigError(f"hosted MCP server {label}: give a URL or a connector id")
    target, options = words[0], words[1:]
    url = connector = None
    if re.match(r"^https?://", target, re.IGNORECASE):
        url = target
    elif re.match(r"^connector_[a-z0-9_]+$", target):
        connector = target
    else:
        raise McpConfigError(  # the target is not echoed: it may be a pasted token
            f"hosted MCP server {label}: after {label}= give an http(s) URL or a connector id "
            "(connector_...)"
        )
    values: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in OPTIONS:
            # a word without "=" is never echoed: it may be a pasted token
            what = f"unknown option {key[:30]!r}" if sep else "a word that is not key=value"
            raise McpConfigError(
                f"hosted MCP server {label}: {what} after the target; options are "
                + ", ".join(f"{name}=..." for name in OPTIONS)
            )
        values[key] = value
    allowed = values.get("allowed_tools")
    return HostedMcpServer(
        label,
        server_url=url,
        connector_id=connector,
        authorization=values.get("authorization") or None,
        allowed_tools=_names(label, "allowed_tools", allowed) if allowed is not None else None,
        require_approval=_approval(label, values.get("require_approval", "always")),
        description=values.get("description") or None,
    )


def check_unique_labels(servers: Iterable[HostedMcpServer]) -> list[HostedMcpServer]:
    seen: set[str] = set()
    result = []
    for server in servers:
        if server.label in seen:
            raise McpConfigError(f"two hosted MCP servers are labelled {server.label}; rename one")
        seen.add(server.label)
        result.append(server)
    return result


def resolve_hosted(
    specs: Iterable[str], environ: Mapping[str, str] | None = None
) -> list[HostedMcpServer]:
    """Every hosted server, ``${VAR}`` expanded (``environ`` defaults to ``.env`` overlaid by
    the process environment). Reads ``.env``: call it off the event loop."""
    if environ is None:
        from dotenv import dotenv_values

        from_file = dotenv_values(".env") if os.path.exists(".env") else {}
        environ = {k: v for k, v in from_file.items() if v is not None} | dict(os.environ)
    servers = check_unique_labels(parse_hosted_spec(spec) for spec in specs)
    resolved = []
    for server in servers:
        name = f"hosted {server.label}"
        url = expand_text(name, server.server_url, environ) if server.server_url else None
        token = expand_text(name, server.authorization, environ) if server.authorization else None
        resolved.append(
            HostedMcpServer(
                server.label,
                server_url=url,
                connector_id=server.connector_id,
                authorization=token,
                allowed_tools=server.allowed_tools,
                require_approval=server.require_approval,
                description=server.description,
            )
        )
    return resolved


def mask_hosted_spec(text: str) -> str:
    """A ``--hosted-mcp`` entry as ``config show`` prints it: the authorization and the
    URL's password and query values masked."""
    try:
        server = parse_hosted_spec(text)
    except McpConfigError:
        return MASK
    target = mask_url(server.server_url) if server.server_url else str(server.connector_id)
    shown = [f"{server.label}={target}"]
    if server.allowed_tools is not None:
        shown.append(f"allowed_tools={','.join(server.allowed_tools)}")
    approval = server.require_approval
    if isinstance(approval, dict):
        shown.append("require_approval=never:" + ",".join(approval["never"]["tool_names"]))
    else:
        shown.append(f"require_approval={approval}")
    if server.authorization:
        shown.append(f"authorization={MASK}")
    return " ".join(shlex.quote(word) for word in shown)
