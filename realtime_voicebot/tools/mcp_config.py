"""Which MCP servers to connect: ``--mcp-server`` entries and the JSON config file.

Two ways to name a server, which can be mixed:

* ``NAME=COMMAND ARGS...`` (stdio: the bot starts the command and talks over its stdin and
  stdout) or ``NAME=URL ['Header: value' ...]`` (streamable HTTP), split like a shell line;
* a JSON file in the ``mcpServers`` shape that MCP servers document for desktop clients
  (``command``/``args``/``env``/``cwd`` or ``url``/``headers``), which reads better once
  there are several servers, environment variables or headers.

``${VAR}`` in a command, an argument, a URL, a header or an ``env`` value is replaced from the
environment (then ``.env``) when the bot starts, so a token never needs to be written in a
flag. Header and ``env`` values are secrets: they never appear in a ``repr``, a log line or
``voicebot config show``. This module imports nothing heavy: settings validation uses it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from realtime_voicebot.errors import UserError

MAX_NAME_CHARS = 24
"""Room left for the tool's own name in ``server__tool`` (64 characters in all)."""
MAX_CONFIG_BYTES = 1024 * 1024
MASK = "********"

_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_NAME_CHARS - 1}}}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL = re.compile(r"^https?://", re.IGNORECASE)


class McpConfigError(UserError, ValueError):
    """A server entry or config file that cannot be used; the message is one line."""


@dataclass(frozen=True, slots=True)
class StdioServer:
    """An MCP server the bot starts as a child process and talks to over stdin/stdout."""

    name: str
    command: str
    args: tuple[str, ...] = field(default=(), repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Added to the SDK's safe default environment (PATH, HOME...): API keys are not passed."""
    cwd: str | None = None

    def where(self) -> str:
        """What to show for this server: the program, never its arguments (may hold tokens)."""
        return os.path.basename(self.command)


@dataclass(frozen=True, slots=True)
class HttpServer:
    """An MCP server reached over streamable HTTP."""

    name: str
    url: str = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def secure(self) -> bool:
        """https, or plain http that stays on this machine."""
        parts = urlsplit(self.url)
        local = parts.hostname in ("localhost", "127.0.0.1", "::1")
        return parts.scheme.lower() == "https" or local

    def where(self) -> str:
        """Scheme, host and port only: paths and queries sometimes carry tokens."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


McpServerConfig = StdioServer | HttpServer


def check_name(name: str) -> str:
    """A server name: letters, digits, ``-`` and ``_`` (no ``__``), at most 24 characters."""
    if not _NAME.match(name) or "__" in name or name.endswith("_"):
        raise McpConfigError(
            f"MCP server name {name!r} must be 1 to {MAX_NAME_CHARS} letters, digits, - or _ "
            "(no double or trailing _), e.g. notes"
        )
    return name


def _check_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise McpConfigError(f"MCP server {name}: {mask_url(url)!r} is not an http(s) URL")
    return url


def _header(name: str, text: str) -> tuple[str, str]:
    key, sep, value = text.partition(":")
    if not sep or not _HEADER_NAME.match(key.strip()):
        raise McpConfigError(
            f"MCP server {name}: after the URL give headers as 'Name: value', "
            f"not {text.split(':', 1)[0][:40]!r}..."
        )
    return key.strip(), value.strip()


def parse_server_spec(text: str) -> McpServerConfig:
    """``NAME=COMMAND ARGS...`` or ``NAME=URL ['Header: value' ...]`` -> a server config."""
    name, sep, rest = text.strip().partition("=")
    if not sep:
        raise McpConfigError(
            "an MCP server is NAME=COMMAND ARGS... or NAME=https://URL, e.g. "
            "'notes=uvx my-notes-server'"
        )
    name = check_name(name.strip())
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise McpConfigError(f"MCP server {name}: cannot split the command line: {exc}") from None
    if not words:
        raise McpConfigError(f"MCP server {name}: give a command or a URL after {name}=")
    if _URL.match(words[0]):
        headers = dict(_header(name, word) for word in words[1:])
        return HttpServer(name, _check_url(name, words[0]), headers)
    return StdioServer(name, words[0], tuple(words[1:]))


def split_server_specs(text: str) -> list[str]:
    """The entries of ``VOICEBOT_MCP_SERVERS``: a JSON list, or entries separated by ``;``
    (a ``;`` inside quotes belongs to its entry)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError:
            raise McpConfigError("not a JSON list; use a JSON list of strings or ;") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise McpConfigError("expected a JSON list of strings")
        return value
    entries: list[str] = []
    current: list[str] = []
    quote = ""
    for char in stripped:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ";":
            entries.append("".join(current))
            current = []
            continue
        current.append(char)
    entries.append("".join(current))
    return [entry.strip() for entry in entries if entry.strip()]


def _strings(name: str, key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise McpConfigError(f"MCP server {name}: {key} must be an object of strings")
    return dict(value)


def _server_from_json(name: str, entry: Any) -> McpServerConfig | None:
    """One entry of ``mcpServers``; None when it says ``"disabled": true``."""
    check_name(name)
    if not isinstance(entry, dict):
        raise McpConfigError(f"MCP server {name}: expected an object with command or url")
    if entry.get("disabled") is True:
        return None
    kind = str(entry.get("type", "")).lower().replace("_", "-")
    if kind == "sse":
        raise McpConfigError(
            f"MCP server {name}: the old SSE transport is not supported; use the server's "
            "streamable HTTP URL (often ending in /mcp)"
        )
    if kind not in ("", "stdio", "http", "streamable-http", "streamablehttp"):
        raise McpConfigError(f"MCP server {name}: unknown type {entry.get('type')!r}")
    if "url" in entry:
        url = entry["url"]
        if not isinstance(url, str):
            raise McpConfigError(f"MCP server {name}: url must be a string")
        headers = _strings(name, "headers", entry.get("headers", {}))
        for key in headers:
            if not _HEADER_NAME.match(key):
                raise McpConfigError(f"MCP server {name}: {key!r} is not a header name")
        return HttpServer(name, _check_url(name, url), headers)
    command = entry.get("command")
    if not isinstance(command, str) or not command.strip():
        raise McpConfigError(f"MCP server {name}: give a command (stdio) or a url (HTTP)")
    args = entry.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise McpConfigError(f"MCP server {name}: args must be a list of strings")
    cwd = entry.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise McpConfigError(f"MCP server {name}: cwd must be a string")
    env = _strings(name, "env", entry.get("env", {}))
    return StdioServer(name, command.strip(), tuple(args), env, cwd)


def load_config_file(path: Path) -> list[McpServerConfig]:
    """The servers of a JSON config file (``mcpServers``, or VS Code's ``servers``)."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise McpConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise McpConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise McpConfigError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise McpConfigError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    servers = data.get("mcpServers", data.get("servers")) if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise McpConfigError(f'{path}: expected {{"mcpServers": {{"NAME": {{...}}}}}}')
    try:
        found = [_server_from_json(name, entry) for name, entry in servers.items()]
    except McpConfigError as exc:
        raise McpConfigError(f"{path}: {exc}") from None
    return [server for server in found if server is not None]


def _expand(name: str, text: str, environ: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        variable = match.group(1)
        if variable not in environ:
            raise McpConfigError(
                f"MCP server {name}: ${{{variable}}} is not set; export it or put it in .env"
            )
        return environ[variable]

    return _VARIABLE.sub(value, text)


def expand_text(name: str, text: str, environ: Mapping[str, str]) -> str:
    """``text`` with every ``${VAR}`` replaced from ``environ``; `McpConfigError` naming
    ``name`` for a variable that is not set."""
    return _expand(name, text, environ)


def expand_variables(server: McpServerConfig, environ: Mapping[str, str]) -> McpServerConfig:
    """The server with every ``${VAR}`` replaced from ``environ``."""
    name = server.name

    def each(items: Mapping[str, str]) -> dict[str, str]:
        return {k: _expand(name, v, environ) for k, v in items.items()}

    if isinstance(server, HttpServer):
        return replace(server, url=_expand(name, server.url, environ), headers=each(server.headers))
    return replace(
        server,
        command=_expand(name, server.command, environ),
        args=tuple(_expand(name, a, environ) for a in server.args),
        env=each(server.env),
        cwd=_expand(name, server.cwd, environ) if server.cwd else server.cwd,
    )


def check_unique(servers: Iterable[McpServerConfig]) -> list[McpServerConfig]:
    seen: set[str] = set()
    result = []
    for server in servers:
        if server.name in seen:
            raise McpConfigError(f"two MCP servers are named {server.name}; rename one")
        seen.add(server.name)
        result.append(server)
    return result


def resolve_servers(
    specs: Iterable[str],
    config_file: Path | None,
    environ: Mapping[str, str] | None = None,
) -> list[McpServerConfig]:
    """Every configured server, ``${VAR}`` expanded. Reads files: call it off the event loop.

    ``environ`` defaults to ``.env`` overlaid by the process environment.
    """
    if environ is None:
        from dotenv import dotenv_values

        from_file = dotenv_values(".env") if os.path.exists(".env") else {}
        environ = {k: v for k, v in from_file.items() if v is not None} | dict(os.environ)
    servers = [parse_server_spec(spec) for spec in specs]
    if config_file is not None:
        servers += load_config_file(config_file)
    return [expand_variables(server, environ) for server in check_unique(servers)]


def mask_url(url: str) -> str:
    """The URL with its password and query values masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(
        f"{pair.split('=', 1)[0]}={MASK}" if "=" in pair else pair
        for pair in parts.query.split("&")
        if pair
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_server_spec(text: str) -> str:
    """An ``--mcp-server`` entry as shown by ``config show``: header values masked."""
    try:
        server = parse_server_spec(text)
    except McpConfigError:
        return MASK
    if isinstance(server, StdioServer):
        return text.strip()
    shown = [f"{server.name}={mask_url(server.url)}"]
    shown += [shlex.quote(f"{key}: {MASK}") for key in server.headers]
    return " ".join(shown)
