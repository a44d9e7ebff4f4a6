"""The per-block fast paths and the bounded bookkeeping give the same answers as before.

CPU: the echo gate's incremental reference meter against a full re-measurement of the window,
the single-string audio append against the generic builder. Memory: what a long conversation
keeps per response is bounded, and every turn is still recorded exactly once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from realtime_voicebot.audio.echo import ReferenceMeter
from realtime_voicebot.audio.output import PlaybackTap
from realtime_voicebot.audio.resample import (
    DBFS_FLOOR,
    PCM16_FULL_SCALE_SQUARED,
    mean_square_dbfs,
    rms_dbfs,
)
from realtime_voicebot.core.conversation import RESPONSES_KEPT
from realtime_voicebot.transport import events as ev

from .spec import validate_client
from .state_helpers import Conversation

RATE = 24000
FRAME = 480
WINDOW = 7200  # 300 ms


def bursts(blocks: int, block: int, seed: int) -> list[np.ndarray]:
    """Blocks of played audio: silence, quiet and loud stretches in random order."""
    rng = np.random.default_rng(seed)
    levels = rng.choice([0.0, 30.0, 3000.0, 20000.0], size=blocks)
    return [
        np.clip(rng.normal(0.0, level, block), -32768, 32767).astype(np.int16) for level in levels
    ]


def reference_level_dbfs(reference: np.ndarray, frame_samples: int) -> float:
    """The loudest frame's RMS level in a stretch of played audio, measured in full: what
    `ReferenceMeter` must match."""
    frames = reference.shape[0] // frame_samples
    if frames == 0:
        return rms_dbfs(reference)
    shaped = reference[: frames * frame_samples].astype(np.float64).reshape(frames, frame_samples)
    loudest = float(np.max(np.einsum("ij,ij->i", shaped, shaped))) / frame_samples
    return mean_square_dbfs(loudest / PCM16_FULL_SCALE_SQUARED)


@pytest.mark.parametrize("block", [FRAME, 240, 720])
def test_reference_meter_matches_a_full_measurement_of_the_window(block: int) -> None:
    tap = PlaybackTap(RATE)
    meter = ReferenceMeter(tap, WINDOW, FRAME)
    for played in bursts(200, block, seed=block):
        tap.append(played)
        incremental = meter.level_dbfs()
        if tap.total_samples % FRAME:  # the newest frame is partial: compare frame-aligned
            continue
        full = reference_level_dbfs(tap.recent(WINDOW), FRAME)
        assert incremental == pytest.approx(full, abs=1e-6)


def test_reference_meter_catches_up_after_a_long_gap_and_forgets_old_loudness() -> None:
    tap = PlaybackTap(RATE)
    meter = ReferenceMeter(tap, WINDOW, FRAME)
    tap.append(np.full(FRAME, 20000, dtype=np.int16))
    assert meter.level_dbfs() == pytest.approx(rms_dbfs(np.full(FRAME, 20000, np.int16)))
    for _ in range(100):  # 2 s of silence played while nobody asked (beyond the ring, too)
        tap.append(np.zeros(FRAME, dtype=np.int16))
    assert meter.level_dbfs() == DBFS_FLOOR
    assert tap.skipped_samples == 0  # it skipped ahead on its own, not by asking too late


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
