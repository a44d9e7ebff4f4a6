"""The soak of bench/soak.py, smaller: ~40 faults at random moments, the same verdict.

Dropped connections, ``error`` events, malformed frames, session expiries, and slow and
failing summaries hit the real app (headless, typed turns) against the fake server. It must
come out connected, with every user turn in the transcript file exactly once, each
connection fault recovered by a reconnect, every malformed frame dropped and counted, and
every slow or failing summary replaced by the extractive fallback (or its compaction
abandoned by a reconnect). Some faults land late in a session's life, so sessions are
also rolled over, with typed lines in flight (tests/test_typed_turns_survive.py).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import structlog

BENCH = Path(__file__).resolve().parents[1] / "bench"
FAULTS = 40


def load_soak() -> ModuleType:
    """bench/soak.py by path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_soak", BENCH / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.soak
async def test_soak_with_forty_faults(tmp_path: Path, restore_logging: None) -> None:
    soak = load_soak()
    # Seed 2 lands every kind of fault within 40 and lets a session live to its rollover.
    result = await soak.run_soak(FAULTS, seed=2, workdir=tmp_path)
    faults = result.faults

    assert result.total_faults >= FAULTS
    for kind in ("drop", "error", "malformed", "expire", "slow_summary", "failing_summary"):
        assert faults[kind] >= 1, (kind, dict(faults))
    # Every user turn is in the transcript file exactly once; the client ends connected.
    assert len(result.typed) >= 5
    assert result.missing_turns == [] and result.duplicated_turns == []
    assert result.connected_at_end and result.exit_code == 0
    recoveries = result.recoveries
    assert recoveries["reconnects"] == faults["drop"] + faults["expire"]
    assert recoveries["expiries_recovered"] == faults["expire"]
    assert recoveries["malformed_frames_dropped"] == faults["malformed"]
    summary_faults = faults["slow_summary"] + faults["failing_summary"]
    assert recoveries["compaction_fallbacks"] + recoveries["compactions_abandoned"] >= (
        summary_faults
    )
    assert recoveries["compaction_fallbacks"] >= 1 and recoveries["compactions"] >= 1
    # The figures print the count of every fault and every recovery by name.
    notes = {figure.name: figure.note for figure in soak.report(result)}
    assert all(f"{k} {v}" in notes["soak: faults injected"] for k, v in faults.items())
    wanted = ("reconnects", "rollovers", "compaction_fallbacks")
    assert all(f"{k} {recoveries[k]}" in notes["soak: recoveries"] for k in wanted)
