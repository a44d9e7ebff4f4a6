from __future__ import annotations

import random

import pytest

from realtime_voicebot.config import load_settings
from realtime_voicebot.handlers.dispatcher import Dispatcher
from realtime_voicebot.transport.client import Backoff, OutboundAudio
from realtime_voicebot.transport.endpoint import EndpointError, build_endpoint
from realtime_voicebot.transport.events import EventParser, ServerEventType


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


def test_dispatcher_routes_and_survives_handler_errors() -> None:
    dispatcher = Dispatcher()
    seen: list[str] = []

    @dispatcher.on(ServerEventType.AUDIO_DELTA)
    def broken(_: object) -> None:
        raise RuntimeError("bug")

    dispatcher.add(lambda e: seen.append(f"delta {e.item_id}"), ServerEventType.AUDIO_DELTA)
    dispatcher.add(lambda e: seen.append(f"any {e.type.value}"))
    parser = EventParser()
    for frame in (
        '{"type": "response.audio.delta", "item_id": "i1", "delta": ""}',
        '{"type": "response.done", "response": {"id": "r1"}}',
    ):
        event = parser.parse(frame)
        assert event is not None
        dispatcher.dispatch(event)
    assert seen == ["any response.output_audio.delta", "delta i1", "any response.done"]
    assert dispatcher.handler_errors == 1
