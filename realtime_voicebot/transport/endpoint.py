"""Where to connect and how to authenticate, per provider and dialect (pure, no I/O).

`realtime_url` is where the conversation's WebSocket goes; `summarizer_base_url` is where
the OpenAI summarizer sends older turns. The second follows the first: with ``--url
ws://127.0.0.1:8765/v1`` the summarizer goes to ``http://127.0.0.1:8765/v1``, never to the
public API with the real key, unless `summary_base_url` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit, urlunsplit

from realtime_voicebot.config import Settings
from realtime_voicebot.errors import UserError

OPENAI_WS_BASE = "wss://api.openai.com/v1"
OPENAI_REST_BASE = "https://api.openai.com/v1"


class EndpointError(UserError):
    """The settings do not say where or how to connect; the message says what to set."""


@dataclass(frozen=True)
class Endpoint:
    """A WebSocket URL and its handshake headers. The key lives in a header, never the URL."""

    url: str
    headers: dict[str, str] = field(repr=False)

    def __repr__(self) -> str:
        return f"Endpoint(url={self.url!r}, headers=[{', '.join(sorted(self.headers))}])"


def _to_ws(url: str) -> str:
    parts = urlsplit(url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise EndpointError(f"Unsupported URL scheme in {url!r}: use https://, wss:// or ws://")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _to_http(url: str) -> str:
    parts = urlsplit(url.strip().rstrip("/"))
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _azure_root(base: str) -> str:
    root = base.rstrip("/")
    for suffix in ("/openai/v1", "/openai"):
        root = root.removesuffix(suffix)
    return root


def _azure_base(settings: Settings) -> str:
    base = settings.url or settings.azure_openai_endpoint
    if not base:
        raise EndpointError(
            "Azure needs an endpoint: set AZURE_OPENAI_ENDPOINT (https://RESOURCE.openai.azure.com)"
        )
    return base


def realtime_url(settings: Settings) -> str:
    """The WebSocket URL of the realtime session (no key needed to know it)."""
    if settings.provider == "azure":
        root = _azure_root(_to_ws(_azure_base(settings)))
        deployment = settings.azure_deployment or settings.model
        if settings.azure_api_version:
            query = urlencode({"api-version": settings.azure_api_version, "deployment": deployment})
            return f"{root}/openai/realtime?{query}"
        return f"{root}/openai/v1/realtime?{urlencode({'model': deployment})}"
    base = settings.url or (
        _to_ws(settings.openai_base_url) if settings.openai_base_url else OPENAI_WS_BASE
    )
    return f"{_to_ws(base)}/realtime?{urlencode({'model': settings.model})}"


def summarizer_base_url(settings: Settings) -> str:
    """Where the OpenAI summarizer sends the conversation's older turns.

    OpenAI: the SDK's ``base_url``. Azure: the resource endpoint (the client adds the v1
    path or the api-version). `summary_base_url` when set; else it follows the realtime
    endpoint: ``url`` (as http/https), then ``OPENAI_BASE_URL`` or the Azure endpoint, then
    the public API.
    """
    if settings.summary_base_url:
        explicit = _to_http(settings.summary_base_url)
        return _azure_root(explicit) if settings.provider == "azure" else explicit
    if settings.provider == "azure":
        return _azure_root(_to_http(_azure_base(settings)))
    if settings.url:
        return _to_http(settings.url)
    return _to_http(settings.openai_base_url) if settings.openai_base_url else OPENAI_REST_BASE


def summarizer_destination(settings: Settings) -> str:
    """Where summaries are made, in words (for `voicebot config show` and the start-up log)."""
    kind = settings.summarizer
    if kind == "realtime":
        return "the realtime session itself (out of band; extractive fallback on this machine)"
    if kind == "extractive" or (kind == "auto" and settings.api_key() is None):
        return "this machine (extractive summarizer, nothing is sent)"
    try:
        base = summarizer_base_url(settings)
    except EndpointError as exc:
        return f"nowhere yet: {exc}"
    if settings.provider == "azure":
        path = (
            f"/openai (api-version {settings.azure_api_version})"
            if settings.azure_api_version
            else "/openai/v1"
        )
        base += path
    fallback = ", extractive fallback on this machine" if kind == "auto" else ""
    return f"{base} (model {settings.summary_model}{fallback})"


def build_endpoint(settings: Settings) -> Endpoint:
    """The URL and headers for the configured provider and dialect."""
    key = settings.api_key()
    url = realtime_url(settings)
    if settings.provider == "azure":
        if key is None:
            raise EndpointError("No Azure key: set AZURE_OPENAI_API_KEY, or try --fake-server")
        headers = {"api-key": key.get_secret_value()}
    else:
        if key is None:
            raise EndpointError(
                "No API key: set OPENAI_API_KEY (export OPENAI_API_KEY=sk-...), "
                "or try `voicebot run --fake-server`"
            )
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"}
    if settings.dialect == "beta":
        headers["OpenAI-Beta"] = "realtime=v1"
    return Endpoint(url, headers)
