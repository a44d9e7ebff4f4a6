"""Every tunable of the voice bot, in one pydantic-settings class.

Precedence, highest first: CLI flags (passed as init arguments), environment variables
(``VOICEBOT_*`` plus the standard ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
``AZURE_OPENAI_API_KEY`` and ``AZURE_OPENAI_ENDPOINT``), a ``.env`` file, defaults.

Where the key goes is checked as it is loaded: an API key must be printable ASCII (it is
sent in an HTTP header); a plain-text URL (``ws://``, ``http://``) is refused for a host
other than this machine unless `allow_insecure_transport` says so; and a ``.env`` file that
changes where the key goes is reported (`env_file_redirects`) and, when the key itself comes
from elsewhere, refused unless confirmed (`env_file_redirect_errors`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

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

from realtime_voicebot.errors import UserError

ENV_PREFIX = "VOICEBOT_"
ENV_FILE = ".env"

Provider = Literal["openai", "azure"]
Dialect = Literal["ga", "beta"]
EchoMode = Literal["off", "gate", "aec"]
FalseInterruption = Literal["resume", "off"]
AudioStreams = Literal["auto", "duplex", "separate"]
LogFormat = Literal["auto", "console", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
SummarizerKind = Literal["auto", "openai", "extractive", "realtime"]
TurnDetectionMode = Literal["server_vad", "semantic_vad", "manual"]
VadEagerness = Literal["low", "medium", "high", "auto"]
NoiseReductionMode = Literal["off", "near_field", "far_field"]
TelemetryMode = Literal["off", "otlp"]
ServerTruncation = str
"""``auto``, ``disabled`` or ``retention_ratio:<0..1>`` (checked by `parse_server_truncation`)."""
TOOL_NAMES = ("current_time", "http_get")
"""Built-in tools (a str list, not a Literal, keeps the CLI help narrow)."""

DEFAULT_INSTRUCTIONS = (
    "You are a helpful, concise voice assistant. Answer in the language the user speaks. "
    "Keep replies short unless asked for detail."
)


URL_FIELDS = ("url", "openai_base_url", "azure_openai_endpoint", "summary_base_url")
"""Settings that say where the API key (and the conversation) goes."""
URL_SCHEMES = {"wss": True, "https": True, "ws": False, "http": False}
"""Schemes a URL setting may use: True for the encrypted ones."""

_CHARACTER_NAMES = {"\r": "a carriage return", "\n": "a line break", "\t": "a tab", " ": "a space"}


def _describe_character(char: str) -> str:
    """A character named for a one-line message: never the key around it."""
    if char in _CHARACTER_NAMES:
        return _CHARACTER_NAMES[char]
    name = unicodedata.name(char, "")
    code = f"U+{ord(char):04X}"
    return f"{name.lower()} ({code})" if name else f"a control character ({code})"


def key_problem(key: str) -> str | None:
    """What makes ``key`` unusable in an HTTP header, in words (never the key); None if fine.

    A key is printable ASCII without spaces: anything else (a line ending from a file, a
    zero-width space or a typographic quote from a copy) cannot be sent, and would make the
    handshake fail with the key in the error.
    """
    for index, char in enumerate(key):
        if "!" <= char <= "~":
            continue
        where = "inside it"
        if index == 0:
            where = "at its start"
        elif index == len(key) - 1:
            where = "at its end"
        hint = (
            " (a Windows line ending? save the file with plain line endings)"
            if char in "\r\n"
            else " (copied from a document? copy the key again from the provider's page)"
            if not char.isascii()
            else ""
        )
        return (
            f"contains {_describe_character(char)} {where}: an API key is printable ASCII "
            f"without spaces{hint}"
        )
    return None


def is_loopback_host(host: str) -> bool:
    """``localhost``, or an address in 127.0.0.0/8 or ::1 (also IPv4-mapped)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def url_problem(url: str, *, allow_insecure: bool) -> str | None:
    """What is wrong with a URL setting, in words; None if the key may go there."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return "is not a URL"
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        return "must start with wss://, https://, or for this machine ws:// or http://"
    if not host:
        return "names no host"
    if not URL_SCHEMES[scheme] and not allow_insecure and not is_loopback_host(host):
        return (
            f"{scheme}:// would send the API key and the conversation unencrypted to {host}: "
            f"use {'wss' if scheme == 'ws' else 'https'}://, or set allow_insecure_transport "
            "(--allow-insecure-transport) if that is really meant"
        )
    return None


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
    allow_insecure_transport: bool = Field(
        False,
        description="Allow ws:// and http:// URLs to hosts other than this machine (the key "
        "and the conversation then cross the network unencrypted).",
    )
    allow_env_file_endpoint: bool = Field(
        False,
        description="Let a .env file change where the API key goes when the key comes from "
        "elsewhere (from the environment or the command line only, never from the .env).",
    )
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
    turn_detection: TurnDetectionMode = Field(
        "server_vad",
        description="How a user turn ends: server_vad (a silence), semantic_vad (the model "
        "judges that you are done), or manual (push-to-talk: the client commits each turn).",
    )
    vad_eagerness: VadEagerness = Field(
        "auto",
        description="semantic_vad only: how soon a reply starts: low, medium, high, or auto "
        "(medium).",
    )
    noise_reduction: NoiseReductionMode = Field(
        "off",
        description="Server-side input noise reduction before VAD and the model: off, "
        "near_field (headset) or far_field (laptop or room microphone).",
    )
    idle_timeout_ms: int | None = Field(
        None,
        ge=1000,
        le=600_000,
        description="GA and server_vad only: after this much silence following a reply, the "
        "server prompts the user (unset: never).",
    )
    false_interruption: FalseInterruption = Field(
        "resume",
        description="Talking over a reply pauses it: resume it when that was a cough, noise "
        "or a backchannel (mm-hm, yeah); off: any speech cuts the reply.",
    )
    interruption_min_ms: int = Field(
        250,
        ge=0,
        le=5000,
        description="Speech over a reply shorter than this is noise: the reply resumes.",
    )
    push_to_talk: bool = Field(
        False,
        description="Push-to-talk, for noisy rooms: the space bar in the live console (Enter "
        "on an empty line otherwise) starts your turn and ends it. Sets turn_detection to "
        "manual.",
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
    mic_block_ms: int = Field(
        40,
        ge=10,
        le=200,
        description="Microphone audio per block sent to the server (ms): larger blocks cost "
        "less CPU, smaller ones reach the server sooner.",
    )
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
    audio_streams: AudioStreams = Field(
        "auto",
        description="auto (one callback for microphone and speaker when they share a host "
        "API and a rate, else two streams), duplex (insist on one), separate (two streams).",
    )
    record_path: Path | None = Field(
        None,
        description="Record the conversation to this stereo WAV file (left: microphone as "
        "sent, right: what was played).",
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
        "realtime",
        description="realtime (the session itself, out of band; extractive fallback), auto "
        "(OpenAI chat with extractive fallback; extractive offline), openai, extractive.",
    )
    summary_model: str = Field("gpt-4o-mini", min_length=1, description="Summarizer model.")
    summary_base_url: str | None = Field(
        None,
        description="Where the OpenAI summarizer sends older turns: a REST base URL (Azure: "
        "the resource endpoint). Unset: follows the realtime endpoint (url, OPENAI_BASE_URL, "
        "the Azure endpoint).",
    )
    summary_language: str = Field(
        "auto",
        pattern=r"^(auto|[a-z]{2,3}(-[A-Za-z]{2,4})?)$",
        description="Summary language: auto (the conversation's) or a code such as en, fr.",
    )
    summary_timeout_s: float = Field(
        20.0,
        gt=0,
        le=300,
        description="Timeout of one summary (chat call or out-of-band response); then the "
        "extractive fallback writes it.",
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
    response_timeout_s: float = Field(
        15.0,
        ge=1,
        le=600,
        description="A reply owed with nothing at all from the server this long is cancelled "
        "(the user is told); as long again and the connection is renewed.",
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
    telemetry: TelemetryMode = Field(
        "off",
        description="OpenTelemetry spans and metrics of each turn: off, or otlp (needs the "
        "[otel] extra; the exporter is configured by the standard OTEL_* variables).",
    )
    telemetry_content: bool = Field(
        False,
        description="Put what was said (transcripts, replies, typed lines, tool arguments, "
        "redacted) into the spans; by default only ids, counts and timings.",
    )

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

    # --- your own tools: Python modules, installed packages, MCP servers -------------------
    tools_modules: Annotated[list[str], NoDecode] = Field(
        [],
        description="Python files or importable modules whose @tool functions the model may "
        "call; repeat the flag (environment: comma-separated).",
    )
    tool_entry_points: bool = Field(
        True,
        description="Also load the tools installed packages declare in the "
        "realtime_voicebot.tools entry-point group.",
    )
    tool_output_max_chars: int = Field(
        16000,
        ge=256,
        le=1_000_000,
        description="Characters of one MCP or user tool result the model gets (the rest is cut).",
    )
    mcp_servers: Annotated[list[str], NoDecode] = Field(
        [],
        description="MCP servers: NAME=COMMAND ARGS... (stdio) or NAME=URL ['Header: value'...] "
        "(streamable HTTP), ${VAR} from the environment; repeat the flag (environment: a JSON "
        "list or ;-separated).",
    )
    mcp_config: Path | None = Field(
        None,
        description='JSON file of MCP servers in the common {"mcpServers": {...}} shape '
        "(command/args/env or url/headers).",
    )
    mcp_connect_timeout_s: float = Field(
        20.0, gt=0, le=300, description="Time one MCP server has to start and list its tools."
    )

    # --- MCP servers the service calls itself (GA), and images -------------------------------
    hosted_mcp: Annotated[list[str], NoDecode] = Field(
        [],
        description="MCP servers the service calls itself (GA only): LABEL=URL or "
        "LABEL=connector_ID [allowed_tools=a,b] [require_approval=always|never|never:a,b] "
        "[authorization=${VAR}]; repeat the flag (environment: a JSON list or ;-separated).",
    )
    mcp_approval_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="How long a hosted MCP call waits for your y/n before it is refused.",
    )
    image_hosts: Annotated[list[str], NoDecode] = Field(
        [],
        description="Hosts /image may fetch https URLs from, comma-separated (unset: any "
        "public host; never a private or local address).",
    )
    image_max_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        le=10 * 1024 * 1024,
        description="Largest picture /image sends, in bytes.",
    )

    @field_validator("tools", "http_allowlist", "tools_modules", "image_hosts", mode="before")
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

    @field_validator("mcp_servers", mode="before")
    @classmethod
    def _split_mcp_servers(cls, value: Any) -> Any:
        from realtime_voicebot.tools.mcp_config import split_server_specs

        return split_server_specs(value) if isinstance(value, str) else value

    @field_validator("mcp_servers", mode="after")
    @classmethod
    def _check_mcp_servers(cls, specs: list[str]) -> list[str]:
        from realtime_voicebot.tools.mcp_config import check_unique, parse_server_spec

        check_unique(parse_server_spec(spec) for spec in specs)
        return specs

    @field_validator("hosted_mcp", mode="before")
    @classmethod
    def _split_hosted_mcp(cls, value: Any) -> Any:
        from realtime_voicebot.tools.mcp_config import split_server_specs

        return split_server_specs(value) if isinstance(value, str) else value

    @field_validator("hosted_mcp", mode="after")
    @classmethod
    def _check_hosted_mcp(cls, specs: list[str]) -> list[str]:
        from realtime_voicebot.tools.hosted_mcp import check_unique_labels, parse_hosted_spec

        check_unique_labels(parse_hosted_spec(spec) for spec in specs)
        return specs

    @field_validator("mcp_config", mode="after")
    @classmethod
    def _check_mcp_config(cls, path: Path | None) -> Path | None:
        from realtime_voicebot.tools.mcp_config import load_config_file

        if path is not None:
            load_config_file(path)
        return path

    @field_validator("http_allowlist", "image_hosts", mode="after")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        normalised = []
        for host in hosts:
            if "/" in host or "@" in host or not host.strip():
                raise ValueError(f"{host!r} is not a host name (give hosts, not URLs)")
            normalised.append(host.strip().lower().rstrip("."))
        return normalised

    @field_validator("openai_api_key", "azure_openai_api_key", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("openai_api_key", "azure_openai_api_key", mode="after")
    @classmethod
    def _check_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            problem = key_problem(key.get_secret_value())
            if problem is not None:
                raise ValueError(problem)
        return key

    @field_validator(*URL_FIELDS, mode="after")
    @classmethod
    def _check_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            return None
        problem = url_problem(url, allow_insecure=bool(info.data.get("allow_insecure_transport")))
        if problem is not None:
            raise ValueError(problem)
        return url

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

    @model_validator(mode="after")
    def _push_to_talk_is_manual(self) -> Settings:
        if self.push_to_talk:
            self.turn_detection = "manual"
        return self

    @model_validator(mode="after")
    def _check_idle_timeout(self) -> Settings:
        if self.idle_timeout_ms is not None and self.turn_detection != "server_vad":
            raise ValueError(
                f"idle_timeout_ms works with turn_detection server_vad only (not "
                f"{self.turn_detection}); unset idle_timeout_ms or use server_vad"
            )
        return self

    @model_validator(mode="after")
    def _check_mcp_names(self) -> Settings:
        if self.mcp_servers and self.mcp_config is not None:
            from realtime_voicebot.tools.mcp_config import (
                check_unique,
                load_config_file,
                parse_server_spec,
            )

            specs = [parse_server_spec(spec) for spec in self.mcp_servers]
            check_unique([*specs, *load_config_file(self.mcp_config)])
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


def dialect_problems(settings: Settings) -> list[str]:
    """One line per setting the configured dialect cannot honour, naming the setting.

    Empty when every setting maps onto the dialect's session. The app refuses to start
    with these lines; `transport.events.session_config` raises ValueError for the same cases.
    Beta sessions do have ``semantic_vad`` (with ``eagerness``) and noise reduction, but no
    idle timeout, no hosted MCP tools (``hosted_mcp``) and no image input (refused by ``/image``
    itself).
    """
    problems: list[str] = []
    if settings.dialect == "beta" and settings.idle_timeout_ms is not None:
        problems.append(
            "idle_timeout_ms needs the GA dialect (beta sessions have no idle timeout); "
            "unset it or use --dialect ga"
        )
    if settings.dialect == "beta" and settings.hosted_mcp:
        problems.append(
            "hosted_mcp needs the GA dialect (beta sessions have no MCP tools); remove "
            "--hosted-mcp or use --dialect ga (client-side --mcp-server works in both)"
        )
    return problems


SECRET_FIELDS = frozenset(
    name for name, f in Settings.model_fields.items() if f.annotation == SecretStr | None
)
MASKED_FIELDS = frozenset({"mcp_servers", "hosted_mcp"})
"""Settings shown with their secret parts masked (MCP header values, hosted MCP
authorizations) and never echoed."""


def shown_value(name: str, value: Any) -> str:
    """A setting's value as `config show` prints it: secrets masked, None as empty."""
    if name in SECRET_FIELDS:
        return "(not set)" if value is None else "********"
    if name == "mcp_servers":
        from realtime_voicebot.tools.mcp_config import mask_server_spec

        return str([mask_server_spec(spec) for spec in value])
    if name == "hosted_mcp":
        from realtime_voicebot.tools.hosted_mcp import mask_hosted_spec

        return str([mask_hosted_spec(spec) for spec in value])
    return "" if value is None else str(value)


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


def _key_field(settings: Settings) -> str:
    return "azure_openai_api_key" if settings.provider == "azure" else "openai_api_key"


def env_file_redirects(settings: Settings, sources: Mapping[str, str]) -> list[str]:
    """One line per setting a ``.env`` file gives that changes where the API key goes.

    ``sources`` is `value_sources` of the same run. Shown at start-up (and by `config
    show`), so that a ``.env`` in a checkout is never what silently points the key elsewhere.
    """
    folder = Path.cwd()
    lines = []
    for name in URL_FIELDS:
        source = sources.get(name, "default")
        if source.startswith(".env "):
            variable = source.removeprefix(".env ")
            lines.append(
                f"the .env file in {folder} sets {name} ({variable}): the API key and the "
                f"conversation go to {getattr(settings, name)}"
            )
    return lines


def env_file_redirect_errors(settings: Settings, sources: Mapping[str, str]) -> list[str]:
    """Why the run must not start: a ``.env`` changes where a key from elsewhere goes.

    A ``.env`` that holds the key too is the user's own file (whoever wrote it knows the
    key): reported, allowed. A ``.env`` that only points the key from the environment or the
    command line somewhere else needs `allow_env_file_endpoint`, itself not from a ``.env``.
    """
    redirects = env_file_redirects(settings, sources)
    key_field = _key_field(settings)
    key_source = sources.get(key_field, "default")
    if not redirects or getattr(settings, key_field) is None or key_source.startswith(".env "):
        return []
    allowed = sources.get("allow_env_file_endpoint", "default")
    if settings.allow_env_file_endpoint and not allowed.startswith(".env "):
        return []
    names = ", ".join(n for n in URL_FIELDS if sources.get(n, "").startswith(".env "))
    return [
        f"the .env file in {Path.cwd()} changes where the API key goes ({names}) but the key "
        f"comes from {key_source}: remove those lines, or confirm with "
        "VOICEBOT_ALLOW_ENV_FILE_ENDPOINT=1 or --allow-env-file-endpoint (a .env cannot "
        "confirm itself)"
    ]


class SettingsError(UserError):
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
        field = name.split(".", 1)[0]
        secret = field in SECRET_FIELDS or field in MASKED_FIELDS or "key" in name
        # a model-level check (no location) has every setting as its input, keys included
        whole = not err["loc"]
        got = "" if secret or whole or "input" not in err else f" (got {err['input']!r})"
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


def cli_options() -> list[dict[str, str]]:
    """One CLI option per non-secret setting (name, kind, metavar, help), written to
    `realtime_voicebot/cli_settings.json` by ``python scripts/update_readme.py`` so that the
    CLI can offer them, and `--help` list them, without importing pydantic. A test checks
    that the file is current."""
    from realtime_voicebot.cli_names import REPEATABLE_FLAGS

    options = []
    for name, field in Settings.model_fields.items():
        if name in SECRET_FIELDS:
            continue
        if name in REPEATABLE_FLAGS:
            kind, meta = "repeatable", "TEXT"
        elif field.annotation is bool:
            kind, meta = "bool", ""
        else:
            kind, meta = "value", _metavar(field.annotation)
        options.append(
            {"name": name, "kind": kind, "metavar": meta, "help": field.description or ""}
        )
    return options


def _metavar(annotation: Any) -> str:
    """A short placeholder for an option's value: the choices of a short Literal, else its
    kind (long choice lists are in the option's help, and would squeeze the help table)."""
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    inner = annotation if typing.get_origin(annotation) is typing.Literal else args[0]
    if typing.get_origin(inner) is typing.Literal:
        choices = "|".join(str(choice) for choice in typing.get_args(inner))
        return choices if len(choices) <= 16 else "CHOICE"
    return {int: "INT", float: "NUM"}.get(inner, "PATH" if "Path" in str(inner) else "TEXT")
