"""Counters and timers for one run, in one place, and the session summary printed at exit."""

from __future__ import annotations

import statistics
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

MAX_SAMPLES = 10_000


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * (len(ordered) - 1))))
    return ordered[rank]


@dataclass
class Metrics:
    """Counters (turns, reconnects, drops, errors by code, ...) and latency samples."""

    started_at: float = field(default_factory=time.monotonic)
    counters: Counter[str] = field(default_factory=Counter)
    timings: dict[str, deque[float]] = field(default_factory=dict)
    cost_usd: float = 0.0

    def inc(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def observe(self, name: str, seconds: float) -> None:
        self.timings.setdefault(name, deque(maxlen=MAX_SAMPLES)).append(seconds)

    def last(self, name: str) -> float | None:
        samples = self.timings.get(name)
        return samples[-1] if samples else None

    def summary(self) -> dict[str, Any]:
        """Everything worth keeping from the run, JSON-ready."""
        latencies = {
            name: {
                "count": len(values),
                "median_ms": round(statistics.median(values) * 1000, 1),
                "p95_ms": round(percentile(list(values), 0.95) * 1000, 1),
            }
            for name, values in sorted(self.timings.items())
            if values
        }
        return {
            "duration_s": round(time.monotonic() - self.started_at, 1),
            "counters": dict(sorted(self.counters.items())),
            "latency": latencies,
            "cost_usd": round(self.cost_usd, 6),
        }
