"""Turn-taking: who talks now, and what happens when the user talks or types over a reply.

`TurnTaking` decides, from server events, typed lines and the player's position:

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
  `response_timeout_s` gets the reply cancelled and the user told; if it stays mute for as
  long again, the connection is dropped and a new session opened.
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
    ErrorReported,
    Reconnect,
    Send,
    StartTimer,
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
PlaybackProbe = Callable[[], Playback]


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
        playback: PlaybackProbe = lambda: NOTHING_PLAYING,
    ) -> None:
        self.conversation = conversation
        self.dialect: Dialect = dialect
        self.interrupt_response = interrupt_response
        self.response_timeout_s = response_timeout_s
        self.vad_creates_replies = vad_creates_replies
        """The server replies by itself to each turn its VAD commits (``create_response``)."""
        self.playback = playback
        self.stats = TurnStats()
        self.user_speaking = False
        self.connected = False
        self._typed: dict[str, TypedLine] = {}
        self._creates: dict[str, None] = {}
        """Our ``response.create`` requests not answered by a ``response.created`` yet."""
        self._retry_reply = False
        self._vad_reply_owed = False
        self._server_events = 0
        self._watch_generation = 0
        self._watch_mark: int | None = None
        self._watch_step = 0

    # --- views ---------------------------------------------------------------------------

    @property
    def pending_typed_ids(self) -> list[str]:
        """Ids of typed lines not answered yet, oldest first."""
        return list(self._typed)

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
            self.user_speaking = True
            if self.interrupt_response:
                self.conversation.cancel_active()  # the server cancels it
            if self._something_playing():
                actions += self.barge_in("speech")
        elif event.type in (_S.SPEECH_STOPPED, _S.INPUT_COMMITTED, _S.INPUT_CLEARED):
            self.user_speaking = False
            if event.type is _S.INPUT_COMMITTED and self.vad_creates_replies:
                self._vad_reply_owed = True
        elif isinstance(payload, pl.ItemEvent) and event.type is _S.OUTPUT_ITEM_ADDED:
            self._answered(payload.response_id)
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
        elif isinstance(payload, pl.ServerError) and payload.event_id in self._creates:
            del self._creates[payload.event_id]
            if payload.code == ErrorCode.ACTIVE_RESPONSE:
                self._retry_reply = True  # asked while another ran: ask again once it ends
        return actions + self.release() + self._watch()

    def typed_line(self, text: str) -> list[Action]:
        """The user typed a line: interrupt whatever plays or runs, then send it."""
        item = self.conversation.add_typed_line(text)
        self._typed[item.id] = TypedLine(item.id)
        self.stats.typed_lines += 1
        actions: list[Action] = [UserTurn(text, typed=True, item_id=item.id)]
        if self.reply_owed or self._something_playing():
            actions += self.barge_in("typed")
        return actions + self.release()

    def barge_in(self, cause: Literal["speech", "typed"]) -> list[Action]:
        """Silence the reply, tell the server what was heard, cancel what still runs."""
        conversation = self.conversation
        position = self.playback()
        item_id = position.item_id or conversation.streaming_item_id
        actions: list[Action] = []
        if position.has_output and (position.item_id is not None or position.audible):
            actions.append(StopPlayback())
        heard = self._truncate_heard(item_id, position) if position.has_output else []
        server_cancels = cause == "speech" and self.interrupt_response
        if conversation.active_response_id is not None and not server_cancels:
            conversation.cancel_active()
            heard.append(response_cancel())
        actions += [Send(event) for event in heard]
        if item_id is not None and any(e["type"] != "response.cancel" for e in heard):
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
        self.user_speaking = False
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
        if key != ("watchdog", self._watch_generation) or self._watch_mark is None:
            return []
        if not self.reply_owed:
            self._watch_mark = None
            return []
        if self._server_events != self._watch_mark:  # the server spoke meanwhile: rearm
            self._watch_step = 0
            return self._arm()
        self._watch_step += 1
        seconds = f"{self.response_timeout_s:g}"
        if self._watch_step == 1:
            self.stats.watchdog_cancels += 1
            log.warning("reply_stalled", timeout_s=self.response_timeout_s)
            message = f"The server has not answered for {seconds} s: cancelling the reply."
            actions: list[Action] = [ErrorReported("reply_timeout", message)]
            if self.conversation.active_response_id is not None:
                self.conversation.cancel_active()
                actions.append(Send(response_cancel()))
            return actions + self._arm()
        self.stats.watchdog_reconnects += 1
        self._watch_mark = None
        self._creates.clear()
        self._vad_reply_owed = False
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
        self._watch_step = 0
        return self._arm()

    def _arm(self) -> list[Action]:
        self._watch_generation += 1
        self._watch_mark = self._server_events
        return [StartTimer(("watchdog", self._watch_generation), self.response_timeout_s)]
