"""RealtimeClient: connect, configure, stream, receive, reconnect and roll sessions over.

The client moves frames. It parses them with `EventParser` and hands each event to one
callable (the dispatcher); it never looks into the conversation. What it owns:

- the handshake: `session.created`, `session.update`, `session.updated` on every connect;
- the outbound microphone audio: one bounded buffer that keeps audio while the connection is
  down and replays the utterance in flight (audio not yet committed by the server) on the
  next session, so a sentence spoken across a network blip is not lost;
- reconnects with exponential backoff and jitter on retryable failures, a bounded budget,
  and an immediate stop on fatal ones (bad key, no quota);
- the session time limit: a rollover to a new session shortly before ``expires_at``, at a
  moment the app reports as idle, and recovery when the server expires the session first.

Each new session is blank on the server; `on_session_ready` is where the app re-seeds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from realtime_voicebot.config import Settings
from realtime_voicebot.transport import events as ev
from realtime_voicebot.transport.endpoint import Endpoint
from realtime_voicebot.transport.events import (
    FATAL_ERROR_CODES,
    JSON,
    ErrorCode,
    EventParser,
    ServerEvent,
    ServerEventType,
)

log = structlog.get_logger(component="client")

RETRYABLE_CLOSE_CODES = frozenset({1000, 1001, 1005, 1006, 1011, 1012, 1013, 1015})
HANDSHAKE_TIMEOUT_S = 10.0


class ConnectionState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class FatalConnectionError(Exception):
    """A failure that retrying cannot fix; the message tells the user what to do."""


class SessionConfigError(FatalConnectionError):
    """The server rejected `session.update`."""


class _Disconnected(Exception):
    def __init__(self, reason: str, close_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


@dataclass(frozen=True)
class SessionInfo:
    """One server session: its id, when it expires, and why it was opened."""

    id: str
    expires_at: float | None
    number: int
    reason: str  # "start", "reconnect", "rollover" or "expired"
    opened_at: float


class Backoff:
    """Exponential backoff with jitter: attempt n waits a random time in [d/2, d]."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** max(0, attempt - 1))
        return self._rng.uniform(ceiling / 2, ceiling)


class OutboundAudio:
    """Microphone blocks on their way to the server, bounded, surviving disconnects.

    `pending` blocks are not sent yet. `in_flight` blocks were sent but the server has not
    committed them into a user item: if the session dies they are sent again on the next one.
    While the user is not speaking only `idle_keep_blocks` of them are kept (the start of an
    utterance the server has not flagged yet). The total is capped; the oldest blocks go
    first and are counted in `dropped_blocks`.
    """

    def __init__(self, capacity_blocks: int, idle_keep_blocks: int) -> None:
        self.capacity_blocks = max(1, capacity_blocks)
        self.idle_keep_blocks = idle_keep_blocks
        self.pending: deque[bytes] = deque()
        self.in_flight: deque[bytes] = deque()
        self.speech_active = False
        self.dropped_blocks = 0
        self.replayed_blocks = 0

    def push(self, block: bytes) -> None:
        self.pending.append(block)
        while len(self.pending) + len(self.in_flight) > self.capacity_blocks:
            (self.in_flight or self.pending).popleft()
            self.dropped_blocks += 1

    def next_to_send(self) -> bytes | None:
        if not self.pending:
            return None
        block = self.pending.popleft()
        self.in_flight.append(block)
        if not self.speech_active:
            while len(self.in_flight) > self.idle_keep_blocks:
                self.in_flight.popleft()
        return block

    def on_speech_started(self) -> None:
        self.speech_active = True

    def on_committed(self) -> None:
        """The server turned the buffered audio into an item: nothing in flight to replay."""
        self.speech_active = False
        self.in_flight.clear()

    def rewind(self) -> None:
        """A new session: what was in flight is sent again, before anything newer."""
        self.replayed_blocks += len(self.in_flight)
        self.pending.extendleft(reversed(self.in_flight))
        self.in_flight.clear()
        self.speech_active = False


@dataclass
class ClientStats:
    connects: int = 0
    reconnects: int = 0
    rollovers: int = 0
    expiries: int = 0
    audio_blocks_sent: int = 0
    events_sent: int = 0
    events_received: int = 0


SessionReady = Callable[[SessionInfo], Awaitable[None]]
StateListener = Callable[[ConnectionState, str], None]


class RealtimeClient:
    """One logical conversation over as many WebSocket sessions as it takes."""

    def __init__(
        self,
        settings: Settings,
        endpoint: Endpoint,
        on_event: Callable[[ServerEvent], None],
        *,
        session_update: Callable[[], JSON],
        on_session_ready: SessionReady | None = None,
        is_idle: Callable[[], bool] = lambda: True,
        on_state: StateListener | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self._on_event = on_event
        self._session_update = session_update
        self._on_session_ready = on_session_ready
        self._is_idle = is_idle
        self._on_state = on_state
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s, rng)
        blocks_per_s = 1000 / settings.chunk_ms
        self.audio = OutboundAudio(
            capacity_blocks=int(settings.offline_buffer_s * blocks_per_s),
            idle_keep_blocks=int(2 * blocks_per_s),
        )
        self.parser = EventParser()
        self.stats = ClientStats()
        self.state = ConnectionState.CLOSED
        self.session: SessionInfo | None = None
        self._ws: ClientConnection | None = None
        self._audio_ready = asyncio.Event()
        self._event_seen = asyncio.Event()  # wakes the rollover watcher to re-check idleness
        self._connected = asyncio.Event()
        self._closing = False
        self._rolling_over = False
        self._expired = False
        self._fatal: FatalConnectionError | None = None

    # --- public ------------------------------------------------------------------------------

    def send_audio(self, pcm16: bytes) -> None:
        """Queue a microphone block (PCM16 24 kHz mono); never blocks."""
        self.audio.push(pcm16)
        self._audio_ready.set()

    async def send(self, event: JSON) -> bool:
        """Send a client event now; False when there is no open session to send it on."""
        ws = self._ws
        if ws is None:
            log.debug("send_skipped_disconnected", event_type=event.get("type"))
            return False
        try:
            await ws.send(ev.encode(event))
        except ConnectionClosed:
            return False
        self.stats.events_sent += 1
        return True

    async def wait_connected(self) -> None:
        await self._connected.wait()

    @property
    def connected(self) -> bool:
        return self.state is ConnectionState.CONNECTED

    async def close(self) -> None:
        self._closing = True
        self._set_state(ConnectionState.CLOSED, "closed")
        if self._ws is not None:
            await self._ws.close(1000, "client closing")

    async def run(self) -> None:
        """Connect and serve until `close()`, reconnecting as needed.

        Raises FatalConnectionError when retrying cannot help or the budget is spent.
        """
        attempt = 0
        reason = "start"
        while not self._closing:
            started = time.monotonic()
            try:
                await self._serve_one_session(reason)
                reason = "rollover"
                attempt = 0
                continue
            except FatalConnectionError:
                self._set_state(ConnectionState.CLOSED, "fatal")
                raise
            except (_Disconnected, OSError, TimeoutError, InvalidHandshake) as exc:
                if self._closing:
                    break
                detail = exc.reason if isinstance(exc, _Disconnected) else repr(exc)
                code = exc.close_code if isinstance(exc, _Disconnected) else None
                if code is not None and code not in RETRYABLE_CLOSE_CODES:
                    self._set_state(ConnectionState.CLOSED, "fatal")
                    raise FatalConnectionError(
                        f"The server ended the session for good ({detail})."
                    ) from None
                if time.monotonic() - started > 2 * self.settings.backoff_max_s:
                    attempt = 0
                attempt += 1
                if attempt > self.settings.reconnect_attempts:
                    self._set_state(ConnectionState.CLOSED, "gave up")
                    raise FatalConnectionError(
                        f"Could not reconnect after {attempt - 1} attempts ({detail}). "
                        "Check the network and the endpoint, then run again."
                    ) from None
                reason = "expired" if self._expired else "reconnect"
                delay = 0.0 if self._expired and attempt == 1 else self.backoff.delay(attempt)
                self._set_state(
                    ConnectionState.RECONNECTING,
                    f"{detail}; reconnecting in {delay:.1f} s (attempt {attempt})",
                )
                await asyncio.sleep(delay)
        self._set_state(ConnectionState.CLOSED, "closed")

    # --- one session ---------------------------------------------------------------------------

    async def _serve_one_session(self, reason: str) -> None:
        self._set_state(ConnectionState.CONNECTING, reason)
        self._rolling_over = self._expired = False
        self._fatal = None
        try:
            ws = await connect(
                self.endpoint.url,
                additional_headers=self.endpoint.headers,
                open_timeout=HANDSHAKE_TIMEOUT_S,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
                max_size=2**24,
                # base64 PCM barely deflates; compressing 50 frames a second only costs CPU.
                compression=None,
                user_agent_header=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise FatalConnectionError(
                    f"The server rejected the API key (HTTP {status}): check OPENAI_API_KEY "
                    "(or AZURE_OPENAI_API_KEY for Azure)."
                ) from None
            if status == 404:
                raise FatalConnectionError(
                    f"No Realtime endpoint at {self.endpoint.url} (HTTP 404): check --url, "
                    "--model or the Azure deployment."
                ) from None
            raise _Disconnected(f"handshake failed with HTTP {status}") from None
        self.stats.connects += 1
        tasks: list[asyncio.Task[Any]] = []
        try:
            info = await self._configure(ws, reason)
            self._ws = ws
            self.session = info
            if reason != "start":
                self.stats.reconnects += reason in ("reconnect", "expired")
                self.stats.rollovers += reason == "rollover"
            self.audio.rewind()
            if self._on_session_ready is not None:
                await self._on_session_ready(info)
            self._set_state(ConnectionState.CONNECTED, f"session {info.number} ({reason})")
            self._connected.set()
            tasks = [
                asyncio.create_task(self._send_audio(ws), name="audio-sender"),
                asyncio.create_task(self._watch_expiry(ws, info), name="rollover"),
            ]
            await self._receive(ws)
        except ConnectionClosed as exc:
            frame = exc.rcvd or exc.sent
            raise _Disconnected(_describe_close(exc), frame.code if frame else 1006) from None
        finally:
            self._ws = None
            self._connected.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ws.close()
        if self._fatal is not None:
            raise self._fatal
        if self._rolling_over:
            return
        if not self._closing:
            raise _Disconnected(
                _describe_close_code(ws.close_code, ws.close_reason), ws.close_code or 1006
            )

    async def _configure(self, ws: ClientConnection, reason: str) -> SessionInfo:
        created = await self._expect(ws, ServerEventType.SESSION_CREATED)
        session = created.get("session") or {}
        expires = session.get("expires_at")
        number = self.session.number + 1 if self.session else 1
        info = SessionInfo(
            id=str(session.get("id", "")),
            expires_at=float(expires) if isinstance(expires, int | float) else None,
            number=number,
            reason=reason,
            opened_at=time.time(),
        )
        update = self._session_update()
        await ws.send(ev.encode(update))
        self.stats.events_sent += 1
        await self._expect(ws, ServerEventType.SESSION_UPDATED, request_id=update["event_id"])
        log.info("session_ready", session_id=info.id, number=number, reason=reason)
        return info

    async def _expect(
        self, ws: ClientConnection, wanted: ServerEventType, request_id: str | None = None
    ) -> ServerEvent:
        """Wait for one event type during the handshake; dispatch everything else."""
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            async for frame in ws:
                event = self.parser.parse(frame)
                if event is None:
                    continue
                self.stats.events_received += 1
                if event.type is ServerEventType.ERROR:
                    error = event.object("error")
                    if error.get("code") in FATAL_ERROR_CODES:
                        raise FatalConnectionError(_fatal_message(error))
                    if request_id is not None and error.get("event_id") in (request_id, None):
                        param = error.get("param") or "session"
                        raise SessionConfigError(
                            f"The server rejected the session settings ({param}): "
                            f"{error.get('message', 'invalid value')}. Fix that setting and "
                            "run again (`voicebot config show`)."
                        )
                self._on_event(event)
                if event.type is wanted:
                    return event
        raise _Disconnected(f"connection closed before {wanted.value}")

    async def _receive(self, ws: ClientConnection) -> None:
        async for frame in ws:
            event = self.parser.parse(frame)
            if event is None:
                continue
            self.stats.events_received += 1
            self._observe(event)
            self._on_event(event)
            self._event_seen.set()
            if self._fatal is not None:
                await ws.close(1000, "fatal error")
                return

    def _observe(self, event: ServerEvent) -> None:
        """What the transport itself needs to know: speech in flight, expiry, fatal errors."""
        if event.type is ServerEventType.SPEECH_STARTED:
            self.audio.on_speech_started()
        elif event.type in (ServerEventType.INPUT_COMMITTED, ServerEventType.INPUT_CLEARED):
            self.audio.on_committed()
        elif event.type is ServerEventType.ERROR:
            error = event.object("error")
            code = error.get("code")
            if code == ErrorCode.SESSION_EXPIRED:
                self._expired = True
                self.stats.expiries += 1
                log.info("session_expired_by_server")
            elif code in FATAL_ERROR_CODES:
                self._fatal = FatalConnectionError(_fatal_message(error))

    async def _send_audio(self, ws: ClientConnection) -> None:
        while True:
            block = self.audio.next_to_send()
            if block is None:
                self._audio_ready.clear()
                await self._audio_ready.wait()
                continue
            try:
                await ws.send(ev.input_audio_append_frame(block))
            except ConnectionClosed:
                return
            self.stats.audio_blocks_sent += 1

    async def _watch_expiry(self, ws: ClientConnection, info: SessionInfo) -> None:
        """Roll over to a new session before the server ends this one, when idle."""
        if info.expires_at is None:
            return
        lifetime = max(0.0, info.expires_at - info.opened_at)
        margin = min(self.settings.rollover_margin_s, lifetime * 0.3)
        await asyncio.sleep(max(0.0, info.expires_at - margin - time.time()))
        while not self._is_idle():
            remaining = info.expires_at - 0.5 - time.time()
            if remaining <= 0:
                break
            self._event_seen.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._event_seen.wait()
        log.info("session_rollover", session_id=info.id, seconds_left=info.expires_at - time.time())
        self._rolling_over = True
        await ws.close(1000, "session rollover")

    def _set_state(self, state: ConnectionState, detail: str) -> None:
        if state is self.state and state is not ConnectionState.RECONNECTING:
            return
        self.state = state
        log.info("connection_state", state=state.value, detail=detail)
        if self._on_state is not None:
            self._on_state(state, detail)


def _fatal_message(error: JSON) -> str:
    code = error.get("code")
    if code == ErrorCode.INVALID_API_KEY:
        return "The API key was rejected (invalid_api_key): check OPENAI_API_KEY."
    if code == ErrorCode.INSUFFICIENT_QUOTA:
        return "The account has no quota left (insufficient_quota): check billing."
    return f"The server refused the session ({code}): {error.get('message', '')}"


def _describe_close(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    return _describe_close_code(frame.code if frame else 1006, frame.reason if frame else "")


def _describe_close_code(code: int | None, reason: str | None) -> str:
    code = 1006 if code is None else code
    return f"connection closed ({code}{': ' + reason if reason else ''})"


__all__ = [
    "Backoff",
    "ClientStats",
    "ConnectionState",
    "FatalConnectionError",
    "OutboundAudio",
    "RealtimeClient",
    "SessionConfigError",
    "SessionInfo",
]
