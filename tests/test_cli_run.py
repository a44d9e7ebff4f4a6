"""`voicebot run` as a user runs it: a real process, real signals, real exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.testing import scaled

VOICEBOT = [sys.executable, "-m", "realtime_voicebot"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VOICEBOT_", "OPENAI_", "AZURE_OPENAI_"))
    }
    env.update(extra)
    return env


async def run_cli(
    *args: str, env: dict[str, str], stdin: bytes = b"", timeout_s: float = 30
) -> tuple[int, str, str, float]:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *VOICEBOT,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(scaled(timeout_s)):
        out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), time.monotonic() - started


async def test_bad_key_exits_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    config = FakeServerConfig(api_keys=frozenset({"sk-right"}))
    async with FakeRealtimeServer(config) as server:
        code, out, err, elapsed = await run_cli(
            "run",
            "--text",
            "--url",
            server.url,
            "--transcript",
            str(tmp_path / "t.jsonl"),
            env=clean_env(OPENAI_API_KEY="sk-wrong-secret"),
        )
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "API key" in errors[0] and "OPENAI_API_KEY" in errors[0]
    assert "Traceback" not in err + out
    assert "sk-wrong-secret" not in err + out
    print(f"401 to exit: {elapsed:.2f} s (process start included)")


async def test_missing_key_says_how_to_fix(tmp_path: Path) -> None:
    code, _, err, _ = await run_cli(
        "run", "--text", "--transcript", str(tmp_path / "t.jsonl"), env=clean_env()
    )
    assert code == 2
    assert "OPENAI_API_KEY" in err and "--fake-server" in err
    assert "Traceback" not in err


async def test_ctrl_c_ends_cleanly_with_the_transcript_flushed(tmp_path: Path) -> None:
    transcript = tmp_path / "t.jsonl"
    proc = await asyncio.create_subprocess_exec(
        *VOICEBOT,
        "run",
        "--fake-server",
        "--text",
        "--transcript",
        str(transcript),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"hello from the terminal\n")
    await proc.stdin.drain()
    async with asyncio.timeout(scaled(20)):
        while b"You said: hello from the terminal" not in await proc.stdout.readline():
            pass
    proc.send_signal(signal.SIGINT)  # stdin stays open: only Ctrl-C can end this run
    async with asyncio.timeout(scaled(20)):
        await proc.wait()
    err = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    records = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert [(r["role"], r["text"]) for r in records if r["type"] == "turn"] == [
        ("user", "hello from the terminal"),
        ("assistant", "You said: hello from the terminal"),
    ]
