"""Image input as the fake service reads it (GA ``input_image`` parts): a base64 data URL of a
PNG or JPEG, its pixel size, and the tokens it costs. Pure.

Tokens follow the published rule for GPT-4o-class vision input (the Realtime API bills
``image_tokens`` but documents no rule of its own):

- ``detail: "low"``: 85 tokens, whatever the size;
- ``"high"`` and ``"auto"`` (auto means high): the image is scaled to fit in 2048 x 2048, then
  so that its shorter side is at most 768 pixels (never enlarged); it costs 85 tokens plus 170
  per 512 x 512 tile that covers it. A 1024 x 1024 screenshot: 768 x 768, 4 tiles, 765 tokens.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass

from realtime_voicebot.errors import VoicebotError
from realtime_voicebot.images import jpeg_size as _jpeg_size
from realtime_voicebot.images import png_size as _png_size
from realtime_voicebot.transport.events import IMAGE_SIGNATURES

BASE_TOKENS = 85
TILE_TOKENS = 170
TILE_PIXELS = 512
FIT_PIXELS = 2048
SHORT_SIDE_PIXELS = 768
DETAILS = ("auto", "low", "high")


class ImageError(VoicebotError, ValueError):
    """Image data the service would refuse; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    mime_type: str
    width: int
    height: int
    size_bytes: int


def parse_data_url(url: str) -> ImageInfo:
    """The type and pixel size of a ``data:image/png;base64,...`` (or jpeg) URL."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise ImageError("expected a base64 data URL (data:image/png;base64,...)")
    mime = head[len("data:") : -len(";base64")].lower()
    if mime not in IMAGE_SIGNATURES:
        raise ImageError(f"unsupported image type '{mime}'; supported: image/png, image/jpeg")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("the image data is not valid base64") from None
    if not data.startswith(IMAGE_SIGNATURES[mime]):
        raise ImageError(f"the image data is not {mime}")
    size = _png_size(data) if mime == "image/png" else _jpeg_size(data)
    if size is None or min(size) <= 0:
        raise ImageError(f"the {mime} image could not be decoded")
    return ImageInfo(mime, size[0], size[1], len(data))


def image_tokens(width: int, height: int, detail: str | None) -> int:
    """Input tokens of one image (see the module docstring)."""
    if detail == "low":
        return BASE_TOKENS
    scale = min(1.0, FIT_PIXELS / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, SHORT_SIDE_PIXELS / min(w, h))
    w, h = w * scale, h * scale
    tiles = math.ceil(w / TILE_PIXELS) * math.ceil(h / TILE_PIXELS)
    return BASE_TOKENS + TILE_TOKENS * tiles
