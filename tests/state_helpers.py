"""Server event sequences for the state and compaction tests, in GA or beta wire spelling.

Every event is checked against the SDK's server union of its dialect, serialized, and parsed
back with `EventParser`, so that the tests exercise the GA/beta mapping. Wire names are
spelled here on purpose: this is the other side of the wire.
"""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

from realtime_voicebot.core import CoreConfig, Playback, SessionCore
from realtime_voicebot.core import actions as a
from realtime_voicebot.transport.events import PCM_BYTES_PER_MS, EventParser, ServerEvent

from .spec import validate_server

JSON = dict[str, Any]

WIRE: dict[str, dict[str, str]] = {
    "ga": {
        "item_added": "conversation.item.added",
        "audio_delta": "response.output_audio.delta",
        "audio_done": "response.output_audio.done",
        "transcript_delta": "response.output_audio_transcript.delta",
        "transcript_done": "response.output_audio_transcript.done",
        "text_delta": "response.output_text.delta",
        "text_done": "response.output_text.done",
        "assistant_audio_part": "output_audio",
        "assistant_text_part": "output_text",
    },
    "beta": {
        "item_added": "conversation.item.created",
        "audio_delta": "response.audio.delta",
        "audio_done": "response.audio.done",
        "transcript_delta": "response.audio_transcript.delta",
        "transcript_done": "response.audio_transcript.done",
        "text_delta": "response.text.delta",
        "text_done": "response.text.done",
        "assistant_audio_part": "audio",
        "assistant_text_part": "text",
    },
}

_UNSET = object()


def pcm_b64(ms: float) -> str:
    """Base64 of ``ms`` milliseconds of silent PCM16 24 kHz mono."""
    return base64.b64encode(b"\x00" * int(ms * PCM_BYTES_PER_MS)).decode()


class Server:
    """Builds server events of one dialect, validated and parsed like the client would."""

    def __init__(self, dialect: str = "ga") -> None:
        self.dialect = dialect
        self.parser = EventParser()
        self._ids = itertools.count(1)

    def event(self, wire_type: str, **fields: Any) -> ServerEvent:
        data: JSON = {"type": wire_type, "event_id": f"event_{next(self._ids)}", **fields}
        validate_server(data, self.dialect)
        parsed = self.parser.parse(json.dumps(data))
        assert parsed is not None, wire_type
        return parsed

    def name(self, key: str) -> str:
        return WIRE[self.dialect][key]

    # --- items ---------------------------------------------------------------------------

    def user_audio_item(self, item_id: str, transcript: str | None = None) -> JSON:
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": transcript}],
        }

    def text_item(self, item_id: str, role: str, text: str, status: str = "completed") -> JSON:
        part = self.name("assistant_text_part") if role == "assistant" else "input_text"
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": role,
            "status": status,
            "content": [{"type": part, "text": text}],
        }

    def assistant_item(
        self, item_id: str, status: str = "in_progress", transcript: str | None = None
    ) -> JSON:
        content = (
            []
            if transcript is None
            else [{"type": self.name("assistant_audio_part"), "transcript": transcript}]
        )
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def item_added(self, item: JSON, previous_item_id: Any = _UNSET) -> ServerEvent:
        fields: JSON = {"item": item}
        if previous_item_id is not _UNSET:
            fields["previous_item_id"] = previous_item_id
        return self.event(self.name("item_added"), **fields)

    def item_done(self, item: JSON, previous_item_id: str | None = None) -> ServerEvent:
        assert self.dialect == "ga", "beta has no conversation.item.done"
        return self.event("conversation.item.done", item=item, previous_item_id=previous_item_id)

    def item_deleted(self, item_id: str) -> ServerEvent:
        return self.event("conversation.item.deleted", item_id=item_id)

    def item_truncated(self, item_id: str, audio_end_ms: int) -> ServerEvent:
        return self.event(
            "conversation.item.truncated",
            item_id=item_id,
            content_index=0,
            audio_end_ms=audio_end_ms,
        )

    # --- user audio ----------------------------------------------------------------------

    def speech_started(self, item_id: str, audio_start_ms: int) -> ServerEvent:
        return self.event(
            "input_audio_buffer.speech_started", item_id=item_id, audio_start_ms=audio_start_ms
        )

    def speech_stopped(self, item_id: str, audio_end_ms: int) -> ServerEvent:
        return self.event(
            "input_audio_buffer.speech_stopped", item_id=item_id, audio_end_ms=audio_end_ms
        )

    def committed(self, item_id: str, previous_item_id: str | None = None) -> ServerEvent:
        return self.event(
            "input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id
        )

    def transcript_delta(self, item_id: str, delta: str) -> ServerEvent:
        return self.event(
            "conversation.item.input_audio_transcription.delta",
            item_id=item_id,
            content_index=0,
            delta=delta,
        )

    def transcript_completed(self, item_id: str, transcript: str) -> ServerEvent:
        return self.event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": 1.5},
        )

    def transcript_failed(self, item_id: str) -> ServerEvent:
        return self.event(
            "conversation.item.input_audio_transcription.failed",
            item_id=item_id,
            content_index=0,
            error={"type": "transcription_error", "code": "audio_unintelligible", "message": "x"},
        )

    # --- responses -----------------------------------------------------------------------

    def response_created(
        self, response_id: str, *, out_of_band: bool = False, metadata: JSON | None = None
    ) -> ServerEvent:
        """``out_of_band``: ``conversation_id`` null (``conversation: "none"``)."""
        response: JSON = {"id": response_id, "object": "realtime.response", "status": "in_progress"}
        if out_of_band:
            response["conversation_id"] = None
        if metadata is not None:
            response["metadata"] = metadata
        return self.event("response.created", response=response)

    def response_done(
        self,
        response_id: str,
        status: str = "completed",
        usage: JSON | None = None,
        output: list[JSON] | None = None,
        *,
        out_of_band: bool = False,
        metadata: JSON | None = None,
    ) -> ServerEvent:
        response: JSON = {"id": response_id, "object": "realtime.response", "status": status}
        if usage is not None:
            response["usage"] = usage
        if output is not None:
            response["output"] = output
        if out_of_band:
            response["conversation_id"] = None
        if metadata is not None:
            response["metadata"] = metadata
        return self.event("response.done", response=response)

    def output_item_added(self, response_id: str, item: JSON) -> ServerEvent:
        return self.event(
            "response.output_item.added", response_id=response_id, output_index=0, item=item
        )

    def output_item_done(self, response_id: str, item: JSON) -> ServerEvent:
        return self.event(
            "response.output_item.done", response_id=response_id, output_index=0, item=item
        )

    def _part(self, response_id: str, item_id: str) -> JSON:
        return {
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
        }

    def audio_delta(self, response_id: str, item_id: str, ms: float) -> ServerEvent:
        return self.event(
            self.name("audio_delta"), delta=pcm_b64(ms), **self._part(response_id, item_id)
        )

    def audio_done(self, response_id: str, item_id: str) -> ServerEvent:
        return self.event(self.name("audio_done"), **self._part(response_id, item_id))

    def assistant_transcript_delta(self, response_id: str, item_id: str, delta: str) -> ServerEvent:
        return self.event(
            self.name("transcript_delta"), delta=delta, **self._part(response_id, item_id)
        )

    def assistant_transcript_done(
        self, response_id: str, item_id: str, transcript: str
    ) -> ServerEvent:
        return self.event(
            self.name("transcript_done"), transcript=transcript, **self._part(response_id, item_id)
        )

    def text_delta(self, response_id: str, item_id: str, delta: str) -> ServerEvent:
        return self.event(self.name("text_delta"), delta=delta, **self._part(response_id, item_id))

    def text_done(self, response_id: str, item_id: str, text: str) -> ServerEvent:
        return self.event(self.name("text_done"), text=text, **self._part(response_id, item_id))

    def error(
        self, event_id: str | None, code: str | None = None, message: str = "failed"
    ) -> ServerEvent:
        error: JSON = {"type": "invalid_request_error", "message": message}
        if code is not None:
            error["code"] = code
        if event_id is not None:
            error["event_id"] = event_id
        return self.event("error", error=error)


def usage(
    input_tokens: int | None = None, output_tokens: int | None = None, **details: int
) -> JSON:
    """A response.usage object; omitted counts stay absent (the API makes them optional)."""
    data: JSON = {}
    if input_tokens is not None:
        data["input_tokens"] = input_tokens
    if output_tokens is not None:
        data["output_tokens"] = output_tokens
    if input_tokens is not None and output_tokens is not None:
        data["total_tokens"] = input_tokens + output_tokens
    inputs = {k[3:]: v for k, v in details.items() if k.startswith("in_")}
    outputs = {k[4:]: v for k, v in details.items() if k.startswith("out_")}
    if inputs:
        data["input_token_details"] = inputs
    if outputs:
        data["output_token_details"] = outputs
    return data


class Conversation:
    """A `SessionCore` fed by a `Server`: scripted turns; every action and sent event kept.

    ``state`` is the core's `Conversation` (the mirror and history). ``playback`` is what the
    core reads as the player's position; set it before a barge-in.
    """

    def __init__(self, dialect: str = "ga", **config: Any) -> None:
        self.srv = Server(dialect)
        self.playback = Playback()
        config = CoreConfig(dialect=dialect, **config)  # type: ignore[arg-type]
        self.core = SessionCore(config, playback=lambda: self.playback)
        self.state = self.core.conversation
        self.actions: list[a.Action] = []
        self.sent: list[JSON] = []
        self.records: list[JSON] = []
        self._audio_clock = 0
        self.last_id: str | None = None
        self.take(self.core.session_started(1, "start", None))

    def take(self, actions: list[a.Action]) -> list[JSON]:
        """Keep ``actions``; the client events among them."""
        self.actions.extend(actions)
        sent = [x.event for x in actions if isinstance(x, a.Send)]
        self.sent.extend(sent)
        self.records.extend(x.record for x in actions if isinstance(x, a.Record))
        return sent

    def apply(self, *events: ServerEvent) -> list[JSON]:
        """Feed server events; the client events the core sent in answer."""
        out: list[JSON] = []
        for event in events:
            out.extend(self.take(self.core.server_event(event)))
        return out

    def interrupt(self, played_ms: float, item_id: str | None) -> list[JSON]:
        """The user talks over ``item_id`` after ``played_ms`` of it: the truncate or delete."""
        self.playback = Playback(item_id, played_ms, audible=True, has_output=True)
        sent = self.take(self.core.interrupt("speech"))
        self.playback = Playback(has_output=True)
        return sent

    def new_session(self, reason: str = "reconnect") -> list[JSON]:
        """The connection was replaced: the client events the new session gets first."""
        number = self.core.session_number + 1
        self.last_id = None
        return self.take(self.core.session_started(number, reason, None))

    def should_play(self, event: ServerEvent) -> bool:
        return self.state.should_play(event.item_id or "", event.response_id)

    def take_records(self) -> list[JSON]:
        records, self.records = self.records, []
        return records

    def user_turn(
        self,
        item_id: str,
        transcript: str | None,
        *,
        speech_ms: int = 1000,
        complete: bool = True,
    ) -> None:
        """Speech, commit, the user item after the last one, then its transcript."""
        srv = self.srv
        start = self._audio_clock
        self._audio_clock += speech_ms + 500
        self.apply(
            srv.speech_started(item_id, start),
            srv.speech_stopped(item_id, start + speech_ms),
            srv.committed(item_id, self.last_id),
            srv.item_added(srv.user_audio_item(item_id), previous_item_id=self.last_id),
        )
        self.last_id = item_id
        if complete and transcript is not None:
            self.apply(srv.transcript_completed(item_id, transcript))

    def assistant_turn(
        self,
        response_id: str,
        item_id: str,
        transcript: str,
        *,
        audio_ms: float = 1000,
        chunks: int = 4,
        usage: JSON | None = None,
        finish: bool = True,
    ) -> None:
        """A whole audio response; ``finish=False`` stops after the deltas (still streaming)."""
        srv = self.srv
        item = srv.assistant_item(item_id)
        self.apply(
            srv.response_created(response_id),
            srv.output_item_added(response_id, item),
            srv.item_added(item, previous_item_id=self.last_id),
        )
        self.last_id = item_id
        words = transcript.split(" ")
        for index in range(chunks):
            part = " ".join(
                words[index * len(words) // chunks : (index + 1) * len(words) // chunks]
            )
            self.apply(
                srv.audio_delta(response_id, item_id, audio_ms / chunks),
                srv.assistant_transcript_delta(response_id, item_id, part + " "),
            )
        if not finish:
            return
        done_item = srv.assistant_item(item_id, "completed", transcript)
        self.apply(
            srv.audio_done(response_id, item_id),
            srv.assistant_transcript_done(response_id, item_id, transcript),
            srv.output_item_done(response_id, done_item),
        )
        if srv.dialect == "ga":
            self.apply(srv.item_done(done_item, previous_item_id=None))
        self.apply(srv.response_done(response_id, usage=usage, output=[done_item]))

    def exchange(self, n: int, *, tokens: int = 0, prefix: str = "") -> None:
        """``n`` user/assistant turn pairs, each with a fact-bearing sentence."""
        for index in range(n):
            tag = f"{prefix}{index}"
            self.user_turn(f"u{tag}", f"My order number {tag} ships to Paris?")
            self.assistant_turn(
                f"r{tag}",
                f"a{tag}",
                f"Order {tag} ships to Paris on Monday.",
                usage=usage(tokens, 10) if tokens else None,
            )
