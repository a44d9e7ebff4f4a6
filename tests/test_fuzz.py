"""The hostile-server fuzz of bench/fuzz.py, small: a proxy mutating the fake server's frames
while the real app holds a typed conversation through it (issue 13, beyond the list).

The checks are the bench's: no crash, no hang, no reconnect storm, memory within a bound,
the key never printed, every user turn in the transcript exactly once. The mutations the app
does not survive yet are named in `OPEN_ISSUES` with the issue item that fixes them; the full
catalog is expected to find something until that list is empty.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_fuzz() -> ModuleType:
    """bench/fuzz.py by path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_fuzz", BENCH / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


fuzz = load_fuzz()


async def test_a_proxy_that_mutates_nothing_finds_nothing(tmp_path: Path) -> None:
    result = await fuzz.run_fuzz(0, seed=3, workdir=tmp_path, rate=0.0, min_turns=3)
    assert result.findings == []
    assert [outcome for _, outcome in result.turns] == ["answered"] * 4
    assert result.frames > 20 and result.connections == 1
    assert all(n == 1 for n in result.transcript_counts.values())


SLOW_KINDS = frozenset({"go_silent", "disconnect", "oversize"})
"""Mutations that cost seconds each (a silence the bot must wait out, a reconnect)."""


async def test_many_frame_mutations_hold(tmp_path: Path) -> None:
    budget = 150
    kinds = {k: w for k, w in fuzz.held_kinds().items() if k not in SLOW_KINDS}
    result = await fuzz.run_fuzz(
        budget,
        seed=1,
        workdir=tmp_path,
        kinds=kinds,
        targets=fuzz.held_targets(),
        deadline_s=120,
    )
    summary = f"findings {result.findings}; log tail {result.mutation_log[-8:]}"
    assert result.findings == [], summary
    assert sum(result.mutations.values()) >= budget
    assert result.mutations["error_text"] >= 1  # the key was echoed back at least once
    assert result.final_answered and result.answered >= 1
    assert result.rss_peak_mb - result.rss_start_mb < fuzz.MEMORY_BOUND_MB


async def test_silence_drops_and_oversized_frames_hold(tmp_path: Path) -> None:
    kinds = {k: w for k, w in fuzz.held_kinds().items() if k in SLOW_KINDS}
    assert set(kinds) == SLOW_KINDS
    result = await fuzz.run_fuzz(
        4, seed=5, workdir=tmp_path, kinds=kinds, rate=0.05, deadline_s=120
    )
    assert result.findings == [], f"{result.findings}; {result.mutation_log[-8:]}"
    assert sum(result.mutations.values()) >= 4 and result.final_answered


def test_nothing_is_known_to_break_the_app() -> None:
    assert fuzz.OPEN_ISSUES == {}  # every finding so far is fixed and has a test


@pytest.mark.parametrize(
    ("name", "finding"),
    [("error-code-list", "crash"), ("lost-response-done", "hang")],
)
async def test_the_checks_catch_a_crash_and_a_hang(
    name: str, finding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness itself: a bug planted in the app (the issues it found are fixed) must be
    reported, as a crash (an exception out of the receive path) or a hang (a typed line never
    asked a reply for)."""
    from realtime_voicebot.app import VoiceBot
    from realtime_voicebot.core.turn_taking import TurnTaking
    from realtime_voicebot.transport import payloads as pl

    if finding == "crash":
        feed = VoiceBot._on_transport

        def crash_on_errors(self: VoiceBot, event: object) -> None:
            if isinstance(getattr(event, "payload", None), pl.ServerError):
                raise TypeError("planted: unhashable type")
            feed(self, event)

        monkeypatch.setattr(VoiceBot, "_on_transport", crash_on_errors)
    else:
        asked = TurnTaking.request_reply
        calls = iter(range(10**6))

        def lose_the_second(self: TurnTaking) -> list[object]:
            return [] if next(calls) == 1 else asked(self)  # type: ignore[return-value]

        monkeypatch.setattr(TurnTaking, "request_reply", lose_the_second)
    result = await fuzz.reproduce(name, turns=2, turn_bound_s=2.0, final_bound_s=2.0)
    assert any(line.startswith(finding) for line in result.findings), result.findings
