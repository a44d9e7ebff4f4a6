"""A real MCP server for the tests, written with the ``mcp`` SDK's own ``MCPServer``.

``python tests/mcp_server.py`` serves on stdio; ``--http`` serves streamable HTTP on a free
loopback port and prints the port on its first stdout line; ``--legacy`` answers the
``server/discover`` probe with "method not found", as servers built on older SDKs do, so the
client falls back to the ``initialize`` handshake and gets tool-list changes unasked;
``--crash-at-start`` writes a line to stderr and exits 1 before speaking MCP.
"""

from __future__ import annotations

import sys

if "--crash-at-start" in sys.argv:  # before the SDK import: fast
    print("fatal: the notes directory does not exist", file=sys.stderr, flush=True)
    sys.exit(1)

import asyncio
import base64
import os
import socket
from typing import Any

from mcp import MCPError
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Audio, Image
from mcp_types import (
    METHOD_NOT_FOUND,
    EmbeddedResource,
    RequestParams,
    ResourceLink,
    TextResourceContents,
)

server = MCPServer("voicebot-test")
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@server.tool()
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


@server.tool(name="notes.search")
def notes_search(query: str) -> str:
    """Search the notes (a name with a dot, as some servers use)."""
    return f"1 note matches {query!r}"


@server.tool(structured_output=False)
def picture() -> list[Any]:
    """Return a picture, a sound, an embedded text resource and a link."""
    return [
        "Here is the chart.",
        Image(data=PNG, format="png"),
        Audio(data=b"\0" * 4000, format="wav"),
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(
                uri="file:///notes/today.md", mime_type="text/markdown", text="# Today"
            ),
        ),
        ResourceLink(
            type="resource_link",
            name="report",
            uri="file:///reports/q3.pdf",
            mime_type="application/pdf",
            description="The Q3 report",
        ),
    ]


@server.tool()
def long_text(size: int) -> str:
    """Return ``size`` characters."""
    return "x" * size


@server.tool()
def fail() -> str:
    """Always fails."""
    raise ToolError("the calendar is locked")


@server.tool()
async def hang() -> str:
    """Never answers."""
    await asyncio.Event().wait()
    return "never"


@server.tool()
def die() -> str:
    """Exit the server process in the middle of the call."""
    os._exit(3)


@server.tool()
async def grow(name: str, ctx: Context) -> str:
    """Offer one more tool and tell the client its tool list changed."""

    def extra(text: str) -> str:
        return text.upper()

    server.add_tool(extra, name=name, description=f"Added at run time: {name}")
    await ctx.notify_tools_changed()  # 2026-07-28 clients: subscriptions/listen
    await ctx.request_context.session.send_tool_list_changed()  # earlier clients
    return f"added {name}"


@server.tool()
async def whoami(ctx: Context) -> str:
    """The Authorization header this request came with (HTTP only)."""
    request = ctx.request_context.request
    headers = getattr(request, "headers", {})
    return str(headers.get("authorization"))


async def legacy_discover(ctx: Any, params: Any) -> Any:
    raise MCPError(METHOD_NOT_FOUND, "Method not found")


def serve_http() -> None:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    if "--legacy" in sys.argv:
        server._lowlevel_server.add_request_handler(
            "server/discover", RequestParams, legacy_discover
        )
    if "--http" in sys.argv:
        serve_http()
    else:
        server.run()
