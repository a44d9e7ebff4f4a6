"""The Realtime protocol: the one module where event type strings live.

Incoming frames from either dialect (GA or beta) are parsed into `ServerEvent`s carrying one
internal name (the GA spelling), so that handlers never care which API is on the other end.
Outgoing events are built here too, each with a unique ``event_id`` that the server echoes in
``error.event_id`` when the request fails.

Nothing here does I/O: parse a frame, build a dict. The client and the fake server move the
bytes.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import structlog

from realtime_voicebot.metrics import count_bounded

if TYPE_CHECKING:
    from realtime_voicebot.config import Settings

Dialect = Literal["ga", "beta"]
JSON = dict[str, Any]

PCM_RATE = 24000
"""The API's PCM16 mono sample rate, both directions."""
PCM_BYTES_PER_MS = PCM_RATE * 2 // 1000

log = structlog.get_logger(component="events")


class ServerEventType(StrEnum):
    """Internal names of server events: the GA spelling, whatever the dialect on the wire."""

    SESSION_CREATED = "session.created"
    SESSION_UPDATED = "session.updated"
    CONVERSATION_CREATED = "conversation.created"
    ERROR = "error"
    RATE_LIMITS_UPDATED = "rate_limits.updated"

    SPEECH_STARTED = "input_audio_buffer.speech_started"
    SPEECH_STOPPED = "input_audio_buffer.speech_stopped"
    INPUT_COMMITTED = "input_audio_buffer.committed"
    INPUT_CLEARED = "input_audio_buffer.cleared"
    INPUT_TIMEOUT = "input_audio_buffer.timeout_triggered"

    ITEM_ADDED = "conversation.item.added"
    ITEM_DONE = "conversation.item.done"
    ITEM_DELETED = "conversation.item.deleted"
    ITEM_TRUNCATED = "conversation.item.truncated"
    ITEM_RETRIEVED = "conversation.item.retrieved"
    INPUT_TRANSCRIPT_DELTA = "conversation.item.input_audio_transcription.delta"
    INPUT_TRANSCRIPT_COMPLETED = "conversation.item.input_audio_transcription.completed"
    INPUT_TRANSCRIPT_FAILED = "conversation.item.input_audio_transcription.failed"
    INPUT_TRANSCRIPT_SEGMENT = "conversation.item.input_audio_transcription.segment"

    RESPONSE_CREATED = "response.created"
    RESPONSE_DONE = "response.done"
    OUTPUT_ITEM_ADDED = "response.output_item.added"
    OUTPUT_ITEM_DONE = "response.output_item.done"
    CONTENT_PART_ADDED = "response.content_part.added"
    CONTENT_PART_DONE = "response.content_part.done"
    AUDIO_DELTA = "response.output_audio.delta"
    AUDIO_DONE = "response.output_audio.done"
    AUDIO_TRANSCRIPT_DELTA = "response.output_audio_transcript.delta"
    AUDIO_TRANSCRIPT_DONE = "response.output_audio_transcript.done"
    TEXT_DELTA = "response.output_text.delta"
    TEXT_DONE = "response.output_text.done"
    FUNCTION_ARGUMENTS_DELTA = "response.function_call_arguments.delta"
    FUNCTION_ARGUMENTS_DONE = "response.function_call_arguments.done"

    OUTPUT_AUDIO_BUFFER_STARTED = "output_audio_buffer.started"
    OUTPUT_AUDIO_BUFFER_STOPPED = "output_audio_buffer.stopped"
    OUTPUT_AUDIO_BUFFER_CLEARED = "output_audio_buffer.cleared"


class ClientEventType(StrEnum):
    """Client event names: the same in both dialects."""

    SESSION_UPDATE = "session.update"
    INPUT_APPEND = "input_audio_buffer.append"
    INPUT_COMMIT = "input_audio_buffer.commit"
    INPUT_CLEAR = "input_audio_buffer.clear"
    ITEM_CREATE = "conversation.item.create"
    ITEM_RETRIEVE = "conversation.item.retrieve"
    ITEM_TRUNCATE = "conversation.item.truncate"
    ITEM_DELETE = "conversation.item.delete"
    RESPONSE_CREATE = "response.create"
    RESPONSE_CANCEL = "response.cancel"


class ErrorCode(StrEnum):
    """Error codes the project reacts to."""

    SESSION_EXPIRED = "session_expired"
    RESPONSE_CANCEL_NOT_ACTIVE = "response_cancel_not_active"
    ACTIVE_RESPONSE = "conversation_already_has_active_response"
    INVALID_API_KEY = "invalid_api_key"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    ITEM_NOT_FOUND = "item_not_found"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_EVENT = "unknown_event_type"
    INVALID_JSON = "invalid_json"
    MISSING_PARAMETER = "missing_required_parameter"
    UNKNOWN_PARAMETER = "unknown_parameter"
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    COMMIT_EMPTY = "input_audio_buffer_commit_empty"
    CANNOT_UPDATE_VOICE = "cannot_update_voice"
    SERVER_ERROR = "server_error"


FATAL_ERROR_CODES = frozenset(
    {ErrorCode.INVALID_API_KEY, ErrorCode.INSUFFICIENT_QUOTA, "account_deactivated"}
)

_S = ServerEventType

# Beta spellings of events whose GA name differs. Beta has no conversation.item.done.
_BETA_NAMES: dict[ServerEventType, str] = {
    _S.ITEM_ADDED: "conversation.item.created",
    _S.AUDIO_DELTA: "response.audio.delta",
    _S.AUDIO_DONE: "response.audio.done",
    _S.AUDIO_TRANSCRIPT_DELTA: "response.audio_transcript.delta",
    _S.AUDIO_TRANSCRIPT_DONE: "response.audio_transcript.done",
    _S.TEXT_DELTA: "response.text.delta",
    _S.TEXT_DONE: "response.text.done",
}
_GA_ONLY = frozenset(
    {
        _S.ITEM_DONE,
        _S.INPUT_TIMEOUT,
        _S.INPUT_TRANSCRIPT_SEGMENT,
        _S.OUTPUT_AUDIO_BUFFER_STARTED,
        _S.OUTPUT_AUDIO_BUFFER_STOPPED,
        _S.OUTPUT_AUDIO_BUFFER_CLEARED,
    }
)

_WIRE_TO_INTERNAL: dict[str, ServerEventType] = {t.value: t for t in ServerEventType}
_WIRE_TO_INTERNAL.update({wire: internal for internal, wire in _BETA_NAMES.items()})
# GA servers may also send the older name for an added item.
_WIRE_TO_INTERNAL["conversation.item.created"] = _S.ITEM_ADDED

# Known on the wire but of no interest to the bot: parsed as known, never counted as unknown.
IGNORED_WIRE_TYPES = frozenset(
    {
        "input_audio_buffer.dtmf_event_received",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "transcription_session.updated",
    }
)


def wire_name(event_type: ServerEventType, dialect: Dialect) -> str | None:
    """How a server event is spelled on the wire in a dialect; None if it has no equivalent."""
    if dialect == "ga":
        return event_type.value
    if event_type in _GA_ONLY:
        return None
    return _BETA_NAMES.get(event_type, event_type.value)


def internal_name(wire_type: str) -> ServerEventType | None:
    """The internal name of a wire event type, or None when unknown."""
    return _WIRE_TO_INTERNAL.get(wire_type)


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """A parsed server event: its internal type, the wire spelling and the raw payload."""

    type: ServerEventType
    data: JSON
    wire_type: str = ""

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def object(self, key: str) -> JSON:
        """A payload field that should be an object; {} when it is missing or is not one."""
        value = self.data.get(key)
        return value if isinstance(value, dict) else {}

    @property
    def item_id(self) -> str | None:
        value = self.data.get("item_id")
        if value is None and isinstance(self.data.get("item"), dict):
            value = self.data["item"].get("id")
        return value if isinstance(value, str) else None

    @property
    def response_id(self) -> str | None:
        value = self.data.get("response_id")
        if value is None and isinstance(self.data.get("response"), dict):
            value = self.data["response"].get("id")
        return value if isinstance(value, str) else None


@dataclass
class ParseStats:
    """What the parser could not use, by reason."""

    parsed: int = 0
    ignored: int = 0
    malformed_json: int = 0
    not_an_object: int = 0
    missing_type: int = 0
    unknown_type: int = 0
    surrogates_replaced: int = 0
    """Frames holding half a UTF-16 pair (``"\\ud800"``), replaced by U+FFFD: no file or
    terminal can take one."""
    unknown_types: dict[str, int] = field(default_factory=dict)
    """By type, bounded (`realtime_voicebot.metrics.count_bounded`): a server inventing
    types cannot grow it past a few kilobytes."""

    @property
    def dropped(self) -> int:
        return self.malformed_json + self.not_an_object + self.missing_type + self.unknown_type


_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_ESCAPED_SURROGATE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def _without_lone_surrogates(value: Any) -> tuple[Any, int]:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD, and
    how many strings changed. (json.loads joins a valid pair into one character, so any
    surrogate left in a parsed string is a lone one.)"""
    if isinstance(value, str):
        fixed, count = _SURROGATE.subn("\ufffd", value)
        return fixed, int(count > 0)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        changed = 0
        for key, item in value.items():
            new_key, key_changed = _without_lone_surrogates(key)
            out[new_key], item_changed = _without_lone_surrogates(item)
            changed += key_changed + item_changed
        return out, changed
    if isinstance(value, list):
        items = [_without_lone_surrogates(item) for item in value]
        return [item for item, _ in items], sum(n for _, n in items)
    return value, 0


class EventParser:
    """Turns WebSocket text frames into `ServerEvent`s; never raises on bad input."""

    def __init__(self) -> None:
        self.stats = ParseStats()

    def parse(self, frame: str | bytes) -> ServerEvent | None:
        try:
            data = json.loads(frame)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            self.stats.malformed_json += 1
            log.debug("frame_dropped", reason="malformed_json", size=len(frame))
            return None
        escaped = (
            _ESCAPED_SURROGATE_BYTES.search(frame)
            if isinstance(frame, bytes)
            else _ESCAPED_SURROGATE.search(frame)
        )
        if escaped:  # only an escape can carry a lone surrogate into a decoded frame
            try:
                data, replaced = _without_lone_surrogates(data)
            except RecursionError:
                self.stats.malformed_json += 1
                return None
            self.stats.surrogates_replaced += int(replaced > 0)
        if not isinstance(data, dict):
            self.stats.not_an_object += 1
            log.debug("frame_dropped", reason="not_an_object")
            return None
        wire_type = data.get("type")
        if not isinstance(wire_type, str):
            self.stats.missing_type += 1
            log.debug("frame_dropped", reason="missing_type")
            return None
        internal = _WIRE_TO_INTERNAL.get(wire_type)
        if internal is None:
            if wire_type in IGNORED_WIRE_TYPES:
                self.stats.ignored += 1
                return None
            self.stats.unknown_type += 1
            label = count_bounded(self.stats.unknown_types, wire_type)
            log.debug("frame_dropped", reason="unknown_type", event_type=label)
            return None
        self.stats.parsed += 1
        return ServerEvent(internal, data, wire_type)


# --- content helpers -------------------------------------------------------------------------

TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})
AUDIO_PART_TYPES = frozenset({"input_audio", "output_audio", "audio"})


def item_text(item: JSON) -> str:
    """The words of an item: its text parts, or the transcripts of its audio parts."""
    words: list[str] = []
    content = item.get("content")
    if not isinstance(content, list):
        return ""
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        value = part.get("text") if kind in TEXT_PART_TYPES else part.get("transcript")
        if isinstance(value, str) and value:
            words.append(value)
    return " ".join(words)


def has_audio(item: JSON) -> bool:
    content = item.get("content")
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") in AUDIO_PART_TYPES for p in content
    )


# --- client event builders -------------------------------------------------------------------

_event_counter = itertools.count(1)
_event_prefix = os.urandom(4).hex()


def new_event_id() -> str:
    """A unique client event id (prefix per process, counter per event)."""
    return f"evt_{_event_prefix}{next(_event_counter):08d}"


def _event(event_type: ClientEventType, **fields: Any) -> JSON:
    return {"type": event_type.value, "event_id": new_event_id(), **fields}


def turn_detection(settings: Settings) -> JSON:
    return {
        "type": "server_vad",
        "threshold": settings.vad_threshold,
        "prefix_padding_ms": settings.vad_prefix_padding_ms,
        "silence_duration_ms": settings.vad_silence_ms,
        "create_response": True,
        "interrupt_response": settings.interrupt_response,
    }


def truncation_config(value: str) -> str | JSON:
    """GA ``session.truncation`` from the setting: ``auto``, ``disabled`` or the
    ``retention_ratio`` object for ``retention_ratio:R``."""
    from realtime_voicebot.config import parse_server_truncation

    ratio = parse_server_truncation(value)
    if ratio is None:
        return value.strip().lower()
    return {"type": "retention_ratio", "retention_ratio": ratio}


def session_config(
    settings: Settings,
    dialect: Dialect,
    *,
    tools: list[JSON] | None = None,
    vad: bool = True,
) -> JSON:
    """The ``session`` object of a session.update, in the dialect's shape."""
    detection: JSON | None = turn_detection(settings) if vad else None
    session: JSON
    if dialect == "ga":
        session = {
            "type": "realtime",
            "model": settings.model,
            "instructions": settings.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": PCM_RATE},
                    "transcription": {"model": settings.transcription_model},
                    "turn_detection": detection,
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": PCM_RATE},
                    "voice": settings.voice,
                },
            },
            "truncation": truncation_config(settings.server_truncation),
        }
        if settings.max_output_tokens is not None:
            session["max_output_tokens"] = settings.max_output_tokens
    else:
        session = {
            "modalities": ["audio", "text"],
            "instructions": settings.instructions,
            "voice": settings.voice,
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": {"model": settings.transcription_model},
            "turn_detection": detection,
        }
        if settings.max_output_tokens is not None:
            session["max_response_output_tokens"] = settings.max_output_tokens
    if tools:
        session["tools"] = tools
        session["tool_choice"] = "auto"
    return session


def session_update(
    settings: Settings,
    dialect: Dialect,
    *,
    tools: list[JSON] | None = None,
    vad: bool = True,
) -> JSON:
    return _event(
        ClientEventType.SESSION_UPDATE,
        session=session_config(settings, dialect, tools=tools, vad=vad),
    )


def input_audio_append(pcm16: bytes) -> JSON:
    """Append PCM16 24 kHz mono audio to the input buffer."""
    return _event(ClientEventType.INPUT_APPEND, audio=base64.b64encode(pcm16).decode("ascii"))


def input_audio_append_frame(pcm16: bytes) -> str:
    """`encode(input_audio_append(pcm16))`, built as one string: the microphone sends this
    50 times a second, and skipping the dict and `json.dumps` halves its cost. Event ids
    and base64 hold no character JSON escapes."""
    return (
        f'{{"type":"{ClientEventType.INPUT_APPEND.value}","event_id":"{new_event_id()}",'
        f'"audio":"{base64.b64encode(pcm16).decode("ascii")}"}}'
    )


def input_audio_commit() -> JSON:
    return _event(ClientEventType.INPUT_COMMIT)


def input_audio_clear() -> JSON:
    return _event(ClientEventType.INPUT_CLEAR)


Role = Literal["system", "user", "assistant"]


def message_item(role: Role, text: str, dialect: Dialect, item_id: str | None = None) -> JSON:
    """A message item holding text, with the content type each role takes in the dialect."""
    if role == "assistant":
        part_type = "output_text" if dialect == "ga" else "text"
    else:
        part_type = "input_text"
    item: JSON = {"type": "message", "role": role, "content": [{"type": part_type, "text": text}]}
    if item_id is not None:
        item["id"] = item_id
    return item


def item_create(item: JSON, previous_item_id: str | None = None) -> JSON:
    """Insert an item: after ``previous_item_id`` ("root" for the very start), else append."""
    fields: JSON = {"item": item}
    if previous_item_id is not None:
        fields["previous_item_id"] = previous_item_id
    return _event(ClientEventType.ITEM_CREATE, **fields)


def message_create(
    role: Role,
    text: str,
    dialect: Dialect,
    *,
    previous_item_id: str | None = None,
    item_id: str | None = None,
) -> JSON:
    return item_create(message_item(role, text, dialect, item_id), previous_item_id)


def function_output_create(call_id: str, output: str) -> JSON:
    return item_create({"type": "function_call_output", "call_id": call_id, "output": output})


def item_delete(item_id: str) -> JSON:
    return _event(ClientEventType.ITEM_DELETE, item_id=item_id)


def item_truncate(item_id: str, audio_end_ms: int, content_index: int = 0) -> JSON:
    return _event(
        ClientEventType.ITEM_TRUNCATE,
        item_id=item_id,
        content_index=content_index,
        audio_end_ms=max(0, int(audio_end_ms)),
    )


def item_retrieve(item_id: str) -> JSON:
    return _event(ClientEventType.ITEM_RETRIEVE, item_id=item_id)


def response_create(instructions: str | None = None) -> JSON:
    if instructions is None:
        return _event(ClientEventType.RESPONSE_CREATE)
    return _event(ClientEventType.RESPONSE_CREATE, response={"instructions": instructions})


def response_cancel(response_id: str | None = None) -> JSON:
    if response_id is None:
        return _event(ClientEventType.RESPONSE_CANCEL)
    return _event(ClientEventType.RESPONSE_CANCEL, response_id=response_id)


def encode(event: JSON) -> str:
    """Serialize a client event for the wire."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
