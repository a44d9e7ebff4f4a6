"""The fake server's pure parts for this wave: image sizes and tokens, hosted MCP checks and
approval rules, MCP scenario lines, the out-of-band reply, and session checks of turn
detection, noise reduction, idle timeout and tools."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from realtime_voicebot.fake import images, mcp, session_config
from realtime_voicebot.fake.conversation import ContentPart, Item, TokenRates
from realtime_voicebot.fake.errors import RequestError
from realtime_voicebot.fake.scenario import McpCall, Scenario, ScenarioError
from realtime_voicebot.fake.session import out_of_band_reply
from realtime_voicebot.fake.vad import VadSettings
from realtime_voicebot.transport.events import ErrorCode
from tests.images import jpeg_bytes, png_bytes

JSON = dict[str, Any]


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


# --- images -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime", "size"),
    [
        (png_bytes(300, 200), "image/png", (300, 200)),
        (jpeg_bytes(1920, 1080), "image/jpeg", (1920, 1080)),
    ],
)
def test_image_size_from_a_data_url(data: bytes, mime: str, size: tuple[int, int]) -> None:
    info = images.parse_data_url(data_url(data, mime))
    assert (info.mime_type, info.width, info.height, info.size_bytes) == (mime, *size, len(data))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://example.com/a.png", "data URL"),
        ("data:image/gif;base64,R0lGODlh", "unsupported image type"),
        ("data:image/png;base64,not base64!", "base64"),
        (data_url(jpeg_bytes(10, 10), "image/png"), "not image/png"),
        (data_url(b"\x89PNG\r\n\x1a\n" + b"\x00" * 8, "image/png"), "could not be decoded"),
    ],
)
def test_bad_images_are_refused(url: str, reason: str) -> None:
    with pytest.raises(images.ImageError, match=reason):
        images.parse_data_url(url)


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        ((1024, 1024), "high", 765),  # 768 x 768: 4 tiles
        ((1024, 1024), "auto", 765),
        ((1024, 1024), None, 765),
        ((1024, 1024), "low", 85),
        ((4096, 8192), "high", 1105),  # 1024x2048 -> 768x1536: 2 x 3 tiles
        ((300, 200), "high", 255),  # never enlarged: one tile
    ],
)
def test_image_tokens(size: tuple[int, int], detail: str | None, tokens: int) -> None:
    assert images.image_tokens(*size, detail) == tokens


def test_an_image_part_counts_its_tokens_and_says_its_size() -> None:
    part = ContentPart("input_image", detail="low", image_size=(640, 480), image_tokens=85)
    item = Item(
        "item_1", "message", role="user", content=[ContentPart("input_text", text="Hi?"), part]
    )
    assert item.text() == "Hi? [image 640x480]"
    assert item.tokens(TokenRates()).image == 85
    assert part.to_wire() == {"type": "input_image", "detail": "low"}


# --- hosted MCP ---------------------------------------------------------------------------------


def tool(**fields: Any) -> JSON:
    return {"type": "mcp", "server_label": "s", "server_url": "https://m.example", **fields}


@pytest.mark.parametrize(
    ("config", "param"),
    [
        ({"type": "mcp", "server_url": "https://m"}, "t.server_label"),
        (tool(connector_id="connector_gmail"), "t"),
        ({"type": "mcp", "server_label": "s"}, "t"),
        (tool(server_url="file:///etc"), "t.server_url"),
        ({"type": "mcp", "server_label": "s", "connector_id": "connector_x"}, "t.connector_id"),
        (tool(allowed_tools="all"), "t.allowed_tools"),
        (tool(allowed_tools={"names": ["a"]}), "t.allowed_tools"),
        (tool(require_approval="sometimes"), "t.require_approval"),
        (tool(require_approval={"maybe": {}}), "t.require_approval"),
        (
            tool(require_approval={"never": {"tool_names": "a"}}),
            "t.require_approval.never.tool_names",
        ),
    ],
)
def test_mcp_tool_checks(config: JSON, param: str) -> None:
    with pytest.raises(RequestError) as error:
        mcp.check_tool(config, "t")
    assert error.value.param == param


def test_mcp_tool_accepted_shapes() -> None:
    for config in (
        tool(),
        tool(allowed_tools=["get_weather"], require_approval="never"),
        tool(allowed_tools={"read_only": True}, require_approval={"never": {"read_only": True}}),
        {
            "type": "mcp",
            "server_label": "c",
            "connector_id": "connector_gmail",
            "authorization": "t",
        },
    ):
        mcp.check_tool(config, "t")


def test_mcp_listing_filters_and_approval_rules() -> None:
    weather, message = mcp.DEFAULT_MCP_TOOLS
    names = [t["name"] for t in mcp.McpServer(tool()).tools({})]
    assert names == ["get_weather", "send_message"]
    assert [t["name"] for t in mcp.McpServer(tool(allowed_tools=["send_message"])).tools({})] == [
        "send_message"
    ]
    read_only = mcp.McpServer(tool(allowed_tools={"read_only": True}))
    assert [t["name"] for t in read_only.tools({})] == ["get_weather"]
    custom = {"s": [{"name": "ping", "input_schema": {}}]}
    assert [t["name"] for t in mcp.McpServer(tool()).tools(custom)] == ["ping"]

    assert mcp.McpServer(tool()).needs_approval(weather)  # the default is "always"
    assert not mcp.McpServer(tool(require_approval="never")).needs_approval(message)
    by_name = mcp.McpServer(tool(require_approval={"never": {"tool_names": ["get_weather"]}}))
    assert not by_name.needs_approval(weather) and by_name.needs_approval(message)
    by_hint = mcp.McpServer(tool(require_approval={"never": {"read_only": True}}))
    assert not by_hint.needs_approval(weather) and by_hint.needs_approval(message)


def test_mcp_listing_failures_and_secrets() -> None:
    assert mcp.McpServer(tool()).list_error(frozenset({"s"})) is not None
    assert mcp.McpServer(tool()).list_error(frozenset()) is None
    connector = {"type": "mcp", "server_label": "c", "connector_id": "connector_gmail"}
    assert mcp.McpServer(connector).list_error(frozenset()) is not None
    assert mcp.McpServer({**connector, "authorization": "t"}).list_error(frozenset()) is None
    secret = tool(authorization="tok", headers={"X-Key": "k"})
    assert mcp.echoed(secret) == tool()
    session = {"tools": [secret, {"type": "function", "name": "f"}]}
    assert session_config.public(session)["tools"] == [tool(), {"type": "function", "name": "f"}]
    assert session["tools"][0]["authorization"] == "tok"


def test_mcp_scenario_lines() -> None:
    scenario = Scenario.from_dict(
        {
            "replies": [
                {"mcp_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
                {
                    "mcp_call": {
                        "name": "send_message",
                        "server_label": "phone",
                        "error": "offline",
                        "say": "It failed.",
                    }
                },
            ]
        }
    )
    assert scenario.replies == [
        McpCall("get_weather", {"city": "Oslo"}),
        McpCall("send_message", {}, server_label="phone", error="offline", say="It failed."),
    ]
    text = Scenario.from_text('mcp: get_weather {"city": "Rome"}\ntool: f {}\n')
    assert text.replies[0] == McpCall("get_weather", {"city": "Rome"})
    with pytest.raises(ScenarioError, match="unknown mcp_call keys: label"):
        Scenario.from_dict({"replies": [{"mcp_call": {"name": "a", "label": "x"}}]})
    with pytest.raises(ScenarioError, match=r"mcp_call\.output must be a string"):
        Scenario.from_dict({"replies": [{"mcp_call": {"name": "a", "output": 3}}]})


# --- out-of-band reply --------------------------------------------------------------------------


def items_for_summary() -> list[Item]:
    return [
        Item(
            "i0",
            "message",
            role="system",
            content=[ContentPart("input_text", text="Summary: Ann likes tea.")],
        ),
        Item(
            "i1",
            "message",
            role="user",
            content=[ContentPart("input_audio", transcript="My dog is Rex.")],
        ),
        Item(
            "i2",
            "message",
            role="assistant",
            content=[ContentPart("output_audio", transcript="Nice name!")],
        ),
        Item("i3", "message", role="user", content=[ContentPart("input_text", text="x" * 500)]),
    ]


def test_out_of_band_summary_lists_what_was_said() -> None:
    summary = out_of_band_reply(
        {"instructions": "Summarize the conversation."}, items_for_summary()
    )
    lines = summary.split("\n")
    assert lines[:4] == [
        "Summary:",
        "system: Summary: Ann likes tea.",
        "user: My dog is Rex.",
        "assistant: Nice name!",
    ]
    assert lines[4] == "user: " + "x" * 197 + "..."
    by_metadata = out_of_band_reply(
        {"instructions": "Condense.", "metadata": {"purpose": "summary"}}, items_for_summary()
    )
    assert by_metadata == summary
    assert out_of_band_reply({"instructions": "Summarise."}, []) == "Summary:\n(nothing was said)"


def _system(item_id: str, text: str) -> Item:
    return Item(item_id, "message", role="system", content=[ContentPart("input_text", text=text)])


def test_a_summary_asked_by_a_last_system_item_does_not_summarize_that_item() -> None:
    ask = _system("ask", "Write the running summary of the conversation above.")
    items = [*items_for_summary()[:3], ask]
    inline = {"type": "message", "role": "system", "content": []}
    request = {"input": [{"type": "item_reference", "id": i.id} for i in items[:3]] + [inline]}
    lines = out_of_band_reply(request, items).split("\n")
    assert lines == [
        "Summary:",
        "system: Summary: Ann likes tea.",
        "user: My dog is Rex.",
        "assistant: Nice name!",
    ]
    # Not the request: a last item that is a reference, or that asks for nothing.
    referenced = {"input": [{"type": "item_reference", "id": i.id} for i in items]}
    assert out_of_band_reply(referenced, items) == "You said: My dog is Rex."
    plain = [*items[:3], _system("note", "Be brief.")]
    assert out_of_band_reply({"input": [inline] * 4}, plain) == "You said: My dog is Rex."
    with_purpose = out_of_band_reply(
        {"input": [inline] * 4, "metadata": {"purpose": "summary"}}, plain
    )
    assert with_purpose.split("\n")[-1] == "system: Be brief."


def test_a_summary_is_bounded_keeping_its_first_line_and_the_newest() -> None:
    items = [_system("s0", "Summary: Ann likes tea.")] + [
        Item(
            f"u{n}",
            "message",
            role="user",
            content=[ContentPart("input_text", text=f"turn {n} " * 20)],
        )
        for n in range(40)
    ]
    summary = out_of_band_reply({"instructions": "Summarize."}, items)
    lines = summary.split("\n")
    assert len(summary) <= 1_500
    assert lines[:2] == ["Summary:", "system: Summary: Ann likes tea."]
    assert lines[-1].startswith("user: turn 39 ")
    numbers = [int(line.split()[2]) for line in lines[2:]]
    assert numbers == list(range(40 - len(numbers), 40))  # the oldest gave way
    short = out_of_band_reply({"instructions": "Summarize."}, items[:3])
    assert len(short.split("\n")) == 4  # under the bound nothing is dropped


def test_out_of_band_reply_without_a_summary_request_echoes() -> None:
    assert out_of_band_reply({"instructions": "Classify."}, items_for_summary()[:2]) == (
        "You said: My dog is Rex."
    )
    assert out_of_band_reply({}, []) == "Nothing to answer."


# --- session checks -----------------------------------------------------------------------------


def ga_update(**input_fields: Any) -> JSON:
    return {"type": "realtime", "audio": {"input": input_fields}}


def apply(update: JSON, dialect: str = "ga") -> JSON:
    current = session_config.default_session(dialect, "sess_1", "gpt-realtime", 1)  # type: ignore[arg-type]
    return session_config.apply_update(current, update, dialect, voice_locked=False)  # type: ignore[arg-type]


def test_noise_reduction_and_eagerness_are_kept() -> None:
    session = apply(
        ga_update(
            noise_reduction={"type": "far_field"},
            turn_detection={"type": "semantic_vad", "eagerness": "low"},
        )
    )
    assert session_config.noise_reduction(session, "ga") == "far_field"
    assert session_config.turn_detection(session, "ga") == {
        "type": "semantic_vad",
        "eagerness": "low",
        "create_response": True,
        "interrupt_response": True,
    }
    beta = apply({"input_audio_noise_reduction": {"type": "near_field"}}, "beta")
    assert session_config.noise_reduction(beta, "beta") == "near_field"
    off = session_config.apply_update(
        session, ga_update(noise_reduction=None), "ga", voice_locked=False
    )
    assert session_config.noise_reduction(off, "ga") is None


@pytest.mark.parametrize(
    ("update", "dialect", "code", "param"),
    [
        (
            ga_update(noise_reduction={"type": "studio"}),
            "ga",
            ErrorCode.INVALID_VALUE,
            "session.audio.input.noise_reduction.type",
        ),
        (
            {"input_audio_noise_reduction": {}},
            "beta",
            ErrorCode.INVALID_VALUE,
            "session.input_audio_noise_reduction.type",
        ),
        (
            ga_update(turn_detection={"type": "semantic_vad", "eagerness": "eager"}),
            "ga",
            ErrorCode.INVALID_VALUE,
            "session.audio.input.turn_detection.eagerness",
        ),
        (
            ga_update(turn_detection={"type": "semantic_vad", "idle_timeout_ms": 5000}),
            "ga",
            ErrorCode.UNKNOWN_PARAMETER,
            "session.audio.input.turn_detection.idle_timeout_ms",
        ),
        (
            {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}},
            "beta",
            ErrorCode.UNKNOWN_PARAMETER,
            "session.turn_detection.idle_timeout_ms",
        ),
        (
            ga_update(turn_detection={"type": "server_vad", "idle_timeout_ms": 0}),
            "ga",
            ErrorCode.INVALID_VALUE,
            "session.audio.input.turn_detection.idle_timeout_ms",
        ),
        ({"tools": [tool()]}, "beta", ErrorCode.INVALID_VALUE, "session.tools[0].type"),
        (
            {"type": "realtime", "tools": [{"type": "mcp", "server_label": "s"}]},
            "ga",
            ErrorCode.INVALID_VALUE,
            "session.tools[0]",
        ),
        (
            {"type": "realtime", "tools": [{"type": "web_search"}]},
            "ga",
            ErrorCode.INVALID_VALUE,
            "session.tools[0].type",
        ),
    ],
)
def test_feature_session_errors(update: JSON, dialect: str, code: str, param: str) -> None:
    with pytest.raises(RequestError) as error:
        apply(update, dialect)
    assert (error.value.code, error.value.param) == (code, param)


def test_idle_timeout_is_read_from_ga_server_vad_only() -> None:
    session = apply(ga_update(turn_detection={"type": "server_vad", "idle_timeout_ms": 4000}))
    assert session_config.idle_timeout_ms(session, "ga") == 4000
    assert session_config.idle_timeout_ms(apply(ga_update()), "ga") is None
    semantic = apply(ga_update(turn_detection={"type": "semantic_vad"}))
    assert session_config.idle_timeout_ms(semantic, "ga") is None
    assert apply({"type": "realtime", "tools": [tool()]})["tools"] == [tool()]


@pytest.mark.parametrize(
    ("eagerness", "silence_ms"), [("low", 800), ("medium", 500), ("auto", 500), ("high", 250)]
)
def test_semantic_vad_silence_by_eagerness(eagerness: str, silence_ms: int) -> None:
    settings = VadSettings.from_turn_detection({"type": "semantic_vad", "eagerness": eagerness})
    assert settings.silence_duration_ms == silence_ms
