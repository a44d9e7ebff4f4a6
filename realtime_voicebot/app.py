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
from realtime_voicebot.config import Settings
from realtime_voicebot.core import CoreConfig, SessionCore
from realtime_voicebot.core import actions as a
from realtime_voicebot.errors import FatalConnectionError, UserError
from realtime_voicebot.inputs import stdin_is_terminal, stdin_lines
from realtime_voicebot.metrics import LatencyTracker, Metrics, Prices
from realtime_voicebot.summarization import build_summarizer
from realtime_voicebot.summarization.runner import SummaryRunner
from realtime_voicebot.tools import Tool, ToolRunner
from realtime_voicebot.tools.builtin import build_registry
from realtime_voicebot.transcript import TranscriptWriter, default_transcript_path, load_transcript
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
    from realtime_voicebot.audio.input import AudioInput
    from realtime_voicebot.audio.output import AudioOutput
    from realtime_voicebot.fake.config import FakeServerConfig
    from realtime_voicebot.fake.server import FakeRealtimeServer
    from realtime_voicebot.summarization.base import Summarizer

__all__ = ["RunOptions", "UserError", "VoiceBot"]

log = structlog.get_logger(component="app")
QUIET_AFTER_INPUT_S = 1.5


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
        )
        self.core = SessionCore(CoreConfig.from_settings(settings), playback=self.audio.playback)
        self.client: RealtimeClient | None = None
        self.tool_runner: ToolRunner | None = None
        self.summaries: SummaryRunner | None = None
        self.transcript: TranscriptWriter | None = None
        self.fake_server: FakeRealtimeServer | None = None
        self.changed = ChangeSignal()
        """Notified after each input the core has handled (exit conditions and tests wait on
        it)."""
        self.exit_code = 0
        self.typing = options.text or options.text_lines is not None or stdin_is_terminal()
        self.text_only = options.text
        self._stop = asyncio.Event()
        self._input_done = asyncio.Event()
        self.background = Background()
        self._core_errors = 0
        self._sessions_started = 0
        self._subscribers: list[Callable[[a.Action], None]] = []

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
            from realtime_voicebot.fake.server import serve_for

            self.fake_server, settings = await serve_for(settings, self.options.fake_server_config)
            self.settings = settings
            self.view.notice(f"fake Realtime server at {self.fake_server.url}")
        try:
            endpoint = build_endpoint(settings)
        except Exception as exc:  # EndpointError: a message for the user
            raise UserError(str(exc)) from None
        self._open_transcript()
        summarizer = self._summarizer or build_summarizer(
            settings, offline=self.options.fake_server
        )
        self.summaries = SummaryRunner(summarizer, timeout_s=settings.summary_timeout_s)
        registry = build_registry(settings)
        for tool in self.options.extra_tools:
            registry.add(tool)
        self.tool_runner = ToolRunner(registry, settings.tool_timeout_s)
        specs = registry.specs() or None
        dialect = settings.dialect
        self.client = RealtimeClient(
            settings,
            endpoint,
            self._on_transport,
            session_update=lambda: ev.session_update(settings, dialect, tools=specs),
        )
        if self.options.resume is not None:
            summary, turns = load_transcript(self.options.resume)
            self.core.restore(summary, turns)
            self.view.notice(f"resuming {self.options.resume} ({len(turns)} turns)")
        await self._open_audio()

    async def _open_audio(self) -> None:
        """Build and start the audio devices; without usable ones, fall back to text mode."""
        from realtime_voicebot.audio.build import build_audio
        from realtime_voicebot.audio.devices import AudioUnavailableError

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

    def _open_transcript(self) -> None:
        from realtime_voicebot.redact import redact

        path = self.settings.transcript_path or default_transcript_path()
        self.transcript = TranscriptWriter(
            path, redact=redact if self.settings.redact_transcript else None
        )
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
        await self.background.aclose()
        await self.audio.close()
        self._perform(self.core.flush_records())
        if self.transcript is not None:
            await self.transcript.aclose()
        if self.fake_server is not None:
            await self.fake_server.stop()
        summary = self.summary()
        if self.settings.metrics_file is not None:
            await self._write_metrics_file(self.settings.metrics_file, summary)
        if self._sessions_started:
            self.view.summary(summary)
        self.view.close()

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
                    self.audio.stop_playback()
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
                case _:
                    self._show(action)

    def _show(self, action: a.Action) -> None:
        """What happened, to the view and the latency clock."""
        view = self.view
        match action:
            case a.StatusChanged(status):
                view.status(status)
            case a.UserTurn(text):
                view.user_said(text)
            case a.SpeechEnded():
                self.latency.speech_ended()
            case a.ReplyStarted(item_id):
                self.latency.reply_started(item_id)
            case a.ReplyDelta(item_id, text):
                view.assistant_delta(item_id, text)
            case a.ReplyDone(item_id, text, truncated):
                view.assistant_done(item_id, text, truncated)
            case a.BargeIn():
                decided_at = time.monotonic()
                self.latency.barge_in_flushed(decided_at)
                self.background.spawn(self.audio.watch_silence(decided_at), "silence-watch")
            case a.ResponseFinished(usage=usage, window_tokens=window) if usage is not None:
                self.metrics.add_usage(usage, self.prices)
                view.cost(self.metrics.cost_usd)
                view.window(window, self.settings.summary_threshold)
            case a.OutOfBandFinished(usage=usage) if usage is not None:
                self.metrics.add_usage(usage, self.prices)  # the session's summary is billed too
                view.cost(self.metrics.cost_usd)
            case a.Compacted(items=items, summary_chars=chars):
                view.compaction(items, chars)
            case a.SessionBegan(reason=reason) if reason != "start":
                view.window(0, self.settings.summary_threshold)
            case a.Notice(text):
                view.notice(text)
            case a.ErrorReported(text=text) if text is not None:
                view.error(text)

    # --- performing --------------------------------------------------------------------------

    def _on_played_out(self, item_id: str) -> None:
        self._feed(self.core.playback_finished(item_id))

    async def _run_tool(self, call_id: str, name: str | None, arguments: str) -> None:
        assert self.tool_runner is not None
        result = await self.tool_runner.run(name, arguments, call_id)
        self._feed(self.core.tool_finished(call_id, result))

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
        lines = self.options.text_lines or stdin_lines()
        while (line := await lines.get()) is not None:
            if line.strip():
                self._feed(self.core.typed_line(line.strip()))
        if self.text_only:  # in voice mode the microphone (or file) is the input
            self._input_done.set()

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
        if self.tool_runner is not None:
            parts["tools"] = self.tool_runner.stats.snapshot()
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
            await asyncio.to_thread(path.write_text, text)
        except OSError as exc:
            self.view.error(f"cannot write the metrics file {path}: {exc.strerror or exc}")
