"""The fake Realtime server's WebSocket shell: handshake, one `FakeSession` per connection,
inspection and fault injection for tests.

Handshake rules, as the services answer them:
- paths ``/v1/realtime?model=M`` (OpenAI), ``/openai/v1/realtime?model=DEPLOYMENT`` (Azure v1)
  and ``/openai/realtime?api-version=V&deployment=DEPLOYMENT`` (Azure legacy); others get 404,
  a missing model/deployment/api-version 400;
- a key in ``Authorization: Bearer KEY`` or ``api-key: KEY``, else 401 (also 401 for a key
  outside `FakeServerConfig.api_keys` when that is set);
- dialect beta when the client sends ``OpenAI-Beta: realtime=v1``, GA otherwise, unless the
  config forces one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, urlsplit

import structlog
from pydantic import SecretStr
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from realtime_voicebot.fake.config import FakeServerConfig, Faults
from realtime_voicebot.fake.conversation import IdFactory
from realtime_voicebot.fake.errors import SessionEnded
from realtime_voicebot.fake.scenario import ScenarioCursor
from realtime_voicebot.fake.session import FakeSession, Handshake
from realtime_voicebot.transport.events import Dialect, ErrorCode

if TYPE_CHECKING:
    from realtime_voicebot.config import Settings

__all__ = ["FakeRealtimeServer", "FakeServerConfig", "FakeSession", "Faults", "RejectedHandshake"]

log = structlog.get_logger(component="fake_server")

MAX_FRAME_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class RejectedHandshake:
    status: int
    path: str
    reason: str


class _WebSocketTransport:
    def __init__(self, connection: ServerConnection) -> None:
        self._connection = connection

    async def send(self, frame: str | bytes) -> None:
        try:
            await self._connection.send(frame)
        except ConnectionClosed as exc:
            raise SessionEnded from exc

    async def close(self, code: int, reason: str) -> None:
        await self._connection.close(code, reason)

    def drop(self) -> None:
        # Close TCP under the WebSocket protocol: no close frame, so the client sees 1006.
        self._connection.transport.close()


def _who_closed(connection: ServerConnection) -> str:
    """Who started the close handshake: "client", "server", or "network" (none took place)."""
    rcvd_first = connection.protocol.close_rcvd_then_sent
    if rcvd_first is None:
        return "network"
    return "client" if rcvd_first else "server"


def _mask(key: str) -> str:
    return f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"


class FakeRealtimeServer:
    """A Realtime service on loopback. Each connection is a new, empty session."""

    def __init__(self, config: FakeServerConfig | None = None) -> None:
        self.config = config or FakeServerConfig()
        self.faults: Faults = self.config.faults
        self.sessions: list[FakeSession] = []
        """Every session, in connection order, closed ones included."""
        self.rejected: list[RejectedHandshake] = []
        self._ids = IdFactory()
        self._cursor = ScenarioCursor(self.config.scenario)
        self._changed = asyncio.Condition()
        self._handshakes: dict[ServerConnection, Handshake] = {}
        self._server: Server | None = None
        self._port: int | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await serve(
            self._serve_connection,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            max_size=MAX_FRAME_BYTES,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("fake_server_started", url=self.url)

    async def stop(self) -> None:
        """Close every connection (1001, going away) and stop listening."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FakeRealtimeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake server is not started")
        return self._port

    @property
    def url(self) -> str:
        """The base URL a client appends ``/realtime?model=...`` to."""
        return f"ws://{self.config.host}:{self.port}/v1"

    # --- inspection ---------------------------------------------------------------------------

    @property
    def current_session(self) -> FakeSession | None:
        """The newest session whose connection is still open."""
        for session in reversed(self.sessions):
            if not session.closed:
                return session
        return None

    @property
    def last_session(self) -> FakeSession | None:
        """The newest session, open or closed."""
        return self.sessions[-1] if self.sessions else None

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float | None = 5.0) -> None:
        """Wait until ``predicate()`` holds; it is re-checked on every event in or out.

        Raises TimeoutError after ``timeout_s`` seconds (None: no limit).
        """
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_for_session(self, number: int = 1, timeout_s: float = 5.0) -> FakeSession:
        """The ``number``-th session (1-based), once its ``session.created`` has been sent."""
        await self.wait_for(
            lambda: len(self.sessions) >= number and bool(self.sessions[number - 1].sent),
            timeout_s,
        )
        return self.sessions[number - 1]

    # --- faults now ---------------------------------------------------------------------------

    def _target(self, session: FakeSession | None) -> FakeSession:
        target = session or self.current_session
        if target is None:
            raise RuntimeError("no open session")
        return target

    async def drop_connection(self, session: FakeSession | None = None) -> None:
        """End the (current) connection without a close frame; the client sees 1006."""
        self._target(session).drop()

    async def inject_error(
        self,
        code: str = ErrorCode.SERVER_ERROR,
        message: str = "",
        session: FakeSession | None = None,
    ) -> None:
        await self._target(session).inject_error(code, message)

    async def send_malformed_frame(self, session: FakeSession | None = None) -> None:
        await self._target(session).send_malformed_frame()

    async def send_unknown_event(
        self, event_type: str = "response.fake_unknown_event", session: FakeSession | None = None
    ) -> None:
        await self._target(session).send_unknown_event(event_type)

    async def expire_session(self, session: FakeSession | None = None) -> None:
        """Hit the session time limit now: ``session_expired``, then close 1001."""
        await self._target(session).expire()

    # --- handshake ----------------------------------------------------------------------------

    def _reject(
        self,
        connection: ServerConnection,
        request: Request,
        status: HTTPStatus,
        message: str,
        code: str | None = None,
    ) -> Response:
        self.rejected.append(RejectedHandshake(int(status), request.path, message))
        body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
        response = connection.respond(status, json.dumps(body) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        log.info("handshake_rejected", status=int(status), path=urlsplit(request.path).path)
        return response

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path.rstrip("/")
        endpoint: Literal["openai", "azure", "azure-legacy"]
        if path == "/v1/realtime":
            endpoint, model = "openai", query.get("model")
        elif path == "/openai/v1/realtime":
            endpoint, model = "azure", query.get("model")
        elif path == "/openai/realtime":
            endpoint, model = "azure-legacy", query.get("deployment")
            if not query.get("api-version"):
                return self._reject(
                    connection, request, HTTPStatus.BAD_REQUEST, "Missing api-version."
                )
        else:
            return self._reject(
                connection, request, HTTPStatus.NOT_FOUND, f"Invalid URL ({parts.path})."
            )
        key = None
        authorization = request.headers.get("Authorization", "")
        if authorization.lower().startswith("bearer "):
            key = authorization[7:].strip() or None
        key = key or (request.headers.get("api-key", "").strip() or None)
        if key is None:
            return self._reject(
                connection,
                request,
                HTTPStatus.UNAUTHORIZED,
                "You didn't provide an API key: use an 'Authorization: Bearer KEY' or an "
                "'api-key: KEY' header.",
            )
        if self.config.api_keys is not None and key not in self.config.api_keys:
            return self._reject(
                connection,
                request,
                HTTPStatus.UNAUTHORIZED,
                f"Incorrect API key provided: {_mask(key)}.",
                ErrorCode.INVALID_API_KEY,
            )
        if not model:
            name = "deployment" if endpoint == "azure-legacy" else "model"
            return self._reject(
                connection,
                request,
                HTTPStatus.BAD_REQUEST,
                f"Missing required parameter: '{name}'.",
            )
        beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "").replace(" ", "")
        dialect: Dialect = self.config.dialect or ("beta" if beta else "ga")
        self._handshakes[connection] = Handshake(
            path=request.path,
            model=model,
            dialect=dialect,
            endpoint=endpoint,
            api_version=query.get("api-version"),
        )
        return None

    # --- connections --------------------------------------------------------------------------

    async def _serve_connection(self, connection: ServerConnection) -> None:
        handshake = self._handshakes.pop(connection)
        cursor = (
            ScenarioCursor(self.config.scenario)
            if self.config.scenario_per_session
            else self._cursor
        )
        session = FakeSession(
            handshake=handshake,
            config=self.config,
            faults=self.faults,
            ids=self._ids,
            cursor=cursor,
            changed=self._changed,
            transport=_WebSocketTransport(connection),
        )
        self.sessions.append(session)
        log.info("session_opened", session_id=session.id, dialect=session.dialect)
        try:
            await session.start()
            async for frame in connection:
                await session.handle_frame(frame)
        except (SessionEnded, ConnectionClosed):
            pass
        finally:
            await session.finish(connection.close_code, _who_closed(connection))
            log.info(
                "session_closed",
                session_id=session.id,
                close_code=connection.close_code,
                ended_by=session.ended_by,
            )


async def serve_for(
    settings: Settings, config: FakeServerConfig | None = None
) -> tuple[FakeRealtimeServer, Settings]:
    """Start a fake server for ``voicebot run --fake-server``: the server, and ``settings``
    pointed at it with a key it accepts (for the provider the settings name)."""
    server = FakeRealtimeServer(config or FakeServerConfig())
    await server.start()
    key = SecretStr("sk-fake-server")
    if settings.provider == "azure":
        http_base = server.url.replace("ws://", "http://").removesuffix("/v1")
        update = {"azure_openai_endpoint": http_base, "azure_openai_api_key": key}
    else:
        update = {"url": server.url, "openai_api_key": key}
    return server, settings.model_copy(update=update)
