"""``/image``: the typed line, the checks on a file or an https URL (both sides of each), and
the picture end to end through the real app against the fake (GA), the item validated
against the SDK's client union; beta and bad pictures are one line and nothing is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from realtime_voicebot.config import load_settings
from realtime_voicebot.image_input import (
    USAGE,
    ImageInputError,
    checked_image,
    load_image,
    parse_image_command,
)
from realtime_voicebot.testing import (
    FakeRealtimeServer,
    FakeServerConfig,
    Scenario,
    start_bot,
    test_settings,
)

from .images import jpeg_bytes, png_bytes
from .spec import validate_client
from .test_tools import PUBLIC, Net


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("/image shot.png", ("shot.png", None)),
        ("/image  shot.png   what is in it?", ("shot.png", "what is in it?")),
        ('/image "my shots/a b.png" and this?', ("my shots/a b.png", "and this?")),
        ("/image 'x.jpg'", ("x.jpg", None)),
        ("/image https://img.example/a.png", ("https://img.example/a.png", None)),
        ("/images are nice", None),
        ("what is /image", None),
        ("hello", None),
    ],
)
def test_the_image_command(line: str, parsed: tuple[str, str | None] | None) -> None:
    assert parse_image_command(line) == parsed


@pytest.mark.parametrize("line", ["/image", "/image   ", '/image "unclosed.png'])
def test_an_image_command_without_a_target_says_how(line: str) -> None:
    with pytest.raises(ImageInputError, match="usage: /image"):
        parse_image_command(line)


def test_checks_on_the_bytes() -> None:
    png = checked_image(png_bytes(1024, 768), "a.png", 1 << 20, None)
    assert (png.mime_type, png.width, png.height, png.label) == (
        "image/png",
        1024,
        768,
        "[image: a.png 1024x768]",
    )
    jpeg = checked_image(jpeg_bytes(640, 480), "b.jpg", 1 << 20, "and this?")
    assert (jpeg.mime_type, jpeg.width, jpeg.height, jpeg.question) == (
        "image/jpeg",
        640,
        480,
        "and this?",
    )
    big = png_bytes(300, 300)
    assert checked_image(big, "big.png", len(big), None).width == 300  # at the limit: fine
    with pytest.raises(ImageInputError, match=r"big.png is larger than 1 KB: send a smaller"):
        checked_image(big + b"\0" * 2048, "big.png", 1024, None)
    with pytest.raises(ImageInputError, match="not a PNG or JPEG image"):
        checked_image(b"GIF89a" + b"\0" * 40, "anim.gif", 1 << 20, None)
    with pytest.raises(ImageInputError, match="header is damaged"):
        checked_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "broken.png", 1 << 20, None)


async def test_reading_files(tmp_path: Path) -> None:
    settings = load_settings({"image_max_bytes": "2048"})
    good = tmp_path / "shot.png"
    good.write_bytes(png_bytes(20, 10))
    image = await load_image(str(good), "what?", settings)
    assert (image.name, image.width, image.question) == ("shot.png", 20, "what?")
    with pytest.raises(ImageInputError, match=f"no file at {tmp_path / 'nope.png'}: check"):
        await load_image(str(tmp_path / "nope.png"), None, settings)
    with pytest.raises(ImageInputError, match="is not a regular file"):
        await load_image(str(tmp_path), None, settings)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ImageInputError, match=r"notes\.txt is not a PNG or JPEG"):
        await load_image(str(text), None, settings)
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_bytes(20, 10) + b"\0" * 4096)
    with pytest.raises(ImageInputError, match=r"huge\.png is larger than 2 KB"):
        await load_image(str(huge), None, settings)


def image_net() -> Net:
    net = Net({"img.example": [PUBLIC], "intranet.example": ["10.0.0.7"]})
    picture = png_bytes(32, 16)
    net.routes[("img.example", "/cat.png")] = lambda r: httpx.Response(
        200, content=picture, headers={"content-type": "image/png"}
    )
    net.routes[("img.example", "/big.png")] = lambda r: httpx.Response(
        200, content=picture + b"\0" * 5000
    )
    net.routes[("img.example", "/page")] = lambda r: httpx.Response(200, text="<html>")
    net.routes[("img.example", "/moved")] = lambda r: httpx.Response(
        302, headers={"location": "https://intranet.example/cat.png"}
    )
    return net


async def fetch(url: str, **settings: Any) -> Any:
    net = image_net()
    values = {"image_max_bytes": "4096", **settings}
    image = await load_image(
        url, None, load_settings(values), transport=net.transport, resolver=net.resolve
    )
    return image, net


async def test_fetching_an_https_image_from_a_public_host() -> None:
    image, net = await fetch("https://img.example/cat.png")
    assert (image.name, image.width, image.height) == ("cat.png", 32, 16)
    (request,) = net.requests
    assert request.url.host == PUBLIC and request.headers["host"] == "img.example"
    assert request.headers["accept"] == "image/png, image/jpeg"
    allowed, _ = await fetch("https://img.example/cat.png", image_hosts="img.example")
    assert allowed.width == 32


@pytest.mark.parametrize(
    ("url", "settings", "message"),
    [
        ("http://img.example/cat.png", {}, "only https URLs are allowed"),
        ("https://intranet.example/cat.png", {}, "resolves to a private or local address"),
        ("https://127.0.0.1/cat.png", {}, "resolves to a private or local address"),
        ("https://img.example/moved", {}, "resolves to a private or local address"),
        ("https://img.example:8443/cat.png", {}, "only the default https port"),
        ("https://img.example/big.png", {}, "big.png is larger than 4 KB"),
        ("https://img.example/page", {}, "page is not a PNG or JPEG image"),
        ("https://img.example/gone.png", {}, "the server answered HTTP 404"),
        (
            "https://img.example/cat.png",
            {"image_hosts": "photos.example"},
            "img.example is not on the allowlist (photos.example) (or add it to image_hosts)",
        ),
    ],
)
async def test_fetches_that_are_refused(url: str, settings: dict[str, str], message: str) -> None:
    with pytest.raises(ImageInputError) as caught:
        await fetch(url, **settings)
    assert message in str(caught.value)


async def test_an_image_end_to_end_through_the_app(tmp_path: Path) -> None:
    shot = tmp_path / "screen shot.png"
    shot.write_bytes(png_bytes(64, 48))
    config = FakeServerConfig(scenario=Scenario(replies=["A black rectangle."]), speed=0)
    async with FakeRealtimeServer(config) as server:
        running = start_bot(server, test_settings(server, tmp_path), text_lines=True)
        view = running.view
        await running.until(lambda: running.bot.core.session_number == 1)
        await running.type(f'/image "{shot}" what is in this screenshot?')
        await running.until(lambda: view.assistant)
        await running.type("/image")
        await running.type(f"/image {tmp_path / 'missing.png'}")
        await running.until(lambda: len(view.errors) == 2)
        session = await running.session()
        assert await running.stop() == 0
    assert view.user[0] == "[image: screen shot.png 64x48] what is in this screenshot?"
    assert view.assistant[0][1] == "A black rectangle."
    assert view.errors == [USAGE, f"no file at {tmp_path / 'missing.png'}: check the path"]
    creates = [e for e in session.received if e["type"] == "conversation.item.create"]
    (image_event,) = creates
    validate_client(image_event, "ga")
    parts = image_event["item"]["content"]
    assert parts[0] == {"type": "input_text", "text": "what is in this screenshot?"}
    assert parts[1]["type"] == "input_image"
    types = [e["type"] for e in session.received]
    assert types[types.index("conversation.item.create") + 1] == "response.create"
    transcript = [json.loads(line) for line in (tmp_path / "transcript.jsonl").open()]
    users = [r["text"] for r in transcript if r.get("role") == "user"]
    assert users == ["[image: screen shot.png 64x48] what is in this screenshot?"]


async def test_an_image_in_beta_is_one_line_and_nothing_is_read(tmp_path: Path) -> None:
    config = FakeServerConfig(speed=0)
    async with FakeRealtimeServer(config) as server:
        settings = test_settings(server, tmp_path, dialect="beta")
        running = start_bot(server, settings, text_lines=True)
        await running.until(lambda: running.bot.core.session_number == 1)
        await running.type(f"/image {tmp_path / 'not even there.png'}")
        await running.until(lambda: running.view.errors)
        session = await running.session()
        assert await running.stop() == 0
    assert running.view.errors == [
        "images need the GA dialect (beta sessions take no image input); use --dialect ga"
    ]
    assert not [e for e in session.received if e["type"] == "conversation.item.create"]
