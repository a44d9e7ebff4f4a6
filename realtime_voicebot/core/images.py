"""An image the user sends (``/image``, GA only): one user message and one reply.

The shell reads and checks the picture (`realtime_voicebot.image_input`); the core sends it
as an ``input_image`` part of a user message (after the question, when one was typed), with
a ``response.create``, the way a typed line goes: whatever plays or runs is interrupted
first. Its text in the history is its label, ``[image: NAME WxH]`` and the question (the
server's copy, which holds no name or size, confirms it but does not change it). Unlike a
typed line it is not sent again to a new session (the re-seed holds its text, not the
picture).
"""

from __future__ import annotations

from dataclasses import dataclass

from realtime_voicebot.core.actions import Action, ErrorReported, Send, UserTurn
from realtime_voicebot.core.conversation import Conversation
from realtime_voicebot.core.turn_taking import Playback, TurnTaking
from realtime_voicebot.transport.events import Dialect, image_message_create

GA_ONLY = "images need the GA dialect (beta sessions take no image input); use --dialect ga"


@dataclass(frozen=True, slots=True)
class ImageInput:
    """A checked PNG or JPEG, ready to send."""

    data: bytes
    mime_type: str
    name: str
    """What to call it on screen: the file name or the URL's last part."""
    width: int
    height: int
    question: str | None = None

    @property
    def label(self) -> str:
        return f"[image: {self.name} {self.width}x{self.height}]"


def image_turn(
    image: ImageInput,
    conversation: Conversation,
    turns: TurnTaking,
    dialect: Dialect,
    playback: Playback,
) -> list[Action]:
    """The actions that send ``image`` now (see the module docstring)."""
    if dialect != "ga":
        return [ErrorReported("image_needs_ga", GA_ONLY)]
    if not turns.connected:
        return [ErrorReported("image_offline", "not connected: the image was not sent; try again")]
    shown = f"{image.label} {image.question}" if image.question else image.label
    item = conversation.add_typed_line(shown)
    try:
        create = image_message_create(
            image.data, dialect, mime_type=image.mime_type, text=image.question, item_id=item.id
        )
    except ValueError as exc:  # the shell checked it already: a bug if this happens
        return [ErrorReported("image_invalid", f"the image was not sent: {exc}")]
    actions: list[Action] = [UserTurn(shown, typed=True)]
    if turns.reply_owed or playback.item_id is not None or playback.audible:
        actions += turns.barge_in("typed")
    actions.append(Send(create))
    return actions + turns.request_reply()
