"""Function calling: the tools the model may call, and the handler that runs its calls.

A call arrives as a ``function_call`` output item whose JSON arguments stream in through
``response.function_call_arguments.delta`` and are complete at ``.done``. The tool then runs
as its own task under a timeout. Its result, or an error the model can act on, goes back as a
``function_call_output`` item with the same ``call_id``; nothing is ever raised into the
receive loop. Once the response that asked is done and every one of its calls is answered,
one ``response.create`` lets the model speak about the results.

Outputs are held until ``response.done`` so that a response which did not complete
(``cancelled`` by a barge-in, ``failed``, ``incomplete``) gets no outputs and no
``response.create``: its calls are dropped, their tasks cancelled. The user is speaking again
and the server will answer that instead; a late ``response.create`` would collide with it.
"""

from __future__ import annotations

import asyncio
import codecs
import inspect
import ipaddress
import json
import re
import socket
import time
import types
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)
from urllib.parse import urljoin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import structlog

from realtime_voicebot.transport.events import (
    JSON,
    ServerEvent,
    ServerEventType,
    function_output_create,
    response_create,
)

if TYPE_CHECKING:
    from realtime_voicebot.config import Settings

ToolFunction = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=ToolFunction)
Send = Callable[[JSON], Awaitable[None]]
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> IP addresses``; the default asks the system via ``loop.getaddrinfo``."""

log = structlog.get_logger(component="tools")

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_ERROR_CHARS = 300


class ToolError(Exception):
    """A failure whose message is meant for the model as is (e.g. an unknown time zone)."""


# --- schemas -----------------------------------------------------------------------------------

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_JSON_SCALARS = (str, int, float, bool, type(None))


def schema_for(annotation: Any) -> JSON:
    """The JSON schema of a parameter type: str, int, float, bool, Literal, Optional, list[X].

    ``Annotated[T, "text"]`` adds ``text`` as the description. Raises TypeError otherwise.
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *meta = get_args(annotation)
        schema = schema_for(base)
        notes = [m for m in meta if isinstance(m, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    if origin is Literal:
        values = list(get_args(annotation))
        kinds = {_SCALARS.get(type(v)) for v in values}
        if None in kinds:
            raise TypeError(f"unsupported Literal values in {annotation!r}")
        schema = {"enum": values}
        if len(kinds) == 1:
            schema = {"type": kinds.pop(), "enum": values}
        return schema
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        others = [a for a in args if a is not type(None)]
        if len(others) != 1 or len(args) != 2:
            raise TypeError(f"unsupported union {annotation!r}: only Optional[X]")
        schema = schema_for(others[0])
        if isinstance(schema.get("type"), str):
            schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        return schema
    if origin is list:
        (item,) = get_args(annotation) or (None,)
        if item is None:
            raise TypeError("a list parameter needs an item type, e.g. list[str]")
        return {"type": "array", "items": schema_for(item)}
    raise TypeError(f"unsupported parameter type {annotation!r}")


def parameters_for(function: Callable[..., Any]) -> JSON:
    """The ``parameters`` schema of a function from its type hints; defaults make optional."""
    hints = get_type_hints(function, include_extras=True)
    properties: JSON = {}
    required: list[str] = []
    for param in inspect.signature(function).parameters.values():
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            raise TypeError(f"{function.__name__}: parameter {param.name} must be named")
        if param.name not in hints:
            raise TypeError(f"{function.__name__}: parameter {param.name} has no type hint")
        schema = schema_for(hints[param.name])
        if param.default is param.empty:
            required.append(param.name)
        elif isinstance(param.default, _JSON_SCALARS):
            schema["default"] = param.default
        properties[param.name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _type_matches(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return True  # a type this checker does not know: let the tool judge


def _json_kind(value: Any) -> str:
    for kind in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _type_matches(value, kind):
            return kind
    return type(value).__name__


def _same(a: Any, b: Any) -> bool:
    """JSON equality: True is not 1, but 1 is 1.0."""
    numbers = {"integer", "number"}
    return bool(a == b) and (
        _json_kind(a) == _json_kind(b) or {_json_kind(a), _json_kind(b)} <= numbers
    )


def schema_problems(value: Any, schema: JSON, where: str = "arguments") -> list[str]:
    """What is wrong with ``value`` under the subset of JSON schema tools use; [] when valid.

    Checks ``type`` (one or a list), ``enum``, object ``properties``/``required``/
    ``additionalProperties: false`` and array ``items``. Other keywords are ignored.
    """
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_type_matches(value, k) for k in kinds):
            return [f"{where} should be {' or '.join(kinds)}, got {_json_kind(value)}"]
    enum = schema.get("enum")
    if isinstance(enum, list) and not any(_same(value, e) for e in enum):
        return [f"{where} should be one of {', '.join(json.dumps(e) for e in enum)}"]
    problems: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                problems.append(f"missing required argument {name!r}")
        for name, item in value.items():
            if name in properties:
                problems += schema_problems(item, properties[name], f"argument {name!r}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"unexpected argument {name!r}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += schema_problems(item, schema["items"], f"{where}[{index}]")
    return problems


# --- tools and the registry ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: its name, description, JSON-schema parameters, and code."""

    name: str
    description: str
    parameters: JSON
    function: ToolFunction

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"tool name {self.name!r} must match {_NAME.pattern}")
        if not inspect.iscoroutinefunction(self.function):
            raise TypeError(f"tool {self.name}: the function must be async")
        if self.parameters.get("type") != "object":
            raise ValueError(f"tool {self.name}: parameters must be an object schema")

    @classmethod
    def from_function(
        cls,
        function: ToolFunction,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: JSON | None = None,
    ) -> Tool:
        """A tool from an async function: name, docstring and type hints unless given."""
        tool_name = name or function.__name__
        if description is None:
            doc = inspect.getdoc(function) or ""
            description = " ".join(doc.split("\n\n", 1)[0].split())
        if not description:
            raise ValueError(f"tool {tool_name} needs a description (a docstring or description=)")
        schema = parameters if parameters is not None else parameters_for(function)
        return cls(tool_name, description, schema, function)

    def spec(self) -> JSON:
        """The tool as ``session.tools`` takes it, in both dialects."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }

    def argument_problems(self, arguments: JSON) -> list[str]:
        """Schema mismatches, then what the Python signature would refuse; [] when callable."""
        problems = schema_problems(arguments, self.parameters)
        if problems:
            return problems
        try:
            inspect.signature(self.function).bind(**arguments)
        except TypeError as exc:
            return [str(exc)]
        return []


class ToolRegistry:
    """The tools of a session by name, in registration order."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    @overload
    def register(self, function: F) -> F: ...

    @overload
    def register(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: JSON | None = None,
    ) -> Callable[[F], F]: ...

    def register(
        self,
        function: ToolFunction | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: JSON | None = None,
    ) -> Any:
        """Register an async function as a tool: ``@registry.register`` or with options.

        The schema comes from the type hints and the description from the docstring unless
        ``parameters`` / ``description`` are given. Returns the function unchanged.
        """

        def add(fn: ToolFunction) -> ToolFunction:
            self.add(
                Tool.from_function(fn, name=name, description=description, parameters=parameters)
            )
            return fn

        return add(function) if function is not None else add

    def add(self, tool: Tool) -> Tool:
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[JSON]:
        """Every tool in the ``session.update`` shape: pass as ``session_update(tools=...)``."""
        return [tool.spec() for tool in self._tools.values()]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))


# --- the call handler ------------------------------------------------------------------------


@dataclass
class ToolCallStats:
    """Counters of one handler."""

    calls: int = 0
    """Calls whose arguments were complete (each gets an output unless dropped)."""
    errors: int = 0
    """Calls answered with an error: unknown tool, bad arguments, failure, timeout."""
    timeouts: int = 0
    dropped: int = 0
    """Calls of responses that did not complete, never answered."""
    outputs_sent: int = 0
    responses_created: int = 0


@dataclass
class _Call:
    call_id: str
    response_id: str
    name: str | None = None
    deltas: list[str] = field(default_factory=list)
    task: asyncio.Task[str] | None = None


@dataclass
class _Batch:
    """The calls of one response and the status it ended with."""

    response_id: str
    done: asyncio.Future[str]
    calls: dict[str, _Call] = field(default_factory=dict)
    finisher: asyncio.Task[None] | None = None


class ToolCallHandler:
    """Runs the model's function calls and answers them; fed every `ServerEvent` via `on_event`.

    ``on_event`` never blocks: it records and schedules tasks. All calls of one response are
    answered before one ``response.create``, sent after that response's ``response.done``.
    A response that ends other than ``completed`` gets no answers (see the module docstring).
    """

    def __init__(self, registry: ToolRegistry, send: Send, timeout_s: float = 10.0) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.registry = registry
        self.timeout_s = timeout_s
        self.stats = ToolCallStats()
        self._send = send
        self._batches: dict[str, _Batch] = {}
        self._calls: dict[str, _Call] = {}
        self._closed = False

    @property
    def pending(self) -> int:
        """Calls seen and not yet answered or dropped."""
        return len(self._calls)

    def on_event(self, event: ServerEvent) -> None:
        if self._closed:
            return
        kind = event.type
        if kind in (ServerEventType.OUTPUT_ITEM_ADDED, ServerEventType.OUTPUT_ITEM_DONE):
            item = event.get("item")
            if not isinstance(item, dict) or item.get("type") != "function_call":
                return
            call = self._call(event.response_id, item.get("call_id"), item.get("name"))
            arguments = item.get("arguments")
            # A completed item whose .done event never came still carries its arguments.
            if (
                call is not None
                and kind is ServerEventType.OUTPUT_ITEM_DONE
                and item.get("status") == "completed"
                and isinstance(arguments, str)
            ):
                self._start(call, arguments)
        elif kind is ServerEventType.FUNCTION_ARGUMENTS_DELTA:
            call = self._call(event.response_id, event.get("call_id"), event.get("name"))
            delta = event.get("delta")
            if call is not None and isinstance(delta, str):
                call.deltas.append(delta)
        elif kind is ServerEventType.FUNCTION_ARGUMENTS_DONE:
            call = self._call(event.response_id, event.get("call_id"), event.get("name"))
            if call is not None:
                arguments = event.get("arguments")
                self._start(call, arguments if isinstance(arguments, str) else "".join(call.deltas))
        elif kind is ServerEventType.RESPONSE_DONE:
            batch = self._batches.get(event.response_id or "")
            response = event.get("response")
            status = response.get("status") if isinstance(response, dict) else None
            if batch is not None and not batch.done.done():
                batch.done.set_result(status if isinstance(status, str) else "completed")

    def _call(self, response_id: str | None, call_id: Any, name: Any) -> _Call | None:
        if not isinstance(call_id, str) or not call_id:
            log.warning("tool_call_without_id", response_id=response_id)
            return None
        call = self._calls.get(call_id)
        if call is None:
            rid = response_id or ""
            batch = self._batches.get(rid)
            if batch is None:
                loop = asyncio.get_running_loop()
                batch = _Batch(rid, loop.create_future())
                batch.finisher = loop.create_task(self._finish(batch), name=f"tools:{rid}")
                self._batches[rid] = batch
            call = _Call(call_id, rid)
            batch.calls[call_id] = call
            self._calls[call_id] = call
        if call.name is None and isinstance(name, str) and name:
            call.name = name
        return call

    def _start(self, call: _Call, arguments: str) -> None:
        if call.task is not None:
            return
        self.stats.calls += 1
        call.task = asyncio.get_running_loop().create_task(
            self._run(call.name, arguments, call.call_id), name=f"tool:{call.name}:{call.call_id}"
        )

    def _error(self, message: str) -> str:
        self.stats.errors += 1
        return json.dumps({"error": message[:_MAX_ERROR_CHARS]}, ensure_ascii=False)

    async def _run(self, name: str | None, arguments: str, call_id: str) -> str:
        """The output for one call: the tool's JSON result or {"error": ...}. Never raises."""
        tool = self.registry.get(name) if name else None
        if tool is None:
            known = ", ".join(self.registry.names()) or "none"
            log.warning("tool_unknown", tool=name, call_id=call_id)
            return self._error(f"unknown tool {name!r}; available tools: {known}")
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            log.warning("tool_arguments_not_json", tool=name, call_id=call_id)
            return self._error(f"arguments for tool {name} are not valid JSON")
        if not isinstance(args, dict):
            return self._error(f"arguments for tool {name} must be a JSON object")
        problems = tool.argument_problems(args)
        if problems:
            log.warning("tool_arguments_invalid", tool=name, call_id=call_id, problems=problems)
            return self._error(f"invalid arguments for tool {name}: " + "; ".join(problems))
        started = time.monotonic()
        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                result = await tool.function(**args)
        except TimeoutError:
            if not deadline.expired():
                log.warning("tool_failed", tool=name, call_id=call_id, error="TimeoutError")
                return self._error(f"tool {name} failed: TimeoutError")
            self.stats.timeouts += 1
            log.warning("tool_timeout", tool=name, call_id=call_id, timeout_s=self.timeout_s)
            return self._error(f"tool {name} timed out after {self.timeout_s:g} s")
        except ToolError as exc:
            log.info("tool_refused", tool=name, call_id=call_id, reason=str(exc))
            return self._error(str(exc))
        except Exception as exc:
            log.warning("tool_failed", tool=name, call_id=call_id, exc_info=True)
            return self._error(f"tool {name} failed: {type(exc).__name__}: {exc}")
        log.info(
            "tool_done",
            tool=name,
            call_id=call_id,
            ms=round((time.monotonic() - started) * 1000),
        )
        if isinstance(result, str):
            return result
        try:
            return json.dumps(result, ensure_ascii=False)
        except (TypeError, ValueError):
            return self._error(f"tool {name} returned a result that is not JSON")

    async def _finish(self, batch: _Batch) -> None:
        """Wait for the response to end, then answer all its calls and ask for one reply."""
        try:
            status = await batch.done
            calls = list(batch.calls.values())
            tasks = [c.task for c in calls if c.task is not None]
            if status != "completed":
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self.stats.dropped += len(calls)
                log.info(
                    "tool_calls_dropped",
                    response_id=batch.response_id,
                    status=status,
                    calls=len(calls),
                )
                return
            for call in calls:
                if call.task is None:
                    # Listed in a completed response, yet its arguments never completed.
                    self.stats.calls += 1
                    output = self._error(f"the arguments of call {call.call_id} never completed")
                else:
                    output = await call.task
                await self._send(function_output_create(call.call_id, output))
                self.stats.outputs_sent += 1
            await self._send(response_create())
            self.stats.responses_created += 1
        except asyncio.CancelledError:
            for call in batch.calls.values():
                if call.task is not None:
                    call.task.cancel()
            raise
        except Exception:
            log.exception("tool_outputs_not_sent", response_id=batch.response_id)
        finally:
            if self._batches.get(batch.response_id) is batch:
                del self._batches[batch.response_id]
            for call_id, call in batch.calls.items():
                if self._calls.get(call_id) is call:
                    del self._calls[call_id]

    async def join(self) -> None:
        """Wait until every response seen so far is answered or dropped."""
        finishers = [b.finisher for b in self._batches.values() if b.finisher is not None]
        await asyncio.gather(*finishers, return_exceptions=True)

    def reset(self) -> int:
        """A new session: forget every call of the old one; returns how many were dropped.

        The dead session will never send their ``response.done``, and the new one does not
        know their ``call_id``: their tools are cancelled and nothing is sent for them.
        Later events are handled as usual (unlike `aclose`).
        """
        dropped = len(self._calls)
        for batch in list(self._batches.values()):
            for call in batch.calls.values():
                if call.task is not None:
                    call.task.cancel()
            if batch.finisher is not None:
                batch.finisher.cancel()
        self._batches.clear()
        self._calls.clear()
        if dropped:
            self.stats.dropped += dropped
            log.info("tool_calls_dropped_on_new_session", calls=dropped)
        return dropped

    async def aclose(self) -> None:
        """Cancel running tools and pending answers; later events are ignored."""
        self._closed = True
        tasks: list[asyncio.Task[Any]] = []
        for batch in list(self._batches.values()):
            if batch.finisher is not None:
                tasks.append(batch.finisher)
            tasks += [c.task for c in batch.calls.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._batches.clear()
        self._calls.clear()


# --- built-in tools -----------------------------------------------------------------------------


def current_time_tool(clock: Callable[[], datetime] | None = None) -> Tool:
    """``current_time(timezone="UTC")``; ``clock`` returns an aware datetime (tests)."""
    now = clock or (lambda: datetime.now(UTC))

    async def current_time(
        timezone: Annotated[str, "IANA time zone, e.g. Europe/Paris or America/New_York"] = "UTC",
    ) -> JSON:
        """The current date, time and weekday in a time zone."""
        try:
            zone = ZoneInfo(timezone.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(
                f"unknown time zone {timezone!r}; use an IANA name such as Europe/Paris"
            ) from None
        local = now().astimezone(zone)
        return {
            "timezone": zone.key,
            "datetime": local.isoformat(timespec="seconds"),
            "weekday": local.strftime("%A"),
        }

    return Tool.from_function(current_time)


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolves ``host`` to."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public_address(address: str) -> bool:
    """False for private, loopback, link-local, multicast, reserved and unspecified addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


_TEXT_TYPES = re.compile(r"^(text/|application/([\w.-]+\+)?(json|xml)\b|application/javascript)")


def http_get_tool(
    allowlist: Sequence[str],
    *,
    max_bytes: int = 65536,
    timeout_s: float = 10.0,
    max_redirects: int = 5,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
) -> Tool:
    """``http_get(url)``: GET an https URL on an allowlisted host, body capped at max_bytes.

    Every hop (redirects are followed here, not by httpx) must be https, on the default port,
    on an allowlisted host, and resolve only to public addresses. The request goes to the
    address that was checked (Host header and TLS SNI keep the name), so a DNS answer that
    changes between check and connect cannot reach another address. Environment proxies are
    ignored.
    """
    hosts = frozenset(h.lower().rstrip(".") for h in allowlist)
    resolve = resolver or system_resolver
    shown = ", ".join(sorted(hosts)) or "none configured"

    def check_url(url: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise ToolError(f"invalid URL {url!r}") from None
        if parsed.scheme != "https":
            raise ToolError("only https URLs are allowed")
        if parsed.userinfo:
            raise ToolError("URLs with credentials are not allowed")
        if parsed.port not in (None, 443):
            raise ToolError("only the default https port is allowed")
        host = parsed.raw_host.decode("ascii").lower().rstrip(".")
        if host not in hosts:
            raise ToolError(f"host {host} is not on the allowlist ({shown})")
        return parsed

    async def pinned_address(host: str) -> str:
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = await resolve(host, 443)
            except OSError:
                raise ToolError(f"cannot resolve {host}") from None
        if not addresses:
            raise ToolError(f"cannot resolve {host}")
        try:
            private = [a for a in addresses if not is_public_address(a)]
        except ValueError:
            raise ToolError(f"{host} resolves to an invalid address") from None
        if private:
            raise ToolError(f"{host} resolves to a private or local address")
        return addresses[0].split("%", 1)[0]

    async def read_capped(response: httpx.Response) -> tuple[str, bool]:
        data = bytearray()
        truncated = False
        async for chunk in response.aiter_bytes():
            room = max_bytes - len(data)
            if len(chunk) > room:
                data += chunk[:room]
                truncated = True
                break
            data += chunk
        try:
            decoder = codecs.getincrementaldecoder(response.encoding or "utf-8")(errors="replace")
        except LookupError:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = decoder.decode(bytes(data), final=not truncated)
        if truncated:
            text += f"\n[truncated at {max_bytes} bytes]"
        return text, truncated

    async def http_get(url: Annotated[str, "An https URL"]) -> JSON:
        async with httpx.AsyncClient(
            transport=transport,
            timeout=timeout_s,
            follow_redirects=False,
            trust_env=False,
        ) as client:
            current = url.strip()
            for _ in range(max_redirects + 1):
                parsed = check_url(current).copy_with(fragment=None)
                host = parsed.raw_host.decode("ascii")
                address = await pinned_address(host)
                request = client.build_request(
                    "GET",
                    parsed.copy_with(host=address),
                    headers={
                        "Host": host,
                        "Accept": "text/*, application/json, */*;q=0.5",
                        "User-Agent": "realtime-voicebot",
                    },
                    extensions={"sni_hostname": host},
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise ToolError(f"request to {host} failed: {type(exc).__name__}") from None
                try:
                    location = response.headers.get("location")
                    if response.is_redirect and location:
                        current = urljoin(str(parsed), location)
                        continue
                    content_type = response.headers.get("content-type", "")
                    if content_type and not _TEXT_TYPES.match(content_type.lower()):
                        body, truncated = f"[{content_type} content not shown]", False
                    else:
                        try:
                            body, truncated = await read_capped(response)
                        except httpx.HTTPError as exc:
                            raise ToolError(
                                f"reading from {host} failed: {type(exc).__name__}"
                            ) from None
                    return {
                        "url": str(parsed),
                        "status": response.status_code,
                        "content_type": content_type,
                        "body": body,
                        "truncated": truncated,
                    }
                finally:
                    await response.aclose()
            raise ToolError(f"too many redirects (more than {max_redirects})")

    return Tool.from_function(
        http_get,
        description=(
            "Fetch a web page or API response with an HTTPS GET and return its status and text "
            f"(at most {max_bytes} bytes). Allowed hosts: {shown}."
        ),
    )


def build_registry(
    settings: Settings,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
    clock: Callable[[], datetime] | None = None,
) -> ToolRegistry:
    """The built-in tools enabled in ``settings.tools`` (none by default)."""
    registry = ToolRegistry()
    for name in dict.fromkeys(settings.tools):
        if name == "current_time":
            registry.add(current_time_tool(clock))
        elif name == "http_get":
            if not settings.http_allowlist:
                log.warning("http_get_without_allowlist", hint="set http_allowlist")
            registry.add(
                http_get_tool(
                    settings.http_allowlist,
                    max_bytes=settings.http_max_bytes,
                    timeout_s=settings.tool_timeout_s,
                    transport=http_transport,
                    resolver=resolver,
                )
            )
    return registry
