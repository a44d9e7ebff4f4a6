"""MCP servers on the user's side as a source of function tools, with the official SDK.

`McpToolSource` connects every configured server (stdio or streamable HTTP) with
``mcp.Client``, lists its tools and offers each as a `Tool` named ``server__tool`` (within the
API's 64 characters of ``[A-Za-z0-9_-]``, so two servers cannot clash). A call goes to the
server under a per-call deadline; text comes back as is, anything else (images, audio,
embedded resources, resource links) is summarized into a line of text, and the whole output
is capped. ``isError`` results, protocol errors, a server that dies during the call or never
answers: each ends in a `ToolError`, which the runner turns into an error output.

Each server lives in one task that holds its connection (the SDK's task groups must be
entered and left by the same task): it starts the server, lists its tools, then waits to be
woken to list them again (the server's tool-list-changed notification) or to stop. A server
that stopped is started again by the next call of one of its tools, or by `refresh`; one that
could not start is retried at most once per ``retry_after_s``. A stdio server's stderr is kept
as a short tail for the one-line reason it did not start; it never reaches the terminal.

The SDK is imported when the first server starts: ``voicebot --help`` never pays for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Literal

import structlog

from realtime_voicebot import __version__
from realtime_voicebot.tools.mcp_config import HttpServer, McpServerConfig, StdioServer
from realtime_voicebot.tools.registry import Tool, ToolError, ToolTimeout
from realtime_voicebot.tools.schema import JSON

if TYPE_CHECKING:
    from mcp import Client
    from mcp.client._transport import Transport
    from mcp_types import CallToolResult
    from mcp_types import Tool as McpTool

    from realtime_voicebot.config import Settings

log = structlog.get_logger(component="mcp")

TOOL_NAME_MAX = 64
MAX_TOOLS_PER_SERVER = 128
MAX_LIST_PAGES = 16
MAX_DESCRIPTION_CHARS = 1024
MAX_SCHEMA_CHARS = 16384
STDERR_LINES = 20
STDERR_LINE_CHARS = 300
STOP_TIMEOUT_S = 10.0
"""Bound on stopping one server (the SDK gives a stdio server 2 s, then SIGTERM, SIGKILL)."""

_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")

State = Literal["idle", "connecting", "running", "down", "failed", "closed"]


@dataclass(frozen=True, slots=True)
class McpToolsChanged:
    """What the ``on_tools_changed`` callback gets: send a ``session.update`` with the
    registry's ``specs()`` (the registry consults the source at every lookup)."""

    server: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    tools: tuple[Tool, ...]
    """Every MCP tool offered now, all servers."""


ToolsChangedCallback = Callable[[McpToolsChanged], None]


def exposed_name(server: str, tool: str, taken: set[str]) -> str | None:
    """``server__tool`` within 64 characters of ``[A-Za-z0-9_-]``, not in ``taken``.

    Other characters become ``_``; a name that is too long or already taken (two tools whose
    names differ only in such characters) is shortened and ends in a hash of the original.
    None only on a hash collision.
    """
    base = _INVALID_NAME_CHARS.sub("_", tool) or "tool"
    room = TOOL_NAME_MAX - len(server) - 2
    name = f"{server}__{base}"
    if len(base) <= room and name not in taken:
        return name
    digest = hashlib.sha256(tool.encode("utf-8", "replace")).hexdigest()[:8]
    name = f"{server}__{base[: room - 9]}_{digest}"
    return None if name in taken else name


def _size(base64_data: str) -> str:
    data = base64_data.strip()
    n = len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))
    return f"{n / 1024:.0f} KB" if n >= 1024 else f"{n} bytes"


def summarize_result(result: CallToolResult, max_chars: int) -> str:
    """The output the model gets for an MCP tool result: its text, one bracketed line for
    every other kind of content, at most ``max_chars`` characters."""
    from mcp_types import (
        AudioContent,
        BlobResourceContents,
        EmbeddedResource,
        ImageContent,
        ResourceLink,
        TextContent,
    )

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, ImageContent):
            parts.append(f"[image: {block.mime_type}, {_size(block.data)}, not shown]")
        elif isinstance(block, AudioContent):
            parts.append(f"[audio: {block.mime_type}, {_size(block.data)}, not played]")
        elif isinstance(block, ResourceLink):
            about = f" ({block.mime_type})" if block.mime_type else ""
            note = f": {' '.join(block.description.split())}" if block.description else ""
            parts.append(f"[resource link {block.name}{about} {block.uri}{note}]")
        elif isinstance(block, EmbeddedResource):
            resource = block.resource
            kind = resource.mime_type or "unknown type"
            if isinstance(resource, BlobResourceContents):
                parts.append(f"[resource {resource.uri}: {kind}, {_size(resource.blob)}]")
            else:
                parts.append(f"[resource {resource.uri} ({kind})]\n{resource.text}")
        else:  # a content type newer than this code
            parts.append(f"[{getattr(block, 'type', 'unknown')} content, not shown]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    text = "\n".join(parts) if parts else "[the tool returned no content]"
    if len(text) > max_chars:
        cut = len(text) - max_chars
        text = f"{text[:max_chars]}\n[truncated: {cut} more characters]"
    return text


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _root_cause(exc: BaseException) -> BaseException:
    leaves = [e for e in _leaves(exc) if not isinstance(e, asyncio.CancelledError)]
    return leaves[0] if leaves else exc


class _StderrTail(asyncio.Protocol):
    """The last lines a stdio server wrote to stderr (bounded), and its end."""

    def __init__(self, server: str, on_eof: Callable[[], None]) -> None:
        self.server = server
        self.lines: deque[str] = deque(maxlen=STDERR_LINES)
        self._partial = b""
        self._on_eof = on_eof

    def data_received(self, data: bytes) -> None:
        *lines, partial = (self._partial + data).split(b"\n")
        self._partial = partial[-STDERR_LINE_CHARS * 4 :]
        for line in lines:
            self._keep(line)

    def _keep(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()[:STDERR_LINE_CHARS]
        if text:
            self.lines.append(text)
            log.debug("mcp_server_stderr", server=self.server, line=text)

    def eof_received(self) -> bool | None:
        self._keep(self._partial)
        self._partial = b""
        self._on_eof()
        return None

    def last(self) -> str | None:
        return self.lines[-1] if self.lines else None


class McpServerConnection:
    """One server: its connection task, its tools, its counters."""

    def __init__(self, config: McpServerConfig, source: McpToolSource) -> None:
        self.config = config
        self.name = config.name
        self.transport = "http" if isinstance(config, HttpServer) else "stdio"
        self._source = source
        self.state: State = "idle"
        self.tools: dict[str, Tool] = {}
        self.last_error: str | None = None
        self.counters = dict.fromkeys(
            (
                "connects",
                "connect_failures",
                "stops",
                "relists",
                "calls",
                "errors",
                "timeouts",
                "skipped_tools",
            ),
            0,
        )
        self._client: Client | None = None
        self._holder: asyncio.Task[None] | None = None
        self._attempt: asyncio.Task[str | None] | None = None
        self._wake = asyncio.Event()
        self._relist_wanted = False
        self._down = False
        self._stopping = False
        self._failed_at: float | None = None
        self._stderr: _StderrTail | None = None
        self._errlog: IO[str] | None = None
        self._generation = 0
        """Counts connections, so that a late sign from an old one changes nothing."""

    @property
    def up(self) -> bool:
        """Connected, and not known to have stopped."""
        return self.state == "running" and not self._down

    # --- connecting -----------------------------------------------------------------------

    async def connect(self) -> str | None:
        """Start the server and list its tools: None, or the one-line reason it did not start.

        Concurrent callers share one attempt; a caller cancelled while waiting (its own call
        timed out) does not cancel the attempt.
        """
        if self.up:
            return None
        if self._stopping:
            return "shut down"
        if self._attempt is None or self._attempt.done():
            self._attempt = asyncio.create_task(
                self._connect_once(), name=f"mcp-connect-{self.name}"
            )
        return await asyncio.shield(self._attempt)

    async def _connect_once(self) -> str | None:
        await self._stop_holder(graceful=True)  # a connection that stopped finishes closing
        self.state = "connecting"
        self._generation += 1
        self._down = False
        self._wake.clear()
        ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._holder = asyncio.create_task(self._hold(ready), name=f"mcp-{self.name}")
        timeout_s = self._source.connect_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                problem = await asyncio.shield(ready)
        except TimeoutError:
            problem = f"no answer within {timeout_s:g} s{self._stderr_note()}; " + (
                "check that the command starts an MCP server on stdio"
                if self.transport == "stdio"
                else "check the URL"
            )
        if problem is None:
            self.counters["connects"] += 1
            self.last_error = None
            self._failed_at = None
            return None
        await self._stop_holder(graceful=False)
        self._source.replace_tools(self, {})  # offered no more until it starts again
        self.counters["connect_failures"] += 1
        self.state = "failed"
        self._failed_at = self._source.clock()
        if problem != self.last_error:  # at start-up the app shows start()'s lines instead
            say = log.warning if self._source.started else log.info
            say("mcp_server_unavailable", server=self.name, reason=problem)
        self.last_error = problem
        return problem

    async def _open_transport(self, stack: contextlib.AsyncExitStack) -> Transport:
        config = self.config
        if isinstance(config, HttpServer):
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            if config.headers and not config.secure():
                log.warning(
                    "mcp_headers_over_plain_http",
                    server=self.name,
                    hint="the headers travel unencrypted: use https",
                )

            http = httpx2.AsyncClient(
                headers=dict(config.headers), timeout=httpx2.Timeout(30.0, read=300.0)
            )
            await stack.enter_async_context(http)
            return streamable_http_client(config.url, http_client=http)
        from mcp.client.stdio import StdioServerParameters, stdio_client

        read_fd, write_fd = os.pipe()
        errlog = self._errlog = os.fdopen(write_fd, "w")
        stack.callback(errlog.close)
        generation = self._generation
        tail = self._stderr = _StderrTail(self.name, lambda: self._stderr_closed(generation))
        pipe, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: tail, os.fdopen(read_fd, "rb", buffering=0)
        )
        stack.callback(pipe.close)
        params = StdioServerParameters(
            command=config.command,
            args=list(config.args),
            env=dict(config.env) or None,
            cwd=config.cwd,
        )
        return stdio_client(params, errlog=errlog)

    def _stderr_closed(self, generation: int) -> None:
        """Every holder of the stderr pipe is gone: the server process has exited."""
        if generation != self._generation:
            return
        if self.state in ("running", "connecting") and not self._stopping:
            self._mark_down("the server process exited")

    def _stderr_note(self) -> str:
        last = self._stderr.last() if self._stderr is not None else None
        return f' (its last words: "{last}")' if last else ""

    async def _hold(self, ready: asyncio.Future[str | None]) -> None:
        """The task that owns the connection, from start to stop."""
        from mcp import Client
        from mcp_types import Implementation

        try:
            async with contextlib.AsyncExitStack() as stack:
                transport = await self._open_transport(stack)
                client = Client(
                    transport,
                    cache=None,
                    message_handler=self._on_message,
                    client_info=Implementation(name="realtime_voicebot", version=__version__),
                )
                try:
                    await stack.enter_async_context(client)
                finally:
                    if self._errlog is not None:
                        self._errlog.close()  # the child has its copy: EOF once it exits
                await self._listen(client, stack)
                await self._list(client)
                self._client = client
                self.state = "running"
                ready.set_result(None)
                while not (self._stopping or self._down):
                    await self._wake.wait()
                    self._wake.clear()
                    if self._relist_wanted and not (self._stopping or self._down):
                        self._relist_wanted = False
                        await self._relist(client)
        except Exception as exc:
            if not ready.done():
                ready.set_result(self._describe(exc))
            elif not self._stopping:
                self._mark_down(f"the connection failed: {self._reason(exc)}")
        finally:
            self._client = None
            if not ready.done():
                ready.set_result("stopped while starting")
            if self.state == "running":
                self.state = "closed" if self._stopping else "down"
            if self.state == "down":
                self.counters["stops"] += 1
                log.warning("mcp_server_stopped", server=self.name, reason=self.last_error)

    async def _listen(self, client: Client, stack: contextlib.AsyncExitStack) -> None:
        """On a 2026-07-28 connection, open the ``subscriptions/listen`` stream that carries
        tool-list changes (older servers send them unasked). Without it, tools still work."""
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        tools = client.server_capabilities.tools
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS or not (
            tools and tools.list_changed
        ):
            return
        try:
            async with asyncio.timeout(self._source.connect_timeout_s):
                subscription = await stack.enter_async_context(
                    client.listen(tools_list_changed=True)
                )
        except Exception as exc:
            log.info("mcp_listen_unavailable", server=self.name, error=self._reason(exc))
            return

        async def drain() -> None:  # the events also reach _on_message, which acts on them
            try:
                async for _ in subscription:
                    pass
            except Exception as exc:  # SubscriptionLost: the connection broke under it
                self._mark_down(f"its notification stream broke: {self._reason(exc)}")

        task = asyncio.create_task(drain(), name=f"mcp-listen-{self.name}")

        async def stop_drain() -> None:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)

        stack.push_async_callback(stop_drain)

    async def _on_message(self, message: Any) -> None:
        """The SDK's message handler: notifications and transport errors of this server."""
        if isinstance(message, Exception):
            log.debug("mcp_transport_error", server=self.name, error=self._reason(message))
        elif getattr(message, "method", None) == "notifications/tools/list_changed":
            self._relist_wanted = True
            self._wake.set()

    # --- listing ----------------------------------------------------------------------------

    async def _list(self, client: Client) -> None:
        listed: list[McpTool] = []
        cursor: str | None = None
        async with asyncio.timeout(self._source.connect_timeout_s):
            for _ in range(MAX_LIST_PAGES):
                page = await client.list_tools(cursor=cursor)
                listed += page.tools
                cursor = page.next_cursor
                if cursor is None or len(listed) >= MAX_TOOLS_PER_SERVER:
                    break
        if len(listed) > MAX_TOOLS_PER_SERVER:
            log.warning("mcp_too_many_tools", server=self.name, kept=MAX_TOOLS_PER_SERVER)
        tools: dict[str, Tool] = {}
        for listed_tool in listed[:MAX_TOOLS_PER_SERVER]:
            tool = self._tool(listed_tool, set(tools))
            if tool is not None:
                tools[tool.name] = tool
        self._source.replace_tools(self, tools)

    async def _relist(self, client: Client) -> None:
        self.counters["relists"] += 1
        try:
            await self._list(client)
        except Exception as exc:
            log.warning("mcp_relist_failed", server=self.name, error=self._reason(exc))

    def _tool(self, listed: McpTool, taken: set[str]) -> Tool | None:
        name = exposed_name(self.name, listed.name, taken)
        schema = dict(listed.input_schema or {})
        schema.pop("$schema", None)
        schema.setdefault("type", "object")
        problem = None
        if name is None:
            problem = "its name clashes with another tool's"
        elif schema.get("type") != "object":
            problem = "its parameters are not an object schema"
        elif len(json.dumps(schema, default=str)) > MAX_SCHEMA_CHARS:
            problem = f"its parameter schema is larger than {MAX_SCHEMA_CHARS} characters"
        if problem is not None or name is None:
            self.counters["skipped_tools"] += 1
            log.warning("mcp_tool_skipped", server=self.name, tool=listed.name[:80], reason=problem)
            return None
        text = listed.description or listed.title or f"{listed.name} (MCP server {self.name})"
        description = " ".join(text.split())[:MAX_DESCRIPTION_CHARS]
        mcp_name = listed.name

        async def call(**arguments: Any) -> str:
            return await self.call(mcp_name, arguments)

        call.__name__ = name
        return Tool(name, description, schema, call)

    # --- calling ----------------------------------------------------------------------------

    async def _ready_client(self) -> Client:
        if self._client is not None and self.up:
            return self._client
        if self._stopping:
            raise ToolError(f"MCP server {self.name} is shut down")
        clock = self._source.clock
        retry_s = self._source.retry_after_s
        if self._failed_at is not None and clock() - self._failed_at < retry_s:
            wait_s = retry_s - (clock() - self._failed_at)
            raise ToolError(
                f"MCP server {self.name} is not running ({self.last_error}); "
                f"it is tried again in {wait_s:.0f} s"
            )
        problem = await self.connect()
        if problem is not None or self._client is None:
            raise ToolError(f"MCP server {self.name} is not running: {problem or 'stopped'}")
        return self._client

    async def call(self, tool: str, arguments: JSON) -> str:
        """The text the model gets for one call; raises ToolError/ToolTimeout otherwise."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT
        from pydantic import ValidationError

        self.counters["calls"] += 1
        try:
            client = await self._ready_client()
            timeout_s = self._source.call_timeout_s
            deadline = asyncio.timeout(timeout_s)
            try:
                async with deadline:
                    result = await client.call_tool(tool, arguments)
            except TimeoutError:
                if not deadline.expired():
                    raise
                self.counters["timeouts"] += 1
                raise ToolTimeout(
                    f"MCP server {self.name} did not answer {tool} within {timeout_s:g} s"
                ) from None
            except MCPError as exc:
                if exc.code == CONNECTION_CLOSED:
                    self._mark_down("it stopped during a call")
                    raise ToolError(
                        f"MCP server {self.name} stopped during the call; "
                        "it is started again at the next call"
                    ) from None
                if exc.code == REQUEST_TIMEOUT:
                    self.counters["timeouts"] += 1
                    raise ToolTimeout(f"MCP server {self.name} did not answer {tool}") from None
                raise ToolError(f"MCP server {self.name} refused the call: {exc}") from None
            except ValidationError:
                raise ToolError(
                    f"MCP server {self.name} returned a result that is not valid MCP"
                ) from None
            except Exception as exc:
                raise ToolError(f"MCP server {self.name} failed: {self._reason(exc)}") from None
            output = summarize_result(result, self._source.max_output_chars)
            if result.is_error:
                raise ToolError(output)
        except ToolError:
            self.counters["errors"] += 1
            raise
        return output

    # --- stopping ---------------------------------------------------------------------------

    def _mark_down(self, reason: str) -> None:
        if self._down or self._stopping:
            return
        self._down = True
        self.last_error = reason
        self._wake.set()

    async def _stop_holder(self, *, graceful: bool) -> None:
        """End the connection task: woken to leave (``graceful``) or cancelled (still
        starting); cancelled anyway after STOP_TIMEOUT_S."""
        holder = self._holder
        if holder is None or holder.done():
            return
        self._down = True
        self._wake.set()
        if not graceful:
            holder.cancel()
        done, _ = await asyncio.wait({holder}, timeout=STOP_TIMEOUT_S)
        if not done:
            holder.cancel()
            await asyncio.wait({holder}, timeout=STOP_TIMEOUT_S)

    async def aclose(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._attempt is not None and not self._attempt.done():
            self._attempt.cancel()
            await asyncio.wait({self._attempt}, timeout=STOP_TIMEOUT_S)
        await self._stop_holder(graceful=True)
        self.state = "closed"
        self._source.replace_tools(self, {})

    # --- reporting --------------------------------------------------------------------------

    def _reason(self, exc: BaseException) -> str:
        cause = _root_cause(exc)
        text = " ".join(str(cause).split())[:200]
        return f"{type(cause).__name__}: {text}" if text else type(cause).__name__

    def _describe(self, exc: BaseException) -> str:
        """Why the server did not start, and what to do, in one line."""
        cause = _root_cause(exc)
        config = self.config
        if isinstance(config, StdioServer):
            if isinstance(cause, FileNotFoundError):
                return f"command {config.command!r} not found; install it or fix the command"
            if isinstance(cause, PermissionError):
                return f"command {config.command!r} is not executable; check the command"
            if isinstance(cause, OSError):
                return f"cannot run {config.command!r}: {cause.strerror or cause}"
            from mcp_types import CONNECTION_CLOSED

            if getattr(cause, "code", None) == CONNECTION_CLOSED:
                return (
                    f"it exited before answering{self._stderr_note()}; "
                    "run the command by hand to see why"
                )
            return f"{self._reason(cause)}{self._stderr_note()}"
        # the SDK turns an HTTP error status into an MCP error and keeps only these words
        message = str(getattr(getattr(cause, "error", None), "message", ""))
        if message == "Not Found":
            return "no MCP endpoint at that URL (HTTP 404); check the path (often /mcp)"
        if message == "Server returned an error response":
            return "it answered with an HTTP error; check the URL and the headers (a token?)"
        name = type(cause).__name__
        if name in ("ConnectError", "ConnectTimeout") or isinstance(cause, ConnectionError):
            return f"cannot connect to {config.where()}; check the URL and that the server runs"
        return f"{self._reason(cause)}; check the URL and headers"


class McpToolSource:
    """Every configured MCP server as one `ToolSource` for a `ToolRegistry`.

    ``registry.add_source(source)``, then ``await source.start()`` before the first
    ``session.update``; ``await source.refresh()`` after a reconnect of the Realtime session
    (servers that stopped or could not start are tried again); ``await source.aclose()`` at
    the end. ``on_tools_changed`` is called (on the event loop, after `start`) whenever the
    tools on offer change: a server's tool-list-changed notification, a server that started
    late, or one that could not be started again.
    """

    def __init__(
        self,
        servers: Sequence[McpServerConfig],
        *,
        call_timeout_s: float = 10.0,
        connect_timeout_s: float = 20.0,
        max_output_chars: int = 16000,
        retry_after_s: float = 30.0,
        on_tools_changed: ToolsChangedCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if call_timeout_s <= 0 or connect_timeout_s <= 0 or max_output_chars <= 0:
            raise ValueError("timeouts and max_output_chars must be positive")
        self.call_timeout_s = call_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_output_chars = max_output_chars
        self.retry_after_s = retry_after_s
        self.on_tools_changed = on_tools_changed
        self.clock = clock
        self.servers = {config.name: McpServerConnection(config, self) for config in servers}
        self.started = False
        """True once `start` has returned: tool changes are announced from then on."""
        self._closing = False
        self.callbacks = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, on_tools_changed: ToolsChangedCallback | None = None
    ) -> McpToolSource:
        """The servers of ``settings.mcp_servers`` and ``settings.mcp_config``, ``${VAR}``
        expanded. Reads files: call it before the event loop runs or in a thread.
        Raises `McpConfigError` (one line)."""
        from realtime_voicebot.tools.mcp_config import resolve_servers

        return cls(
            resolve_servers(settings.mcp_servers, settings.mcp_config),
            call_timeout_s=settings.tool_timeout_s,
            connect_timeout_s=settings.mcp_connect_timeout_s,
            max_output_chars=settings.tool_output_max_chars,
            on_tools_changed=on_tools_changed,
        )

    def tools(self) -> list[Tool]:
        """Every tool of every running server, in configuration order."""
        return [tool for server in self.servers.values() for tool in server.tools.values()]

    async def start(self) -> list[str]:
        """Start every server at once; one line per server that did not start."""
        problems = await self._connect_all(list(self.servers.values()))
        self.started = True
        return problems

    async def refresh(self) -> list[str]:
        """Start again every server that is not running; one line per one that did not."""
        waiting = [s for s in self.servers.values() if not s.up and s.state != "closed"]
        return await self._connect_all(waiting)

    async def _connect_all(self, servers: list[McpServerConnection]) -> list[str]:
        results = await asyncio.gather(*(server.connect() for server in servers))
        return [
            f"MCP server {server.name} did not start: {problem}; running without its tools"
            for server, problem in zip(servers, results, strict=True)
            if problem is not None
        ]

    async def aclose(self) -> None:
        """Stop every server (each within a bound) and forget their tools."""
        self._closing = True
        await asyncio.gather(*(server.aclose() for server in self.servers.values()))

    def replace_tools(self, server: McpServerConnection, tools: dict[str, Tool]) -> None:
        """Called by a server with its new tool list; tells the app when it changed."""
        before = {name: tool.spec() for name, tool in server.tools.items()}
        server.tools = tools
        after = {name: tool.spec() for name, tool in tools.items()}
        if before == after or not self.started or self._closing or not self.on_tools_changed:
            return
        change = McpToolsChanged(
            server.name,
            tuple(name for name in after if name not in before),
            tuple(name for name in before if name not in after),
            tuple(self.tools()),
        )
        log.info(
            "mcp_tools_changed", server=server.name, added=change.added, removed=change.removed
        )
        self.callbacks += 1
        try:
            self.on_tools_changed(change)
        except Exception:
            log.exception("mcp_tools_changed_callback_failed", server=server.name)

    def problems(self) -> dict[str, str]:
        """Why each server that is not running stopped or did not start."""
        return {
            name: server.last_error or server.state
            for name, server in self.servers.items()
            if not server.up
        }

    def snapshot(self) -> dict[str, Any]:
        """Counters per server, for the session summary."""
        return {
            "tools": len(self.tools()),
            "tools_changed": self.callbacks,
            "servers": {
                name: {
                    "state": server.state,
                    "transport": server.transport,
                    "tools": len(server.tools),
                    **server.counters,
                    "last_error": server.last_error,
                }
                for name, server in self.servers.items()
            },
        }
