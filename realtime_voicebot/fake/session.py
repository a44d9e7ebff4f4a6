"""One fake Realtime session: the protocol state machine behind one WebSocket connection.

It reads client events, keeps the session settings, the input audio buffer with its VAD and
the conversation, and starts responses (`response.py` streams them). Frames go out through a
`Transport` (the WebSocket shell in `server.py`), so nothing here knows about sockets.

Ordering rules the service follows and this class keeps:
- client events are handled one at a time, in order; ``response.created`` is sent before the
  next client event is read;
- a response streams in its own task; cancelling it (barge-in or ``response.cancel``) waits
  for that task, so ``response.done`` (status ``cancelled``) is the last event of that
  response and no delta follows it;
- only one response writes to the default conversation at a time (`active_response`);
  out-of-band ones (``conversation: "none"``) run beside it, add no item, are not cancelled
  by speech, and do not consume the scenario (see `out_of_band_reply`).

Idle timeout (GA ``server_vad`` with ``idle_timeout_ms``): the clock is the input audio
received, like every ``audio_*_ms``. When a default-conversation response ends, the end of
its playback is estimated as the later of the input position at ``response.done`` and the
position at its first audio delta plus its audio length. Once ``idle_timeout_ms`` of input
follow that point with no speech, no commit and no response, the session sends
``input_audio_buffer.timeout_triggered`` ``{audio_start_ms: playback end, audio_end_ms,
item_id}``, commits the uncommitted buffer up to ``audio_end_ms`` as a user item (transcript
empty; no scenario line is used), and replies: the next scripted reply, or `IDLE_PROMPT`.
It replies whatever ``create_response`` says (the SDK documents the reply as automatic).
It fires once per reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import structlog

from realtime_voicebot.fake import mcp, session_config
from realtime_voicebot.fake.config import FakeServerConfig, Faults
from realtime_voicebot.fake.conversation import (
    ContentPart,
    Conversation,
    IdFactory,
    Item,
    ItemView,
    TokenCount,
    cached_tokens,
    item_blocks,
)
from realtime_voicebot.fake.errors import RequestError, SessionEnded
from realtime_voicebot.fake.parsing import decode_audio, item_from_client, require_int, require_str
from realtime_voicebot.fake.response import ResponseRun
from realtime_voicebot.fake.scenario import Reply, ScenarioCursor
from realtime_voicebot.fake.vad import EnergyVad, SpeechStarted, VadSettings
from realtime_voicebot.transport.events import (
    PCM_RATE,
    ClientEventType,
    Dialect,
    ErrorCode,
    ItemType,
    ServerEventType,
    wire_name,
)

JSON = dict[str, Any]
S = ServerEventType
C = ClientEventType
SAMPLES_PER_MS = PCM_RATE // 1000
MIN_COMMIT_MS = 100
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
"""The error code when truncation is disabled and the input is over the limit (modelled on
the Chat Completions code; the Realtime service's exact wording is not documented)."""

IDLE_PROMPT = "Are you still there?"
"""The reply to an idle timeout when the scenario has no line left."""
RECENT_PROMPTS = 8
"""Prompts the cache model remembers: a response's cached input is its longest common
prefix with any of them (so an out-of-band summary does not evict the conversation's)."""
SUMMARY_LINE_CHARS = 200
SUMMARY_MAX_CHARS = 1_500
"""A summary is about as long as a model asked for some 250 words writes."""
SUMMARY_WORDS = re.compile(r"summar", re.IGNORECASE)

log = structlog.get_logger(component="fake_server")


def out_of_band_reply(request: JSON, items: list[Item]) -> str:
    """What an out-of-band response says (deterministic; the scenario is not used).

    A summary request (``instructions`` mentioning a summary, ``metadata.purpose`` of
    ``summary``, or a last ``input`` entry that is an inline system message mentioning a
    summary: the request given as an item, which is not itself summarized) gets
    ``Summary:`` and one line per message or tool item it read, oldest first: ``role:
    words`` (each cut to 200 characters), so that a summary of a summary carries the
    earlier lines forward. Beyond `SUMMARY_MAX_CHARS` the oldest lines after the first give
    way. Anything else echoes the last user words, as a normal reply does.
    """
    instructions = request.get("instructions")
    metadata = request.get("metadata")
    purpose = metadata.get("purpose") if isinstance(metadata, dict) else None
    asked_by_item = _summary_asked_by_last_item(request, items)
    if asked_by_item:
        items = items[:-1]
    if (
        (isinstance(instructions, str) and SUMMARY_WORDS.search(instructions))
        or purpose == "summary"
        or asked_by_item
    ):
        lines = ["Summary:"]
        for item in items:
            words = " ".join(item.text().split())
            if not words:
                continue
            if len(words) > SUMMARY_LINE_CHARS:
                words = words[: SUMMARY_LINE_CHARS - 3].rstrip() + "..."
            lines.append(f"{item.role or item.type}: {words}")
        if len(lines) == 1:
            lines.append("(nothing was said)")
        while len(lines) > 3 and sum(len(line) + 1 for line in lines) > SUMMARY_MAX_CHARS:
            del lines[2]
        return "\n".join(lines)
    for item in reversed(items):
        if item.type == ItemType.MESSAGE and item.role == "user" and item.text():
            return f"You said: {item.text()}"
    return "Nothing to answer."


def _summary_asked_by_last_item(request: JSON, items: list[Item]) -> bool:
    """Whether the request's last ``input`` entry is an inline system message asking for a
    summary (then it is the request, not conversation to summarize)."""
    entries = request.get("input")
    if not isinstance(entries, list) or not entries or not items:
        return False
    last = entries[-1]
    item = items[-1]
    return (
        isinstance(last, dict)
        and last.get("type") == ItemType.MESSAGE
        and item.role == "system"
        and bool(SUMMARY_WORDS.search(item.text()))
    )


class Transport(Protocol):
    """How a session's frames leave: implemented by the WebSocket shell."""

    async def send(self, frame: str | bytes) -> None:
        """Send one text frame; raise `SessionEnded` when the connection is gone."""

    async def close(self, code: int, reason: str) -> None:
        """Close with a close frame (a clean close)."""

    def drop(self) -> None:
        """End the TCP connection without a close frame (the client sees 1006)."""


@dataclass(frozen=True)
class Handshake:
    """What the client asked for when it connected."""

    path: str
    model: str
    dialect: Dialect
    endpoint: Literal["openai", "azure", "azure-legacy"]
    api_version: str | None = None


def _b64_size(value: str) -> int:
    return len(value) * 3 // 4 - value[-2:].count("=")


def _record(event: JSON, keep_audio: bool, audio_key: str) -> JSON:
    """A copy for inspection, with base64 audio replaced by a size placeholder."""
    value = event.get(audio_key)
    if keep_audio or not isinstance(value, str):
        return dict(event)
    return {**event, audio_key: f"<{_b64_size(value)} bytes>"}


class FakeSession:
    """The state of one connection; the public attributes are what tests inspect."""

    def __init__(
        self,
        *,
        handshake: Handshake,
        config: FakeServerConfig,
        faults: Faults,
        ids: IdFactory,
        cursor: ScenarioCursor,
        changed: asyncio.Condition,
        transport: Transport,
    ) -> None:
        self.handshake = handshake
        self.dialect: Dialect = handshake.dialect
        self.config = config
        self.faults = faults
        self.ids = ids
        self.cursor = cursor
        self.transport = transport
        self._changed = changed
        self.id = ids.new("sess")
        self.conversation_id = ids.new("conv")
        self.opened_at = time.time()
        limit = config.session_max_s
        expires = self.opened_at + limit
        # An int like the service; a short (test) limit keeps millisecond precision.
        self.expires_at: float = int(expires) if limit >= 60 else round(expires, 3)
        self.session: JSON = session_config.default_session(
            self.dialect, self.id, handshake.model, self.expires_at
        )
        self.conversation = Conversation()
        self.received: list[JSON] = []
        """Every client event received, in order (base64 audio replaced by its size)."""
        self.sent: list[JSON] = []
        """Every server event sent, in order (base64 audio replaced by its size)."""
        self.faults_fired: list[str] = []
        self.truncated_ids: list[str] = []
        """Items the session's ``truncation`` dropped, oldest first."""
        self.events_counted = 0
        self.muted = False
        """Sends nothing (a server gone silent; see `Faults.mute_after_events`)."""
        self.muted_events = 0
        """Server events sent, injected ones excluded: what ``Faults.*_after_events`` count."""
        self.responses: list[ResponseRun] = []
        """Every response of the session, out-of-band ones included, in creation order."""
        self.active_response: ResponseRun | None = None
        """The response writing to the default conversation now (at most one)."""
        self.out_of_band: list[ResponseRun] = []
        """Out-of-band responses (``conversation: "none"``) still running."""
        self.mcp_listed: dict[str, str] = {}
        """MCP server label -> the configuration last listed (`fake.mcp.McpServer.key`)."""
        self.mcp_tools: dict[str, list[JSON]] = {}
        """MCP server label -> the tools listed (empty when listing failed)."""
        self.mcp_pending: dict[str, mcp.PendingApproval] = {}
        """Approval requests waiting for the client's ``mcp_approval_response``, by item id."""
        self.timeouts_triggered = 0
        self._queued_followups: list[mcp.McpFollowUp] = []
        self._idle_start: int | None = None
        """Input sample where the last reply's playback ends; None: the idle timer is off."""
        self.input_samples = 0
        """Input audio received this session, in samples: the clock of all audio_*_ms."""
        self.buffer_start = 0
        """Sample position where the uncommitted input buffer begins."""
        self.assistant_audio_sent = False
        self.closed = False
        self.close_code: int | None = None
        self.ended_by: str | None = None
        self._ended = False
        self._send_lock = asyncio.Lock()
        self._vad: EnergyVad | None = None
        self._vad_settings: VadSettings | None = None
        self._speech_item_id: str | None = None
        self._speech_start = 0
        self._recent_prompts: deque[list[tuple[str, int]]] = deque(maxlen=RECENT_PROMPTS)
        self._timers: list[asyncio.Task[None]] = []
        self._configure_vad()
        self._handlers: dict[ClientEventType, Callable[[JSON], Awaitable[None]]] = {
            C.SESSION_UPDATE: self._on_session_update,
            C.INPUT_APPEND: self._on_append,
            C.INPUT_COMMIT: self._on_commit,
            C.INPUT_CLEAR: self._on_clear,
            C.ITEM_CREATE: self._on_item_create,
            C.ITEM_RETRIEVE: self._on_item_retrieve,
            C.ITEM_TRUNCATE: self._on_item_truncate,
            C.ITEM_DELETE: self._on_item_delete,
            C.RESPONSE_CREATE: self._on_response_create,
            C.RESPONSE_CANCEL: self._on_response_cancel,
        }

    # --- inspection ---------------------------------------------------------------------------

    @property
    def items(self) -> list[ItemView]:
        """The conversation the server holds, in order."""
        return self.conversation.snapshot()

    @property
    def window_tokens(self) -> TokenCount:
        """What the model would read now: instructions, tools and every item."""
        return self._prompt({}, None)[1]

    @property
    def input_ms(self) -> float:
        return self.input_samples / SAMPLES_PER_MS

    @property
    def buffer_ms(self) -> float:
        return (self.input_samples - self.buffer_start) / SAMPLES_PER_MS

    def received_types(self) -> list[str]:
        return [str(event.get("type")) for event in self.received]

    def sent_types(self) -> list[str]:
        return [str(event.get("type")) for event in self.sent]

    def running_responses(self) -> list[ResponseRun]:
        """The default-conversation response (if any) and the out-of-band ones running."""
        active = [self.active_response] if self.active_response is not None else []
        return active + list(self.out_of_band)

    def report(self) -> JSON:
        """A plain summary of the session for tests and logs: the conversation's items, each
        response (its conversation, status, metadata, usage and output item ids), and the
        output items of out-of-band responses found in the conversation (always none)."""
        held = set(self.conversation.ids)
        responses = [
            {
                "id": run.id,
                "conversation": "auto" if run.in_conversation else "none",
                "trigger": run.trigger,
                "status": run.status,
                "metadata": run.metadata,
                "usage": run.usage,
                "output": [item.id for item in run.items],
            }
            for run in self.responses
        ]
        leaked = [
            item.id
            for run in self.responses
            if not run.in_conversation
            for item in run.items
            if item.id in held
        ]
        return {
            "session_id": self.id,
            "dialect": self.dialect,
            "items": [
                {"id": v.id, "type": v.type, "role": v.role, "text": v.text}
                for v in self.conversation.snapshot()
            ],
            "responses": responses,
            "out_of_band_items_in_conversation": leaked,
            "timeouts_triggered": self.timeouts_triggered,
            "mcp_tools": {
                label: [t.get("name") for t in tools] for label, tools in self.mcp_tools.items()
            },
        }

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Send ``session.created`` and start the session's clocks (time limit, timed drop)."""
        self._timers.append(asyncio.create_task(self._expire_later(self.config.session_max_s)))
        if self.faults.drop_after_s is not None:
            self._timers.append(asyncio.create_task(self._drop_later(self.faults.drop_after_s)))
            if not self.faults.repeat:
                self.faults.drop_after_s = None
        await self.emit(S.SESSION_CREATED, session=session_config.public(self.session))

    async def finish(self, close_code: int | None, closed_by: str = "client") -> None:
        """The connection is over: stop every task of this session.

        ``ended_by`` says why: "expired", "dropped" (faults), else who closed: "client",
        "server" (the server stopped) or "network".
        """
        self._ended = True
        self.closed = True
        self.close_code = close_code
        self.ended_by = self.ended_by or closed_by
        tasks = [t for t in self._timers if t is not asyncio.current_task()]
        tasks += [run.task for run in self.running_responses() if run.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, SessionEnded):
                await task
        await self.notify()

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _expire_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        # From here on the close handshake must finish even while `finish` cancels timers.
        current = asyncio.current_task()
        self._timers = [t for t in self._timers if t is not current]
        await self.expire()

    async def _drop_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self.faults_fired.append("drop_after_s")
        self.drop()

    async def expire(self) -> None:
        """The time limit: ``error`` (session_expired), then close 1001, as the service does."""
        if self._ended:
            return
        await self._stop_response()
        minutes = self.config.session_max_s / 60
        limit = f"{minutes:g} minutes" if minutes >= 1 else f"{self.config.session_max_s:g} seconds"
        with contextlib.suppress(SessionEnded):
            await self._send_error(
                ErrorCode.SESSION_EXPIRED,
                f"Your session hit the maximum duration of {limit}.",
                param=None,
                event_id=None,
            )
        self._ended = True
        self.ended_by = "expired"
        await self.transport.close(1001, "session expired")

    def drop(self) -> None:
        """End the connection without a close frame (a network failure, as the client sees it)."""
        if self._ended:
            return
        self._ended = True
        self.ended_by = "dropped"
        self.transport.drop()

    async def _stop_response(self) -> None:
        """Stop the streaming responses without finishing them (the connection is ending)."""
        for run in self.running_responses():
            if run.task is not None and run.task is not asyncio.current_task():
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, SessionEnded):
                    await run.task

    # --- sending ------------------------------------------------------------------------------

    async def emit(self, event_type: ServerEventType, **fields: Any) -> JSON | None:
        """Send a server event in the session's dialect; None when the dialect lacks it."""
        wire = wire_name(event_type, self.dialect)
        if wire is None:
            return None
        event: JSON = {"type": wire, "event_id": self.ids.new("event"), **fields}
        await self._send(event)
        return event

    async def _send(self, event: JSON, *, check_faults: bool = True) -> None:
        if self._ended:
            raise SessionEnded
        if self.muted:
            self.muted_events += 1
            return
        frame = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        async with self._send_lock:
            if self._ended:
                raise SessionEnded
            await self.transport.send(frame)
            self.sent.append(_record(event, self.config.record_audio, "delta"))
        await self.notify()
        if check_faults:
            self.events_counted += 1
            await self._fire_faults(self.events_counted)

    async def _send_error(
        self,
        code: str,
        message: str,
        param: str | None,
        event_id: str | None,
        error_type: str = "invalid_request_error",
        *,
        check_faults: bool = True,
    ) -> None:
        error: JSON = {
            "type": error_type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": event_id,
        }
        event: JSON = {"type": S.ERROR.value, "event_id": self.ids.new("event"), "error": error}
        await self._send(event, check_faults=check_faults)

    async def _fire_faults(self, count: int) -> None:
        faults = self.faults
        if faults.error_after_events == count:
            self._consume("error_after_events")
            await self.inject_error(faults.error_code, faults.error_message)
        if faults.malformed_after_events == count:
            self._consume("malformed_after_events")
            await self.send_malformed_frame()
        if faults.unknown_event_after_events == count:
            self._consume("unknown_event_after_events")
            await self.send_unknown_event(faults.unknown_event_type)
        if faults.mute_after_events == count:
            self._consume("mute_after_events")
            self.muted = True
        if faults.drop_after_events == count:
            self._consume("drop_after_events")
            self.drop()
            raise SessionEnded

    def _consume(self, name: str) -> None:
        self.faults_fired.append(name)
        if not self.faults.repeat:
            setattr(self.faults, name, None)

    async def inject_error(self, code: str = ErrorCode.SERVER_ERROR, message: str = "") -> None:
        """Send an ``error`` event that answers no request (type ``server_error``)."""
        await self._send_error(
            code,
            message or "The server had an error while processing your request.",
            None,
            None,
            "server_error",
            check_faults=False,
        )

    async def send_malformed_frame(self) -> None:
        """A text frame that is not JSON."""
        async with self._send_lock:
            if self._ended:
                raise SessionEnded
            await self.transport.send('{"type": "response.output_audio.delta", "delta": ')
        self.faults_fired.append("malformed_frame")
        await self.notify()

    async def send_raw(self, frame: str | bytes) -> None:
        """Any frame as is (a hostile or broken server); recorded in `faults_fired`."""
        async with self._send_lock:
            if self._ended:
                raise SessionEnded
            await self.transport.send(frame)
        self.faults_fired.append("raw_frame")
        await self.notify()

    async def send_unknown_event(self, event_type: str = "response.fake_unknown_event") -> None:
        """A well-formed event of a type no client knows (the service adds types over time)."""
        event = {"type": event_type, "event_id": self.ids.new("event"), "note": "injected"}
        await self._send(event, check_faults=False)
        self.faults_fired.append("unknown_event")

    # --- receiving ----------------------------------------------------------------------------

    async def handle_frame(self, frame: str | bytes) -> None:
        """Handle one client frame; a bad request is answered with an ``error`` event."""
        if isinstance(frame, bytes):
            await self._send_error(
                ErrorCode.INVALID_JSON,
                "Binary frames are not supported; send JSON text.",
                None,
                None,
            )
            return
        try:
            data = json.loads(frame)
        except ValueError as exc:
            await self._send_error(
                ErrorCode.INVALID_JSON, f"Invalid JSON in client event: {exc}.", None, None
            )
            return
        if not isinstance(data, dict):
            await self._send_error(
                ErrorCode.INVALID_JSON, "A client event must be a JSON object.", None, None
            )
            return
        self.received.append(_record(data, self.config.record_audio, "audio"))
        await self.notify()
        if self.faults.drop_on_client_event is not None and (
            data.get("type") == self.faults.drop_on_client_event
        ):
            self._consume("drop_on_client_event")
            self.drop()
            return
        event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        try:
            handler = self._handler_for(data.get("type"))
            await handler(data)
        except RequestError as exc:
            log.debug("client_error", code=exc.code, message=exc.message, param=exc.param)
            await self._send_error(exc.code, exc.message, exc.param, event_id, exc.error_type)

    def _handler_for(self, event_type: Any) -> Callable[[JSON], Awaitable[None]]:
        if event_type is None:
            raise RequestError(
                ErrorCode.MISSING_PARAMETER, "Missing required parameter: 'type'.", "type"
            )
        try:
            return self._handlers[ClientEventType(event_type)]
        except (ValueError, KeyError):
            supported = ", ".join(f"'{t.value}'" for t in ClientEventType)
            raise RequestError(
                ErrorCode.INVALID_VALUE,
                f"Invalid value: '{event_type}'. Supported values are: {supported}.",
                "type",
            ) from None

    # --- session ------------------------------------------------------------------------------

    async def _on_session_update(self, data: JSON) -> None:
        self.session = session_config.apply_update(
            self.session,
            data.get("session"),
            self.dialect,
            voice_locked=self.assistant_audio_sent,
        )
        self._configure_vad()
        await self.emit(S.SESSION_UPDATED, session=session_config.public(self.session))
        if self.dialect == "ga":
            await self._list_mcp_tools()

    async def _list_mcp_tools(self) -> None:
        """List the tools of each MCP server that is new or changed (see `fake.mcp`)."""
        for server in mcp.servers(self.session.get("tools")):
            if self.mcp_listed.get(server.label) == server.key:
                continue
            self.mcp_listed[server.label] = server.key
            item = Item(
                self.ids.new("item"),
                ItemType.MCP_LIST_TOOLS,
                server_label=server.label,
                tools=[],
                status="in_progress",
            )
            previous = self.conversation.insert(item)
            await self.emit(S.ITEM_ADDED, previous_item_id=previous, item=item.to_wire())
            await self.emit(S.MCP_LIST_TOOLS_IN_PROGRESS, item_id=item.id)
            error = server.list_error(self.config.mcp_unreachable)
            if error is not None:
                self.mcp_tools[server.label] = []
                item.status = "incomplete"
                log.debug("mcp_list_failed", server_label=server.label, reason=error)
                await self.emit(S.MCP_LIST_TOOLS_FAILED, item_id=item.id)
            else:
                item.tools = server.tools(self.config.mcp_tools)
                self.mcp_tools[server.label] = list(item.tools)
                item.status = "completed"
                await self.emit(S.MCP_LIST_TOOLS_COMPLETED, item_id=item.id)
            await self.emit(S.ITEM_DONE, previous_item_id=previous, item=item.to_wire())

    def _turn_detection(self) -> JSON | None:
        return session_config.turn_detection(self.session, self.dialect)

    def _configure_vad(self) -> None:
        detection = self._turn_detection()
        if detection is None:
            self._vad = None
            self._vad_settings = None
            self._speech_item_id = None
            return
        settings = VadSettings.from_turn_detection(detection, self.config.vad_frame_ms)
        if self._vad is not None and settings == self._vad_settings:
            return
        in_speech = self._vad is not None and self._vad.in_speech
        self._vad = EnergyVad(settings, position=self.input_samples)
        self._vad.floor = self.buffer_start
        self._vad_settings = settings
        if in_speech:
            self._speech_item_id = None

    # --- input audio --------------------------------------------------------------------------

    async def _on_append(self, data: JSON) -> None:
        pcm = decode_audio(data.get("audio"), "audio")
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
        self.input_samples += samples.size
        if self._vad is None:
            return
        for event in self._vad.feed(samples):
            if isinstance(event, SpeechStarted):
                await self._on_speech_started(event.start_sample)
            else:
                await self._on_speech_stopped(event.end_sample)
        await self._check_idle()

    def arm_idle_timer(self, playback_end_sample: int) -> None:
        """A default-conversation reply ended; its playback ends at this input sample."""
        self._idle_start = playback_end_sample

    async def _check_idle(self) -> None:
        start = self._idle_start
        timeout_ms = session_config.idle_timeout_ms(self.session, self.dialect)
        if start is None or timeout_ms is None or self._vad is None or self._vad.in_speech:
            return
        if self.active_response is not None or self._queued_followups:
            return
        deadline = start + timeout_ms * SAMPLES_PER_MS
        if self.input_samples < deadline:
            return
        self._idle_start = None
        self.timeouts_triggered += 1
        item_id = self.ids.new("item")
        await self.emit(
            S.INPUT_TIMEOUT,
            audio_start_ms=start // SAMPLES_PER_MS,
            audio_end_ms=deadline // SAMPLES_PER_MS,
            item_id=item_id,
        )
        committed_ms = (deadline - self.buffer_start) / SAMPLES_PER_MS
        self.buffer_start = deadline
        self._vad.floor = deadline
        await self._commit_audio(item_id, committed_ms, heard="")
        await self._start_response({}, trigger="idle_timeout", fallback=IDLE_PROMPT)

    async def _on_speech_started(self, start_sample: int) -> None:
        self._idle_start = None
        self._speech_item_id = self.ids.new("item")
        self._speech_start = start_sample
        await self.emit(
            S.SPEECH_STARTED,
            audio_start_ms=start_sample // SAMPLES_PER_MS,
            item_id=self._speech_item_id,
        )
        detection = self._turn_detection() or {}
        # Speech cancels only the response writing to the default conversation.
        if self.active_response is not None and detection.get("interrupt_response", True):
            await self.active_response.cancel("turn_detected")

    async def _on_speech_stopped(self, end_sample: int) -> None:
        item_id = self._speech_item_id or self.ids.new("item")
        self._speech_item_id = None
        await self.emit(
            S.SPEECH_STOPPED, audio_end_ms=end_sample // SAMPLES_PER_MS, item_id=item_id
        )
        start = max(self._speech_start, self.buffer_start)
        self.buffer_start = end_sample
        if self._vad is not None:
            self._vad.floor = end_sample
        await self._commit_audio(item_id, (end_sample - start) / SAMPLES_PER_MS)
        detection = self._turn_detection() or {}
        if detection.get("create_response", True) and self.active_response is None:
            await self._start_response({}, trigger="turn_detected")

    async def _on_commit(self, data: JSON) -> None:
        del data
        buffered_ms = self.buffer_ms
        if buffered_ms < MIN_COMMIT_MS:
            raise RequestError(
                ErrorCode.COMMIT_EMPTY,
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
            )
        item_id = self._speech_item_id or self.ids.new("item")
        self._reset_buffer()
        await self._commit_audio(item_id, buffered_ms)

    async def _on_clear(self, data: JSON) -> None:
        del data
        self._reset_buffer()
        await self.emit(S.INPUT_CLEARED)

    def _reset_buffer(self) -> None:
        self.buffer_start = self.input_samples
        self._speech_item_id = None
        self._idle_start = None
        if self._vad is not None:
            self._vad.reset(self.input_samples)

    async def _commit_audio(self, item_id: str, audio_ms: float, heard: str | None = None) -> None:
        """The buffer's audio becomes a user item: committed, added, then transcribed.

        ``heard``: what the audio says; None takes the scenario's next user line."""
        self._idle_start = None
        if heard is None:
            heard = self.cursor.next_transcript(audio_ms)
        part = ContentPart("input_audio", transcript=None, audio_ms=audio_ms)
        item = Item(item_id, "message", role="user", content=[part], heard=heard)
        previous = self.conversation.insert(item)
        await self.emit(S.INPUT_COMMITTED, item_id=item_id, previous_item_id=previous)
        await self._announce_item(item, previous)
        model = session_config.transcription_model(self.session, self.dialect)
        if model is None:
            return
        words = heard.split(" ") if heard else []
        for index, word in enumerate(words):
            delta = word if index == len(words) - 1 else word + " "
            await self.emit(S.INPUT_TRANSCRIPT_DELTA, item_id=item_id, content_index=0, delta=delta)
        part.transcript = heard
        rates = self.config.rates
        if model == "whisper-1":
            usage: JSON = {"type": "duration", "seconds": round(audio_ms / 1000, 3)}
        else:
            audio_tokens = rates.audio(audio_ms, "user")
            text_tokens = rates.text(heard)
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "output_tokens": text_tokens,
                "total_tokens": audio_tokens + text_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            }
        await self.emit(
            S.INPUT_TRANSCRIPT_COMPLETED,
            item_id=item_id,
            content_index=0,
            transcript=heard,
            usage=usage,
        )

    async def _announce_item(self, item: Item, previous: str | None) -> None:
        """``conversation.item.added`` + ``.done`` (GA) or ``conversation.item.created`` (beta)."""
        await self.emit(S.ITEM_ADDED, previous_item_id=previous, item=item.to_wire())
        await self.emit(S.ITEM_DONE, previous_item_id=previous, item=item.to_wire())

    # --- conversation items -------------------------------------------------------------------

    async def _on_item_create(self, data: JSON) -> None:
        item = item_from_client(data.get("item"), self.dialect, self.ids)
        previous_id = data.get("previous_item_id")
        if previous_id is not None and not isinstance(previous_id, str):
            raise RequestError(
                ErrorCode.INVALID_VALUE, "previous_item_id must be a string.", "previous_item_id"
            )
        pending: mcp.PendingApproval | None = None
        if item.type == ItemType.MCP_APPROVAL_RESPONSE:
            request_id = item.approval_request_id or ""
            pending = self.mcp_pending.get(request_id)
            if pending is None:
                raise RequestError(
                    ErrorCode.ITEM_NOT_FOUND,
                    f"No pending MCP approval request with id '{request_id}'.",
                    "item.approval_request_id",
                )
        previous = self.conversation.insert(item, previous_id)
        await self._announce_item(item, previous)
        if pending is not None and item.approval_request_id is not None:
            del self.mcp_pending[item.approval_request_id]
            followup = mcp.McpFollowUp(
                pending.call, pending.server_label, item.approval_request_id, bool(item.approve)
            )
            if self.active_response is None:
                await self._start_response({}, trigger="mcp_approval", reply=followup)
            else:
                self._queued_followups.append(followup)

    async def start_queued(self) -> None:
        """Start a queued MCP follow-up once the default conversation is free (called by a
        response that just finished, in a task of its own)."""
        if self.active_response is None and self._queued_followups and not self._ended:
            followup = self._queued_followups.pop(0)
            with contextlib.suppress(SessionEnded):
                try:
                    await self._start_response({}, trigger="mcp_approval", reply=followup)
                except RequestError as exc:
                    await self._send_error(exc.code, exc.message, exc.param, None, exc.error_type)

    def after_response(self, run: ResponseRun, playback_end_sample: int | None) -> None:
        """Bookkeeping when a response has sent ``response.done``."""
        if run.in_conversation:
            if playback_end_sample is not None:
                self.arm_idle_timer(playback_end_sample)
            if self._queued_followups and not self._ended:
                self._timers = [t for t in self._timers if not t.done()]
                self._timers.append(asyncio.create_task(self.start_queued()))

    async def _on_item_delete(self, data: JSON) -> None:
        item_id = require_str(data, "item_id")
        self.conversation.get(item_id, "deleting")
        if self.faults.reject_deletes > 0:
            self.faults.reject_deletes -= 1
            self.faults_fired.append("reject_deletes")
            raise RequestError(
                ErrorCode.SERVER_ERROR,
                "The server had an error while processing your request.",
                None,
                "server_error",
            )
        item = self.conversation.delete(item_id)
        await self.emit(S.ITEM_DELETED, item_id=item.id)

    async def _on_item_retrieve(self, data: JSON) -> None:
        item = self.conversation.get(require_str(data, "item_id"))
        await self.emit(S.ITEM_RETRIEVED, item=item.to_wire())

    async def _on_item_truncate(self, data: JSON) -> None:
        item_id = require_str(data, "item_id")
        content_index = require_int(data, "content_index")
        audio_end_ms = require_int(data, "audio_end_ms")
        self.conversation.truncate(item_id, content_index, audio_end_ms)
        await self.emit(
            S.ITEM_TRUNCATED,
            item_id=item_id,
            content_index=content_index,
            audio_end_ms=audio_end_ms,
        )

    # --- responses ----------------------------------------------------------------------------

    async def _on_response_create(self, data: JSON) -> None:
        request = data.get("response")
        if request is not None and not isinstance(request, dict):
            raise RequestError(
                ErrorCode.INVALID_VALUE,
                "Invalid type for 'response': expected an object.",
                "response",
            )
        await self._start_response(request or {}, trigger="client")

    async def _on_response_cancel(self, data: JSON) -> None:
        """Cancel ``response_id`` (any running response), or without it the one writing to
        the default conversation."""
        wanted = data.get("response_id")
        if isinstance(wanted, str):
            run = next((r for r in self.running_responses() if r.id == wanted), None)
        else:
            run = self.active_response
        if run is None:
            raise RequestError(
                ErrorCode.RESPONSE_CANCEL_NOT_ACTIVE,
                "Cancellation failed: no active response found",
            )
        await run.cancel("client_cancelled")

    def _prompt(
        self, request: JSON, items: list[Item] | None
    ) -> tuple[list[tuple[str, int]], TokenCount]:
        """The prompt a response reads (``items``, None: the conversation) as cache blocks,
        and its token count."""
        rates = self.config.rates
        instructions = request.get("instructions")
        if not isinstance(instructions, str):
            instructions = session_config.instructions(self.session)
        tools = request.get("tools", self.session.get("tools")) or []
        preamble = instructions + (json.dumps(tools, sort_keys=True) if tools else "")
        preamble_tokens = rates.text(preamble)
        digest = hashlib.sha1(preamble.encode(), usedforsecurity=False).hexdigest()[:12]
        blocks = [(f"preamble:{digest}", preamble_tokens)]
        count = TokenCount(text=preamble_tokens)
        if items is None:
            blocks += self.conversation.blocks(rates)
            count += self.conversation.tokens(rates)
        else:
            blocks += item_blocks(items, rates)
            for item in items:
                count += item.tokens(rates)
        return blocks, count

    def truncate_for_response(self, request: JSON, *, apply: bool = True) -> list[str]:
        """Apply the session's ``truncation`` before a response reads the conversation.

        The input limit is the context window minus the output reserve; the conversation
        may hold that limit minus the instructions and tools. Over it, ``auto`` drops the
        oldest items just enough to fit; ``retention_ratio`` r drops the oldest until the
        conversation holds r x its limit (``token_limits.post_instructions`` when smaller),
        so that the next truncations come later; ``disabled`` refuses the response
        (``context_length_exceeded``). Dropped items leave the conversation without
        ``conversation.item.deleted`` (the client never asked for it); their ids are
        appended to `truncated_ids`. ``apply=False`` (an out-of-band response, which must
        not change the conversation) only returns the ids it would drop.
        """
        rates = self.config.rates
        preamble = self._prompt(request, [])[1].total
        input_limit = self.config.context_window_tokens - session_config.output_reserve(
            self.session, self.dialect
        )
        limit = max(0, input_limit - preamble)
        target = limit
        strategy = session_config.truncation(self.session)
        if isinstance(strategy, dict):
            limits = strategy.get("token_limits") or {}
            post = limits.get("post_instructions")
            if isinstance(post, int):
                limit = min(limit, post)
            target = math.floor(limit * float(strategy.get("retention_ratio", 1.0)))
        used = self.conversation.tokens(rates).total
        if used <= limit:
            return []
        if strategy == "disabled":
            raise RequestError(
                CONTEXT_LENGTH_EXCEEDED,
                f"The conversation holds {used + preamble} input tokens, more than the model's "
                f"input token limit of {input_limit}, and truncation is disabled.",
            )
        if not apply:
            return self.conversation.oldest_over(rates, target)
        dropped = self.conversation.drop_oldest(rates, target)
        self.truncated_ids.extend(dropped)
        log.debug("truncated", strategy=strategy, dropped=len(dropped), tokens_before=used)
        return dropped

    def _request_input(self, request: JSON) -> list[Item] | None:
        """The items of a response's own ``input``, or None: the conversation is the input."""
        raw = request.get("input")
        if raw is None:
            return None
        if not isinstance(raw, list):
            raise RequestError(ErrorCode.INVALID_VALUE, "input must be a list.", "response.input")
        items: list[Item] = []
        for index, entry in enumerate(raw):
            if isinstance(entry, dict) and entry.get("type") == "item_reference":
                items.append(self.conversation.get(require_str(entry, "id", "response.input.id")))
            else:
                items.append(
                    item_from_client(entry, self.dialect, self.ids, f"response.input[{index}]")
                )
        return items

    def _modalities(self, request: JSON) -> list[str]:
        key = "output_modalities" if self.dialect == "ga" else "modalities"
        value = request.get(key)
        if value is None:
            return session_config.output_modalities(self.session, self.dialect)
        if (
            not isinstance(value, list)
            or not value
            or not set(value) <= {"text", "audio"}
            or (self.dialect == "ga" and len(value) != 1)
        ):
            raise RequestError(
                ErrorCode.INVALID_VALUE, f"Invalid modalities: {value!r}.", f"response.{key}"
            )
        return list(value)

    def _last_user_text(self, items: list[Item]) -> str | None:
        for item in reversed(items):
            if item.type == "message" and item.role == "user":
                return item.text() or None
        return None

    async def _start_response(
        self,
        request: JSON,
        trigger: str,
        *,
        reply: Reply | mcp.McpFollowUp | None = None,
        fallback: str | None = None,
    ) -> None:
        """Start a response: ``response.created`` now, the rest in its own task.

        ``reply`` None: a default-conversation response takes the scenario's next reply
        (past the script: an echo of the last user words, else ``fallback``); an
        out-of-band one says `out_of_band_reply`.
        """
        in_conversation = request.get("conversation", "auto") != "none"
        if in_conversation and self.active_response is not None:
            raise RequestError(
                ErrorCode.ACTIVE_RESPONSE,
                "Conversation already has an active response in progress: "
                f"{self.active_response.id}. Wait until the response is finished before "
                "creating a new one.",
            )
        modalities = self._modalities(request)
        source = self._request_input(request)
        if source is None and in_conversation:
            self.truncate_for_response(request)
        elif source is None:
            over = set(self.truncate_for_response(request, apply=False))
            source = [item for item in self.conversation.items if item.id not in over]
        blocks, window = self._prompt(request, source)
        cached = max((cached_tokens(seen, blocks) for seen in self._recent_prompts), default=0)
        self._recent_prompts.append(blocks)
        read = self.conversation.items if source is None else source
        if reply is None and in_conversation:
            reply = self.cursor.next_reply(
                self._last_user_text(read), *([fallback] if fallback else [])
            )
        elif reply is None:
            reply = out_of_band_reply(request, read)
        metadata = request.get("metadata")
        run = ResponseRun(
            session=self,
            response_id=self.ids.new("resp"),
            reply=reply,
            modalities=modalities,
            in_conversation=in_conversation,
            input_tokens=window,
            cached_tokens=min(cached, window.total),
            metadata=metadata if isinstance(metadata, dict) else None,
            trigger=trigger,
            tools=request.get("tools", self.session.get("tools")),
        )
        if in_conversation:
            self.active_response = run
            self._idle_start = None
        else:
            self.out_of_band.append(run)
        self.responses.append(run)
        await self.emit(S.RESPONSE_CREATED, response=run.to_wire())
        run.task = asyncio.create_task(run.stream(), name=f"fake-response-{run.id}")
