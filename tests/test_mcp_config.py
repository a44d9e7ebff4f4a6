"""MCP server settings: ``--mcp-server`` entries, the environment, the JSON config file,
``${VAR}`` expansion, and header values that never show."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from realtime_voicebot.cli import app
from realtime_voicebot.config import SettingsError, load_settings
from realtime_voicebot.tools.mcp_config import (
    HttpServer,
    McpConfigError,
    StdioServer,
    load_config_file,
    mask_server_spec,
    parse_server_spec,
    resolve_servers,
    split_server_specs,
)

TOKEN = "ghp_s3cretvalue"


def test_server_specs_parse_into_stdio_and_http_servers() -> None:
    assert parse_server_spec("notes=uvx my-notes --dir '/home/me/My Notes'") == StdioServer(
        "notes", "uvx", ("my-notes", "--dir", "/home/me/My Notes")
    )
    web = parse_server_spec("gh=https://api.example.com/mcp/ 'Authorization: Bearer x=y' X-A:b")
    assert web == HttpServer(
        "gh", "https://api.example.com/mcp/", {"Authorization": "Bearer x=y", "X-A": "b"}
    )
    assert parse_server_spec("local=http://127.0.0.1:8000/mcp") == HttpServer(
        "local", "http://127.0.0.1:8000/mcp"
    )


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("uvx my-notes", "NAME=COMMAND ARGS... or NAME=https://URL"),
        ("notes=", "give a command or a URL after notes="),
        ("my notes=uvx x", "MCP server name 'my notes' must be"),
        ("a__b=uvx x", "no double or trailing _"),
        ("notes_=uvx x", "no double or trailing _"),
        ("x" * 25 + "=uvx x", "1 to 24 letters"),
        ("notes=uvx 'unclosed", "cannot split the command line"),
        ("gh=https://x.example/mcp Authorization", "give headers as 'Name: value'"),
        ("gh=https:///mcp", "is not an http(s) URL"),
    ],
)
def test_bad_server_specs_are_one_line(spec: str, error: str) -> None:
    with pytest.raises(McpConfigError) as caught:
        parse_server_spec(spec)
    assert error in str(caught.value) and "\n" not in str(caught.value)


def test_plain_http_counts_as_secure_on_this_machine_only() -> None:
    assert HttpServer("a", "https://api.example.com/mcp").secure()
    assert HttpServer("a", "http://127.0.0.1:8000/mcp").secure()
    assert HttpServer("a", "http://localhost/mcp").secure()
    assert not HttpServer("a", "http://192.168.1.5:8123/mcp").secure()


def test_good_names_pass() -> None:
    for name in ("a", "notes", "home-assistant", "my_notes2", "x" * 24):
        assert parse_server_spec(f"{name}=cmd").name == name


def test_environment_lists_split_on_semicolons_outside_quotes_or_as_json() -> None:
    assert split_server_specs("a=uvx x; b=cmd --sep ';' --x \"1;2\" ;") == [
        "a=uvx x",
        "b=cmd --sep ';' --x \"1;2\"",
    ]
    assert split_server_specs('["a=uvx x; y", "b=cmd"]') == ["a=uvx x; y", "b=cmd"]
    with pytest.raises(McpConfigError):
        split_server_specs("[not json")


def test_settings_from_flags_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings({"mcp_servers": ["a=uvx a", "b=https://b.example/mcp"]})
    assert settings.mcp_servers == ["a=uvx a", "b=https://b.example/mcp"]
    monkeypatch.setenv("VOICEBOT_MCP_SERVERS", "a=uvx a; b=uvx b")
    assert load_settings().mcp_servers == ["a=uvx a", "b=uvx b"]
    monkeypatch.delenv("VOICEBOT_MCP_SERVERS")
    Path(".env").write_text("VOICEBOT_MCP_SERVERS='[\"c=uvx c\"]'\n")
    assert load_settings().mcp_servers == ["c=uvx c"]
    with pytest.raises(SettingsError, match="two MCP servers are named a"):
        load_settings({"mcp_servers": ["a=uvx a", "a=uvx b"]})


def test_config_file_in_the_common_shape(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "notes": {"command": "uvx", "args": ["my-notes"], "env": {"DIR": "/n"}},
                    "gh": {
                        "type": "http",
                        "url": "https://api.example.com/mcp/",
                        "headers": {"Authorization": "Bearer ${GH_TOKEN}"},
                    },
                    "off": {"command": "x", "disabled": True},
                }
            }
        )
    )
    assert load_config_file(path) == [
        StdioServer("notes", "uvx", ("my-notes",), {"DIR": "/n"}),
        HttpServer("gh", "https://api.example.com/mcp/", {"Authorization": "Bearer ${GH_TOKEN}"}),
    ]
    vscode = tmp_path / "vscode.json"
    vscode.write_text('{"servers": {"n": {"command": "uvx"}}}')
    assert load_config_file(vscode) == [StdioServer("n", "uvx")]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{", "invalid JSON at line 1"),
        ("[]", 'expected {"mcpServers"'),
        ('{"mcpServers": {"a": {"url": "x", "type": "sse"}}}', "SSE transport is not supported"),
        ('{"mcpServers": {"a": {}}}', "give a command (stdio) or a url (HTTP)"),
        ('{"mcpServers": {"a": {"command": "x", "args": "y"}}}', "args must be a list"),
        ('{"mcpServers": {"a": {"url": "https://h/", "headers": {"A": 1}}}}', "object of strings"),
        ('{"mcpServers": {"a b": {"command": "x"}}}', "MCP server name 'a b' must be"),
    ],
)
def test_bad_config_files_are_one_line_naming_the_file(
    tmp_path: Path, content: str, error: str
) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(content)
    with pytest.raises(McpConfigError) as caught:
        load_config_file(path)
    assert str(caught.value).startswith(str(path)) and error in str(caught.value)
    with pytest.raises(SettingsError, match="invalid setting mcp_config"):
        load_settings({"mcp_config": str(path)})


def test_variables_are_expanded_at_start_and_a_missing_one_is_named(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps({"mcpServers": {"gh": {"url": "https://h/mcp", "headers": {"A": "${TOK}"}}}})
    )
    servers = resolve_servers(["n=${BIN} --token ${TOK}"], path, {"BIN": "uvx", "TOK": TOKEN})
    assert servers == [
        StdioServer("n", "uvx", ("--token", TOKEN)),
        HttpServer("gh", "https://h/mcp", {"A": TOKEN}),
    ]
    with pytest.raises(McpConfigError, match=r"MCP server gh: \$\{TOK\} is not set"):
        resolve_servers([], path, {})
    with pytest.raises(McpConfigError, match="two MCP servers are named gh"):
        resolve_servers(["gh=uvx x"], path, {"TOK": "t"})


def test_variables_come_from_the_environment_then_dotenv(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("TOK=from-dotenv\nONLY_FILE=file\n")
    monkeypatch.setenv("TOK", "from-env")
    (server,) = resolve_servers(["w=https://h/mcp 'A: ${TOK}' 'B: ${ONLY_FILE}'"], None)
    assert isinstance(server, HttpServer)
    assert server.headers == {"A": "from-env", "B": "file"}


def test_header_values_are_masked_wherever_they_could_show(tmp_path: Path) -> None:
    spec = f"gh=https://user:pw@api.example.com/mcp?key={TOKEN}&v=1 'Authorization: Bearer {TOKEN}'"
    shown = mask_server_spec(spec)
    assert TOKEN not in shown and "pw" not in shown
    assert shown == (
        "gh=https://********@api.example.com/mcp?key=********&v=******** 'Authorization: ********'"
    )
    assert mask_server_spec("notes=uvx my-notes") == "notes=uvx my-notes"
    assert TOKEN not in repr(parse_server_spec(spec))

    runner = CliRunner()
    result = runner.invoke(app, ["config", "show", "--json", "--mcp-server", spec])
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    assert "Authorization: ********" in json.loads(result.output)["mcp_servers"]["value"]

    bad = runner.invoke(app, ["config", "show", "--mcp-server", spec, "--mcp-server", spec])
    assert bad.exit_code == 2 and "two MCP servers are named gh" in bad.output
    assert TOKEN not in bad.output


def test_repeated_flags_reach_the_settings() -> None:
    result = CliRunner().invoke(
        app,
        [
            "config",
            "show",
            "--json",
            "--mcp-server",
            "a=uvx a",
            "--mcp-server",
            "b=uvx b",
            "--tools-module",
            "x.py",
            "--tools-module",
            "y",
        ],
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["mcp_servers"] == {"value": "['a=uvx a', 'b=uvx b']", "source": "cli"}
    assert shown["tools_modules"] == {"value": "['x.py', 'y']", "source": "cli"}


def test_model_level_setting_errors_do_not_echo_the_api_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-show")
    with pytest.raises(SettingsError) as caught:
        load_settings({"backoff_initial_s": "5", "backoff_max_s": "1"})
    assert "backoff_max_s must not be below" in str(caught.value)
    assert "sk-must-not-show" not in str(caught.value)
    with pytest.raises(SettingsError, match=r"got '-5'"):  # field errors still show the value
        load_settings({"summary_threshold": "-5"})


def test_the_cli_and_settings_do_not_import_the_mcp_sdk() -> None:
    code = (
        "import sys; import realtime_voicebot.cli; from realtime_voicebot.config import "
        "load_settings; load_settings({'mcp_servers': ['a=https://h/mcp', 'b=uvx b']}); "
        "import realtime_voicebot.tools.mcp; print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('mcp', 'mcp_types', 'httpx2')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_readme_config_file_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (block,) = [b for b in readme.split("```json\n")[1:] if '"mcpServers"' in b]
    (path := tmp_path / "mcp.json").write_text(block.split("```")[0])
    servers = resolve_servers([], path, {"GITHUB_TOKEN": TOKEN})
    assert [s.name for s in servers] == ["notes", "fs", "github"]
    assert servers[2] == HttpServer(
        "github", "https://api.githubcopilot.com/mcp/", {"Authorization": f"Bearer {TOKEN}"}
    )


def test_the_source_is_built_from_settings_with_variables_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime_voicebot.tools.mcp import McpToolSource

    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"gh": {"url": "https://h/mcp"}}}))
    monkeypatch.setenv("TOK", TOKEN)
    settings = load_settings(
        {
            "mcp_servers": ["notes=uvx notes --token ${TOK}"],
            "mcp_config": str(path),
            "tool_timeout_s": "7",
            "mcp_connect_timeout_s": "9",
            "tool_output_max_chars": "2000",
        }
    )
    source = McpToolSource.from_settings(settings)
    assert list(source.servers) == ["notes", "gh"]
    assert source.servers["notes"].config == StdioServer(
        "notes", "uvx", ("notes", "--token", TOKEN)
    )
    assert TOKEN not in repr(source.servers["notes"].config)
    assert (source.call_timeout_s, source.connect_timeout_s, source.max_output_chars) == (
        7.0,
        9.0,
        2000,
    )
    assert source.tools() == [] and source.snapshot()["servers"]["gh"]["state"] == "idle"
