"""Function calling: schemas, the call handler fed with parsed wire events, built-in tools."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import httpx
import pytest

from realtime_voicebot.config import load_settings
from realtime_voicebot.core import actions as a
from realtime_voicebot.core.tool_calls import ToolCalls, ToolCallStats
from realtime_voicebot.testing import scaled
from realtime_voicebot.tools import Tool, ToolError, ToolRegistry, ToolRunner
from realtime_voicebot.tools.builtin import build_registry
from realtime_voicebot.tools.builtin.current_time import current_time_tool
from realtime_voicebot.tools.builtin.http_get import (
    http_get_tool,
    is_public_address,
    system_resolver,
)
from realtime_voicebot.tools.schema import parameters_for, schema_problems
from realtime_voicebot.transport.events import (
    ClientEventType,
    Dialect,
    EventParser,
    ServerEvent,
    ServerEventType,
    response_create,
    session_update,
    wire_name,
)

from .spec import validate_client, validate_server

DIALECTS: list[Dialect] = ["ga", "beta"]
WAIT_S = scaled(2.0)
_ids = itertools.count(1)

# --- helpers -----------------------------------------------------------------------------------


def _eid() -> str:
    return f"event_{next(_ids)}"


def _w(event_type: ServerEventType, dialect: Dialect) -> str:
    name = wire_name(event_type, dialect)
    assert name is not None
    return name


def call_events(
    dialect: Dialect, response_id: str, calls: list[tuple[str, str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Wire events of a response making function calls ``(call_id, name, arguments)``.

    Returns the events up to the last output item and the items for ``response.done``.
    """
    S = ServerEventType
    events: list[dict[str, Any]] = [
        {
            "type": _w(S.RESPONSE_CREATED, dialect),
            "event_id": _eid(),
            "response": {
                "id": response_id,
                "object": "realtime.response",
                "status": "in_progress",
                "output": [],
            },
        }
    ]
    items: list[dict[str, Any]] = []
    for index, (call_id, name, arguments) in enumerate(calls):
        item = {
            "id": f"item_{call_id}",
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": name,
            "arguments": "",
        }
        where = {"response_id": response_id, "output_index": index}
        events.append(
            {"type": _w(S.OUTPUT_ITEM_ADDED, dialect), "event_id": _eid(), **where, "item": item}
        )
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            events.append(
                {
                    "type": _w(S.FUNCTION_ARGUMENTS_DELTA, dialect),
                    "event_id": _eid(),
                    **where,
                    "item_id": item["id"],
                    "call_id": call_id,
                    "delta": part,
                }
            )
        done: dict[str, Any] = {
            "type": _w(S.FUNCTION_ARGUMENTS_DONE, dialect),
            "event_id": _eid(),
            **where,
            "item_id": item["id"],
            "call_id": call_id,
            "arguments": arguments,
        }
        if dialect == "ga":
            done["name"] = name  # beta's .done has no name: the handler takes it from the item
        events.append(done)
        finished = {**item, "status": "completed", "arguments": arguments}
        events.append(
            {"type": _w(S.OUTPUT_ITEM_DONE, dialect), "event_id": _eid(), **where, "item": finished}
        )
        items.append(finished)
    return events, items


def response_done(
    dialect: Dialect, response_id: str, items: list[dict[str, Any]], status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": _w(ServerEventType.RESPONSE_DONE, dialect),
        "event_id": _eid(),
        "response": {
            "id": response_id,
            "object": "realtime.response",
            "status": status,
            "output": items,
        },
    }


class Wire:
    """The handler's ``send``: validates every client event against the SDK and records it."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.sent: list[dict[str, Any]] = []
        self.created = asyncio.Event()
        self.parser = EventParser()

    def send(self, event: dict[str, Any]) -> None:
        validate_client(event, self.dialect)
        self.sent.append(event)
        if event["type"] == ClientEventType.RESPONSE_CREATE:
            self.created.set()

    def feed(self, handler: ToolHarness, events: list[dict[str, Any]]) -> None:
        for event in events:
            validate_server(event, self.dialect)
            parsed = self.parser.parse(json.dumps(event))
            assert parsed is not None, event["type"]
            handler.on_event(parsed)

    async def wait_created(self) -> None:
        await asyncio.wait_for(self.created.wait(), WAIT_S)

    def outputs(self) -> dict[str, Any]:
        """call_id -> the parsed output of each function_call_output sent."""
        found: dict[str, Any] = {}
        for event in self.sent:
            if event["type"] == ClientEventType.ITEM_CREATE:
                item = event["item"]
                assert set(item) == {"type", "call_id", "output"}
                assert item["type"] == "function_call_output"
                found[item["call_id"]] = json.loads(item["output"])
        return found

    def types(self) -> list[str]:
        return [e["type"] for e in self.sent]


class ToolHarness:
    """The core's call bookkeeping (`ToolCalls`) and the `ToolRunner`, wired as the app
    wires them: `RunTool` starts a task, its result goes back to the bookkeeping, `Send`
    goes to the wire, `CancelTool` cancels the task, a due reply is one `response.create`."""

    def __init__(self, registry: ToolRegistry, wire: Wire, timeout_s: float) -> None:
        self.calls = ToolCalls()
        self.runner = ToolRunner(registry, timeout_s)
        self.wire = wire
        self.tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def stats(self) -> ToolCallStats:
        return self.calls.stats

    @property
    def pending(self) -> int:
        return self.calls.pending

    def on_event(self, event: ServerEvent) -> None:
        self.perform(*self.calls.on_event(event))

    def perform(self, actions: list[a.Action], reply_due: bool) -> None:
        for action in actions:
            if isinstance(action, a.Send):
                self.wire.send(action.event)
            elif isinstance(action, a.RunTool):
                self.tasks[action.call_id] = asyncio.ensure_future(
                    self._run(action.call_id, action.name, action.arguments)
                )
            elif isinstance(action, a.CancelTool):
                self.tasks.pop(action.call_id).cancel()
        if reply_due:
            self.wire.send(response_create())

    async def _run(self, call_id: str, name: str | None, arguments: str) -> None:
        result = await self.runner.run(name, arguments, call_id)
        self.tasks.pop(call_id, None)
        self.perform(*self.calls.finished(call_id, result))

    async def join(self) -> None:
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def aclose(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await self.join()
        self.tasks.clear()


Make = Callable[..., Awaitable[tuple[ToolHarness, Wire]]]


@pytest.fixture
async def make() -> Any:
    handlers: list[ToolHarness] = []

    async def _make(
        registry: ToolRegistry, dialect: Dialect = "ga", timeout_s: float = scaled(10.0)
    ) -> tuple[ToolHarness, Wire]:
        wire = Wire(dialect)
        handler = ToolHarness(registry, wire, timeout_s)
        handlers.append(handler)
        return handler, wire

    yield _make
    for handler in handlers:
        await handler.aclose()


def weather_registry() -> tuple[ToolRegistry, list[dict[str, Any]]]:
    registry = ToolRegistry()
    seen: list[dict[str, Any]] = []

    @registry.register
    async def weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, Any]:
        """The weather in a city."""
        seen.append({"city": city, "unit": unit})
        return {"city": city, "temperature": 21, "unit": unit}

    return registry, seen


# --- schemas ------------------------------------------------------------------------------------


async def sample(
    name: str,
    count: int,
    ratio: float,
    loud: bool,
    mode: Literal["fast", "slow"],
    tags: list[str],
    limit: int | None = None,
    note: Annotated[str, "A short note"] = "none",
) -> str:
    """Do a sample thing.

    Longer text that is not part of the description.
    """
    return name


def test_schema_derived_from_type_hints() -> None:
    assert parameters_for(sample) == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "loud": {"type": "boolean"},
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "limit": {"type": ["integer", "null"], "default": None},
            "note": {"type": "string", "description": "A short note", "default": "none"},
        },
        "required": ["name", "count", "ratio", "loud", "mode", "tags"],
        "additionalProperties": False,
    }
    tool = Tool.from_function(sample)
    assert tool.description == "Do a sample thing."
    assert tool.spec() == {
        "type": "function",
        "name": "sample",
        "description": "Do a sample thing.",
        "parameters": parameters_for(sample),
    }


def test_explicit_schema_and_description() -> None:
    registry = ToolRegistry()
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}

    @registry.register(name="search_notes", description="Search my notes.", parameters=schema)
    async def anything(q):  # type: ignore[no-untyped-def]  # no hints: the schema is given
        return q

    spec = registry.specs()[0]
    assert spec == {
        "type": "function",
        "name": "search_notes",
        "description": "Search my notes.",
        "parameters": schema,
    }
    assert "search_notes" in registry and len(registry) == 1


def test_bad_registrations_fail_early() -> None:
    registry = ToolRegistry()

    def sync_tool(x: str) -> str:
        """Sync."""
        return x

    async def bad_type(x: dict[str, int]) -> None:
        """Dict."""

    async def no_doc(x: str) -> None:
        pass

    async def ok(x: str) -> None:
        """Ok."""

    with pytest.raises(TypeError, match="async"):
        registry.register(sync_tool)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="unsupported"):
        registry.register(bad_type)
    with pytest.raises(ValueError, match="description"):
        registry.register(no_doc)
    with pytest.raises(ValueError, match="name"):
        registry.register(name="has space")(ok)
    registry.register(ok)
    with pytest.raises(ValueError, match="already"):
        registry.register(ok)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_specs_validate_in_session_update(dialect: Dialect) -> None:
    settings = load_settings({"tools": "current_time,http_get", "http_allowlist": "example.com"})
    registry = build_registry(settings)
    registry.register(sample)
    event = session_update(settings, dialect, tools=registry.specs())
    validate_client(event, dialect)
    assert [t["name"] for t in event["session"]["tools"]] == ["current_time", "http_get", "sample"]
    assert event["session"]["tool_choice"] == "auto"
    for spec in event["session"]["tools"]:
        assert set(spec) == {"type", "name", "description", "parameters"}


def test_schema_problems() -> None:
    schema = parameters_for(sample)
    good = {"name": "a", "count": 1, "ratio": 2, "loud": True, "mode": "fast", "tags": ["x"]}
    assert schema_problems(good, schema) == []
    assert schema_problems({**good, "limit": None}, schema) == []
    assert schema_problems({**good, "count": True}, schema) == [
        "argument 'count' should be integer, got boolean"
    ]
    assert schema_problems({**good, "mode": "medium"}, schema) == [
        'argument \'mode\' should be one of "fast", "slow"'
    ]
    assert schema_problems({**good, "tags": ["x", 3]}, schema) == [
        "argument 'tags'[1] should be string, got integer"
    ]
    missing = {k: v for k, v in good.items() if k != "name"}
    assert schema_problems({**missing, "extra": 1}, schema) == [
        "missing required argument 'name'",
        "unexpected argument 'extra'",
    ]


# --- the call flow ------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_single_call_answered_after_response_done(make: Make, dialect: Dialect) -> None:
    registry, seen = weather_registry()
    handler, wire = await make(registry, dialect)
    events, items = call_events(dialect, "resp_1", [("call_1", "weather", '{"city": "Paris"}')])
    wire.feed(handler, events)
    await asyncio.wait_for(handler.join(), WAIT_S)  # the tool ran and its result came back
    assert seen == [{"city": "Paris", "unit": "C"}]  # the tool ran at .done ...
    assert wire.sent == []  # ... but nothing is sent before the response is done
    wire.feed(handler, [response_done(dialect, "resp_1", items)])
    await wire.wait_created()
    assert wire.types() == [ClientEventType.ITEM_CREATE, ClientEventType.RESPONSE_CREATE]
    assert wire.outputs() == {"call_1": {"city": "Paris", "temperature": 21, "unit": "C"}}
    assert set(wire.sent[1]) == {"type", "event_id"}
    assert handler.stats.calls == 1 and handler.stats.errors == 0
    assert handler.stats.outputs_sent == 1 and handler.stats.replies_requested == 1
    assert handler.pending == 0


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_two_calls_answered_before_one_response_create(make: Make, dialect: Dialect) -> None:
    registry = ToolRegistry()
    gate = asyncio.Event()

    @registry.register
    async def slow(x: int) -> int:
        """Slow."""
        await gate.wait()
        return x * 2

    @registry.register
    async def fast(x: int) -> int:
        """Fast."""
        return x + 1

    handler, wire = await make(registry, dialect)
    events, items = call_events(
        dialect, "resp_2", [("call_a", "fast", '{"x": 1}'), ("call_b", "slow", '{"x": 5}')]
    )
    wire.feed(handler, [*events, response_done(dialect, "resp_2", items)])
    await asyncio.wait_for(handler.tasks["call_a"], WAIT_S)  # the fast one's result came back
    assert ClientEventType.RESPONSE_CREATE not in wire.types()
    gate.set()
    await wire.wait_created()
    await handler.join()
    assert wire.types() == [ClientEventType.ITEM_CREATE] * 2 + [ClientEventType.RESPONSE_CREATE]
    assert wire.outputs() == {"call_a": 2, "call_b": 10}
    assert handler.stats.calls == 2 and handler.stats.replies_requested == 1


async def answer_of(
    make: Make, registry: ToolRegistry, name: str, arguments: str, **kw: Any
) -> Any:
    """Run one call through the handler and return its parsed output."""
    handler, wire = await make(registry, **kw)
    events, items = call_events("ga", "resp_x", [("call_x", name, arguments)])
    wire.feed(handler, [*events, response_done("ga", "resp_x", items)])
    await wire.wait_created()
    assert wire.types() == [ClientEventType.ITEM_CREATE, ClientEventType.RESPONSE_CREATE]
    return wire.outputs()["call_x"]


async def test_unknown_tool_is_answered(make: Make) -> None:
    registry, seen = weather_registry()
    out = await answer_of(make, registry, "launch_rockets", "{}")
    assert out == {"error": "unknown tool 'launch_rockets'; available tools: weather"}
    assert seen == []


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ('{"city": "Par', "arguments for tool weather are not valid JSON"),
        ('["Paris"]', "arguments for tool weather must be a JSON object"),
        ("{}", "invalid arguments for tool weather: missing required argument 'city'"),
        ('{"city": 7}', "invalid arguments for tool weather: argument 'city' should be string"),
        ('{"city": "Paris", "unit": "K"}', "invalid arguments for tool weather: argument 'unit'"),
    ],
)
async def test_invalid_arguments_are_answered(make: Make, arguments: str, error: str) -> None:
    registry, seen = weather_registry()
    out = await answer_of(make, registry, "weather", arguments)
    assert out["error"].startswith(error)
    assert seen == []


@pytest.mark.parametrize(
    "arguments",
    [
        '{"city": ' + "[" * 100_000 + "]" * 100_000 + "}",  # deeper than json can parse
        '{"city": "Oslo", "extra": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}",
    ],
    ids=["unparsable-depth", "deep-but-parsable"],
)
async def test_arguments_nested_absurdly_deep_are_answered_with_an_error(
    make: Make, arguments: str
) -> None:
    registry, seen = weather_registry()
    out = await answer_of(make, registry, "weather", arguments)
    assert "error" in out and seen == []


async def test_timeout_is_answered(make: Make) -> None:
    registry = ToolRegistry()
    never = asyncio.Event()
    cancelled = asyncio.Event()

    @registry.register
    async def current_time() -> str:
        """Hangs."""
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "unreachable"

    handler, wire = await make(registry, timeout_s=0.05)
    events, items = call_events("ga", "resp_t", [("call_t", "current_time", "")])
    wire.feed(handler, [*events, response_done("ga", "resp_t", items)])
    await wire.wait_created()
    assert wire.outputs() == {"call_t": {"error": "tool current_time timed out after 0.05 s"}}
    assert cancelled.is_set()
    assert handler.stats.timeouts == 1 and handler.stats.errors == 1


async def test_raising_tool_is_answered(make: Make) -> None:
    registry = ToolRegistry()

    @registry.register
    async def divide(a: int, b: int) -> float:
        """Divide."""
        return a / b

    @registry.register
    async def refuse() -> None:
        """Refuses."""
        raise ToolError("the vault is closed on Sundays")

    out = await answer_of(make, registry, "divide", '{"a": 1, "b": 0}')
    assert out == {"error": "tool divide failed: ZeroDivisionError: division by zero"}
    out = await answer_of(make, registry, "refuse", "{}")
    assert out == {"error": "the vault is closed on Sundays"}


async def test_results_are_serialised(make: Make) -> None:
    registry = ToolRegistry()

    @registry.register
    async def text() -> str:
        """Text."""
        return '"already text"'

    @registry.register
    async def opaque() -> object:
        """Not JSON."""
        return object()

    assert await answer_of(make, registry, "text", "{}") == "already text"
    out = await answer_of(make, registry, "opaque", "{}")
    assert out == {"error": "tool opaque returned a result that is not JSON"}


@pytest.mark.parametrize("status", ["cancelled", "failed", "incomplete"])
async def test_response_not_completed_gets_no_answers(make: Make, status: str) -> None:
    registry = ToolRegistry()
    gate = asyncio.Event()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @registry.register
    async def lookup(q: str) -> str:
        """Looks up."""
        started.set()
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return q

    handler, wire = await make(registry)
    events, items = call_events("ga", "resp_c", [("call_c", "lookup", '{"q": "x"}')])
    wire.feed(handler, events)
    await asyncio.wait_for(started.wait(), WAIT_S)
    wire.feed(handler, [response_done("ga", "resp_c", items, status=status)])
    await asyncio.wait_for(handler.join(), WAIT_S)
    assert wire.sent == []
    assert cancelled.is_set()
    assert handler.stats.dropped == 1 and handler.pending == 0


async def test_item_done_without_arguments_done(make: Make) -> None:
    """A completed function_call item still gets run when its .done event was not seen."""
    registry, _ = weather_registry()
    handler, wire = await make(registry)
    events, items = call_events("ga", "resp_i", [("call_i", "weather", '{"city": "Oslo"}')])
    done_type = _w(ServerEventType.FUNCTION_ARGUMENTS_DONE, "ga")
    wire.feed(handler, [e for e in events if e["type"] != done_type])
    wire.feed(handler, [response_done("ga", "resp_i", items)])
    await wire.wait_created()
    assert wire.outputs()["call_i"]["city"] == "Oslo"


async def test_aclose_cancels_running_tools(make: Make) -> None:
    registry = ToolRegistry()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @registry.register
    async def wait_forever() -> None:
        """Waits."""
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    handler, wire = await make(registry)
    events, items = call_events("ga", "resp_z", [("call_z", "wait_forever", "{}")])
    wire.feed(handler, [*events, response_done("ga", "resp_z", items)])
    await asyncio.wait_for(started.wait(), WAIT_S)
    await asyncio.wait_for(handler.aclose(), WAIT_S)
    assert cancelled.is_set() and wire.sent == []


async def test_non_tool_events_are_ignored(make: Make) -> None:
    registry, _ = weather_registry()
    handler, wire = await make(registry)
    message = {
        "type": _w(ServerEventType.OUTPUT_ITEM_ADDED, "ga"),
        "event_id": _eid(),
        "response_id": "resp_m",
        "output_index": 0,
        "item": {"id": "item_m", "type": "message", "role": "assistant", "content": []},
    }
    wire.feed(handler, [message, response_done("ga", "resp_m", [])])
    await handler.join()
    assert wire.sent == [] and handler.pending == 0


# --- current_time -------------------------------------------------------------------------------


def fixed_clock() -> datetime:
    return datetime(2024, 5, 1, 8, 30, 15, tzinfo=UTC)


async def test_current_time_in_a_zone() -> None:
    tool = current_time_tool(fixed_clock)
    assert await tool.function(timezone="Europe/Paris") == {
        "timezone": "Europe/Paris",
        "datetime": "2024-05-01T10:30:15+02:00",
        "weekday": "Wednesday",
    }
    assert (await tool.function())["datetime"] == "2024-05-01T08:30:15+00:00"
    for bad in ("Mars/Olympus", "../../etc/passwd", ""):
        with pytest.raises(ToolError, match="unknown time zone"):
            await tool.function(timezone=bad)


async def test_current_time_real_clock_is_aware() -> None:
    out = await current_time_tool().function(timezone="America/New_York")
    parsed = datetime.fromisoformat(out["datetime"])
    assert parsed.tzinfo is not None
    assert abs((parsed - datetime.now(UTC)).total_seconds()) < 60


async def test_enabled_tools_end_to_end_through_settings(make: Make) -> None:
    settings = load_settings({"tools": "current_time", "tool_timeout_s": "5"})
    registry = build_registry(settings, clock=fixed_clock)
    handler, wire = await make(registry, "beta", timeout_s=settings.tool_timeout_s)
    events, items = call_events(
        "beta",
        "resp_e",
        [
            ("c1", "current_time", '{"timezone": "Asia/Tokyo"}'),
            ("c2", "current_time", '{"timezone": "X/Y"}'),
        ],
    )
    wire.feed(handler, [*events, response_done("beta", "resp_e", items)])
    await wire.wait_created()
    outputs = wire.outputs()
    assert outputs["c1"]["datetime"] == "2024-05-01T17:30:15+09:00"
    assert outputs["c2"]["error"].startswith("unknown time zone 'X/Y'")
    assert handler.stats.calls == 2 and handler.stats.errors == 1


# --- settings -----------------------------------------------------------------------------------


def test_tool_settings_from_cli_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().tools == [] and len(build_registry(load_settings())) == 0
    s = load_settings({"tools": "current_time, http_get", "http_allowlist": "API.example.com."})
    assert s.tools == ["current_time", "http_get"] and s.http_allowlist == ["api.example.com"]
    monkeypatch.setenv("VOICEBOT_TOOLS", '["http_get"]')
    assert load_settings().tools == ["http_get"]
    monkeypatch.setenv("VOICEBOT_TOOLS", "current_time,current_time")
    assert build_registry(load_settings()).names() == ["current_time"]
    monkeypatch.setenv("VOICEBOT_HTTP_ALLOWLIST", "a.example,b.example")
    assert load_settings().http_allowlist == ["a.example", "b.example"]
    from realtime_voicebot.config import SettingsError

    with pytest.raises(SettingsError, match="tools"):
        load_settings({"tools": "rm_rf"})
    with pytest.raises(SettingsError, match="not a host name"):
        load_settings({"http_allowlist": "https://example.com/"})


# --- http_get -----------------------------------------------------------------------------------

PUBLIC = "93.184.216.34"


class Net:
    """A fake network: a resolver table and an httpx.MockTransport answering per Host."""

    def __init__(self, dns: dict[str, list[str]]) -> None:
        self.dns = dns
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = {}
        self.transport = httpx.MockTransport(self._handle)

    async def resolve(self, host: str, port: int) -> list[str]:
        assert port == 443
        if host not in self.dns:
            raise OSError("no such host")
        return self.dns[host]

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.headers["host"], request.url.path))
        return route(request) if route else httpx.Response(404, text="not found")

    def tool(self, allowlist: list[str], **kw: Any) -> Tool:
        return http_get_tool(allowlist, transport=self.transport, resolver=self.resolve, **kw)


async def test_http_get_fetches_from_the_checked_address() -> None:
    net = Net({"example.com": [PUBLIC]})
    net.routes[("example.com", "/page")] = lambda r: httpx.Response(
        200, text="héllo", headers={"content-type": "text/plain; charset=utf-8"}
    )
    out = await net.tool(["example.com"]).function(url="https://Example.com/page?q=1#frag")
    assert out == {
        "url": "https://example.com/page?q=1",
        "status": 200,
        "content_type": "text/plain; charset=utf-8",
        "body": "héllo",
        "truncated": False,
    }
    (request,) = net.requests
    assert request.url.host == PUBLIC  # pinned to the address that was checked
    assert request.headers["host"] == "example.com"
    assert request.extensions["sni_hostname"] == "example.com"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://example.com/", "only https"),
        ("file:///etc/passwd", "only https"),
        ("ftp://example.com/", "only https"),
        ("https://evil.example/", "not on the allowlist"),
        ("https://example.com.evil.example/", "not on the allowlist"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://example.com:8443/", "default https port"),
        ("not a url", "only https"),
    ],
)
async def test_http_get_rejects_urls(url: str, error: str) -> None:
    net = Net({"example.com": [PUBLIC], "evil.example": [PUBLIC]})
    with pytest.raises(ToolError, match=error):
        await net.tool(["example.com"]).function(url=url)
    assert net.requests == []


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.5"],
        ["127.0.0.1"],
        ["169.254.169.254"],
        ["192.168.1.1"],
        ["100.64.0.1"],
        ["0.0.0.0"],
        ["::1"],
        ["fe80::1%eth0"],
        ["fd00::1"],
        ["::ffff:127.0.0.1"],
        [PUBLIC, "10.0.0.1"],
    ],
)
async def test_http_get_rejects_private_addresses(addresses: list[str]) -> None:
    net = Net({"example.com": addresses})
    with pytest.raises(ToolError, match="private or local"):
        await net.tool(["example.com"]).function(url="https://example.com/")
    assert net.requests == []


async def test_http_get_rejects_literal_private_ip_and_unresolvable_host() -> None:
    net = Net({})
    with pytest.raises(ToolError, match="private or local"):
        await net.tool(["127.0.0.1"]).function(url="https://127.0.0.1/")
    with pytest.raises(ToolError, match="cannot resolve"):
        await net.tool(["nowhere.example"]).function(url="https://nowhere.example/")
    assert net.requests == []


def test_public_addresses() -> None:
    assert is_public_address(PUBLIC) and is_public_address("2606:4700:4700::1111")
    assert not is_public_address("224.0.0.1") and not is_public_address("::ffff:10.1.2.3")


async def test_system_resolver_on_a_literal() -> None:
    assert "127.0.0.1" in await system_resolver("127.0.0.1", 443)


def redirect(location: str, status: int = 302) -> Callable[[httpx.Request], httpx.Response]:
    return lambda r: httpx.Response(status, headers={"location": location})


async def test_http_get_follows_redirects_on_the_allowlist_only() -> None:
    net = Net({"a.example": [PUBLIC], "b.example": ["93.184.216.35"], "evil.example": [PUBLIC]})
    net.routes[("a.example", "/start")] = redirect("https://b.example/next")
    net.routes[("b.example", "/next")] = redirect("/final", 301)
    net.routes[("b.example", "/final")] = lambda r: httpx.Response(200, json={"ok": True})
    out = await net.tool(["a.example", "b.example"]).function(url="https://a.example/start")
    assert out["url"] == "https://b.example/final" and json.loads(out["body"]) == {"ok": True}
    assert [r.headers["host"] for r in net.requests] == ["a.example", "b.example", "b.example"]

    net.requests.clear()
    net.routes[("a.example", "/off")] = redirect("https://evil.example/steal")
    with pytest.raises(ToolError, match=r"evil\.example is not on the allowlist"):
        await net.tool(["a.example"]).function(url="https://a.example/off")
    net.routes[("a.example", "/plain")] = redirect("http://a.example/x")
    with pytest.raises(ToolError, match="only https"):
        await net.tool(["a.example"]).function(url="https://a.example/plain")
    assert [r.headers["host"] for r in net.requests] == ["a.example", "a.example"]


async def test_http_get_redirect_to_a_private_address_and_loops() -> None:
    net = Net({"a.example": [PUBLIC], "internal.example": ["10.1.2.3"]})
    net.routes[("a.example", "/in")] = redirect("https://internal.example/admin")
    tool = net.tool(["a.example", "internal.example"], max_redirects=3)
    with pytest.raises(ToolError, match="private or local"):
        await tool.function(url="https://a.example/in")
    net.routes[("a.example", "/loop")] = redirect("/loop")
    with pytest.raises(ToolError, match="too many redirects"):
        await tool.function(url="https://a.example/loop")
    assert len(net.requests) == 1 + 4


async def test_http_get_caps_the_body() -> None:
    net = Net({"example.com": [PUBLIC]})
    big = "é" * 40_000  # 80,000 bytes of UTF-8
    net.routes[("example.com", "/big")] = lambda r: httpx.Response(
        200, content=big.encode(), headers={"content-type": "text/plain; charset=utf-8"}
    )
    out = await net.tool(["example.com"], max_bytes=1001).function(url="https://example.com/big")
    assert out["truncated"] is True
    assert out["body"] == "é" * 500 + "\n[truncated at 1001 bytes]"  # no half character


async def test_http_get_hides_binary_and_reports_errors() -> None:
    net = Net({"example.com": [PUBLIC]})
    net.routes[("example.com", "/img")] = lambda r: httpx.Response(
        200, content=b"\x89PNG" * 100, headers={"content-type": "image/png"}
    )

    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    net.routes[("example.com", "/down")] = boom
    tool = net.tool(["example.com"])
    out = await tool.function(url="https://example.com/img")
    assert out["body"] == "[image/png content not shown]"
    out = await tool.function(url="https://example.com/missing")
    assert out["status"] == 404 and out["body"] == "not found"
    with pytest.raises(ToolError, match=r"request to example\.com failed: ConnectError"):
        await tool.function(url="https://example.com/down")


async def test_http_get_through_the_handler(make: Make) -> None:
    net = Net({"example.com": [PUBLIC]})
    net.routes[("example.com", "/")] = lambda r: httpx.Response(200, text="hi")
    settings = load_settings({"tools": "http_get", "http_allowlist": "example.com"})
    registry = build_registry(settings, http_transport=net.transport, resolver=net.resolve)
    assert "example.com" in registry.specs()[0]["description"]
    handler, wire = await make(registry)
    events, items = call_events(
        "ga",
        "resp_h",
        [
            ("h1", "http_get", '{"url": "https://example.com/"}'),
            ("h2", "http_get", '{"url": "https://169.254.169.254/latest/meta-data"}'),
        ],
    )
    wire.feed(handler, [*events, response_done("ga", "resp_h", items)])
    await wire.wait_created()
    outputs = wire.outputs()
    assert outputs["h1"]["body"] == "hi"
    assert outputs["h2"] == {"error": "host 169.254.169.254 is not on the allowlist (example.com)"}
