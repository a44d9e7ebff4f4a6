"""The JSONL transcript: every finished turn and every summary, one record a line.

`TranscriptWriter.write` never blocks the event loop: records go through a bounded queue to
a worker thread that appends and flushes them at once. The file is private (``0600``, see
`realtime_voicebot.files`). `load_transcript` reads a file back for ``voicebot run --resume``:
the latest summary and the turns it does not cover. A file that is not a transcript (a
folder, a device, too large, no record in it) raises `TranscriptError`, one line naming the
file and the problem; records that are torn, not UTF-8 or hold a field of the wrong type are
skipped and counted in one warning.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import stat
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from realtime_voicebot.errors import UserError
from realtime_voicebot.files import open_private

log = structlog.get_logger(component="transcript")

JSON = dict[str, Any]
Redact = Callable[[str], str]

MAX_QUEUE = 10_000
MAX_TRANSCRIPT_BYTES = 64 * 1024 * 1024
"""The largest transcript `--resume` reads (a two-hour conversation is about 1 MB)."""
REDACTED_FIELDS = ("text", "heard_text")


def default_transcript_path(now: datetime | None = None) -> Path:
    """``$XDG_STATE_HOME/voicebot/transcripts/<UTC timestamp>.jsonl`` (else ~/.local/state)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return Path(base) / "voicebot" / "transcripts" / f"{moment:%Y%m%dT%H%M%SZ}.jsonl"


_STOP = object()
_SURROGATE = re.compile("[\ud800-\udfff]")


class TranscriptWriter:
    """Appends records to ``path`` from a worker thread; `write` only enqueues.

    ``redact`` is applied to the text fields before writing. When the queue is full (the
    disk cannot keep up) a record is dropped and counted in ``dropped``.
    """

    def __init__(
        self, path: Path | str, *, redact: Redact | None = None, max_queue: int = MAX_QUEUE
    ) -> None:
        self.path = Path(path)
        self.redact = redact
        self._file = open_private(self.path, "a")
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._done = threading.Condition()
        self.enqueued = 0
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="transcript-writer", daemon=True)
        self._thread.start()

    def write(self, record: JSON) -> bool:
        """Queue one record; False (and counted) when it had to be dropped."""
        if self._closed:
            self.dropped += 1
            return False
        with self._done:
            self.enqueued += 1
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            with self._done:
                self.enqueued -= 1
            self.dropped += 1
            log.warning("transcript_record_dropped", dropped=self.dropped)
            return False
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every record queued so far is on disk; False on timeout.

        Blocking: from async code use ``await asyncio.to_thread(writer.flush)``.
        """
        with self._done:
            target = self.enqueued
            return self._done.wait_for(lambda: self.written + self.errors >= target, timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Write everything queued, then close the file. Idempotent; blocking; never raises:
        a disk that fails (full, gone) is logged and counted in ``errors``, so that what the
        caller does next (the metrics file) still happens."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            try:
                self._file.close()  # flushes what a failed flush left in the buffer
            except OSError as exc:
                self.errors += 1
                log.error("transcript_close_failed", path=str(self.path), error=exc.strerror)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def _line(self, record: JSON) -> str:
        record = dict(record)
        record.setdefault("ts", datetime.now(UTC).isoformat(timespec="milliseconds"))
        if self.redact is not None:
            for key in REDACTED_FIELDS:
                if isinstance(record.get(key), str):
                    record[key] = self.redact(record[key])
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        # Half a UTF-16 pair (stdin read with surrogateescape) cannot be written as UTF-8.
        return _SURROGATE.sub("\ufffd", line)

    def _work(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            ok = failed = 0
            for record in batch:
                if record is _STOP:
                    stop = True
                    continue
                try:
                    assert isinstance(record, dict)
                    self._file.write(self._line(record))
                    ok += 1
                except Exception:
                    failed += 1
                    log.exception("transcript_write_failed")
            try:
                self._file.flush()
            except (OSError, ValueError) as exc:
                log.error("transcript_flush_failed", path=str(self.path), error=str(exc))
            with self._done:
                self.written += ok
                self.errors += failed
                self._done.notify_all()


@dataclass(frozen=True, slots=True)
class TranscriptTurn:
    """A turn read back: ``text`` is what the conversation held (the heard part if cut)."""

    item_id: str | None
    role: str
    text: str
    truncated: bool = False


class TranscriptError(UserError, ValueError):
    """A file that cannot be read back as a transcript; one line naming it and the problem."""


_TURN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "item_id": str,
    "role": str,
    "text": str,
    "heard_text": str,
    "truncated": bool,
}
_SUMMARY_FIELDS: dict[str, type | tuple[type, ...]] = {"text": str, "summarized_ids": list}


def _wrong_field(record: JSON) -> str | None:
    """The first field of a turn or summary record holding the wrong type, if any."""
    kind = record.get("type")
    if not isinstance(kind, str):
        return "type"
    fields = _TURN_FIELDS if kind == "turn" else _SUMMARY_FIELDS if kind == "summary" else {}
    for name, expected in fields.items():
        value = record.get(name)
        if value is not None and not isinstance(value, expected):
            return name
    ids = record.get("summarized_ids")
    if isinstance(ids, list) and not all(isinstance(i, str) for i in ids):
        return "summarized_ids"
    return None


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; TranscriptError otherwise."""
    try:
        # O_NONBLOCK: a FIFO is refused below instead of waiting here for a writer.
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TranscriptError(f"no transcript at {path}: check the path") from None
    except OSError as exc:
        raise TranscriptError(f"cannot read {path}: {exc.strerror or exc}") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        if stat.S_ISDIR(mode):
            raise TranscriptError(f"{path} is a folder; give the transcript file (.jsonl)")
        raise TranscriptError(f"{path} is not a regular file; give a transcript (.jsonl)")
    with os.fdopen(descriptor, "rb") as file:
        limit = f"{max_bytes // 2**20} MiB" if max_bytes >= 2**20 else f"{max_bytes} bytes"
        too_large = TranscriptError(f"{path} is larger than {limit}: not a voicebot transcript")
        if os.fstat(descriptor).st_size > max_bytes:
            raise too_large
        try:
            data = file.read(max_bytes + 1)
        except OSError as exc:
            raise TranscriptError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > max_bytes:  # it grew while we looked
            raise too_large
        return data


def read_records(path: Path | str, *, max_bytes: int = MAX_TRANSCRIPT_BYTES) -> list[JSON]:
    """Every well-formed record of a transcript file, in order.

    Lines that are torn, not UTF-8, not a JSON object or hold a field of the wrong type are
    skipped and counted in one warning. Raises `TranscriptError` when the file cannot be read,
    is not a regular file, is larger than ``max_bytes``, or has lines but no record at all.
    """
    path = Path(path)
    data = _read_bounded(path, max_bytes)
    records: list[JSON] = []
    skipped: Counter[str] = Counter()
    first_skipped: int | None = None
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        reason: str | None
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            reason = "not UTF-8"
        except (ValueError, RecursionError):
            reason = "not JSON"
        else:
            if not isinstance(record, dict):
                reason = "not a JSON object"
            elif (field := _wrong_field(record)) is not None:
                reason = f"wrong type in {field!r}"
            else:
                records.append(record)
                continue
        skipped[reason] += 1
        first_skipped = first_skipped or number
    if skipped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in skipped.most_common())
        if not records:
            raise TranscriptError(
                f"{path} holds no transcript record ({reasons}; first at line {first_skipped}): "
                "is it a voicebot transcript?"
            )
        log.warning(
            "transcript_lines_skipped",
            path=str(path),
            skipped=sum(skipped.values()),
            reasons=reasons,
            first_line=first_skipped,
        )
    return records


def load_transcript(
    path: Path | str, *, max_bytes: int = MAX_TRANSCRIPT_BYTES
) -> tuple[str | None, list[TranscriptTurn]]:
    """The latest summary and the turns no summary covers, in file order.

    Raises `TranscriptError` for a file that is not a transcript (see `read_records`).
    """
    records = read_records(path, max_bytes=max_bytes)
    summary: str | None = None
    covered: set[str] = set()
    for record in records:
        if record.get("type") == "summary" and isinstance(record.get("text"), str):
            summary = record["text"]
            covered.update(record.get("summarized_ids") or [])
    turns: dict[str, TranscriptTurn] = {}
    anonymous = 0
    for record in records:
        if record.get("type") != "turn" or record.get("role") not in ("user", "assistant"):
            continue
        item_id = record.get("item_id") if isinstance(record.get("item_id"), str) else None
        if item_id is not None and item_id in covered:
            continue
        truncated = bool(record.get("truncated"))
        text = record.get("heard_text") if truncated else record.get("text")
        if not isinstance(text, str) or not text.strip():
            continue
        key = item_id if item_id is not None else f"#{(anonymous := anonymous + 1)}"
        turns.pop(key, None)
        turns[key] = TranscriptTurn(item_id, str(record["role"]), text.strip(), truncated)
    return summary, list(turns.values())
