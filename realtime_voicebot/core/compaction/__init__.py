"""Compaction: when to summarize (policy), the server side of one compaction (procedure), and
the driver that runs one at a time through its phases (compactor)."""

from realtime_voicebot.core.compaction.compactor import CompactionStats, Compactor, summary_inputs
from realtime_voicebot.core.compaction.policy import CompactionPlan, CompactionPolicy
from realtime_voicebot.core.compaction.procedure import Compaction

__all__ = [
    "Compaction",
    "CompactionPlan",
    "CompactionPolicy",
    "CompactionStats",
    "Compactor",
    "summary_inputs",
]
