"""Labels from the wire are bounded (issue 13, item 11): a server inventing event types or
error codes grows neither the process nor the metrics file."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Iterator

from realtime_voicebot.core import SessionCore
from realtime_voicebot.labels import (
    MAX_LABEL_CHARS,
    MAX_LABELS,
    OTHER_LABEL,
    bounded_label,
    count_bounded,
)
from realtime_voicebot.metrics import Metrics
from realtime_voicebot.transport.events import EventParser
from realtime_voicebot.ui import summary_lines

MIB = 1024 * 1024
NAMES = 200


def huge_names() -> Iterator[str]:
    """200 distinct names of 1 MiB each, made one at a time."""
    for n in range(NAMES):
        yield f"{n:04d}" + "x" * (MIB - 4)


def retained_bytes(work: object) -> int:
    """Bytes still allocated after ``work()`` ran (its temporaries freed)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()  # type: ignore[operator]
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_200_unknown_event_types_of_1_mib_keep_the_parser_small() -> None:
    parser = EventParser()

    def parse_all() -> None:
        for name in huge_names():
            assert parser.parse(json.dumps({"type": name})) is None

    assert retained_bytes(parse_all) < 64 * 1024
    stats = parser.stats
    assert stats.unknown_type == NAMES
    assert len(stats.unknown_types) == MAX_LABELS + 1
    assert stats.unknown_types[OTHER_LABEL] == NAMES - MAX_LABELS
    assert all(len(label) <= MAX_LABEL_CHARS for label in stats.unknown_types)
    assert sum(stats.unknown_types.values()) == NAMES


def error_frame(code: object) -> str:
    return json.dumps({"type": "error", "error": {"type": "server_error", "code": code}})


def test_200_error_codes_of_1_mib_keep_metrics_and_their_file_small() -> None:
    parser, core = EventParser(), SessionCore()

    def count_all() -> None:
        for name in huge_names():
            event = parser.parse(error_frame(name))
            assert event is not None
            core.server_event(event)

    assert retained_bytes(count_all) < 64 * 1024
    for hostile in (["a", "list"], {"an": "object"}, 10**300, None, "", True, "\x1b[2J"):
        event = parser.parse(error_frame(hostile))
        assert event is not None
        core.server_event(event)
    summary = Metrics().summary({"core": core.snapshot()})
    assert len(json.dumps(summary)) < 16 * 1024
    errors = summary["errors"]
    assert len(errors) == MAX_LABELS + 1 and errors[OTHER_LABEL] == NAMES - MAX_LABELS + 7
    assert sum(errors.values()) == NAMES + 7
    assert sum(len(line) for line in summary_lines(summary)) < 8 * 1024


def test_known_codes_and_types_are_counted_by_their_own_name() -> None:
    parser, core = EventParser(), SessionCore()
    for code in ("session_expired", "session_expired", "server_error", None, ["x"]):
        event = parser.parse(error_frame(code))
        assert event is not None
        core.server_event(event)
    assert core.snapshot()["errors"] == {
        "session_expired": 2,
        "server_error": 2,  # no code: counted by its type
        "['x']": 1,
    }
    done = parser.parse(json.dumps({"type": "response.done", "response": {"id": "r"}}))
    assert done is not None
    core.server_event(done)
    assert core.snapshot()["responses"] == {"completed": 1}
    parser = EventParser()
    parser.parse('{"type": "response.brand_new"}')
    parser.parse('{"type": "response.brand_new"}')
    assert parser.stats.unknown_types == {"response.brand_new": 2}


def test_labels_are_short_printable_and_keep_long_names_apart() -> None:
    first, second = ("a" * 100 + "1"), ("a" * 100 + "2")
    assert bounded_label(first) != bounded_label(second)
    assert len(bounded_label(first)) <= MAX_LABEL_CHARS
    assert bounded_label("tab\there\x1b[31m") == "tab?here?[31m"
    assert bounded_label({"k": "v" * MIB}) == "<dict>"
    assert bounded_label(1.5) == "1.5" and bounded_label(False) == "false"
    counts: dict[str, int] = {}
    for n in range(5):
        count_bounded(counts, f"code{n}", max_labels=3)
    assert counts == {"code0": 1, "code1": 1, "code2": 1, OTHER_LABEL: 2}
