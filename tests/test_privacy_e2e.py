"""Privacy end to end: the API key is never written down, and redaction never reaches the model.

* The key (a distinctive ``sk-...`` value) appears in no log line, console or JSON, at DEBUG,
  over a whole conversation, a rejected key (HTTP 401), and a handler's exception traceback;
  in no message shown to the user; not in ``config show``; and not in the URL the fake server
  was asked for (it records every request path and query).
* With ``redact_transcript`` on, e-mails, phone and card numbers the user typed or said are
  redacted in the transcript file, while the fake server received the original words (and the
  re-seed of a new session carries them as they were).

In-process runs capture logs through the real `configure_logging` into a StringIO; the CLI
runs in a subprocess so that the stdlib loggers (websockets) are configured as in real life.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from realtime_voicebot.app import RunOptions
from realtime_voicebot.cli import app as cli_app
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.logging import configure_logging
from realtime_voicebot.testing import PushInput, scaled
from realtime_voicebot.transport.endpoint import build_endpoint

from .app_harness import Running, fake_config, settings_for, start_bot

KEY = "sk-proj-Privacy0Canary7f3b9c2d1e0a4b5c6d7e8f9A"
KEY_PARTS = (KEY, KEY[8:], KEY[-16:])  # the whole key, and any long piece of it
EMAIL = "ada.lovelace@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
SAID = f"mail me at {EMAIL} or call {PHONE}, my card is {CARD}"


def assert_no_key(text: str, where: str) -> None:
    for part in KEY_PARTS:
        assert part not in text, f"the API key leaked into {where}"


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Logging configured as `voicebot run` does, at DEBUG, into a buffer; restored after."""
    saved = structlog.get_config()
    buffer = io.StringIO()
    yield buffer
    structlog.configure(**saved)


def transcript_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def replies(running: Running, count: int) -> None:
    await running.until(lambda: len(running.view.assistant) >= count, timeout_s=10)


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_key_absent_from_logs_messages_and_urls(
    tmp_path: Path, logs: io.StringIO, log_format: str
) -> None:
    configure_logging("DEBUG", log_format, stream=logs)
    async with FakeRealtimeServer(fake_config(api_keys=frozenset({KEY}))) as server:
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        settings = settings_for(server, tmp_path, openai_api_key=KEY, log_level="DEBUG")
        running = start_bot(server, settings, RunOptions(text=True, text_lines=lines))
        await running.session(1)

        def leaky_subscriber(action: Any) -> None:  # a bug whose exception carries the key
            raise RuntimeError(f"request failed with Authorization: Bearer {KEY}")

        running.bot.subscribe(leaky_subscriber)
        await lines.put("hello there")
        await replies(running, 1)
        await server.drop_connection()  # a reconnect logs the connection states and details
        await running.session(2)
        await lines.put(None)
        assert await running.finish() == 0
        accepted = [session.handshake.path for session in server.sessions]

    # The connection worked with the key, so it really was sent (in a header).
    assert len(accepted) == 2
    log_text = logs.getvalue()
    assert "subscriber_failed" in log_text and "Traceback" in log_text  # the traceback was logged
    assert "[key]" in log_text  # ...with the key replaced
    assert "connection_state" in log_text and "session_ready" in log_text
    assert_no_key(log_text, f"{log_format} logs")
    shown = running.view.errors + running.view.notices + running.view.statuses
    assert_no_key("\n".join(shown), "messages to the user")
    for path in accepted:
        assert_no_key(path, "the URL")
    assert_no_key(repr(build_endpoint(settings)), "the endpoint's repr")


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_rejected_key_path_leaks_nothing(
    tmp_path: Path, logs: io.StringIO, log_format: str
) -> None:
    configure_logging("DEBUG", log_format, stream=logs)
    async with FakeRealtimeServer(fake_config(api_keys=frozenset({"sk-some-other-key"}))) as server:
        settings = settings_for(server, tmp_path, openai_api_key=KEY, log_level="DEBUG")
        running = start_bot(server, settings, RunOptions(text=True, text_lines=asyncio.Queue()))
        assert await running.finish(10) == 1
        rejected = list(server.rejected)

    assert [r.status for r in rejected] == [401]
    assert_no_key(rejected[0].path, "the URL")
    assert len(running.view.errors) == 1 and "401" in running.view.errors[0]
    assert_no_key(running.view.errors[0], "the error shown to the user")
    assert_no_key(logs.getvalue(), f"{log_format} logs of a 401")


def test_config_show_never_prints_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY[::-1])
    runner = CliRunner()
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = runner.invoke(cli_app, args)
        assert result.exit_code == 0, result.output
        assert_no_key(result.output, " ".join(args))
        assert KEY[::-1][:20] not in result.output
    # A bad setting next to the key: the error names the setting, never the key.
    bad = runner.invoke(cli_app, ["config", "show", "--chunk-ms", "x"])
    assert bad.exit_code == 2
    assert_no_key(bad.output, "a settings error")


async def run_cli(args: list[str], stdin: bytes, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "realtime_voicebot",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(scaled(20)):
        out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEBOT_", "OPENAI_"))}
    env.update(OPENAI_API_KEY=KEY, XDG_STATE_HOME=str(tmp_path / "state"))
    return env


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_voicebot_run_in_a_process_leaks_nothing(tmp_path: Path, log_format: str) -> None:
    """The real CLI at DEBUG: a conversation, then a rejected key; stdout and stderr checked."""
    common = ["--text", "--log-level", "DEBUG", "--log-format", log_format]
    async with FakeRealtimeServer(fake_config(api_keys=frozenset({KEY}))) as server:
        code, output = await run_cli(
            ["run", "--url", server.url, *common, "--transcript-path", str(tmp_path / "t.jsonl")],
            b"hello from a pipe\n",
            cli_env(tmp_path),
        )
        paths = [session.handshake.path for session in server.sessions]
    assert code == 0, output
    assert "You said: hello from a pipe" in output and "session_ready" in output
    assert_no_key(output, "the output of voicebot run")
    assert paths and all(KEY not in path for path in paths)

    async with FakeRealtimeServer(fake_config(api_keys=frozenset({"sk-other"}))) as server:
        code, output = await run_cli(["run", "--url", server.url, *common], b"", cli_env(tmp_path))
    assert code == 1, output
    assert "API key" in output and "401" in output
    assert_no_key(output, "the output of a rejected run")


async def test_transcript_redacted_while_the_model_hears_everything(tmp_path: Path) -> None:
    config = fake_config(scenario=Scenario(user_transcripts=[f"spoken: {SAID}"]))
    async with FakeRealtimeServer(config) as server:
        mic = PushInput()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        settings = settings_for(server, tmp_path, redact_transcript="true")
        running = start_bot(server, settings, RunOptions(text_lines=lines), audio_in=mic)
        first = await running.session(1)
        await lines.put(f"typed: {SAID}")
        await replies(running, 1)
        mic.say(1.0, seed=7)
        mic.pause(1.0)
        await replies(running, 2)
        await server.drop_connection()
        second = await running.session(2)
        await running.wait_for(lambda: len(second.received) >= 2)
        assert await running.stop() == 0

    # What the model was sent: the typed words as they were, and the re-seed carries both turns.
    sent_text = json.dumps(first.received)
    assert f"typed: {SAID}" in sent_text
    seed = second.received[1]
    assert seed["type"] == "conversation.item.create"
    seed_text = seed["item"]["content"][0]["text"]
    assert f"typed: {SAID}" in seed_text and f"spoken: {SAID}" in seed_text

    records = transcript_records(tmp_path / "transcript.jsonl")
    turns = [(r["role"], r["text"]) for r in records if r["type"] == "turn"]
    redacted = "mail me at [email] or call [phone], my card is [card]"
    assert turns == [
        ("user", f"typed: {redacted}"),
        ("assistant", f"You said: typed: {redacted}"),
        ("user", f"spoken: {redacted}"),
        ("assistant", f"You said: spoken: {redacted}"),
    ]
    raw = (tmp_path / "transcript.jsonl").read_text()
    for secret in (EMAIL, PHONE, CARD, "7946", "1111 1111"):
        assert secret not in raw
