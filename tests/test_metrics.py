"""Cost of a response's usage (hand-computed), the price table in Settings, the summary."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.beta.realtime.realtime_response import RealtimeResponseUsage as BetaUsage
from openai.types.realtime.realtime_response_usage import RealtimeResponseUsage as GaUsage

from realtime_voicebot.config import load_settings
from realtime_voicebot.metrics import (
    BARGE_IN_TO_SILENCE,
    FIRST_DELTA_TO_FIRST_SAMPLE,
    SPEECH_END_TO_FIRST_DELTA,
    LatencySample,
    LatencyTracker,
    Metrics,
    Prices,
    billed_tokens,
    percentile,
    usage_cost,
)

LIST = Prices()  # gpt-realtime list prices, the Settings defaults

GA_USAGE: dict[str, Any] = {
    "total_tokens": 1350,
    "input_tokens": 1000,
    "output_tokens": 350,
    "input_token_details": {
        "text_tokens": 200,
        "audio_tokens": 800,
        "cached_tokens": 500,
        "cached_tokens_details": {"text_tokens": 100, "audio_tokens": 400},
    },
    "output_token_details": {"text_tokens": 50, "audio_tokens": 300},
}
# By hand, USD per million: uncached text 100 x 4 = 400, cached text 100 x 0.40 = 40,
# uncached audio 400 x 32 = 12 800, cached audio 400 x 0.40 = 160, text out 50 x 16 = 800,
# audio out 300 x 64 = 19 200; total 33 400 / 1e6.
GA_COST = 0.0334


def test_the_usage_examples_have_the_sdk_shapes() -> None:
    GaUsage.model_validate(GA_USAGE)
    beta = {**GA_USAGE, "input_token_details": {"text_tokens": 200, "audio_tokens": 800}}
    BetaUsage.model_validate(beta)


def test_ga_usage_costs_what_the_hand_computation_says() -> None:
    assert usage_cost(GA_USAGE, LIST) == pytest.approx(GA_COST, abs=1e-12)


def test_cached_tokens_are_billed_once_at_the_cached_price() -> None:
    billed = billed_tokens(GA_USAGE)
    assert (billed.text_input, billed.text_cached) == (100, 100)
    assert (billed.audio_input, billed.audio_cached) == (400, 400)
    assert billed.input == 1000 and billed.cached == 500 and billed.output == 350
    all_cached = {
        "input_tokens": 1000,
        "input_token_details": {
            "audio_tokens": 1000,
            "cached_tokens": 1000,
            "cached_tokens_details": {"audio_tokens": 1000},
        },
    }
    assert usage_cost(all_cached, LIST) == pytest.approx(1000 * 0.40 / 1e6)


def test_beta_cached_tokens_split_in_proportion_to_text_and_audio() -> None:
    beta = {
        "input_tokens": 1000,
        "output_tokens": 350,
        "input_token_details": {"text_tokens": 200, "audio_tokens": 800, "cached_tokens": 500},
        "output_token_details": {"text_tokens": 50, "audio_tokens": 300},
    }
    billed = billed_tokens(beta)
    # 500 cached over a 200/800 split: 100 text, 400 audio, the same as the GA example.
    assert billed.text_cached == pytest.approx(100) and billed.audio_cached == pytest.approx(400)
    assert usage_cost(beta, LIST) == pytest.approx(GA_COST)


def test_tokens_without_details_are_billed_as_text() -> None:
    usage = {"input_tokens": 1000, "output_tokens": 100}
    assert usage_cost(usage, LIST) == pytest.approx((1000 * 4 + 100 * 16) / 1e6)


def test_tokens_the_details_leave_out_are_billed_as_text() -> None:
    usage = {
        "input_tokens": 1000,
        "input_token_details": {"audio_tokens": 600},
        "output_tokens": 10,
        "output_token_details": {"audio_tokens": 10},
    }
    assert usage_cost(usage, LIST) == pytest.approx((400 * 4 + 600 * 32 + 10 * 64) / 1e6)


@pytest.mark.parametrize(
    "usage",
    [
        {},
        {"input_tokens": None, "output_tokens": "12", "input_token_details": None},
        {"input_tokens": True, "output_tokens": -5, "output_token_details": []},
    ],
)
def test_missing_or_malformed_fields_count_as_zero(usage: dict[str, Any]) -> None:
    assert usage_cost(usage, LIST) == 0.0


def test_a_cached_count_above_the_input_is_capped() -> None:
    usage = {
        "input_tokens": 10,
        "input_token_details": {
            "text_tokens": 10,
            "cached_tokens": 50,
            "cached_tokens_details": {"text_tokens": 50},
        },
    }
    billed = billed_tokens(usage)
    assert (billed.text_input, billed.text_cached) == (0, 10)
    assert usage_cost(usage, LIST) == pytest.approx(10 * 0.40 / 1e6)


def test_prices_come_from_settings_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEBOT_PRICE_AUDIO_OUTPUT", "100")
    settings = load_settings({"price_text_input": "1.5"})
    prices = Prices.from_settings(settings)
    assert prices == Prices(text_input=1.5, audio_output=100.0)
    # Only the audio output (300) and uncached text (100) prices changed.
    expected = GA_COST + (300 * (100 - 64) + 100 * (1.5 - 4)) / 1e6
    assert usage_cost(GA_USAGE, prices) == pytest.approx(expected)


def test_default_prices_are_the_list_prices() -> None:
    assert Prices.from_settings(load_settings({})) == Prices(4.0, 0.40, 16.0, 32.0, 0.40, 64.0)


def test_metrics_accumulate_usage_and_cost() -> None:
    metrics = Metrics()
    assert metrics.add_usage(GA_USAGE, LIST) == pytest.approx(GA_COST)
    metrics.add_usage({"input_tokens": 1000}, LIST)
    assert metrics.cost_usd == pytest.approx(GA_COST + 0.004)
    tokens = metrics.summary()["tokens"]
    assert (tokens["input"], tokens["cached"], tokens["output"]) == (2000, 500, 350)
    assert tokens["billed"]["text_input"] == 1100


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.5) == 51.0  # round(49.5) is 50 (banker's), index 50
    assert percentile([], 0.95) == 0.0


def test_summary_merges_the_parts_snapshots_with_latency() -> None:
    metrics = Metrics()
    parts = {
        "core": {
            "replies": 3,
            "user_turns": 2,
            "late_deltas_dropped": 0,
            "errors": {"rate_limit_exceeded": 2},
            "turns": {"typed_lines": 1, "truncations": 1},
            "compaction": {"compactions": 2},
            "tool_calls": {"calls": 4},
        },
        "client": {"reconnects": 1, "rollovers": 0, "outbox_dropped": 0},
        "mic": {"dropped_blocks": 4},
        "player": {"underruns": 1},
    }
    for seconds in (0.1, 0.3, 0.2):
        metrics.observe("speech_end_to_first_delta", seconds)
    summary = metrics.summary(parts)
    assert summary["turns"] == 3 and summary["user_turns"] == 3
    assert (summary["reconnects"], summary["rollovers"], summary["compactions"]) == (1, 0, 2)
    assert summary["truncations"] == 1 and summary["tool_calls"] == 4
    assert summary["drops"]["mic_blocks"] == 4 and summary["drops"]["player_underruns"] == 1
    assert sum(summary["drops"].values()) == 5
    assert summary["errors"] == {"rate_limit_exceeded": 2}
    assert summary["parts"] == parts  # every counter of every part is kept
    latency = summary["latency"]["speech_end_to_first_delta"]
    assert latency == {"count": 3, "median_ms": 200.0, "p95_ms": 300.0}
    assert summary["duration_s"] >= 0
    assert Metrics().summary()["turns"] == 0  # no parts: zeros, not a failure


def test_latency_listeners_get_each_sample_with_its_item_and_end() -> None:
    metrics = Metrics()
    shown: list[tuple[str, float]] = []
    tracker = LatencyTracker(metrics, lambda name, seconds: shown.append((name, seconds)))
    heard: list[LatencySample] = []

    def broken(sample: LatencySample) -> None:
        raise RuntimeError("a bug in a listener")

    tracker.add_listener(broken)
    tracker.add_listener(heard.append)
    tracker.speech_ended()
    tracker.reply_started("a1")
    tracker.first_sample("a1", first_sample_at=heard[0].at + 0.25)
    tracker.first_sample("a1", first_sample_at=heard[0].at + 0.5)  # once per item
    tracker.barge_in_silenced(decided_at=100.0, silenced_at=100.125)
    names = [s.name for s in heard]
    assert names == [SPEECH_END_TO_FIRST_DELTA, FIRST_DELTA_TO_FIRST_SAMPLE, BARGE_IN_TO_SILENCE]
    assert [s.item_id for s in heard] == ["a1", "a1", None]
    assert heard[1].seconds == pytest.approx(0.25) and heard[1].at == heard[0].at + 0.25
    assert (heard[2].seconds, heard[2].at) == (0.125, 100.125)
    # The broken listener is counted; the view, the metrics and the other listener still got all.
    assert tracker.listener_errors == 3
    assert [name for name, _ in shown] == names
    assert sorted(metrics.timings) == sorted(names)
