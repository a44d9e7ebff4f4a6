"""Summarizers: extractive (offline, deterministic), OpenAI over the real SDK, fallback, factory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_voicebot.config import load_settings
from realtime_voicebot.summarization.base import (
    FallbackSummarizer,
    SummarizerError,
    SummaryInput,
)
from realtime_voicebot.summarization.extractive import ExtractiveSummarizer
from realtime_voicebot.summarization.openai_summarizer import (
    OpenAISummarizer,
    build_summarizer,
    client_from_settings,
    language_instruction,
)

U = lambda text: SummaryInput("user", text)  # noqa: E731
A = lambda text: SummaryInput("assistant", text)  # noqa: E731

# --- extractive -------------------------------------------------------------------------------


async def test_extractive_keeps_facts_and_drops_small_talk() -> None:
    items = [
        U("Hi there!"),
        A("Hello! How can I help?"),
        U("My name is Ada and I fly to Lisbon on March 3rd. Okay."),
        A("Great. Your flight LX 204 leaves at 9:40."),
        U("Thanks."),
        U("Can you remind me what gate it is?"),
    ]
    summary = await ExtractiveSummarizer().summarize(items, None, "auto")
    lines = summary.splitlines()
    assert "User: My name is Ada and I fly to Lisbon on March 3rd." in lines
    assert "Assistant: Your flight LX 204 leaves at 9:40." in lines
    assert "User: Can you remind me what gate it is?" in lines
    assert "Thanks." not in summary and "Hi there" not in summary and "Okay." not in summary


async def test_extractive_is_language_neutral() -> None:
    items = [
        U("Встреча с Иваном Петровым в 15:00 в Москве."),
        U("会議は3月5日の午後2時です。"),
        A("D'accord."),
    ]
    summary = await ExtractiveSummarizer().summarize(items, None, "ru")
    assert "User: Встреча с Иваном Петровым в 15:00 в Москве." in summary
    assert "User: 会議は3月5日の午後2時です。" in summary
    assert "D'accord" not in summary


async def test_extractive_is_progressive_and_trims_oldest_first() -> None:
    summarizer = ExtractiveSummarizer(max_chars=200)
    first = await summarizer.summarize([U("Order 1111 goes to Oslo.")], None, "auto")
    assert first == "User: Order 1111 goes to Oslo."
    second = await summarizer.summarize([U("Order 2222 goes to Rome.")], first, "auto")
    assert second.splitlines() == [
        "User: Order 1111 goes to Oslo.",
        "User: Order 2222 goes to Rome.",
    ]
    more = [U(f"Order {n} goes to Bergen on day {n}.") for n in range(3000, 3010)]
    third = await summarizer.summarize(more, second, "auto")
    assert len(third) <= 200
    assert "1111" not in third  # the oldest fact went first
    assert third.splitlines()[-1] == "User: Order 3009 goes to Bergen on day 3009."


async def test_extractive_never_returns_nothing_for_some_words() -> None:
    summary = await ExtractiveSummarizer().summarize([A("ok"), U("fine")], None, "auto")
    assert summary == "Assistant: ok\nUser: fine"


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.text(max_size=400))),
    previous=st.none() | st.text(max_size=2000),
)
def test_extractive_is_bounded_and_deterministic(
    texts: list[tuple[str, str]], previous: str | None
) -> None:
    summarizer = ExtractiveSummarizer(max_chars=300)
    items = [SummaryInput(role, text) for role, text in texts]
    once = summarizer.summarize_now(items, previous)
    assert len(once) <= 300
    assert summarizer.summarize_now(items, previous) == once


# --- fallback ---------------------------------------------------------------------------------


class Failing:
    async def summarize(
        self, items: Sequence[SummaryInput], previous_summary: str | None, language: str
    ) -> str:
        raise SummarizerError("down")


async def test_fallback_summarizer_answers_when_primary_fails() -> None:
    summarizer = FallbackSummarizer(Failing(), ExtractiveSummarizer())
    summary = await summarizer.summarize([U("Meet Zoe at 10.")], None, "auto")
    assert summary == "User: Meet Zoe at 10."
    assert summarizer.fallbacks == 1


# --- OpenAI over the real SDK -----------------------------------------------------------------


def completion(content: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }


def sdk_client(handler: Callable[[httpx.Request], Any]) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-test",
        base_url="http://summaries.test/v1",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )


async def test_openai_request_has_model_previous_summary_turns_and_language() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion("  Ada flies to Lisbon on March 3.  "))

    summarizer = OpenAISummarizer(sdk_client(handler), model="my-summary-model", max_retries=0)
    items = [U("I fly to Lisbon on March 3."), A("Noted: Lisbon, March 3.")]
    summary = await summarizer.summarize(items, "Ada prefers window seats.", "fr")
    assert summary == "Ada flies to Lisbon on March 3."
    [request] = seen
    assert request.method == "POST" and request.url.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    body = json.loads(request.content)
    assert body["model"] == "my-summary-model"
    system, user = body["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    assert language_instruction("fr") in system["content"]
    for fact in ("names", "numbers", "dates", "decisions", "preferences", "questions"):
        assert fact in system["content"]
    assert "Previous summary:\nAda prefers window seats." in user["content"]
    assert (
        "User: I fly to Lisbon on March 3.\nAssistant: Noted: Lisbon, March 3." in user["content"]
    )
    await summarizer.aclose()


async def test_openai_auto_language_follows_the_conversation() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=completion("ok"))

    await OpenAISummarizer(sdk_client(handler)).summarize([U("Hola, soy Ana.")], None, "auto")
    system = bodies[0]["messages"][0]["content"]
    assert "language the conversation is held in" in system
    assert "Previous summary:\n(none)" in bodies[0]["messages"][1]["content"]
    assert bodies[0]["model"] == "gpt-4o-mini"


async def test_openai_timeout_raises_and_the_fallback_answers() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadTimeout("too slow", request=request)

    primary = OpenAISummarizer(sdk_client(handler), timeout_s=0.5, max_retries=0)
    with pytest.raises(openai.APITimeoutError):
        await primary.summarize([U("Code 7781.")], None, "auto")
    assert calls == 1
    summary = await FallbackSummarizer(primary, ExtractiveSummarizer()).summarize(
        [U("Code 7781 opens the Garage door.")], None, "auto"
    )
    assert summary == "User: Code 7781 opens the Garage door."


async def test_openai_retries_through_the_sdk() -> None:
    statuses = [500, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        status = statuses.pop(0)
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "boom", "type": "server"}})
        return httpx.Response(200, json=completion("Recovered."))

    summarizer = OpenAISummarizer(sdk_client(handler), max_retries=1)
    started = asyncio.get_running_loop().time()
    assert await summarizer.summarize([U("x")], None, "auto") == "Recovered."
    assert statuses == []
    assert asyncio.get_running_loop().time() - started < 5


async def test_openai_empty_answer_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion(""))

    with pytest.raises(SummarizerError):
        await OpenAISummarizer(sdk_client(handler), max_retries=0).summarize([U("x")], None, "en")


def test_openai_summarizer_needs_a_client() -> None:
    with pytest.raises(ValueError):
        OpenAISummarizer()


# --- factory ----------------------------------------------------------------------------------


def test_build_summarizer_honours_settings() -> None:
    keyed = {"openai_api_key": "sk-test"}
    assert isinstance(
        build_summarizer(load_settings({"summarizer": "extractive"})), ExtractiveSummarizer
    )
    assert isinstance(build_summarizer(load_settings(keyed), offline=True), ExtractiveSummarizer)
    assert isinstance(build_summarizer(load_settings()), ExtractiveSummarizer)  # no key
    # realtime (the default): the session writes summaries; the shell only falls back.
    assert load_settings().summarizer == "realtime"
    assert isinstance(build_summarizer(load_settings(keyed)), ExtractiveSummarizer)
    auto = build_summarizer(load_settings({**keyed, "summarizer": "auto"}))
    assert isinstance(auto, FallbackSummarizer)
    assert isinstance(auto.primary, OpenAISummarizer)
    assert isinstance(auto.fallback, ExtractiveSummarizer)
    explicit = build_summarizer(
        load_settings({**keyed, "summarizer": "openai", "summary_model": "m"})
    )
    assert isinstance(explicit, OpenAISummarizer) and explicit.model == "m"


def test_client_from_settings_per_provider() -> None:
    openai_client = client_from_settings(
        load_settings({"openai_api_key": "sk-a", "openai_base_url": "http://localhost:9/v1"})
    )
    assert str(openai_client.base_url) == "http://localhost:9/v1/"
    azure_v1 = client_from_settings(
        load_settings(
            {
                "provider": "azure",
                "azure_openai_api_key": "k",
                "azure_openai_endpoint": "https://res.openai.azure.com/",
            }
        )
    )
    assert str(azure_v1.base_url) == "https://res.openai.azure.com/openai/v1/"
    legacy = client_from_settings(
        load_settings(
            {
                "provider": "azure",
                "azure_openai_api_key": "k",
                "azure_openai_endpoint": "https://res.openai.azure.com",
                "azure_api_version": "2025-04-01-preview",
            }
        )
    )
    assert isinstance(legacy, openai.AsyncAzureOpenAI)
