"""Turn-taking: who talks now, and what happens when the user talks or types over a reply.

`TurnTaking` decides, from server events, typed lines, keys and the player's position:

- **interjections** (``false_interruption: resume``, the client owns turn-taking: the session
  runs with ``create_response: false`` and ``interrupt_response: false``): speech over a reply
  *pauses* it, keeping what is buffered and the played position. Speech shorter than
  `interruption_min_ms`, or whose transcript is empty or only a backchannel ("mm-hm",
  "yeah"), was not meant to interrupt: the reply resumes from the paused sample, and the noise
  gets no reply and leaves nothing in the conversation (deleted on the server, kept out of the
  transcript). Anything else is a real barge-in, decided when its transcript arrives (or after
  `transcript_wait_s`): the reply is truncated at the paused position and the user answered.
  The client then asks for every reply itself, when the server commits a user turn;
- **push-to-talk** (manual turns): a key starts the user's turn (any reply stops, truncated as
  in a barge-in; the input buffer is cleared; the microphone opens), the same key ends it
  (the microphone closes; commit; the reply is asked for once the server has the turn);

- **barge-in**, one path for both causes: the user starts talking (``speech_started``) or
  types a line while a reply plays. The reply goes silent within one block, the server is told
  how much of it was heard (``conversation.item.truncate`` at the played position, capped at
  the audio received; a delete when nothing was heard; nothing when it had played out), and
  the response is cancelled unless the server cancels it itself (speech with
  ``interrupt_response``). Late deltas of a cancelled response are never played.
- **typed lines**: a line becomes a user item with a client-chosen id, sent when no response
  runs (after a barge-in if one did), with one ``response.create``. It stays pending until a
  reply to it starts, so a session that dies first gets it again after the re-seed.
- **the reply watchdog**: while a reply is owed, a server that sends nothing at all for
  `response_timeout_s` gets the reply cancelled (and forgotten here, so typing goes on) and
  the user told; if it stays mute for as long again, the connection is dropped and a new
  session opened.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from realtime_voicebot.core.actions import (
    Action,
    BargeIn,
    CloseMicrophone,
    ErrorReported,
    InterruptionIgnored,
    OpenMicrophone,
    PausePlayback,
    Reconnect,
    ResumePlayback,
    Send,
    StartTimer,
    StatusChanged,
    StopPlayback,
    UserTurn,
)
from realtime_voicebot.core.conversation import Conversation
from realtime_voicebot.transport import payloads as pl
from realtime_voicebot.transport.events import (
    Dialect,
    ErrorCode,
    ServerEvent,
    ServerEventType,
    input_audio_clear,
    input_audio_commit,
    item_delete,
    item_truncate,
    message_create,
    response_cancel,
    response_create,
)

log = structlog.get_logger(component="turn_taking")

_S = ServerEventType


@dataclass(frozen=True, slots=True)
class Playback:
    """What the audio output is doing, read when a decision needs it."""

    item_id: str | None = None
    """The reply at the head of the player: playing, or filling its jitter buffer."""
    played_ms: float = 0.0
    """Milliseconds of that reply that have come out of the speaker."""
    audible: bool = False
    has_output: bool = False
    """False in text mode (no speaker, no file): replies are read, not heard."""


NOTHING_PLAYING = Playback()
WATCH_PERIODS = 3
"""The reply watchdog looks this many times per `response_timeout_s`."""
PlaybackProbe = Callable[[], Playback]

BACKCHANNEL_WORDS = frozenset(
    {
        "mm", "mmm", "mhm", "mm-hm", "mm-hmm", "hm", "hmm", "uh-huh", "uh", "huh", "ah", "aha",
        "oh", "yeah", "yes", "yep", "yup", "ok", "okay", "right", "sure", "cool", "alright",
        "i", "see", "got", "it", "go", "on",
    }
)  # fmt: skip
"""Words of a backchannel ("mm-hm", "yeah, right", "I see", "go on"): up to three of them and
nothing else is not a turn of its own."""


def is_backchannel(text: str) -> bool:
    """Whether a transcript is only a backchannel (or empty): no reply is owed for it."""
    words = [w.strip(".,!?;:'\"…-").lower() for w in text.split()]
    words = [w for w in words if w]
    return len(words) <= 3 and all(w in BACKCHANNEL_WORDS for w in words)


@dataclass
class Interjection:
    """Speech over a reply, not yet known to be noise or a real barge-in."""

    item_id: str | None
    """The user's item the server's VAD opened for it."""
    paused: bool
    generation: int
    deciding: bool = False
    """Longer than `interruption_min_ms`: waiting for its transcript."""
    heard: Playback | None = None
    """Where the reply was when the user began (a real barge-in truncates there: the block
    the device already held plays out after the pause, but the user had started talking)."""


@dataclass
class TypedLine:
    """A typed line the server has not answered yet (kept across sessions).

    ``sent_in`` is the session it was last sent to, ``response_id`` the response answering it.
    """

    item_id: str
    sent_in: int | None = None
    response_id: str | None = None


@dataclass
class TurnStats:
    barge_ins: int = 0
    truncations: int = 0
    typed_lines: int = 0
    typed_lines_resent: int = 0
    replies_requested: int = 0
    replies_retried: int = 0
    interjections: int = 0
    false_interruptions: int = 0
    push_to_talk_turns: int = 0
    watchdog_cancels: int = 0
    watchdog_reconnects: int = 0


class TurnTaking:
    """See the module docstring. ``playback`` reads the player's position (no I/O)."""

    def __init__(
        self,
        conversation: Conversation,
        *,
        dialect: Dialect = "ga",
        interrupt_response: bool = True,
        response_timeout_s: float = 15.0,
        vad_creates_replies: bool = True,
        resume_false_interruptions: bool = False,
        interruption_min_ms: float = 250.0,
        vad_overhead_ms: float | None = None,
        transcript_wait_s: float = 1.5,
        manual_turns: bool = False,
        playback: PlaybackProbe = lambda: NOTHING_PLAYING,
    ) -> None:
        self.conversation = conversation
        self.dialect: Dialect = dialect
        self.interrupt_response = interrupt_response
        self.response_timeout_s = response_timeout_s
        self.vad_creates_replies = vad_creates_replies
        """The server replies by itself to each turn its VAD commits (``create_response``)."""
        self.resume_false_interruptions = resume_false_interruptions
        self.interruption_min_ms = interruption_min_ms
        self.vad_overhead_ms = vad_overhead_ms
        """What the VAD adds to the speech it reports (padding + closing silence): speech is
        measured without it. None: unknown, so only the transcript decides."""
        self.transcript_wait_s = transcript_wait_s
        self.manual_turns = manual_turns
        """Push-to-talk: no VAD; the user's key starts and ends each turn."""
        self.replies_on_commit = resume_false_interruptions or manual_turns
        """The client asks for the reply to each committed user turn (the server does not)."""
        self.playback = playback
        self.talking = False
        """Push-to-talk: the key is down."""
        self.stats = TurnStats()
        self.user_speaking = False
        self.connected = False
        self._typed: dict[str, TypedLine] = {}
        self._creates: dict[str, None] = {}
        """Our ``response.create`` requests not answered by a ``response.created`` yet."""
        self._retry_reply = False
        self._vad_reply_owed = False
        self._interjection: Interjection | None = None
        self._interjections = 0
        self._noise: set[str] = set()
        """User items found to be noise before the server added them: deleted when it does."""
        self._reply_after_cancel = False
        self._server_events = 0
        self._watch_generation = 0
        self._watch_mark: int | None = None
        self._silent_periods = 0
        self._mute_generation = 0
        self._stalled_at: int | None = None
        """Server events counted at the last stall: unchanged a timeout later means mute."""

    # --- views ---------------------------------------------------------------------------

    @property
    def pending_typed_ids(self) -> list[str]:
        """Ids of typed lines not answered yet, oldest first."""
        return list(self._typed)

    @property
    def typed_unsent(self) -> int:
        """Typed lines waiting to be sent (a reply runs, or the connection is down). The
        shell stops taking lines at `TYPED_AHEAD`, so they never pile up here."""
        return sum(1 for line in self._typed.values() if line.sent_in is None)

    @property
    def reply_owed(self) -> bool:
        """A response runs, or one we (or the server's VAD) asked for has not started yet."""
        return (
            self.conversation.active_response_id is not None
            or bool(self._creates)
            or self._vad_reply_owed
        )

    def idle(self) -> bool:
        """No reply running, owed or playing, no typed line waiting, the user not speaking."""
        return not (self.reply_owed or self._typed or self.user_speaking or self.playback().audible)

    def snapshot(self) -> dict[str, Any]:
        return {
            "barge_ins": self.stats.barge_ins,
            "truncations": self.stats.truncations,
            "typed_lines": self.stats.typed_lines,
            "typed_lines_resent": self.stats.typed_lines_resent,
            "replies_requested": self.stats.replies_requested,
            "replies_retried": self.stats.replies_retried,
            "interjections": self.stats.interjections,
            "false_interruptions": self.stats.false_interruptions,
            "push_to_talk_turns": self.stats.push_to_talk_turns,
            "watchdog_cancels": self.stats.watchdog_cancels,
            "watchdog_reconnects": self.stats.watchdog_reconnects,
            "typed_lines_pending": len(self._typed),
        }

    # --- inputs --------------------------------------------------------------------------

    def on_event(self, event: ServerEvent) -> list[Action]:
        """React to one server event (after the conversation applied it)."""
        self._server_events += 1
        payload = event.payload
        actions: list[Action] = []
        if isinstance(payload, pl.SpeechStarted):
            actions += self._speech_started(payload)
        elif isinstance(payload, pl.SpeechStopped):
            self.user_speaking = False
            actions += self._speech_stopped(payload)
        elif isinstance(payload, pl.InputCommitted):
            self.user_speaking = False
            actions += self._committed(payload.item_id)
        elif event.type is _S.INPUT_CLEARED:
            self.user_speaking = False
        elif isinstance(payload, pl.ItemEvent):
            if event.type is _S.OUTPUT_ITEM_ADDED:
                self._answered(payload.response_id)
            elif event.type is _S.ITEM_ADDED and payload.item.id in self._noise:
                self._noise.discard(payload.item.id)
                actions.append(Send(item_delete(payload.item.id)))
        elif isinstance(payload, pl.ItemRef) and event.type in (
            _S.INPUT_TRANSCRIPT_COMPLETED,
            _S.INPUT_TRANSCRIPT_FAILED,
        ):
            actions += self._transcript(payload, event.type is _S.INPUT_TRANSCRIPT_FAILED)
        elif isinstance(payload, pl.ResponseCreated) and not payload.out_of_band:
            self._vad_reply_owed = False
            if self._creates:
                del self._creates[next(iter(self._creates))]
            for line in self._typed.values():
                confirmed = self.conversation.on_server(line.item_id)
                if confirmed and line.response_id is None:
                    line.response_id = payload.response_id
        elif isinstance(payload, pl.ResponseDone) and not payload.out_of_band:
            self._vad_reply_owed = False
            self._answered(payload.response_id)
            if self._reply_after_cancel and self.conversation.active_response_id is None:
                self._reply_after_cancel = False  # the cancelled reply ended: answer the user
                actions += self.request_reply()
        elif isinstance(payload, pl.ServerError) and payload.event_id in self._creates:
            del self._creates[payload.event_id]
            if payload.code == ErrorCode.ACTIVE_RESPONSE:
                self._retry_reply = True  # asked while another ran: ask again once it ends
        return actions + self.release() + self._watch()

    # --- speech over a reply -------------------------------------------------------------

    def _speech_started(self, speech: pl.SpeechStarted) -> list[Action]:
        self.user_speaking = True
        actions: list[Action] = []
        if self._interjection is not None:  # speaking on: the last one was meant
            actions += self._interjection_meant(reply=False)
        if not self.resume_false_interruptions:
            if self.interrupt_response:
                self.conversation.cancel_active()  # the server cancels it
            if self._something_playing():
                actions += self.barge_in("speech")
            return actions
        position = self.playback()
        playing = position.item_id is not None or position.audible
        if not playing and not self.reply_owed:
            return actions  # a new turn, nothing to interrupt
        self._interjections += 1
        self.stats.interjections += 1
        pause = position.has_output and playing
        self._interjection = Interjection(
            speech.item_id, pause, self._interjections, heard=position if pause else None
        )
        log.info("interjection", item_id=speech.item_id, paused_ms=round(position.played_ms))
        if speech.item_id is not None:
            self.conversation.hold(speech.item_id)
        return [*actions, PausePlayback()] if pause else actions

    def _speech_stopped(self, speech: pl.SpeechStopped) -> list[Action]:
        pending = self._interjection
        if pending is None or pending.deciding or speech.item_id != pending.item_id:
            return []
        reported = self.conversation.speech_ms(speech.item_id) if speech.item_id else None
        if reported is not None and self.vad_overhead_ms is not None:
            spoken = max(0.0, reported - self.vad_overhead_ms)
            if spoken < self.interruption_min_ms:
                return self._interjection_ignored("short")
        pending.deciding = True
        return [StartTimer(("interjection", pending.generation), self.transcript_wait_s)]

    def _transcript(self, ref: pl.ItemRef, failed: bool) -> list[Action]:
        pending = self._interjection
        if pending is None or ref.item_id != pending.item_id:
            return []
        if failed or not ref.text.strip():
            return self._interjection_ignored("empty")
        if is_backchannel(ref.text):
            return self._interjection_ignored("backchannel")
        return self._interjection_meant(reply=True)

    def _committed(self, item_id: str | None) -> list[Action]:
        if not self.replies_on_commit:
            if self.vad_creates_replies:
                self._vad_reply_owed = True
            return []
        pending = self._interjection
        if item_id in self._noise or (item_id and self.conversation.is_discarded(item_id)):
            return []  # noise: no reply of its own
        if pending is not None and pending.item_id == item_id:
            return []  # decided when its transcript comes
        if self.reply_owed:
            self._reply_after_cancel = True  # answered once the running reply ends
            return []
        return self.request_reply()

    def _interjection_ignored(
        self, reason: Literal["short", "backchannel", "empty"]
    ) -> list[Action]:
        """Noise or a backchannel: the reply plays on, the noise leaves no trace."""
        pending, self._interjection = self._interjection, None
        assert pending is not None
        self.stats.false_interruptions += 1
        log.info("interjection_ignored", item_id=pending.item_id, reason=reason)
        actions: list[Action] = [ResumePlayback()] if pending.paused else []
        if pending.item_id is not None:
            self.conversation.discard(pending.item_id)
            if self.conversation.on_server(pending.item_id):
                actions.append(Send(item_delete(pending.item_id)))
            else:
                self._noise.add(pending.item_id)
        return [*actions, InterruptionIgnored(pending.item_id, reason)]

    def _interjection_meant(self, *, reply: bool) -> list[Action]:
        """A real barge-in: truncate at the paused position, cancel, answer the user."""
        pending, self._interjection = self._interjection, None
        assert pending is not None
        if pending.item_id is not None:
            self.conversation.release(pending.item_id)
        was_running = self.conversation.active_response_id is not None
        actions = self.barge_in("speech", heard=pending.heard)
        if reply:
            if was_running:
                self._reply_after_cancel = True  # once the cancelled reply has ended
            elif pending.item_id is not None and self.conversation.on_server(pending.item_id):
                actions += self.request_reply()
        return actions

    # --- push-to-talk --------------------------------------------------------------------

    def push_to_talk(self) -> list[Action]:
        """The push-to-talk key: the first press starts the user's turn, the next ends it."""
        if not self.manual_turns:
            return []
        if not self.talking:
            self.talking = True
            self.user_speaking = True
            actions = self.barge_in("typed")  # nobody else stops the reply in manual mode
            return [
                *actions,
                Send(input_audio_clear()),
                OpenMicrophone(),
                StatusChanged("user speaking"),
            ]
        self.talking = False
        self.user_speaking = False
        self.stats.push_to_talk_turns += 1
        # The reply is asked for once the server has committed the turn (`_committed`): an
        # empty buffer is refused with an error and gets no reply.
        return [CloseMicrophone(), Send(input_audio_commit()), StatusChanged("thinking")]

    def typed_line(self, text: str) -> list[Action]:
        """The user typed a line: interrupt whatever plays or runs, then send it."""
        item = self.conversation.add_typed_line(text)
        self._typed[item.id] = TypedLine(item.id)
        self.stats.typed_lines += 1
        actions: list[Action] = [UserTurn(text, typed=True, item_id=item.id)]
        if self.reply_owed or self._something_playing():
            actions += self.barge_in("typed")
        return actions + self.release()

    def barge_in(
        self, cause: Literal["speech", "typed"], heard: Playback | None = None
    ) -> list[Action]:
        """Silence the reply, tell the server what was heard, cancel what still runs.

        ``heard``: where the reply was when the user began, if that was earlier (a pause)
        and it is still the same reply; otherwise where it is now.
        """
        conversation = self.conversation
        now = self.playback()
        position = heard if heard is not None and heard.item_id == now.item_id else now
        item_id = position.item_id or conversation.streaming_item_id
        actions: list[Action] = []
        if now.has_output and (now.item_id is not None or now.audible):
            actions.append(StopPlayback())
        heard_events = self._truncate_heard(item_id, position) if position.has_output else []
        server_cancels = (
            cause == "speech" and self.interrupt_response and not self.resume_false_interruptions
        )
        if conversation.active_response_id is not None and not server_cancels:
            conversation.cancel_active()
            heard_events.append(response_cancel())
        actions += [Send(event) for event in heard_events]
        if item_id is not None and any(e["type"] != "response.cancel" for e in heard_events):
            self.stats.barge_ins += 1
            self.stats.truncations += 1
            actions.append(BargeIn(item_id, position.played_ms, cause))
            log.info("barge_in", cause=cause, item_id=item_id, played_ms=round(position.played_ms))
        return actions

    def request_reply(self) -> list[Action]:
        """Ask the server for a reply (after tool outputs, or a typed line)."""
        event = response_create()
        self._creates[event["event_id"]] = None
        self.stats.replies_requested += 1
        return [Send(event), *self._watch()]

    def release(self) -> list[Action]:
        """Send what waits for a free turn: typed lines not sent to this session yet, or a
        reply the server refused while another ran."""
        if not self.connected or self.reply_owed:
            return []
        sessions = self.conversation.sessions
        # Lines a dead session lost go again together, with one reply; new lines one by one,
        # each with its own reply.
        lines = [t for t in self._typed.values() if t.sent_in not in (None, sessions)]
        if not lines:
            lines = [t for t in self._typed.values() if t.sent_in is None][:1]
        if not lines:
            if self._retry_reply:
                self._retry_reply = False
                self.stats.replies_retried += 1
                return self.request_reply()
            return []
        actions: list[Action] = []
        for line in lines:
            self.stats.typed_lines_resent += line.sent_in is not None
            line.sent_in = sessions
            text = self.conversation.items[line.item_id].text
            actions.append(Send(message_create("user", text, self.dialect, item_id=line.item_id)))
        self._retry_reply = False
        return actions + self.request_reply()

    def session_started(self) -> None:
        """A new, blank session: typed lines go again (after the seed), nothing is owed."""
        self.connected = True
        self.user_speaking = self.talking
        self._interjection = None
        self._noise.clear()
        self._reply_after_cancel = False
        self._watch_generation += 1  # the last session's watchdog and mute check mean nothing
        self._mute_generation += 1
        self._creates.clear()
        self._retry_reply = False
        self._vad_reply_owed = False
        for line in self._typed.values():
            line.response_id = None
        self._watch_mark = None

    def session_lost(self) -> None:
        self.connected = False
        self._watch_mark = None

    def timer_fired(self, key: Hashable) -> list[Action]:
        pending = self._interjection
        if pending is not None and key == ("interjection", pending.generation):
            return self._interjection_meant(reply=True)  # no transcript in time: meant
        if key == ("mute", self._mute_generation):
            return self._mute_check()
        if key != ("watchdog", self._watch_generation) or self._watch_mark is None:
            return []
        if not self.reply_owed:
            self._watch_mark = None
            return []
        if self._server_events != self._watch_mark:  # the server spoke: silence starts again
            self._silent_periods = 0
            return self._arm()
        self._silent_periods += 1
        if self._silent_periods < WATCH_PERIODS:
            return self._arm()
        return self._stalled()

    def _stalled(self) -> list[Action]:
        """A reply owed and nothing from the server for `response_timeout_s`: the user is
        told, the reply cancelled and forgotten here (late deltas are dropped), so the next
        turn can go. If the server says nothing for as long again, it is not coming back:
        the connection is renewed (the turns owed a reply go again on the new session)."""
        self._watch_mark = None
        self._creates.clear()
        self._vad_reply_owed = False
        self._reply_after_cancel = False
        self.stats.watchdog_cancels += 1
        log.warning("reply_stalled", timeout_s=self.response_timeout_s)
        seconds = f"{self.response_timeout_s:g}"
        message = f"The server has not answered for {seconds} s: cancelling the reply."
        actions: list[Action] = [ErrorReported("reply_timeout", message)]
        if self.conversation.active_response_id is not None:
            self.conversation.cancel_active()
            self.conversation.active_response_id = None
            actions.append(Send(response_cancel()))
        self._mute_generation += 1
        self._stalled_at = self._server_events
        mute_check = ("mute", self._mute_generation)
        return [*actions, StartTimer(mute_check, self.response_timeout_s)]

    def _mute_check(self) -> list[Action]:
        if self._stalled_at != self._server_events:
            return []  # it spoke again (if only to refuse the cancel)
        self.stats.watchdog_reconnects += 1
        log.warning("server_mute", seconds=2 * self.response_timeout_s)
        return [Reconnect(f"the server sent nothing for {2 * self.response_timeout_s:g} s")]

    # --- internals -----------------------------------------------------------------------

    def _something_playing(self) -> bool:
        position = self.playback()
        return position.item_id is not None or position.audible

    def _truncate_heard(self, item_id: str | None, position: Playback) -> list[dict[str, Any]]:
        """The truncate (or delete) telling the server how much of the reply was heard."""
        item = self.conversation.items.get(item_id or "")
        if item is None or item.role != "assistant" or not item.on_server:
            return []
        played_ms = position.played_ms if item.id == position.item_id else 0.0
        received = item.audio_ms
        if item.audio_complete and played_ms >= received:
            return []  # it had played to its end
        end_ms = math.floor(min(played_ms, received)) if played_ms > 0 else 0
        self.conversation.mark_truncated(item, end_ms)
        return [item_delete(item.id)] if end_ms <= 0 else [item_truncate(item.id, end_ms)]

    def _answered(self, response_id: str | None) -> None:
        """The reply to these typed lines began (or their response ended): not sent again."""
        if response_id is None:
            return
        for line in [t for t in self._typed.values() if t.response_id == response_id]:
            del self._typed[line.item_id]

    def _watch(self) -> list[Action]:
        """Arm the watchdog when a reply becomes owed; disarm it when none is."""
        if not self.reply_owed:
            self._watch_mark = None
            return []
        if self._watch_mark is not None:
            return []
        self._silent_periods = 0
        return self._arm()

    def _arm(self) -> list[Action]:
        """Look again in a third of the timeout: a stall is `WATCH_PERIODS` silent periods in
        a row, so it is told between `response_timeout_s` and a third more after the last
        event, whenever that event came."""
        self._watch_generation += 1
        self._watch_mark = self._server_events
        period = self.response_timeout_s / WATCH_PERIODS
        return [StartTimer(("watchdog", self._watch_generation), period)]
