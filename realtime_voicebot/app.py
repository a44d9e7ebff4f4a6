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
from realtime_voicebot.handlers.tools import ToolCallHandler, build_registry
from realtime_voicebot.metrics import Metrics
from realtime_voicebot.state.conversation import ConversationState
from realtime_voicebot.state.policy import CompactionPolicy
from realtime_voicebot.summarization import build_summarizer
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
    """Typed lines (None = end of input); stdin when not given in text mode."""
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
        self._outbox: asyncio.Queue[JSON] = asyncio.Queue(OUTBOX_LIMIT)
        self._stop = asyncio.Event()
        self._activity = asyncio.Event()
        self._response_idle = asyncio.Event()
        self._response_idle.set()
        self._speech_stopped_at: float | None = None
        self._first_delta_seen: set[str] = set()
        self._first_delta_at: dict[str, float] = {}
        """Arrival of each item's first audio delta, until its first sample plays."""
        self._input_done = asyncio.Event()

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
        from realtime_voicebot.audio.devices import AudioUnavailableError

        try:
            if self.audio_out is None and self.audio_in is None:
                self.audio_in, self.audio_out = build_audio(self.settings, self.options)
            if self.audio_out is not None:
                self.audio_out.on_item_started = self._on_playback_started
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
        if self.options.text:
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
        self._record_final_metrics()
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
            self.metrics.observe("barge_in_flush", time.monotonic() - started)
            self.tasks.spawn(self._observe_silence(player, started), name="silence-watch")
            log.info("barge_in", item_id=item_id, played_ms=round(played_ms), events=len(sends))

    async def _observe_silence(self, player: AudioOutput, started: float) -> None:
        """Metric `barge_in_to_silence`: speech_started handled -> the reply's last sample
        handed to the device (the end of the flush's fade, stamped in the device callback)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                silenced_at = await player.wait_silenced()
                if silenced_at is not None:
                    self.metrics.observe("barge_in_to_silence", max(0.0, silenced_at - started))

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
            self._first_delta_seen.add(item_id)
            self._first_delta_at[item_id] = time.monotonic()
            if len(self._first_delta_at) > 64:  # items flushed before they ever played
                del self._first_delta_at[next(iter(self._first_delta_at))]
            if self._speech_stopped_at is not None:
                self.metrics.observe(
                    "speech_end_to_first_delta", time.monotonic() - self._speech_stopped_at
                )
                self._speech_stopped_at = None
        if self.audio_out is not None:
            self.audio_out.write(item_id, base64.b64decode(event.get("delta") or ""))
            self.view.status("speaking")

    def _on_playback_started(self, item_id: str, first_sample_at: float) -> None:
        """Metric `first_delta_to_first_sample`: a reply's first delta arriving -> its first
        sample handed to the device (jitter buffer plus waiting for the next device block)."""
        arrived = self._first_delta_at.pop(item_id, None)
        if arrived is not None:
            self.metrics.observe("first_delta_to_first_sample", max(0.0, first_sample_at - arrived))

    def _on_audio_done(self, event: ServerEvent) -> None:
        if self.audio_out is not None and event.item_id is not None:
            self.audio_out.end_item(event.item_id)

    def _on_transcript_delta(self, event: ServerEvent) -> None:
        if event.item_id is not None and self.state.should_play(event):
            self.view.assistant_delta(event.item_id, str(event.get("delta") or ""))

    def _on_response_created(self, event: ServerEvent) -> None:
        self._response_idle.clear()

    def _on_response_done(self, event: ServerEvent) -> None:
        response = event.get("response") or {}
        status = response.get("status")
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
                self.view.assistant_done(item_id, item.spoken_text, item.truncated)
                if status == "completed":
                    self.completed_replies += 1
        self.metrics.inc(f"responses_{status or 'unknown'}")
        self._cost(response.get("usage") or {})
        self._response_idle.set()
        self.view.status("listening")
        assert self.runner is not None
        self.runner.maybe_start()

    def _on_error(self, event: ServerEvent) -> None:
        error = event.get("error") or {}
        code = str(error.get("code") or error.get("type") or "unknown")
        self.metrics.inc(f"error_{code}")
        if code in EXPECTED_ERRORS:
            log.debug("server_error_expected", code=code)
            return
        log.warning("server_error", code=code, message=error.get("message"))
        self.view.error(f"server: {error.get('message', code)}")

    def _on_record(self, record: JSON) -> None:
        if self.transcript is not None:
            self.transcript.write(record)

    def _on_summary(self, text: str, item_count: int) -> None:
        self.metrics.inc("compactions")
        self.view.notice(f"compacted {item_count} items into a summary ({len(text)} chars)")

    def _cost(self, usage: JSON) -> None:
        self.metrics.inc("input_tokens", int(usage.get("input_tokens") or 0))
        self.metrics.inc("output_tokens", int(usage.get("output_tokens") or 0))

    # --- sessions ----------------------------------------------------------------------------

    async def _on_session_ready(self, info: SessionInfo) -> None:
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
        assert self.client is not None
        for seed in self.state.seed_events(self.dialect):
            await self.client.send(seed)

    def _on_connection_state(self, state: ConnectionState, detail: str) -> None:
        self.view.status(state.value)
        if state is ConnectionState.RECONNECTING:
            self.view.notice(f"connection lost: {detail}")

    def is_idle(self) -> bool:
        """No reply running or playing and the user not speaking: a safe moment to roll over."""
        playing = self.audio_out is not None and self.audio_out.is_audible
        return self.state.active_response_id is None and not self.user_speaking and not playing

    # --- sending -----------------------------------------------------------------------------

    def send_soon(self, *events: JSON) -> None:
        """Queue client events for the sender task, in order; never blocks."""
        for event in events:
            try:
                self._outbox.put_nowait(event)
            except asyncio.QueueFull:
                self.metrics.inc("outbox_dropped")
                log.warning("outbox_full", event_type=event.get("type"))

    async def _send_now(self, event: JSON) -> None:
        self.send_soon(event)

    async def _drain_outbox(self) -> None:
        assert self.client is not None
        while True:
            event = await self._outbox.get()
            if not await self.client.send(event):
                self.metrics.inc("sends_skipped_offline")

    # --- inputs ------------------------------------------------------------------------------

    async def _pump_audio(self, source: AudioInput) -> None:
        assert self.client is not None
        finished: asyncio.Event | None = getattr(source, "finished", None)
        if finished is not None:
            self.tasks.spawn(self._mark_input_done(finished), name="input-done")
        async for block in source:
            self.client.send_audio(block)

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
            if not self._response_idle.is_set():
                self._interrupt_for_text()
                await self._response_idle.wait()
            self.metrics.inc("text_turns")
            self.send_soon(ev.message_create("user", text, self.dialect), ev.response_create())
            self._response_idle.clear()
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

    def _record_final_metrics(self) -> None:
        m = self.metrics
        if self.client is not None:
            m.counters["reconnects_client"] = self.client.stats.reconnects
            m.counters["rollovers_client"] = self.client.stats.rollovers
            m.counters["mic_blocks_dropped_offline"] = self.client.audio.dropped_blocks
            m.counters["frames_dropped_parse"] = self.client.parser.stats.dropped
        if self.audio_out is not None:
            m.counters["player_underruns"] = self.audio_out.underruns
        if self.audio_in is not None:
            m.counters["mic_blocks_dropped"] = self.audio_in.dropped_blocks
        m.counters["window_tokens"] = self.state.window_tokens
        if self.settings.metrics_file is not None:
            self.settings.metrics_file.write_text(json.dumps(m.summary(), indent=2))


def build_audio(
    settings: Settings, options: RunOptions
) -> tuple[AudioInput | None, AudioOutput | None]:
    """The input and output the options ask for: files, devices, or none in text mode.

    Raises AudioUnavailableError when a device is asked for and cannot be had.
    """
    from realtime_voicebot.audio.devices import resolve_device
    from realtime_voicebot.audio.echo import make_echo_processor
    from realtime_voicebot.audio.files import WavFileInput
    from realtime_voicebot.audio.input import MicrophoneInput
    from realtime_voicebot.audio.output import SoundDevicePlayer, WavFilePlayer

    player_options: dict[str, Any] = {
        "jitter_ms": settings.jitter_ms,
        "latency_compensation": settings.output_latency_compensation,
    }
    audio_out: AudioOutput | None = None
    if options.output_file is not None:
        audio_out = WavFilePlayer(
            options.output_file,
            block_ms=settings.chunk_ms,
            pace=options.output_pace,
            **player_options,
        )
    elif not options.text and options.input_file is None:
        device = resolve_device(settings.output_device, "output")
        audio_out = SoundDevicePlayer(device, block_ms=settings.chunk_ms, **player_options)

    audio_in: AudioInput | None = None
    if options.input_file is not None:
        audio_in = WavFileInput(
            options.input_file, chunk_ms=settings.chunk_ms, pace=options.input_pace
        )
    elif not options.text:
        device = resolve_device(settings.input_device, "input")
        echo = make_echo_processor(settings.echo, audio_out.tap) if audio_out else None
        audio_in = MicrophoneInput(device, chunk_ms=settings.chunk_ms, echo=echo)
    return audio_in, audio_out


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
