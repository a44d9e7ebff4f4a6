"""Counters and timers for one run, in one place, the cost of each response, and the session
summary printed at exit.

Counter names (`Metrics.counters`), incremented by the app as things happen:

| name | counts |
| --- | --- |
| `assistant_turns` | assistant replies that ended (completed or interrupted) |
| `user_turns`, `text_turns` | spoken user turns transcribed, typed lines sent |
| `reconnects`, `rollovers` | new sessions after a lost connection / before the session limit |
| `compactions` | older turns summarized into one system item |
| `barge_ins`, `truncations` | replies the user talked (or typed) over; truncates sent |
| `mic_blocks_dropped` | microphone blocks dropped because the reader fell behind |
| `mic_blocks_dropped_offline` | microphone blocks dropped from the offline buffer |
| `player_underruns` | device blocks the player had to fill with silence mid-reply |
| `outbox_dropped` | client events dropped because the outbox was full |
| `late_deltas_dropped` | audio deltas of a reply already cut or cancelled |
| `compaction_failures`, `compactions_abandoned` | compactions that failed / were given up |
| `summary_fallbacks`, `items_summarized` | extractive fallbacks; items folded into summaries |
| `error_<code>` | server `error` events, by code (`Metrics.count_error`: bounded) |
| `responses_<status>` | `response.done` events, by status (`Metrics.count_labelled`) |

Labels that come from the wire (error codes, statuses, unknown event types) are bounded
(`count_bounded`): at most `MAX_LABELS` distinct ones per family, each cut to
`MAX_LABEL_CHARS`, the rest counted under `other`; a server sending a new 1 MiB code every
second grows neither the process nor the metrics file.

Latencies (`Metrics.timings`, seconds, one sample per turn; the app clock is `time.monotonic`):

- `speech_end_to_first_delta`: `speech_stopped` handled -> the reply's first audio delta.
- `first_delta_to_first_sample`: first audio delta arrived -> its first sample handed to the
  device (jitter buffer plus the wait for the next device block).
- `barge_in_to_silence`: `speech_started` handled during a reply -> the reply's last sample
  (the end of the flush's fade) handed to the device.
- `barge_in_flush`: `speech_started` handled -> flush, truncate and cancel queued (app work).
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime_voicebot.config import Settings

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

MAX_LABELS = 32
"""Distinct wire labels (error codes, unknown event types, ...) kept per family."""
MAX_LABEL_CHARS = 64
"""Longest wire label kept; a longer one keeps its start and a digest of the whole."""
OTHER_LABEL = "other"
"""Where labels past `MAX_LABELS` are counted."""


def bounded_label(value: object, max_chars: int = MAX_LABEL_CHARS) -> str:
    """A short, printable name for a value from the wire (any JSON value).

    A string is kept up to ``max_chars`` (a longer one: its start, "…" and a digest, so two
    long names stay apart); a number, true/false or null as written; a list or an object by
    its kind only (``<list>``, ``<dict>``), never its contents.
    """
    if isinstance(value, str):
        text = value
    elif value is None:
        text = "null"
    elif isinstance(value, bool | int | float):
        text = str(value).lower() if isinstance(value, bool) else str(value)
    else:
        return f"<{type(value).__name__}>"
    if len(text) > max_chars:
        digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=4).hexdigest()
        text = f"{text[: max(1, max_chars - 10)]}…{digest}"
    return "".join(char if char.isprintable() else "?" for char in text)


def count_bounded(
    counts: dict[str, int],
    value: object,
    amount: int = 1,
    *,
    max_labels: int = MAX_LABELS,
    max_chars: int = MAX_LABEL_CHARS,
) -> str:
    """Count ``value`` in ``counts`` under its `bounded_label`, or under `OTHER_LABEL` once
    ``max_labels`` distinct labels are there; the label it was counted under."""
    label = bounded_label(value, max_chars)
    if label not in counts and len(counts) >= max_labels:
        label = OTHER_LABEL
    counts[label] = counts.get(label, 0) + amount
    return label


DROP_COUNTERS = {
    "mic_blocks": "mic_blocks_dropped",
    "mic_blocks_offline": "mic_blocks_dropped_offline",
    "player_underruns": "player_underruns",
    "outbox": "outbox_dropped",
    "late_deltas": "late_deltas_dropped",
}
"""Summary name -> counter name of everything dropped or missed."""


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


def _count(value: Any) -> int:
    """A token count from the wire: a non-negative int, anything else is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def billed_tokens(usage: Mapping[str, Any]) -> BilledTokens:
    """Split one `response.usage` (GA or beta shape, every field optional) for billing.

    - Input tokens the details do not attribute to text or audio (details missing) are
      billed as text; the same for output.
    - Cached tokens are a subset of the input tokens: with `cached_tokens_details` (GA) they
      split as given; without (beta) in proportion to the text/audio input split.
    - A cached count larger than its input count is capped at the input count.
    """
    inputs = _mapping(usage.get("input_token_details"))
    outputs = _mapping(usage.get("output_token_details"))
    audio_in = _count(inputs.get("audio_tokens"))
    text_in = _count(inputs.get("text_tokens"))
    text_in += max(0, _count(usage.get("input_tokens")) - text_in - audio_in)

    details = inputs.get("cached_tokens_details")
    if isinstance(details, Mapping):
        cached_text: float = _count(details.get("text_tokens"))
        cached_audio: float = _count(details.get("audio_tokens"))
    else:
        cached = _count(inputs.get("cached_tokens"))
        total_in = text_in + audio_in
        cached_audio = cached * audio_in / total_in if total_in else 0.0
        cached_text = cached - cached_audio
    cached_text = min(cached_text, text_in)
    cached_audio = min(cached_audio, audio_in)

    audio_out = _count(outputs.get("audio_tokens"))
    text_out = _count(outputs.get("text_tokens"))
    text_out += max(0, _count(usage.get("output_tokens")) - text_out - audio_out)
    return BilledTokens(
        text_input=text_in - cached_text,
        text_cached=cached_text,
        audio_input=audio_in - cached_audio,
        audio_cached=cached_audio,
        text_output=text_out,
        audio_output=audio_out,
    )


def usage_cost(usage: Mapping[str, Any], prices: Prices) -> float:
    """USD billed for one `response.usage`."""
    return billed_tokens(usage).cost(prices)


@dataclass
class Metrics:
    """Counters (turns, reconnects, drops, errors by code, ...), latency samples, tokens, cost."""

    started_at: float = field(default_factory=time.monotonic)
    counters: Counter[str] = field(default_factory=Counter)
    timings: dict[str, deque[float]] = field(default_factory=dict)
    tokens: BilledTokens = field(default_factory=BilledTokens)
    cost_usd: float = 0.0
    labelled: dict[str, dict[str, int]] = field(default_factory=dict)
    """Counts by wire label per family (``error``, ``responses``, ...), bounded."""

    def inc(self, name: str, amount: int = 1) -> None:
        """Count under a fixed name; names built from wire values go through
        `count_labelled` or `count_error` instead."""
        self.counters[name] += amount

    def count_labelled(self, family: str, value: object, amount: int = 1) -> str:
        """Count a wire value (any JSON value) as counter ``<family>_<label>``, bounded:
        at most `MAX_LABELS` labels a family, each at most `MAX_LABEL_CHARS`, the rest
        under ``<family>_other``. The label counted."""
        label = count_bounded(self.labelled.setdefault(family, {}), value, amount)
        self.counters[f"{family}_{label}"] += amount
        return label

    def count_error(self, code: object) -> str:
        """Count one server ``error`` event by its code (any JSON value; missing or empty:
        ``unknown``), bounded like `count_labelled`. The label counted."""
        return self.count_labelled("error", "unknown" if code in (None, "") else code)

    def observe(self, name: str, seconds: float) -> None:
        self.timings.setdefault(name, deque(maxlen=MAX_SAMPLES)).append(seconds)

    def last(self, name: str) -> float | None:
        samples = self.timings.get(name)
        return samples[-1] if samples else None

    def add_usage(self, usage: Mapping[str, Any], prices: Prices) -> float:
        """Count one response's usage; its cost in USD (also added to `cost_usd`)."""
        billed = billed_tokens(usage)
        cost = billed.cost(prices)
        self.tokens += billed
        self.cost_usd += cost
        return cost

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
        c = self.counters
        tokens = self.tokens
        return {
            "duration_s": round(time.monotonic() - self.started_at, 1),
            "turns": c["assistant_turns"],
            "user_turns": c["user_turns"] + c["text_turns"],
            "tokens": {
                "input": round(tokens.input),
                "cached": round(tokens.cached),
                "output": round(tokens.output),
                "billed": {name: round(value, 1) for name, value in asdict(tokens).items()},
            },
            "cost_usd": round(self.cost_usd, 6),
            "latency": latencies,
            "reconnects": c["reconnects"],
            "rollovers": c["rollovers"],
            "compactions": c["compactions"],
            "truncations": c["truncations"],
            "drops": {name: c[counter] for name, counter in DROP_COUNTERS.items()},
            "errors": {
                name.removeprefix("error_"): n
                for name, n in sorted(c.items())
                if name.startswith("error_")
            },
            "counters": dict(sorted(c.items())),
        }
