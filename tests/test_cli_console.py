"""`voicebot run` output end to end: plain lines, JSON lines, the session summary and
`--metrics-file`; what the app tells its view; typed lines alongside the microphone."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.files import WavFileInput
from realtime_voicebot.audio.output import WavFilePlayer
from realtime_voicebot.cli import run_log_level
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.metrics import SPEECH_END_TO_FIRST_DELTA
from realtime_voicebot.testing import PushInput, scaled

from .app_harness import fake_config, settings_for, start_bot, write_wav
from .test_cli_run import VOICEBOT, clean_env, run_cli

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def spoken_wav(path: Path) -> Path:
    return write_wav(path, [silence(0.3), speech_like(1.0, seed=3), silence(1.5)])


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines (stderr also holds the summary's plain lines)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_run_writes_the_summary_to_the_metrics_file_and_the_terminal(
    tmp_path: Path,
) -> None:
    wav = spoken_wav(tmp_path / "in.wav")
    scenario = tmp_path / "scenario.txt"
    scenario.write_text("user: what is the capital of France\n")
    common = ["run", "--fake-server", "--fake-speed", "8", "--fake-scenario", str(scenario)]
    common += ["--input-file", str(wav), "--exit-when-input-ends"]
    plain_run = run_cli(
        *common,
        "--output-file",
        str(tmp_path / "out.wav"),
        "--metrics-file",
        str(tmp_path / "plain.json"),
        "--transcript",
        str(tmp_path / "plain.jsonl"),
        env=clean_env(),
    )
    json_run = run_cli(
        *common,
        "--log-format",
        "json",
        "--log-level",
        "info",
        "--metrics-file",
        str(tmp_path / "json.json"),
        "--transcript",
        str(tmp_path / "json.jsonl"),
        env=clean_env(),
    )
    (code, out, err, _), (json_code, json_out, json_err, _) = await asyncio.gather(
        plain_run, json_run
    )

    # Not a terminal: plain lines on stdout, the summary on stderr, no info logs by default.
    assert code == 0, err
    assert "you: what is the capital of France" in out.splitlines()
    assert "bot: You said: what is the capital of France" in out.splitlines()
    assert any(line.startswith("session: 1 turns in") for line in err.splitlines()), err
    assert not [r for r in json_lines(err) if r.get("level") == "info"], err
    summary = json.loads((tmp_path / "plain.json").read_text())
    assert summary["turns"] >= 1 and summary["user_turns"] >= 1
    assert summary["cost_usd"] > 0
    assert summary["tokens"]["input"] > 0 and summary["tokens"]["output"] > 0
    for name in (SPEECH_END_TO_FIRST_DELTA, "first_delta_to_first_sample"):
        latency = summary["latency"][name]
        assert latency["count"] >= 1 and 0 < latency["median_ms"] <= latency["p95_ms"], name
    assert summary["drops"]["mic_blocks"] == 0 and summary["reconnects"] == 0

    # --log-format json: one object per conversation event on stdout, the summary last;
    # an explicit --log-level wins over run's default of warnings only.
    assert json_code == 0, json_err
    records = json_lines(json_out)
    events = [r["event"] for r in records]
    assert {"user", "assistant_delta", "assistant", "state", "window", "cost"} <= set(events)
    assert events[-1] == "summary" and events.count("summary") == 1
    assert records[-1]["turns"] >= 1 and records[-1]["cost_usd"] > 0
    final = {k: v for k, v in records[-1].items() if k not in ("event", "ts")}
    assert final == json.loads((tmp_path / "json.json").read_text())  # the same summary
    user = next(r for r in records if r["event"] == "user")
    assert user["text"] == "what is the capital of France"
    logs = json_lines(json_err)
    assert any(r.get("event") == "transcript" and r.get("level") == "info" for r in logs)


def test_run_logs_warnings_only_unless_a_level_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOICEBOT_LOG_LEVEL", raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    assert run_log_level("INFO", {}) == "WARNING"
    assert run_log_level("INFO", {"log_level": "info"}) == "INFO"
    monkeypatch.setenv("VOICEBOT_LOG_LEVEL", "DEBUG")
    assert run_log_level("DEBUG", {}) == "DEBUG"


async def test_the_view_gets_level_window_latency_cost_and_the_summary(tmp_path: Path) -> None:
    config = fake_config(scenario=Scenario(user_transcripts=["hello there"]))
    async with FakeRealtimeServer(config) as server:
        wav = WavFileInput(spoken_wav(tmp_path / "in.wav"), pace=4.0)
        player = WavFilePlayer(tmp_path / "out.wav", pace=20.0)
        running = start_bot(
            server,
            settings_for(server, tmp_path, summary_threshold=5000),
            RunOptions(),
            audio_in=wav,
            audio_out=player,
        )
        await running.until(lambda: len(running.view.assistant) == 1, 10)
        await running.until(lambda: running.view.statuses[-1:] == ["listening"], 5)
        assert await running.stop() == 0

    view = running.view
    bot = running.bot
    assert view.user == ["hello there"]
    assert "".join(text for _, text in view.deltas) == "You said: hello there"
    # Passed on at most every LEVEL_INTERVAL_S: the speech is loud, the leading silence not.
    assert max(view.levels) > -40 and min(view.levels) < -80
    assert len(view.levels) < wav.blocks_read / 2
    window = bot.core.conversation.window_tokens
    assert view.windows[-1] == (window, 5000) and window > 0
    assert view.costs[-1] == pytest.approx(bot.metrics.cost_usd) and view.costs[-1] > 0
    names = {name for name, _ in view.latencies}
    assert {SPEECH_END_TO_FIRST_DELTA, "first_delta_to_first_sample"} <= names
    assert "speaking" in view.statuses
    assert view.statuses.index("thinking") < view.statuses.index("speaking")
    (summary,) = view.summaries
    assert summary["turns"] == 1 and summary["cost_usd"] == pytest.approx(bot.metrics.cost_usd)
    assert view.closed


async def test_typed_lines_are_text_turns_in_voice_mode(tmp_path: Path) -> None:
    async with FakeRealtimeServer(fake_config()) as server:
        mic = PushInput()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        running = start_bot(
            server,
            settings_for(server, tmp_path),
            RunOptions(text_lines=lines),
            audio_in=mic,
        )
        session = await running.session(1)
        await lines.put("typed while the mic is open")
        await running.until(lambda: len(running.view.assistant) == 1, 10)
        await lines.put(None)  # the end of typed input does not end a voice run
        mic.pause(0.2)
        # Each block the bot reads reaches the server, whose event wakes the wait.
        await running.until(lambda: mic._queue.empty(), 5)
        assert not running.task.done()
        assert await running.stop() == 0

    user_items = [i for i in session.items if i.role == "user"]
    assert [i.text for i in user_items] == ["typed while the mic is open"]
    assert running.view.assistant[0][1] == "You said: typed while the mic is open"
    assert running.view.user == ["typed while the mic is open"]
    assert running.bot.core.turns.stats.typed_lines == 1


async def test_typing_while_the_bot_speaks_interrupts_it(tmp_path: Path) -> None:
    long_reply = "This is a long answer that keeps talking for quite a while. " * 4
    config = fake_config(
        speed=1.0, scenario=Scenario(user_transcripts=["tell me a story"], replies=[long_reply])
    )
    async with FakeRealtimeServer(config) as server:
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", pace=1.0)
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        running = start_bot(
            server,
            settings_for(server, tmp_path),
            RunOptions(text_lines=lines),
            audio_in=mic,
            audio_out=player,
        )
        session = await running.session(1)
        mic.say(0.8)
        mic.pause(0.8)
        await running.until(lambda: any(i.role == "assistant" for i in session.items), 10)
        reply_id = next(i.id for i in session.items if i.role == "assistant")
        assert await asyncio.wait_for(player.wait_played(reply_id, 100), scaled(10))
        await lines.put("stop please")
        await running.until(lambda: len(running.view.assistant) == 2, 15)
        assert await running.stop() == 0

    types = session.received_types()
    cut = types.index("conversation.item.truncate")
    assert cut < types.index("conversation.item.create")
    (first, first_text, truncated), (_, second_text, _) = running.view.assistant
    assert truncated and long_reply.startswith(first_text) and len(first_text) < len(long_reply)
    assert second_text == "You said: stop please"
    truncate = session.received[cut]
    assert truncate["item_id"] == first and truncate["audio_end_ms"] > 0
    assert running.bot.summary()["truncations"] == 1


class Terminal:
    """The master side of a pseudo-terminal, read until some text has been drawn."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.raw = b""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def wait_for(self, needle: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + scaled(timeout_s)
        while needle not in self.text:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{needle!r} not drawn; screen so far:\n{self.text[-2000:]}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    self.raw += os.read(self.fd, 65536)
                except OSError:  # the child closed the terminal
                    raise TimeoutError(f"{needle!r} not drawn before exit") from None

    def drain(self) -> None:
        """Read what is left once the child has exited."""
        while select.select([self.fd], [], [], 0.5)[0]:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if not data:
                return
            self.raw += data


def voicebot_in_a_terminal(
    args: list[str], tmp_path: Path, *, lines: int
) -> tuple[subprocess.Popen[bytes], int]:
    """`voicebot ARGS` on a pseudo-terminal 100 columns wide (stderr to stderr.txt): the
    process and the terminal's master end."""
    master, slave = pty.openpty()
    with (tmp_path / "stderr.txt").open("wb") as err:
        proc = subprocess.Popen(
            [*VOICEBOT, *args],
            stdin=slave,
            stdout=slave,
            stderr=err,
            env=clean_env(COLUMNS="100", LINES=str(lines)),
            start_new_session=True,
        )
    os.close(slave)
    return proc, master


def test_on_a_terminal_the_live_console_draws_and_typed_lines_are_turns(tmp_path: Path) -> None:
    """A real pseudo-terminal: rich Live draws while a thread reads typed lines from stdin."""
    wav = spoken_wav(tmp_path / "in.wav")
    scenario = tmp_path / "scenario.txt"
    scenario.write_text("user: what is the capital of France\n")
    args = ["run", "--fake-server", "--fake-speed", "8", "--fake-scenario", str(scenario)]
    args += ["--input-file", str(wav), "--transcript", str(tmp_path / "t.jsonl")]
    args += ["--metrics-file", str(tmp_path / "metrics.json")]
    proc, master = voicebot_in_a_terminal(args, tmp_path, lines=40)
    screen = Terminal(master)
    try:
        screen.wait_for("bot: You said: what is the capital of France")
        assert "state ● " in screen.text and "window " in screen.text
        os.write(master, b"typed on the keyboard\n")
        screen.wait_for("bot: You said: typed on the keyboard")
        proc.send_signal(signal.SIGINT)
        screen.wait_for("session summary")
        assert proc.wait(scaled(10)) == 0, (tmp_path / "stderr.txt").read_text()
        screen.drain()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert "you: typed on the keyboard" in screen.text
    assert "2 turns in" in screen.text
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["turns"] == 2 and summary["user_turns"] == 2
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()


def test_the_console_reads_its_own_input_line_and_never_tears(tmp_path: Path) -> None:
    """Keys go into the console's input line (drawn, not echoed by the terminal): after typed
    lines the screen, as a terminal emulator renders it, holds one console, not stacked
    copies of its top border."""
    import pyte

    args = ["run", "--fake-server", "--text", "--transcript", str(tmp_path / "t.jsonl")]
    proc, master = voicebot_in_a_terminal(args, tmp_path, lines=30)
    terminal = Terminal(master)
    screen = pyte.Screen(100, 30)
    stream = pyte.ByteStream(screen)
    try:
        terminal.wait_for("fake Realtime server")
        os.write(master, b"hello th")
        terminal.wait_for("hello th")
        os.write(master, b"x\x7fere\r")  # a typo, Backspace, the rest, Enter
        terminal.wait_for("bot: You said: hello there")
        os.write(master, b"how are you\r")
        terminal.wait_for("bot: You said: how are you")
        stream.feed(terminal.raw)
        shown = "\n".join(screen.display)
        assert shown.count("╭─ voicebot") == 1, shown
        assert "you: hello there" in shown and "you: how are you" in shown
        assert "hello thx" not in shown  # what the terminal would have echoed raw
        proc.send_signal(signal.SIGINT)
        terminal.wait_for("session summary")
        assert proc.wait(10) == 0, (tmp_path / "stderr.txt").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_without_raw_keys_the_terminal_echo_stacks_the_border() -> None:
    """The other side: what the console looked like when the terminal echoed typed lines
    (a line echoed under a live display pushes a copy of its top border up)."""
    import pyte
    from rich.console import Console

    from realtime_voicebot.ui import LiveView

    screen = pyte.Screen(60, 20)
    screen.set_mode(pyte.modes.LNM)  # a terminal's output newline: carriage return + line feed
    stream = pyte.ByteStream(screen)
    out = io.StringIO()
    view = LiveView(Console(file=out, force_terminal=True, width=60, height=20))
    view.notice("ready")
    view._live.refresh()  # type: ignore[union-attr]
    stream.feed(out.getvalue().encode())
    out.truncate(0)
    out.seek(0)
    stream.feed(b"hello there\r\n")  # the terminal's own echo of a typed line
    view.user_said("hello there")
    view._live.refresh()  # type: ignore[union-attr]
    stream.feed(out.getvalue().encode())
    view.close()
    assert "\n".join(screen.display).count("╭─ voicebot") == 2


async def test_lines_piped_in_at_once_are_answered_in_order_and_never_pile_up(
    tmp_path: Path,
) -> None:
    """`voicebot run --text < file`: 60 lines arrive at once. Each is answered, in order, and
    the core never holds more than `TYPED_AHEAD` unsent lines (the rest wait in the bounded
    input queue); before, all of them piled up in the core and each event scanned them all."""
    from realtime_voicebot.inputs import TYPED_AHEAD

    count = 60
    async with FakeRealtimeServer(fake_config(speed=0.0)) as server:
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        for n in range(count):
            lines.put_nowait(f"line {n}")
        lines.put_nowait(None)
        running = start_bot(
            server, settings_for(server, tmp_path), RunOptions(text=True, text_lines=lines)
        )
        most_waiting = 0

        def watch(_: object) -> None:
            nonlocal most_waiting
            most_waiting = max(
                most_waiting, running.bot.core.snapshot()["turns"]["typed_lines_pending"]
            )

        running.bot.subscribe(watch)
        assert await running.finish(60) == 0

    # TYPED_AHEAD unsent lines, the one being answered and the one just sent.
    assert most_waiting <= TYPED_AHEAD + 2, most_waiting
    assert running.view.user == [f"line {n}" for n in range(count)]
    assert [text for _, text, _ in running.view.assistant] == [
        f"You said: line {n}" for n in range(count)
    ]
