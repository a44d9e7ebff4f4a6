"""http_get against a hostile host (issue 13, items 18 and 19): a gzip bomb is never inflated
past the cap, and an IPv6 address that embeds a private IPv4 one is refused."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from realtime_voicebot.tools import ToolError
from realtime_voicebot.tools.builtin.http_get import is_public_address

from .test_tools import PUBLIC, Net

MIB = 1024 * 1024
CAP = 64 * 1024


class Chunks(httpx.AsyncByteStream):
    """A body arriving in pieces, as from a socket (``content=`` would be read at once)."""

    def __init__(self, data: bytes, size: int = 16 * 1024) -> None:
        self.data = data
        self.size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), self.size):
            yield self.data[start : start + self.size]


def response(body: bytes, coding: str, content_type: str = "text/plain") -> httpx.Response:
    headers = {"content-type": content_type, "content-encoding": coding}
    return httpx.Response(200, stream=Chunks(body), headers=headers)


def bomb(inflated: int = 64 * MIB) -> bytes:
    """``inflated`` bytes of the letter a, gzipped: about 1/1000 of that on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"a" * MIB
    body = b"".join(compressor.compress(block) for _ in range(inflated // MIB))
    return body + compressor.flush()


async def test_a_gzip_bomb_is_never_inflated_past_the_cap() -> None:
    body = bomb()
    assert len(body) < 256 * 1024
    net = Net({"example.com": [PUBLIC]})
    net.routes[("example.com", "/bomb")] = lambda r: response(body, "gzip")
    tool = net.tool(["example.com"], max_bytes=CAP)
    tracemalloc.start()
    try:
        out = await tool.function(url="https://example.com/bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out["truncated"] is True
    assert out["body"] == "a" * CAP + f"\n[truncated at {CAP} bytes]"
    assert peak < 4 * MIB, f"peak {peak / MIB:.1f} MiB for a {CAP // 1024} KiB cap"
    (request,) = net.requests
    assert request.headers["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("identity", lambda data: data),
    ],
)
async def test_a_compressed_body_under_the_cap_reads_whole(coding: str, encode: object) -> None:
    text = "héllo wörld " * 100
    net = Net({"example.com": [PUBLIC]})
    body = encode(text.encode())  # type: ignore[operator]
    net.routes[("example.com", "/")] = lambda r: response(body, coding, "text/plain; charset=utf-8")
    out = await net.tool(["example.com"]).function(url="https://example.com/")
    assert out["body"] == text and out["truncated"] is False


async def test_an_encoding_it_cannot_bound_is_not_shown_and_a_broken_one_fails() -> None:
    net = Net({"example.com": [PUBLIC]})
    net.routes[("example.com", "/br")] = lambda r: response(b"\x1b\x00", "br")
    net.routes[("example.com", "/bad")] = lambda r: response(b"not gzip", "gzip")
    tool = net.tool(["example.com"])
    out = await tool.function(url="https://example.com/br")
    assert out["body"] == "[content encoded as br not shown]"
    with pytest.raises(ToolError, match=r"not valid gzip"):
        await tool.function(url="https://example.com/bad")


@pytest.mark.parametrize(
    "address",
    [
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "fec0::1",  # site-local
        "fec0:1:2::3",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b::c0a8:101",  # NAT64 of 192.168.1.1
        "64:ff9b:1::a00:1",  # local-use NAT64
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001:0:a00:1:8000:63bf:80ff:fffe",  # Teredo, server 10.0.0.1, client 127.0.0.1
        "::ffff:169.254.169.254",
    ],
)
async def test_embedded_private_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)
    net = Net({"example.com": [address]})
    with pytest.raises(ToolError, match="private or local"):
        await net.tool(["example.com"]).function(url="https://example.com/")
    assert net.requests == []


@pytest.mark.parametrize(
    "address",
    [
        PUBLIC,
        "2606:4700:4700::1111",
        "2a00:1450:4001:81c::200e",
        "2002:808:808::",  # 6to4 of 8.8.8.8
        "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8 (DNS64 networks)
        "::ffff:8.8.8.8",
    ],
)
def test_public_addresses_and_their_embeddings_pass(address: str) -> None:
    assert is_public_address(address)
