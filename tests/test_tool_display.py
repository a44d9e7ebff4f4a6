"""Tool calls in the console: the core's tool actions through `ToolDisplay` into each view
(plain lines, JSON lines, the live console, the recording view), redacted and cut, and the
per-tool counts of the session summary."""

from __future__ import annotations

import io
import json
from typing import Any

from realtime_voicebot.core import actions as a
from realtime_voicebot.testing import RecordingView
from realtime_voicebot.tool_display import ARGUMENT_CHARS, ToolDisplay
from realtime_voicebot.ui import JsonLinesView, LiveView, PlainView, summary_lines

from .test_ui import rendered, terminal

ACTIONS: list[a.Action] = [
    a.ToolCallStarted("c1", "notes__add", '{"a": 2,\n "b": 3}'),
    a.ToolCallFinished("c1", "notes__add", "ok", 1, 0.034),
    a.ToolCallStarted("c2", "current_time", "{}"),
    a.ToolCallFinished(
        "c2",
        "current_time",
        "timeout",
        60,
        10.0,
        "tool current_time timed out after 10 s",
    ),
    a.ToolCallStarted("c3", "notes__send", json.dumps({"to": "ann@example.com", "b": "x" * 300})),
    a.ToolCallFinished("c3", "notes__send", "error", 80, 0.5, "mail to ann@example.com bounced"),
    a.HostedToolsListed("home", ("get_weather", "send_message"), True),
    a.HostedToolsListed("down", (), False),
    a.ApprovalRequested("ap1", "home", "send_message", '{"to":"Ann"}', 30.0),
    a.ApprovalAnswered("ap1", "home", "send_message", True, "user"),
    a.HostedCallStarted("m1", "home", "send_message", '{"to":"Ann"}'),
    a.HostedCallFinished("m1", "home", "send_message", True, 20),
    a.ApprovalRequested("ap2", "home", "send_message", "{}", 30.0),
    a.ApprovalAnswered("ap2", "home", "send_message", False, "timeout"),
]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def show_all(view: Any) -> ToolDisplay:
    display = ToolDisplay(view, mcp_servers={"notes"}, clock=Clock())
    assert all(display.show(action) for action in ACTIONS)
    assert not display.show(a.Notice("not about tools"))
    return display


def test_names_are_split_by_the_configured_servers_only() -> None:
    display = ToolDisplay(RecordingView(), mcp_servers={"notes"})
    assert display.split("notes__add") == ("notes", "add")
    assert display.split("notes__a__b") == ("notes", "a__b")
    assert display.split("my__tool") == (None, "my__tool")  # a user tool with __ in its name
    assert display.split(None) == (None, "?")


def test_the_recording_view_gets_everything_ready_to_show() -> None:
    view = RecordingView()
    show_all(view)
    first, timeout, failed = view.tool_calls[:3]
    assert (first.server, first.name, first.arguments) == ("notes", "add", '{"a": 2, "b": 3}')
    assert (timeout.server, timeout.name) == (None, "current_time")
    assert "ann@example.com" not in failed.arguments and "[email]" in failed.arguments
    assert len(failed.arguments) == ARGUMENT_CHARS and failed.arguments.endswith("…")
    results = [(c.call_id, r.outcome, r.duration_s, r.output_chars) for c, r in view.tool_results]
    assert results == [
        ("c1", "ok", 0.034, 1),
        ("c2", "timeout", 10.0, 60),
        ("c3", "error", 0.5, 80),
        ("m1", "ok", 0.25, 20),  # the hosted call, timed by the display
    ]
    assert view.tool_results[2][1].error == "mail to [email] bounced"
    assert view.tool_calls[3].hosted and view.tool_calls[3].title == "home.send_message (hosted)"
    assert [(x.server, x.tools, x.problem) for x in view.listings] == [
        ("home", ("get_weather", "send_message"), None),
        ("down", (), "the service could not list them"),
    ]
    assert [(r.request_id, ok, how) for r, ok, how in view.approval_answers] == [
        ("ap1", True, "user"),
        ("ap2", False, "timeout"),
    ]


def test_plain_lines() -> None:
    out, err = io.StringIO(), io.StringIO()
    show_all(PlainView(out, err))
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        '-- tool notes.add {"a": 2, "b": 3} …',
        "-- tool notes.add: ok, 1 chars in 0.03 s",
        "-- tool current_time {} …",
        "-- tool current_time: timed out in 10.00 s: tool current_time timed out after 10 s",
    ]
    assert lines[5] == "-- tool notes.send: failed in 0.50 s: mail to [email] bounced"
    assert lines[6:] == [
        "-- hosted MCP server home: 2 tools (get_weather, send_message)",
        "-- hosted MCP server down: no tools (the service could not list them)",
        '-- approve home.send_message {"to":"Ann"}? type y or n (no answer in 30 s is no)',
        "-- approved home.send_message",
        '-- tool home.send_message (hosted) {"to":"Ann"} …',
        "-- tool home.send_message (hosted): ok, 20 chars in 0.25 s",
        "-- approve home.send_message {}? type y or n (no answer in 30 s is no)",
        "-- refused home.send_message (no answer in time)",
    ]
    assert "ann@example.com" not in out.getvalue() and err.getvalue() == ""


def test_json_lines() -> None:
    out, err = io.StringIO(), io.StringIO()
    show_all(JsonLinesView(out, err))
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in records[:2]] == ["tool_call", "tool_result"]
    assert {k: records[1][k] for k in ("tool", "server", "hosted", "outcome", "output_chars")} == {
        "tool": "add",
        "server": "notes",
        "hosted": False,
        "outcome": "ok",
        "output_chars": 1,
    }
    assert records[3]["outcome"] == "timeout" and records[3]["duration_s"] == 10.0
    kinds = [r["event"] for r in records]
    assert kinds.count("tools_listed") == 2 and kinds.count("approval_request") == 2
    approvals = [r for r in records if r["event"] == "approval"]
    assert [(r["approved"], r["how"]) for r in approvals] == [(True, "user"), (False, "timeout")]
    assert "ann@example.com" not in out.getvalue()


def test_live_console_updates_a_call_line_in_place() -> None:
    console, _ = terminal()
    view = LiveView(console, max_turns=20, refresh_per_second=20)
    try:
        display = ToolDisplay(view, mcp_servers={"notes"})
        display.show(ACTIONS[0])
        assert '⚙ tool notes.add {"a": 2, "b": 3} …' in rendered(view, console)
        display.show(ACTIONS[1])
        for action in ACTIONS[8:10]:
            display.show(action)
        screen = rendered(view, console)
    finally:
        view.close()
    assert "⚙ tool notes.add: ok, 1 chars in 0.03 s" in screen
    assert '{"a": 2, "b": 3} …' not in screen  # replaced, not added
    assert "? approved home.send_message" in screen
    assert "type y or n" not in screen


def test_summary_counts_calls_per_tool_and_hosted_approvals() -> None:
    data = {
        "parts": {
            "tools": {
                "calls": 3,
                "errors": 2,
                "timeouts": 1,
                "by_tool": {
                    "notes__add": {"calls": 1, "errors": 0, "timeouts": 0},
                    "notes__hang": {"calls": 2, "errors": 2, "timeouts": 1},
                },
            },
            "core": {"hosted_mcp": {"calls": 1, "approved": 1, "refused": 1, "timed_out": 0}},
        }
    }
    lines = summary_lines(data)
    assert (
        "tools: 3 calls, 2 errors, 1 timeouts; notes__add 1, notes__hang 2 (2 errors, 1 timeouts)"
        in lines
    )
    assert "hosted MCP: 1 calls, 0 errors; approvals 1 yes, 1 no, 0 unanswered" in lines
    assert not [line for line in summary_lines({}) if "tools" in line or "hosted" in line]
