"""The built-in ``http_get`` tool: an https GET on an allowlisted host, size-capped."""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import re
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated, Any
from urllib.parse import urljoin

import httpx

from realtime_voicebot.tools.registry import Tool, ToolError
from realtime_voicebot.tools.schema import JSON

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> IP addresses``; the default asks the system via ``loop.getaddrinfo``."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolves ``host`` to."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
"""The well-known NAT64 prefix (RFC 6052): the last 32 bits are an IPv4 address."""
NAT64_LOCAL_PREFIX = ipaddress.IPv6Network("64:ff9b:1::/48")
"""The local-use NAT64 prefix (RFC 8215): where the IPv4 address sits is the network's own."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries and reaches: IPv4-mapped, 6to4, Teredo (server
    and client), NAT64 (64:ff9b::/96)."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in NAT64_PREFIX:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


def is_public_address(address: str) -> bool:
    """False for private, loopback, link-local, site-local, multicast, reserved and unspecified
    addresses, and for IPv6 addresses that embed one of those (IPv4-mapped, 6to4, Teredo,
    NAT64). Raises ValueError for something that is not an address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _is_public(ip)
    if ip in NAT64_LOCAL_PREFIX:
        return False
    embedded = embedded_ipv4(ip)
    if ip.ipv4_mapped is not None or ip in NAT64_PREFIX:
        # Only a way of writing the IPv4 address (the prefix itself is reserved): judge that.
        return all(_is_public(v4) for v4 in embedded)
    return _is_public(ip) and all(_is_public(v4) for v4 in embedded)


_TEXT_TYPES = re.compile(r"^(text/|application/([\w.-]+\+)?(json|xml)\b|application/javascript)")


def http_get_tool(
    allowlist: Sequence[str],
    *,
    max_bytes: int = 65536,
    timeout_s: float = 10.0,
    max_redirects: int = 5,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
) -> Tool:
    """``http_get(url)``: GET an https URL on an allowlisted host, body capped at max_bytes.

    Every hop (redirects are followed here, not by httpx) must be https, on the default port,
    on an allowlisted host, and resolve only to public addresses. The request goes to the
    address that was checked (Host header and TLS SNI keep the name), so a DNS answer that
    changes between check and connect cannot reach another address. Environment proxies are
    ignored.
    """
    hosts = frozenset(h.lower().rstrip(".") for h in allowlist)
    resolve = resolver or system_resolver
    shown = ", ".join(sorted(hosts)) or "none configured"

    def check_url(url: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise ToolError(f"invalid URL {url!r}") from None
        if parsed.scheme != "https":
            raise ToolError("only https URLs are allowed")
        if parsed.userinfo:
            raise ToolError("URLs with credentials are not allowed")
        if parsed.port not in (None, 443):
            raise ToolError("only the default https port is allowed")
        host = parsed.raw_host.decode("ascii").lower().rstrip(".")
        if host not in hosts:
            raise ToolError(f"host {host} is not on the allowlist ({shown})")
        return parsed

    async def pinned_address(host: str) -> str:
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = await resolve(host, 443)
            except OSError:
                raise ToolError(f"cannot resolve {host}") from None
        if not addresses:
            raise ToolError(f"cannot resolve {host}")
        try:
            private = [a for a in addresses if not is_public_address(a)]
        except ValueError:
            raise ToolError(f"{host} resolves to an invalid address") from None
        if private:
            raise ToolError(f"{host} resolves to a private or local address")
        return addresses[0].split("%", 1)[0]

    async def read_capped(response: httpx.Response, host: str) -> tuple[str, bool]:
        # The raw bytes, inflated here and never past the cap: httpx would inflate each
        # chunk whole first (a 64 KiB gzip body can hold gigabytes).
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        if response.is_stream_consumed:  # a ready-made response (tests): httpx decoded it
            coding, chunks = "identity", _once(response.content)
        else:
            chunks = response.aiter_raw()
        inflater = _inflater(coding)
        if inflater is None and coding not in ("", "identity"):
            return f"[content encoded as {coding[:40]} not shown]", False
        data = bytearray()
        truncated = False
        async for raw in chunks:
            room = max_bytes - len(data)
            if inflater is None:
                chunk = raw
            else:
                try:
                    chunk = inflater.decompress(raw, room + 1)
                except zlib.error:
                    raise ToolError(f"the body from {host} is not valid {coding}") from None
            if len(chunk) > room:
                data += chunk[:room]
                truncated = True
                break
            data += chunk
        try:
            decoder = codecs.getincrementaldecoder(response.encoding or "utf-8")(errors="replace")
        except LookupError:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = decoder.decode(bytes(data), final=not truncated)
        if truncated:
            text += f"\n[truncated at {max_bytes} bytes]"
        return text, truncated

    async def http_get(url: Annotated[str, "An https URL"]) -> JSON:
        async with httpx.AsyncClient(
            transport=transport,
            timeout=timeout_s,
            follow_redirects=False,
            trust_env=False,
        ) as client:
            current = url.strip()
            for _ in range(max_redirects + 1):
                parsed = check_url(current).copy_with(fragment=None)
                host = parsed.raw_host.decode("ascii")
                address = await pinned_address(host)
                request = client.build_request(
                    "GET",
                    parsed.copy_with(host=address),
                    headers={
                        "Host": host,
                        "Accept": "text/*, application/json, */*;q=0.5",
                        "Accept-Encoding": "identity",
                        "User-Agent": "realtime-voicebot",
                    },
                    extensions={"sni_hostname": host},
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise ToolError(f"request to {host} failed: {type(exc).__name__}") from None
                try:
                    location = response.headers.get("location")
                    if response.is_redirect and location:
                        current = urljoin(str(parsed), location)
                        continue
                    content_type = response.headers.get("content-type", "")
                    if content_type and not _TEXT_TYPES.match(content_type.lower()):
                        body, truncated = f"[{content_type} content not shown]", False
                    else:
                        try:
                            body, truncated = await read_capped(response, host)
                        except httpx.HTTPError as exc:
                            raise ToolError(
                                f"reading from {host} failed: {type(exc).__name__}"
                            ) from None
                    return {
                        "url": str(parsed),
                        "status": response.status_code,
                        "content_type": content_type,
                        "body": body,
                        "truncated": truncated,
                    }
                finally:
                    await response.aclose()
            raise ToolError(f"too many redirects (more than {max_redirects})")

    return Tool.from_function(
        http_get,
        description=(
            "Fetch a web page or API response with an HTTPS GET and return its status and text "
            f"(at most {max_bytes} bytes). Allowed hosts: {shown}."
        ),
    )


def _inflater(coding: str) -> Any:
    """A zlib decompressor for a gzip or deflate body; None for anything else."""
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    return None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
