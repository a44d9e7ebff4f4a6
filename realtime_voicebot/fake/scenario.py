"""What the fake user says and what the fake model answers, in order.

A scenario is JSON::

    {"user_transcripts": ["Hi there.", "Book a table for two."],
     "replies": ["Hello!", {"tool_call": {"name": "book", "arguments": {"people": 2}}}, "Done."]}

A reply ``{"tool_calls": [{"name": ..., "arguments": {...}}, ...]}`` (a tuple of `ToolCall` in
Python) is one response holding several function calls, as the service sends parallel calls.

A reply ``{"mcp_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}`` (an
`McpCall`) makes the response call a hosted MCP tool of the session (GA): optional keys
``server_label`` (default: the session's first MCP server), ``output`` (default: the fake
tool's own answer, see `fake.mcp`), ``error`` (the call fails with this message) and ``say``
(what the model says after it; default: the result read out). With approval required the
response ends at the approval request; the client's ``mcp_approval_response`` starts the rest
(see `fake.mcp`).

or plain text, one line each, ``#`` for comments::

    user: Hi there.
    assistant: Hello!
    tool: book {"people": 2}
    mcp: get_weather {"city": "Paris"}

The Nth committed user utterance is transcribed as the Nth user line; the Nth response gives
the Nth reply. When the lines run out, utterances become ``[speech 1.8 s]`` and replies echo
the last user item (``You said: …``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realtime_voicebot.errors import UserError

DEFAULT_GREETING = "Hello! I am the fake Realtime server. Say something."


class ScenarioError(UserError, ValueError):
    """A scenario file or object that does not have the expected shape."""


@dataclass(frozen=True)
class ToolCall:
    """A reply that is a function call instead of speech."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class McpCall:
    """A reply that calls a hosted MCP tool (GA), then speaks about the result."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    server_label: str | None = None
    """None: the first MCP server of the session."""
    output: str | None = None
    """None: the fake tool's own answer (`fake.mcp.run_tool`)."""
    error: str | None = None
    """Set: the call fails (``response.mcp_call.failed``) with this message."""
    say: str | None = None
    """What the model says after the call; None: the result read out."""

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"), ensure_ascii=False)


Reply = str | ToolCall | tuple[ToolCall, ...] | McpCall
"""Speech (or text), one function call, several calls in one response, or an MCP call."""


def reply_calls(reply: Reply) -> tuple[ToolCall, ...]:
    """The function calls of a reply; () for speech."""
    if isinstance(reply, ToolCall):
        return (reply,)
    return reply if isinstance(reply, tuple) else ()


def _call_from(call: Any, where: str) -> ToolCall:
    if not isinstance(call, dict):
        raise ScenarioError(f"{where}: a tool call must be an object")
    name, arguments = call.get("name"), call.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"{where}: tool_call.name must be a non-empty string")
    if not isinstance(arguments, dict):
        raise ScenarioError(f"{where}: tool_call.arguments must be an object")
    return ToolCall(name, arguments)


def _mcp_call_from(call: Any, where: str) -> McpCall:
    if not isinstance(call, dict):
        raise ScenarioError(f"{where}: mcp_call must be an object")
    unknown = set(call) - {"name", "arguments", "server_label", "output", "error", "say"}
    if unknown:
        raise ScenarioError(f"{where}: unknown mcp_call keys: {', '.join(sorted(unknown))}")
    base = _call_from({"name": call.get("name"), "arguments": call.get("arguments", {})}, where)
    optional: dict[str, str | None] = {}
    for key in ("server_label", "output", "error", "say"):
        value = call.get(key)
        if value is not None and not isinstance(value, str):
            raise ScenarioError(f"{where}: mcp_call.{key} must be a string")
        optional[key] = value
    return McpCall(base.name, base.arguments, **optional)


def _reply_from(value: Any, where: str) -> Reply:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "mcp_call" in value:
        return _mcp_call_from(value["mcp_call"], where)
    if isinstance(value, dict) and isinstance(value.get("tool_call"), dict):
        return _call_from(value["tool_call"], where)
    calls = value.get("tool_calls") if isinstance(value, dict) else None
    if isinstance(calls, list) and calls:
        return tuple(_call_from(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(calls))
    raise ScenarioError(
        f'{where}: expected a string, {{"tool_call": {{...}}}}, {{"tool_calls": [...]}} or '
        f'{{"mcp_call": {{...}}}}'
    )


@dataclass
class Scenario:
    user_transcripts: list[str] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any) -> Scenario:
        if not isinstance(data, dict):
            raise ScenarioError("a scenario must be a JSON object")
        unknown = set(data) - {"user_transcripts", "replies"}
        if unknown:
            raise ScenarioError(f"unknown scenario keys: {', '.join(sorted(unknown))}")
        transcripts = data.get("user_transcripts", [])
        replies = data.get("replies", [])
        if not isinstance(transcripts, list) or not all(isinstance(t, str) for t in transcripts):
            raise ScenarioError("user_transcripts must be a list of strings")
        if not isinstance(replies, list):
            raise ScenarioError("replies must be a list")
        return cls(
            list(transcripts), [_reply_from(r, f"replies[{i}]") for i, r in enumerate(replies)]
        )

    @classmethod
    def from_text(cls, text: str) -> Scenario:
        scenario = cls()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            speaker, sep, rest = line.partition(":")
            speaker, rest = speaker.strip().lower(), rest.strip()
            if not sep:
                raise ScenarioError(
                    f"line {number}: expected 'user: …', 'assistant: …', 'tool: …' or 'mcp: …'"
                )
            if speaker == "user":
                scenario.user_transcripts.append(rest)
            elif speaker in ("assistant", "bot"):
                scenario.replies.append(rest)
            elif speaker in ("tool", "mcp"):
                name, _, arguments = rest.partition(" ")
                try:
                    parsed = json.loads(arguments) if arguments.strip() else {}
                except ValueError as exc:
                    raise ScenarioError(f"line {number}: tool arguments are not JSON") from exc
                key = "tool_call" if speaker == "tool" else "mcp_call"
                scenario.replies.append(
                    _reply_from({key: {"name": name, "arguments": parsed}}, f"line {number}")
                )
            else:
                raise ScenarioError(f"line {number}: unknown speaker {speaker!r}")
        return scenario

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """A scenario from a ``.json`` file, or from the line format otherwise."""
        text = Path(path).read_text(encoding="utf-8")
        if Path(path).suffix.lower() == ".json" or text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ScenarioError(f"{path}: not valid JSON ({exc})") from exc
            return cls.from_dict(data)
        return cls.from_text(text)


class ScenarioCursor:
    """Hands out the scenario's lines in order, then the defaults."""

    def __init__(self, scenario: Scenario | None) -> None:
        self.scenario = scenario or Scenario()
        self.utterances = 0
        self.responses = 0

    def next_transcript(self, audio_ms: float) -> str:
        index = self.utterances
        self.utterances += 1
        if index < len(self.scenario.user_transcripts):
            return self.scenario.user_transcripts[index]
        return f"[speech {audio_ms / 1000:.1f} s]"

    def next_reply(self, last_user_text: str | None, fallback: str = DEFAULT_GREETING) -> Reply:
        """The next scripted reply; past the script, an echo of the last user words, else
        ``fallback``."""
        index = self.responses
        self.responses += 1
        if index < len(self.scenario.replies):
            return self.scenario.replies[index]
        if last_user_text:
            return f"You said: {last_user_text}"
        return fallback
