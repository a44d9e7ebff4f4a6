"""Latencies and cost of one run, and the session summary printed at exit.

Counters live in the parts that count (the client, the session core and each of its parts,
the devices, the transcript writer, the tool runner); each exposes a ``snapshot()``.
`Metrics.summary(parts)` merges those snapshots with the latencies, tokens and cost kept here.

Latencies (`Metrics.timings`, seconds, one sample per turn; the clock is `time.monotonic`),
stamped by `LatencyTracker` from what the core reports and what the player reports:

- `speech_end_to_first_delta`: `speech_stopped` handled -> the reply's first audio delta.
- `first_delta_to_first_sample`: first audio delta arrived -> its first sample handed to the
  device (jitter buffer plus the wait for the next device block).
- `barge_in_to_silence`: a barge-in handled -> the reply's last sample (the end of the
  flush's fade) handed to the device.
- `barge_in_flush`: a barge-in decided -> the player flushed and the truncate queued.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import structlog

from realtime_voicebot.transport.payloads import Usage, parse_usage

if TYPE_CHECKING:
    from realtime_voicebot.config import Settings

log = structlog.get_logger(component="metrics")

MAX_SAMPLES = 10_000
PER_MILLION = 1_000_000

SPEECH_END_TO_FIRST_DELTA = "speech_end_to_first_delta"
FIRST_DELTA_TO_FIRST_SAMPLE = "first_delta_to_first_sample"
BARGE_IN_TO_SILENCE = "barge_in_to_silence"
BARGE_IN_FLUSH = "barge_in_flush"
LATENCY_NAMES = (
    SPEECH_END_TO_FIRST_DELTA,
    FIRST_DELTA_TO_FIRST_SAMPLE,
    BARGE_IN_TO_SILENCE,
    BARGE_IN_FLUSH,
)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * (len(ordered) - 1))))
    return ordered[rank]


@dataclass(frozen=True)
class Prices:
    """USD per million tokens (defaults: gpt-realtime list prices)."""

    text_input: float = 4.00
    text_cached_input: float = 0.40
    text_output: float = 16.00
    audio_input: float = 32.00
    audio_cached_input: float = 0.40
    audio_output: float = 64.00

    @classmethod
    def from_settings(cls, settings: Settings) -> Prices:
        return cls(
            text_input=settings.price_text_input,
            text_cached_input=settings.price_text_cached_input,
            text_output=settings.price_text_output,
            audio_input=settings.price_audio_input,
            audio_cached_input=settings.price_audio_cached_input,
            audio_output=settings.price_audio_output,
        )


@dataclass
class BilledTokens:
    """Tokens of one or more responses, split the way they are billed.

    `text_input` and `audio_input` are the uncached input tokens; cached ones are only in
    `text_cached` / `audio_cached` (never counted twice).
    """

    text_input: float = 0.0
    text_cached: float = 0.0
    audio_input: float = 0.0
    audio_cached: float = 0.0
    text_output: float = 0.0
    audio_output: float = 0.0

    def __iadd__(self, other: BilledTokens) -> BilledTokens:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def input(self) -> float:
        return self.text_input + self.text_cached + self.audio_input + self.audio_cached

    @property
    def cached(self) -> float:
        return self.text_cached + self.audio_cached

    @property
    def output(self) -> float:
        return self.text_output + self.audio_output

    def cost(self, prices: Prices) -> float:
        """USD for these tokens."""
        return (
            self.text_input * prices.text_input
            + self.text_cached * prices.text_cached_input
            + self.audio_input * prices.audio_input
            + self.audio_cached * prices.audio_cached_input
            + self.text_output * prices.text_output
            + self.audio_output * prices.audio_output
        ) / PER_MILLION


def billed_tokens(usage: Usage | Mapping[str, Any]) -> BilledTokens:
    """Split one `response.usage` (GA or beta shape, every field optional) for billing.

    - Input tokens the details do not attribute to text or audio (details missing) are
      billed as text; the same for output.
    - Cached tokens are a subset of the input tokens: with `cached_tokens_details` (GA) they
      split as given; without (beta) in proportion to the text/audio input split.
    - A cached count larger than its input count is capped at the input count.
    """
    if not isinstance(usage, Usage):
        usage = parse_usage(dict(usage)) or Usage()
    audio_in = usage.input_audio_tokens
    text_in = usage.input_text_tokens + usage.input_image_tokens
    text_in += max(0, usage.input_tokens - text_in - audio_in)

    if usage.cached_text_tokens is not None and usage.cached_audio_tokens is not None:
        cached_text: float = usage.cached_text_tokens
        cached_audio: float = usage.cached_audio_tokens
    else:
        cached = usage.input_cached_tokens
        total_in = text_in + audio_in
        cached_audio = cached * audio_in / total_in if total_in else 0.0
        cached_text = cached - cached_audio
    cached_text = min(cached_text, text_in)
    cached_audio = min(cached_audio, audio_in)

    audio_out = usage.output_audio_tokens
    text_out = usage.output_text_tokens
    text_out += max(0, usage.output_tokens - text_out - audio_out)
    return BilledTokens(
        text_input=text_in - cached_text,
        text_cached=cached_text,
        audio_input=audio_in - cached_audio,
        audio_cached=cached_audio,
        text_output=text_out,
        audio_output=audio_out,
    )


def usage_cost(usage: Usage | Mapping[str, Any], prices: Prices) -> float:
    """USD billed for one `response.usage`."""
    return billed_tokens(usage).cost(prices)


@dataclass
class Metrics:
    """Latency samples, tokens and cost of one run."""

    started_at: float = field(default_factory=time.monotonic)
    timings: dict[str, deque[float]] = field(default_factory=dict)
    tokens: BilledTokens = field(default_factory=BilledTokens)
    cost_usd: float = 0.0

    def observe(self, name: str, seconds: float) -> None:
        self.timings.setdefault(name, deque(maxlen=MAX_SAMPLES)).append(seconds)

    def last(self, name: str) -> float | None:
        samples = self.timings.get(name)
        return samples[-1] if samples else None

    def add_usage(self, usage: Usage | Mapping[str, Any], prices: Prices) -> float:
        """Count one response's usage; its cost in USD (also added to `cost_usd`)."""
        billed = billed_tokens(usage)
        cost = billed.cost(prices)
        self.tokens += billed
        self.cost_usd += cost
        return cost

    def latency_summary(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "count": len(values),
                "median_ms": round(statistics.median(values) * 1000, 1),
                "p95_ms": round(percentile(list(values), 0.95) * 1000, 1),
            }
            for name, values in sorted(self.timings.items())
            if values
        }

    def summary(self, parts: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """Everything worth keeping from the run, JSON-ready.

        ``parts`` are the snapshots of the parts that count, by name: ``core``, ``client``,
        ``player``, ``mic``, ``transcript``, ``tools``, ``app``. The headline figures are
        read from them; all of them are kept under ``parts``.
        """
        parts = parts or {}
        core = parts.get("core", {})

        def part(name: str, *keys: str) -> int:
            value: Any = parts.get(name, {})
            for key in keys:
                value = value.get(key, 0) if isinstance(value, Mapping) else 0
            return int(value) if isinstance(value, int | float) else 0

        tokens = self.tokens
        drops = {
            "mic_blocks": part("mic", "dropped_blocks"),
            "mic_blocks_offline": part("client", "mic_blocks_dropped_offline"),
            "player_underruns": part("player", "underruns"),
            "outbox": part("client", "outbox_dropped"),
            "late_deltas": part("core", "late_deltas_dropped"),
            "transcript_records": part("transcript", "dropped"),
        }
        return {
            "duration_s": round(time.monotonic() - self.started_at, 1),
            "turns": part("core", "replies"),
            "user_turns": part("core", "user_turns") + part("core", "turns", "typed_lines"),
            "tokens": {
                "input": round(tokens.input),
                "cached": round(tokens.cached),
                "output": round(tokens.output),
                "billed": {name: round(value, 1) for name, value in asdict(tokens).items()},
            },
            "cost_usd": round(self.cost_usd, 6),
            "latency": self.latency_summary(),
            "reconnects": part("client", "reconnects"),
            "rollovers": part("client", "rollovers"),
            "compactions": part("core", "compaction", "compactions"),
            "truncations": part("core", "turns", "truncations"),
            "tool_calls": part("core", "tool_calls", "calls"),
            "drops": drops,
            "errors": dict(core.get("errors", {})),
            "parts": {name: dict(snapshot) for name, snapshot in parts.items()},
        }


@dataclass(frozen=True, slots=True)
class LatencySample:
    """One latency sample, for listeners that need more than its value (the tracer)."""

    name: str
    seconds: float
    at: float
    """`time.monotonic` when the measured interval ended (``at - seconds``: when it began)."""
    item_id: str | None = None
    """The reply it is about, when the tracker knows it."""


class LatencyTracker:
    """Stamps the latencies above from what happened, with `time.monotonic`.

    ``on_sample(name, seconds)`` is called with each new sample (the live console shows it);
    listeners added with `add_listener` get each as a `LatencySample`. Per-item state is
    bounded: items flushed before they ever played are forgotten.
    """

    ITEMS_KEPT = 64

    def __init__(self, metrics: Metrics, on_sample: Callable[[str, float], None]) -> None:
        self.metrics = metrics
        self.on_sample = on_sample
        self.listener_errors = 0
        self._listeners: list[Callable[[LatencySample], None]] = []
        self._speech_ended_at: float | None = None
        self._first_delta_at: dict[str, float] = {}

    def add_listener(self, listener: Callable[[LatencySample], None]) -> None:
        """Also call ``listener`` with every sample. It must return at once; if it raises, the
        error is logged and counted and the sample still counts."""
        self._listeners.append(listener)

    def _sample(self, name: str, seconds: float, at: float, item_id: str | None = None) -> None:
        seconds = max(0.0, seconds)
        self.metrics.observe(name, seconds)
        self.on_sample(name, seconds)
        if not self._listeners:
            return
        sample = LatencySample(name, seconds, at, item_id)
        for listener in self._listeners:
            try:
                listener(sample)
            except Exception:  # a bug in a listener: logged, never fatal to the conversation
                self.listener_errors += 1
                log.exception("latency_listener_failed", sample=name)

    def speech_ended(self) -> None:
        self._speech_ended_at = time.monotonic()

    def reply_started(self, item_id: str) -> None:
        now = time.monotonic()
        self._first_delta_at[item_id] = now
        while len(self._first_delta_at) > self.ITEMS_KEPT:
            del self._first_delta_at[next(iter(self._first_delta_at))]
        if self._speech_ended_at is not None:
            self._sample(SPEECH_END_TO_FIRST_DELTA, now - self._speech_ended_at, now, item_id)
            self._speech_ended_at = None

    def first_sample(self, item_id: str, first_sample_at: float) -> None:
        arrived = self._first_delta_at.pop(item_id, None)
        if arrived is not None:
            self._sample(
                FIRST_DELTA_TO_FIRST_SAMPLE, first_sample_at - arrived, first_sample_at, item_id
            )

    def barge_in_flushed(self, decided_at: float) -> None:
        now = time.monotonic()
        self._sample(BARGE_IN_FLUSH, now - decided_at, now)

    def barge_in_silenced(self, decided_at: float, silenced_at: float) -> None:
        self._sample(BARGE_IN_TO_SILENCE, silenced_at - decided_at, silenced_at)
