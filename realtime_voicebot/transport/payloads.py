"""Typed payloads of server events, checked once where the frame enters.

`transport.events.EventParser` turns each frame into a `ServerEvent` whose ``payload`` is one
of the classes below. Parsing is the one place that looks at the shape of a payload: every
field is checked for its type, counts are clamped to a sane range, strings that are only shown
are cut to a bounded length, and base64 audio is decoded. A frame whose essential fields are
missing or wrong (an audio delta without an item id, or whose audio is not base64) raises
`BadPayload`, and the parser counts and drops it like any other bad frame. Consumers (the
session core, the client) then read plain attributes and never re-check a dict.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass, field
from typing import Any

from realtime_voicebot.errors import VoicebotError

JSON = dict[str, Any]

MAX_COUNT = 1_000_000_000
"""Token counts and milliseconds above this are absurd: clamped (a bad server cannot make the
cost overflow a float or the window look infinite)."""
MAX_SHOWN_CHARS = 2_000
"""Messages and codes that are shown or logged are cut to this many characters."""
MAX_CODE_CHARS = 100
MAX_ID_CHARS = 256


class BadPayload(VoicebotError, ValueError):
    """The payload of a known event type lacks what the event is for."""


# --- field readers --------------------------------------------------------------------------


def obj(value: Any) -> JSON:
    """An object field; {} when missing or not an object."""
    return value if isinstance(value, dict) else {}


def opt_str(value: Any, limit: int = MAX_ID_CHARS) -> str | None:
    """A string field (cut to ``limit``), or None when missing or not a string."""
    return value[:limit] if isinstance(value, str) else None


def text(value: Any) -> str:
    """A text field (transcripts, deltas): the string, or "" when it is not one."""
    return value if isinstance(value, str) else ""


def shown(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """A value meant for a person (an error code or message): always a bounded string."""
    if value is None:
        return ""
    result = value if isinstance(value, str) else repr(value)
    return result[:limit]


def count(value: Any) -> int:
    """A count from the wire: a non-negative int clamped to `MAX_COUNT`; anything else is 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return int(min(max(value, 0), MAX_COUNT))


def opt_count(value: Any) -> int | None:
    """`count` of a field that may be absent (None then)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return count(value)


def required_id(data: JSON, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise BadPayload(f"{key} missing")
    return value[:MAX_ID_CHARS]


# --- shared pieces --------------------------------------------------------------------------

TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})
AUDIO_PART_TYPES = frozenset({"input_audio", "output_audio", "audio"})


@dataclass(frozen=True, slots=True)
class ItemData:
    """A conversation item as the server describes it."""

    id: str
    type: str = "message"
    role: str | None = None
    status: str | None = None
    text: str = ""
    """Its text parts, or the transcripts of its audio parts, joined."""
    has_audio: bool = False
    name: str | None = None
    call_id: str | None = None
    arguments: str | None = None
    output: str | None = None
    server_label: str | None = None
    """Hosted MCP items (GA): the server's label."""
    error: str | None = None
    """``mcp_call``: the message of its error object, when the call failed."""
    tool_names: tuple[str, ...] = ()
    """``mcp_list_tools``: the names of the tools listed (at most `MAX_LISTED_TOOLS`)."""


MAX_LISTED_TOOLS = 256
IMAGE_PART_TYPES = frozenset({"input_image"})
IMAGE_MARK = "[image]"
"""An image part's place in an item's text (the image itself is not text)."""


def item_text(content: Any) -> str:
    """The words of an item's content: its text parts, or the transcripts of its audio parts."""
    if not isinstance(content, list):
        return ""
    words: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in IMAGE_PART_TYPES:
            words.append(IMAGE_MARK)
            continue
        value = part.get("text") if kind in TEXT_PART_TYPES else part.get("transcript")
        if isinstance(value, str) and value:
            words.append(value)
    return " ".join(words)


def _error_message(value: Any) -> str | None:
    """The message of an ``mcp_call`` error object (its type when it has none)."""
    if not isinstance(value, dict):
        return None
    message = value.get("message")
    return shown(message) if isinstance(message, str) and message else shown(value.get("type"))


def _tool_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    names = (opt_str(obj(tool).get("name"), 128) for tool in value[:MAX_LISTED_TOOLS])
    return tuple(name for name in names if name)


def parse_item(value: Any) -> ItemData:
    data = obj(value)
    content = data.get("content")
    return ItemData(
        id=required_id(data, "id"),
        type=opt_str(data.get("type"), 64) or "message",
        role=opt_str(data.get("role"), 32),
        status=opt_str(data.get("status"), 32),
        text=item_text(content),
        has_audio=isinstance(content, list)
        and any(isinstance(p, dict) and p.get("type") in AUDIO_PART_TYPES for p in content),
        name=opt_str(data.get("name"), 128),
        call_id=opt_str(data.get("call_id")),
        arguments=opt_str(data.get("arguments"), 1 << 20),
        output=opt_str(data.get("output"), 1 << 20),
        server_label=opt_str(data.get("server_label"), 128),
        error=_error_message(data.get("error")),
        tool_names=_tool_names(data.get("tools")),
    )


@dataclass(frozen=True, slots=True)
class Usage:
    """``response.usage``; every field optional on the wire (0 when missing)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    input_cached_tokens: int = 0
    cached_text_tokens: int | None = None
    """Set when the server splits cached tokens (GA ``cached_tokens_details``)."""
    cached_audio_tokens: int | None = None
    output_text_tokens: int = 0
    output_audio_tokens: int = 0

    @property
    def window_tokens(self) -> int:
        """What the model holds after this response: its input plus its output."""
        return self.input_tokens + self.output_tokens


def parse_usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    inputs = obj(value.get("input_token_details"))
    outputs = obj(value.get("output_token_details"))
    details = inputs.get("cached_tokens_details")
    split = isinstance(details, dict)
    return Usage(
        input_tokens=count(value.get("input_tokens")),
        output_tokens=count(value.get("output_tokens")),
        total_tokens=count(value.get("total_tokens")),
        input_text_tokens=count(inputs.get("text_tokens")),
        input_audio_tokens=count(inputs.get("audio_tokens")),
        input_image_tokens=count(inputs.get("image_tokens")),
        input_cached_tokens=count(inputs.get("cached_tokens")),
        cached_text_tokens=count(obj(details).get("text_tokens")) if split else None,
        cached_audio_tokens=count(obj(details).get("audio_tokens")) if split else None,
        output_text_tokens=count(outputs.get("text_tokens")),
        output_audio_tokens=count(outputs.get("audio_tokens")),
    )


# --- payloads, one per kind of event ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payload:
    """Base of every payload."""


@dataclass(frozen=True, slots=True)
class Empty(Payload):
    """An event whose payload the bot does not read."""


@dataclass(frozen=True, slots=True)
class SessionCreated(Payload):
    session_id: str = ""
    expires_at: float | None = None
    """Unix time the session ends, as the server says (None when absent or not a number)."""


@dataclass(frozen=True, slots=True)
class ServerError(Payload):
    """An ``error`` event. ``code`` is always a bounded string (a code that is a list or an
    object on the wire becomes its repr, so it can key a counter)."""

    code: str = ""
    message: str = ""
    type: str = ""
    param: str | None = None
    event_id: str | None = None
    """The client event that failed, when the server names it."""

    @property
    def label(self) -> str:
        """The code, else the type, else ``unknown``."""
        return self.code or self.type or "unknown"


@dataclass(frozen=True, slots=True)
class SpeechStarted(Payload):
    item_id: str | None = None
    audio_start_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SpeechStopped(Payload):
    item_id: str | None = None
    audio_end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class InputCommitted(Payload):
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class InputTimeout(Payload):
    """``input_audio_buffer.timeout_triggered``: the user stayed silent (idle timeout)."""

    item_id: str | None = None
    audio_start_ms: int | None = None
    audio_end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ItemEvent(Payload):
    """An item added, done, or output by a response."""

    item: ItemData
    previous_item_id: str | None = None
    has_previous: bool = False
    """Whether the event carries ``previous_item_id`` at all (None then means the root)."""
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class ItemRef(Payload):
    """An event about one item by id: deleted, truncated, an input transcript."""

    item_id: str
    audio_end_ms: int = 0
    text: str = ""
    """The transcript (or its delta) for input transcription events."""


@dataclass(frozen=True, slots=True)
class ResponseCreated(Payload):
    response_id: str
    out_of_band: bool = False
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResponseDone(Payload):
    response_id: str | None
    status: str = "completed"
    output: tuple[ItemData, ...] = ()
    usage: Usage | None = None
    out_of_band: bool = False
    """The response wrote to no conversation (``conversation_id`` null with ``conversation:
    "none"``); its items are not the conversation's."""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AudioDelta(Payload):
    item_id: str
    response_id: str | None
    pcm: bytes
    """PCM16 24 kHz mono, decoded."""


@dataclass(frozen=True, slots=True)
class Delta(Payload):
    """A text delta of a reply: its transcript, its text, or a function's arguments."""

    item_id: str
    response_id: str | None
    delta: str
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class Done(Payload):
    """The end of a reply part: audio, transcript, text, or a function's arguments."""

    item_id: str | None
    response_id: str | None
    text: str | None = None
    call_id: str | None = None
    name: str | None = None


# --- parsers --------------------------------------------------------------------------------


def _metadata(value: Any) -> dict[str, str]:
    return {
        str(k)[:64]: v[:512] for k, v in obj(value).items() if isinstance(v, str) and len(k) < 64
    }


def parse_session_created(data: JSON) -> SessionCreated:
    session = obj(data.get("session"))
    expires = session.get("expires_at")
    expires_at: float | None = None
    if isinstance(expires, int | float) and not isinstance(expires, bool):
        expires_at = float(expires) if math.isfinite(expires) else None
    return SessionCreated(session_id=opt_str(session.get("id")) or "", expires_at=expires_at)


def parse_error(data: JSON) -> ServerError:
    error = obj(data.get("error"))
    return ServerError(
        code=shown(error.get("code"), MAX_CODE_CHARS),
        message=shown(error.get("message")),
        type=shown(error.get("type"), MAX_CODE_CHARS),
        param=opt_str(error.get("param")),
        event_id=opt_str(error.get("event_id")),
    )


def parse_speech_started(data: JSON) -> SpeechStarted:
    return SpeechStarted(opt_str(data.get("item_id")), opt_count(data.get("audio_start_ms")))


def parse_speech_stopped(data: JSON) -> SpeechStopped:
    return SpeechStopped(opt_str(data.get("item_id")), opt_count(data.get("audio_end_ms")))


def parse_committed(data: JSON) -> InputCommitted:
    return InputCommitted(opt_str(data.get("item_id")))


def parse_input_timeout(data: JSON) -> InputTimeout:
    return InputTimeout(
        opt_str(data.get("item_id")),
        opt_count(data.get("audio_start_ms")),
        opt_count(data.get("audio_end_ms")),
    )


def parse_item_event(data: JSON) -> ItemEvent:
    previous = data.get("previous_item_id")
    return ItemEvent(
        item=parse_item(data.get("item")),
        previous_item_id=opt_str(previous),
        has_previous="previous_item_id" in data,
        response_id=opt_str(data.get("response_id")),
    )


def parse_item_ref(data: JSON) -> ItemRef:
    return ItemRef(
        item_id=required_id(data, "item_id"),
        audio_end_ms=count(data.get("audio_end_ms")),
        text=text(data.get("transcript", data.get("delta"))),
    )


def _response(data: JSON) -> JSON:
    return obj(data.get("response"))


def _out_of_band(response: JSON) -> bool:
    return "conversation_id" in response and response.get("conversation_id") is None


def parse_response_created(data: JSON) -> ResponseCreated:
    response = _response(data)
    return ResponseCreated(
        response_id=required_id(response, "id"),
        out_of_band=_out_of_band(response),
        metadata=_metadata(response.get("metadata")),
    )


def parse_response_done(data: JSON) -> ResponseDone:
    response = _response(data)
    status = opt_str(response.get("status"), 32) or "completed"
    output = response.get("output")
    items: list[ItemData] = []
    for entry in output if isinstance(output, list) else []:
        try:
            items.append(parse_item(entry))
        except BadPayload:
            continue
    return ResponseDone(
        response_id=opt_str(response.get("id")),
        status=status,
        output=tuple(items),
        usage=parse_usage(response.get("usage")),
        out_of_band=_out_of_band(response),
        metadata=_metadata(response.get("metadata")),
    )


def parse_audio_delta(data: JSON) -> AudioDelta:
    delta = data.get("delta")
    if not isinstance(delta, str):
        raise BadPayload("delta missing")
    try:
        pcm = base64.b64decode(delta, validate=True)
    except (binascii.Error, ValueError):
        raise BadPayload("delta is not base64") from None
    return AudioDelta(required_id(data, "item_id"), opt_str(data.get("response_id")), pcm)


def parse_delta(data: JSON) -> Delta:
    delta = data.get("delta")
    if not isinstance(delta, str):
        raise BadPayload("delta missing")
    return Delta(
        required_id(data, "item_id"),
        opt_str(data.get("response_id")),
        delta,
        opt_str(data.get("call_id")),
    )


def parse_done(data: JSON) -> Done:
    final = data.get("transcript", data.get("text", data.get("arguments")))
    return Done(
        item_id=opt_str(data.get("item_id")),
        response_id=opt_str(data.get("response_id")),
        text=final if isinstance(final, str) else None,
        call_id=opt_str(data.get("call_id")),
        name=opt_str(data.get("name"), 128),
    )


def parse_empty(data: JSON) -> Empty:
    return Empty()
