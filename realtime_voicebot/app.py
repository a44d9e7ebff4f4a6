"""The voice bot: builds every piece from `Settings` and runs one conversation.

This is the only module that knows all the others. Data flows

    audio input -> echo -> RealtimeClient.send_audio -> server
    server -> RealtimeClient -> Dispatcher -> ConversationState (mirror, barge-in, re-seed)
                                           -> AudioOutput (play, flush)
                                           -> CompactionRunner, ToolCallHandler (tasks)
                                           -> ConversationView, Metrics, transcript file

Handlers are synchronous and never block: what they want sent goes into one bounded outbox
drained by a sender task; slow work (summaries, tools, file writes) runs elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import SecretStr

from realtime_voicebot.config import Settings
from realtime_voicebot.handlers.compaction import CompactionRunner
from realtime_voicebot.handlers.dispatcher import BackgroundTasks, Dispatcher
from realtime_voicebot.handlers.tool_calls import ToolCallHandler
from realtime_voicebot.metrics import (
    BARGE_IN_FLUSH,
    BARGE_IN_TO_SILENCE,
    FIRST_DELTA_TO_FIRST_SAMPLE,
    SPEECH_END_TO_FIRST_DELTA,
    Metrics,
    Prices,
)
from realtime_voicebot.state.conversation import ConversationState
from realtime_voicebot.state.policy import CompactionPolicy
from realtime_voicebot.summarization import build_summarizer
from realtime_voicebot.tools.builtin import build_registry
from realtime_voicebot.transcript import TranscriptWriter, default_transcript_path, load_transcript
from realtime_voicebot.transport import events as ev
from realtime_voicebot.transport.client import (
    ConnectionState,
    FatalConnectionError,
    RealtimeClient,
    SessionInfo,
)
from realtime_voicebot.transport.endpoint import build_endpoint
from realtime_voicebot.transport.events import JSON, ErrorCode, ServerEvent, ServerEventType
from realtime_voicebot.ui import ConversationView

if TYPE_CHECKING:
    from realtime_voicebot.audio.input import AudioInput
    from realtime_voicebot.audio.output import AudioOutput
    from realtime_voicebot.fake.server import FakeRealtimeServer, FakeServerConfig
    from realtime_voicebot.summarization.base import Summarizer

log = structlog.get_logger(component="app")
_S = ServerEventType
OUTBOX_LIMIT = 4096
QUIET_AFTER_INPUT_S = 1.5
LEVEL_INTERVAL_S = 0.1
"""How often the microphone level is passed to the view."""
EXPECTED_ERRORS = frozenset({ErrorCode.RESPONSE_CANCEL_NOT_ACTIVE, ErrorCode.SESSION_EXPIRED})


class UserError(Exception):
    """A problem the user can fix; printed as one line, no traceback."""


@dataclass
class RunOptions:
    """How `voicebot run` was asked to run (beyond Settings)."""

    fake_server: bool = False
    fake_server_config: FakeServerConfig | None = None
    input_file: Path | None = None
    output_file: Path | None = None
    text: bool = False
    text_lines: asyncio.Queue[str | None] | None = None
    """Typed lines (None = end of input); stdin when not given in text mode, or in voice
    mode when stdin is a terminal."""
    max_turns: int | None = None
    exit_when_input_ends: bool = False
    resume: Path | None = None
    input_pace: float = 1.0
    """Speed of a WAV input file against real time (1.0 = as spoken)."""
    output_pace: float = 1.0
    extra_tools: list[Any] = field(default_factory=list)


class VoiceBot:
    """One conversation over as many sessions as it takes."""

    def __init__(
        self,
        settings: Settings,
        options: RunOptions,
        view: ConversationView,
        *,
        audio_in: AudioInput | None = None,
        audio_out: AudioOutput | None = None,
        summarizer: Summarizer | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.view = view
        self.dialect: ev.Dialect = settings.dialect
        self.metrics = Metrics()
        self.prices = Prices.from_settings(settings)
        self.sessions_started = 0
        self.audio_in = audio_in
        self.audio_out = audio_out
        self._summarizer = summarizer
        self.state = ConversationState(
            interrupt_response=settings.interrupt_response, on_record=self._on_record
        )
        self.dispatcher = Dispatcher()
        self.tasks = BackgroundTasks()
        self.fake_server: FakeRealtimeServer | None = None
        self.client: RealtimeClient | None = None
        self.transcript: TranscriptWriter | None = None
        self.runner: CompactionRunner | None = None
        self.tools: ToolCallHandler | None = None
        self.completed_replies = 0
        self.user_speaking = False
        self.exit_code = 0
        self._outbox: asyncio.Queue[tuple[int, JSON]] = asyncio.Queue(OUTBOX_LIMIT)
        """Client events to send, each with the session (`state.sessions`) it was meant for."""
        self._stop = asyncio.Event()
        self._activity = asyncio.Event()
        self._response_idle = asyncio.Event()
        self._response_idle.set()
        self._speech_stopped_at: float | None = None
        self._first_delta_seen: dict[str, None] = {}
        """Items whose first audio delta came (an ordered set of the latest few only)."""
        self._first_delta_at: dict[str, float] = {}
        """Arrival of each item's first audio delta, until its first sample plays."""
        self._input_done = asyncio.Event()
        self._device_failure: str | None = None
        """The one-line message of the audio device that failed mid-run, if one did."""

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until Ctrl-C, the end of input, --max-turns, or a fatal error; the exit code."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self.stop)
        try:
            await self._start()
            await self._serve()
        except UserError as exc:
            self.view.error(str(exc))
            self.exit_code = 2
        finally:
            await self._shutdown()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
        return self.exit_code

    def stop(self) -> None:
        self._stop.set()

    async def _start(self) -> None:
        settings = self.settings
        if self.options.fake_server:
            settings = await self._start_fake_server(settings)
        try:
            endpoint = build_endpoint(settings)
        except Exception as exc:  # EndpointError: a message for the user
            raise UserError(str(exc)) from None
        self.settings = settings
        self._open_transcript()
        summarizer = self._summarizer or build_summarizer(
            settings, offline=self.options.fake_server
        )
        self.runner = CompactionRunner(
            self.state,
            CompactionPolicy.from_settings(settings),
            summarizer,
            self._send_now,
            dialect=self.dialect,
            language=settings.summary_language,
            transcript_wait_s=settings.transcript_wait_s,
            summary_timeout_s=settings.summary_timeout_s,
            on_summary=self._on_summary,
            spawn=self.tasks.spawn,
        )
        registry = build_registry(settings)
        for tool in self.options.extra_tools:
            registry.add(tool)
        self.tools = ToolCallHandler(registry, self._send_now, settings.tool_timeout_s)
        tool_specs = registry.specs()

        def session_update() -> JSON:
            return ev.session_update(settings, self.dialect, tools=tool_specs or None)

        self.client = RealtimeClient(
            settings,
            endpoint,
            self.dispatcher.dispatch,
            session_update=session_update,
            on_session_ready=self._on_session_ready,
            is_idle=self.is_idle,
            on_state=self._on_connection_state,
        )
        self._register_handlers()
        if self.options.resume is not None:
            summary, turns = load_transcript(self.options.resume)
            self.state.restore(summary, [(turn.role, turn.text) for turn in turns])
            self.view.notice(f"resuming {self.options.resume} ({len(turns)} turns)")
        await self._open_audio()

    async def _open_audio(self) -> None:
        """Build and start the audio devices; without usable ones, fall back to text mode."""
        from realtime_voicebot.audio.build import build_audio
        from realtime_voicebot.audio.devices import AudioUnavailableError

        try:
            if self.audio_out is None and self.audio_in is None:
                self.audio_in, self.audio_out = build_audio(
                    self.settings,
                    text=self.options.text,
                    input_file=self.options.input_file,
                    output_file=self.options.output_file,
                    input_pace=self.options.input_pace,
                    output_pace=self.options.output_pace,
                )
            if self.audio_out is not None:
                self.audio_out.on_item_started = self._on_playback_started
                self.audio_out.on_device_error = self._on_speaker_error
                await self.audio_out.start()
            if self.audio_in is not None:
                await self.audio_in.start()
        except AudioUnavailableError as exc:
            if self.options.input_file is not None or self.options.output_file is not None:
                raise UserError(str(exc)) from None
            for device in (self.audio_in, self.audio_out):
                if device is not None:
                    with contextlib.suppress(Exception):
                        await device.stop()
            self.audio_in = self.audio_out = None
            self.options.text = True
            self.view.notice(f"{exc} -- falling back to text mode: type a line and press Enter")

    async def _start_fake_server(self, settings: Settings) -> Settings:
        from realtime_voicebot.fake.server import FakeRealtimeServer, FakeServerConfig

        config = self.options.fake_server_config or FakeServerConfig()
        self.fake_server = FakeRealtimeServer(config)
        await self.fake_server.start()
        self.view.notice(f"fake Realtime server at {self.fake_server.url}")
        key = SecretStr("sk-fake-server")
        if settings.provider == "azure":
            http_base = self.fake_server.url.replace("ws://", "http://").removesuffix("/v1")
            return settings.model_copy(
                update={"azure_openai_endpoint": http_base, "azure_openai_api_key": key}
            )
        return settings.model_copy(update={"url": self.fake_server.url, "openai_api_key": key})

    def _open_transcript(self) -> None:
        path = self.settings.transcript_path or default_transcript_path()
        redact: Callable[[str], str] | None = None
        if self.settings.redact_transcript:
            from realtime_voicebot.redact import redact as redact_text

            redact = redact_text
        self.transcript = TranscriptWriter(path, redact=redact)
        log.info("transcript", path=str(path))

    async def _serve(self) -> None:
        assert self.client is not None
        client_task = asyncio.create_task(self.client.run(), name="client")
        workers = [
            asyncio.create_task(self._drain_outbox(), name="outbox"),
            asyncio.create_task(self._watch_exit(), name="exit-watch"),
        ]
        if self.audio_in is not None:
            workers.append(asyncio.create_task(self._pump_audio(self.audio_in), name="audio-in"))
        if self.options.text or self.options.text_lines is not None or _stdin_is_terminal():
            # Typed lines are text turns in voice mode too: usable without a microphone.
            workers.append(asyncio.create_task(self._pump_text(), name="text-in"))
        stop_task = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait(
                {client_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if client_task in done:
                exc = client_task.exception()
                if isinstance(exc, FatalConnectionError):
                    self.view.error(str(exc))
                    self.exit_code = 1
                elif exc is not None:
                    raise exc
        finally:
            for task in (*workers, stop_task):
                task.cancel()
            await asyncio.gather(*workers, stop_task, return_exceptions=True)
            await self.client.close()
            if not client_task.done():
                client_task.cancel()
            await asyncio.gather(client_task, return_exceptions=True)

    async def _shutdown(self) -> None:
        if self.tools is not None:
            await self.tools.aclose()
        if self.runner is not None:
            await self.runner.aclose()
        await self.tasks.aclose()
        for device in (self.audio_in, self.audio_out):
            if device is not None:
                with contextlib.suppress(Exception):
                    await device.stop()
        for record in self.state.flush_records():
            self._on_record(record)
        if self.transcript is not None:
            await self.transcript.aclose()
        if self.fake_server is not None:
            await self.fake_server.stop()
        summary = self._record_final_metrics()
        if self.settings.metrics_file is not None:
            await self._write_metrics_file(self.settings.metrics_file, summary)
        if self.sessions_started:
            self.view.summary(summary)
        self.view.close()

    # --- handlers ----------------------------------------------------------------------------

    def _register_handlers(self) -> None:
        d = self.dispatcher
        d.add(self._apply_to_state)
        d.add(self._on_speech_started, _S.SPEECH_STARTED)
        d.add(self._on_speech_stopped, _S.SPEECH_STOPPED, _S.INPUT_COMMITTED)
        d.add(self._on_user_transcript, _S.INPUT_TRANSCRIPT_COMPLETED, _S.INPUT_TRANSCRIPT_FAILED)
        d.add(self._on_audio_delta, _S.AUDIO_DELTA)
        d.add(self._on_audio_done, _S.AUDIO_DONE)
        d.add(self._on_transcript_delta, _S.AUDIO_TRANSCRIPT_DELTA, _S.TEXT_DELTA)
        d.add(self._on_response_created, _S.RESPONSE_CREATED)
        d.add(self._on_response_done, _S.RESPONSE_DONE)
        d.add(self._on_error, _S.ERROR)
        assert self.runner is not None and self.tools is not None
        d.add(self.runner.on_event)
        d.add(self.tools.on_event)

    def _apply_to_state(self, event: ServerEvent) -> None:
        self._activity.set()
        self.send_soon(*self.state.apply(event))

    def _on_speech_started(self, event: ServerEvent) -> None:
        self.user_speaking = True
        self.view.status("user speaking")
        player = self.audio_out
        if player is None:
            return
        started = time.monotonic()
        item_id = player.playing_item_id or self.state.streaming_item_id
        played_ms = player.played_ms(item_id) if item_id is not None else 0.0
        # flush() names the item even while it was still filling its jitter buffer.
        item_id = player.flush() or item_id
        if item_id is None:
            return
        sends = self.state.interrupt(played_ms, item_id)
        if sends and self.state.needs_cancel(self.settings.interrupt_response):
            sends.append(ev.response_cancel())
        self.send_soon(*sends)
        if sends:
            self.metrics.inc("barge_ins")
            self.metrics.inc("truncations")
            self._observe(BARGE_IN_FLUSH, time.monotonic() - started)
            self.tasks.spawn(self._observe_silence(player, started), name="silence-watch")
            log.info(
                "barge_in",
                event_type=event.type.value,
                item_id=item_id,
                response_id=self.state.items[item_id].response_id
                if item_id in self.state.items
                else None,
                played_ms=round(played_ms),
                events=len(sends),
            )

    async def _observe_silence(self, player: AudioOutput, started: float) -> None:
        """Metric `barge_in_to_silence`: speech_started handled -> the reply's last sample
        handed to the device (the end of the flush's fade, stamped in the device callback)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                silenced_at = await player.wait_silenced()
                if silenced_at is not None:
                    self._observe(BARGE_IN_TO_SILENCE, max(0.0, silenced_at - started))

    def _on_speech_stopped(self, event: ServerEvent) -> None:
        if event.type is _S.SPEECH_STOPPED:
            self._speech_stopped_at = time.monotonic()
        self.user_speaking = False
        self.view.status("thinking")

    def _on_user_transcript(self, event: ServerEvent) -> None:
        item = self.state.items.get(event.item_id or "")
        text = item.text if item is not None else str(event.get("transcript", ""))
        if text:
            self.view.user_said(text)
        self.metrics.inc("user_turns")

    def _on_audio_delta(self, event: ServerEvent) -> None:
        item_id = event.item_id
        if item_id is None or not self.state.should_play(event):
            self.metrics.inc("late_deltas_dropped")
            return
        if item_id not in self._first_delta_seen:
            self._first_delta_seen[item_id] = None
            if len(self._first_delta_seen) > 64:  # an item's deltas come together: plenty
                del self._first_delta_seen[next(iter(self._first_delta_seen))]
            self._first_delta_at[item_id] = time.monotonic()
            if len(self._first_delta_at) > 64:  # items flushed before they ever played
                del self._first_delta_at[next(iter(self._first_delta_at))]
            if self._speech_stopped_at is not None:
                self._observe(SPEECH_END_TO_FIRST_DELTA, time.monotonic() - self._speech_stopped_at)
                self._speech_stopped_at = None
        if self.audio_out is not None:
            try:
                self.audio_out.write(item_id, base64.b64decode(event.get("delta") or ""))
            except Exception as exc:  # PortAudioError, OSError: the device is gone
                self._device_failed("Speaker", exc)
                return
            self.view.status("speaking")

    def _on_playback_started(self, item_id: str, first_sample_at: float) -> None:
        """Metric `first_delta_to_first_sample`: a reply's first delta arriving -> its first
        sample handed to the device (jitter buffer plus waiting for the next device block)."""
        arrived = self._first_delta_at.pop(item_id, None)
        if arrived is not None:
            self._observe(FIRST_DELTA_TO_FIRST_SAMPLE, max(0.0, first_sample_at - arrived))

    def _on_audio_done(self, event: ServerEvent) -> None:
        if self.audio_out is not None and event.item_id is not None:
            self.audio_out.end_item(event.item_id)

    def _on_transcript_delta(self, event: ServerEvent) -> None:
        if event.item_id is not None and self.state.should_play(event):
            self.view.assistant_delta(event.item_id, str(event.get("delta") or ""))

    def _on_response_created(self, event: ServerEvent) -> None:
        self._response_idle.clear()

    def _on_response_done(self, event: ServerEvent) -> None:
        response = event.object("response")
        status = response.get("status")
        replies: list[tuple[str, str, bool]] = []
        for output in response.get("output") or []:
            if not isinstance(output, dict) or output.get("type") != "message":
                continue
            item_id = output.get("id")
            if not isinstance(item_id, str):
                continue
            if self.audio_out is not None:
                self.audio_out.end_item(item_id)
            item = self.state.items.get(item_id)
            if item is not None and item.role == "assistant":
                replies.append((item_id, item.spoken_text, item.truncated))
                self.metrics.inc("assistant_turns")
                if status == "completed":
                    self.completed_replies += 1
        self.metrics.inc(f"responses_{status or 'unknown'}")
        usage = response.get("usage")
        if isinstance(usage, dict):
            self.metrics.add_usage(usage, self.prices)
        # State first, display last: a view that fails must not stall typing or compaction.
        self._response_idle.set()
        assert self.runner is not None
        self.runner.maybe_start()
        for item_id, text, truncated in replies:
            self.view.assistant_done(item_id, text, truncated)
        if isinstance(usage, dict):
            self.view.cost(self.metrics.cost_usd)
            self.view.window(self.state.window_tokens, self.settings.summary_threshold)
        if self.audio_out is not None and replies:
            last_reply = replies[-1][0]
            self.tasks.spawn(self._listening_after(self.audio_out, last_reply), name="listening")
        else:
            self.view.status("listening")

    async def _listening_after(self, player: AudioOutput, item_id: str) -> None:
        """State `listening` once the reply has played out (or was cut), not when it was sent."""
        await player.wait_finished(item_id)
        if self._response_idle.is_set() and not self.user_speaking:
            self.view.status("listening")

    def _observe(self, name: str, seconds: float) -> None:
        self.metrics.observe(name, seconds)
        self.view.latency(name, seconds)

    def _on_error(self, event: ServerEvent) -> None:
        error = event.object("error")
        code = str(error.get("code") or error.get("type") or "unknown")
        self.metrics.inc(f"error_{code}")
        if code in EXPECTED_ERRORS:
            log.debug("server_error_expected", code=code)
            return
        if self.runner is not None and self.runner.owns_request(error.get("event_id")):
            # A rejected summary create or delete: the compaction retries it, nothing to show.
            log.info(
                "compaction_request_rejected", code=code, client_event_id=error.get("event_id")
            )
            return
        log.warning(
            "server_error",
            event_type=event.type.value,
            code=code,
            message=error.get("message"),
            client_event_id=error.get("event_id"),
        )
        self.view.error(f"server: {error.get('message', code)}")

    def _on_record(self, record: JSON) -> None:
        if self.transcript is not None:
            self.transcript.write(record)

    def _on_summary(self, text: str, item_count: int) -> None:
        self.metrics.inc("compactions")
        self.view.compaction(item_count, len(text))

    # --- sessions ----------------------------------------------------------------------------

    async def _on_session_ready(self, info: SessionInfo) -> None:
        self.sessions_started += 1
        if info.reason != "start":
            # Whatever was queued for the old session (a compaction's deletes, a truncate)
            # means nothing to the new, blank one: the re-seed below replaces it.
            while not self._outbox.empty():
                self._outbox.get_nowait()
                self.metrics.inc("outbox_discarded_on_new_session")
            self.state.reset_for_new_session()
            assert self.runner is not None
            self.runner.on_new_session()
            if self.tools is not None:  # calls of the dead session: never answered there
                self.tools.reset()
            if self.audio_out is not None:
                self.audio_out.flush()
            self.user_speaking = False
            self._response_idle.set()
            self.metrics.inc("rollovers" if info.reason == "rollover" else "reconnects")
            self.view.notice(f"new session ({info.reason}); conversation restored")
            self.view.window(self.state.window_tokens, self.settings.summary_threshold)
        assert self.client is not None
        for seed in self.state.seed_events(self.dialect):
            await self.client.send(seed)
        # Typed lines the old session lost or never answered: again, after the seed.
        resent = self.state.typed_turn_events(self.dialect)
        if resent:
            self.metrics.inc("typed_turns_resent", len(resent) - 1)
            self._response_idle.clear()
        for event in resent:
            await self.client.send(event)

    def _on_connection_state(self, state: ConnectionState, detail: str) -> None:
        self.view.status(state.value)
        if state is ConnectionState.RECONNECTING:
            self.view.notice(f"connection lost: {detail}")

    def is_idle(self) -> bool:
        """No reply running or playing or owed to a typed line, and the user not speaking:
        a safe moment to roll over."""
        playing = self.audio_out is not None and self.audio_out.is_audible
        return (
            self.state.active_response_id is None
            and not self.state.pending_typed_ids
            and not self.user_speaking
            and not playing
        )

    # --- sending -----------------------------------------------------------------------------

    def send_soon(self, *events: JSON) -> None:
        """Queue client events for the sender task, in order; never blocks."""
        for event in events:
            try:
                self._outbox.put_nowait((self.state.sessions, event))
            except asyncio.QueueFull:
                self.metrics.inc("outbox_dropped")
                log.warning("outbox_full", event_type=event.get("type"))

    async def _send_now(self, event: JSON) -> None:
        self.send_soon(event)

    async def _drain_outbox(self) -> None:
        assert self.client is not None
        while True:
            session, event = await self._outbox.get()
            if session != self.state.sessions:  # taken out just before a new session began
                self.metrics.inc("outbox_discarded_on_new_session")
                continue
            if not await self.client.send(event):
                self.metrics.inc("sends_skipped_offline")

    # --- inputs ------------------------------------------------------------------------------

    async def _pump_audio(self, source: AudioInput) -> None:
        assert self.client is not None
        finished: asyncio.Event | None = getattr(source, "finished", None)
        if finished is not None:
            self.tasks.spawn(self._mark_input_done(finished), name="input-done")
        next_level = 0.0
        try:
            async for block in source:
                if self.audio_in is not source:  # a device failed: text mode now
                    return
                self.client.send_audio(block)
                now = time.monotonic()
                if now >= next_level:
                    next_level = now + LEVEL_INTERVAL_S
                    self.view.level(source.level_dbfs)
        except Exception as exc:  # PortAudioError, AudioDeviceError: unplugged, driver gone
            self._device_failed("Microphone", exc)

    # --- audio device failures -----------------------------------------------------------------

    def _on_speaker_error(self, reason: str) -> None:
        self._device_failed("Speaker", reason)

    def _device_failed(self, which: str, reason: object) -> None:
        """A device failed mid-run: one line saying so, then text mode or a clean exit (1).

        Text mode when lines can be typed (a terminal, or given lines) and no file is being
        played or recorded; otherwise the run ends and the transcript is saved as usual.
        """
        if self._device_failure is not None:
            return
        flag = "--input-device" if which == "Microphone" else "--output-device"
        detail = str(reason).strip().rstrip(".") or type(reason).__name__
        self._device_failure = (
            f"{which} stopped: {detail}. Run `voicebot devices list` and pick a device with {flag}."
        )
        log.error("audio_device_failed", device=which.lower(), reason=detail)
        self.metrics.inc("audio_device_failures")
        self.view.error(self._device_failure)
        devices = [d for d in (self.audio_in, self.audio_out) if d is not None]
        self.audio_in = self.audio_out = None  # no handler touches a device from here on
        self.tasks.spawn(self._after_device_failure(devices), name="device-failure")

    async def _after_device_failure(self, devices: list[AudioInput | AudioOutput]) -> None:
        for device in devices:
            with contextlib.suppress(Exception):  # a device that is gone may fail to stop
                await device.stop()
        typing = self.options.text or self.options.text_lines is not None or _stdin_is_terminal()
        if typing and self.options.input_file is None and self.options.output_file is None:
            self.options.text = True  # the end of typed input now ends the run
            self.view.notice("falling back to text mode: type a line and press Enter")
            await self._wait_input_finished()
        else:
            self.exit_code = 1
        self.stop()

    async def _mark_input_done(self, finished: asyncio.Event) -> None:
        await finished.wait()
        self._input_done.set()

    async def _pump_text(self) -> None:
        assert self.client is not None
        lines = self.options.text_lines or _stdin_lines()
        while (line := await lines.get()) is not None:
            text = line.strip()
            if not text:
                continue
            await self.client.wait_connected()
            audible = self.audio_out is not None and self.audio_out.is_audible
            if not self._response_idle.is_set() or audible:
                self._interrupt_for_text()
                await self._response_idle.wait()
            self.metrics.inc("text_turns")
            self.view.user_said(text)
            # Pending until answered: a new session re-sends it if this one loses it.
            self.state.add_typed_turn(text)
            self.send_soon(*self.state.typed_turn_events(self.dialect))
            self._response_idle.clear()
        if self.options.text:  # in voice mode the microphone (or file) is the input
            self._input_done.set()

    def _interrupt_for_text(self) -> None:
        """A typed line while the bot talks: stop it like a spoken barge-in would."""
        item_id = self.state.streaming_item_id
        played = 0.0
        if self.audio_out is not None:
            item_id = self.audio_out.playing_item_id or item_id
            played = self.audio_out.played_ms(item_id) if item_id else 0.0
            self.audio_out.flush()
        sends = self.state.interrupt(played, item_id)
        if sends:
            self.metrics.inc("barge_ins")
            self.metrics.inc("truncations")
        if self.state.active_response_id is not None:
            sends.append(ev.response_cancel())
        self.send_soon(*sends)

    # --- exit conditions -----------------------------------------------------------------------

    async def _watch_exit(self) -> None:
        waits: list[Awaitable[Any]] = []
        if self.options.max_turns is not None:
            waits.append(self._wait_for_turns(self.options.max_turns))
        if self.options.exit_when_input_ends or self.options.text:
            waits.append(self._wait_input_finished())
        if not waits:
            return
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
        self.stop()

    async def _wait_for_turns(self, turns: int) -> None:
        while self.completed_replies < turns:
            self._activity.clear()
            await self._activity.wait()
        await self._wait_playback_done()

    async def _wait_input_finished(self) -> None:
        await self._input_done.wait()
        quiet = max(QUIET_AFTER_INPUT_S, 2 * self.settings.vad_silence_ms / 1000)
        while True:
            await self._response_idle.wait()
            await self._wait_playback_done()
            self._activity.clear()
            try:
                async with asyncio.timeout(quiet):
                    await self._activity.wait()
            except TimeoutError:
                if self.is_idle():
                    return

    async def _wait_playback_done(self) -> None:
        player = self.audio_out
        if player is None:
            return
        item_id = player.playing_item_id
        if item_id is not None:
            await player.wait_finished(item_id)

    # --- metrics -----------------------------------------------------------------------------

    def _record_final_metrics(self) -> dict[str, Any]:
        """Counters kept by the parts (client, devices, state) into `metrics`; the summary."""
        m = self.metrics
        if self.client is not None:
            m.counters["mic_blocks_dropped_offline"] = self.client.audio.dropped_blocks
            m.counters["frames_dropped_parse"] = self.client.parser.stats.dropped
        if self.audio_out is not None:
            m.counters["player_underruns"] = self.audio_out.underruns
        if self.audio_in is not None:
            m.counters["mic_blocks_dropped"] = self.audio_in.dropped_blocks
        m.counters["window_tokens"] = self.state.window_tokens
        if self.runner is not None:
            runner = self.runner.metrics
            m.counters["compaction_failures"] = runner.failures
            m.counters["compactions_abandoned"] = runner.abandoned
            m.counters["summary_fallbacks"] = runner.fallbacks
            m.counters["items_summarized"] = runner.items_summarized
        return m.summary()

    async def _write_metrics_file(self, path: Path, summary: dict[str, Any]) -> None:
        """`--metrics-file`: the summary as JSON, written off the loop."""
        text = json.dumps(summary, indent=2) + "\n"
        try:
            await asyncio.to_thread(path.write_text, text)
        except OSError as exc:
            self.view.error(f"cannot write the metrics file {path}: {exc.strerror or exc}")


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdin
        return False


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Lines typed on stdin, read by a daemon thread (a blocked read never holds up exit)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue(256)

    def put(line: str | None) -> None:
        # Blocks this thread while the queue is full: typed lines wait, none are dropped.
        asyncio.run_coroutine_threadsafe(queue.put(line), loop).result()

    def read() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the run is over
            for line in sys.stdin:  # one line as soon as it is typed, not at end of input
                put(line)
            put(None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return queue
