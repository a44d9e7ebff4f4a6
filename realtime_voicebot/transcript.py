"""The JSONL transcript: every finished turn and every summary, one record a line.

`TranscriptWriter.write` never blocks the event loop: records go through a bounded queue to
a worker thread that appends and flushes them at once. `load_transcript` reads a file back
for ``voicebot run --resume``: the latest summary and the turns it does not cover.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(component="transcript")

JSON = dict[str, Any]
Redact = Callable[[str], str]

MAX_QUEUE = 10_000
REDACTED_FIELDS = ("text", "heard_text")


def default_transcript_path(now: datetime | None = None) -> Path:
    """``$XDG_STATE_HOME/voicebot/transcripts/<UTC timestamp>.jsonl`` (else ~/.local/state)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return Path(base) / "voicebot" / "transcripts" / f"{moment:%Y%m%dT%H%M%SZ}.jsonl"


_STOP = object()


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
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
        """Write everything queued, then close the file. Idempotent; blocking."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._file.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def _line(self, record: JSON) -> str:
        record = dict(record)
        record.setdefault("ts", datetime.now(UTC).isoformat(timespec="milliseconds"))
        if self.redact is not None:
            for key in REDACTED_FIELDS:
                if isinstance(record.get(key), str):
                    record[key] = self.redact(record[key])
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"

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
            except OSError:
                log.exception("transcript_flush_failed")
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


def read_records(path: Path | str) -> list[JSON]:
    """Every well-formed record of a transcript file (a torn last line is skipped)."""
    records: list[JSON] = []
    with Path(path).open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                log.warning("transcript_line_skipped", path=str(path), line=number)
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def load_transcript(path: Path | str) -> tuple[str | None, list[TranscriptTurn]]:
    """The latest summary and the turns no summary covers, in file order."""
    records = read_records(path)
    summary: str | None = None
    covered: set[str] = set()
    for record in records:
        if record.get("type") == "summary" and isinstance(record.get("text"), str):
            summary = record["text"]
            covered.update(i for i in record.get("summarized_ids") or [] if isinstance(i, str))
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
