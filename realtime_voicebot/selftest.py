"""`voicebot test --fake-server`: scripted conversations through the real app, checked on the
server side.

Each step starts a fresh in-process fake Realtime server and a real `VoiceBot` whose
microphone is synthesized speech pushed programmatically (`PushInput`) and whose speaker is a
`WavFilePlayer` writing into a temporary directory at a known pace, so the played position of
every reply is counted in samples. A step passes only when what the fake server holds (its
`FakeSession`: events received, conversation items) is what the bot should have made it hold.

Steps: a normal turn, a barge-in with a truncate at the played position, a compaction, a
dropped connection with re-seeding, and a session-expiry rollover. No network, no API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realtime_voicebot.app import RunOptions, VoiceBot
from realtime_voicebot.audio.output import WavFilePlayer
from realtime_voicebot.config import Settings
from realtime_voicebot.core.recap import read_recap
from realtime_voicebot.errors import VoicebotError
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.conversation import ItemView
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.testing import PushInput, RecordingView, Running, scaled
from realtime_voicebot.transport.events import (
    ClientEventType,
    Dialect,
    ServerEventType,
    wire_name,
)

BLOCK_MS = 20
TURN_PAUSE_S = 1.0
"""Silence after each utterance: long enough for the server's VAD to end the turn."""
STOP_TIMEOUT_S = 10.0
DEFAULT_WAIT_S = 8.0
DEFAULT_SPEED = 20.0
"""Fake server reply speed against real time."""
DEFAULT_PACE = 5.0
"""Player speed against real time: replies play faster than spoken, counted exactly."""

AdjustServer = Callable[[FakeServerConfig], None]


class StepFailed(VoicebotError):
    """A check of a step did not hold; the message says which and what was seen."""


def check(condition: bool, reason: str) -> None:
    """Fail the step with ``reason`` unless ``condition`` holds."""
    if not condition:
        raise StepFailed(reason)


@dataclass(frozen=True)
class StepResult:
    name: str
    passed: bool
    seconds: float
    reason: str = ""
    detail: str = ""
    """What a passed step measured, e.g. the truncate position."""


@dataclass
class BotRun:
    """One running bot against its own fake server, and the waits and checks steps use.

    Waits are event-driven (`Running.until`, the player's `wait_played`), and their timeouts
    are scaled by ``VOICEBOT_TEST_TIMEOUT_FACTOR`` like the project's tests.
    """

    running: Running
    mic: PushInput
    player: WavFilePlayer
    wait_s: float
    dialect: Dialect
    details: list[str] = field(default_factory=list)

    @property
    def server(self) -> FakeRealtimeServer:
        return self.running.server

    @property
    def bot(self) -> VoiceBot:
        return self.running.bot

    @property
    def view(self) -> RecordingView:
        return self.running.view

    def note(self, text: str) -> None:
        """A figure to print next to the step when it passes."""
        self.details.append(text)

    async def until(self, predicate: Callable[[], object], what: str) -> None:
        """Wait until ``predicate()`` holds; fail if the bot stops or ``wait_s`` passes."""
        try:
            await self.running.until(predicate, self.wait_s)
        except TimeoutError:
            raise StepFailed(
                f"no {what} within {scaled(self.wait_s):g} s{self.errors_suffix()}"
            ) from None
        except RuntimeError:
            if not self.running.task.done():
                raise
            raise StepFailed(
                f"the bot stopped while waiting for {what}{self.errors_suffix()}"
            ) from None

    async def played(self, item_id: str, ms: float) -> None:
        """Wait until the player has played ``ms`` of the item; fail if it ended short."""
        what = f"{ms:g} ms of {item_id} played"
        try:
            async with asyncio.timeout(scaled(self.wait_s)):
                reached = await self.player.wait_played(item_id, ms)
        except TimeoutError:
            raise StepFailed(f"no {what} within {scaled(self.wait_s):g} s") from None
        check(
            reached, f"{item_id} ended after {self.player.played_ms(item_id):.0f} ms, before {what}"
        )

    def errors_suffix(self) -> str:
        """The bot's last error message, to append to a failure reason."""
        return f" (bot said: {self.view.errors[-1]})" if self.view.errors else ""

    async def session(self, number: int) -> FakeSession:
        sessions = self.server.sessions
        await self.until(
            lambda: len(sessions) >= number and bool(sessions[number - 1].sent),
            f"session {number}",
        )
        return sessions[number - 1]

    async def reply_to(self, session: FakeSession, transcript: str) -> tuple[ItemView, ItemView]:
        """Wait for the user item ``transcript`` and the completed assistant reply after it,
        played to its end; the server's (user, assistant) items."""

        def found() -> tuple[ItemView, ItemView] | None:
            items = session.items
            for index, item in enumerate(items):
                if item.role == "user" and item.text == transcript:
                    replies = [i for i in items[index + 1 :] if i.role == "assistant"]
                    if replies and replies[0].status == "completed":
                        return item, replies[0]
            return None

        await self.until(
            lambda: found() is not None and session.active_response is None,
            f"reply to {transcript!r} on the server",
        )
        pair = found()
        assert pair is not None
        # The player's end of an item reaches the bot's core, which wakes `until`.
        await self.until(
            lambda: self.player.is_finished(pair[1].id), f"reply to {transcript!r} played"
        )
        return pair

    def check_played_whole(self, reply: ItemView) -> None:
        """The player played the reply to its end: as many ms as the server's item holds."""
        played = self.player.played_ms(reply.id)
        check(played > 0, f"no sample of reply {reply.id} was played")
        check(
            abs(played - reply.audio_ms) <= BLOCK_MS,
            f"played {played:.0f} ms of reply {reply.id}, the server holds {reply.audio_ms:.0f} ms",
        )

    def received_of(self, session: FakeSession, kind: ClientEventType) -> list[dict[str, Any]]:
        return [e for e in session.received if e.get("type") == kind.value]

    def sent_count(self, session: FakeSession, kind: ServerEventType) -> int:
        return session.sent_types().count(wire_name(kind, self.dialect) or "")


async def seed_text(run: BotRun, session: FakeSession) -> tuple[str, str]:
    """The re-seed a new session got: (item id, text) of its first client item, checked to be
    one system message at root sent right after ``session.update``."""
    await run.until(lambda: len(session.received) >= 2, "re-seed in the new session")
    kinds = session.received_types()
    check(
        len(kinds) >= 2
        and kinds[0] == ClientEventType.SESSION_UPDATE.value
        and kinds[1] == ClientEventType.ITEM_CREATE.value,
        f"the new session did not start with session.update + item.create: {kinds[:3]}",
    )
    seed = session.received[1]
    item = seed.get("item") or {}
    check(
        seed.get("previous_item_id") == "root" and item.get("role") == "system",
        "the seed is not a system item at root",
    )
    content = item.get("content") or [{}]
    return str(item.get("id")), str(content[0].get("text") or "")


# --- steps -------------------------------------------------------------------------------------

StepBody = Callable[[BotRun], Awaitable[None]]


@dataclass(frozen=True)
class Step:
    """A scripted conversation: its fake server, its settings, and the body that checks it."""

    name: str
    body: StepBody
    scenario: Scenario
    settings: dict[str, Any] = field(default_factory=dict)
    session_max_s: float = 3600.0


async def normal_turn(run: BotRun) -> None:
    """User speech -> transcript -> a reply played in full and shown with its transcript."""
    session = await run.session(1)
    run.mic.say(1.0, seed=1, pause_s=TURN_PAUSE_S)
    user, reply = await run.reply_to(session, "what is the capital of France")
    run.check_played_whole(reply)
    check(reply.text == "Paris is the capital of France.", f"unexpected reply {reply.text!r}")
    check(run.view.user == [user.text], f"the console showed the user as {run.view.user}")
    check(
        (reply.id, reply.text, False) in run.view.assistant,
        f"the console showed the reply as {run.view.assistant}",
    )
    run.note(f"reply played {run.player.played_ms(reply.id):.0f} ms of {reply.audio_ms:.0f} ms")


LONG_REPLY = "Once upon a time there was a very long story that went on and on. " * 8


async def barge_in(run: BotRun) -> None:
    """The user talks over a long reply: flush, truncate at the played position, go on."""
    session = await run.session(1)
    run.mic.say(1.0, seed=2, pause_s=TURN_PAUSE_S)
    await run.until(
        lambda: any(i.role == "assistant" for i in session.items), "assistant item on the server"
    )
    reply_id = next(i.id for i in session.items if i.role == "assistant")
    await run.played(reply_id, 400)
    run.mic.say(0.8, seed=3, pause_s=TURN_PAUSE_S)

    def truncates() -> list[dict[str, Any]]:
        return run.received_of(session, ClientEventType.ITEM_TRUNCATE)

    await run.until(truncates, "conversation.item.truncate on the server")
    truncate = truncates()[0]
    end_ms = int(truncate.get("audio_end_ms") or 0)
    played = run.player.played_ms(reply_id)
    check(
        truncate.get("item_id") == reply_id, f"truncated {truncate.get('item_id')}, not the reply"
    )
    check(
        abs(end_ms - played) <= BLOCK_MS,
        f"truncate audio_end_ms={end_ms}, the player counted {played:.0f} ms",
    )
    check(run.player.flushes >= 1, "the player was not flushed")
    check(not run.player.is_finished(reply_id), "the reply played to its end anyway")
    await run.until(
        lambda: run.sent_count(session, ServerEventType.ITEM_TRUNCATED) >= 1,
        "conversation.item.truncated from the server",
    )
    server_item = next(i for i in session.items if i.id == reply_id)
    check(
        server_item.audio_ms == end_ms,
        f"the server's reply holds {server_item.audio_ms:.0f} ms, not the {end_ms} ms heard",
    )
    check(
        len(server_item.text) < len(LONG_REPLY.strip()),
        "the server's reply transcript was not cut",
    )
    _, after = await run.reply_to(session, "stop, that is enough")
    run.check_played_whole(after)
    check(
        any(item_id == reply_id and cut for item_id, _, cut in run.view.assistant),
        "the console did not mark the reply as interrupted",
    )
    run.note(f"truncated at {end_ms} ms, player counted {played:.0f} ms")


async def compaction(run: BotRun) -> None:
    """Past the threshold, older turns become one summary item at root; the tail stays."""
    session = await run.session(1)
    run.mic.say(1.0, seed=4, pause_s=TURN_PAUSE_S)
    first = await run.reply_to(session, "My sister Ada moved to Lisbon in 2019.")
    run.mic.say(1.0, seed=5, pause_s=TURN_PAUSE_S)
    second = await run.reply_to(session, "What is the weather like there?")
    compactor = run.bot.core.compactor
    await run.until(
        lambda: compactor.stats.compactions >= 1 and not compactor.in_flight,
        f"compaction (window {run.bot.core.conversation.window_tokens} tokens)",
    )
    items = session.items
    check(bool(items), "the server's conversation is empty")
    summary = items[0]
    try:
        summary_text, _ = read_recap(summary.text)
    except ValueError:
        summary_text = None
    check(
        summary.role == "system" and summary_text is not None,
        f"the first server item is not the summary: {summary.role} {summary.text[:40]!r}",
    )
    check("Lisbon" in (summary_text or ""), f"the summary lost the first turn: {summary.text!r}")
    gone = {first[0].id, first[1].id}
    left = gone & {i.id for i in items}
    check(not left, f"{len(left)} summarized items are still on the server: {sorted(left)}")
    tail = [i.id for i in items[1:]]
    kept = [second[0].id, second[1].id]
    check(tail[:2] == kept, f"the server kept {tail}, expected the last turn {kept}")
    deleted = {e.get("item_id") for e in run.received_of(session, ClientEventType.ITEM_DELETE)}
    check(gone <= deleted, f"the server got deletes for {deleted}, expected {gone}")
    mirror = run.bot.core.conversation.order
    check(mirror == [i.id for i in items], "the bot's mirror differs from the server's items")
    check(bool(run.view.compactions), "the console did not show the compaction")
    run.note(f"{len(gone)} items -> summary at root, {len(items) - 1} kept")


async def dropped_connection(run: BotRun) -> None:
    """The connection drops mid-utterance; the new session is re-seeded and answers."""
    first = await run.session(1)
    run.mic.say(1.0, seed=6, pause_s=TURN_PAUSE_S)
    _, reply = await run.reply_to(first, "Remember the word pineapple.")
    # Drop right after the server's next event: the speech_started of the next utterance.
    run.server.faults.drop_after_events = first.events_counted + 1
    run.mic.say(1.0, seed=7, pause_s=TURN_PAUSE_S)
    second = await run.session(2)
    check(first.ended_by == "dropped", f"session 1 ended by {first.ended_by}, not a drop")
    seed_id, text = await seed_text(run, second)
    check("pineapple" in text and reply.text in text, f"the seed lacks turn 1: {text!r}")
    await run.until(lambda: any(i.id == seed_id for i in second.items), "seed item on the server")
    check(second.items[0].id == seed_id, "the seed is not the new conversation's first item")
    _, answer = await run.reply_to(second, "What was the word?")
    run.check_played_whole(answer)
    reconnects = run.bot.summary()["reconnects"]
    check(reconnects == 1, f"{reconnects} reconnects counted, expected 1")
    run.note(f"re-seeded with {len(text)} chars")


async def session_rollover(run: BotRun) -> None:
    """Near the session limit the bot moves to a new session, seeded, and goes on."""
    first = await run.session(1)
    run.mic.say(1.0, seed=8, pause_s=TURN_PAUSE_S)
    await run.reply_to(first, "Remember the number 42.")
    second = await run.session(2)
    await run.until(lambda: first.closed, "session 1 closed")
    clean = first.ended_by == "client" and first.close_code == 1000
    expired = first.ended_by == "expired"
    check(clean or expired, f"session 1 ended by {first.ended_by} ({first.close_code})")
    _, text = await seed_text(run, second)
    check("42" in text, f"the seed lacks turn 1: {text!r}")
    run.mic.say(1.0, seed=9, pause_s=TURN_PAUSE_S)
    _, answer = await run.reply_to(second, "Which number?")
    run.check_played_whole(answer)
    summary = run.bot.summary()
    check(summary["rollovers"] + summary["reconnects"] >= 1, "no rollover was counted")
    run.note("rolled over before expiry" if clean else "recovered from expiry")


STEPS: tuple[Step, ...] = (
    Step(
        "normal turn",
        normal_turn,
        Scenario(["what is the capital of France"], ["Paris is the capital of France."]),
    ),
    Step(
        "barge-in",
        barge_in,
        Scenario(["tell me a long story", "stop, that is enough"], [LONG_REPLY, "All right."]),
    ),
    Step(
        "compaction",
        compaction,
        Scenario(["My sister Ada moved to Lisbon in 2019.", "What is the weather like there?"]),
        settings={"summary_threshold": 1, "summary_keep_items": 2},
    ),
    Step(
        "dropped connection",
        dropped_connection,
        Scenario(["Remember the word pineapple.", "What was the word?"]),
    ),
    Step(
        "session rollover",
        session_rollover,
        Scenario(["Remember the number 42.", "Which number?"]),
        session_max_s=4.0,
    ),
)


# --- running -----------------------------------------------------------------------------------


async def _run_bot(
    step: Step,
    server: FakeRealtimeServer,
    workdir: Path,
    wait_s: float,
    pace: float,
    dialect: Dialect,
) -> tuple[str, str]:
    """Run the step's body against a new bot, then stop the bot; (failure reason or "",
    the figures it noted)."""
    settings = step_settings(step, server, workdir, dialect)
    player = WavFilePlayer(
        workdir / f"{step.name.replace(' ', '-')}.wav",
        block_ms=BLOCK_MS,
        pace=pace,
        jitter_ms=settings.jitter_ms,
        latency_compensation=settings.output_latency_compensation,
    )
    view = RecordingView()
    mic = PushInput()
    # Typed lines from a queue nobody fills: the bot never reads the terminal's stdin.
    options = RunOptions(text_lines=asyncio.Queue(1))
    bot = VoiceBot(settings, options, view, audio_in=mic, audio_out=player)
    task = asyncio.create_task(bot.run(), name=f"selftest-{step.name}")
    run = BotRun(Running(bot, server, task, view), mic, player, wait_s, dialect)
    reason = ""
    code: int | None = None
    try:
        await step.body(run)
    except StepFailed as exc:
        reason = str(exc)
    finally:
        bot.stop()
        try:
            code = await asyncio.wait_for(task, scaled(STOP_TIMEOUT_S))
        except TimeoutError:
            reason = reason or f"the bot did not stop within {scaled(STOP_TIMEOUT_S):g} s"
        except Exception as exc:
            reason = reason or f"the bot crashed: {type(exc).__name__}: {exc}"
    if not reason and code != 0:
        reason = f"the bot exited with code {code}{run.errors_suffix()}"
    if not reason and view.errors:
        reason = f"the bot reported an error: {'; '.join(view.errors)}"
    return reason, ", ".join(run.details)


def step_settings(
    step: Step, server: FakeRealtimeServer, workdir: Path, dialect: Dialect
) -> Settings:
    """Settings pinned for the self-test (the environment cannot change what is checked)."""
    values: dict[str, Any] = {
        "provider": "openai",
        "dialect": dialect,
        "url": server.url,
        "openai_api_key": "sk-selftest",
        "transcript_path": workdir / f"{step.name.replace(' ', '-')}.jsonl",
        "summarizer": "extractive",
        "summary_threshold": 1_000_000,
        "summary_keep_items": 4,
        "summary_every_turns": None,
        "interrupt_response": True,
        "vad_threshold": 0.5,
        "vad_silence_ms": 500,
        "vad_prefix_padding_ms": 300,
        "chunk_ms": BLOCK_MS,
        "jitter_ms": 60,
        "tools": [],
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "reconnect_attempts": 8,
        "rollover_margin_s": 120.0,
        "metrics_file": None,
        "redact_transcript": False,
    }
    values.update(step.settings)
    return Settings(**values)


async def run_step(
    step: Step,
    workdir: Path,
    *,
    wait_s: float = DEFAULT_WAIT_S,
    speed: float = DEFAULT_SPEED,
    pace: float = DEFAULT_PACE,
    dialect: Dialect = "ga",
    adjust_server: AdjustServer | None = None,
) -> StepResult:
    """Run one step with a fresh fake server and bot; its result, never an exception."""
    started = time.monotonic()
    config = FakeServerConfig(scenario=step.scenario, speed=speed, session_max_s=step.session_max_s)
    if adjust_server is not None:
        adjust_server(config)
    reason = detail = ""
    try:
        async with FakeRealtimeServer(config) as server:
            reason, detail = await _run_bot(step, server, workdir, wait_s, pace, dialect)
    except Exception as exc:  # a step that crashed is a failed step, reported with its reason
        reason = f"{type(exc).__name__}: {exc}"
    return StepResult(step.name, not reason, time.monotonic() - started, reason, detail)


async def run_selftest(
    steps: Sequence[Step] = STEPS,
    *,
    workdir: Path | None = None,
    on_result: Callable[[StepResult], None] | None = None,
    **step_options: Any,
) -> list[StepResult]:
    """Run ``steps`` one after another; ``step_options`` go to `run_step` (e.g.
    ``adjust_server`` to change every step's fake server, ``wait_s``, ``dialect``)."""
    results: list[StepResult] = []
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="voicebot-")))
        for step in steps:
            result = await run_step(step, workdir, **step_options)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def run_and_report(echo: Callable[[str], None] = print, **options: Any) -> int:
    """Run the self-test (``options`` go to `run_selftest`), print the checklist as it goes
    and the total; the exit code: 0 when every step passed, else 1."""
    started = time.monotonic()
    results = asyncio.run(run_selftest(on_result=lambda r: echo(format_result(r)), **options))
    echo(format_total(results, time.monotonic() - started))
    return 0 if results and all(r.passed for r in results) else 1


def format_result(result: StepResult) -> str:
    """One checklist line: ``✔ normal turn  0.84 s`` or ``✘ barge-in  3.02 s  <reason>``."""
    mark = "✔" if result.passed else "✘"
    line = f"{mark} {result.name}  {result.seconds:.2f} s"
    extra = result.detail if result.passed else result.reason
    return f"{line}  {extra}" if extra else line


def format_total(results: Sequence[StepResult], seconds: float) -> str:
    """The last line: how many steps passed, and the whole run's time."""
    passed = sum(r.passed for r in results)
    failed = len(results) - passed
    verdict = f"{passed}/{len(results)} passed" + (f", {failed} failed" if failed else "")
    return f"total  {seconds:.2f} s  {verdict}"
