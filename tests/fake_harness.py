"""A raw WebSocket client for the fake Realtime server that checks every frame it receives.

Every server event is validated against the SDK's server union of the connection's dialect
(`tests.spec.validate_server`); a frame that fails raises at once, so every test that talks
to the fake server also proves the shapes of what it sent. Frames that are meant to be bad
(injected faults) are kept in `bad_frames` only when a test asks for that.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.testing import scaled
from realtime_voicebot.transport import events as ev
from tests.spec import validate_client, validate_server

MakeServer = Callable[..., Awaitable[FakeRealtimeServer]]
"""`make_server(**config)`: a fake server started with that config (speed 0 unless given),
stopped when the test ends (the `make_server` fixture in conftest.py)."""


@asynccontextmanager
async def server_maker() -> AsyncIterator[MakeServer]:
    async with AsyncExitStack() as stack:

        async def make(**config: Any) -> FakeRealtimeServer:
            config.setdefault("speed", 0.0)
            return await stack.enter_async_context(FakeRealtimeServer(FakeServerConfig(**config)))

        yield make


JSON = dict[str, Any]
WAIT_S = scaled(5.0)


class HarnessError(AssertionError):
    pass


class Client:
    """Send client events (validated too, unless ``raw``) and receive validated server events."""

    def __init__(self, ws: ClientConnection, dialect: str, *, allow_bad: bool = False) -> None:
        self.ws = ws
        self.dialect = dialect
        self.allow_bad = allow_bad
        self.events: list[JSON] = []
        """Every valid server event received, in order."""
        self.bad_frames: list[str] = []

    async def send(self, event: JSON, *, raw: bool = False) -> JSON:
        if not raw:
            validate_client(event, self.dialect)
        await self.ws.send(json.dumps(event))
        return event

    async def send_audio(self, samples: NDArray[np.int16], chunk_ms: int = 100) -> None:
        """Append PCM16 audio in chunks (as fast as the socket takes it)."""
        pcm = samples.astype("<i2").tobytes()
        step = chunk_ms * ev.PCM_BYTES_PER_MS
        for offset in range(0, len(pcm), step):
            await self.send(ev.input_audio_append(pcm[offset : offset + step]))

    async def recv(self, timeout_s: float = WAIT_S) -> JSON:
        """The next valid server event."""
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), timeout_s)
            try:
                event = json.loads(frame)
                validate_server(event, self.dialect)
            except Exception as exc:
                if not self.allow_bad:
                    raise HarnessError(f"invalid server frame {str(frame)[:300]!r}: {exc}") from exc
                self.bad_frames.append(str(frame))
                continue
            self.events.append(event)
            return event

    async def recv_until(
        self, wanted: str | Callable[[JSON], bool], timeout_s: float = WAIT_S
    ) -> tuple[JSON, list[JSON]]:
        """Receive until an event of type ``wanted`` (or matching it): (it, the events before)."""
        match = (lambda e: e["type"] == wanted) if isinstance(wanted, str) else wanted
        before: list[JSON] = []
        async with asyncio.timeout(timeout_s):
            while True:
                event = await self.recv(timeout_s)
                if match(event):
                    return event, before
                before.append(event)

    async def expect_closed(self, timeout_s: float = WAIT_S) -> ConnectionClosed:
        """Drain events until the connection closes; the close as websockets reports it."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    await self.recv(timeout_s)
        except ConnectionClosed as exc:
            return exc
        raise HarnessError("connection did not close")  # pragma: no cover

    async def update_session(self, session: JSON) -> JSON:
        sent = await self.send(
            {"type": "session.update", "event_id": "evt_update", "session": session}
        )
        event, _ = await self.recv_until(
            lambda e: (
                e["type"] == "session.updated"
                or (e["type"] == "error" and e["error"].get("event_id") == sent["event_id"])
            )
        )
        if event["type"] == "error":
            raise HarnessError(f"session.update rejected: {event['error']}")
        return event


def ga_session(**overrides: Any) -> JSON:
    """A GA session object like the app sends, with fast VAD settings for tests."""
    detection: JSON = {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }
    detection.update(overrides.pop("turn_detection", {}))
    session: JSON = {
        "type": "realtime",
        "instructions": "Be brief.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-4o-mini-transcribe"},
                "turn_detection": detection,
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
        },
    }
    session.update(overrides)
    return session


def beta_session(**overrides: Any) -> JSON:
    session: JSON = {
        "modalities": ["audio", "text"],
        "instructions": "Be brief.",
        "voice": "alloy",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
    }
    session.update(overrides)
    return session


@asynccontextmanager
async def connect_client(
    server: FakeRealtimeServer,
    *,
    dialect: str = "ga",
    path: str | None = None,
    headers: dict[str, str] | None = None,
    allow_bad: bool = False,
    expect_created: bool = True,
) -> AsyncIterator[Client]:
    """Connect like the app does (key in a header); beta adds ``OpenAI-Beta: realtime=v1``."""
    base = f"ws://127.0.0.1:{server.port}"
    url = base + (path or "/v1/realtime?model=gpt-realtime")
    all_headers = {"Authorization": "Bearer sk-test"} if headers is None else dict(headers)
    if dialect == "beta":
        all_headers["OpenAI-Beta"] = "realtime=v1"
    # max_queue=None: a test that stops reading early must not stall the close handshake.
    async with connect(url, additional_headers=all_headers, max_size=None, max_queue=None) as ws:
        client = Client(ws, dialect, allow_bad=allow_bad)
        if expect_created:
            created = await client.recv()
            if created["type"] != "session.created":
                raise HarnessError(f"first event was {created['type']}")
        yield client


def decode_audio(event: JSON) -> bytes:
    return base64.b64decode(event["delta"])
