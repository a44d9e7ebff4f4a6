"""Settings of the fake Realtime server, and the faults it can inject."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from realtime_voicebot.fake.conversation import TokenRates
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.transport.events import Dialect, ErrorCode


@dataclass
class Faults:
    """Failures to inject; tests may change them at any time, they are read when they can fire.

    ``*_after_events`` count the server events sent in a session (``session.created`` is 1,
    injected events are not counted): the fault fires right after that event.
    ``drop_after_s`` counts from the session's start.
    A fault fires once, then clears itself, unless ``repeat`` is set (then it fires in every
    session). A drop ends the TCP connection without a close frame: the client sees 1006.
    """

    drop_after_events: int | None = None
    drop_after_s: float | None = None
    error_after_events: int | None = None
    error_code: str = ErrorCode.SERVER_ERROR
    error_message: str = "The server had an error while processing your request."
    malformed_after_events: int | None = None
    unknown_event_after_events: int | None = None
    unknown_event_type: str = "response.fake_unknown_event"
    response_delay_s: float = 0.0
    """Time between ``response.created`` and the first output (cancellable)."""
    hold_out_of_band: asyncio.Event | None = None
    """Out-of-band responses wait for this event (or a cancel) before their first output:
    a test holds the session's summary open while the conversation goes on."""
    drop_on_client_event: str | None = None
    """Drop the connection when a client event of this type arrives, before handling it
    (e.g. ``conversation.item.delete``: a connection lost in the middle of a compaction)."""
    mute_after_events: int | None = None
    """After this event the session sends nothing more (pings are still answered): a server
    that went silent. Lifted by setting `FakeSession.muted` back to False."""
    reject_deletes: int = 0
    """Reject the next N ``conversation.item.delete`` of an item the server holds with an
    ``error`` (``server_error``) carrying the request's ``event_id``; the item stays. Counts
    down across sessions (``repeat`` does not apply)."""
    repeat: bool = False


@dataclass
class FakeServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    dialect: Dialect | None = None
    """Force a dialect; None: beta when the client sends ``OpenAI-Beta: realtime=v1``."""
    scenario: Scenario | None = None
    speed: float = 4.0
    """Multiple of real time at which response deltas are sent; 0 or inf: as fast as possible."""
    session_max_s: float = 3600.0
    api_keys: frozenset[str] | None = None
    """Keys the handshake accepts; None: any non-empty key."""
    rates: TokenRates = field(default_factory=TokenRates)
    audio_delta_ms: int = 100
    """Audio per ``response.output_audio.delta``."""
    ms_per_char: float = 65.0
    """Length of reply audio per character of its transcript."""
    vad_frame_ms: int = 10
    faults: Faults = field(default_factory=Faults)
    scenario_per_session: bool = False
    """Restart the scenario on each connection; by default one script runs across reconnects."""
    rate_limits: bool = True
    """Send ``rate_limits.updated`` after each ``response.done``, as the service does."""
    record_audio: bool = False
    """Keep base64 audio in `FakeSession.received`/``sent``; by default a size placeholder."""
    mcp_tools: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Hosted MCP: the tools a server label offers (``{"name", "description",
    "input_schema", "annotations"}``); labels not here offer `fake.mcp.DEFAULT_MCP_TOOLS`."""
    mcp_unreachable: frozenset[str] = frozenset()
    """Hosted MCP: server labels whose listing fails (``mcp_list_tools.failed``)."""
    context_window_tokens: int = 32_000
    """The model's context window (gpt-realtime: 32k). A response may read this minus its
    output reserve (the session's ``max_output_tokens``, 4,096 when ``inf``); beyond that the
    session's ``truncation`` applies (see `FakeSession.truncate_for_response`)."""
