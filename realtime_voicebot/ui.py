"""How the conversation is shown: a live console (rich), plain lines, or JSON lines.

The app calls a `ConversationView`; it never prints by itself. Every method is called on the
event loop and must return at once: the live console only records what it is told, and
rich's own refresh thread draws it ~8 times a second.

Everything a view shows passes through `shown` first: terminal escape sequences and other
control characters are removed (a server's message cannot move the cursor, recolour or
retitle the terminal), and keys, e-mails, card and phone numbers are redacted
(`realtime_voicebot.redact`), whatever the app hands over.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from realtime_voicebot.redact import redact

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

    from realtime_voicebot.tool_display import (
        ApprovalShown,
        ToolCallShown,
        ToolListing,
        ToolResultShown,
    )

INTERRUPTED_MARK = "…⟂ (interrupted)"
LATENCY_LABELS = {
    "speech_end_to_first_delta": "speech end→audio",
    "first_delta_to_first_sample": "first audio→played",
    "barge_in_to_silence": "barge-in→silence",
}
"""Latencies the live console shows, by metric name (see `realtime_voicebot.metrics`)."""


MAX_NOTE_CHARS = 2000
"""Longest notice or error line shown (a server's message can be any length)."""

_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: cursor, colour, erase
    r"|(?:\x1b[\]P^_X]|[\x90\x98\x9d-\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC, DCS...
    r"|\x1b[ -/]*[0-~]?"  # any other escape
)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls but tab and newline, and the bidirectional overrides that can make a
line read otherwise than it is."""


_SURROGATE = re.compile("[\ud800-\udfff]")
"""Half a UTF-16 pair (JSON may carry one, "\\ud800"): no terminal can print it."""


def strip_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` without escape sequences and control characters; tabs (and newlines unless
    ``keep_newlines``) become spaces, a lone surrogate the replacement character."""
    text = _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", text))
    text = _SURROGATE.sub("\ufffd", text)
    text = text.replace("\t", " ")
    return text if keep_newlines else text.replace("\n", " ")


def shown(text: object, *, keep_newlines: bool = False, max_chars: int | None = None) -> str:
    """What a view may show of ``text``: controls stripped, then redacted, then cut."""
    cleaned = redact(strip_controls(str(text), keep_newlines=keep_newlines))
    if max_chars is not None and len(cleaned) > max_chars:
        cleaned = cleaned[: max_chars - 1] + "…"
    return cleaned


def shown_value(value: Any) -> Any:
    """`shown` applied to every string of a JSON-like value, keys included."""
    if isinstance(value, str):
        return shown(value, keep_newlines=True)
    if isinstance(value, dict):
        return {shown(key): shown_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [shown_value(item) for item in value]
    return value


def _note(text: str) -> str:
    return shown(text, max_chars=MAX_NOTE_CHARS)


def _said(text: str) -> str:
    return shown(text, keep_newlines=True)


class ConversationView(Protocol):
    def user_said(self, text: str) -> None: ...
    def assistant_delta(self, item_id: str, text: str) -> None: ...
    def assistant_done(self, item_id: str, text: str, truncated: bool) -> None: ...
    def status(self, text: str) -> None:
        """The state: listening, user speaking, thinking, speaking, reconnecting, ..."""

    def notice(self, text: str) -> None: ...
    def error(self, text: str) -> None: ...
    def level(self, dbfs: float) -> None:
        """The microphone's RMS level (called a few times a second at most)."""

    def window(self, tokens: int, threshold: int) -> None:
        """The token window after a response, against the compaction threshold."""

    def latency(self, name: str, seconds: float) -> None:
        """One latency sample (names in `realtime_voicebot.metrics`)."""

    def cost(self, usd: float) -> None:
        """The running cost of the session."""

    def compaction(self, items: int, summary_chars: int) -> None:
        """Older turns were summarized into one item."""

    # tools (see `realtime_voicebot.tool_display`: everything arrives redacted and cut)
    def tool_started(self, call: ToolCallShown) -> None:
        """A tool call began (the bot's own, or one the service makes: ``call.hosted``)."""

    def tool_finished(self, call: ToolCallShown, result: ToolResultShown) -> None: ...
    def tools_listed(self, listing: ToolListing) -> None:
        """The tools an MCP server offers (at start-up, or listed by the service)."""

    def approval_requested(self, request: ApprovalShown) -> None:
        """A hosted MCP call waits for the user's y or n."""

    def approval_answered(self, request: ApprovalShown, approved: bool, how: str) -> None:
        """``how``: user, timeout (refused for want of an answer) or session ended."""

    def summary(self, data: dict[str, Any]) -> None:
        """The session summary, at exit (before `close`)."""

    def input_line(self, text: str) -> None:
        """The line being typed in the console's own input line (raw keys only)."""

    def close(self) -> None: ...


def summary_lines(data: dict[str, Any]) -> list[str]:
    """The session summary as short lines for a terminal (shown: see `shown`)."""
    return [_note(line) for line in _summary_lines(data)]


def _summary_lines(data: dict[str, Any]) -> list[str]:
    tokens = data.get("tokens", {})
    lines = [
        f"session: {data.get('turns', 0)} turns in {data.get('duration_s', 0)} s, "
        f"cost ${data.get('cost_usd', 0.0):.4f}",
        f"tokens: {tokens.get('input', 0)} input ({tokens.get('cached', 0)} cached), "
        f"{tokens.get('output', 0)} output",
    ]
    for name, figures in data.get("latency", {}).items():
        lines.append(
            f"latency {name}: median {figures['median_ms']} ms, p95 {figures['p95_ms']} ms "
            f"({figures['count']})"
        )
    drops = data.get("drops", {})
    lines.append(
        f"counts: reconnects {data.get('reconnects', 0)}, rollovers {data.get('rollovers', 0)}, "
        f"compactions {data.get('compactions', 0)}, truncations {data.get('truncations', 0)}, "
        f"drops {sum(drops.values())}" + "".join(f" {name}={n}" for name, n in drops.items() if n)
    )
    from realtime_voicebot.tool_display import tool_summary_lines

    lines += tool_summary_lines(data)
    errors = data.get("errors", {})
    if errors:
        lines.append("server errors: " + ", ".join(f"{c}={n}" for c, n in errors.items()))
    return lines


class PlainView:
    """Prints the conversation as it happens, one line a turn, streaming the reply's words.

    For pipes and CI: only the conversation, notices and compactions go to `out`; errors and
    the session summary go to `err`.
    """

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._streaming: str | None = None

    def _end_stream(self) -> None:
        if self._streaming is not None:
            self.out.write("\n")
            self._streaming = None

    def user_said(self, text: str) -> None:
        self._end_stream()
        self.out.write(f"you: {_said(text)}\n")
        self.out.flush()

    def assistant_delta(self, item_id: str, text: str) -> None:
        if self._streaming != item_id:
            self._end_stream()
            self.out.write("bot: ")
            self._streaming = item_id
        self.out.write(_said(text))
        self.out.flush()

    def assistant_done(self, item_id: str, text: str, truncated: bool) -> None:
        if self._streaming != item_id:
            self._end_stream()
            self.out.write(f"bot: {_said(text)}")
            self._streaming = item_id
        if truncated:
            self.out.write(" [interrupted]")
        self._end_stream()
        self.out.flush()

    def status(self, text: str) -> None:
        return

    def notice(self, text: str) -> None:
        self._end_stream()
        self.out.write(f"-- {_note(text)}\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self._end_stream()
        self.err.write(f"error: {_note(text)}\n")
        self.err.flush()

    def level(self, dbfs: float) -> None:
        return

    def window(self, tokens: int, threshold: int) -> None:
        return

    def latency(self, name: str, seconds: float) -> None:
        return

    def cost(self, usd: float) -> None:
        return

    def compaction(self, items: int, summary_chars: int) -> None:
        self.notice(f"compacted {items} items into a summary ({summary_chars} chars)")

    def tool_started(self, call: ToolCallShown) -> None:
        from realtime_voicebot.tool_display import started_line

        self.notice(started_line(call))

    def tool_finished(self, call: ToolCallShown, result: ToolResultShown) -> None:
        from realtime_voicebot.tool_display import finished_line

        self.notice(finished_line(call, result))

    def tools_listed(self, listing: ToolListing) -> None:
        from realtime_voicebot.tool_display import listing_line

        self.notice(listing_line(listing))

    def approval_requested(self, request: ApprovalShown) -> None:
        from realtime_voicebot.tool_display import approval_line

        self.notice(approval_line(request))

    def approval_answered(self, request: ApprovalShown, approved: bool, how: str) -> None:
        from realtime_voicebot.tool_display import answered_line

        self.notice(answered_line(request, approved, how))

    def summary(self, data: dict[str, Any]) -> None:
        self._end_stream()
        self.out.flush()
        for line in summary_lines(data):
            self.err.write(f"{line}\n")
        self.err.flush()

    def input_line(self, text: str) -> None:
        return

    def close(self) -> None:
        self._end_stream()
        self.out.flush()


class JsonLinesView:
    """One JSON object per conversation event on `out` (`--log-format json`).

    Every object has `event` and `ts` (Unix time). Events: user, assistant_delta, assistant,
    state (on change), notice, error (also as one plain line on `err`), window, latency, cost,
    compaction, summary (the last line). The microphone level is not emitted.
    """

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._state: str | None = None

    def _emit(self, event: str, **fields: Any) -> None:
        shown_fields = {
            name: strip_controls(value) if name == "item_id" else shown_value(value)
            for name, value in fields.items()
        }  # ids are stripped, never redacted: a consumer pairs deltas with their reply by them
        record = {"event": event, "ts": round(time.time(), 3), **shown_fields}
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.out.flush()

    def user_said(self, text: str) -> None:
        self._emit("user", text=text)

    def assistant_delta(self, item_id: str, text: str) -> None:
        self._emit("assistant_delta", item_id=item_id, text=text)

    def assistant_done(self, item_id: str, text: str, truncated: bool) -> None:
        self._emit("assistant", item_id=item_id, text=text, truncated=truncated)

    def status(self, text: str) -> None:
        if text != self._state:
            self._state = text
            self._emit("state", state=text)

    def notice(self, text: str) -> None:
        self._emit("notice", text=_note(text))

    def error(self, text: str) -> None:
        line = _note(text)
        self._emit("error", text=line)
        self.err.write(f"error: {line}\n")
        self.err.flush()

    def level(self, dbfs: float) -> None:
        return

    def window(self, tokens: int, threshold: int) -> None:
        self._emit("window", tokens=tokens, threshold=threshold)

    def latency(self, name: str, seconds: float) -> None:
        self._emit("latency", name=name, ms=round(seconds * 1000, 1))

    def cost(self, usd: float) -> None:
        self._emit("cost", usd=round(usd, 6))

    def compaction(self, items: int, summary_chars: int) -> None:
        self._emit("compaction", items=items, summary_chars=summary_chars)

    def tool_started(self, call: ToolCallShown) -> None:
        self._emit("tool_call", **_call_fields(call))

    def tool_finished(self, call: ToolCallShown, result: ToolResultShown) -> None:
        duration = None if result.duration_s is None else round(result.duration_s, 3)
        self._emit(
            "tool_result",
            **_call_fields(call),
            outcome=result.outcome,
            duration_s=duration,
            output_chars=result.output_chars,
            error=result.error,
        )

    def tools_listed(self, listing: ToolListing) -> None:
        self._emit(
            "tools_listed",
            server=listing.server,
            hosted=listing.hosted,
            tools=list(listing.tools),
            problem=listing.problem,
        )

    def approval_requested(self, request: ApprovalShown) -> None:
        self._emit(
            "approval_request",
            request_id=request.request_id,
            server=request.server,
            tool=request.name,
            arguments=request.arguments,
            timeout_s=request.timeout_s,
        )

    def approval_answered(self, request: ApprovalShown, approved: bool, how: str) -> None:
        self._emit(
            "approval",
            request_id=request.request_id,
            server=request.server,
            tool=request.name,
            approved=approved,
            how=how,
        )

    def summary(self, data: dict[str, Any]) -> None:
        self._emit("summary", **data)

    def input_line(self, text: str) -> None:
        return

    def close(self) -> None:
        self.out.flush()


def _call_fields(call: ToolCallShown) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "tool": call.name,
        "server": call.server,
        "hosted": call.hosted,
        "arguments": call.arguments,
    }


@dataclass
class _Line:
    """One entry of the live conversation: a turn, or a note (notice, compaction, error)."""

    kind: str  # user | assistant | note | error | tool | ask
    text: str
    item_id: str | None = None
    done: bool = False
    truncated: bool = False


STATE_STYLES = {
    "listening": "green",
    "connected": "green",
    "user speaking": "bold cyan",
    "thinking": "yellow",
    "speaking": "bold magenta",
    "connecting": "dim",
    "reconnecting": "bold red",
    "closed": "dim",
}
LEVEL_FLOOR_DBFS = -60.0
BAR_WIDTH = 20


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of `width` cells, `fraction` (0..1, clamped) of them full."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


class LiveView:
    """The live console: conversation, state, mic level, token window, latency, cost.

    Thread-safe: the loop records under a lock; rich's refresh thread renders a snapshot.
    `redirect_stdout=False` so that lines typed on stdin can be read while it draws.
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        max_turns: int = 8,
        max_chars: int = 600,
        refresh_per_second: float = 8.0,
        typing_hint: bool = True,
        push_to_talk: bool = False,
    ) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console()
        self.max_chars = max_chars
        self.typing_hint = typing_hint
        self.push_to_talk = push_to_talk
        self._typed = ""
        self._lock = threading.Lock()
        self._lines: deque[_Line] = deque(maxlen=max_turns)
        self._by_item: dict[str, _Line] = {}
        self._state = "connecting"
        self._level_dbfs: float | None = None
        """None until a microphone reports a level (typed input only: no meter)."""
        self._window: tuple[int, int] | None = None
        self._latency: dict[str, float] = {}
        self._cost = 0.0
        self._compactions = 0
        self._summary: dict[str, Any] | None = None
        self._live: Live | None = Live(
            self,
            console=self.console,
            refresh_per_second=refresh_per_second,
            auto_refresh=True,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    # --- recording (event loop) ------------------------------------------------------------

    def _append(self, line: _Line) -> None:
        if len(self._lines) == self._lines.maxlen:
            dropped = self._lines[0]
            if dropped.item_id is not None:
                self._by_item.pop(dropped.item_id, None)
        self._lines.append(line)
        if line.item_id is not None:
            self._by_item[line.item_id] = line

    def user_said(self, text: str) -> None:
        with self._lock:
            # A transcript often lands after its reply began: show it above that reply.
            trailing: list[_Line] = []
            while self._lines and self._lines[-1].kind == "assistant" and not self._lines[-1].done:
                trailing.append(self._lines.pop())
            self._append(_Line("user", _said(text)))
            for line in reversed(trailing):
                self._append(line)

    def assistant_delta(self, item_id: str, text: str) -> None:
        text = _said(text)
        with self._lock:
            line = self._by_item.get(item_id)
            if line is None:
                self._append(_Line("assistant", text, item_id))
            elif not line.done:
                line.text += text

    def assistant_done(self, item_id: str, text: str, truncated: bool) -> None:
        text = _said(text)
        with self._lock:
            line = self._by_item.get(item_id)
            if line is None:
                line = _Line("assistant", text, item_id)
                self._append(line)
            line.text = text or line.text
            line.done = True
            line.truncated = truncated

    def status(self, text: str) -> None:
        self._state = "listening" if text == "connected" else _note(text)

    def notice(self, text: str) -> None:
        with self._lock:
            self._append(_Line("note", _note(text)))

    def error(self, text: str) -> None:
        with self._lock:
            self._append(_Line("error", _note(text)))

    def level(self, dbfs: float) -> None:
        self._level_dbfs = dbfs

    def window(self, tokens: int, threshold: int) -> None:
        self._window = (tokens, threshold)

    def latency(self, name: str, seconds: float) -> None:
        with self._lock:
            self._latency[name] = seconds

    def cost(self, usd: float) -> None:
        self._cost = usd

    def compaction(self, items: int, summary_chars: int) -> None:
        with self._lock:
            self._compactions += 1
            self._append(
                _Line("note", f"compacted {items} items into a summary ({summary_chars} chars)")
            )

    def tool_started(self, call: ToolCallShown) -> None:
        from realtime_voicebot.tool_display import started_line

        with self._lock:
            self._append(_Line("tool", started_line(call), f"tool:{call.call_id}"))

    def tool_finished(self, call: ToolCallShown, result: ToolResultShown) -> None:
        """The call's line becomes its result (a new line if it scrolled away)."""
        from realtime_voicebot.tool_display import finished_line

        text = finished_line(call, result)
        with self._lock:
            line = self._by_item.get(f"tool:{call.call_id}")
            if line is None:
                line = _Line("tool", text)
                self._append(line)
            line.text = text
            line.done = True
            line.truncated = result.outcome != "ok"

    def tools_listed(self, listing: ToolListing) -> None:
        from realtime_voicebot.tool_display import listing_line

        with self._lock:
            self._append(_Line("note", listing_line(listing)))

    def approval_requested(self, request: ApprovalShown) -> None:
        from realtime_voicebot.tool_display import approval_line

        with self._lock:
            self._append(_Line("ask", approval_line(request), f"ask:{request.request_id}"))

    def approval_answered(self, request: ApprovalShown, approved: bool, how: str) -> None:
        from realtime_voicebot.tool_display import answered_line

        with self._lock:
            line = self._by_item.get(f"ask:{request.request_id}")
            if line is None:
                line = _Line("ask", "")
                self._append(line)
            line.text = answered_line(request, approved, how)
            line.done = True

    def summary(self, data: dict[str, Any]) -> None:
        self._summary = data

    def input_line(self, text: str) -> None:
        self._typed = text

    def close(self) -> None:
        """Stop drawing (the last frame stays on screen), then print the session summary."""
        live, self._live = self._live, None
        if live is None:
            return
        live.refresh()
        live.stop()
        if self._summary is not None:
            self.console.print(self._summary_table(self._summary))

    # --- rendering (rich's thread) -----------------------------------------------------------

    def __rich__(self) -> RenderableType:
        return self.render()

    def render(self) -> RenderableType:
        """The whole screen, from a snapshot taken under the lock."""
        from rich.console import Group
        from rich.panel import Panel
        from rich.text import Text

        with self._lock:
            lines = [_Line(**vars(line)) for line in self._lines]
            latency = dict(self._latency)
        conversation = Text()
        for index, line in enumerate(lines):
            if index:
                conversation.append("\n")
            conversation.append_text(self._render_line(line))
        if not lines:
            conversation.append("(say something)", style="dim")
        return Group(
            Panel(conversation, title="voicebot", title_align="left", border_style="blue"),
            self._status_bar(latency),
        )

    def _render_line(self, line: _Line) -> Any:
        from rich.text import Text

        text = line.text
        if len(text) > self.max_chars:
            text = "…" + text[-self.max_chars :]
        if line.kind == "user":
            return Text.assemble(("you: ", "bold cyan"), text)
        if line.kind == "assistant":
            rendered = Text.assemble(("bot: ", "bold magenta"), text)
            if line.truncated:
                rendered.append(INTERRUPTED_MARK, style="bold red")
            elif not line.done:
                rendered.append("▌", style="dim")
            return rendered
        if line.kind == "error":
            return Text(f"error: {text}", style="bold red")
        if line.kind == "tool":
            style = "red" if line.truncated else "dim" if line.done else "yellow"
            return Text(f"⚙ {text}", style=style)
        if line.kind == "ask":
            return Text(f"? {text}", style="dim" if line.done else "bold yellow")
        return Text(f"-- {text}", style="dim")

    def _status_bar(self, latency: dict[str, float]) -> Any:
        from rich.table import Table
        from rich.text import Text

        state = self._state
        level = self._level_dbfs
        if level is None:
            meter = Text("no microphone", style="dim")
        else:
            level_fraction = (level - LEVEL_FLOOR_DBFS) / -LEVEL_FLOOR_DBFS
            meter = Text.assemble(
                (bar(level_fraction, 12), "green" if level > -45 else "dim"),
                f" {max(level, -99.0):3.0f} dBFS",
            )
        first = Text.assemble(
            ("state ", "dim"),
            (f"● {state}", STATE_STYLES.get(state, "bold")),
            ("   mic ", "dim"),
            meter,
            ("   cost ", "dim"),
            f"${self._cost:.4f}",
        )
        second = Text.assemble(("window ", "dim"))
        window = self._window
        if window is None:
            second.append("(after the first reply)", style="dim")
        else:
            tokens, threshold = window
            fraction = tokens / threshold if threshold else 0.0
            style = "red" if fraction >= 1 else "yellow" if fraction >= 0.8 else "green"
            second.append(bar(fraction, 12), style=style)
            second.append(f" {tokens:,} / {threshold:,} tokens")
        second.append("   compactions ", style="dim")
        second.append(str(self._compactions))
        third = Text()
        for name, label in LATENCY_LABELS.items():
            if name in latency:
                if third:
                    third.append(" · ", style="dim")
                third.append(f"{label} ", style="dim")
                third.append(f"{latency[name] * 1000:.0f} ms")
        if not third:
            third.append("latency (after the first turn)", style="dim")
        rows = [first, second, third]
        typed = self._typed
        if typed:
            rows.append(Text.assemble(("› ", "bold"), typed[-200:], ("▌", "dim")))
        elif self.typing_hint:
            hint = "type a line + Enter to send text · Ctrl-C quits"
            if self.push_to_talk:
                hint = "space: talk / stop talking · " + hint
            rows.append(Text(hint, style="dim"))
        grid = Table.grid(padding=(0, 1))
        grid.add_column()
        for row in rows:
            grid.add_row(row)
        return grid

    def _summary_table(self, data: dict[str, Any]) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(title="session summary", show_header=False, title_justify="left")
        table.add_column("what", style="dim")
        table.add_column("value")
        for line in summary_lines(data):
            what, _, value = line.partition(": ") if ": " in line else ("", "", line)
            table.add_row(Text(what), Text(value))  # Text: a server's code is never markup
        return table
