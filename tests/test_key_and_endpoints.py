"""Where the API key goes (issue 13, items 1 to 4): a key fit for an HTTP header, the
summarizer following the realtime endpoint, no plain text off this machine, and a `.env`
that cannot quietly point a key from elsewhere at another host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from realtime_voicebot.cli import app
from realtime_voicebot.config import (
    SettingsError,
    env_file_redirect_errors,
    env_file_redirects,
    load_settings,
    value_sources,
)
from realtime_voicebot.fake.chat import FakeChatServer
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.summarization import OpenAISummarizer, SummaryInput, build_summarizer
from realtime_voicebot.summarization.openai_summarizer import client_from_settings
from realtime_voicebot.transport.endpoint import summarizer_base_url

from .test_cli_run import clean_env, run_cli

runner = CliRunner()
SECRET = "Zq7Xw9Lp3Rt5"
"""Part of every test key: it must never be printed."""


# --- 1. a key fit for an HTTP header ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "named"),
    [
        (f"sk-{SECRET}\r", "carriage return at its end"),
        (f"sk-{SECRET}\n", "line break at its end"),
        (f"sk-{SECRET}\u200bXY", "zero width space (U+200B) inside it"),
        (f"\u201csk-{SECRET}\u201d", "left double quotation mark (U+201C) at its start"),
        (f"sk-{SECRET}\u2019s", "right single quotation mark (U+2019) inside it"),
        (f"sk-{SECRET}\x1bX", "a control character (U+001B) inside it"),
        (f"sk-{SECRET}\x85X", "a control character (U+0085) inside it"),
        (f"sk-{SECRET}éX", "latin small letter e with acute (U+00E9) inside it"),
        (f"sk {SECRET}", "a space inside it"),
    ],
)
def test_a_key_unfit_for_a_header_is_refused_in_one_line_without_its_value(
    monkeypatch: pytest.MonkeyPatch, key: str, named: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert message.count("\n") == 0
    assert message.startswith("invalid setting openai_api_key") and named in message
    assert SECRET not in message


def test_the_azure_key_is_checked_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", f"{SECRET}\r")
    with pytest.raises(SettingsError, match=r"azure_openai_api_key.*carriage return"):
        load_settings()


@pytest.mark.parametrize(
    "key", ["sk-proj-AbC_123-xyz~.+/=", "0123456789abcdef0123456789abcdef", "sk-fake"]
)
def test_printable_ascii_keys_pass(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", key)
    loaded = load_settings().openai_api_key
    assert loaded is not None and loaded.get_secret_value() == key


def test_an_empty_key_is_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")
    assert load_settings().openai_api_key is None


async def test_run_with_a_windows_line_ending_in_the_key_never_connects(tmp_path: Path) -> None:
    async with FakeRealtimeServer(FakeServerConfig()) as server:
        code, out, err, _ = await run_cli(
            "run",
            "--text",
            "--url",
            server.url,
            "--transcript",
            str(tmp_path / "t.jsonl"),
            env=clean_env(OPENAI_API_KEY=f"sk-{SECRET}\r"),
        )
        assert server.sessions == [] and server.rejected == []  # no handshake was tried
    assert code == 2
    assert err.strip().count("\n") == 0 and "carriage return" in err
    assert SECRET not in out + err and "Traceback" not in err


# --- 2. the summarizer follows the realtime endpoint ------------------------------------------

KEYED = {"openai_api_key": f"sk-{SECRET}"}


@pytest.mark.parametrize(
    ("settings", "base"),
    [
        ({"url": "ws://127.0.0.1:8765/v1"}, "http://127.0.0.1:8765/v1"),
        ({"url": "wss://gateway.example/v1/"}, "https://gateway.example/v1"),
        ({"openai_base_url": "https://proxy.example/v1"}, "https://proxy.example/v1"),
        (  # a local --url wins over a base URL the environment may hold for everything else
            {"url": "ws://127.0.0.1:8765/v1", "openai_base_url": "https://api.openai.com/v1"},
            "http://127.0.0.1:8765/v1",
        ),
        ({}, "https://api.openai.com/v1"),
        (
            {"url": "ws://127.0.0.1:1/v1", "summary_base_url": "https://sum.example/v1"},
            "https://sum.example/v1",
        ),
        (
            {
                "provider": "azure",
                "azure_openai_api_key": "k",
                "azure_openai_endpoint": "https://res.openai.azure.com",
                "url": "wss://other.openai.azure.com/openai/v1",
            },
            "https://other.openai.azure.com",
        ),
        (
            {
                "provider": "azure",
                "azure_openai_api_key": "k",
                "azure_openai_endpoint": "https://res.openai.azure.com/",
            },
            "https://res.openai.azure.com",
        ),
    ],
)
def test_the_summarizer_goes_where_the_realtime_endpoint_goes(
    settings: dict[str, str], base: str
) -> None:
    loaded = load_settings({**KEYED, **settings})
    assert summarizer_base_url(loaded) == base
    client = client_from_settings(loaded)
    expected = base + ("/openai/v1/" if loaded.provider == "azure" else "/")
    assert str(client.base_url) == expected


async def test_a_summary_with_a_local_url_goes_to_the_local_server() -> None:
    chat = FakeChatServer()
    chat.start()
    try:
        local_ws = chat.base_url.replace("http://", "ws://")
        settings = load_settings({**KEYED, "url": local_ws, "summarizer": "openai"})
        summarizer = build_summarizer(settings)
        assert isinstance(summarizer, OpenAISummarizer)
        summary = await summarizer.summarize([SummaryInput("user", "Meet at noon.")], None, "en")
        await summarizer.aclose()
    finally:
        chat.stop()
    assert summary and len(chat.requests) == 1


def test_config_show_says_where_the_summarizer_and_the_session_go() -> None:
    local = ["config", "show", "--json", "--url", "ws://127.0.0.1:8765/v1"]
    result = runner.invoke(app, local, env=clean_env())
    assert result.exit_code == 0, result.output
    where = json.loads(result.output)["destinations"]
    assert where["realtime endpoint"].startswith("ws://127.0.0.1:8765/v1/realtime?")
    assert where["summarizer"].startswith("the realtime session itself")  # the default
    result = runner.invoke(app, [*local, "--summarizer", "auto"], env=clean_env())
    assert result.exit_code == 0, result.output
    no_key = json.loads(result.output)["destinations"]["summarizer"]
    assert no_key.startswith("this machine")  # auto without a key: extractive
    keyed = runner.invoke(
        app,
        ["config", "show", "--url", "ws://127.0.0.1:8765/v1", "--summarizer", "auto"],
        env=clean_env(OPENAI_API_KEY=f"sk-{SECRET}"),
    )
    assert keyed.exit_code == 0, keyed.output
    assert "summarizer: http://127.0.0.1:8765/v1 (model gpt-4o-mini" in keyed.output
    assert SECRET not in keyed.output


# --- 3. no plain text off this machine --------------------------------------------------------

INSECURE = [
    ("url", "ws://example.com/v1"),
    ("url", "ws://127.0.0.1.example.com/v1"),
    ("url", "http://10.0.0.5:8765/v1"),
    ("openai_base_url", "http://proxy.example/v1"),
    ("azure_openai_endpoint", "http://res.openai.azure.com"),
    ("summary_base_url", "http://192.168.1.2/v1"),
]
LOCAL_OR_ENCRYPTED = [
    ("url", "ws://127.0.0.1:8765/v1"),
    ("url", "ws://127.8.9.10:1/v1"),
    ("url", "ws://localhost:8765/v1"),
    ("url", "ws://[::1]:8765/v1"),
    ("openai_base_url", "http://localhost:9/v1"),
    ("url", "wss://example.com/v1"),
    ("openai_base_url", "https://proxy.example/v1"),
    ("azure_openai_endpoint", "https://res.openai.azure.com"),
    ("summary_base_url", "https://sum.example/v1"),
]


@pytest.mark.parametrize(("name", "url"), INSECURE)
def test_plain_text_to_another_host_is_refused(name: str, url: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({name: url})
    message = str(err.value)
    assert name in message and "unencrypted" in message and "allow_insecure_transport" in message


@pytest.mark.parametrize(("name", "url"), INSECURE)
def test_plain_text_to_another_host_passes_when_allowed(name: str, url: str) -> None:
    assert getattr(load_settings({name: url, "allow_insecure_transport": "true"}), name) == url


@pytest.mark.parametrize(("name", "url"), LOCAL_OR_ENCRYPTED)
def test_loopback_and_encrypted_urls_pass(name: str, url: str) -> None:
    assert getattr(load_settings({name: url}), name) == url


def test_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy.example/v1")
    with pytest.raises(SettingsError, match="openai_base_url"):
        load_settings()
    monkeypatch.setenv("VOICEBOT_ALLOW_INSECURE_TRANSPORT", "1")
    assert load_settings().openai_base_url == "http://proxy.example/v1"


def test_an_unknown_scheme_is_refused_when_loaded() -> None:
    with pytest.raises(SettingsError, match=r"url.*wss://"):
        load_settings({"url": "ftp://example.com/v1"})


# --- 4. a .env that changes where the key goes ------------------------------------------------


def test_a_dotenv_pointing_a_key_from_elsewhere_away_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Path(".env").write_text("VOICEBOT_URL=wss://collector.example/v1\n")
    monkeypatch.setenv("OPENAI_API_KEY", f"sk-{SECRET}")
    settings = load_settings()
    sources = value_sources({})
    (notice,) = env_file_redirects(settings, sources)
    assert "sets url (VOICEBOT_URL)" in notice and "wss://collector.example/v1" in notice
    (error,) = env_file_redirect_errors(settings, sources)
    assert "env OPENAI_API_KEY" in error and "VOICEBOT_ALLOW_ENV_FILE_ENDPOINT" in error

    result = runner.invoke(app, ["run", "--text"], env={"OPENAI_API_KEY": f"sk-{SECRET}"})
    assert result.exit_code == 2
    assert "changes where the API key goes (url)" in result.output
    assert SECRET not in result.output


def test_a_dotenv_cannot_confirm_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text(
        "OPENAI_BASE_URL=https://collector.example/v1\nVOICEBOT_ALLOW_ENV_FILE_ENDPOINT=true\n"
    )
    monkeypatch.setenv("OPENAI_API_KEY", f"sk-{SECRET}")
    settings = load_settings()
    assert settings.allow_env_file_endpoint
    assert env_file_redirect_errors(settings, value_sources({}))


def test_a_dotenv_redirect_confirmed_from_the_environment_is_a_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Path(".env").write_text("VOICEBOT_URL=wss://gateway.example/v1\n")
    monkeypatch.setenv("OPENAI_API_KEY", f"sk-{SECRET}")
    monkeypatch.setenv("VOICEBOT_ALLOW_ENV_FILE_ENDPOINT", "1")
    settings = load_settings()
    sources = value_sources({})
    assert env_file_redirect_errors(settings, sources) == []
    assert len(env_file_redirects(settings, sources)) == 1


def test_a_dotenv_holding_the_key_too_is_a_note_only(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text(f"OPENAI_API_KEY=sk-{SECRET}\nVOICEBOT_URL=wss://gateway.example/v1\n")
    settings = load_settings()
    sources = value_sources({})
    assert env_file_redirect_errors(settings, sources) == []
    assert len(env_file_redirects(settings, sources)) == 1


def test_endpoints_from_the_environment_or_flags_are_not_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Path(".env").write_text("VOICEBOT_VOICE=alloy\n")  # a .env that does not move the key
    monkeypatch.setenv("OPENAI_API_KEY", f"sk-{SECRET}")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://proxy.example/v1")
    overrides = {"url": "wss://gateway.example/v1"}
    settings = load_settings(overrides)
    sources = value_sources(overrides)
    assert env_file_redirects(settings, sources) == []
    assert env_file_redirect_errors(settings, sources) == []
