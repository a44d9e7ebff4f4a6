"""The server side of a conversation: ordered items, insert/delete/truncate, token accounting.

Pure logic. Items keep the dialect's content types (``output_audio`` in GA, ``audio`` in beta)
and, for audio parts, how many milliseconds of audio they hold, which is what the token
window and truncation work from.

Token estimates (rates in `TokenRates`): text is one token per 4 characters (rounded up),
user audio 10 tokens a second, assistant audio 20 tokens a second. An audio part counts as
audio only; its transcript is not counted again. An image part counts the tokens
`fake.images.image_tokens` gives it. Hosted MCP items (GA) count their text: the tool list,
or the call's name, arguments and output.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Any

from realtime_voicebot.fake.errors import RequestError
from realtime_voicebot.transport.events import (
    AUDIO_PART_TYPES,
    TEXT_PART_TYPES,
    ErrorCode,
    ItemType,
    Role,
)

JSON = dict[str, Any]

ASSISTANT_AUDIO_TYPES = frozenset({"output_audio", "audio"})
IMAGE_PART_TYPE = "input_image"
CACHE_MIN_TOKENS = 1024
CACHE_BLOCK_TOKENS = 128


class IdFactory:
    """Unique ids in the service's style: ``item_…``, ``resp_…``, ``event_…``, ``call_…``."""

    def __init__(self) -> None:
        self._tag = os.urandom(3).hex()
        self._counter = itertools.count(1)

    def new(self, prefix: str) -> str:
        return f"{prefix}_{self._tag}{next(self._counter):07d}"


@dataclass(frozen=True)
class TokenRates:
    chars_per_text_token: float = 4.0
    user_audio_tokens_per_s: float = 10.0
    assistant_audio_tokens_per_s: float = 20.0

    def text(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_text_token) if text else 0

    def audio(self, audio_ms: float, role: str | None) -> int:
        per_s = (
            self.assistant_audio_tokens_per_s
            if role == "assistant"
            else self.user_audio_tokens_per_s
        )
        return int(audio_ms * per_s / 1000.0 + 0.5)


@dataclass(frozen=True)
class TokenCount:
    text: int = 0
    audio: int = 0
    image: int = 0

    @property
    def total(self) -> int:
        return self.text + self.audio + self.image

    def __add__(self, other: TokenCount) -> TokenCount:
        return TokenCount(
            self.text + other.text, self.audio + other.audio, self.image + other.image
        )

    @property
    def key(self) -> str:
        """What the prompt cache compares of an item besides its id."""
        return f"{self.text}:{self.audio}:{self.image}"


@dataclass
class ContentPart:
    """One content part; audio parts know how much audio they hold, image parts their size
    and tokens (the image bytes themselves are not kept)."""

    type: str
    text: str | None = None
    transcript: str | None = None
    audio_ms: float = 0.0
    detail: str | None = None
    image_size: tuple[int, int] | None = None
    image_tokens: int = 0

    @property
    def is_audio(self) -> bool:
        return self.type in AUDIO_PART_TYPES

    @property
    def is_image(self) -> bool:
        return self.type == IMAGE_PART_TYPE

    def words(self) -> str:
        if self.is_image:
            width, height = self.image_size or (0, 0)
            return f"[image {width}x{height}]"
        return (self.text if self.type in TEXT_PART_TYPES else self.transcript) or ""

    def to_wire(self) -> JSON:
        if self.is_audio:
            return {"type": self.type, "transcript": self.transcript}
        if self.type in TEXT_PART_TYPES:
            return {"type": self.type, "text": self.text or ""}
        if self.is_image:
            # The fake does not echo the image bytes (as it does not echo input audio).
            return {"type": self.type, "detail": self.detail or "auto"}
        return {"type": self.type}


@dataclass
class Item:
    """A conversation item as the server holds it."""

    id: str
    type: str
    role: Role | None = None
    content: list[ContentPart] = field(default_factory=list)
    status: str = "completed"
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    heard: str = ""
    """What the fake model understood of user audio (the scenario's line), transcribed or not."""
    server_label: str | None = None
    """MCP items: the server's label."""
    tools: list[JSON] | None = None
    """``mcp_list_tools``: the tools listed."""
    approval_request_id: str | None = None
    """``mcp_call`` (when approved) and ``mcp_approval_response``: the request's id."""
    approve: bool | None = None
    reason: str | None = None
    error: JSON | None = None
    """``mcp_call``: the error object when the call failed."""
    response_id: str | None = None
    """The response that produced the item (None for client or VAD items)."""

    @property
    def audio_ms(self) -> float:
        return sum(part.audio_ms for part in self.content if part.is_audio)

    def text(self) -> str:
        """The words of the item: text parts and transcripts, or what was heard."""
        kind = self.type
        if kind == ItemType.FUNCTION_CALL:
            return f"{self.name}({self.arguments or ''})"
        if kind == ItemType.FUNCTION_CALL_OUTPUT:
            return self.output or ""
        if kind == ItemType.MCP_LIST_TOOLS:
            names = ", ".join(str(t.get("name")) for t in self.tools or [])
            return f"[{self.server_label} tools: {names}]"
        if kind == ItemType.MCP_CALL:
            result = self.output if self.error is None else f"error: {self.error.get('message')}"
            return f"{self.server_label}.{self.name}({self.arguments or ''}) -> {result or ''}"
        if kind == ItemType.MCP_APPROVAL_REQUEST:
            return f"[approve {self.server_label}.{self.name}({self.arguments or ''})?]"
        if kind == ItemType.MCP_APPROVAL_RESPONSE:
            return "[approved]" if self.approve else "[refused]"
        joined = " ".join(w for w in (part.words() for part in self.content) if w)
        return joined or self.heard

    def tokens(self, rates: TokenRates) -> TokenCount:
        if self.type != ItemType.MESSAGE:
            return TokenCount(text=rates.text(self.text()))
        count = TokenCount()
        for part in self.content:
            if part.is_audio and part.audio_ms > 0:
                count += TokenCount(audio=rates.audio(part.audio_ms, self.role))
            elif part.is_audio:
                count += TokenCount(text=rates.text(part.transcript or ""))
            elif part.is_image:
                count += TokenCount(image=part.image_tokens)
            else:
                count += TokenCount(text=rates.text(part.text or ""))
        return count

    def to_wire(self) -> JSON:
        wire: JSON = {"id": self.id, "object": "realtime.item", "type": self.type}
        wire["status"] = self.status
        kind = self.type
        if kind == ItemType.MESSAGE:
            wire["role"] = self.role
            wire["content"] = [part.to_wire() for part in self.content]
        elif kind == ItemType.FUNCTION_CALL:
            wire.update(call_id=self.call_id, name=self.name, arguments=self.arguments or "")
        elif kind == ItemType.FUNCTION_CALL_OUTPUT:
            wire.update(call_id=self.call_id, output=self.output or "")
        elif kind == ItemType.MCP_LIST_TOOLS:
            wire.update(server_label=self.server_label, tools=list(self.tools or []))
        elif kind == ItemType.MCP_CALL:
            wire.update(
                server_label=self.server_label,
                name=self.name,
                arguments=self.arguments or "",
                approval_request_id=self.approval_request_id,
                output=self.output,
                error=self.error,
            )
        elif kind == ItemType.MCP_APPROVAL_REQUEST:
            wire.update(
                server_label=self.server_label, name=self.name, arguments=self.arguments or ""
            )
        elif kind == ItemType.MCP_APPROVAL_RESPONSE:
            wire.update(approval_request_id=self.approval_request_id, approve=bool(self.approve))
            if self.reason is not None:
                wire["reason"] = self.reason
        return wire


@dataclass(frozen=True)
class ItemView:
    """What tests inspect of an item the server holds."""

    id: str
    type: str
    role: str | None
    text: str
    audio_ms: float
    status: str


class Conversation:
    """The ordered items of one session."""

    def __init__(self) -> None:
        self.items: list[Item] = []

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    def _index(self, item_id: str, action: str, param: str = "item_id") -> int:
        for index, item in enumerate(self.items):
            if item.id == item_id:
                return index
        raise RequestError(
            ErrorCode.ITEM_NOT_FOUND,
            f"Error {action} item: the item with id '{item_id}' does not exist.",
            param,
        )

    def get(self, item_id: str, action: str = "retrieving") -> Item:
        return self.items[self._index(item_id, action)]

    def contains(self, item_id: str) -> bool:
        return any(item.id == item_id for item in self.items)

    def last_id(self) -> str | None:
        return self.items[-1].id if self.items else None

    def insert(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Insert after ``previous_item_id`` ("root": first; None: append); the id before it."""
        if self.contains(item.id):
            raise RequestError(
                ErrorCode.INVALID_VALUE, f"Item with id '{item.id}' already exists.", "item.id"
            )
        if previous_item_id is None:
            before = self.last_id()
            self.items.append(item)
            return before
        if previous_item_id == "root":
            self.items.insert(0, item)
            return None
        index = self._index(previous_item_id, "creating", "previous_item_id")
        self.items.insert(index + 1, item)
        return previous_item_id

    def delete(self, item_id: str) -> Item:
        return self.items.pop(self._index(item_id, "deleting"))

    def oldest_over(self, rates: TokenRates, keep_tokens: int) -> list[str]:
        """The ids `drop_oldest` would drop, without dropping them."""
        used = self.tokens(rates).total
        over: list[str] = []
        for item in self.items[:-1]:
            if used <= keep_tokens:
                break
            used -= item.tokens(rates).total
            over.append(item.id)
        return over

    def drop_oldest(self, rates: TokenRates, keep_tokens: int) -> list[str]:
        """Drop items from the start until the rest holds at most ``keep_tokens``; their ids.

        The newest item always stays (a response needs something to answer).
        """
        dropped = self.oldest_over(rates, keep_tokens)
        self.items = self.items[len(dropped) :]
        return dropped

    def truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> Item:
        """Cut an assistant audio part to ``audio_end_ms``; its transcript shrinks in proportion."""
        item = self.get(item_id, "truncating")
        part = (
            item.content[content_index]
            if item.type == "message" and 0 <= content_index < len(item.content)
            else None
        )
        if (
            item.role != "assistant"
            or part is None
            or part.type not in ASSISTANT_AUDIO_TYPES
            or part.audio_ms <= 0
            or audio_end_ms <= 0
        ):
            raise RequestError(
                ErrorCode.UNSUPPORTED_CONTENT_TYPE,
                "Only model output audio messages can be truncated",
                "audio_end_ms" if part is not None and part.audio_ms > 0 else "item_id",
            )
        if audio_end_ms > part.audio_ms:
            raise RequestError(
                ErrorCode.INVALID_VALUE,
                f"Audio content of {math.floor(part.audio_ms)}ms is already shorter "
                f"than {audio_end_ms}ms",
                "audio_end_ms",
            )
        if part.transcript:
            keep = round(len(part.transcript) * audio_end_ms / part.audio_ms)
            part.transcript = part.transcript[:keep].rstrip()
        part.audio_ms = float(audio_end_ms)
        return item

    def tokens(self, rates: TokenRates) -> TokenCount:
        total = TokenCount()
        for item in self.items:
            total += item.tokens(rates)
        return total

    def blocks(self, rates: TokenRates) -> list[tuple[str, int]]:
        """(identity, tokens) per item in order: what the prompt cache model compares."""
        return item_blocks(self.items, rates)

    def snapshot(self) -> list[ItemView]:
        return [
            ItemView(item.id, item.type, item.role, item.text(), item.audio_ms, item.status)
            for item in self.items
        ]


def item_blocks(items: list[Item], rates: TokenRates) -> list[tuple[str, int]]:
    """(identity, tokens) per item in order: what the prompt cache model compares."""
    blocks = []
    for item in items:
        tokens = item.tokens(rates)
        blocks.append((f"{item.id}:{tokens.key}", tokens.total))
    return blocks


def cached_tokens(previous: list[tuple[str, int]], current: list[tuple[str, int]]) -> int:
    """Tokens of the common prompt prefix, as a prompt cache would serve them.

    Like the service: nothing under 1024 tokens, then whole blocks of 128.
    """
    prefix = 0
    for before, now in zip(previous, current, strict=False):
        if before != now:
            break
        prefix += now[1]
    if prefix < CACHE_MIN_TOKENS:
        return 0
    return prefix // CACHE_BLOCK_TOKENS * CACHE_BLOCK_TOKENS
