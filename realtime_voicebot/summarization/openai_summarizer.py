"""Summaries by a Chat Completions model (OpenAI or Azure OpenAI), and the factory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import openai
from openai.types.chat import ChatCompletionMessageParam

from realtime_voicebot.summarization.base import (
    FallbackSummarizer,
    Summarizer,
    SummarizerError,
    SummaryInput,
    format_turns,
)
from realtime_voicebot.summarization.extractive import ExtractiveSummarizer
from realtime_voicebot.summarization.prompts import SYSTEM_PROMPT, language_instruction

if TYPE_CHECKING:
    from realtime_voicebot.config import Settings

DEFAULT_MODEL = "gpt-4o-mini"
AZURE_V1_PATH = "/openai/v1/"

ClientFactory = Callable[[], openai.AsyncOpenAI]

__all__ = [
    "SYSTEM_PROMPT",
    "OpenAISummarizer",
    "build_messages",
    "build_summarizer",
    "client_from_settings",
    "language_instruction",
]


def build_messages(
    items: Sequence[SummaryInput], previous_summary: str | None, language: str
) -> list[ChatCompletionMessageParam]:
    """The Chat Completions messages for one progressive summary."""
    previous = previous_summary.strip() if previous_summary else ""
    body = (
        f"Previous summary:\n{previous or '(none)'}\n\n"
        f"New conversation turns:\n{format_turns(items) or '(none)'}"
    )
    return [
        {"role": "system", "content": f"{SYSTEM_PROMPT} {language_instruction(language)}"},
        {"role": "user", "content": body},
    ]


class OpenAISummarizer:
    """Progressive summaries with Chat Completions; raises on failure (see FallbackSummarizer).

    ``client`` or ``client_factory`` supplies the `openai.AsyncOpenAI` (or
    `openai.AsyncAzureOpenAI`); the factory runs on first use, so building the summarizer
    costs nothing. ``timeout_s`` and ``max_retries`` are passed to the SDK per request.
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI | None = None,
        *,
        client_factory: ClientFactory | None = None,
        model: str = DEFAULT_MODEL,
        timeout_s: float = 20.0,
        max_retries: int = 1,
    ) -> None:
        if client is None and client_factory is None:
            raise ValueError("OpenAISummarizer needs a client or a client_factory")
        self._client = client
        self._client_factory = client_factory
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAISummarizer:
        return cls(
            client_factory=lambda: client_from_settings(settings),
            model=settings.summary_model,
            timeout_s=settings.summary_timeout_s,
        )

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            assert self._client_factory is not None
            self._client = self._client_factory()
        return self._client

    async def summarize(
        self, items: Sequence[SummaryInput], previous_summary: str | None, language: str
    ) -> str:
        client = self.client.with_options(timeout=self.timeout_s, max_retries=self.max_retries)
        completion = await client.chat.completions.create(
            model=self.model, messages=build_messages(items, previous_summary, language)
        )
        if not completion.choices:
            raise SummarizerError("the summarizer model returned no choices")
        text = completion.choices[0].message.content
        if not text or not text.strip():
            raise SummarizerError("the summarizer model returned an empty summary")
        return text.strip()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def client_from_settings(settings: Settings) -> openai.AsyncOpenAI:
    """An SDK client for the configured provider (Azure: v1 path, or legacy api-version),
    aimed where `summarizer_base_url` says: the realtime endpoint's host unless
    ``summary_base_url`` names another."""
    from realtime_voicebot.transport.endpoint import summarizer_base_url

    key = settings.api_key()
    api_key = key.get_secret_value() if key is not None else None
    base = summarizer_base_url(settings)
    if settings.provider == "azure":
        if settings.azure_api_version:
            return openai.AsyncAzureOpenAI(
                azure_endpoint=base, api_key=api_key, api_version=settings.azure_api_version
            )
        return openai.AsyncOpenAI(api_key=api_key, base_url=base + AZURE_V1_PATH)
    return openai.AsyncOpenAI(api_key=api_key, base_url=base)


def build_summarizer(settings: Settings, offline: bool = False) -> Summarizer:
    """The summarizer the shell runs for ``settings.summarizer``.

    ``extractive``, or ``auto`` when offline or without an API key: `ExtractiveSummarizer`.
    ``auto``: OpenAI with the extractive fallback. ``openai``: OpenAI alone (the compaction
    runner still falls back to extractive when it fails). ``realtime``: the session writes
    the summary itself (the core asks it, see `core.compaction.in_session`); the shell only
    runs the fallback, extractive.
    """
    extractive = ExtractiveSummarizer()
    kind = settings.summarizer
    offline_auto = kind == "auto" and (offline or settings.api_key() is None)
    if kind in ("extractive", "realtime") or offline_auto:
        return extractive
    primary = OpenAISummarizer.from_settings(settings)
    if kind == "openai":
        return primary
    return FallbackSummarizer(primary, extractive)
