"""``/image PATH`` and ``/image https://...``: a picture read and checked before it is sent.

The typed line is ``/image TARGET [question]`` (quote a path with spaces). A file is read in
a worker thread, never on the event loop; a URL is fetched with the checks of the
``http_get`` tool (`SafeFetcher`: https only, the default port, public addresses only, every
redirect hop checked, the body capped), from the hosts of ``image_hosts`` or, when that is
unset, any public host: the user typed the URL, unlike ``http_get`` where the model picks it.
Then the bytes must be a PNG or a JPEG by their signature (the Realtime API takes no other
type) of at most ``image_max_bytes``, with a readable pixel size. Every problem is one
`ImageInputError` line saying what to do.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from realtime_voicebot.core.images import ImageInput
from realtime_voicebot.errors import UserError
from realtime_voicebot.images import jpeg_size, png_size
from realtime_voicebot.transport.events import image_mime_type

if TYPE_CHECKING:
    import httpx

    from realtime_voicebot.config import Settings
    from realtime_voicebot.tools.builtin.http_get import Resolver

COMMAND = "/image"
USAGE = "usage: /image PATH_OR_HTTPS_URL [question]  (a PNG or JPEG; quote a path with spaces)"


class ImageInputError(UserError):
    """A picture that cannot be sent; the message is one line saying what to do."""


def parse_image_command(line: str) -> tuple[str, str | None] | None:
    """``(target, question)`` of an ``/image`` line; None for any other line. Raises
    `ImageInputError` for ``/image`` without a target."""
    text = line.strip()
    if text != COMMAND and not text.startswith(COMMAND + " "):
        return None
    rest = text[len(COMMAND) :].strip()
    if not rest:
        raise ImageInputError(USAGE)
    if rest[0] in "'\"":
        end = rest.find(rest[0], 1)
        if end < 0:
            raise ImageInputError(f"the quote around the path is not closed; {USAGE}")
        target, question = rest[1:end], rest[end + 1 :]
    else:
        target, _, question = rest.partition(" ")
    return target, question.strip() or None


def _size(bytes_: int) -> str:
    return f"{bytes_ / (1024 * 1024):.1f} MB" if bytes_ >= 1024 * 1024 else f"{bytes_ // 1024} KB"


def checked_image(data: bytes, name: str, max_bytes: int, question: str | None) -> ImageInput:
    """The picture as the core sends it, or `ImageInputError`: PNG or JPEG by signature, at
    most ``max_bytes``, with a pixel size in its header."""
    if len(data) > max_bytes:
        raise ImageInputError(
            f"{name} is larger than {_size(max_bytes)}: send a smaller picture "
            "(or raise image_max_bytes)"
        )
    mime = image_mime_type(data)
    if mime is None:
        raise ImageInputError(f"{name} is not a PNG or JPEG image (the only types the API takes)")
    size = png_size(data) if mime == "image/png" else jpeg_size(data)
    if size is None or min(size) <= 0:
        raise ImageInputError(f"{name} looks like {mime} but its header is damaged")
    return ImageInput(data, mime, name, size[0], size[1], question)


def read_file(target: str, max_bytes: int) -> bytes:
    """At most ``max_bytes + 1`` bytes of a regular file, ``~`` expanded (blocking: run it in
    a thread)."""
    path = Path(target).expanduser()
    try:
        if not path.is_file():  # a directory, a device or a pipe would never do
            if not path.exists():
                raise ImageInputError(f"no file at {path}: check the path")
            raise ImageInputError(f"{path} is not a regular file")
        with path.open("rb") as file:
            return file.read(max_bytes + 1)
    except OSError as exc:
        raise ImageInputError(f"cannot read {path}: {exc.strerror or exc}") from None


async def load_image(
    target: str,
    question: str | None,
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
) -> ImageInput:
    """Read (a path) or fetch (an https URL) the picture and check it; see the module
    docstring. Never blocks the loop."""
    limit = settings.image_max_bytes
    if target.lower().startswith(("https://", "http://")):
        data, name = await _fetch(target, settings, transport, resolver)
    else:
        data = await asyncio.to_thread(read_file, target, limit)
        name = os.path.basename(target.rstrip("/")) or target
    return checked_image(data, name, limit, question)


async def _fetch(
    url: str,
    settings: Settings,
    transport: httpx.AsyncBaseTransport | None,
    resolver: Resolver | None,
) -> tuple[bytes, str]:
    from realtime_voicebot.tools.builtin.http_get import SafeFetcher
    from realtime_voicebot.tools.registry import ToolError

    fetcher = SafeFetcher(
        settings.image_hosts or None,
        timeout_s=settings.tool_timeout_s,
        transport=transport,
        resolver=resolver,
    )
    try:
        fetched = await fetcher.fetch(
            url, accept="image/png, image/jpeg", max_bytes=settings.image_max_bytes + 1
        )
    except ToolError as exc:
        hint = " (or add it to image_hosts)" if "allowlist" in str(exc) else ""
        raise ImageInputError(f"cannot fetch the image: {exc}{hint}") from None
    name = unquote(os.path.basename(urlsplit(fetched.url).path)) or "image"
    if fetched.status != 200:
        raise ImageInputError(f"cannot fetch the image: the server answered HTTP {fetched.status}")
    if not fetched.read:
        raise ImageInputError(f"cannot fetch the image: {fetched.unread}")
    return fetched.body, name[:80]
