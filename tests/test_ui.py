"""The views: the live console rendered into a rich Console, JSON lines, plain lines."""

from __future__ import annotations

import io
import json
import re
import threading
from typing import Any

from rich.console import Console

from realtime_voicebot.cli import select_view
from realtime_voicebot.ui import (
    INTERRUPTED_MARK,
    JsonLinesView,
    LiveView,
    PlainView,
    summary_lines,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

SUMMARY: dict[str, Any] = {
    "duration_s": 12.5,
    "turns": 2,
    "tokens": {"input": 1000, "cached": 500, "output": 350},
    "cost_usd": 0.0334,
    "latency": {"speech_end_to_first_delta": {"count": 2, "median_ms": 420.0, "p95_ms": 510.0}},
    "reconnects": 1,
    "rollovers": 0,
    "compactions": 1,
    "truncations": 1,
    "drops": {"mic_blocks": 3, "player_underruns": 0},
    "errors": {"rate_limit_exceeded": 1},
}


def plain(text: str) -> str:
    return ANSI.sub("", text)


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100), out


def rendered(view: LiveView, console: Console) -> str:
    with console.capture() as capture:
        console.print(view.render())
    return plain(capture.get())


def feed_conversation(view: Any) -> None:
    view.status("connected")
    view.level(-20.0)
    view.user_said("what is the capital of France")
    view.assistant_delta("item_a", "The capital ")
    view.assistant_delta("item_a", "is Paris.")
    view.assistant_done("item_a", "The capital is Paris.", False)
    view.latency("speech_end_to_first_delta", 0.42)
    view.window(12_000, 20_000)
    view.cost(0.0123)
    view.assistant_delta("item_b", "Let me tell you a long story about")
    view.status("user speaking")
    view.assistant_done("item_b", "Let me tell you", True)
    view.compaction(6, 312)
    view.status("speaking")


def test_live_view_shows_turns_truncation_state_window_latency_and_cost() -> None:
    console, _ = terminal()
    view = LiveView(console, refresh_per_second=20)
    try:
        feed_conversation(view)
        screen = rendered(view, console)
    finally:
        view.close()
    assert "you: what is the capital of France" in screen
    assert "bot: The capital is Paris." in screen
    assert f"bot: Let me tell you{INTERRUPTED_MARK}" in screen
    assert "● speaking" in screen
    assert "12,000 / 20,000 tokens" in screen
    assert "speech end→audio 420 ms" in screen
    assert "$0.0123" in screen
    assert "compacted 6 items into a summary (312 chars)" in screen
    assert "compactions 1" in screen
    assert " -20 dBFS" in screen


def test_live_view_streams_deltas_before_the_reply_is_done() -> None:
    console, _ = terminal()
    view = LiveView(console)
    try:
        view.assistant_delta("item_a", "Hello ")
        first = rendered(view, console)
        view.assistant_delta("item_a", "there")
        second = rendered(view, console)
    finally:
        view.close()
    assert "bot: Hello ▌" in first and "there" not in first
    assert "bot: Hello there▌" in second


def test_live_view_puts_a_late_user_transcript_above_the_reply_it_started() -> None:
    console, _ = terminal()
    view = LiveView(console)
    try:
        view.assistant_delta("item_a", "Sure, here")
        view.user_said("tell me a joke")
        screen = rendered(view, console)
    finally:
        view.close()
    assert screen.index("you: tell me a joke") < screen.index("bot: Sure, here")


def test_live_view_keeps_only_the_last_turns() -> None:
    console, _ = terminal()
    view = LiveView(console, max_turns=4)
    try:
        for n in range(10):
            view.user_said(f"question {n}")
            view.assistant_done(f"item_{n}", f"answer {n}", False)
        screen = rendered(view, console)
    finally:
        view.close()
    assert "question 8" in screen and "answer 9" in screen
    assert "question 7" not in screen and "answer 7" not in screen
    assert len(view._by_item) <= 4  # evicted replies are forgotten, not kept forever


def test_live_view_window_past_the_threshold_and_reconnecting_state() -> None:
    console, _ = terminal()
    view = LiveView(console)
    try:
        view.window(21_500, 20_000)
        view.status("reconnecting")
        screen = rendered(view, console)
    finally:
        view.close()
    assert "21,500 / 20,000 tokens" in screen and "● reconnecting" in screen


def test_live_view_draws_on_its_own_and_prints_the_summary_at_close() -> None:
    console, out = terminal()
    view = LiveView(console, refresh_per_second=20)
    feed_conversation(view)
    view.summary(SUMMARY)
    view.close()
    view.close()  # idempotent
    text = plain(out.getvalue())
    assert "you: what is the capital of France" in text  # the last frame stays on screen
    assert "session summary" in text
    assert "2 turns in 12.5 s, cost $0.0334" in text
    assert "median 420.0 ms, p95 510.0 ms" in text


def test_live_view_renders_while_the_loop_records() -> None:
    """rich's refresh thread renders while the loop thread records: no torn reads."""
    console, _ = terminal()
    view = LiveView(console, max_turns=5)
    failures: list[BaseException] = []
    stop = threading.Event()

    def render() -> None:
        try:
            while not stop.is_set():
                rendered(view, console)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=render)
    thread.start()
    try:
        for n in range(3000):
            view.user_said(f"q{n}")
            view.assistant_delta(f"i{n}", "word ")
            view.assistant_done(f"i{n}", "word", n % 2 == 0)
    finally:
        stop.set()
        thread.join(5)
        view.close()
    assert not failures, failures


def test_json_lines_view_emits_one_parsable_object_per_event() -> None:
    out, err = io.StringIO(), io.StringIO()
    view = JsonLinesView(out, err)
    feed_conversation(view)
    view.status("speaking")  # unchanged: not emitted again
    view.error("server: rate limited")
    view.summary(SUMMARY)
    view.close()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all(isinstance(r["ts"], float) for r in records)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_event.setdefault(record["event"], []).append(record)
    assert by_event["user"][0]["text"] == "what is the capital of France"
    assert [d["text"] for d in by_event["assistant_delta"][:2]] == ["The capital ", "is Paris."]
    assert by_event["assistant"][1] | {"ts": 0} == {
        "event": "assistant",
        "ts": 0,
        "item_id": "item_b",
        "text": "Let me tell you",
        "truncated": True,
    }
    assert [s["state"] for s in by_event["state"]] == ["connected", "user speaking", "speaking"]
    window = by_event["window"][0]
    assert (window["tokens"], window["threshold"]) == (12_000, 20_000)
    latency = by_event["latency"][0]
    assert (latency["name"], latency["ms"]) == ("speech_end_to_first_delta", 420.0)
    assert by_event["cost"][0]["usd"] == 0.0123
    assert by_event["compaction"][0]["items"] == 6
    assert by_event["error"][0]["text"] == "server: rate limited"
    assert records[-1]["event"] == "summary" and records[-1]["turns"] == 2
    assert "level" not in by_event
    assert err.getvalue() == "error: server: rate limited\n"


def test_plain_view_prints_turns_and_sends_the_summary_to_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    view = PlainView(out, err)
    feed_conversation(view)
    view.summary(SUMMARY)
    view.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "you: what is the capital of France",
        "bot: The capital is Paris.",
        "bot: Let me tell you a long story about [interrupted]",
        "-- compacted 6 items into a summary (312 chars)",
    ]
    assert err.getvalue().splitlines() == summary_lines(SUMMARY)
    assert not any(line.startswith("error:") for line in summary_lines(SUMMARY))


def test_summary_lines_name_every_figure() -> None:
    text = "\n".join(summary_lines(SUMMARY))
    for piece in (
        "2 turns in 12.5 s",
        "cost $0.0334",
        "1000 input (500 cached), 350 output",
        "speech_end_to_first_delta: median 420.0 ms, p95 510.0 ms (2)",
        "reconnects 1, rollovers 0, compactions 1, truncations 1, drops 3 mic_blocks=3",
        "server errors: rate_limit_exceeded=1",
    ):
        assert piece in text


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_run_picks_json_live_or_plain_output() -> None:
    assert isinstance(select_view("json", FakeTty()), JsonLinesView)
    assert isinstance(select_view("auto", io.StringIO()), PlainView)
    assert isinstance(select_view("console", io.StringIO()), PlainView)
    tty = FakeTty()
    live = select_view("auto", tty)
    assert isinstance(live, LiveView)
    live.user_said("hello")
    live.close()
    assert "you: hello" in plain(tty.getvalue())


def test_live_view_without_a_microphone_shows_no_meter() -> None:
    console, _ = terminal()
    view = LiveView(console, refresh_per_second=20)
    try:
        view.user_said("typed, not spoken")
        screen = rendered(view, console)
    finally:
        view.close()
    assert "mic no microphone" in screen
    assert "dBFS" not in screen


def test_push_to_talk_shows_ready_between_turns_and_talking_during_one() -> None:
    for push_to_talk in (True, False):
        console, _ = terminal()
        view = LiveView(console, refresh_per_second=20, push_to_talk=push_to_talk)
        try:
            view.status("listening")
            between = rendered(view, console)
            view.status("user speaking")
            during = rendered(view, console)
        finally:
            view.close()
        assert ("● ready: space to talk" in between) is push_to_talk
        assert ("● listening" in between) is not push_to_talk
        assert "● user speaking" in during
        assert ("space: talk / stop talking" in between) is push_to_talk
