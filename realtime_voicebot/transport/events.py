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
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import structlog

from realtime_voicebot.labels import count_bounded
from realtime_voicebot.transport import payloads as pl

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

    # Hosted MCP tools (GA only): the service lists an MCP server's tools and calls them.
    MCP_LIST_TOOLS_IN_PROGRESS = "mcp_list_tools.in_progress"
    MCP_LIST_TOOLS_COMPLETED = "mcp_list_tools.completed"
    MCP_LIST_TOOLS_FAILED = "mcp_list_tools.failed"
    MCP_CALL_ARGUMENTS_DELTA = "response.mcp_call_arguments.delta"
    MCP_CALL_ARGUMENTS_DONE = "response.mcp_call_arguments.done"
    MCP_CALL_IN_PROGRESS = "response.mcp_call.in_progress"
    MCP_CALL_COMPLETED = "response.mcp_call.completed"
    MCP_CALL_FAILED = "response.mcp_call.failed"


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


class ItemType(StrEnum):
    """Conversation item types. The ``mcp_*`` ones are GA only; ``item_reference`` appears
    only in a ``response.create``'s ``input``."""

    MESSAGE = "message"
    FUNCTION_CALL = "function_call"
    FUNCTION_CALL_OUTPUT = "function_call_output"
    MCP_LIST_TOOLS = "mcp_list_tools"
    MCP_CALL = "mcp_call"
    MCP_APPROVAL_REQUEST = "mcp_approval_request"
    MCP_APPROVAL_RESPONSE = "mcp_approval_response"
    ITEM_REFERENCE = "item_reference"


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
        _S.MCP_LIST_TOOLS_IN_PROGRESS,
        _S.MCP_LIST_TOOLS_COMPLETED,
        _S.MCP_LIST_TOOLS_FAILED,
        _S.MCP_CALL_ARGUMENTS_DELTA,
        _S.MCP_CALL_ARGUMENTS_DONE,
        _S.MCP_CALL_IN_PROGRESS,
        _S.MCP_CALL_COMPLETED,
        _S.MCP_CALL_FAILED,
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


_PAYLOADS: dict[ServerEventType, Callable[[JSON], pl.Payload]] = {
    _S.SESSION_CREATED: pl.parse_session_created,
    _S.ERROR: pl.parse_error,
    _S.SPEECH_STARTED: pl.parse_speech_started,
    _S.SPEECH_STOPPED: pl.parse_speech_stopped,
    _S.INPUT_COMMITTED: pl.parse_committed,
    _S.INPUT_TIMEOUT: pl.parse_input_timeout,
    _S.ITEM_ADDED: pl.parse_item_event,
    _S.ITEM_DONE: pl.parse_item_event,
    _S.OUTPUT_ITEM_ADDED: pl.parse_item_event,
    _S.OUTPUT_ITEM_DONE: pl.parse_item_event,
    _S.ITEM_DELETED: pl.parse_item_ref,
    _S.ITEM_TRUNCATED: pl.parse_item_ref,
    _S.INPUT_TRANSCRIPT_DELTA: pl.parse_item_ref,
    _S.INPUT_TRANSCRIPT_COMPLETED: pl.parse_item_ref,
    _S.INPUT_TRANSCRIPT_FAILED: pl.parse_item_ref,
    _S.RESPONSE_CREATED: pl.parse_response_created,
    _S.RESPONSE_DONE: pl.parse_response_done,
    _S.AUDIO_DELTA: pl.parse_audio_delta,
    _S.AUDIO_DONE: pl.parse_done,
    _S.AUDIO_TRANSCRIPT_DELTA: pl.parse_delta,
    _S.AUDIO_TRANSCRIPT_DONE: pl.parse_done,
    _S.TEXT_DELTA: pl.parse_delta,
    _S.TEXT_DONE: pl.parse_done,
    _S.FUNCTION_ARGUMENTS_DELTA: pl.parse_delta,
    _S.FUNCTION_ARGUMENTS_DONE: pl.parse_done,
    _S.MCP_LIST_TOOLS_IN_PROGRESS: pl.parse_item_ref,
    _S.MCP_LIST_TOOLS_COMPLETED: pl.parse_item_ref,
    _S.MCP_LIST_TOOLS_FAILED: pl.parse_item_ref,
    _S.MCP_CALL_ARGUMENTS_DONE: pl.parse_done,
    _S.MCP_CALL_IN_PROGRESS: pl.parse_item_ref,
    _S.MCP_CALL_COMPLETED: pl.parse_item_ref,
    _S.MCP_CALL_FAILED: pl.parse_item_ref,
}
"""The payload parser of each event type the bot reads; the others get `payloads.Empty`."""


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """A parsed server event: its internal type, its typed payload, the wire spelling and the
    raw frame (for logs and tests; consumers read ``payload``)."""

    type: ServerEventType
    data: JSON
    wire_type: str = ""
    payload: pl.Payload = field(default_factory=pl.Empty)

    @classmethod
    def of(cls, event_type: ServerEventType, data: JSON, wire_type: str = "") -> ServerEvent:
        """Parse ``data`` as an event of ``event_type``; raises `payloads.BadPayload`."""
        payload = _PAYLOADS.get(event_type, pl.parse_empty)(data)
        return cls(event_type, data, wire_type or event_type.value, payload)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def object(self, key: str) -> JSON:
        """A payload field that should be an object; {} when it is missing or is not one."""
        return pl.obj(self.data.get(key))

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
    bad_payload: int = 0
    """Known event types whose payload lacked what the event is for (or held bad audio)."""
    surrogates_replaced: int = 0
    """Frames holding half a UTF-16 pair (``"\\ud800"``), replaced by U+FFFD: no file or
    terminal can take one."""
    unknown_types: dict[str, int] = field(default_factory=dict)
    """By type, bounded (`realtime_voicebot.labels.count_bounded`): a server inventing
    types cannot grow it past a few kilobytes."""

    @property
    def dropped(self) -> int:
        return (
            self.malformed_json
            + self.not_an_object
            + self.missing_type
            + self.unknown_type
            + self.bad_payload
        )


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
        try:
            event = ServerEvent.of(internal, data, wire_type)
        except pl.BadPayload as exc:
            self.stats.bad_payload += 1
            log.debug("frame_dropped", reason="bad_payload", event_type=wire_type, detail=str(exc))
            return None
        self.stats.parsed += 1
        return event


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


def turn_detection(
    settings: Settings,
    dialect: Dialect = "ga",
    *,
    create_response: bool = True,
    interrupt_response: bool | None = None,
) -> JSON | None:
    """The session's ``turn_detection`` from the settings; None for manual turns.

    ``create_response=False`` (the server commits a user turn but does not answer it until
    the client sends ``response.create``) and ``interrupt_response=False`` (speech does not
    cancel the running reply) hand turn-taking to the client. ``interrupt_response=None``
    takes the `interrupt_response` setting. Raises ValueError for what the dialect lacks
    (see `config.dialect_problems`).
    """
    if settings.turn_detection == "manual":
        return None
    interrupt = settings.interrupt_response if interrupt_response is None else interrupt_response
    if settings.turn_detection == "semantic_vad":
        return {
            "type": "semantic_vad",
            "eagerness": settings.vad_eagerness,
            "create_response": create_response,
            "interrupt_response": interrupt,
        }
    detection: JSON = {
        "type": "server_vad",
        "threshold": settings.vad_threshold,
        "prefix_padding_ms": settings.vad_prefix_padding_ms,
        "silence_duration_ms": settings.vad_silence_ms,
        "create_response": create_response,
        "interrupt_response": interrupt,
    }
    if settings.idle_timeout_ms is not None:
        if dialect != "ga":
            raise ValueError("idle_timeout_ms needs the GA dialect")
        detection["idle_timeout_ms"] = settings.idle_timeout_ms
    return detection


def noise_reduction_config(settings: Settings) -> JSON | None:
    """``{"type": "near_field" | "far_field"}``, or None when the setting is ``off``."""
    if settings.noise_reduction == "off":
        return None
    return {"type": settings.noise_reduction}


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
    create_response: bool = True,
    interrupt_response: bool | None = None,
) -> JSON:
    """The ``session`` object of a session.update, in the dialect's shape.

    ``vad=False`` sends ``turn_detection: null`` whatever the setting. ``create_response`` and
    ``interrupt_response`` go into ``turn_detection`` (see `turn_detection`). Noise reduction
    is always sent (null when off) so that an update also turns it off. Raises ValueError for
    what the dialect lacks: an idle timeout or a hosted MCP tool in beta.
    """
    detection = (
        turn_detection(
            settings,
            dialect,
            create_response=create_response,
            interrupt_response=interrupt_response,
        )
        if vad
        else None
    )
    noise = noise_reduction_config(settings)
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
                    "noise_reduction": noise,
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
        hosted = [t.get("type") for t in tools or [] if t.get("type") != "function"]
        if hosted:
            raise ValueError(f"{hosted[0]} tools need the GA dialect (beta has functions only)")
        session = {
            "modalities": ["audio", "text"],
            "instructions": settings.instructions,
            "voice": settings.voice,
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": {"model": settings.transcription_model},
            "input_audio_noise_reduction": noise,
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
    create_response: bool = True,
    interrupt_response: bool | None = None,
) -> JSON:
    """A ``session.update`` carrying `session_config` (same arguments)."""
    return _event(
        ClientEventType.SESSION_UPDATE,
        session=session_config(
            settings,
            dialect,
            tools=tools,
            vad=vad,
            create_response=create_response,
            interrupt_response=interrupt_response,
        ),
    )


def session_tools_update(tools: list[JSON], dialect: Dialect) -> JSON:
    """A ``session.update`` that changes only the session's tools (mid-session: the rest of
    the configuration, turn detection included, stays as it is). An empty list removes them.
    Raises ValueError for a hosted tool in beta."""
    session: JSON = {"type": "realtime"} if dialect == "ga" else {}
    if dialect != "ga":
        hosted = [t.get("type") for t in tools if t.get("type") != "function"]
        if hosted:
            raise ValueError(f"{hosted[0]} tools need the GA dialect (beta has functions only)")
    session["tools"] = list(tools)
    session["tool_choice"] = "auto" if tools else "none"
    return _event(ClientEventType.SESSION_UPDATE, session=session)


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


def item_reference(item_id: str) -> JSON:
    """An entry of a response's ``input`` that points at an item the session holds."""
    return {"type": ItemType.ITEM_REFERENCE.value, "id": item_id}


MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512


def out_of_band_response_create(
    dialect: Dialect,
    *,
    instructions: str | None,
    metadata: dict[str, str] | None = None,
    input_items: list[JSON] | None = None,
    output_modalities: tuple[Literal["text", "audio"], ...] = ("text",),
    max_output_tokens: int | None = None,
    tool_choice: Literal["auto", "none", "required"] | None = None,
) -> JSON:
    """A ``response.create`` that runs outside the default conversation (``conversation:
    "none"``): it adds no item, may run beside a normal response, and its ``response.done``
    has ``conversation_id: null`` and echoes ``metadata`` (up to 16 string pairs).

    ``instructions`` None: the session's apply (the prompt then starts like the
    conversation's, so its cached prefix is reused). ``input_items`` None: the model reads
    the whole conversation; ``[]``: nothing; else items (inline, or `item_reference`). GA
    validates references only with the SDK's ``ResponseCreateEventWithReferencesParam``;
    beta's union takes them as they are. ``tool_choice`` ``none`` keeps the session's tools
    in the prompt but calls none of them.
    """
    if len(metadata or {}) > MAX_METADATA_PAIRS:
        raise ValueError(f"metadata holds at most {MAX_METADATA_PAIRS} pairs")
    for key, value in (metadata or {}).items():
        if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(
                f"metadata keys hold at most {MAX_METADATA_KEY_CHARS} characters and values "
                f"{MAX_METADATA_VALUE_CHARS}"
            )
    response: JSON = {
        "conversation": "none",
        ("output_modalities" if dialect == "ga" else "modalities"): list(output_modalities),
    }
    if instructions is not None:
        response["instructions"] = instructions
    if tool_choice is not None:
        response["tool_choice"] = tool_choice
    if metadata:
        response["metadata"] = dict(metadata)
    if input_items is not None:
        response["input"] = list(input_items)
    if max_output_tokens is not None:
        key = "max_output_tokens" if dialect == "ga" else "max_response_output_tokens"
        response[key] = max_output_tokens
    return _event(ClientEventType.RESPONSE_CREATE, response=response)


def is_conversation_response_create(event: JSON) -> bool:
    """Whether a client event asks for a reply in the default conversation (a
    ``response.create`` that is not out of band)."""
    if event.get("type") != ClientEventType.RESPONSE_CREATE:
        return False
    response = event.get("response")
    return not (isinstance(response, dict) and response.get("conversation") == "none")


def response_cancel(response_id: str | None = None) -> JSON:
    if response_id is None:
        return _event(ClientEventType.RESPONSE_CANCEL)
    return _event(ClientEventType.RESPONSE_CANCEL, response_id=response_id)


# --- items the client creates beyond text -------------------------------------------------------

_item_counter = itertools.count(1)


def new_item_id() -> str:
    """A unique client item id (the service takes at most 32 characters)."""
    return f"item_{_event_prefix}{next(_item_counter):08d}"


McpApproval = Literal["always", "never"] | JSON
"""``require_approval``: always, never, or ``{"always": {"tool_names": [...]}, "never":
{...}}`` (filters may also hold ``read_only``)."""


def mcp_tool(
    server_label: str,
    *,
    server_url: str | None = None,
    connector_id: str | None = None,
    authorization: str | None = None,
    allowed_tools: list[str] | None = None,
    require_approval: McpApproval = "always",
    headers: dict[str, str] | None = None,
    server_description: str | None = None,
) -> JSON:
    """A hosted MCP session tool (GA only): the service itself lists the server's tools and
    calls them. Give exactly one of ``server_url`` (http or https) and ``connector_id``.

    ``authorization`` (an OAuth token) and ``headers`` are secrets: never log the result.
    """
    if not server_label or any(ch.isspace() for ch in server_label):
        raise ValueError("server_label must be a non-empty name without spaces")
    if (server_url is None) == (connector_id is None):
        raise ValueError("give exactly one of server_url and connector_id")
    if server_url is not None and not server_url.startswith(("https://", "http://")):
        raise ValueError(f"server_url must be an http(s) URL, not {server_url[:40]!r}")
    tool: JSON = {"type": "mcp", "server_label": server_label}
    if server_url is not None:
        tool["server_url"] = server_url
    else:
        tool["connector_id"] = connector_id
    if authorization is not None:
        tool["authorization"] = authorization
    if headers:
        tool["headers"] = dict(headers)
    if allowed_tools is not None:
        tool["allowed_tools"] = list(allowed_tools)
    tool["require_approval"] = require_approval
    if server_description is not None:
        tool["server_description"] = server_description
    return tool


def mcp_approval_response_item(
    approval_request_id: str,
    approve: bool,
    *,
    reason: str | None = None,
    item_id: str | None = None,
) -> JSON:
    """The answer to an ``mcp_approval_request`` item (GA only). The SDK's item type needs
    an ``id``, so one is made when not given."""
    item: JSON = {
        "type": ItemType.MCP_APPROVAL_RESPONSE.value,
        "id": item_id or new_item_id(),
        "approval_request_id": approval_request_id,
        "approve": approve,
    }
    if reason is not None:
        item["reason"] = reason
    return item


def mcp_approval_response_create(
    approval_request_id: str,
    approve: bool,
    *,
    reason: str | None = None,
    item_id: str | None = None,
) -> JSON:
    """``conversation.item.create`` answering an MCP approval request; the service then
    carries on by itself (runs the call and speaks, or says it could not)."""
    return item_create(
        mcp_approval_response_item(approval_request_id, approve, reason=reason, item_id=item_id)
    )


ImageDetail = Literal["auto", "low", "high"]
IMAGE_SIGNATURES: dict[str, bytes] = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
}
"""The image types the Realtime API takes, by their file signature."""
_DATA_URL_PREFIX = "data:{};base64,"


def image_mime_type(data: bytes) -> str | None:
    """``image/png`` or ``image/jpeg`` from the bytes' signature; None for anything else."""
    for mime, signature in IMAGE_SIGNATURES.items():
        if data.startswith(signature):
            return mime
    return None


def image_data_url(data: bytes, mime_type: str | None = None) -> str:
    """A base64 data URL of a PNG or JPEG image; ValueError when the bytes are neither or
    do not match ``mime_type``."""
    found = image_mime_type(data)
    if found is None:
        raise ValueError("not a PNG or JPEG image (the Realtime API takes only those)")
    if mime_type is not None and mime_type.lower() != found:
        raise ValueError(f"the image is {found}, not {mime_type}")
    return _DATA_URL_PREFIX.format(found) + base64.b64encode(data).decode("ascii")


def _checked_data_url(url: str) -> str:
    head, sep, payload = url.partition(",")
    mime = head.removeprefix("data:").removesuffix(";base64")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise ValueError("an image must be bytes or a base64 data URL (data:image/png;base64,...)")
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        raise ValueError("the image data URL is not valid base64") from None
    return image_data_url(data, mime)


def image_message_item(
    image: bytes | str,
    dialect: Dialect,
    *,
    mime_type: str | None = None,
    text: str | None = None,
    detail: ImageDetail | None = None,
    item_id: str | None = None,
) -> JSON:
    """A user message holding an ``input_image`` part (GA only), after an optional
    ``input_text`` part (the question about it). ``image`` is PNG/JPEG bytes or a base64
    data URL; both are checked. Raises ValueError for beta or a bad image."""
    if dialect != "ga":
        raise ValueError("images need the GA dialect (beta sessions take no image input)")
    url = image_data_url(image, mime_type) if isinstance(image, bytes) else _checked_data_url(image)
    content: list[JSON] = []
    if text:
        content.append({"type": "input_text", "text": text})
    part: JSON = {"type": "input_image", "image_url": url}
    if detail is not None:
        part["detail"] = detail
    content.append(part)
    item: JSON = {"type": ItemType.MESSAGE.value, "role": "user", "content": content}
    if item_id is not None:
        item["id"] = item_id
    return item


def image_message_create(
    image: bytes | str,
    dialect: Dialect,
    *,
    mime_type: str | None = None,
    text: str | None = None,
    detail: ImageDetail | None = None,
    previous_item_id: str | None = None,
    item_id: str | None = None,
) -> JSON:
    """``conversation.item.create`` of `image_message_item`; send ``response.create`` after
    it for an answer."""
    item = image_message_item(
        image, dialect, mime_type=mime_type, text=text, detail=detail, item_id=item_id
    )
    return item_create(item, previous_item_id)


def encode(event: JSON) -> str:
    """Serialize a client event for the wire."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
