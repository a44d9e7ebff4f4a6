"""What happened, as the user sees it: the facts the core reports, to the view, the latency
clock and the cost meter.

The app performs the actions that do something (send, play, run a tool) and hands every
other one here. Tool calls, hosted MCP calls and approvals go to `ToolDisplay`; the rest is a
view call, a latency mark or a cost update. Nothing here decides anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from realtime_voicebot.core import actions as a
from realtime_voicebot.tool_display import ToolDisplay

if TYPE_CHECKING:
    from realtime_voicebot.metrics import LatencyTracker, Metrics, Prices
    from realtime_voicebot.ui import ConversationView


class Presenter:
    """Shows the core's facts; see the module docstring."""

    def __init__(
        self,
        view: ConversationView,
        latency: LatencyTracker,
        metrics: Metrics,
        prices: Prices,
        *,
        window_threshold: int,
    ) -> None:
        self.view = view
        self.latency = latency
        self.metrics = metrics
        self.prices = prices
        self.window_threshold = window_threshold
        self.tools = ToolDisplay(view)
        self.silenced_at: float | None = None
        """When the app last silenced a reply (`time.monotonic()`): a barge-in's latency
        `barge_in_to_flush` runs from there."""

    def show(self, action: a.Action) -> None:
        view = self.view
        if self.tools.show(action):  # tool calls, hosted MCP, approvals
            return
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
                if self.silenced_at is not None:
                    self.latency.barge_in_flushed(self.silenced_at)
            case a.ResponseFinished(usage=usage, window_tokens=window) if usage is not None:
                self.metrics.add_usage(usage, self.prices)
                view.cost(self.metrics.cost_usd)
                view.window(window, self.window_threshold)
            case a.OutOfBandFinished(usage=usage) if usage is not None:
                self.metrics.add_usage(usage, self.prices)  # the session's summary is billed too
                view.cost(self.metrics.cost_usd)
            case a.Compacted(items=items, summary_chars=chars):
                view.compaction(items, chars)
            case a.SessionBegan(reason=reason) if reason != "start":
                view.window(0, self.window_threshold)
            case a.Notice(text):
                view.notice(text)
            case a.ErrorReported(text=text) if text is not None:
                view.error(text)
