"""The voice bot: builds the parts from `Settings` and moves data between them.

    microphone -> echo -> RealtimeClient (outbox, one writer) -> server
    server -> RealtimeClient -> SessionCore -> actions -> client outbox, player, tools,
                                                          summaries, timers, view, transcript

`SessionCore` decides everything (barge-in, typed lines, tool calls, compaction, rollover);
this module performs what it returns, feeds it what happens, and owns the lifecycle: start,
the exit conditions, audio device failures, shutdown and the session summary. Nothing slow
runs on the event loop's path: tools and summaries are tasks, the transcript a writer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from realtime_voicebot.audio_io import AudioIO
from realtime_voicebot.background import Background, ChangeSignal
from realtime_voicebot.config import Settings, dialect_problems
from realtime_voicebot.core import CoreConfig, SessionCore
from realtime_voicebot.core import actions as a
from realtime_voicebot.errors import FatalConnectionError, UserError
from realtime_voicebot.files import write_private_text
from realtime_voicebot.inputs import (
    TYPED_AHEAD,
    TYPED_LINES_LIMIT,
    Keyboard,
    stdin_is_terminal,
    stdin_lines,
)
from realtime_voicebot.metrics import LatencyTracker, Metrics, Prices
from realtime_voicebot.presenter import Presenter
from realtime_voicebot.summarization import build_summarizer
from realtime_voicebot.summarization.runner import SummaryRunner
from realtime_voicebot.toolbox import Toolbox
from realtime_voicebot.tools import Tool, ToolRunner
from realtime_voicebot.transcript import (
    TranscriptError,
    TranscriptWriter,
    default_transcript_path,
    load_transcript,
)
from realtime_voicebot.transport import events as ev
from realtime_voicebot.transport.client import (
    ConnectionChanged,
    RealtimeClient,
    SessionStarted,
    TransportEvent,
)
from realtime_voicebot.transport.endpoint import build_endpoint
from realtime_voicebot.ui import ConversationView

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from realtime_voicebot.audio.input import AudioInput
    from realtime_voicebot.audio.output import AudioOutput
    from realtime_voicebot.fake.config import FakeServerConfig
    from realtime_voicebot.fake.server import FakeRealtimeServer
    from realtime_voicebot.summarization.base import Summarizer
    from realtime_voicebot.telemetry import Telemetry
    from realtime_voicebot.tools.mcp import McpToolsChanged

__all__ = ["RunOptions", "UserError", "VoiceBot"]

log = structlog.get_logger(component="app")
QUIET_AFTER_INPUT_S = 1.5
OTEL_MISSING = "telemetry otlp needs OpenTelemetry: pip install 'realtime_voicebot[otel]'"


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
    extra_tools: list[Tool] = field(default_factory=list)
    keyboard: bool = False
    """Read raw keys from the terminal into the live console's input line (instead of
    lines from stdin): nothing typed tears the display; space is the push-to-talk key."""


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
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        """``tracer_provider`` / ``meter_provider``: the OpenTelemetry providers to use when
        telemetry is on (default: built from the ``OTEL_*`` environment)."""
        self.settings = settings
        self.options = options
        self.view = view
        self._summarizer = summarizer
        self.metrics = Metrics()
        self.latency = LatencyTracker(self.metrics, view.latency)
        self.prices = Prices.from_settings(settings)
        self.audio = AudioIO(
            audio_in,
            audio_out,
            self.latency,
            on_failure=self._device_failed,
            on_played_out=self._on_played_out,
            record_path=settings.record_path,
        )
        self.core = SessionCore(CoreConfig.from_settings(settings), playback=self.audio.playback)
        self.client: RealtimeClient | None = None
        self.tool_runner: ToolRunner | None = None
        self.toolbox: Toolbox | None = None
        self.presenter = Presenter(
            view,
            self.latency,
            self.metrics,
            self.prices,
            window_threshold=settings.summary_threshold,
        )
        self.summaries: SummaryRunner | None = None
        self.transcript: TranscriptWriter | None = None
        self.fake_server: FakeRealtimeServer | None = None
        self.changed = ChangeSignal()
        """Notified after each input the core has handled (exit conditions and tests wait on
        it)."""
        self.exit_code = 0
        self.typing = options.text or options.text_lines is not None or stdin_is_terminal()
        self.text_only = options.text
        self.audio.microphone_open = not self.core.config.manual_turns
        self._stop = asyncio.Event()
        self._keys: asyncio.Queue[str | None] | None = None
        self._input_done = asyncio.Event()
        self.background = Background()
        self._core_errors = 0
        self._sessions_started = 0
        self._subscribers: list[Callable[[a.Action], None]] = []
        self._otel_providers = (tracer_provider, meter_provider)
        self.telemetry: Telemetry | None = None

    @property
    def audio_in(self) -> AudioInput | None:
        return self.audio.audio_in

    @property
    def audio_out(self) -> AudioOutput | None:
        return self.audio.audio_out

    def subscribe(self, callback: Callable[[a.Action], None]) -> None:
        """Call ``callback`` with every action the core returns, after it is performed
        (tracing, recording, tests). It must return at once; if it raises, the error is
        logged and counted and the conversation goes on."""
        self._subscribers.append(callback)

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until Ctrl-C, the end of input, --max-turns, or a fatal error; the exit code."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self.stop)
        keyboard = self._open_keyboard() if self.options.keyboard else None
        try:
            await self._start()
            await self._serve()
        except UserError as exc:
            self.view.error(str(exc))
            self.exit_code = 2
        finally:
            if keyboard is not None:
                keyboard.close()
            await self._shutdown()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
        return self.exit_code

    def stop(self) -> None:
        self._stop.set()

    def _open_keyboard(self) -> Keyboard:
        """The live console's input line, from the very start (keys typed early are not
        echoed by the terminal under the display either)."""
        self._keys = asyncio.Queue(TYPED_LINES_LIMIT)
        talk = self.push_to_talk if self.core.config.manual_turns else None
        keyboard = Keyboard(self._typed_key_line, self.view.input_line, talk)
        keyboard.open()
        return keyboard

    def _typed_key_line(self, line: str) -> None:
        assert self._keys is not None
        try:
            self._keys.put_nowait(line)
        except asyncio.QueueFull:  # hundreds of lines typed while offline
            self.view.error(f"{TYPED_LINES_LIMIT} lines are already waiting: this one was not sent")

    def push_to_talk(self) -> None:
        """The push-to-talk key: starts the user's turn, or ends it."""
        self._feed(self.core.push_to_talk())

    async def _start(self) -> None:
        settings = self.settings
        problems = dialect_problems(settings)  # one line each, before anything starts
        if problems:
            for problem in problems[:-1]:
                self.view.error(problem)
            raise UserError(problems[-1])
        if self.options.fake_server:
            from realtime_voicebot.fake.server import serve_for

            self.fake_server, settings = await serve_for(settings, self.options.fake_server_config)
            self.settings = settings
            self.view.notice(f"fake Realtime server at {self.fake_server.url}")
        problems = dialect_problems(settings)
        if problems:
            raise UserError("; ".join(problems))
        endpoint = build_endpoint(settings)
        self._open_transcript()
        self._open_optional_shells()
        summarizer = self._summarizer or build_summarizer(
            settings, offline=self.options.fake_server
        )
        self.summaries = SummaryRunner(summarizer, timeout_s=settings.summary_timeout_s)
        toolbox = self.toolbox = Toolbox(
            settings, self.options.extra_tools, on_tools_changed=self._tools_changed
        )
        for problem in await toolbox.start():  # one line per MCP server that did not start
            self.view.error(problem)
        self.tool_runner = toolbox.runner
        self.presenter.tools.mcp_servers = toolbox.mcp_server_names()
        for listing in toolbox.listings():
            if listing.problem is None:
                self.view.tools_listed(listing)
        dialect, flags = settings.dialect, self.core.config.session_turn_flags
        self.client = RealtimeClient(
            settings,
            endpoint,
            self._on_transport,
            # built at each handshake: the tools on offer now
            session_update=lambda: ev.session_update(
                settings, dialect, tools=toolbox.specs(), **flags
            ),
        )
        if self.options.resume is not None:
            try:
                summary, turns = load_transcript(self.options.resume)
            except TranscriptError as exc:
                raise UserError(str(exc)) from None
            self.core.restore(summary, turns)
            self.view.notice(f"resuming {self.options.resume} ({len(turns)} turns)")
        await self._open_audio()

    async def _open_audio(self) -> None:
        """Build and start the audio devices; without usable ones, fall back to text mode."""
        from realtime_voicebot.audio.build import build_audio
        from realtime_voicebot.audio.devices import AudioUnavailableError
        from realtime_voicebot.audio.recording import RecordingError

        options, audio = self.options, self.audio
        try:
            if audio.audio_out is None and audio.audio_in is None:
                audio.audio_in, audio.audio_out = build_audio(
                    self.settings,
                    text=options.text,
                    input_file=options.input_file,
                    output_file=options.output_file,
                    input_pace=options.input_pace,
                    output_pace=options.output_pace,
                )
            await audio.start()
        except AudioUnavailableError as exc:
            if options.input_file is not None or options.output_file is not None:
                raise UserError(str(exc)) from None
            await audio.close()
            self.text_only = self.typing = True
            self.view.notice(f"{exc} -- falling back to text mode: type a line and press Enter")
        except RecordingError as exc:
            await audio.close()
            raise UserError(f"{exc} (or run without --record)") from None
        if (echo := audio.echo_status) is not None:
            self.view.notice(echo)
        if audio.recorder is not None:
            self.view.notice(f"recording to {audio.recorder.path}")
        elif self.settings.record_path is not None:
            self.view.notice("nothing to record without a microphone or a speaker (text mode)")

    def _open_optional_shells(self) -> None:
        """The shells that only a setting brings in, fed by `subscribe` (and the latency
        samples): `telemetry: otlp`. Off, nothing of them is imported."""
        if self.settings.telemetry != "off":
            try:
                from realtime_voicebot.telemetry import Telemetry
            except ImportError as exc:  # the [otel] extra is not installed
                if not (exc.name or "").startswith("opentelemetry"):
                    raise
                raise UserError(OTEL_MISSING) from None
            tracer_provider, meter_provider = self._otel_providers
            self.telemetry = Telemetry.start(
                self.settings,
                self.prices,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
            )
            self.subscribe(self.telemetry.on_action)
            self.latency.add_listener(self.telemetry.on_latency)

    def _open_transcript(self) -> None:
        from realtime_voicebot.redact import redact

        path = self.settings.transcript_path or default_transcript_path()
        try:
            self.transcript = TranscriptWriter(
                path, redact=redact if self.settings.redact_transcript else None
            )
        except OSError as exc:  # a planted link, a folder, no permission
            raise UserError(f"cannot write the transcript {path}: {exc.strerror or exc}") from None
        log.info("transcript", path=str(path))

    async def _serve(self) -> None:
        assert self.client is not None
        client_task = asyncio.create_task(self.client.run(), name="client")
        workers = [asyncio.create_task(self._watch_exit(), name="exit-watch")]
        if self.audio.audio_in is not None:
            workers.append(asyncio.create_task(self._pump_audio(), name="audio-in"))
        if self.typing:  # typed lines are text turns in voice mode too
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
            client_task.cancel()
            await asyncio.gather(client_task, return_exceptions=True)

    async def _shutdown(self) -> None:
        """Every step runs even when one before it failed (the metrics file above all)."""
        steps = [self.background.aclose()]
        if self.toolbox is not None:
            steps.append(self.toolbox.aclose())
        steps += [self.audio.close(), self._close_transcript()]
        if self.fake_server is not None:
            steps.append(self.fake_server.stop())
        for step in steps:
            try:
                await step
            except Exception:  # a bug: logged, and the summary is still written
                log.exception("shutdown_step_failed")
        summary = self.summary()
        if self.settings.metrics_file is not None:
            await self._write_metrics_file(self.settings.metrics_file, summary)
        if self._sessions_started:
            self.view.summary(summary)
        self.view.close()
        if self.telemetry is not None:  # last: an unreachable collector may take seconds
            await self.telemetry.aclose()

    async def _close_transcript(self) -> None:
        self._perform(self.core.flush_records())
        if self.transcript is not None:
            await self.transcript.aclose()

    # --- feeding the core ------------------------------------------------------------------

    def _on_transport(self, event: TransportEvent) -> None:
        try:
            if isinstance(event, SessionStarted):
                self._sessions_started += 1
                actions = self.core.session_started(event.number, event.reason, event.lifetime_s)
            elif isinstance(event, ConnectionChanged):
                actions = self.core.connection_changed(event.state.value, event.detail)
            else:
                actions = self.core.server_event(event)
        except Exception:  # a bug in the core: logged with its traceback, the loop goes on
            self._core_errors += 1
            log.exception("core_failed", event=type(event).__name__)
            return
        self._feed(actions)

    def _feed(self, actions: list[a.Action]) -> None:
        """Perform what the core returned, then wake whoever waits for a change."""
        self._perform(actions)
        for callback in self._subscribers:
            try:
                for action in actions:
                    callback(action)
            except Exception:  # a bug in a subscriber: logged, never fatal to the conversation
                self._core_errors += 1
                log.exception("subscriber_failed")
        self.changed.notify()

    def _perform(self, actions: list[a.Action]) -> None:
        for action in actions:
            match action:
                case a.Send(event):
                    assert self.client is not None
                    self.client.send(event)
                case a.PlayAudio(item_id, pcm):
                    self.audio.play(item_id, pcm)
                case a.EndAudio(item_id):
                    self.audio.end(item_id)
                case a.StopPlayback():
                    self._silence(self.audio.stop_playback)
                case a.PausePlayback():
                    self._silence(self.audio.pause_playback)
                case a.ResumePlayback():
                    self.audio.resume_playback()
                case a.OpenMicrophone():
                    self.audio.microphone_open = True
                case a.CloseMicrophone():
                    self.audio.microphone_open = False
                case a.RunTool(call_id, name, arguments):
                    tool = self._run_tool(call_id, name, arguments)
                    self.background.spawn(tool, f"tool:{name}", key=("tool", call_id))
                case a.CancelTool(call_id):
                    self.background.cancel(("tool", call_id))
                case a.Summarize():
                    self.background.spawn(self._summarize(action), "summary")
                case a.StartTimer(key, seconds):
                    self.background.call_later(key, seconds, partial(self._timer_fired, key))
                case a.RollOver() if self.client is not None:
                    self.client.roll_over()
                case a.Reconnect(reason) if self.client is not None:
                    self.client.reconnect(reason)
                case a.Record(record) if self.transcript is not None:
                    self.transcript.write(record)
                case a.SessionBegan(reason=reason) if reason != "start":
                    self.background.spawn(self._refresh_tools(), "mcp-refresh")
                    self.presenter.show(action)
                case _:
                    self.presenter.show(action)

    # --- performing --------------------------------------------------------------------------

    def _silence(self, how: Callable[[], None]) -> None:
        """Stop or pause the reply; latency `barge_in_to_silence` from here to its last sample."""
        audible = self.audio.playback().audible
        silenced_at = self.presenter.silenced_at = time.monotonic()
        how()
        if audible:
            self.background.spawn(self.audio.watch_silence(silenced_at), "silence-watch")

    def _on_played_out(self, item_id: str) -> None:
        self._feed(self.core.playback_finished(item_id))

    async def _run_tool(self, call_id: str, name: str | None, arguments: str) -> None:
        assert self.tool_runner is not None
        result = await self.tool_runner.run(name, arguments, call_id)
        self._feed(self.core.tool_finished(call_id, result))

    async def _refresh_tools(self) -> None:
        """A new session: MCP servers that stopped are started again (their tools come back
        through `_tools_changed`)."""
        if self.toolbox is not None:
            for problem in await self.toolbox.refresh():
                self.view.notice(problem)

    def _tools_changed(self, change: McpToolsChanged) -> None:
        """An MCP server's tools changed: the live session gets the new list."""
        added = f" added {', '.join(change.added)}" if change.added else ""
        removed = f" removed {', '.join(change.removed)}" if change.removed else ""
        self.view.notice(f"MCP server {change.server}: tools changed;{added}{removed}")
        if self.toolbox is not None:
            self._feed(self.core.tools_changed(self.toolbox.specs()))

    async def _send_image(self, target: str, question: str | None) -> None:
        from realtime_voicebot.image_input import ImageInputError, load_image

        try:
            image = await load_image(target, question, self.settings)
        except ImageInputError as exc:
            self._feed([a.ErrorReported("image_refused", str(exc))])
            return
        self._feed(self.core.image(image))

    async def _summarize(self, request: a.Summarize) -> None:
        assert self.summaries is not None
        text, fallback = await self.summaries.summarize(
            request.inputs, request.previous_summary, request.language
        )
        fallback = fallback or request.fallback
        self._feed(self.core.summary_ready(request.job_id, text, fallback))

    def _timer_fired(self, key: Hashable) -> None:
        self._feed(self.core.timer_fired(key))

    # --- inputs ------------------------------------------------------------------------------

    async def _pump_audio(self) -> None:
        assert self.client is not None
        finished: asyncio.Event | None = getattr(self.audio.audio_in, "finished", None)
        if finished is not None:
            self.background.spawn(self._mark_input_done(finished), "input-done")
        await self.audio.stream_microphone(self.client.send_audio, self.view.level)

    async def _mark_input_done(self, finished: asyncio.Event) -> None:
        await finished.wait()
        self._input_done.set()

    async def _pump_text(self) -> None:
        push_to_talk = self.core.config.manual_turns and not self.text_only
        lines = self.options.text_lines or self._keys or stdin_lines()
        while (line := await lines.get()) is not None:
            if line.strip():
                self.typed(line.strip())
                # Typed far ahead (or piped in): past TYPED_AHEAD lines not sent yet, the
                # next waits in the bounded input queue, so lines never pile up in the core.
                await self.until(lambda: self.core.turns.typed_unsent < TYPED_AHEAD)
            elif push_to_talk and self._keys is None:  # Enter on an empty line: the talk key
                self.push_to_talk()
        if self.text_only:  # in voice mode the microphone (or file) is the input
            self._input_done.set()

    def typed(self, line: str) -> None:
        """A line the user typed: ``/image ...`` is read here (off the loop) and then sent
        by the core; anything else (``y``/``n`` for a hosted MCP approval included) goes to
        the core as it is."""
        from realtime_voicebot.core.images import GA_ONLY
        from realtime_voicebot.image_input import ImageInputError, parse_image_command

        try:
            command = parse_image_command(line)
        except ImageInputError as exc:
            self._feed([a.ErrorReported("image_refused", str(exc))])
            return
        if command is None:
            self._feed(self.core.typed_line(line))
        elif self.settings.dialect != "ga":
            self._feed([a.ErrorReported("image_needs_ga", GA_ONLY)])
        else:
            self.background.spawn(self._send_image(*command), "image")

    # --- audio device failures -----------------------------------------------------------------

    def _device_failed(self, message: str) -> None:
        """A device failed mid-run: one line saying so, then text mode or a clean exit (1).

        Text mode when lines can be typed (a terminal, or given lines) and no file is being
        played or recorded; otherwise the run ends and the transcript is saved as usual.
        """
        self.view.error(message)
        self.background.spawn(self._after_device_failure(), "device-failure")

    async def _after_device_failure(self) -> None:
        await self.audio.close()
        files = self.options.input_file is not None or self.options.output_file is not None
        if self.typing and not files:
            self.text_only = True  # the end of typed input now ends the run
            self.view.notice("falling back to text mode: type a line and press Enter")
            await self._wait_input_finished()
        else:
            self.exit_code = 1
        self.stop()

    # --- exit conditions -----------------------------------------------------------------------

    async def until(self, predicate: Callable[[], object], timeout_s: float | None = None) -> None:
        """Wait until ``predicate()`` holds, re-checked after each input the core handled."""
        await self.changed.until(predicate, timeout_s)

    async def _watch_exit(self) -> None:
        waits = []
        if self.options.max_turns is not None:
            waits.append(self._wait_for_replies(self.options.max_turns))
        if self.options.exit_when_input_ends or self.text_only:
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

    async def _wait_for_replies(self, replies: int) -> None:
        await self.until(lambda: self.core.stats.completed_replies >= replies)
        await self.audio.played_out()

    async def _wait_input_finished(self) -> None:
        """The input ended (file, typed lines): wait for the last reply, then a quiet spell."""
        await self._input_done.wait()
        quiet = max(QUIET_AFTER_INPUT_S, 2 * self.settings.vad_silence_ms / 1000)
        while True:
            await self.until(lambda: not self.core.turns.reply_owed)
            await self.audio.played_out()
            try:
                await asyncio.wait_for(self.changed.wait(), quiet)
            except TimeoutError:
                if self.core.turns.idle():
                    return

    # --- the session summary ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Counters of every part, by part."""
        parts: dict[str, dict[str, Any]] = {
            "core": self.core.snapshot(),
            "app": {
                "audio_device_failures": int(self.audio.failure is not None),
                "task_failures": self.background.failures,
                "core_errors": self._core_errors,
                "sessions_started": self._sessions_started,
            },
        }
        if self.client is not None:
            parts["client"] = self.client.snapshot()
        if self.toolbox is not None:
            parts.update(self.toolbox.snapshot())  # tools (per tool) and mcp (per server)
        if self.transcript is not None:
            parts["transcript"] = {
                "written": self.transcript.written,
                "dropped": self.transcript.dropped,
            }
        return {**parts, **self.audio.snapshot()}

    def summary(self) -> dict[str, Any]:
        return self.metrics.summary(self.snapshot())

    async def _write_metrics_file(self, path: Path, summary: dict[str, Any]) -> None:
        """`--metrics-file`: the summary as JSON, written off the loop."""
        text = json.dumps(summary, indent=2) + "\n"
        try:
            await asyncio.to_thread(write_private_text, path, text)
        except OSError as exc:
            self.view.error(f"cannot write the metrics file {path}: {exc.strerror or exc}")
