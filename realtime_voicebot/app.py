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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import SecretStr

from realtime_voicebot.config import Settings
from realtime_voicebot.core import CoreConfig, Playback, SessionCore
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
    from realtime_voicebot.fake.server import FakeRealtimeServer, FakeServerConfig
    from realtime_voicebot.summarization.base import Summarizer

__all__ = ["RunOptions", "UserError", "VoiceBot"]

log = structlog.get_logger(component="app")
QUIET_AFTER_INPUT_S = 1.5
LEVEL_INTERVAL_S = 0.1
"""How often the microphone level is passed to the view."""


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


class ChangeSignal:
    """Wakes every waiter on `notify` (synchronous, no task); `until` re-checks a condition."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    async def until(self, predicate: Callable[[], object], timeout_s: float | None = None) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await self.wait()


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
        self.audio_in = audio_in
        self.audio_out = audio_out
        self._summarizer = summarizer
        self.metrics = Metrics()
        self.latency = LatencyTracker(self.metrics, view.latency)
        self.prices = Prices.from_settings(settings)
        self.core = SessionCore(CoreConfig.from_settings(settings), playback=self._playback)
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
        self.device_failure: str | None = None
        """The one-line message of the audio device that failed mid-run, if one did."""
        self.text_only = options.text
        self._stop = asyncio.Event()
        self._input_done = asyncio.Event()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._tool_tasks: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._task_failures = 0
        self._core_errors = 0
        self._sessions_started = 0
        self._subscribers: list[Callable[[a.Action], None]] = []

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
            settings = self.settings = await self._start_fake_server(settings)
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

        options = self.options
        try:
            if self.audio_out is None and self.audio_in is None:
                self.audio_in, self.audio_out = build_audio(
                    self.settings,
                    text=options.text,
                    input_file=options.input_file,
                    output_file=options.output_file,
                    input_pace=options.input_pace,
                    output_pace=options.output_pace,
                )
            if self.audio_out is not None:
                self.audio_out.on_item_started = self.latency.first_sample
                self.audio_out.on_item_finished = self._on_playback_finished
                self.audio_out.on_device_error = lambda reason: self._device_failed(
                    "Speaker", reason
                )
                await self.audio_out.start()
            if self.audio_in is not None:
                await self.audio_in.start()
        except AudioUnavailableError as exc:
            if options.input_file is not None or options.output_file is not None:
                raise UserError(str(exc)) from None
            await self._close_devices()
            self.text_only = self.typing = True
            self.view.notice(f"{exc} -- falling back to text mode: type a line and press Enter")

    async def _start_fake_server(self, settings: Settings) -> Settings:
        from realtime_voicebot.fake.server import FakeRealtimeServer, FakeServerConfig

        self.fake_server = FakeRealtimeServer(self.options.fake_server_config or FakeServerConfig())
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
        if self.audio_in is not None:
            workers.append(asyncio.create_task(self._pump_audio(self.audio_in), name="audio-in"))
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
        for timer in self._timers.values():
            timer.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_devices()
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

    def _playback(self) -> Playback:
        player = self.audio_out
        if player is None:
            return Playback()
        item_id = player.playing_item_id or player.head_item_id
        played = player.played_ms(item_id) if item_id is not None else 0.0
        return Playback(item_id, played, player.is_audible, has_output=True)

    def _perform(self, actions: list[a.Action]) -> None:
        for action in actions:
            match action:
                case a.Send(event):
                    assert self.client is not None
                    self.client.send(event)
                case a.PlayAudio(item_id, pcm):
                    self._play(item_id, pcm)
                case a.EndAudio(item_id) if self.audio_out is not None:
                    self.audio_out.end_item(item_id)
                case a.StopPlayback() if self.audio_out is not None:
                    self.audio_out.flush()
                case a.RunTool(call_id, name, arguments):
                    self._tool_tasks[call_id] = self._spawn(
                        self._run_tool(call_id, name, arguments), f"tool:{name}"
                    )
                case a.CancelTool(call_id) if call_id in self._tool_tasks:
                    self._tool_tasks.pop(call_id).cancel()
                case a.Summarize():
                    self._spawn(self._summarize(action), "summary")
                case a.StartTimer(key, seconds):
                    self._start_timer(key, seconds)
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
                self._barge_in_done(time.monotonic())
            case a.ResponseFinished(usage=usage, window_tokens=window) if usage is not None:
                self.metrics.add_usage(usage, self.prices)
                view.cost(self.metrics.cost_usd)
                view.window(window, self.settings.summary_threshold)
            case a.Compacted(items=items, summary_chars=chars):
                view.compaction(items, chars)
            case a.SessionBegan(reason=reason) if reason != "start":
                view.window(0, self.settings.summary_threshold)
            case a.Notice(text):
                view.notice(text)
            case a.ErrorReported(text=text) if text is not None:
                view.error(text)

    # --- performing --------------------------------------------------------------------------

    def _play(self, item_id: str, pcm: bytes) -> None:
        if self.audio_out is None:
            return
        try:
            self.audio_out.write(item_id, pcm)
        except Exception as exc:  # PortAudioError, OSError: the device is gone
            self._device_failed("Speaker", exc)

    def _barge_in_done(self, decided_at: float) -> None:
        self.latency.barge_in_flushed(decided_at)
        player = self.audio_out
        if player is None:
            return

        async def watch_silence() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    silenced_at = await player.wait_silenced()
                    if silenced_at is not None:
                        self.latency.barge_in_silenced(decided_at, silenced_at)

        self._spawn(watch_silence(), "silence-watch")

    def _speaker_failed(self, reason: str) -> None:
        self._device_failed("Speaker", reason)

    def _on_playback_finished(self, item_id: str) -> None:
        self._feed(self.core.playback_finished(item_id))

    async def _run_tool(self, call_id: str, name: str | None, arguments: str) -> None:
        assert self.tool_runner is not None
        try:
            result = await self.tool_runner.run(name, arguments, call_id)
        finally:
            self._tool_tasks.pop(call_id, None)
        self._feed(self.core.tool_finished(call_id, result))

    async def _summarize(self, request: a.Summarize) -> None:
        assert self.summaries is not None
        text, fallback = await self.summaries.summarize(
            request.inputs, request.previous_summary, request.language
        )
        self._feed(self.core.summary_ready(request.job_id, text, fallback))

    def _start_timer(self, key: Hashable, seconds: float) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self._feed(self.core.timer_fired(key))

        self._timers[key] = asyncio.get_running_loop().call_later(seconds, fire)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """A background task, kept until it ends; a failure is logged and counted."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._task_failures += 1
            log.error("task_failed", task=task.get_name(), exc_info=task.exception())

    # --- inputs ------------------------------------------------------------------------------

    async def _pump_audio(self, source: AudioInput) -> None:
        assert self.client is not None
        finished: asyncio.Event | None = getattr(source, "finished", None)
        if finished is not None:
            self._spawn(self._mark_input_done(finished), "input-done")
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

    def _device_failed(self, which: str, reason: object) -> None:
        """A device failed mid-run: one line saying so, then text mode or a clean exit (1).

        Text mode when lines can be typed (a terminal, or given lines) and no file is being
        played or recorded; otherwise the run ends and the transcript is saved as usual.
        """
        if self.device_failure is not None:
            return
        flag = "--input-device" if which == "Microphone" else "--output-device"
        detail = str(reason).strip().rstrip(".") or type(reason).__name__
        self.device_failure = (
            f"{which} stopped: {detail}. Run `voicebot devices list` and pick a device with {flag}."
        )
        devices = [d for d in (self.audio_in, self.audio_out) if d is not None]
        self.audio_in = self.audio_out = None  # no action touches a device from here on
        log.error("audio_device_failed", device=which.lower(), reason=detail)
        self.view.error(self.device_failure)
        self._spawn(self._after_device_failure(devices), "device-failure")

    async def _after_device_failure(self, devices: list[AudioInput | AudioOutput]) -> None:
        for device in devices:
            with contextlib.suppress(Exception):  # a device that is gone may fail to stop
                await device.stop()
        files = self.options.input_file is not None or self.options.output_file is not None
        if self.typing and not files:
            self.text_only = True  # the end of typed input now ends the run
            self.view.notice("falling back to text mode: type a line and press Enter")
            await self._wait_input_finished()
        else:
            self.exit_code = 1
        self.stop()

    async def _close_devices(self) -> None:
        devices = [d for d in (self.audio_in, self.audio_out) if d is not None]
        self.audio_in = self.audio_out = None  # no action touches a device from here on
        for device in devices:
            with contextlib.suppress(Exception):  # a device that is gone may fail to stop
                await device.stop()

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
        await self._wait_playback_done()

    async def _wait_input_finished(self) -> None:
        """The input ended (file, typed lines): wait for the last reply, then a quiet spell."""
        await self._input_done.wait()
        quiet = max(QUIET_AFTER_INPUT_S, 2 * self.settings.vad_silence_ms / 1000)
        while True:
            await self.until(lambda: not self.core.turns.reply_owed)
            await self._wait_playback_done()
            try:
                await asyncio.wait_for(self.changed.wait(), quiet)
            except TimeoutError:
                if self.core.turns.idle():
                    return

    async def _wait_playback_done(self) -> None:
        player = self.audio_out
        item_id = player.playing_item_id if player is not None else None
        if player is not None and item_id is not None:
            await player.wait_finished(item_id)

    # --- the session summary ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Counters of every part, by part."""
        parts: dict[str, dict[str, Any]] = {
            "core": self.core.snapshot(),
            "app": {
                "audio_device_failures": int(self.device_failure is not None),
                "task_failures": self._task_failures,
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
        if self.audio_out is not None:
            parts["player"] = {"underruns": self.audio_out.underruns}
        if self.audio_in is not None:
            parts["mic"] = {"dropped_blocks": self.audio_in.dropped_blocks}
        return parts

    def summary(self) -> dict[str, Any]:
        return self.metrics.summary(self.snapshot())

    async def _write_metrics_file(self, path: Path, summary: dict[str, Any]) -> None:
        """`--metrics-file`: the summary as JSON, written off the loop."""
        text = json.dumps(summary, indent=2) + "\n"
        try:
            await asyncio.to_thread(path.write_text, text)
        except OSError as exc:
            self.view.error(f"cannot write the metrics file {path}: {exc.strerror or exc}")
