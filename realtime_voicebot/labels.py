"""Names that come from the wire (error codes, statuses, event types), bounded.

A server can send a new 1 MiB error code every second; counting them by name must grow
neither the process nor the metrics file. Every such family keeps at most `MAX_LABELS`
distinct labels of at most `MAX_LABEL_CHARS`, the rest counted under `OTHER_LABEL`.
"""

from __future__ import annotations

import hashlib

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
