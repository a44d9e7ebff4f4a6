"""Where to connect and how to authenticate, per provider and dialect (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit, urlunsplit

from realtime_voicebot.config import Settings
from realtime_voicebot.errors import UserError

OPENAI_WS_BASE = "wss://api.openai.com/v1"


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


def build_endpoint(settings: Settings) -> Endpoint:
    """The URL and headers for the configured provider and dialect."""
    key = settings.api_key()
    if settings.provider == "azure":
        base = settings.url or settings.azure_openai_endpoint
        if not base:
            raise EndpointError(
                "Azure needs an endpoint: set AZURE_OPENAI_ENDPOINT "
                "(https://RESOURCE.openai.azure.com)"
            )
        if key is None:
            raise EndpointError("No Azure key: set AZURE_OPENAI_API_KEY, or try --fake-server")
        deployment = settings.azure_deployment or settings.model
        root = _to_ws(base)
        for suffix in ("/openai/v1", "/openai"):
            root = root.removesuffix(suffix)
        if settings.azure_api_version:
            query = urlencode({"api-version": settings.azure_api_version, "deployment": deployment})
            url = f"{root}/openai/realtime?{query}"
        else:
            url = f"{root}/openai/v1/realtime?{urlencode({'model': deployment})}"
        headers = {"api-key": key.get_secret_value()}
    else:
        if key is None:
            raise EndpointError(
                "No API key: set OPENAI_API_KEY (export OPENAI_API_KEY=sk-...), "
                "or try `voicebot run --fake-server`"
            )
        base = settings.url or (
            _to_ws(settings.openai_base_url) if settings.openai_base_url else OPENAI_WS_BASE
        )
        url = f"{_to_ws(base)}/realtime?{urlencode({'model': settings.model})}"
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"}
    if settings.dialect == "beta":
        headers["OpenAI-Beta"] = "realtime=v1"
    return Endpoint(url, headers)
