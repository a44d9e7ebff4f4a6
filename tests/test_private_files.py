"""Files about the conversation are private and never written through a planted link (issue
13, item 15), and a full disk under the transcript does not lose the metrics file (item 16)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from realtime_voicebot.app import RunOptions
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.files import (
    PrivateFileError,
    open_private,
    open_private_binary,
    write_private_text,
)
from realtime_voicebot.transcript import TranscriptWriter

from .app_harness import fake_config, settings_for, start_bot


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The usual umask 022: what is private must be made so, not inherited."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_transcript_is_created_private_in_private_folders(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    path = home / "state" / "voicebot" / "t.jsonl"
    writer = TranscriptWriter(path)
    writer.write({"type": "turn", "role": "user", "text": "secret plans"})
    writer.close()
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(path.parent.parent) == 0o700
    assert mode(home) == 0o755  # an existing folder is left as the user has it
    assert "secret plans" in path.read_text()


def test_a_symlink_planted_at_the_transcript_path_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    planted = tmp_path / "t.jsonl"
    planted.symlink_to(victim)
    with pytest.raises(PrivateFileError, match="symbolic link"):
        TranscriptWriter(planted)
    dangling = tmp_path / "d.jsonl"
    dangling.symlink_to(tmp_path / "would-be-created.txt")
    with pytest.raises(OSError, match="symbolic link"):
        write_private_text(dangling, "{}")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "would-be-created.txt").exists()


def test_an_existing_file_of_the_user_is_appended_to_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"type": "turn"}\n')
    path.chmod(0o640)
    writer = TranscriptWriter(path)
    writer.write({"type": "summary", "text": "s"})
    writer.close()
    assert len(path.read_text().splitlines()) == 2 and mode(path) == 0o640


def test_metrics_file_is_private_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "out" / "m.json"
    write_private_text(path, '{"turns": 1}\n')
    write_private_text(path, '{"turns": 2}\n')
    assert json.loads(path.read_text()) == {"turns": 2}
    assert mode(path) == 0o600 and mode(path.parent) == 0o700


def test_a_recording_opens_private_bytes(tmp_path: Path) -> None:
    path = tmp_path / "rec" / "session.jsonl"
    with open_private_binary(path, "ab") as file:
        file.write(b"frame\n")
    assert path.read_bytes() == b"frame\n" and mode(path) == 0o600


def test_a_fifo_or_a_folder_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(PrivateFileError, match="pipe"):
        open_private(fifo)  # no reader: without O_NONBLOCK this would block for ever
    with pytest.raises(PrivateFileError, match="folder"):
        open_private(tmp_path)


def test_dev_null_still_works_as_a_transcript() -> None:
    writer = TranscriptWriter("/dev/null")
    writer.write({"type": "turn", "role": "user", "text": "gone"})
    assert writer.flush(5)
    writer.close()
    assert writer.errors == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_under_the_transcript_is_counted_and_close_does_not_raise() -> None:
    writer = TranscriptWriter("/dev/full")
    writer.write({"type": "turn", "role": "user", "text": "lost"})
    writer.close()  # the buffered line fails again here: logged and counted, not raised
    assert writer.errors >= 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
async def test_transcript_on_dev_full_keeps_the_metrics_file(tmp_path: Path) -> None:
    metrics = tmp_path / "m.json"
    async with FakeRealtimeServer(fake_config()) as server:
        settings = settings_for(
            server, tmp_path, transcript_path="/dev/full", metrics_file=str(metrics)
        )
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        running = start_bot(server, settings, RunOptions(text=True, text_lines=lines))
        await lines.put("hello there")
        await running.until(lambda: running.view.assistant, 10)
        await lines.put(None)
        await running.finish()
    assert json.loads(metrics.read_text())["turns"] == 1
