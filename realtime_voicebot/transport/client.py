"""RealtimeClient: connect, configure, move frames, reconnect. It decides nothing else.

The client parses frames with `EventParser` and hands everything that happens to one
callable, in order: each `ServerEvent`, a `SessionStarted` once a session is configured,
and a `ConnectionChanged` when the connection's state changes. It never looks into the
conversation. What it owns:

- the handshake: `session.created`, `session.update`, `session.updated` on every connect;
- one outbox of client events and one writer task per connection, which sends them in
  order, before any microphone audio;
- the outbound microphone audio: one bounded buffer that keeps audio while the connection is
  down and replays the utterance in flight (audio not yet committed by the server) on the
  next session, so a sentence spoken across a network blip is not lost;
- reconnects with exponential backoff and jitter on retryable failures (`errors.classify`),
  a bounded budget, and an immediate stop on fatal ones (bad key, no quota);
- the session's lifetime as the server states it, checked against this machine's clock
  (`SessionStarted.lifetime_s`); `roll_over()` and `reconnect()` are commands from the app.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from realtime_voicebot.config import Settings
from realtime_voicebot.errors import (
    Disconnected,
    FatalConnectionError,
    SessionConfigError,
    classify,
)
from realtime_voicebot.transport import events as ev
from realtime_voicebot.transport import payloads as pl
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

HANDSHAKE_TIMEOUT_S = 10.0
OUTBOX_LIMIT = 4096
MAX_LIFETIME_S = 24 * 3600.0
"""A session said to last longer than this (or already over) has an unknown lifetime."""
QUICK_SESSION_S = 2.0
"""A rollover after a session shorter than this counts as a failed attempt (backoff applies):
a server whose sessions expire at once cannot make the client reconnect in a loop."""


class ConnectionState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True)
class SessionStarted:
    """A session is configured and ready: the first thing that happens on it."""

    id: str
    number: int
    reason: str
    """``start``, ``reconnect``, ``rollover`` or ``expired``."""
    lifetime_s: float | None
    """Seconds until the server ends it, when known and plausible."""


@dataclass(frozen=True)
class ConnectionChanged:
    state: ConnectionState
    detail: str


TransportEvent = ServerEvent | SessionStarted | ConnectionChanged


def session_lifetime(expires_at: float | None, now: float) -> float | None:
    """Seconds left of a session from its ``expires_at`` and this machine's clock.

    None (unknown) for a missing expiry, one already past (or a clock ahead of the server's),
    or one implausibly far away: rolling over on such a figure would reconnect in a loop.
    """
    if expires_at is None:
        return None
    left = expires_at - now
    return left if 0 < left <= MAX_LIFETIME_S else None


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
    outbox_dropped: int = 0
    outbox_discarded_on_new_session: int = 0


class RealtimeClient:
    """One logical conversation over as many WebSocket sessions as it takes."""

    def __init__(
        self,
        settings: Settings,
        endpoint: Endpoint,
        on_event: Callable[[TransportEvent], None],
        *,
        session_update: Callable[[], JSON],
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self._on_event = on_event
        self._session_update = session_update
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s, rng)
        blocks_per_s = 1000 / settings.chunk_ms
        self.audio = OutboundAudio(
            capacity_blocks=int(settings.offline_buffer_s * blocks_per_s),
            idle_keep_blocks=int(2 * blocks_per_s),
        )
        self.parser = EventParser()
        self.stats = ClientStats()
        self.state = ConnectionState.CLOSED
        self.session: SessionStarted | None = None
        self._outbox: deque[JSON] = deque()
        self._ws: ClientConnection | None = None
        self._wake_writer = asyncio.Event()
        self._connected = asyncio.Event()
        self._end_session = asyncio.Event()
        self._closing = False
        self._rolling_over = False
        self._reconnect_reason: str | None = None
        self._expired = False
        self._fatal: FatalConnectionError | None = None

    # --- public ------------------------------------------------------------------------------

    def send(self, event: JSON) -> bool:
        """Queue a client event for the current session; never blocks.

        Events queued while no session is open wait for the next one and are discarded
        there (counted): they were meant for a conversation the new session does not hold.
        False when the outbox is full (the event is dropped and counted).
        """
        if len(self._outbox) >= OUTBOX_LIMIT:
            self.stats.outbox_dropped += 1
            log.warning("outbox_full", event_type=event.get("type"))
            return False
        self._outbox.append(event)
        self._wake_writer.set()
        return True

    def send_audio(self, pcm16: bytes) -> None:
        """Queue a microphone block (PCM16 24 kHz mono); never blocks."""
        self.audio.push(pcm16)
        self._wake_writer.set()

    def roll_over(self) -> None:
        """End this session cleanly and open a new one (before the server's time limit)."""
        if self._ws is not None:
            self._rolling_over = True
            self._end_session.set()

    def reconnect(self, reason: str) -> None:
        """Drop this connection and open a new session, with backoff (the server is mute)."""
        if self._ws is not None:
            self._reconnect_reason = reason
            self._end_session.set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    @property
    def connected(self) -> bool:
        return self.state is ConnectionState.CONNECTED

    def snapshot(self) -> dict[str, int]:
        return {
            **vars(self.stats),
            "mic_blocks_dropped_offline": self.audio.dropped_blocks,
            "mic_blocks_replayed": self.audio.replayed_blocks,
            "frames_dropped": self.parser.stats.dropped,
            "frames_bad_payload": self.parser.stats.bad_payload,
            "frames_unknown_type": self.parser.stats.unknown_type,
        }

    async def close(self) -> None:
        self._closing = True
        self._set_state(ConnectionState.CLOSED, "closed")
        self._end_session.set()
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
                if time.monotonic() - started >= QUICK_SESSION_S:
                    attempt = 0
                    continue
                exc: BaseException = Disconnected("the session ended right after it began")
            except FatalConnectionError:
                self._set_state(ConnectionState.CLOSED, "fatal")
                raise
            except (Disconnected, OSError, TimeoutError, InvalidHandshake) as error:
                if self._closing:
                    break
                exc = error
                reason = "expired" if self._expired else "reconnect"
            detail = exc.reason if isinstance(exc, Disconnected) else repr(exc)
            if classify(exc) == "fatal":
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
        self._reconnect_reason = None
        self._end_session.clear()
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
            raise Disconnected(f"handshake failed with HTTP {status}") from None
        self.stats.connects += 1
        tasks: list[asyncio.Task[Any]] = []
        try:
            info = await self._configure(ws, reason)
            self._ws = ws
            self.session = info
            if reason != "start":
                self.stats.reconnects += reason in ("reconnect", "expired")
                self.stats.rollovers += reason == "rollover"
            discarded = len(self._outbox)
            if discarded:  # meant for the old conversation; the new session is re-seeded
                self.stats.outbox_discarded_on_new_session += discarded
                self._outbox.clear()
            self.audio.rewind()
            self._on_event(info)
            self._set_state(ConnectionState.CONNECTED, f"session {info.number} ({reason})")
            self._connected.set()
            tasks = [
                asyncio.create_task(self._write(ws), name="writer"),
                asyncio.create_task(self._end_when_asked(ws), name="session-end"),
            ]
            await self._receive(ws)
        except ConnectionClosed as exc:
            frame = exc.rcvd or exc.sent
            raise Disconnected(_describe_close(exc), frame.code if frame else 1006) from None
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
        if self._reconnect_reason is not None:
            raise Disconnected(self._reconnect_reason, 1000)
        if not self._closing:
            raise Disconnected(
                _describe_close_code(ws.close_code, ws.close_reason), ws.close_code or 1006
            )

    async def _configure(self, ws: ClientConnection, reason: str) -> SessionStarted:
        created = await self._expect(ws, ServerEventType.SESSION_CREATED)
        payload = created.payload
        assert isinstance(payload, pl.SessionCreated)
        number = self.session.number + 1 if self.session else 1
        info = SessionStarted(
            id=payload.session_id,
            number=number,
            reason=reason,
            lifetime_s=session_lifetime(payload.expires_at, time.time()),
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
        """Wait for one event type during the handshake; hand on everything else."""
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            async for frame in ws:
                event = self.parser.parse(frame)
                if event is None:
                    continue
                self.stats.events_received += 1
                error = event.payload
                if isinstance(error, pl.ServerError):
                    if error.code in FATAL_ERROR_CODES:
                        raise FatalConnectionError(_fatal_message(error))
                    if request_id is not None and _rejects(error, request_id):
                        raise SessionConfigError(
                            f"The server rejected the session settings ({error.param or 'session'}"
                            f"): {error.message or 'invalid value'}. Fix that setting and run "
                            "again (`voicebot config show`)."
                        )
                self._on_event(event)
                if event.type is wanted:
                    return event
        raise Disconnected(f"connection closed before {wanted.value}")

    async def _receive(self, ws: ClientConnection) -> None:
        async for frame in ws:
            event = self.parser.parse(frame)
            if event is None:
                continue
            self.stats.events_received += 1
            self._observe(event)
            self._on_event(event)
            if self._fatal is not None:
                await ws.close(1000, "fatal error")
                return

    def _observe(self, event: ServerEvent) -> None:
        """What the transport itself needs to know: speech in flight, expiry, fatal errors."""
        if event.type is ServerEventType.SPEECH_STARTED:
            self.audio.on_speech_started()
        elif event.type in (ServerEventType.INPUT_COMMITTED, ServerEventType.INPUT_CLEARED):
            self.audio.on_committed()
        elif isinstance(event.payload, pl.ServerError):
            code = event.payload.code
            if code == ErrorCode.SESSION_EXPIRED:
                self._expired = True
                self.stats.expiries += 1
                log.info("session_expired_by_server")
            elif code in FATAL_ERROR_CODES:
                self._fatal = FatalConnectionError(_fatal_message(event.payload))

    async def _write(self, ws: ClientConnection) -> None:
        """The one writer: queued client events first, then microphone audio."""
        outbox, audio = self._outbox, self.audio
        while True:
            self._wake_writer.clear()
            while outbox or audio.pending:
                try:
                    if outbox:
                        await ws.send(ev.encode(outbox[0]))
                        outbox.popleft()
                        self.stats.events_sent += 1
                    else:
                        block = audio.next_to_send()
                        if block is None:
                            break
                        await ws.send(ev.input_audio_append_frame(block))
                        self.stats.audio_blocks_sent += 1
                except ConnectionClosed:
                    return
            await self._wake_writer.wait()

    async def _end_when_asked(self, ws: ClientConnection) -> None:
        await self._end_session.wait()
        if self._closing:
            return  # close() closes the socket itself
        if self._rolling_over:
            log.info("session_rollover", session=self.session.id if self.session else None)
            await ws.close(1000, "session rollover")
        else:
            log.warning("reconnecting", reason=self._reconnect_reason)
            await ws.close(1000, "reconnecting")

    def _set_state(self, state: ConnectionState, detail: str) -> None:
        if state is self.state and state is not ConnectionState.RECONNECTING:
            return
        self.state = state
        log.info("connection_state", state=state.value, detail=detail)
        self._on_event(ConnectionChanged(state, detail))


def _rejects(error: pl.ServerError, request_id: str) -> bool:
    """Whether an error during the handshake refuses our ``session.update``: it names it, or
    it names nothing and is about the request (a ``server_error`` is the server's own
    trouble: handed on, and the handshake goes on or times out and is retried)."""
    if error.event_id is not None:
        return error.event_id == request_id
    return error.type == "invalid_request_error"


def _fatal_message(error: pl.ServerError) -> str:
    code = error.code
    if code == ErrorCode.INVALID_API_KEY:
        return "The API key was rejected (invalid_api_key): check OPENAI_API_KEY."
    if code == ErrorCode.INSUFFICIENT_QUOTA:
        return "The account has no quota left (insufficient_quota): check billing."
    return f"The server refused the session ({code}): {error.message}"


def _describe_close(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    return _describe_close_code(frame.code if frame else 1006, frame.reason if frame else "")


def _describe_close_code(code: int | None, reason: str | None) -> str:
    code = 1006 if code is None else code
    return f"connection closed ({code}{': ' + reason if reason else ''})"


__all__ = [
    "Backoff",
    "ClientStats",
    "ConnectionChanged",
    "ConnectionState",
    "FatalConnectionError",
    "OutboundAudio",
    "RealtimeClient",
    "SessionConfigError",
    "SessionStarted",
    "TransportEvent",
    "session_lifetime",
]
