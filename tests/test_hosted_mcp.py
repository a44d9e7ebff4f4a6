"""Hosted MCP servers (GA): the ``hosted_mcp`` setting, and the approval round trip end to end
through the real app against the fake service (granted, refused, unanswered); beta refuses
at start-up with one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from realtime_voicebot.config import SettingsError, dialect_problems, load_settings, shown_value
from realtime_voicebot.fake.scenario import McpCall
from realtime_voicebot.testing import (
    FakeRealtimeServer,
    FakeServerConfig,
    Scenario,
    start_bot,
    test_settings,
)
from realtime_voicebot.tools.hosted_mcp import (
    HostedMcpServer,
    parse_hosted_spec,
    resolve_hosted,
)
from realtime_voicebot.tools.mcp_config import McpConfigError
from realtime_voicebot.transport.events import session_update

from .spec import validate_client
from .test_cli_run import clean_env, run_cli

TOKEN = "hosted-secret-token-0123456789"


def test_hosted_entries_parse() -> None:
    server = parse_hosted_spec(
        "home=https://mcp.example.com/mcp allowed_tools=get_weather,send_message "
        "require_approval=never:get_weather authorization=${HOME_TOKEN} 'description=My home'"
    )
    assert server == HostedMcpServer(
        "home",
        server_url="https://mcp.example.com/mcp",
        authorization="${HOME_TOKEN}",
        allowed_tools=("get_weather", "send_message"),
        require_approval={"never": {"tool_names": ["get_weather"]}},
        description="My home",
    )
    assert "HOME_TOKEN" not in repr(server) and "example" not in repr(server)
    calendar = parse_hosted_spec("cal=connector_googlecalendar require_approval=never")
    assert calendar.connector_id == "connector_googlecalendar"
    assert calendar.require_approval == "never"
    assert parse_hosted_spec("x=https://a.example/mcp").require_approval == "always"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("home", "LABEL=https://URL"),
        ("bad label=https://a.example", "LABEL=https://URL"),
        ("home=ftp://a.example", "give an http(s) URL or a connector id"),
        (f"home={TOKEN}", "give an http(s) URL or a connector id"),
        ("home=", "give a URL or a connector id"),
        ("home=https://a.example color=red", "unknown option 'color'"),
        (f"home=https://a.example {TOKEN}", "a word that is not key=value"),
        ("home=https://a.example require_approval=sometimes", "always, never, or never:TOOL"),
        ("home=https://a.example allowed_tools=a;b", "is not a name"),
    ],
)
def test_bad_hosted_entries_are_one_line_without_secrets(spec: str, message: str) -> None:
    with pytest.raises(McpConfigError, match=re.escape(message)) as caught:
        parse_hosted_spec(spec)
    assert TOKEN not in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(SettingsError) as setting:
        load_settings({"hosted_mcp": [spec]})
    assert TOKEN not in str(setting.value)


def test_hosted_setting_from_the_environment_masked_and_expanded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "VOICEBOT_HOSTED_MCP",
        json.dumps(
            [
                "home=https://mcp.example.com/mcp?key=abc authorization=${HOME_TOKEN}",
                "cal=connector_googlecalendar",
            ]
        ),
    )
    settings = load_settings()
    shown = shown_value("hosted_mcp", settings.hosted_mcp)
    assert "abc" not in shown and "HOME_TOKEN" not in shown and "authorization=********" in shown
    with pytest.raises(McpConfigError, match=r"\$\{HOME_TOKEN\} is not set"):
        resolve_hosted(settings.hosted_mcp, environ={})
    home, cal = resolve_hosted(settings.hosted_mcp, environ={"HOME_TOKEN": TOKEN})
    assert home.authorization == TOKEN and cal.authorization is None
    event = session_update(settings, "ga", tools=[home.tool(), cal.tool()])
    validate_client(event, "ga")
    assert event["session"]["tools"][0]["authorization"] == TOKEN
    with pytest.raises(ValueError, match="GA dialect"):
        session_update(settings, "beta", tools=[home.tool()])
    with pytest.raises(SettingsError, match="two hosted MCP servers are labelled home"):
        load_settings({"hosted_mcp": ["home=https://a.example", "home=https://b.example"]})


def test_beta_cannot_have_hosted_servers() -> None:
    beta = load_settings({"dialect": "beta", "hosted_mcp": ["home=https://a.example/mcp"]})
    (problem,) = dialect_problems(beta)
    assert problem.startswith("hosted_mcp needs the GA dialect")
    assert dialect_problems(load_settings({"hosted_mcp": ["home=https://a.example/mcp"]})) == []
    assert dialect_problems(load_settings({"dialect": "beta"})) == []


async def test_beta_refuses_hosted_mcp_at_start_up_with_one_line(tmp_path: Path) -> None:
    code, out, err, _ = await run_cli(
        "run",
        "--fake-server",
        "--text",
        "--dialect",
        "beta",
        "--hosted-mcp",
        f"home=https://mcp.example.com/mcp authorization={TOKEN}",
        "--transcript",
        str(tmp_path / "t.jsonl"),
        env=clean_env(),
    )
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: hosted_mcp needs the GA dialect (beta sessions have no MCP tools); remove "
        "--hosted-mcp or use --dialect ga (client-side --mcp-server works in both)"
    ]
    assert TOKEN not in out + err and "Traceback" not in err


@pytest.mark.parametrize("answer", ["y", "n", None])
async def test_hosted_call_with_approval_through_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: str | None
) -> None:
    """Granted (y), refused (n), or no answer within the bound (a refusal)."""
    monkeypatch.setenv("HOME_MCP_TOKEN", TOKEN)
    call = McpCall("send_message", {"to": "Ann", "text": "on my way"})
    config = FakeServerConfig(scenario=Scenario(replies=[call]), speed=0)
    async with FakeRealtimeServer(config) as server:
        settings = test_settings(
            server,
            tmp_path,
            hosted_mcp=json.dumps(
                ["home=https://mcp.example.com/mcp authorization=${HOME_MCP_TOKEN}"]
            ),
            mcp_approval_timeout_s=0.2 if answer is None else 60,
        )
        running = start_bot(server, settings, text_lines=True)
        view = running.view
        await running.until(lambda: view.listings)
        assert view.listings[0].tools == ("get_weather", "send_message")
        assert view.listings[0].hosted and view.listings[0].problem is None
        await running.type("tell Ann I am on my way")
        await running.until(lambda: view.approvals)
        request = view.approvals[0]
        assert (request.server, request.name) == ("home", "send_message")
        assert request.arguments == '{"to":"Ann","text":"on my way"}'
        if answer is not None:
            await running.type(answer)
        await running.until(lambda: view.assistant)
        session = await running.session()
        assert await running.stop() == 0
    approved = answer == "y"
    assert [(a, how) for _, a, how in view.approval_answers] == [
        (approved, "user" if answer else "timeout")
    ]
    spoken = view.assistant[0][1]
    if approved:
        assert spoken == "The send_message tool says: Message sent to Ann."
        ((call_shown, result),) = view.tool_results
        assert (call_shown.server, call_shown.name) == ("home", "send_message")
        assert call_shown.hosted
        assert result.outcome == "ok" and result.output_chars == len("Message sent to Ann.")
        assert result.duration_s is not None
    else:
        assert spoken == "I could not use send_message: you did not approve it."
        assert view.tool_results == []
    for event in session.received:
        validate_client(event, "ga")
    sent = [e["type"] for e in session.received]
    responses = [
        e for e in session.received if e.get("item", {}).get("type") == "mcp_approval_response"
    ]
    assert [r["item"]["approve"] for r in responses] == [approved]
    after = sent[sent.index("conversation.item.create", sent.index("response.create") + 1) :]
    assert "response.create" not in after  # the service went on by itself
    assert session.session["tools"][0]["authorization"] == TOKEN
    transcript = (tmp_path / "transcript.jsonl").read_text()
    shown = json.dumps([view.notices, view.errors, view.user, view.summaries], default=str)
    assert TOKEN not in transcript + shown
    summary = view.summaries[0]["parts"]["core"]["hosted_mcp"]
    assert summary["approvals_requested"] == 1
    assert summary["approved" if approved else "refused" if answer else "timed_out"] == 1
