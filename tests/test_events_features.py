"""Settings and client builders of this wave's protocol features, against the SDK's types in
both dialects: turn detection modes, noise reduction, idle timeout, client-owned turns,
hosted MCP tools and approvals, images, out-of-band responses, and the MCP event names."""

from __future__ import annotations

import base64
import json
from typing import Any

import pydantic
import pytest

from realtime_voicebot.config import SettingsError, dialect_problems, load_settings
from realtime_voicebot.transport import events as ev
from realtime_voicebot.transport.events import EventParser, ServerEventType, wire_name
from tests.images import jpeg_bytes, png_bytes

from .spec import validate_client, validate_ga_response_create_with_references, validate_server

DIALECTS = ["ga", "beta"]


def detection_of(session: dict[str, Any], dialect: str) -> Any:
    return (
        session["audio"]["input"]["turn_detection"]
        if dialect == "ga"
        else session["turn_detection"]
    )


# --- turn detection, noise reduction, idle timeout ---------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_semantic_vad_session_in_both_dialects(dialect: ev.Dialect) -> None:
    s = load_settings({"turn_detection": "semantic_vad", "vad_eagerness": "high"})
    event = ev.session_update(s, dialect)
    validate_client(event, dialect)
    assert detection_of(event["session"], dialect) == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": True,
        "interrupt_response": True,
    }
    assert dialect_problems(s) == []


@pytest.mark.parametrize("dialect", DIALECTS)
def test_manual_turns_send_null_turn_detection(dialect: ev.Dialect) -> None:
    s = load_settings({"turn_detection": "manual"})
    event = ev.session_update(s, dialect)
    validate_client(event, dialect)
    assert detection_of(event["session"], dialect) is None
    server_vad = ev.session_update(load_settings(), dialect)
    assert detection_of(server_vad["session"], dialect)["type"] == "server_vad"


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("mode", ["server_vad", "semantic_vad"])
def test_client_owned_turn_taking_flags(dialect: ev.Dialect, mode: str) -> None:
    s = load_settings({"turn_detection": mode, "interrupt_response": "false"})
    default = detection_of(ev.session_config(s, dialect), dialect)
    assert (default["create_response"], default["interrupt_response"]) == (True, False)
    owned = ev.session_update(s, dialect, create_response=False, interrupt_response=False)
    validate_client(owned, dialect)
    detection = detection_of(owned["session"], dialect)
    assert (detection["create_response"], detection["interrupt_response"]) == (False, False)
    forced_on = detection_of(ev.session_config(s, dialect, interrupt_response=True), dialect)
    assert forced_on["interrupt_response"] is True


@pytest.mark.parametrize(
    ("dialect", "mode"), [(d, m) for d in DIALECTS for m in ("near_field", "far_field")]
)
def test_noise_reduction_in_both_dialects(dialect: ev.Dialect, mode: str) -> None:
    event = ev.session_update(load_settings({"noise_reduction": mode}), dialect)
    validate_client(event, dialect)
    session = event["session"]
    value = (
        session["audio"]["input"]["noise_reduction"]
        if dialect == "ga"
        else session["input_audio_noise_reduction"]
    )
    assert value == {"type": mode}


def test_noise_reduction_off_is_sent_as_null() -> None:
    ga = ev.session_config(load_settings(), "ga")
    assert ga["audio"]["input"]["noise_reduction"] is None


def test_idle_timeout_in_ga_and_refused_for_beta() -> None:
    ga = load_settings({"idle_timeout_ms": "6000"})
    event = ev.session_update(ga, "ga")
    validate_client(event, "ga")
    assert event["session"]["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 6000
    assert (
        "idle_timeout_ms"
        not in ev.session_config(load_settings(), "ga")["audio"]["input"]["turn_detection"]
    )
    assert dialect_problems(ga) == []
    beta = load_settings({"idle_timeout_ms": "6000", "dialect": "beta"})
    problems = dialect_problems(beta)
    assert len(problems) == 1 and problems[0].startswith("idle_timeout_ms needs the GA dialect")
    with pytest.raises(ValueError, match="idle_timeout_ms"):
        ev.session_config(beta, "beta")
    assert dialect_problems(load_settings({"dialect": "beta"})) == []


@pytest.mark.parametrize("mode", ["semantic_vad", "manual"])
def test_idle_timeout_needs_server_vad(mode: str) -> None:
    with pytest.raises(SettingsError, match="idle_timeout_ms works with turn_detection server_vad"):
        load_settings({"idle_timeout_ms": "5000", "turn_detection": mode})
    assert load_settings({"turn_detection": mode}).idle_timeout_ms is None


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"turn_detection": "push"}, "turn_detection"),
        ({"vad_eagerness": "eager"}, "vad_eagerness"),
        ({"noise_reduction": "studio"}, "noise_reduction"),
        ({"idle_timeout_ms": "10"}, "idle_timeout_ms"),
    ],
)
def test_bad_feature_settings_name_the_setting(overrides: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=f"invalid setting {name}"):
        load_settings(overrides)


# --- hosted MCP ---------------------------------------------------------------------------------


def test_mcp_tool_in_a_ga_session_and_refused_in_beta() -> None:
    tool = ev.mcp_tool(
        "notes",
        server_url="https://mcp.example.com/sse",
        authorization="token-123",
        allowed_tools=["get_weather"],
        require_approval={"never": {"tool_names": ["get_weather"]}},
    )
    assert tool == {
        "type": "mcp",
        "server_label": "notes",
        "server_url": "https://mcp.example.com/sse",
        "authorization": "token-123",
        "allowed_tools": ["get_weather"],
        "require_approval": {"never": {"tool_names": ["get_weather"]}},
    }
    s = load_settings()
    validate_client(ev.session_update(s, "ga", tools=[tool]), "ga")
    with pytest.raises(ValueError, match="mcp tools need the GA dialect"):
        ev.session_config(s, "beta", tools=[tool])
    # The beta spec has no such tool either; function tools still pass in beta.
    beta_event = ev.session_update(s, "beta")
    beta_event["session"]["tools"] = [tool]
    with pytest.raises(pydantic.ValidationError):
        validate_client(beta_event, "beta")
    function = {"type": "function", "name": "f", "description": "F.", "parameters": {}}
    validate_client(ev.session_update(s, "beta", tools=[function]), "beta")
    connector = ev.mcp_tool("cal", connector_id="connector_googlecalendar", authorization="t")
    validate_client(ev.session_update(s, "ga", tools=[connector]), "ga")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"server_url": "https://a", "connector_id": "connector_gmail"},
        {"server_url": "ftp://a"},
    ],
)
def test_mcp_tool_builder_checks_its_target(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        ev.mcp_tool("x", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="server_label"):
        ev.mcp_tool("two words", server_url="https://a")


def test_mcp_approval_response_is_a_ga_item() -> None:
    event = ev.mcp_approval_response_create("item_req1", True)
    validate_client(event, "ga")
    item = event["item"]
    assert set(item) == {"type", "id", "approval_request_id", "approve"}
    assert (item["type"], item["approval_request_id"], item["approve"]) == (
        "mcp_approval_response",
        "item_req1",
        True,
    )
    assert len(item["id"]) <= 32
    refused = ev.mcp_approval_response_create("item_req1", False, reason="not now")
    validate_client(refused, "ga")
    assert refused["item"]["reason"] == "not now" and refused["item"]["approve"] is False
    assert refused["item"]["id"] != item["id"]
    with pytest.raises(pydantic.ValidationError):
        validate_client(event, "beta")


def test_mcp_server_events_are_known_in_ga_only() -> None:
    parser = EventParser()
    names = {
        ServerEventType.MCP_LIST_TOOLS_IN_PROGRESS: {"item_id": "i"},
        ServerEventType.MCP_LIST_TOOLS_COMPLETED: {"item_id": "i"},
        ServerEventType.MCP_LIST_TOOLS_FAILED: {"item_id": "i"},
        ServerEventType.MCP_CALL_ARGUMENTS_DELTA: {
            "item_id": "i",
            "output_index": 0,
            "response_id": "r",
            "delta": "{",
        },
        ServerEventType.MCP_CALL_ARGUMENTS_DONE: {
            "item_id": "i",
            "output_index": 0,
            "response_id": "r",
            "arguments": "{}",
        },
        ServerEventType.MCP_CALL_IN_PROGRESS: {"item_id": "i", "output_index": 0},
        ServerEventType.MCP_CALL_COMPLETED: {"item_id": "i", "output_index": 0},
        ServerEventType.MCP_CALL_FAILED: {"item_id": "i", "output_index": 0},
    }
    for event_type, fields in names.items():
        wire = {"type": event_type.value, "event_id": "e", **fields}
        validate_server(wire, "ga")
        with pytest.raises(pydantic.ValidationError):
            validate_server(wire, "beta")
        assert wire_name(event_type, "beta") is None
        parsed = parser.parse(json.dumps(wire))
        assert parsed is not None and parsed.type is event_type
    assert parser.stats.ignored == 0 and parser.stats.unknown_type == 0


# --- images -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime"), [(png_bytes(64, 48), "image/png"), (jpeg_bytes(640, 480), "image/jpeg")]
)
def test_image_message_from_bytes_and_data_url(data: bytes, mime: str) -> None:
    event = ev.image_message_create(data, "ga", text="What is this?", detail="low")
    validate_client(event, "ga")
    item = event["item"]
    assert (item["type"], item["role"]) == ("message", "user")
    text, image = item["content"]
    assert text == {"type": "input_text", "text": "What is this?"}
    assert image["type"] == "input_image" and image["detail"] == "low"
    assert image["image_url"] == f"data:{mime};base64," + base64.b64encode(data).decode()
    again = ev.image_message_create(image["image_url"], "ga")
    validate_client(again, "ga")
    assert again["item"]["content"] == [{"type": "input_image", "image_url": image["image_url"]}]


def test_image_message_checks_and_refuses_beta() -> None:
    png = png_bytes(8, 8)
    with pytest.raises(ValueError, match="GA dialect"):
        ev.image_message_create(png, "beta")
    with pytest.raises(ValueError, match="PNG or JPEG"):
        ev.image_message_create(b"GIF89a....", "ga")
    with pytest.raises(ValueError, match="not image/jpeg"):
        ev.image_message_create(png, "ga", mime_type="image/jpeg")
    with pytest.raises(ValueError, match="data URL"):
        ev.image_message_create("https://example.com/cat.png", "ga")
    with pytest.raises(ValueError, match="base64"):
        ev.image_message_create("data:image/png;base64,@@@", "ga")
    # The beta spec has no image part either.
    event = ev.image_message_create(png, "ga")
    with pytest.raises(pydantic.ValidationError):
        validate_client(event, "beta")


# --- out-of-band responses ----------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_out_of_band_response_shapes(dialect: ev.Dialect) -> None:
    whole = ev.out_of_band_response_create(
        dialect, instructions="Summarize.", metadata={"purpose": "summary"}
    )
    validate_client(whole, dialect)
    response = whole["response"]
    key = "output_modalities" if dialect == "ga" else "modalities"
    assert response == {
        "conversation": "none",
        key: ["text"],
        "instructions": "Summarize.",
        "metadata": {"purpose": "summary"},
    }
    empty = ev.out_of_band_response_create(dialect, instructions="Hi.", input_items=[])
    validate_client(empty, dialect)
    assert empty["response"]["input"] == []
    inline = ev.out_of_band_response_create(
        dialect,
        instructions="Hi.",
        input_items=[ev.message_item("user", "Summarize this.", dialect)],
        max_output_tokens=300,
    )
    validate_client(inline, dialect)
    assert (
        inline["response"]["max_output_tokens" if dialect == "ga" else "max_response_output_tokens"]
        == 300
    )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_out_of_band_response_without_instructions_and_tools_off(dialect: ev.Dialect) -> None:
    event = ev.out_of_band_response_create(
        dialect, instructions=None, input_items=[], tool_choice="none"
    )
    validate_client(event, dialect)
    key = "output_modalities" if dialect == "ga" else "modalities"
    # No instructions: the session's apply; the tools stay in the prompt but none is called.
    assert event["response"] == {
        "conversation": "none",
        key: ["text"],
        "tool_choice": "none",
        "input": [],
    }
    with pytest.raises(pydantic.ValidationError):
        validate_client({**event, "response": {**event["response"], "tool_choice": 7}}, dialect)


def test_item_references_validate_with_the_sdk_request_types() -> None:
    event = ev.out_of_band_response_create(
        "ga",
        instructions="Summarize.",
        input_items=[ev.item_reference("item_1"), ev.message_item("user", "Now.", "ga")],
    )
    validated = validate_ga_response_create_with_references(event)
    assert validated["response"]["input"][0] == {"type": "item_reference", "id": "item_1"}
    with pytest.raises(pydantic.ValidationError):
        validate_ga_response_create_with_references(
            {**event, "response": {**event["response"], "input": [{"type": "item_ref", "id": "x"}]}}
        )
    beta = ev.out_of_band_response_create(
        "beta", instructions="Summarize.", input_items=[ev.item_reference("item_1")]
    )
    validate_client(beta, "beta")


def test_out_of_band_metadata_limits() -> None:
    with pytest.raises(ValueError, match="16 pairs"):
        ev.out_of_band_response_create(
            "ga", instructions="x", metadata={str(i): "v" for i in range(17)}
        )
    with pytest.raises(ValueError, match="512"):
        ev.out_of_band_response_create("ga", instructions="x", metadata={"k": "v" * 513})
    ok = ev.out_of_band_response_create(
        "ga", instructions="x", metadata={str(i): "v" * 512 for i in range(16)}
    )
    validate_client(ok, "ga")
