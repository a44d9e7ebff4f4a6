"""The built-in ``http_get`` tool: an https GET on an allowlisted host, size-capped.

`SafeFetcher` holds the checks (https only, the default port, no credentials, allowed hosts,
public addresses only, every redirect hop checked, the request pinned to the checked address,
the body capped); ``/image URL`` uses it too.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import re
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Fetched:
    """The answer to a `SafeFetcher.fetch`: the body at most ``max_bytes`` long."""

    url: str
    status: int
    content_type: str
    body: bytes
    truncated: bool
    encoding: str | None
    read: bool = True
    """False when the body was not read (``body`` is empty then): see ``unread``."""
    unread: str = ""
    """Why the body was not read (``content encoded as br not shown``); empty otherwise."""


class SafeFetcher:
    """GETs https URLs on ``hosts`` (None: any host), from public addresses only.

    Every hop (redirects are followed here, not by httpx) must be https, on the default port,
    without credentials, on an allowed host, and resolve only to public addresses. The request
    goes to the address that was checked (Host header and TLS SNI keep the name), so a DNS
    answer that changes between check and connect cannot reach another address. Environment
    proxies are ignored. Every failure is a `ToolError` with a one-line message.
    """

    def __init__(
        self,
        hosts: Iterable[str] | None,
        *,
        timeout_s: float = 10.0,
        max_redirects: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.hosts = None if hosts is None else frozenset(h.lower().rstrip(".") for h in hosts)
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self.transport = transport
        self.resolve = resolver or system_resolver
        self.shown_hosts = ", ".join(sorted(self.hosts or ())) or "none configured"

    def check_url(self, url: str) -> httpx.URL:
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
        if self.hosts is not None and host not in self.hosts:
            raise ToolError(f"host {host} is not on the allowlist ({self.shown_hosts})")
        return parsed

    async def pinned_address(self, host: str) -> str:
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = await self.resolve(host, 443)
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

    async def fetch(
        self,
        url: str,
        *,
        accept: str,
        max_bytes: int,
        read_if: Callable[[str], bool] = lambda content_type: True,
    ) -> Fetched:
        """GET ``url``: at most ``max_bytes`` of its body (``truncated`` when there was more),
        or no body when ``read_if(content_type)`` is false."""
        async with httpx.AsyncClient(
            transport=self.transport,
            timeout=self.timeout_s,
            follow_redirects=False,
            trust_env=False,
        ) as client:
            current = url.strip()
            for _ in range(self.max_redirects + 1):
                parsed = self.check_url(current).copy_with(fragment=None)
                host = parsed.raw_host.decode("ascii")
                address = await self.pinned_address(host)
                request = client.build_request(
                    "GET",
                    parsed.copy_with(host=address),
                    headers={
                        "Host": host,
                        "Accept": accept,
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
                    fetched = Fetched(
                        str(parsed),
                        response.status_code,
                        content_type,
                        b"",
                        False,
                        response.encoding,
                        read=read_if(content_type),
                    )
                    if not fetched.read:
                        return _unread(fetched, f"{content_type} content not shown")
                    coding = response.headers.get("content-encoding", "identity").strip().lower()
                    if response.is_stream_consumed:  # a ready-made response: httpx decoded it
                        coding = "identity"
                    inflater = _inflater(coding)
                    if inflater is None and coding not in ("", "identity"):
                        return _unread(fetched, f"content encoded as {coding[:40]} not shown")
                    try:
                        body, truncated = await _read_capped(response, max_bytes, inflater, host)
                    except httpx.HTTPError as exc:
                        failure = type(exc).__name__
                        raise ToolError(f"reading from {host} failed: {failure}") from None
                    return Fetched(
                        fetched.url,
                        fetched.status,
                        content_type,
                        body,
                        truncated,
                        fetched.encoding,
                    )
                finally:
                    await response.aclose()
            raise ToolError(f"too many redirects (more than {self.max_redirects})")


def _unread(fetched: Fetched, why: str) -> Fetched:
    return Fetched(
        fetched.url, fetched.status, fetched.content_type, b"", False, fetched.encoding, False, why
    )


async def _read_capped(
    response: httpx.Response, max_bytes: int, inflater: Any, host: str
) -> tuple[bytes, bool]:
    """At most ``max_bytes`` of the body, inflated here and never past the cap (httpx would
    inflate each chunk whole first, and a 64 KiB gzip body can hold gigabytes)."""
    chunks = _once(response.content) if response.is_stream_consumed else response.aiter_raw()
    data = bytearray()
    async for raw in chunks:
        room = max_bytes - len(data)
        if inflater is None:
            chunk = raw
        else:
            try:
                chunk = inflater.decompress(raw, room + 1)
            except zlib.error:
                coding = response.headers.get("content-encoding", "").strip().lower()
                raise ToolError(f"the body from {host} is not valid {coding[:40]}") from None
        if len(chunk) > room:
            data += chunk[:room]
            return bytes(data), True
        data += chunk
    return bytes(data), False


def _decode(body: bytes, encoding: str | None, truncated: bool, max_bytes: int) -> str:
    try:
        decoder = codecs.getincrementaldecoder(encoding or "utf-8")(errors="replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(body, final=not truncated)
    if truncated:
        text += f"\n[truncated at {max_bytes} bytes]"
    return text


def http_get_tool(
    allowlist: Sequence[str],
    *,
    max_bytes: int = 65536,
    timeout_s: float = 10.0,
    max_redirects: int = 5,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
) -> Tool:
    """``http_get(url)``: GET an https URL on an allowlisted host, body capped at max_bytes
    (the checks of `SafeFetcher`)."""
    fetcher = SafeFetcher(
        allowlist,
        timeout_s=timeout_s,
        max_redirects=max_redirects,
        transport=transport,
        resolver=resolver,
    )

    def is_text(content_type: str) -> bool:
        return not content_type or bool(_TEXT_TYPES.match(content_type.lower()))

    async def http_get(url: Annotated[str, "An https URL"]) -> JSON:
        fetched = await fetcher.fetch(
            url,
            accept="text/*, application/json, */*;q=0.5",
            max_bytes=max_bytes,
            read_if=is_text,
        )
        if fetched.read:
            body = _decode(fetched.body, fetched.encoding, fetched.truncated, max_bytes)
        else:
            body = f"[{fetched.unread}]"
        return {
            "url": fetched.url,
            "status": fetched.status,
            "content_type": fetched.content_type,
            "body": body,
            "truncated": fetched.truncated,
        }

    return Tool.from_function(
        http_get,
        description=(
            "Fetch a web page or API response with an HTTPS GET and return its status and text "
            f"(at most {max_bytes} bytes). Allowed hosts: {fetcher.shown_hosts}."
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
