"""The session core: what happens in, what to do out. No socket, no sound card, no clock.

`SessionCore` is fed everything that happens to a conversation, each through one method:

| input | from |
| --- | --- |
| `session_started(number, reason, lifetime_s)` | the client, once a session is configured |
| `connection_changed(state, detail)` | the client (connecting, reconnecting, closed) |
| `server_event(event)` | the client, every parsed server event |
| `typed_line(text)` | the keyboard |
| `tool_finished(call_id, result)` | a tool run started by `RunTool` |
| `summary_ready(job_id, text, fallback)` | a summary started by `Summarize` |
| `timer_fired(key)` | a timer started by `StartTimer` |
| `playback_finished(item_id)` | the player, when a reply has played out |
| `image(image)` | the keyboard (``/image``), once the shell has read and checked it |
| `tools_changed(tools)` | the shell, when the tools on offer changed (an MCP server's) |

and returns the `actions` to perform, in order. It reads the player's position through a
probe given at construction (a plain read of counters), never the other way round.

It owns the parts that decide, each in its own module: `Conversation` (the mirror and
history), `TurnTaking` (barge-in, typed lines, the reply watchdog), `ToolCalls` (which
calls to answer, when), `Compactor` (when and how to summarize), and the rollover before
the session's time limit. Each server event goes through them in a fixed order, written
once in `server_event`: the conversation first (everyone reads it), then turn-taking, tool
calls, compaction, and last what to play and show. Events of responses outside the
conversation (the session's own summary, `core.out_of_band`) go to the compactor alone.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

import structlog

from realtime_voicebot.core.actions import (
    Action,
    EndAudio,
    ErrorReported,
    Notice,
    OutOfBandFinished,
    PlayAudio,
    Record,
    ReplyDelta,
    ReplyDone,
    ReplyStarted,
    ResponseCreated,
    ResponseFinished,
    RollOver,
    Send,
    SessionBegan,
    SpeechEnded,
    SpeechStarted,
    StartTimer,
    StatusChanged,
    StopPlayback,
    UserTurn,
)
from realtime_voicebot.core.approvals import HostedMcp
from realtime_voicebot.core.compaction import CompactionPolicy, Compactor
from realtime_voicebot.core.conversation import Conversation, RoleText, new_item_id
from realtime_voicebot.core.images import ImageInput, image_turn
from realtime_voicebot.core.out_of_band import OutOfBandResponses
from realtime_voicebot.core.recap import seed_text
from realtime_voicebot.core.tool_calls import ToolCalls
from realtime_voicebot.core.turn_taking import (
    NOTHING_PLAYING,
    Playback,
    PlaybackProbe,
    TurnTaking,
)
from realtime_voicebot.labels import count_bounded
from realtime_voicebot.tools.runner import ToolResult
from realtime_voicebot.transport import payloads as pl
from realtime_voicebot.transport.events import (
    Dialect,
    ErrorCode,
    ServerEvent,
    ServerEventType,
    message_create,
    session_tools_update,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from realtime_voicebot.config import Settings

log = structlog.get_logger(component="session")

_S = ServerEventType
EXPECTED_ERRORS = frozenset({ErrorCode.RESPONSE_CANCEL_NOT_ACTIVE, ErrorCode.SESSION_EXPIRED})
"""Errors that are part of normal operation: counted, never shown."""
MIN_SESSION_AGE_S = 1.0
"""A session is never rolled over younger than this, whatever its expiry says."""
FIRST_DELTAS_KEPT = 64
RECENT_ITEMS = 32
"""Items looked at for the messages of a response that just ended (its own are the latest)."""


@dataclass(frozen=True)
class CoreConfig:
    """What the core needs of the settings. The defaults are the plain protocol behaviour
    (the server owns turn-taking); `from_settings` takes the user's choices."""

    dialect: Dialect = "ga"
    interrupt_response: bool = True
    turn_detection: str = "server_vad"
    false_interruption: str = "off"
    interruption_min_ms: float = 250.0
    vad_prefix_padding_ms: int = 300
    vad_silence_ms: int = 500
    summary_threshold: int = 20_000
    summary_keep_items: int = 4
    summary_every_turns: int | None = None
    summary_language: str = "auto"
    transcript_wait_s: float = 5.0
    confirm_timeout_s: float = 10.0
    response_timeout_s: float = 15.0
    rollover_margin_s: float = 120.0
    mcp_approval_timeout_s: float = 30.0
    summary_in_session: bool = False
    """The session writes the summaries (an out-of-band response) instead of the shell;
    `from_settings` sets it for ``summarizer realtime``, the default setting."""
    summary_timeout_s: float = 20.0

    @property
    def manual_turns(self) -> bool:
        """Push-to-talk: no VAD, the client commits each turn."""
        return self.turn_detection == "manual"

    @property
    def resume_false_interruptions(self) -> bool:
        """The client owns turn-taking to tell noise from a real barge-in."""
        return self.false_interruption == "resume" and not self.manual_turns

    @property
    def vad_overhead_ms(self) -> float | None:
        """What the server VAD adds to the speech it reports (its prefix padding and closing
        silence); None when unknown (semantic VAD waits as long as it judges right)."""
        if self.turn_detection != "server_vad":
            return None
        return float(self.vad_prefix_padding_ms + self.vad_silence_ms)

    @property
    def session_turn_flags(self) -> dict[str, bool]:
        """``create_response`` and ``interrupt_response`` for the session's turn detection."""
        if self.resume_false_interruptions:
            return {"create_response": False, "interrupt_response": False}
        return {"create_response": True, "interrupt_response": self.interrupt_response}

    @classmethod
    def from_settings(cls, settings: Settings) -> CoreConfig:
        return cls(
            dialect=settings.dialect,
            interrupt_response=settings.interrupt_response,
            turn_detection=settings.turn_detection,
            false_interruption=settings.false_interruption,
            interruption_min_ms=settings.interruption_min_ms,
            vad_prefix_padding_ms=settings.vad_prefix_padding_ms,
            vad_silence_ms=settings.vad_silence_ms,
            summary_threshold=settings.summary_threshold,
            summary_keep_items=settings.summary_keep_items,
            summary_every_turns=settings.summary_every_turns,
            summary_language=settings.summary_language,
            transcript_wait_s=settings.transcript_wait_s,
            response_timeout_s=settings.response_timeout_s,
            rollover_margin_s=settings.rollover_margin_s,
            mcp_approval_timeout_s=settings.mcp_approval_timeout_s,
            summary_in_session=settings.summarizer == "realtime",
            summary_timeout_s=settings.summary_timeout_s,
        )


@dataclass
class CoreStats:
    replies: int = 0
    """Assistant replies that ended (completed or cut)."""
    completed_replies: int = 0
    user_turns: int = 0
    """Spoken user turns transcribed (or failed to be)."""
    late_deltas_dropped: int = 0
    rollovers_requested: int = 0


class SessionCore:
    """One conversation's decisions, over as many sessions as it takes."""

    def __init__(self, config: CoreConfig | None = None, *, playback: PlaybackProbe | None = None):
        self.config = config = config or CoreConfig()
        self.playback: PlaybackProbe = playback or (lambda: NOTHING_PLAYING)
        self.conversation = Conversation()
        self.turns = TurnTaking(
            self.conversation,
            dialect=self.config.dialect,
            interrupt_response=self.config.interrupt_response,
            response_timeout_s=self.config.response_timeout_s,
            vad_creates_replies=not (config.resume_false_interruptions or config.manual_turns),
            resume_false_interruptions=config.resume_false_interruptions,
            interruption_min_ms=config.interruption_min_ms,
            vad_overhead_ms=config.vad_overhead_ms,
            manual_turns=config.manual_turns,
            playback=self._playback,
        )
        self.tool_calls = ToolCalls()
        self.policy = CompactionPolicy(
            self.config.summary_threshold,
            self.config.summary_keep_items,
            self.config.summary_every_turns,
        )
        self.compactor = Compactor(
            self.conversation,
            self.policy,
            dialect=self.config.dialect,
            language=self.config.summary_language,
            transcript_wait_s=self.config.transcript_wait_s,
            confirm_timeout_s=self.config.confirm_timeout_s,
            in_session=self.config.summary_in_session,
            summary_timeout_s=self.config.summary_timeout_s,
        )
        self.hosted_mcp = HostedMcp(self.config.mcp_approval_timeout_s)
        self.out_of_band = OutOfBandResponses()
        self.stats = CoreStats()
        self.responses_by_status: dict[str, int] = {}
        self.errors_by_code: dict[str, int] = {}
        self.session_number = 0
        self.status = "connecting"
        self._first_deltas: dict[str, None] = {}
        self._rollover_due = False
        self._rolled_over = False

    def _playback(self) -> Playback:
        return self.playback()

    # --- views ---------------------------------------------------------------------------

    def idle(self) -> bool:
        """A safe moment to roll over: nothing said, owed or playing, no compaction sending."""
        return (
            self.turns.idle()
            and self.compactor.phase != "confirming"
            and not self.hosted_mcp.pending  # the service goes on once it is answered
        )

    def snapshot(self) -> dict[str, Any]:
        """Counters of the core and each of its parts."""
        return {
            **vars(self.stats),
            "responses": dict(sorted(self.responses_by_status.items())),
            "errors": dict(sorted(self.errors_by_code.items())),
            "conversation": self.conversation.snapshot(),
            "turns": self.turns.snapshot(),
            "tool_calls": self.tool_calls.snapshot(),
            "compaction": self.compactor.snapshot(),
            "hosted_mcp": self.hosted_mcp.snapshot(),
            "out_of_band": vars(self.out_of_band.stats),
        }

    # --- inputs --------------------------------------------------------------------------

    def restore(self, summary: str | None, turns: Iterable[RoleText | tuple[str, str]]) -> None:
        """Seed the first session from a saved conversation (``--resume``)."""
        self.conversation.restore(summary, turns)

    def session_started(self, number: int, reason: str, lifetime_s: float | None) -> list[Action]:
        """A session is configured. Every session after the first is blank: it gets the
        conversation back as one recap item, then the typed lines still owed a reply."""
        actions: list[Action] = []
        if self.session_number:
            self.conversation.reset_for_new_session(keep_local=self.turns.pending_typed_ids)
            self.compactor.on_new_session()
            actions += self.tool_calls.drop_all()
            actions += self.hosted_mcp.session_started()
            actions.append(StopPlayback())
            actions.append(Notice(f"new session ({reason}); conversation restored"))
        self.session_number = number
        self._rollover_due = False
        self._rolled_over = False
        self._first_deltas.clear()
        self.turns.session_started()
        seed = seed_text(self.conversation)
        if seed is not None:
            seed_id = new_item_id("seed")
            self.conversation.expect_seed(seed_id)
            actions.append(
                Send(
                    message_create(
                        "system",
                        seed,
                        self.config.dialect,
                        previous_item_id="root",
                        item_id=seed_id,
                    )
                )
            )
        actions += self.turns.release()
        actions += self._schedule_rollover(lifetime_s)
        actions.append(SessionBegan(number, reason))
        actions += self._status("listening")
        return actions + self._records()

    def connection_changed(self, state: str, detail: str) -> list[Action]:
        """The client's connection state: connecting, connected, reconnecting or closed."""
        actions: list[Action] = []
        if state in ("reconnecting", "closed"):
            self.turns.session_lost()
        if state == "reconnecting":
            actions.append(Notice(f"connection lost: {detail}"))
        if state != "connected":
            actions += self._status(state)
        return actions

    def server_event(self, event: ServerEvent) -> list[Action]:
        """One server event, through every part in order."""
        if self.out_of_band.claims(event):
            return self._out_of_band(event)
        self.conversation.apply(event)
        actions = self.turns.on_event(event)
        tool_actions, reply_due = self.tool_calls.on_event(event)
        actions += tool_actions
        if reply_due:
            actions += self.turns.request_reply()
        actions += self.hosted_mcp.on_event(event)
        actions += self.compactor.on_event(event)
        actions += self._present(event)
        if isinstance(event.payload, pl.ResponseDone) and not event.payload.out_of_band:
            actions += self.compactor.maybe_start()
        return actions + self._maybe_roll_over() + self._records()

    def _out_of_band(self, event: ServerEvent) -> list[Action]:
        """An event of a response outside the conversation (the session's own summary): the
        compactor's alone. No other part sees it: it adds nothing to the mirror, plays and
        shows nothing, is not the active response and answers no typed line or tool call."""
        actions = self.compactor.on_out_of_band(event)
        payload = event.payload
        if isinstance(payload, pl.ResponseDone):
            purpose = payload.metadata.get("purpose", "")
            actions.append(
                OutOfBandFinished(payload.response_id, payload.status, payload.usage, purpose)
            )
        return actions + self._maybe_roll_over() + self._records()

    def typed_line(self, text: str) -> list[Action]:
        answer = self.hosted_mcp.typed_line(text)  # y/n while a hosted MCP call waits
        if answer is not None:
            return answer
        return self.turns.typed_line(text) + self._records()

    def push_to_talk(self) -> list[Action]:
        """The push-to-talk key was pressed (starts the user's turn, or ends it)."""
        return self.turns.push_to_talk() + self._records()

    def interrupt(self, cause: Literal["speech", "typed"] = "speech") -> list[Action]:
        """Stop the reply now, as a barge-in would (e.g. a push-to-talk key)."""
        return self.turns.barge_in(cause) + self._records()

    def tool_finished(self, call_id: str, result: ToolResult) -> list[Action]:
        actions, reply_due = self.tool_calls.finished(call_id, result)
        if reply_due:
            actions += self.turns.request_reply()
        return actions

    def summary_ready(self, job_id: int, text: str, fallback: bool = False) -> list[Action]:
        return self.compactor.summary_ready(job_id, text, fallback) + self._records()

    def timer_fired(self, key: Hashable) -> list[Action]:
        if isinstance(key, tuple) and key and key[0] == "rollover":
            return self._rollover_timer(key)
        if isinstance(key, tuple) and key and key[0] == "mcp_approval":
            return self.hosted_mcp.timer_fired(key) + self._maybe_roll_over()
        actions = self.compactor.timer_fired(key) + self.turns.timer_fired(key)
        return actions + self._maybe_roll_over() + self._records()

    def playback_finished(self, item_id: str) -> list[Action]:
        """A reply played to its end: the bot listens again (unless it is busy)."""
        if self.turns.reply_owed or self.turns.user_speaking:
            return self._maybe_roll_over()
        return self._status("listening") + self._maybe_roll_over()

    def image(self, image: ImageInput) -> list[Action]:
        """Send a picture the user chose (``/image``) with a reply request (GA only)."""
        actions = image_turn(
            image, self.conversation, self.turns, self.config.dialect, self.playback()
        )
        return actions + self._records()

    def tools_changed(self, tools: list[dict[str, Any]]) -> list[Action]:
        """The tools on offer changed mid-session: tell the live session (a new one gets
        them in its first ``session.update``)."""
        if not self.turns.connected:
            return []
        return [Send(session_tools_update(tools, self.config.dialect))]

    def flush_records(self) -> list[Action]:
        """At shutdown: every turn not recorded yet."""
        return [Record(r) for r in self.conversation.flush_records()]

    # --- what to play and show -------------------------------------------------------------

    def _present(self, event: ServerEvent) -> list[Action]:
        payload = event.payload
        kind = event.type
        conversation = self.conversation
        if isinstance(payload, pl.AudioDelta):
            if not conversation.should_play(payload.item_id, payload.response_id):
                self.stats.late_deltas_dropped += 1
                return []
            actions: list[Action] = []
            if payload.item_id not in self._first_deltas:
                self._first_deltas[payload.item_id] = None
                if len(self._first_deltas) > FIRST_DELTAS_KEPT:
                    del self._first_deltas[next(iter(self._first_deltas))]
                actions.append(ReplyStarted(payload.item_id))
            actions.append(PlayAudio(payload.item_id, payload.pcm))
            return actions + self._status("speaking")
        if isinstance(payload, pl.Delta) and kind in (_S.AUDIO_TRANSCRIPT_DELTA, _S.TEXT_DELTA):
            if conversation.should_play(payload.item_id, payload.response_id):
                return [ReplyDelta(payload.item_id, payload.delta)]
            return []
        if kind is _S.AUDIO_DONE and isinstance(payload, pl.Done) and payload.item_id:
            return [EndAudio(payload.item_id)]
        if isinstance(payload, pl.SpeechStarted):
            return [SpeechStarted(payload.item_id), *self._status("user speaking")]
        if isinstance(payload, pl.SpeechStopped):
            return [SpeechEnded(payload.item_id), *self._status("thinking")]
        if kind is _S.INPUT_COMMITTED:
            return self._status("thinking")
        if kind is _S.INPUT_TIMEOUT:
            return [Notice("you were silent for a while: the assistant checks in")]
        if isinstance(payload, pl.ItemRef) and kind in (
            _S.INPUT_TRANSCRIPT_COMPLETED,
            _S.INPUT_TRANSCRIPT_FAILED,
        ):
            item = conversation.items.get(payload.item_id)
            if item is not None and item.discarded:
                return []  # noise over a reply: not a turn
            self.stats.user_turns += 1
            text = item.text if item is not None else payload.text
            return [UserTurn(text, item_id=payload.item_id)] if text else []
        if isinstance(payload, pl.ResponseCreated) and not payload.out_of_band:
            return [ResponseCreated(payload.response_id)]
        if isinstance(payload, pl.ResponseDone) and not payload.out_of_band:
            return self._response_done(payload)
        if isinstance(payload, pl.ServerError):
            return self._error(payload)
        return []

    def _response_done(self, done: pl.ResponseDone) -> list[Action]:
        status = done.status
        count_bounded(self.responses_by_status, status)
        actions: list[Action] = []
        replies: list[Action] = []
        for item_id in self._reply_ids(done):
            actions.append(EndAudio(item_id))
            item = self.conversation.items.get(item_id)
            if item is not None and item.role == "assistant":
                self.stats.replies += 1
                self.stats.completed_replies += status == "completed"
                replies.append(
                    ReplyDone(item.id, item.spoken_text, item.truncated, status == "completed")
                )
        window = self.conversation.window_tokens
        actions.append(ResponseFinished(done.response_id, status, done.usage, window))
        actions += replies
        if not replies or not self.playback().has_output:
            actions += self._status("listening")
        return actions

    def _reply_ids(self, done: pl.ResponseDone) -> list[str]:
        """The messages a response output: as its ``response.done`` lists them, and those
        its deltas announced (a ``response.done`` with a broken output still ends them)."""
        ids = [output.id for output in done.output if output.type == "message"]
        if done.response_id is not None:
            latest = islice(reversed(self.conversation.items.values()), RECENT_ITEMS)
            ids += reversed(
                [
                    item.id
                    for item in latest
                    if item.response_id == done.response_id
                    and item.kind == "message"
                    and item.id not in ids
                ]
            )
        return ids

    def _error(self, error: pl.ServerError) -> list[Action]:
        code = count_bounded(self.errors_by_code, error.label)
        if code in EXPECTED_ERRORS:
            log.debug("server_error_expected", code=code)
            return [ErrorReported(code)]
        if self.compactor.owns_request(error.event_id):
            # A rejected summary create or delete: the compaction retries it, nothing to show.
            log.info("compaction_request_rejected", code=code, client_event_id=error.event_id)
            return [ErrorReported(code)]
        log.warning(
            "server_error", code=code, message=error.message, client_event_id=error.event_id
        )
        return [ErrorReported(code, f"server: {error.message or code}")]

    def _status(self, status: str) -> list[Action]:
        if status == self.status:
            return []
        self.status = status
        return [StatusChanged(status)]

    def _records(self) -> list[Action]:
        return [Record(r) for r in self.conversation.take_records()]

    # --- rollover before the session's time limit --------------------------------------------

    def _schedule_rollover(self, lifetime_s: float | None) -> list[Action]:
        """Roll over `rollover_margin_s` before the limit at an idle moment, and at the latest
        half a second before it. An unknown lifetime (None) schedules nothing."""
        if lifetime_s is None or lifetime_s <= 0:
            return []
        margin = min(self.config.rollover_margin_s, lifetime_s * 0.3)
        due = max(MIN_SESSION_AGE_S, lifetime_s - margin)
        deadline = max(due, lifetime_s - 0.5)
        number = self.session_number
        return [
            StartTimer(("rollover", number, "due"), due),
            StartTimer(("rollover", number, "deadline"), deadline),
        ]

    def _rollover_timer(self, key: tuple[Any, ...]) -> list[Action]:
        if len(key) != 3 or key[1] != self.session_number:
            return []
        if key[2] == "due":
            self._rollover_due = True
            return self._maybe_roll_over()
        return self._roll_over("deadline")

    def _maybe_roll_over(self) -> list[Action]:
        if self._rollover_due and self.idle():
            return self._roll_over("idle")
        return []

    def _roll_over(self, why: str) -> list[Action]:
        self._rollover_due = False
        if self._rolled_over:
            return []
        self._rolled_over = True
        self.stats.rollovers_requested += 1
        log.info("session_rollover", session=self.session_number, why=why)
        return [RollOver()]
