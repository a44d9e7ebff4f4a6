"""When to compact, and over exactly which items."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from realtime_voicebot.core.conversation import TranscriptState

if TYPE_CHECKING:
    from realtime_voicebot.config import Settings
    from realtime_voicebot.core.conversation import Conversation, Item


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    """A snapshot of what one compaction summarizes and deletes, taken when it was due.

    ``summarize_ids``: the items whose words go into the new summary, in conversation order
    (turns carried over from an earlier session first, then the mirror's snapshot).
    ``delete_ids``: the exact server items to delete: the previous summary item(s), then the
    snapshot. ``anchor_id``: the first item kept verbatim (the new summary precedes it, at
    root). ``pending_transcripts``: summarized user items still waiting for a transcript.
    """

    summarize_ids: tuple[str, ...]
    delete_ids: tuple[str, ...]
    previous_summary_item_id: str | None
    previous_summary: str | None
    anchor_id: str | None
    pending_transcripts: tuple[str, ...]
    window_tokens: int
    reason: str


class CompactionPolicy:
    """Due when the window reaches ``threshold_tokens`` (or every ``every_turns`` user turns).

    Keeps the ``keep_items`` most recent items (summary items not counted) and never
    snapshots an item still being generated, nor anything after it.
    """

    def __init__(
        self, threshold_tokens: int = 20_000, keep_items: int = 4, every_turns: int | None = None
    ) -> None:
        bad_turns = every_turns is not None and every_turns <= 0
        if threshold_tokens <= 0 or keep_items < 0 or bad_turns:
            raise ValueError("threshold_tokens > 0, keep_items >= 0, every_turns > 0 or None")
        self.threshold_tokens = threshold_tokens
        self.keep_items = keep_items
        self.every_turns = every_turns

    @classmethod
    def from_settings(cls, settings: Settings) -> CompactionPolicy:
        return cls(
            settings.summary_threshold, settings.summary_keep_items, settings.summary_every_turns
        )

    def reason(self, conversation: Conversation) -> str | None:
        """Why a compaction is due now ("tokens", "turns"), or None."""
        if conversation.window_fresh and conversation.window_tokens >= self.threshold_tokens:
            return "tokens"
        if (
            self.every_turns is not None
            and conversation.user_turns_since_compaction >= self.every_turns
        ):
            return "turns"
        return None

    def due(self, conversation: Conversation) -> CompactionPlan | None:
        """The plan of the compaction to run now, or None."""
        reason = self.reason(conversation)
        return None if reason is None else self.snapshot(conversation, reason)

    def snapshot(self, conversation: Conversation, reason: str = "forced") -> CompactionPlan | None:
        """The plan over what is compactable now, due or not (None when nothing is)."""
        mirror = conversation.mirror
        summary_items = [item for item in mirror if item.is_summary]
        content = [item for item in mirror if not item.is_summary]
        boundary = len(content) - self.keep_items
        if boundary <= 0:
            return None
        for index, item in enumerate(content[:boundary]):
            if not _finished(conversation, item):
                boundary = index
                break
        boundary = _keep_calls_with_outputs(content, boundary)
        snapshot = content[:boundary]
        if not snapshot:
            return None
        summarize_ids = [
            *conversation.carried_ids,
            *(item.id for item in snapshot if not item.summarized),
        ]
        return CompactionPlan(
            summarize_ids=tuple(summarize_ids),
            delete_ids=tuple(item.id for item in [*summary_items, *snapshot]),
            previous_summary_item_id=conversation.summary_item_id,
            previous_summary=conversation.summary,
            anchor_id=content[boundary].id if boundary < len(content) else None,
            pending_transcripts=tuple(
                item_id
                for item_id in summarize_ids
                if conversation.items[item_id].transcript is TranscriptState.PENDING
            ),
            window_tokens=conversation.window_tokens,
            reason=reason,
        )


def _finished(conversation: Conversation, item: Item) -> bool:
    if not item.done or item.id == conversation.streaming_item_id:
        return False
    return item.response_id is None or item.response_id != conversation.active_response_id


def _keep_calls_with_outputs(content: list[Item], boundary: int) -> int:
    """Move the boundary back so that no kept function output loses its call."""
    calls = {
        item.call_id: index
        for index, item in enumerate(content[:boundary])
        if item.kind == "function_call" and item.call_id
    }
    for item in content[boundary:]:
        if item.kind == "function_call_output" and item.call_id in calls:
            boundary = min(boundary, calls[item.call_id])
    return boundary
