"""The per-block fast paths and the bounded bookkeeping give the same answers as before.

CPU: the single-string audio append against the generic builder (the echo gate's
incremental frame levels are checked in test_audio_echo.py). Memory: what a long conversation
keeps per response is bounded, and every turn is still recorded exactly once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from realtime_voicebot.audio.resample import rms_dbfs
from realtime_voicebot.core.conversation import RESPONSES_KEPT
from realtime_voicebot.transport import events as ev

from .spec import validate_client
from .state_helpers import Conversation


def test_rms_dbfs_of_int_and_float_blocks_agrees_with_the_definition() -> None:
    rng = np.random.default_rng(3)
    samples = rng.integers(-32768, 32767, size=(480, 2)).astype(np.int16)
    expected = 10 * np.log10(np.mean((samples.astype(np.float64) / 32768.0) ** 2))
    assert rms_dbfs(samples) == pytest.approx(expected, abs=1e-9)
    assert rms_dbfs(samples.astype(np.float32) / 32768.0) == pytest.approx(expected, abs=1e-5)


def test_audio_append_frame_is_the_generic_event_encoded() -> None:
    pcm = bytes(range(256)) * 8  # every byte value: base64 uses + and /
    frame = json.loads(ev.input_audio_append_frame(pcm))
    generic = json.loads(ev.encode(ev.input_audio_append(pcm)))
    assert frame["event_id"] != generic["event_id"]
    frame.pop("event_id"), generic.pop("event_id")
    assert frame == generic
    validate_client(json.loads(ev.input_audio_append_frame(pcm)), "ga")


def test_response_bookkeeping_is_bounded_and_recent_cancellations_hold() -> None:
    conv = Conversation("ga")
    state = conv.state
    total = RESPONSES_KEPT + 50
    for index in range(total):
        conv.user_turn(f"u{index}", f"question {index}")
        conv.assistant_turn(f"r{index}", f"a{index}", f"answer {index}")
        if index % 2:
            conv.apply(conv.srv.response_done(f"r{index}", status="cancelled"))
    assert len(state.responses) == RESPONSES_KEPT
    assert state.responses[f"r{total - 1}"] == "cancelled"
    assert "r0" not in state.responses
    assert state.is_cancelled(f"r{total - 1}") and not state.is_cancelled(f"r{total - 2}")


def test_each_turn_is_recorded_once_across_a_long_run_and_the_final_flush() -> None:
    conv = Conversation("ga")
    for index in range(300):
        conv.user_turn(f"u{index}", f"question {index}")
        conv.assistant_turn(f"r{index}", f"a{index}", f"answer {index}")
    records = conv.take_records() + conv.state.flush_records()
    ids = [record["item_id"] for record in records if record["type"] == "turn"]
    assert len(ids) == 600 and len(set(ids)) == 600
    assert conv.state.flush_records() == []  # nothing is recorded twice
    assert all(item.text for item in conv.state.history)  # the history keeps every text
