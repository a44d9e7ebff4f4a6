"""What the views show (issue 13, items 1 and 14): redacted, and without the terminal control
a server's text could carry, in the plain, JSON and live views alike."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console

from realtime_voicebot.ui import (
    MAX_NOTE_CHARS,
    JsonLinesView,
    LiveView,
    PlainView,
    shown,
    strip_controls,
    summary_lines,
)

KEY = "sk-proj-Zq7Xw9Lp3Rt5Yu2Io8Pa"
HANDSHAKE_ERROR = f"InvalidHeaderValue('Authorization', 'Bearer {KEY}\\r')"
HOSTILE = (
    "\x1b[2J\x1b[H"  # clear the screen, cursor home
    "\x1b]0;pwned title\x07"  # set the window title
    "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\"  # hyperlink
    "\x9b31mred\x9b0m"  # C1 CSI
    "\x07\x08\x7f\x85"  # bell, backspace, delete, next line
    "\u202etxt.exe"  # right-to-left override
    "visible"
)
ESCAPE_BYTES = ("\x1b", "\x9b", "\x07", "\x08", "\x7f", "\x85", "\u202e", "\x9d")


def assert_clean(text: str) -> None:
    assert not [c for c in ESCAPE_BYTES if c in text], repr(text)
    assert KEY not in text and "Zq7Xw9Lp3Rt5" not in text


def test_strip_controls_removes_sequences_whole_and_keeps_the_words() -> None:
    cleaned = strip_controls(HOSTILE)
    assert_clean(cleaned)
    assert "pwned" not in cleaned and "evil.example" not in cleaned  # whole sequences go
    assert cleaned.endswith("linkredtxt.exevisible")
    assert strip_controls("a\tb\nc") == "a b c"
    assert strip_controls("a\nb", keep_newlines=True) == "a\nb"


@pytest.mark.parametrize(
    "plain",
    [
        "héllo wörld — ok",
        "emoji 👨\u200d👩\u200d👧 and 中文",
        "tabs\tand spaces",
        "2024-05-01 12:30",
    ],
)
def test_ordinary_text_passes_unchanged(plain: str) -> None:
    assert shown(plain) == plain.replace("\t", " ")


def test_plain_view_redacts_and_strips_every_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    view = PlainView(out, err)
    view.user_said(f"my key is {KEY} {HOSTILE}")
    view.assistant_delta("i1", f"Bearer {KEY} ")
    view.assistant_delta("i1", "\x1b[31mline one\nline two")
    view.assistant_done("i1", "", False)
    view.notice(f"connection lost: {HANDSHAKE_ERROR}")
    view.error(f"Could not reconnect: {HANDSHAKE_ERROR}\n{HOSTILE}")
    view.summary({"errors": {f"\x1b[5m{KEY}": 2}})
    view.close()
    printed = out.getvalue() + err.getvalue()
    assert_clean(printed)
    assert "line one\nline two" in out.getvalue()  # the reply keeps its own lines
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith("visible")  # one line, words kept
    assert "[key]" in printed


def test_a_long_server_message_is_cut() -> None:
    err = io.StringIO()
    PlainView(io.StringIO(), err).error("x " * 1_000_000)
    assert len(err.getvalue()) < MAX_NOTE_CHARS + 20


def test_json_view_redacts_and_strips_every_field_keys_included() -> None:
    out, err = io.StringIO(), io.StringIO()
    view = JsonLinesView(out, err)
    view.user_said(f"{HOSTILE} {KEY}")
    view.assistant_delta("item_\x1b[1m1", f"{KEY}\x9b")
    view.notice(HANDSHAKE_ERROR)
    view.error(HOSTILE)
    view.status("\x1b[2Jspeaking")
    view.summary({"errors": {f"\x1b[5m{KEY}": 2}, "turns": 3})
    printed = out.getvalue() + err.getvalue()
    assert_clean(printed)
    records: list[dict[str, Any]] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert_clean(json.dumps(records, ensure_ascii=False))
    assert records[1]["item_id"] == "item_1"  # ids are stripped, not redacted
    assert records[-1]["turns"] == 3


def test_live_view_redacts_and_strips_what_it_draws() -> None:
    file = io.StringIO()
    console = Console(file=file, width=120, color_system=None, force_terminal=False)
    view = LiveView(console, refresh_per_second=50)
    try:
        view.user_said(f"{HOSTILE} {KEY}")
        view.assistant_delta("i1", f"{HOSTILE}")
        view.assistant_done("i1", f"done {KEY}{HOSTILE}", False)
        view.notice(HANDSHAKE_ERROR)
        view.error(HOSTILE)
        view.status("\x1b]0;title\x07reconnecting")
        view.summary({"errors": {f"[bold]\x1b[5m{KEY}": 2}})
        console.print(view.render())
    finally:
        view.close()
    drawn = file.getvalue()
    assert_clean(drawn)
    assert "visible" in drawn and "[bold]" in drawn  # a code is shown as text, never markup


def test_summary_lines_are_shown_lines() -> None:
    lines = summary_lines({"errors": {f"\x1b[31m{KEY}\n": 1}})
    assert_clean("\n".join(lines))
    assert all("\n" not in line for line in lines)


def test_log_lines_are_bounded_and_on_the_console_stripped() -> None:
    import logging

    import structlog

    from realtime_voicebot.logging import MAX_FIELD_CHARS, configure_logging

    console = io.StringIO()
    configure_logging("INFO", "console", stream=console)
    structlog.get_logger().warning("server_error", message=HOSTILE, code="c" * 100_000)
    logging.getLogger("websockets.client").warning("closed: %s", HOSTILE)
    printed = console.getvalue()
    assert_clean(printed)
    assert "visible" in printed and len(printed) < 2 * MAX_FIELD_CHARS

    lines = io.StringIO()
    configure_logging("INFO", "json", stream=lines)
    structlog.get_logger().warning("server_error", message=f"{KEY} {HOSTILE}", code="c" * 100_000)
    record = json.loads(lines.getvalue().splitlines()[0])
    assert KEY not in record["message"] and len(record["code"]) < MAX_FIELD_CHARS + 50
