"""Every tunable of the voice bot, in one pydantic-settings class.

Precedence, highest first: CLI flags (passed as init arguments), environment variables
(``VOICEBOT_*`` plus the standard ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
``AZURE_OPENAI_API_KEY`` and ``AZURE_OPENAI_ENDPOINT``), a ``.env`` file, defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "VOICEBOT_"
ENV_FILE = ".env"

Provider = Literal["openai", "azure"]
Dialect = Literal["ga", "beta"]
EchoMode = Literal["off", "gate", "aec"]
LogFormat = Literal["auto", "console", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
SummarizerKind = Literal["auto", "openai", "extractive"]
ServerTruncation = str
"""``auto``, ``disabled`` or ``retention_ratio:<0..1>`` (checked by `parse_server_truncation`)."""
TOOL_NAMES = ("current_time", "http_get")
"""Built-in tools (a str list, not a Literal, keeps the CLI help narrow)."""

DEFAULT_INSTRUCTIONS = (
    "You are a helpful, concise voice assistant. Answer in the language the user speaks. "
    "Keep replies short unless asked for detail."
)


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Effective configuration of one voicebot process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    # --- service -------------------------------------------------------------------------
    provider: Provider = Field("openai", description="Service: openai or azure.")
    dialect: Dialect = Field(
        "ga", description="Realtime API dialect: ga, or beta (sends OpenAI-Beta: realtime=v1)."
    )
    model: str = Field("gpt-realtime", min_length=1, description="Realtime model name.")
    url: str | None = Field(
        None,
        description="WebSocket base URL overriding the provider's (e.g. ws://127.0.0.1:8765/v1).",
    )
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=_env("VOICEBOT_OPENAI_API_KEY", "OPENAI_API_KEY"),
        description="OpenAI API key (OPENAI_API_KEY).",
    )
    openai_base_url: str | None = Field(
        None,
        validation_alias=_env("VOICEBOT_OPENAI_BASE_URL", "OPENAI_BASE_URL"),
        description="OpenAI REST base URL (OPENAI_BASE_URL); the WebSocket URL derives from it.",
    )
    azure_openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=_env("VOICEBOT_AZURE_OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"),
        description="Azure OpenAI key (AZURE_OPENAI_API_KEY), sent as the api-key header.",
    )
    azure_openai_endpoint: str | None = Field(
        None,
        validation_alias=_env("VOICEBOT_AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_ENDPOINT"),
        description="Azure resource endpoint, e.g. https://NAME.openai.azure.com.",
    )
    azure_deployment: str | None = Field(
        None, description="Azure deployment name (defaults to the model name)."
    )
    azure_api_version: str | None = Field(
        None,
        description="Azure legacy api-version (e.g. 2025-04-01-preview); unset uses the v1 path.",
    )

    # --- conversation ----------------------------------------------------------------------
    instructions: str = Field(DEFAULT_INSTRUCTIONS, description="System instructions.")
    voice: str = Field("marin", min_length=1, description="Assistant voice.")
    transcription_model: str = Field(
        "gpt-4o-mini-transcribe", min_length=1, description="Model transcribing the user."
    )
    vad_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Server VAD threshold.")
    vad_prefix_padding_ms: int = Field(300, ge=0, le=5000, description="Server VAD prefix padding.")
    vad_silence_ms: int = Field(
        500, ge=50, le=10000, description="Silence that ends a user turn (server VAD)."
    )
    interrupt_response: bool = Field(
        True, description="Let the server cancel a reply when the user starts speaking."
    )
    server_truncation: ServerTruncation = Field(
        "auto",
        description="GA session truncation, a safety net behind compaction: auto, disabled, "
        "or retention_ratio:R (keep R of the limit when over it, 0 to 1; GA only).",
    )
    max_output_tokens: int | None = Field(
        None, gt=0, description="Cap on tokens of one reply (unset: the service default)."
    )

    # --- audio -----------------------------------------------------------------------------
    input_device: str | None = Field(
        None, description="Microphone: index or name substring (see `voicebot devices list`)."
    )
    output_device: str | None = Field(None, description="Speaker: index or name substring.")
    chunk_ms: int = Field(20, ge=5, le=200, description="Audio block length in milliseconds.")
    jitter_ms: int = Field(
        60, ge=0, le=2000, description="Audio buffered before a reply starts playing."
    )
    echo: EchoMode = Field(
        "aec",
        description="Echo handling: aec (echo cancellation; gate if it cannot load), gate "
        "(adaptive echo gate), or off (headphones).",
    )
    output_latency_compensation: bool = Field(
        True, description="Subtract the device's output latency from the played position."
    )

    # --- compaction ------------------------------------------------------------------------
    summary_threshold: int = Field(
        20000, gt=0, description="Token window at which older turns are summarized."
    )
    summary_keep_items: int = Field(
        4, ge=0, le=200, description="Most recent items kept verbatim after a compaction."
    )
    summary_every_turns: int | None = Field(
        None, gt=0, description="Also compact every N user turns (unset: tokens only)."
    )
    summarizer: SummarizerKind = Field(
        "auto",
        description="auto (OpenAI with extractive fallback; extractive offline), openai, "
        "extractive.",
    )
    summary_model: str = Field("gpt-4o-mini", min_length=1, description="Summarizer model.")
    summary_language: str = Field(
        "auto",
        pattern=r"^(auto|[a-z]{2,3}(-[A-Za-z]{2,4})?)$",
        description="Summary language: auto (the conversation's) or a code such as en, fr.",
    )
    summary_timeout_s: float = Field(
        20.0, gt=0, le=300, description="Timeout of one summarizer call."
    )
    transcript_wait_s: float = Field(
        5.0, ge=0, le=120, description="How long a compaction waits for pending transcripts."
    )

    # --- connection ------------------------------------------------------------------------
    reconnect_attempts: int = Field(
        8, ge=0, le=100, description="Reconnect attempts before giving up."
    )
    backoff_initial_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay.")
    backoff_max_s: float = Field(8.0, gt=0, le=600, description="Longest reconnect delay.")
    rollover_margin_s: float = Field(
        120.0, ge=0, le=3600, description="Start a new session this long before expiry."
    )
    offline_buffer_s: float = Field(
        30.0, ge=15, le=600, description="Microphone audio kept while disconnected."
    )

    # --- output ----------------------------------------------------------------------------
    log_format: LogFormat = Field(
        "auto", description="auto (console on a TTY, else JSON), console, json."
    )
    log_level: LogLevel = Field("INFO", description="Log level.")
    transcript_path: Path | None = Field(
        None, description="JSONL transcript file (unset: a new file in the state directory)."
    )
    redact_transcript: bool = Field(
        False, description="Redact e-mails, phone and card numbers, keys in the transcript."
    )
    metrics_file: Path | None = Field(None, description="Write the session summary here as JSON.")

    # --- cost: USD per million tokens (gpt-realtime list prices) ---------------------------
    price_text_input: float = Field(4.00, ge=0, description="USD per 1M text input tokens.")
    price_text_cached_input: float = Field(
        0.40, ge=0, description="USD per 1M cached text input tokens."
    )
    price_text_output: float = Field(16.00, ge=0, description="USD per 1M text output tokens.")
    price_audio_input: float = Field(32.00, ge=0, description="USD per 1M audio input tokens.")
    price_audio_cached_input: float = Field(
        0.40, ge=0, description="USD per 1M cached audio input tokens."
    )
    price_audio_output: float = Field(64.00, ge=0, description="USD per 1M audio output tokens.")

    # --- tools -----------------------------------------------------------------------------
    tools: Annotated[list[str], NoDecode] = Field(
        [],
        description="Built-in tools the model may call, comma-separated: current_time, http_get.",
    )
    tool_timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout of one tool call.")
    http_allowlist: Annotated[list[str], NoDecode] = Field(
        [], description="Hosts http_get may fetch from (https only), comma-separated."
    )
    http_max_bytes: int = Field(
        65536, ge=1024, le=16 * 1024 * 1024, description="Bytes of a body http_get returns."
    )

    @field_validator("tools", "http_allowlist", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """Accept a JSON list or a comma-separated string (environment, .env and CLI)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError("not a JSON list; use a JSON list or commas") from None
        return [part.strip() for part in text.split(",") if part.strip()]

    @field_validator("tools", mode="after")
    @classmethod
    def _check_tools(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in TOOL_NAMES:
                raise ValueError(f"unknown tool {name!r} (choose from {', '.join(TOOL_NAMES)})")
        return names

    @field_validator("http_allowlist", mode="after")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        normalised = []
        for host in hosts:
            if "/" in host or "@" in host or not host.strip():
                raise ValueError(f"{host!r} is not a host name (give hosts, not URLs)")
            normalised.append(host.strip().lower().rstrip("."))
        return normalised

    @field_validator("server_truncation", mode="after")
    @classmethod
    def _check_server_truncation(cls, value: str, info: ValidationInfo) -> str:
        ratio = parse_server_truncation(value)
        if ratio is not None and info.data.get("dialect") == "beta":
            raise ValueError(
                "retention_ratio needs the GA dialect (beta sessions have no truncation "
                "setting); use --dialect ga or server truncation auto"
            )
        return value.strip().lower() if ratio is None else f"retention_ratio:{ratio:g}"

    @model_validator(mode="before")
    @classmethod
    def _upper_log_level(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("log_level", "VOICEBOT_LOG_LEVEL"):
                if isinstance(data.get(key), str):
                    data[key] = data[key].upper()
        return data

    @model_validator(mode="after")
    def _check_backoff(self) -> Settings:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must not be below backoff_initial_s")
        return self

    def api_key(self) -> SecretStr | None:
        """The key for the configured provider."""
        return self.azure_openai_api_key if self.provider == "azure" else self.openai_api_key


def parse_server_truncation(value: str) -> float | None:
    """The retention ratio of ``retention_ratio:R``, None for ``auto``/``disabled``.

    Raises ValueError for anything else, or a ratio outside 0..1.
    """
    text = value.strip().lower()
    if text in ("auto", "disabled"):
        return None
    kind, _, number = text.partition(":")
    try:
        ratio = float(number)
    except ValueError:
        ratio = -1.0
    if kind != "retention_ratio" or not 0.0 <= ratio <= 1.0:
        raise ValueError("expected auto, disabled or retention_ratio:R with R from 0 to 1")
    return ratio


SECRET_FIELDS = frozenset(
    name for name, f in Settings.model_fields.items() if f.annotation == SecretStr | None
)


def env_names(field: str) -> list[str]:
    """The environment variable names a field is read from, preferred first."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [ENV_PREFIX + field.upper()]


def value_sources(overrides: dict[str, Any], env_file: str | None = ENV_FILE) -> dict[str, str]:
    """Where each setting's effective value comes from: cli, env NAME, .env NAME or default."""
    from dotenv import dotenv_values

    dotenv = (
        {k.upper(): v for k, v in dotenv_values(env_file).items()}
        if env_file and os.path.exists(env_file)
        else {}
    )
    environ = {k.upper() for k in os.environ}
    sources: dict[str, str] = {}
    for name in Settings.model_fields:
        names = [n.upper() for n in env_names(name)]
        if name in overrides:
            sources[name] = "cli"
        elif hit := next((n for n in names if n in environ), None):
            sources[name] = f"env {hit}"
        elif hit := next((n for n in names if n in dotenv), None):
            sources[name] = f".env {hit}"
        else:
            sources[name] = "default"
    return sources


class SettingsError(Exception):
    """Invalid configuration, with one line per problem naming the setting."""


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Build Settings with CLI overrides on top; raise SettingsError with readable lines."""
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "settings"
        name = loc.lower().removeprefix(ENV_PREFIX.lower())
        secret = name in SECRET_FIELDS or "key" in name
        got = "" if secret or "input" not in err else f" (got {err['input']!r})"
        lines.append(f"invalid setting {name}: {err['msg']}{got}")
    return "\n".join(lines)


def settings_reference_markdown() -> str:
    """The README's configuration table, generated from Settings so that it cannot drift."""
    from realtime_voicebot.cli_names import flag_for

    lines = [
        "| setting | environment | CLI flag | default | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if default is None else str(default)
        if name == "instructions":
            shown = "(a short assistant prompt)"
        env = " or ".join(f"`{n}`" for n in env_names(name))
        flag = "" if name in SECRET_FIELDS else f"`{flag_for(name)}`"
        shown_default = f"`{shown}`" if shown else ""
        lines.append(f"| {name} | {env} | {flag} | {shown_default} | {field.description or ''} |")
    return "\n".join(lines)
