"""Files the bot reads that it did not write (issue 13, item 16): a transcript to resume and a
WAV input give one line naming the file and the problem, within a size bound."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest
from typer.testing import CliRunner

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.devices import AudioUnavailableError
from realtime_voicebot.audio.files import AudioFileError, check_wav, load_wav_pcm16_24k
from realtime_voicebot.cli import app
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.transcript import TranscriptError, load_transcript, read_records

from .app_harness import fake_config, settings_for, start_bot

runner = CliRunner()
TURN = {"type": "turn", "item_id": "u1", "role": "user", "text": "hello"}


def jsonl(path: Path, *records: object, raw: bytes = b"") -> Path:
    body = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    path.write_bytes(body + raw)
    return path


# --- --resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "summary", "text": "S", "summarized_ids": 5},
        {"type": "summary", "text": "S", "summarized_ids": [["u1"]]},
        {"type": "summary", "text": ["S"]},
        {"type": "turn", "item_id": {"id": 1}, "role": "user", "text": "x"},
        {"type": "turn", "item_id": "u2", "role": ["user"], "text": "x"},
        {"type": "turn", "item_id": "u2", "role": "user", "text": 7},
        {"type": "turn", "item_id": "u2", "role": "user", "truncated": "yes", "heard_text": 1},
        {"type": 3},
    ],
)
def test_a_record_with_a_field_of_the_wrong_type_is_skipped(tmp_path: Path, bad: object) -> None:
    path = jsonl(tmp_path / "t.jsonl", TURN, bad)
    summary, turns = load_transcript(path)
    assert summary is None and [t.text for t in turns] == ["hello"]


def test_a_line_that_is_not_utf8_is_skipped(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "t.jsonl", TURN, raw=b'{"type": "turn", "text": "\xff\xfe"}\n')
    assert read_records(path) == [TURN]


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda tmp: tmp, "is a folder"),
        (lambda tmp: Path("/dev/zero"), "not a regular file"),
        (lambda tmp: tmp / "missing.jsonl", "no transcript at"),
        (
            lambda tmp: jsonl(tmp / "bin", raw=b"\x7fELF\x02\x01\x01\x00" * 50),
            "no transcript record",
        ),
        (lambda tmp: jsonl(tmp / "t", raw=b"\xff\xfe not text\n" * 3), "3 not UTF-8"),
        (lambda tmp: jsonl(tmp / "big", TURN, raw=b" " * 5000), "larger than"),
    ],
)
def test_a_file_that_is_no_transcript_is_one_line_naming_it(
    tmp_path: Path, make: object, problem: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(TranscriptError) as err:
        load_transcript(path, max_bytes=4096)
    message = str(err.value)
    assert str(path) in message and problem in message and "\n" not in message


def test_a_well_formed_transcript_under_the_bound_loads(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "t.jsonl", TURN, {"type": "summary", "text": "S"})
    assert load_transcript(path, max_bytes=4096)[0] == "S"
    assert load_transcript(jsonl(tmp_path / "empty.jsonl")) == (None, [])


@pytest.mark.parametrize("target", ["folder", "/dev/zero", "not-utf8"])
def test_run_resume_with_a_bad_file_is_one_line(tmp_path: Path, target: str) -> None:
    path = {
        "folder": tmp_path,
        "/dev/zero": Path("/dev/zero"),
        "not-utf8": jsonl(tmp_path / "t.jsonl", raw=b"\xff\n"),
    }[target]
    result = runner.invoke(app, ["run", "--fake-server", "--text", "--resume", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --resume: ") and str(path) in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- --input-file -----------------------------------------------------------------------------


def write_wav(path: Path, frames: bytes = b"\0\0" * 480, rate: int = 24000) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return path


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"ID3\x04\x00 an mp3 " * 20, "Cannot read"),
        (b"", "ends too early"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "Cannot read"),
        (None, "is a folder"),
    ],
)
def test_a_file_that_is_no_wav_is_one_line_naming_it(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    path = tmp_path / "in.wav"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    for read in (check_wav, load_wav_pcm16_24k):
        with pytest.raises(AudioFileError) as err:
            read(path)
        assert str(path) in str(err.value) and problem in str(err.value)
    assert issubclass(AudioFileError, AudioUnavailableError)


def test_a_wav_with_a_torn_last_frame_loads(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "in.wav")
    with path.open("ab") as file:
        file.write(b"\x01")  # half a sample past the data chunk: ignored by wave
    check_wav(path)
    assert load_wav_pcm16_24k(path).shape == (480,)


def test_run_with_a_non_wav_input_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "talk.mp3"
    path.write_bytes(b"ID3\x04\x00" * 100)
    result = runner.invoke(app, ["run", "--fake-server", "--input-file", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--input-file" in lines[0] and str(path) in lines[0]


async def test_the_app_reports_a_non_wav_input_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "talk.mp3"
    path.write_bytes(b"ID3\x04\x00" * 100)
    async with FakeRealtimeServer(fake_config()) as server:
        running = start_bot(server, settings_for(server, tmp_path), RunOptions(input_file=path))
        code = await running.finish()
    assert code == 2
    (error,) = running.view.errors
    assert str(path) in error and "\n" not in error
