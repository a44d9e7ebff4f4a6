from __future__ import annotations

from pathlib import Path

import pytest

from realtime_voicebot.config import (
    SECRET_FIELDS,
    Settings,
    SettingsError,
    load_settings,
    settings_reference_markdown,
    value_sources,
)


def test_defaults_are_valid() -> None:
    s = load_settings()
    assert s.provider == "openai"
    assert s.dialect == "ga"
    assert s.summary_threshold == 20000
    assert s.summary_keep_items == 4


def test_precedence_cli_over_env_over_dotenv_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("VOICEBOT_MODEL=from-dotenv\nVOICEBOT_VOICE=dotenv-voice\n")
    monkeypatch.setenv("VOICEBOT_MODEL", "from-env")
    monkeypatch.setenv("VOICEBOT_SUMMARY_THRESHOLD", "9000")
    s = load_settings({"summary_threshold": "1234"})
    assert s.model == "from-env"  # env beats .env
    assert s.voice == "dotenv-voice"  # .env beats default
    assert s.summary_threshold == 1234  # cli beats env
    assert s.chunk_ms == 20  # default
    sources = value_sources({"summary_threshold": "1234"})
    assert sources["summary_threshold"] == "cli"
    assert sources["model"] == "env VOICEBOT_MODEL"
    assert sources["voice"] == ".env VOICEBOT_VOICE"
    assert sources["chunk_ms"] == "default"


def test_standard_openai_and_azure_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abc")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://example.test/v1")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-key")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://r.openai.azure.com")
    s = load_settings()
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == "sk-abc"
    assert s.openai_base_url == "https://example.test/v1"
    assert s.azure_openai_endpoint == "https://r.openai.azure.com"
    assert s.api_key() is s.openai_api_key
    azure = load_settings({"provider": "azure"})
    assert azure.api_key() is not None and azure.api_key().get_secret_value() == "az-key"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"summary_threshold": "-5"}, "summary_threshold"),
        ({"provider": "bedrock"}, "provider"),
        ({"dialect": "v2"}, "dialect"),
        ({"chunk_ms": "0"}, "chunk_ms"),
        ({"summary_language": "French!"}, "summary_language"),
        ({"backoff_initial_s": "10", "backoff_max_s": "1"}, "backoff_max_s"),
    ],
)
def test_invalid_values_name_the_setting(overrides: dict[str, str], setting: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(overrides)
    assert setting in str(err.value)


def test_env_is_validated_like_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEBOT_SUMMARY_THRESHOLD", "-5")
    with pytest.raises(SettingsError, match="summary_threshold"):
        load_settings()


def test_secrets_never_in_repr_or_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret123")
    s = load_settings()
    assert "secret123" not in repr(s)
    assert "secret123" not in str(s)
    assert "secret123" not in s.model_dump_json()
    assert {"openai_api_key", "azure_openai_api_key"} == SECRET_FIELDS


def test_log_level_is_case_insensitive() -> None:
    assert load_settings({"log_level": "debug"}).log_level == "DEBUG"


def test_readme_settings_table_is_current() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert settings_reference_markdown() in readme, "run: python scripts/update_readme.py"


def test_cli_option_table_is_current() -> None:
    import json

    from realtime_voicebot.config import cli_options

    path = Path(__file__).parents[1] / "realtime_voicebot" / "cli_settings.json"
    assert json.loads(path.read_text()) == cli_options(), "run: python scripts/update_readme.py"


def test_the_cli_is_built_without_the_settings_machinery() -> None:
    import subprocess
    import sys

    code = (
        "import sys, realtime_voicebot.cli as c; "
        "c.app.registered_commands; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'pydantic_settings', 'numpy', 'openai', 'websockets')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
