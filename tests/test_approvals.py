"""The core's hosted MCP part (core/approvals.py), images (core/images.py) and mid-session tool
updates, as sequences of inputs: server events validated against the SDK's server union, the
client events the core sends validated against its client union."""

from __future__ import annotations

from typing import Any

import pytest

from realtime_voicebot.core import actions as a
from realtime_voicebot.core.approvals import answer_word
from realtime_voicebot.core.images import GA_ONLY, ImageInput
from realtime_voicebot.core.turn_taking import Playback
from realtime_voicebot.tools import Tool

from .images import png_bytes
from .spec import validate_client
from .state_helpers import Conversation

JSON = dict[str, Any]


def list_item(item_id: str, status: str, tools: list[str]) -> JSON:
    return {
        "id": item_id,
        "type": "mcp_list_tools",
        "server_label": "home",
        "status": status,
        "tools": [{"name": n, "input_schema": {"type": "object"}} for n in tools],
    }


def call_item(item_id: str, *, output: str | None = None, error: str | None = None) -> JSON:
    item: JSON = {
        "id": item_id,
        "type": "mcp_call",
        "server_label": "home",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    if output is not None:
        item["output"] = output
    if error is not None:
        item["error"] = {"type": "tool_execution_error", "message": error}
    return item


def approval_item(item_id: str, name: str = "send_message") -> JSON:
    return {
        "id": item_id,
        "type": "mcp_approval_request",
        "server_label": "home",
        "name": name,
        "arguments": '{"to":"Ann","text":"hi"}',
    }


def of(kind: type[a.Action], actions: list[a.Action]) -> list[Any]:
    return [x for x in actions if isinstance(x, kind)]


def turns(actions: list[a.Action]) -> list[tuple[str, bool]]:
    """(text, typed) of the user turns among ``actions``."""
    return [(x.text, x.typed) for x in of(a.UserTurn, actions)]


def test_a_listing_is_shown_once_and_a_failed_one_too() -> None:
    conv = Conversation()
    srv = conv.srv
    conv.apply(
        srv.item_added(list_item("l1", "in_progress", [])),
        srv.event("mcp_list_tools.in_progress", item_id="l1"),
        srv.event("mcp_list_tools.completed", item_id="l1"),
        srv.item_done(list_item("l1", "completed", ["get_weather", "send_message"])),
        srv.item_added(list_item("l2", "in_progress", []) | {"server_label": "down"}),
        srv.event("mcp_list_tools.failed", item_id="l2"),
        srv.item_done(list_item("l2", "incomplete", []) | {"server_label": "down"}),
    )
    listed = of(a.HostedToolsListed, conv.actions)
    assert listed == [
        a.HostedToolsListed("home", ("get_weather", "send_message"), True),
        a.HostedToolsListed("down", (), False),
    ]
    assert conv.core.snapshot()["hosted_mcp"]["list_failures"] == 1


@pytest.mark.parametrize("error", [None, "the weather service is down"])
def test_a_hosted_call_is_shown_started_then_finished(error: str | None) -> None:
    conv = Conversation()
    srv = conv.srv
    started = call_item("c1") | {"arguments": ""}
    where = {"item_id": "c1", "output_index": 0}
    done = call_item("c1", output=None if error else "Sunny.", error=error)
    conv.apply(
        srv.response_created("r1"),
        srv.output_item_added("r1", started),
        srv.event("response.mcp_call_arguments.delta", response_id="r1", delta='{"city"', **where),
        srv.event(
            "response.mcp_call_arguments.done",
            response_id="r1",
            arguments='{"city":"Paris"}',
            **where,
        ),
        srv.event("response.mcp_call.in_progress", **where),
        srv.event(f"response.mcp_call.{'failed' if error else 'completed'}", **where),
        srv.output_item_done("r1", done),
        srv.item_done(done),
        srv.response_done("r1", output=[done]),
    )
    assert of(a.HostedCallStarted, conv.actions) == [
        a.HostedCallStarted("c1", "home", "get_weather", '{"city":"Paris"}')
    ]
    finished = of(a.HostedCallFinished, conv.actions)
    assert finished == [
        a.HostedCallFinished("c1", "home", "get_weather", error is None, 0 if error else 6, error)
    ]
    assert not [e for e in conv.sent if e["type"] == "response.create"]  # the service goes on


def test_a_call_whose_item_never_finished_is_finished_by_its_response() -> None:
    conv = Conversation()
    srv = conv.srv
    done = call_item("c1", output="Rain.")
    conv.apply(srv.response_created("r1"), srv.response_done("r1", output=[done]))
    assert [type(x) for x in conv.actions if "Hosted" in type(x).__name__] == [
        a.HostedCallStarted,
        a.HostedCallFinished,
    ]


def request(conv: Conversation, item_id: str, response_id: str = "r1") -> list[JSON]:
    srv = conv.srv
    item = approval_item(item_id)
    return conv.apply(
        srv.response_created(response_id),
        srv.output_item_added(response_id, item),
        srv.output_item_done(response_id, item),
        srv.item_added(item),
        srv.item_done(item),
        srv.response_done(response_id, output=[item]),
    )


def test_yes_and_no_answer_the_oldest_request_and_other_lines_are_turns() -> None:
    conv = Conversation(mcp_approval_timeout_s=20.0)
    request(conv, "ap1")
    request(conv, "ap2", "r2")
    asked = of(a.ApprovalRequested, conv.actions)
    assert [x.request_id for x in asked] == ["ap1", "ap2"]
    assert asked[0] == a.ApprovalRequested(
        "ap1", "home", "send_message", '{"to":"Ann","text":"hi"}', 20.0
    )
    assert [x.key for x in of(a.StartTimer, conv.actions) if x.key[0] == "mcp_approval"] == [
        ("mcp_approval", "ap1"),
        ("mcp_approval", "ap2"),
    ]
    assert not conv.core.idle()  # no rollover while the user is asked
    # a line that is not an answer is a typed turn, as always
    other = conv.take(conv.core.typed_line("what is it doing?"))
    assert [e["type"] for e in other] == ["conversation.item.create", "response.create"]
    assert other[0]["item"]["type"] == "message"
    yes = conv.take(conv.core.typed_line(" Yes "))
    assert [e["item"] for e in yes] == [
        {"type": "mcp_approval_response", "id": yes[0]["item"]["id"], "approval_request_id": "ap1",
         "approve": True}
    ]  # fmt: skip
    validate_client(yes[0], "ga")
    no = conv.take(conv.core.typed_line("n."))
    assert (no[0]["item"]["approval_request_id"], no[0]["item"]["approve"]) == ("ap2", False)
    assert "reason" not in no[0]["item"]
    answers = of(a.ApprovalAnswered, conv.actions)
    assert [(x.request_id, x.approved, x.how) for x in answers] == [
        ("ap1", True, "user"),
        ("ap2", False, "user"),
    ]
    # nothing pending: "y" is a typed line again
    again = conv.core.typed_line("y")
    assert turns(again) == [("y", True)]  # a typed turn, sent once the reply is in
    assert not of(a.ApprovalAnswered, again)
    snapshot = conv.core.snapshot()["hosted_mcp"]
    assert (snapshot["approved"], snapshot["refused"], snapshot["approvals_pending"]) == (1, 1, 0)


def test_no_answer_within_the_bound_is_a_refusal() -> None:
    conv = Conversation(mcp_approval_timeout_s=5.0)
    request(conv, "ap1")
    sent = conv.take(conv.core.timer_fired(("mcp_approval", "ap1")))
    assert len(sent) == 1
    validate_client(sent[0], "ga")
    item = sent[0]["item"]
    assert (item["approval_request_id"], item["approve"]) == ("ap1", False)
    assert item["reason"] == "no answer from the user within 5 s"
    assert of(a.ApprovalAnswered, conv.actions)[-1].how == "timeout"
    assert conv.take(conv.core.timer_fired(("mcp_approval", "ap1"))) == []  # answered already
    assert conv.core.snapshot()["hosted_mcp"]["timed_out"] == 1
    # the request came again (an event repeated): it is not asked twice
    conv.apply(conv.srv.item_done(approval_item("ap1")))
    assert len(of(a.ApprovalRequested, conv.actions)) == 1


def test_a_new_session_drops_the_requests_of_the_old_one() -> None:
    conv = Conversation()
    request(conv, "ap1")
    sent = conv.new_session("reconnect")
    assert not [e for e in sent if e.get("item", {}).get("type") == "mcp_approval_response"]
    assert of(a.ApprovalAnswered, conv.actions) == [
        a.ApprovalAnswered("ap1", "home", "send_message", False, "session ended")
    ]
    assert conv.core.hosted_mcp.pending == {}
    assert conv.take(conv.core.typed_line("y"))[0]["item"]["type"] == "message"


@pytest.mark.parametrize(
    ("line", "answer"),
    [("y", True), ("YES", True), ("yes!", True), ("n", False), ("No.", False), ("nope", None),
     ("yes please do", None), ("", None)],
)  # fmt: skip
def test_answer_words(line: str, answer: bool | None) -> None:
    assert answer_word(line) is answer


async def _noop(text: str) -> str:
    return text


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_tools_changed_sends_the_tools_only_to_a_live_session(dialect: str) -> None:
    conv = Conversation(dialect)
    specs = [Tool("notes__shout", "Shout.", {"type": "object"}, _noop).spec()]
    sent = conv.take(conv.core.tools_changed(specs))
    assert len(sent) == 1
    validate_client(sent[0], dialect)
    session = sent[0]["session"]
    assert session["tools"] == specs and session["tool_choice"] == "auto"
    assert set(session) <= {"type", "tools", "tool_choice"}
    empty = conv.take(conv.core.tools_changed([]))
    validate_client(empty[0], dialect)
    assert empty[0]["session"]["tools"] == [] and empty[0]["session"]["tool_choice"] == "none"
    conv.core.connection_changed("reconnecting", "lost")
    assert conv.core.tools_changed(specs) == []  # the next session gets them at its start


def test_an_image_is_a_user_message_then_a_reply() -> None:
    conv = Conversation()
    image = ImageInput(png_bytes(64, 48), "image/png", "shot.png", 64, 48, "what is this?")
    actions = conv.core.image(image)
    sent = conv.take(actions)
    assert [e["type"] for e in sent] == ["conversation.item.create", "response.create"]
    validate_client(sent[0], "ga")
    content = sent[0]["item"]["content"]
    assert [part["type"] for part in content] == ["input_text", "input_image"]
    assert content[1]["image_url"].startswith("data:image/png;base64,iVBOR")
    assert turns(actions) == [("[image: shot.png 64x48] what is this?", True)]
    item = conv.state.items[sent[0]["item"]["id"]]
    assert item.text == "[image: shot.png 64x48] what is this?"
    # the server's copy (the question and the image's place) confirms it; our item keeps
    # its label, which says more than the server's copy does
    echoed = dict(sent[0]["item"], status="completed", object="realtime.item")
    echoed["content"] = [content[0], {"type": "input_image", "image_url": None}]
    conv.apply(conv.srv.item_added(echoed))
    assert conv.state.items[item.id].text == "[image: shot.png 64x48] what is this?"
    assert conv.state.items[item.id].status == "completed"


def test_an_image_during_a_reply_interrupts_it_first() -> None:
    conv = Conversation()
    conv.user_turn("u1", "Tell me a long story.")
    conv.assistant_turn("r1", "a1", "Once upon a time there was", finish=False)
    conv.playback = Playback("a1", 400.0, audible=True, has_output=True)
    sent = conv.take(conv.core.image(ImageInput(png_bytes(8, 8), "image/png", "x.png", 8, 8)))
    types = [e["type"] for e in sent]
    assert types[0] == "conversation.item.truncate"
    assert types[-2:] == ["conversation.item.create", "response.create"]
    assert "response.cancel" in types


def test_an_image_in_beta_or_offline_is_one_line_and_nothing_sent() -> None:
    image = ImageInput(png_bytes(8, 8), "image/png", "x.png", 8, 8)
    beta = Conversation("beta")
    assert beta.core.image(image) == [a.ErrorReported("image_needs_ga", GA_ONLY)]
    ga = Conversation()
    ga.core.connection_changed("reconnecting", "lost")
    (error,) = ga.core.image(image)
    assert isinstance(error, a.ErrorReported) and error.code == "image_offline"
