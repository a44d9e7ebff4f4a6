"""Reading client requests: required fields, base64 audio and conversation items, validated
for the session's dialect. Pure; a bad request raises `RequestError` naming the parameter.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from realtime_voicebot.fake import images
from realtime_voicebot.fake.conversation import ContentPart, IdFactory, Item
from realtime_voicebot.fake.errors import RequestError
from realtime_voicebot.transport.events import PCM_BYTES_PER_MS, Dialect, ErrorCode, ItemType

JSON = dict[str, Any]

MAX_ITEM_ID_CHARS = 32

CONTENT_TYPES: dict[tuple[Dialect, str], frozenset[str]] = {
    ("ga", "system"): frozenset({"input_text"}),
    ("ga", "user"): frozenset({"input_text", "input_audio", "input_image"}),
    ("ga", "assistant"): frozenset({"output_text", "output_audio"}),
    ("beta", "system"): frozenset({"input_text"}),
    ("beta", "user"): frozenset({"input_text", "input_audio"}),
    ("beta", "assistant"): frozenset({"text", "audio"}),
}
"""Content part types each role takes, per dialect."""


def decode_audio(value: Any, param: str) -> bytes:
    """PCM16 bytes from a base64 string, or a `RequestError` naming ``param``."""
    if not isinstance(value, str):
        raise RequestError(
            ErrorCode.INVALID_VALUE, f"Invalid type for '{param}': expected base64 audio.", param
        )
    try:
        pcm = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            ErrorCode.INVALID_VALUE, f"Invalid '{param}': not valid base64.", param
        ) from None
    if len(pcm) % 2:
        raise RequestError(
            ErrorCode.INVALID_VALUE, f"Invalid '{param}': PCM16 needs an even byte count.", param
        )
    return pcm


def require_str(data: JSON, key: str, param: str | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        name = param or key
        raise RequestError(
            ErrorCode.MISSING_PARAMETER, f"Missing required parameter: '{name}'.", name
        )
    return value


def require_int(data: JSON, key: str, minimum: int = 0) -> int:
    value = data.get(key)
    if value is None:
        raise RequestError(
            ErrorCode.MISSING_PARAMETER, f"Missing required parameter: '{key}'.", key
        )
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise RequestError(
            ErrorCode.INVALID_VALUE,
            f"Invalid '{key}': expected an integer >= {minimum}, got {value!r}.",
            key,
        )
    return value


def item_from_client(data: Any, dialect: Dialect, ids: IdFactory, param: str = "item") -> Item:
    """A conversation item from a client's object, validated for the dialect; ids assigned."""
    if not isinstance(data, dict):
        raise RequestError(
            ErrorCode.MISSING_PARAMETER, f"Missing required parameter: '{param}'.", param
        )
    item_id = data.get("id")
    if item_id is not None and (not isinstance(item_id, str) or not item_id):
        raise RequestError(ErrorCode.INVALID_VALUE, f"Invalid '{param}.id'.", f"{param}.id")
    if isinstance(item_id, str) and len(item_id) > MAX_ITEM_ID_CHARS:
        raise RequestError(
            ErrorCode.INVALID_VALUE,
            f"Invalid '{param}.id': string too long. Expected a string with maximum length "
            f"{MAX_ITEM_ID_CHARS}, but got a string with length {len(item_id)} instead.",
            f"{param}.id",
        )
    new_id = item_id or ids.new("item")
    kind = data.get("type")
    if kind == "message":
        return _message_from_client(new_id, data, dialect, param)
    if kind == "function_call":
        return Item(
            new_id,
            "function_call",
            name=require_str(data, "name", f"{param}.name"),
            arguments=data.get("arguments") if isinstance(data.get("arguments"), str) else "",
            call_id=data.get("call_id") or ids.new("call"),
        )
    if kind == "function_call_output":
        output = data.get("output")
        if not isinstance(output, str):
            raise RequestError(
                ErrorCode.MISSING_PARAMETER,
                f"Missing required parameter: '{param}.output'.",
                f"{param}.output",
            )
        return Item(
            new_id,
            "function_call_output",
            call_id=require_str(data, "call_id", f"{param}.call_id"),
            output=output,
        )
    if kind == ItemType.MCP_APPROVAL_RESPONSE and dialect == "ga":
        approve = data.get("approve")
        if not isinstance(approve, bool):
            raise RequestError(
                ErrorCode.MISSING_PARAMETER,
                f"Missing required parameter: '{param}.approve'.",
                f"{param}.approve",
            )
        reason = data.get("reason")
        return Item(
            new_id,
            kind,
            approval_request_id=require_str(
                data, "approval_request_id", f"{param}.approval_request_id"
            ),
            approve=approve,
            reason=reason if isinstance(reason, str) else None,
        )
    if kind is None:
        raise RequestError(
            ErrorCode.MISSING_PARAMETER,
            f"Missing required parameter: '{param}.type'.",
            f"{param}.type",
        )
    supported = "'message', 'function_call', 'function_call_output'"
    supported += " and 'mcp_approval_response'" if dialect == "ga" else ""
    raise RequestError(
        ErrorCode.INVALID_VALUE,
        f"Invalid value: '{kind}'. Supported values are: {supported}.",
        f"{param}.type",
    )


def _message_from_client(item_id: str, data: JSON, dialect: Dialect, param: str) -> Item:
    role = data.get("role")
    if role not in ("system", "user", "assistant"):
        raise RequestError(
            ErrorCode.INVALID_VALUE,
            f"Invalid value: '{role}'. Supported values are: 'system', 'user' and 'assistant'.",
            f"{param}.role",
        )
    content = data.get("content")
    if not isinstance(content, list):
        raise RequestError(
            ErrorCode.MISSING_PARAMETER,
            f"Missing required parameter: '{param}.content'.",
            f"{param}.content",
        )
    allowed = CONTENT_TYPES[(dialect, role)]
    parts: list[ContentPart] = []
    for index, raw in enumerate(content):
        where = f"{param}.content[{index}]"
        kind = raw.get("type") if isinstance(raw, dict) else None
        if not isinstance(raw, dict) or kind not in allowed:
            supported = ", ".join(f"'{t}'" for t in sorted(allowed))
            raise RequestError(
                ErrorCode.INVALID_VALUE,
                f"Invalid value: '{kind}'. Supported values are: {supported}.",
                f"{where}.type",
            )
        if kind in ("input_text", "output_text", "text"):
            text = raw.get("text")
            if not isinstance(text, str):
                raise RequestError(
                    ErrorCode.MISSING_PARAMETER,
                    f"Missing required parameter: '{where}.text'.",
                    f"{where}.text",
                )
            parts.append(ContentPart(kind, text=text))
        elif kind == "input_image":
            parts.append(_image_part(raw, where))
        else:
            audio = raw.get("audio")
            audio_ms = (
                len(decode_audio(audio, f"{where}.audio")) / PCM_BYTES_PER_MS
                if audio is not None
                else 0.0
            )
            transcript = raw.get("transcript")
            parts.append(
                ContentPart(
                    kind,
                    transcript=transcript if isinstance(transcript, str) else None,
                    audio_ms=audio_ms,
                )
            )
    return Item(item_id, "message", role=role, content=parts)


def _image_part(raw: JSON, where: str) -> ContentPart:
    """An ``input_image`` part: a PNG or JPEG data URL, its size and tokens (GA only)."""
    url = raw.get("image_url")
    if not isinstance(url, str):
        raise RequestError(
            ErrorCode.MISSING_PARAMETER,
            f"Missing required parameter: '{where}.image_url'.",
            f"{where}.image_url",
        )
    detail = raw.get("detail")
    if detail is not None and detail not in images.DETAILS:
        raise RequestError(
            ErrorCode.INVALID_VALUE,
            f"Invalid value: '{detail}'. Supported values are: 'auto', 'low' and 'high'.",
            f"{where}.detail",
        )
    try:
        info = images.parse_data_url(url)
    except images.ImageError as exc:
        raise RequestError(
            ErrorCode.INVALID_VALUE, f"Invalid '{where}.image_url': {exc}.", f"{where}.image_url"
        ) from None
    return ContentPart(
        "input_image",
        detail=detail or "auto",
        image_size=(info.width, info.height),
        image_tokens=images.image_tokens(info.width, info.height, detail),
    )
