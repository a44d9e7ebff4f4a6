"""What the session core asks the shells to do, and what it tells them happened.

Every input of `SessionCore` returns a list of these, in order. The app performs them: a
`Send` goes to the client's outbox, player commands to the audio output, work requests to
background tasks and timers, and the rest (what happened) to the view, the metrics, the
transcript and the tracer. None of them does anything by itself.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from realtime_voicebot.summarization.base import SummaryInput
from realtime_voicebot.transport.payloads import Usage

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Action:
    """Base of everything the core returns."""


# --- to the server -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send(Action):
    """A client event for the outbox (sent in order on the current session)."""

    event: JSON


# --- to the audio output -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlayAudio(Action):
    item_id: str
    pcm: bytes
    """PCM16 24 kHz mono."""


@dataclass(frozen=True, slots=True)
class EndAudio(Action):
    """No more audio will come for this item: play out what is buffered."""

    item_id: str


@dataclass(frozen=True, slots=True)
class StopPlayback(Action):
    """Go silent now (a short fade) and drop everything buffered."""


# --- background work, reported back as inputs ---------------------------------------------


@dataclass(frozen=True, slots=True)
class RunTool(Action):
    """Run a function call; report with `SessionCore.tool_finished(call_id, result)`."""

    call_id: str
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class CancelTool(Action):
    """The call will never be answered (its response or session ended): stop it."""

    call_id: str


@dataclass(frozen=True, slots=True)
class Summarize(Action):
    """Summarize for a compaction; report with `SessionCore.summary_ready(job_id, ...)`."""

    job_id: int
    inputs: Sequence[SummaryInput]
    previous_summary: str | None
    language: str
    fallback: bool = False
    """The session could not write this summary (``summarizer realtime``): whatever writes
    it now is its fallback, and is reported as one."""


@dataclass(frozen=True, slots=True)
class StartTimer(Action):
    """Call `SessionCore.timer_fired(key)` after ``seconds`` (replaces a timer of that key)."""

    key: Hashable
    seconds: float


@dataclass(frozen=True, slots=True)
class RollOver(Action):
    """Close this session cleanly and open a new one (before the server's time limit)."""


@dataclass(frozen=True, slots=True)
class Reconnect(Action):
    """Drop this connection and open a new session (the server stopped answering)."""

    reason: str


# --- what happened: for the view, the metrics, the transcript and the tracer ---------------


@dataclass(frozen=True, slots=True)
class StatusChanged(Action):
    """listening, user speaking, thinking, speaking, connecting, connected, reconnecting..."""

    status: str


@dataclass(frozen=True, slots=True)
class UserTurn(Action):
    """Something the user said (its transcript) or typed."""

    text: str
    typed: bool = False


@dataclass(frozen=True, slots=True)
class SpeechEnded(Action):
    """The server heard the user stop talking (``speech_stopped``): a reply is due."""


@dataclass(frozen=True, slots=True)
class ReplyStarted(Action):
    """The first audio of a reply arrived."""

    item_id: str


@dataclass(frozen=True, slots=True)
class ReplyDelta(Action):
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ReplyDone(Action):
    """A reply ended: what the user heard of it, and whether it was cut."""

    item_id: str
    text: str
    truncated: bool
    completed: bool


@dataclass(frozen=True, slots=True)
class BargeIn(Action):
    """The user talked (or typed) over a reply; it was silenced and truncated."""

    item_id: str
    played_ms: float
    cause: Literal["speech", "typed"]


@dataclass(frozen=True, slots=True)
class ResponseFinished(Action):
    """A response of the conversation ended (``response.done``) with this usage."""

    response_id: str | None
    status: str
    usage: Usage | None
    window_tokens: int


@dataclass(frozen=True, slots=True)
class OutOfBandFinished(Action):
    """A response outside the conversation ended (the session's own summary): billed like
    any response, never a turn. ``purpose`` is its ``metadata.purpose`` ("" when none)."""

    response_id: str | None
    status: str
    usage: Usage | None
    purpose: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted(Action):
    call_id: str
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallFinished(Action):
    call_id: str
    name: str | None
    outcome: str
    output_chars: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class CompactionStarted(Action):
    job_id: int
    reason: str
    items: int


@dataclass(frozen=True, slots=True)
class Compacted(Action):
    """Older turns are now one summary item on the server."""

    job_id: int
    items: int
    summary_chars: int
    fallback: bool


@dataclass(frozen=True, slots=True)
class SessionBegan(Action):
    """A session is ready: ``reason`` is start, reconnect, rollover or expired."""

    number: int
    reason: str


@dataclass(frozen=True, slots=True)
class Notice(Action):
    text: str


@dataclass(frozen=True, slots=True)
class ErrorReported(Action):
    """A problem, counted by ``code``; ``text`` is shown to the user (None: counted only)."""

    code: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Record(Action):
    """A transcript record (a finished turn or an adopted summary)."""

    record: JSON
