"""Function calling end to end: the real app runs the fake model's calls and answers them.

The fake server is scripted to reply with function calls; the app (client, dispatcher,
ToolCallHandler) must answer each with a ``function_call_output`` carrying the call's
``call_id``, then one ``response.create``, and the fake then produces the next reply.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.fake.scenario import Reply, Scenario, ToolCall
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.testing import scaled
from realtime_voicebot.tools import Tool

from .app_harness import Running, fake_config, settings_for, start_bot
from .spec import validate_client, validate_server


class Lookup:
    """A `lookup(city)` tool whose calls the test can hold back and release."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.started = asyncio.Event()
        self.cancelled = 0
        self.cancelled_event = asyncio.Event()
        self.gates: dict[str, asyncio.Event] = {}

    def tool(self) -> Tool:
        async def lookup(city: str) -> dict[str, Any]:
            """The weather in a city."""
            self.calls.append(city)
            self.started.set()
            gate = self.gates.get(city)
            try:
                if gate is not None:
                    await gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                self.cancelled_event.set()
                raise
            return {"city": city, "sky": "clear"}

        return Tool.from_function(lookup)


async def start(
    server: FakeRealtimeServer, tmp_path: Path, tools: list[Tool], **settings: Any
) -> tuple[Running, asyncio.Queue[str | None]]:
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    options = RunOptions(text=True, text_lines=lines, extra_tools=tools)
    running = start_bot(server, settings_for(server, tmp_path, **settings), options)
    return running, lines


def replies_done(session: FakeSession, text: str) -> bool:
    """The assistant message ``text`` is in the conversation and no response is running."""
    return session.active_response is None and any(
        item.type == "message" and item.role == "assistant" and item.text == text
        for item in session.items
    )


def client_events(session: FakeSession) -> list[dict[str, Any]]:
    """Every client event the app sent, each validated against the SDK's union."""
    for event in session.received:
        validate_client(event, session.dialect)
    return list(session.received)


def calls_sent(session: FakeSession) -> list[tuple[str, str]]:
    """(call_id, name) of every function call the server sent, in output order."""
    found = []
    for event in session.sent:
        item = event.get("item") or {}
        if event["type"] == "response.output_item.done" and item.get("type") == "function_call":
            found.append((item["call_id"], item["name"]))
    return found


def outputs_of(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(call_id, parsed output) of each function_call_output the app created, in order."""
    found = []
    for event in events:
        item = event.get("item") or {}
        if event["type"] == "conversation.item.create" and item.get("type") == (
            "function_call_output"
        ):
            assert set(event) == {"type", "event_id", "item"}
            assert set(item) == {"type", "call_id", "output"}
            found.append((item["call_id"], json.loads(item["output"])))
    return found


def after_first_user_message(events: list[dict[str, Any]]) -> list[str]:
    """Client event types from the typed user message on (session.update etc. left out)."""
    kinds = [e["type"] for e in events]
    first = next(
        i
        for i, e in enumerate(events)
        if e["type"] == "conversation.item.create" and e["item"].get("role") == "user"
    )
    return kinds[first:]


def config_for(replies: list[Reply]) -> Any:
    return fake_config(speed=50.0, scenario=Scenario(replies=replies))


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_call_is_answered_and_the_next_reply_follows(tmp_path: Path, dialect: str) -> None:
    lookup = Lookup()
    replies: list[Reply] = [ToolCall("lookup", {"city": "Paris"}), "Clear skies in Paris."]
    async with FakeRealtimeServer(config_for(replies)) as server:
        running, lines = await start(server, tmp_path, [lookup.tool()], dialect=dialect)
        session = await running.session(1)
        await lines.put("weather in Paris?")
        await running.wait_for(lambda: replies_done(session, "Clear skies in Paris."))
        assert await running.stop() == 0

    assert session.dialect == dialect
    for event in session.sent:
        validate_server(event, dialect)
    events = client_events(session)
    assert after_first_user_message(events) == [
        "conversation.item.create",  # the typed line
        "response.create",
        "conversation.item.create",  # the function_call_output
        "response.create",  # after the output: the reply about it
    ]
    [(call_id, name)] = calls_sent(session)
    assert name == "lookup" and lookup.calls == ["Paris"]
    assert outputs_of(events) == [(call_id, {"city": "Paris", "sky": "clear"})]
    kinds = [(item.type, item.role) for item in session.items]
    assert kinds == [
        ("message", "user"),
        ("function_call", None),
        ("function_call_output", None),
        ("message", "assistant"),
    ]
    # The tool's schema reached the session.
    tools = events[0]["session"]["tools"]
    assert [t["name"] for t in tools] == ["lookup"]
    assert running.view.assistant[-1][1] == "Clear skies in Paris."
    assert running.bot.snapshot()["app"]["core_errors"] == 0
    assert running.bot.core.tool_calls.stats.outputs_sent == 1


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_two_calls_in_one_response_then_one_response_create(
    tmp_path: Path, dialect: str
) -> None:
    lookup = Lookup()
    # The first call finishes last: its output still comes first, and one response.create
    # follows both.
    lookup.gates["Paris"] = asyncio.Event()
    two = (ToolCall("lookup", {"city": "Paris"}), ToolCall("lookup", {"city": "Rome"}))
    async with FakeRealtimeServer(config_for([two, "Clear in both."])) as server:
        running, lines = await start(server, tmp_path, [lookup.tool()], dialect=dialect)
        session = await running.session(1)
        await lines.put("Paris and Rome?")
        await running.wait_for(lambda: "response.done" in session.sent_types())
        state, first_id = running.bot.core.conversation, session.responses[0].id
        # Rome's call ends (Paris' waits at its gate): that reaches the core and wakes `until`.
        await running.until(
            lambda: (
                lookup.calls == ["Paris", "Rome"] and state.responses.get(first_id) == "completed"
            )
        )
        lookup.gates["Paris"].set()
        await running.wait_for(lambda: replies_done(session, "Clear in both."))
        assert await running.stop() == 0

    for event in session.sent:
        validate_server(event, dialect)
    done = next(e for e in session.sent if e["type"] == "response.done")
    assert [o["type"] for o in done["response"]["output"]] == ["function_call"] * 2
    events = client_events(session)
    assert after_first_user_message(events) == [
        "conversation.item.create",
        "response.create",
        "conversation.item.create",
        "conversation.item.create",
        "response.create",
    ]
    (paris_id, _), (rome_id, _) = calls_sent(session)
    assert paris_id != rome_id
    assert outputs_of(events) == [
        (paris_id, {"city": "Paris", "sky": "clear"}),
        (rome_id, {"city": "Rome", "sky": "clear"}),
    ]
    assert len(session.responses) == 2


async def test_unknown_tool_gets_an_error_output_and_the_run_goes_on(tmp_path: Path) -> None:
    lookup = Lookup()
    replies: list[Reply] = [ToolCall("book_flight", {"to": "Oslo"}), "I cannot book flights."]
    async with FakeRealtimeServer(config_for(replies)) as server:
        running, lines = await start(server, tmp_path, [lookup.tool()])
        session = await running.session(1)
        await lines.put("book me a flight to Oslo")
        await running.wait_for(lambda: replies_done(session, "I cannot book flights."))
        await lines.put("thanks")
        await running.wait_for(lambda: replies_done(session, "You said: thanks"))
        assert await running.stop() == 0

    events = client_events(session)
    [(call_id, _)] = calls_sent(session)
    [(answered, output)] = outputs_of(events)
    assert answered == call_id
    assert output["error"] == "unknown tool 'book_flight'; available tools: lookup"
    assert lookup.calls == []
    tools = running.bot.core.tool_calls
    assert tools.stats.errors == 1 and tools.pending == 0
    assert running.bot.snapshot()["app"]["core_errors"] == 0 and not running.view.errors


async def test_tool_timing_out_is_answered_with_an_error(tmp_path: Path) -> None:
    lookup = Lookup()
    lookup.gates["Atlantis"] = asyncio.Event()  # never set: the call hangs
    replies: list[Reply] = [ToolCall("lookup", {"city": "Atlantis"}), "That took too long."]
    async with FakeRealtimeServer(config_for(replies)) as server:
        running, lines = await start(server, tmp_path, [lookup.tool()], tool_timeout_s=0.2)
        session = await running.session(1)
        await lines.put("weather in Atlantis?")
        await running.wait_for(lambda: replies_done(session, "That took too long."))
        assert await running.stop() == 0

    events = client_events(session)
    [(call_id, _)] = calls_sent(session)
    assert outputs_of(events) == [(call_id, {"error": "tool lookup timed out after 0.2 s"})]
    assert after_first_user_message(events)[-2:] == ["conversation.item.create", "response.create"]
    assert lookup.cancelled == 1
    assert running.bot.core.tool_calls.stats.timeouts == 1


async def test_reconnect_drops_the_calls_of_the_dead_session(tmp_path: Path) -> None:
    lookup = Lookup()
    lookup.gates["Paris"] = asyncio.Event()
    replies: list[Reply] = [ToolCall("lookup", {"city": "Paris"}), "Hello again."]
    async with FakeRealtimeServer(config_for(replies)) as server:
        running, lines = await start(server, tmp_path, [lookup.tool()])
        first = await running.session(1)
        await lines.put("weather in Paris?")
        await running.wait_for(lambda: "response.done" in first.sent_types())
        await asyncio.wait_for(lookup.started.wait(), scaled(5))
        tools, client = running.bot.core.tool_calls, running.bot.client
        assert client is not None
        state, first_id = running.bot.core.conversation, first.responses[0].id
        await running.until(lambda: state.responses.get(first_id) == "completed")
        assert tools.pending == 1
        await server.drop_connection()
        second = await running.session(2)
        await running.until(
            lambda: client.connected and client.session is not None and client.session.number == 2
        )
        # The call of the dead session is forgotten and its tool cancelled.
        assert tools.pending == 0 and tools.stats.dropped == 1
        await asyncio.wait_for(lookup.cancelled_event.wait(), scaled(5))
        assert lookup.cancelled == 1
        lookup.gates["Paris"].set()  # too late: nothing may reach the new session for it
        await lines.put("are you there?")
        await running.wait_for(lambda: replies_done(second, "Hello again."))
        assert await running.stop() == 0

    events = client_events(second)
    assert outputs_of(events) == []
    assert [e["type"] for e in events].count("response.create") == 1
    assert running.bot.summary()["reconnects"] == 1


async def test_fake_sends_parallel_calls_in_one_response(tmp_path: Path) -> None:
    """The fake server's own shape for several calls, checked against the SDK's union."""
    two = (ToolCall("a", {"x": 1}), ToolCall("b", {}))
    scenario = Scenario.from_dict(
        {"replies": [{"tool_calls": [{"name": "a", "arguments": {"x": 1}}, {"name": "b"}]}]}
    )
    assert scenario.replies == [two]
    async with FakeRealtimeServer(fake_config(scenario=scenario)) as server:
        running, lines = await start(server, tmp_path, [])
        session = await running.session(1)
        await lines.put("go")
        await running.wait_for(lambda: len(session.responses) == 2 and not session.active_response)
        assert await running.stop() == 0
    first = [e for e in session.sent if e.get("response_id") == session.responses[0].id]
    for event in session.sent:
        validate_server(event, "ga")
    added = [e for e in first if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["name"]) for e in added] == [(0, "a"), (1, "b")]
    # Unknown tools, both answered with errors before one response.create.
    outputs = outputs_of(client_events(session))
    assert [o["error"].split(";")[0] for _, o in outputs] == [
        "unknown tool 'a'",
        "unknown tool 'b'",
    ]
