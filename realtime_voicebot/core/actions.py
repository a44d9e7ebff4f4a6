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


@dataclass(frozen=True, slots=True)
class PausePlayback(Action):
    """Go silent now (a short fade) but keep what is buffered and the played position."""


@dataclass(frozen=True, slots=True)
class ResumePlayback(Action):
    """Play on from where the pause stopped."""


# --- to the microphone ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenMicrophone(Action):
    """Send microphone audio to the server (push-to-talk: the key is down)."""


@dataclass(frozen=True, slots=True)
class CloseMicrophone(Action):
    """Send no microphone audio (push-to-talk: between turns)."""


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
    item_id: str | None = None
    """The user item (spoken: the server's; typed: the client-chosen id)."""


@dataclass(frozen=True, slots=True)
class SpeechStarted(Action):
    """The server heard the user start talking (``speech_started``)."""

    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechEnded(Action):
    """The server heard the user stop talking (``speech_stopped``): a reply is due."""

    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseCreated(Action):
    """The server started a response of the conversation (``response.created``)."""

    response_id: str


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
class InterruptionIgnored(Action):
    """Speech over a reply was noise or a backchannel: the reply resumed where it paused."""

    item_id: str | None
    reason: Literal["short", "backchannel", "empty"]


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
    error: str | None = None
    """What went wrong (the error output's message), for an outcome other than ``ok``."""


# --- hosted MCP tools (GA): the service calls them; see core/approvals.py ------------------


@dataclass(frozen=True, slots=True)
class HostedToolsListed(Action):
    """The service listed a hosted MCP server's tools (``ok``), or could not."""

    server_label: str
    tools: tuple[str, ...]
    ok: bool


@dataclass(frozen=True, slots=True)
class HostedCallStarted(Action):
    """The service calls a hosted MCP tool (``item_id`` is its ``mcp_call`` item)."""

    item_id: str
    server_label: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class HostedCallFinished(Action):
    item_id: str
    server_label: str
    name: str
    ok: bool
    output_chars: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovalRequested(Action):
    """A hosted MCP call waits for the user's yes or no (answered within ``timeout_s``)."""

    request_id: str
    server_label: str
    name: str
    arguments: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class ApprovalAnswered(Action):
    """An approval request was answered: by the user, or refused for want of an answer
    (``how`` is ``user``, ``timeout`` or ``session ended``: then nothing was sent)."""

    request_id: str
    server_label: str
    name: str
    approved: bool
    how: str


@dataclass(frozen=True, slots=True)
class CompactionStarted(Action):
    job_id: int
    reason: str
    items: int


@dataclass(frozen=True, slots=True)
class SummaryAsked(Action):
    """The session itself was asked for the summary of job ``job_id`` (out of band); its
    `SummaryReady` follows, or a `Summarize` with ``fallback`` when it does not come."""

    job_id: int
    inputs: int
    previous_summary: bool
    language: str


@dataclass(frozen=True, slots=True)
class SummaryReady(Action):
    """The summary of job ``job_id`` arrived (``fallback``: the fallback summarizer wrote it)."""

    job_id: int
    summary_chars: int
    fallback: bool


@dataclass(frozen=True, slots=True)
class CompactionFailed(Action):
    """Compaction ``job_id`` ended without its summary confirmed: the turns stay as they were."""

    job_id: int


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
