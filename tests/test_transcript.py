"""TranscriptWriter (worker thread, bounded queue, redaction) and load_transcript."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from realtime_voicebot.core.compaction import Compaction, CompactionPolicy
from realtime_voicebot.core.conversation import Conversation as Mirror
from realtime_voicebot.core.recap import read_recap, seed_text
from realtime_voicebot.testing import scaled
from realtime_voicebot.transcript import (
    TranscriptWriter,
    default_transcript_path,
    load_transcript,
    read_records,
)

from .state_helpers import Conversation


def test_default_path_under_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert default_transcript_path(moment) == (
        tmp_path / "voicebot" / "transcripts" / "20260304T050607Z.jsonl"
    )
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_transcript_path(moment) == (
        tmp_path
        / "home"
        / ".local"
        / "state"
        / "voicebot"
        / "transcripts"
        / "20260304T050607Z.jsonl"
    )


async def test_writes_are_flushed_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "t.jsonl"
    writer = TranscriptWriter(path)
    assert writer.write({"type": "turn", "item_id": "u1", "role": "user", "text": "héllo"})
    assert await asyncio.to_thread(writer.flush, 5.0)
    # Flushed at once: readable while the writer is still open.
    [record] = read_records(path)
    assert record["text"] == "héllo" and record["item_id"] == "u1" and "ts" in record
    for n in range(2, 500):
        writer.write({"type": "turn", "item_id": f"u{n}", "text": str(n)})
    await writer.aclose()
    records = read_records(path)
    assert [r["item_id"] for r in records] == [f"u{n}" for n in range(1, 500)]
    assert writer.written == 499 and writer.dropped == 0
    assert not writer.write({"type": "turn"})  # closed: counted, not raised
    writer.close()  # idempotent


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    writer = TranscriptWriter(tmp_path / "t.jsonl", max_queue=2)
    stall = threading.Event()
    writer.redact = lambda text: (stall.wait(scaled(5)), text)[1]  # a disk that cannot keep up
    accepted = [writer.write({"type": "turn", "text": str(n)}) for n in range(10)]
    assert accepted.count(False) == writer.dropped > 0
    stall.set()
    writer.close()
    assert len(read_records(tmp_path / "t.jsonl")) == accepted.count(True)


def test_redaction_applies_to_text_fields(tmp_path: Path) -> None:
    writer = TranscriptWriter(tmp_path / "t.jsonl", redact=lambda t: t.replace("4111", "****"))
    writer.write(
        {"type": "turn", "text": "card 4111", "heard_text": "card 4111", "item_id": "4111"}
    )
    writer.close()
    [record] = read_records(tmp_path / "t.jsonl")
    assert record["text"] == "card ****" and record["heard_text"] == "card ****"
    assert record["item_id"] == "4111"


def test_load_returns_latest_summary_and_uncovered_turns(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    lines = [
        {"type": "turn", "item_id": "u0", "role": "user", "text": "old"},
        {"type": "turn", "item_id": "a0", "role": "assistant", "text": "old reply"},
        {"type": "turn", "item_id": "u1", "role": "user", "text": "kept tail"},
        {"type": "summary", "text": "S1", "summarized_ids": ["u0", "a0"]},
        {
            "type": "turn",
            "item_id": "a1",
            "role": "assistant",
            "text": "a long reply",
            "truncated": True,
            "heard_text": "a long",
        },
        {"type": "turn", "item_id": "a9", "role": "assistant", "text": "x", "truncated": True,
         "heard_text": ""},
        {"type": "turn", "item_id": "u0", "role": "user", "text": "late transcript of u0"},
        {"type": "turn", "item_id": "u2", "role": "user", "text": "newest"},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n{torn", encoding="utf-8")
    summary, turns = load_transcript(path)
    assert summary == "S1"
    assert [(t.item_id, t.role, t.text, t.truncated) for t in turns] == [
        ("u1", "user", "kept tail", False),
        ("a1", "assistant", "a long", True),
        ("u2", "user", "newest", False),
    ]


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_state_records_round_trip_into_a_resumed_session(
    tmp_path: Path, dialect: str
) -> None:
    path = tmp_path / "t.jsonl"
    writer = TranscriptWriter(path)
    conv = Conversation(dialect)
    conv.exchange(3, tokens=5000)
    plan = CompactionPolicy(threshold_tokens=1000, keep_items=2).due(conv.state)
    assert plan is not None
    compaction = Compaction(conv.state, plan)
    create, *deletes = compaction.begin("Orders 0 and 1 ship to Paris.", dialect)
    srv = conv.srv
    for event in [
        srv.item_added(srv.text_item(create["item"]["id"], "system", "s"), None),
        *(srv.item_deleted(d["item_id"]) for d in deletes),
    ]:
        conv.apply(event)
        compaction.on_event(event)
    conv.user_turn("u3", "And order 3?")
    for record in [*conv.take_records(), *conv.state.flush_records()]:
        writer.write(record)
    await writer.aclose()

    summary, turns = load_transcript(path)
    assert summary == "Orders 0 and 1 ship to Paris."
    assert [t.item_id for t in turns] == ["u2", "a2", "u3"]
    resumed = Mirror()
    resumed.restore(summary, [(t.role, t.text) for t in turns])
    text = seed_text(resumed)
    assert text is not None
    seeded_summary, recent = read_recap(text)
    assert seeded_summary == "Orders 0 and 1 ship to Paris."
    assert recent[-1] == "User: And order 3?"
    assert "number 0" not in text
