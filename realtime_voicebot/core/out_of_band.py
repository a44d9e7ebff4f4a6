"""Which responses run outside the conversation: the one place the core knows it.

An out-of-band response (``response.create`` with ``conversation: "none"``, the session's
own summary) runs beside the conversation's replies. Its events look like a reply's
(``response.output_item.added``, text deltas, ``response.done``) but none of them is part of
the conversation: nothing of it may enter the mirror, play, answer a typed line, count as
the active response, feed the reply watchdog or run a tool.

`OutOfBandResponses.claims(event)` says whether an event belongs to such a response.
`SessionCore.server_event` asks it first, and hands a claimed event to the compactor alone
(whose summary it may be); no other part ever sees it. A response is out of band when its
``response.created`` says so (``conversation_id`` null) or carries our marker in its
``metadata`` (`OUR_REQUEST_KEY`, set on every out-of-band request we send); every later
event of it is recognised by its ``response_id``.
"""

from __future__ import annotations

from dataclasses import dataclass

from realtime_voicebot.transport import payloads as pl
from realtime_voicebot.transport.events import ServerEvent

OUR_REQUEST_KEY = "voicebot_request"
"""The ``metadata`` key of our out-of-band requests; its value is the request's event id."""
RESPONSES_KEPT = 64
"""Out-of-band response ids remembered (a few run per compaction; older ones have ended)."""


def response_id_of(payload: pl.Payload) -> str | None:
    """The response an event's payload belongs to, when it names one."""
    if isinstance(payload, pl.ResponseCreated | pl.ResponseDone):
        return payload.response_id
    if isinstance(payload, pl.ItemEvent | pl.AudioDelta | pl.Delta | pl.Done):
        return payload.response_id
    return None


def our_request(metadata: dict[str, str]) -> str | None:
    """The event id of our out-of-band request that a response answers, from its metadata."""
    return metadata.get(OUR_REQUEST_KEY) or None


@dataclass
class OutOfBandStats:
    responses: int = 0
    """Out-of-band responses seen (ours and any other)."""
    events: int = 0
    """Their events, kept away from the conversation."""


class OutOfBandResponses:
    """The ids of the out-of-band responses of this conversation (bounded)."""

    def __init__(self) -> None:
        self.stats = OutOfBandStats()
        self._ids: dict[str, None] = {}

    def claims(self, event: ServerEvent) -> bool:
        """Whether ``event`` belongs to an out-of-band response (learnt at its creation)."""
        payload = event.payload
        if isinstance(payload, pl.ResponseCreated):
            if not (payload.out_of_band or our_request(payload.metadata)):
                return False
            self._ids[payload.response_id] = None
            while len(self._ids) > RESPONSES_KEPT:
                del self._ids[next(iter(self._ids))]
            self.stats.responses += 1
            self.stats.events += 1
            return True
        if isinstance(payload, pl.ResponseDone) and (
            payload.out_of_band or our_request(payload.metadata)
        ):
            self.stats.events += 1
            return True
        response_id = response_id_of(payload)
        if response_id is not None and response_id in self._ids:
            self.stats.events += 1
            return True
        return False

    def is_out_of_band(self, response_id: str | None) -> bool:
        return response_id is not None and response_id in self._ids
