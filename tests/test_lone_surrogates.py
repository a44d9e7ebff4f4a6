"""Half a UTF-16 pair (found by the fuzz harness): JSON may carry one as ``"\\ud800"``, and no
UTF-8 file or terminal can take it. It is replaced where it enters (the frame parser, stdin's
surrogateescape in the transcript, the views), never lost with the text around it."""

from __future__ import annotations

import io
import json
from pathlib import Path

from realtime_voicebot.transcript import TranscriptWriter, read_records
from realtime_voicebot.transport.events import EventParser, ServerEventType
from realtime_voicebot.ui import JsonLinesView, PlainView

LONE = "\ud800"


def test_the_parser_replaces_lone_surrogates_and_keeps_pairs() -> None:
    parser = EventParser()
    frame = json.dumps(
        {
            "type": "response.output_text.delta",
            "item_id": "item_1",
            "delta": f"say {LONE}hi \U0001f600",
            "item": {"content": [{"text": "\udc00"}], f"k{LONE}": 1},
        }
    )
    assert "\\ud800" in frame and "\\ud83d\\ude00" in frame  # escaped on the wire
    event = parser.parse(frame)
    assert event is not None and event.type is ServerEventType.TEXT_DELTA
    assert event.data["delta"] == "say \ufffdhi \U0001f600"
    assert event.data["item"] == {"content": [{"text": "\ufffd"}], "k\ufffd": 1}
    assert parser.stats.surrogates_replaced == 1
    emoji = parser.parse(
        json.dumps({"type": "response.output_text.delta", "item_id": "i", "delta": "\U0001f600"})
    )
    assert emoji is not None and emoji.data["delta"] == "\U0001f600"
    assert parser.stats.surrogates_replaced == 1


def test_the_transcript_keeps_a_turn_holding_one(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TranscriptWriter(path)
    writer.write({"type": "turn", "role": "user", "text": "caf\udce9 ok"})  # surrogateescape
    writer.close()
    assert writer.errors == 0
    assert [r["text"] for r in read_records(path)] == ["caf\ufffd ok"]


def test_views_print_one_to_a_strict_utf8_terminal() -> None:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    plain = PlainView(out, err)
    plain.user_said(f"a{LONE}b")
    plain.assistant_delta("i", f"c{LONE}")
    plain.assistant_done("i", "", False)
    plain.error(f"e{LONE}")
    JsonLinesView(out, err).error(f"j{LONE}")
    printed = out.buffer.getvalue().decode() + err.buffer.getvalue().decode()  # type: ignore[attr-defined]
    assert "a\ufffdb" in printed and "c\ufffd" in printed and "e\ufffd" in printed
