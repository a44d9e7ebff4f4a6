from __future__ import annotations

import random

import pytest

from realtime_voicebot.config import load_settings
from realtime_voicebot.errors import (
    Disconnected,
    FatalConnectionError,
    SessionConfigError,
    VoicebotError,
    classify,
)
from realtime_voicebot.transport.client import Backoff, OutboundAudio, session_lifetime
from realtime_voicebot.transport.endpoint import EndpointError, build_endpoint


def test_openai_ga_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret123")
    endpoint = build_endpoint(load_settings())
    assert endpoint.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert endpoint.headers == {"Authorization": "Bearer sk-secret123"}
    assert "secret123" not in endpoint.url and "secret123" not in repr(endpoint)


def test_openai_beta_endpoint_adds_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    endpoint = build_endpoint(load_settings({"dialect": "beta", "model": "gpt-4o-realtime"}))
    assert endpoint.headers["OpenAI-Beta"] == "realtime=v1"
    assert endpoint.url.endswith("/v1/realtime?model=gpt-4o-realtime")


def test_url_override_and_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    s = load_settings({"url": "ws://127.0.0.1:8765/v1/"})
    assert build_endpoint(s).url == "ws://127.0.0.1:8765/v1/realtime?model=gpt-realtime"
    monkeypatch.setenv("OPENAI_BASE_URL", "https://proxy.example/v1")
    assert build_endpoint(load_settings()).url.startswith("wss://proxy.example/v1/realtime?")


def test_azure_v1_and_legacy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-secret")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com/")
    v1 = build_endpoint(load_settings({"provider": "azure", "azure_deployment": "dep"}))
    assert v1.url == "wss://res.openai.azure.com/openai/v1/realtime?model=dep"
    assert v1.headers == {"api-key": "az-secret"}
    legacy = build_endpoint(
        load_settings(
            {
                "provider": "azure",
                "azure_deployment": "dep",
                "azure_api_version": "2025-04-01-preview",
            }
        )
    )
    assert legacy.url == (
        "wss://res.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=dep"
    )
    assert "az-secret" not in legacy.url


def test_missing_key_says_what_to_do() -> None:
    with pytest.raises(EndpointError, match=r"OPENAI_API_KEY.*--fake-server"):
        build_endpoint(load_settings())
    with pytest.raises(EndpointError, match="AZURE_OPENAI_ENDPOINT"):
        build_endpoint(load_settings({"provider": "azure"}))


def test_backoff_doubles_with_jitter_and_caps() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(1))
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        delays = [backoff.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jitter


def test_outbound_audio_bounded_and_counts_drops() -> None:
    audio = OutboundAudio(capacity_blocks=5, idle_keep_blocks=2)
    for i in range(8):
        audio.push(bytes([i]))
    assert audio.dropped_blocks == 3
    assert list(audio.pending) == [bytes([i]) for i in range(3, 8)]


def test_outbound_audio_replays_the_utterance_in_flight() -> None:
    audio = OutboundAudio(capacity_blocks=100, idle_keep_blocks=2)
    for i in range(6):
        audio.push(bytes([i]))
    sent = [audio.next_to_send() for _ in range(3)]  # idle: only 2 kept in flight
    assert sent == [b"\x00", b"\x01", b"\x02"]
    audio.on_speech_started()
    sent += [audio.next_to_send() for _ in range(2)]
    # the connection dies here: the speech in flight is sent again first, then the rest
    audio.rewind()
    replay = []
    while (block := audio.next_to_send()) is not None:
        replay.append(block)
    assert replay == [b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"]
    assert audio.replayed_blocks == 4


def test_outbound_audio_commit_clears_in_flight() -> None:
    audio = OutboundAudio(capacity_blocks=100, idle_keep_blocks=2)
    audio.on_speech_started()
    for i in range(4):
        audio.push(bytes([i]))
        audio.next_to_send()
    audio.on_committed()
    audio.rewind()
    assert audio.next_to_send() is None


@pytest.mark.parametrize(
    ("exc", "verdict"),
    [
        (Disconnected("dropped", 1006), "retry"),
        (Disconnected("going away", 1001), "retry"),
        (Disconnected("frame over the size limit", 1009), "retry"),
        (Disconnected("no close frame", None), "retry"),
        (Disconnected("policy violation", 1008), "fatal"),
        (ConnectionRefusedError(), "retry"),
        (TimeoutError(), "retry"),
        (FatalConnectionError("bad key"), "fatal"),
        (SessionConfigError("bad setting"), "fatal"),
        (ValueError("a bug"), "fatal"),
    ],
)
def test_classify_says_retry_or_fatal(exc: BaseException, verdict: str) -> None:
    assert classify(exc) == verdict


def test_every_error_of_the_bot_has_one_root() -> None:
    import importlib
    import inspect
    import pkgutil

    import realtime_voicebot

    found = []
    for module_info in pkgutil.walk_packages(realtime_voicebot.__path__, "realtime_voicebot."):
        if module_info.name.endswith(("telemetry", "__main__")):
            continue  # imports OpenTelemetry / runs the CLI
        module = importlib.import_module(module_info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                found.append(cls)
    assert len(found) >= 20
    assert [c for c in found if not issubclass(c, VoicebotError)] == []


@pytest.mark.parametrize(
    ("expires_at", "lifetime"),
    [
        (1_000_000 + 3600.0, 3600.0),
        (1_000_000 + 5.0, 5.0),
        (None, None),
        (1_000_000 - 10.0, None),  # already past: a clock ahead of the server's
        (1_000_000.0, None),
        (1_000_000 + 10 * 86400.0, None),  # implausibly far away
    ],
)
def test_session_lifetime_treats_an_impossible_expiry_as_unknown(
    expires_at: float | None, lifetime: float | None
) -> None:
    assert session_lifetime(expires_at, 1_000_000.0) == lifetime
