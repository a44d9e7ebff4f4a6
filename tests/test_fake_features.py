"""This wave's protocol features on the fake server, over a real WebSocket: semantic VAD, noise
reduction, idle timeout, manual (push-to-talk) turns, client-owned turn-taking, out-of-band
responses, hosted MCP tools with approvals, and images. Both sides of every filter.

Every server frame is validated against the SDK's union for its dialect by `fake_harness`,
and every client event against the client union (references: the SDK's request TypedDict).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from realtime_voicebot.fake import FakeRealtimeServer, Faults, McpCall, Scenario
from realtime_voicebot.fake.session import IDLE_PROMPT, FakeSession
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.testing import scaled
from realtime_voicebot.transport import events as ev
from tests.fake_harness import JSON, Client, MakeServer, beta_session, connect_client, ga_session
from tests.images import png_bytes
from tests.spec import validate_ga_response_create_with_references

LONG_REPLY = "This is a long answer that goes on and on about nothing in particular. " * 3
SUMMARY = "Summarize the conversation so far."
DELTAS = {
    "response.output_audio.delta",
    "response.output_audio_transcript.delta",
    "response.output_text.delta",
    "response.text.delta",
    "response.mcp_call_arguments.delta",
    "conversation.item.input_audio_transcription.delta",
}


def squeeze(types: list[str]) -> list[str]:
    out: list[str] = []
    for kind in types:
        if kind in DELTAS and kind in out[-2:]:
            continue
        out.append(kind)
    return out


def utterance(speech_s: float, lead_s: float = 0.3, tail_s: float = 0.8, seed: int = 0) -> Any:
    return np.concatenate([silence(lead_s), speech_like(speech_s, seed=seed), silence(tail_s)])


async def settled(server: FakeRealtimeServer, session: FakeSession, ms: float) -> None:
    """Wait until the session has handled ``ms`` of input audio."""
    await server.wait_for(lambda: session.input_ms >= ms, scaled(5))


async def create_text(client: Client, text: str) -> str:
    await client.send(ev.message_create("user", text, client.dialect))  # type: ignore[arg-type]
    added = "conversation.item.added" if client.dialect == "ga" else "conversation.item.created"
    event, _ = await client.recv_until(added)
    if client.dialect == "ga":
        await client.recv_until("conversation.item.done")
    return str(event["item"]["id"])


async def respond(client: Client, response: JSON | None = None) -> tuple[JSON, list[JSON]]:
    event: JSON = {"type": "response.create", "event_id": ev.new_event_id()}
    if response is not None:
        event["response"] = response
    await client.send(event)
    return await client.recv_until("response.done")


async def expect_error(client: Client, event: JSON, *, raw: bool = False) -> JSON:
    await client.send(event, raw=raw)
    answer, _ = await client.recv_until(
        lambda e: e["type"] == "error" and e["error"].get("event_id") == event["event_id"]
    )
    return dict(answer["error"])


def semantic(eagerness: str, **extra: Any) -> JSON:
    return {"type": "semantic_vad", "eagerness": eagerness, **extra}


def ga_with_detection(detection: JSON | None, **overrides: Any) -> JSON:
    session = ga_session(**overrides)
    session["audio"]["input"]["turn_detection"] = detection
    return session


# --- turn detection and noise reduction ---------------------------------------------------------


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_semantic_vad_eagerness_sets_the_silence_that_ends_a_turn(
    make_server: MakeServer, dialect: str
) -> None:
    server = await make_server()
    for eagerness, stop_after_ms in (("high", 250), ("low", 800)):
        async with connect_client(server, dialect=dialect) as client:
            detection = semantic(eagerness, create_response=False)
            session = (
                ga_with_detection(detection)
                if dialect == "ga"
                else beta_session(turn_detection=detection)
            )
            updated = await client.update_session(session)
            echoed = (
                updated["session"]["audio"]["input"]["turn_detection"]
                if dialect == "ga"
                else updated["session"]["turn_detection"]
            )
            assert (echoed["type"], echoed["eagerness"]) == ("semantic_vad", eagerness)
            held = server.sessions[-1]
            await client.send_audio(utterance(1.0, lead_s=0.3, tail_s=0.4))  # speech ends at 1.3 s
            await client.recv_until("input_audio_buffer.speech_started")
            await settled(server, held, 1700)
            stopped = "input_audio_buffer.speech_stopped" in held.sent_types()
            assert stopped == (stop_after_ms < 400)
            await client.send_audio(silence(0.6))
            event, _ = await client.recv_until("input_audio_buffer.speech_stopped")
            assert abs(event["audio_end_ms"] - (1300 + stop_after_ms)) <= 10


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_noise_reduction_is_accepted_and_echoed(
    make_server: MakeServer, dialect: str
) -> None:
    server = await make_server()
    async with connect_client(server, dialect=dialect) as client:
        if dialect == "ga":
            update = ga_session()
            update["audio"]["input"]["noise_reduction"] = {"type": "far_field"}
            session = (await client.update_session(update))["session"]
            assert session["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
            update["audio"]["input"]["noise_reduction"] = None
            session = (await client.update_session(update))["session"]
            assert session["audio"]["input"]["noise_reduction"] is None
        else:
            update = beta_session(input_audio_noise_reduction={"type": "near_field"})
            session = (await client.update_session(update))["session"]
            assert session["input_audio_noise_reduction"] == {"type": "near_field"}
        bad = {"type": "session.update", "event_id": "evt_bad", "session": dict(update)}
        if dialect == "ga":
            bad["session"] = ga_session()
            bad["session"]["audio"]["input"]["noise_reduction"] = {"type": "studio"}
        else:
            bad["session"]["input_audio_noise_reduction"] = {"type": "studio"}
        error = await expect_error(client, bad, raw=True)
        assert error["code"] == "invalid_value" and error["param"].endswith("noise_reduction.type")


# --- idle timeout -------------------------------------------------------------------------------


async def reply_then_listen(
    server: FakeRealtimeServer, client: Client, idle_timeout_ms: int | None
) -> FakeSession:
    """A spoken turn whose VAD stop falls in the last 100 ms chunk (at 1.6 s of input), so the
    reply's first audio goes out at exactly 1600 ms; the reply "Hi." is 195 ms of audio."""
    detection: JSON = {"type": "server_vad", "silence_duration_ms": 500}
    if idle_timeout_ms is not None:
        detection["idle_timeout_ms"] = idle_timeout_ms
    await client.update_session(ga_session(turn_detection=detection))
    await client.send_audio(utterance(0.8, lead_s=0.3, tail_s=0.5))
    done, _ = await client.recv_until("response.done")
    assert done["response"]["output"][0]["content"][0]["transcript"] == "Hi."
    session = server.sessions[-1]
    assert session.responses[0].first_audio_input_sample == 1600 * 24
    return session


async def test_idle_timeout_commits_the_silence_and_replies(make_server: MakeServer) -> None:
    server = await make_server(scenario=Scenario(user_transcripts=["Hello."], replies=["Hi."]))
    async with connect_client(server) as client:
        session = await reply_then_listen(server, client, 1000)
        # Playback ends at 1600 + 195 ms; the timeout is due 1000 ms later, at 2795 ms.
        await client.send_audio(silence(1.1))
        await settled(server, session, 2700)
        assert "input_audio_buffer.timeout_triggered" not in session.sent_types()
        await client.send_audio(silence(0.2))
        timeout, _ = await client.recv_until("input_audio_buffer.timeout_triggered")
        assert (timeout["audio_start_ms"], timeout["audio_end_ms"]) == (1795, 2795)
        committed, _ = await client.recv_until("input_audio_buffer.committed")
        assert committed["item_id"] == timeout["item_id"]
        added, _ = await client.recv_until("conversation.item.added")
        assert added["item"]["id"] == timeout["item_id"]
        assert added["item"]["content"][0]["type"] == "input_audio"
        transcript, _ = await client.recv_until(
            "conversation.item.input_audio_transcription.completed"
        )
        assert transcript["transcript"] == ""
        done, _ = await client.recv_until("response.done")
        assert done["response"]["output"][0]["content"][0]["transcript"] == IDLE_PROMPT
        silent = next(v for v in session.items if v.id == timeout["item_id"])
        assert silent.role == "user" and silent.text == "" and silent.audio_ms > 1000
        assert session.timeouts_triggered == 1
        assert session.report()["timeouts_triggered"] == 1


async def test_no_idle_timeout_without_the_setting(make_server: MakeServer) -> None:
    server = await make_server(scenario=Scenario(user_transcripts=["Hello."], replies=["Hi."]))
    async with connect_client(server) as client:
        session = await reply_then_listen(server, client, None)
        await client.send_audio(silence(3.0))
        await settled(server, session, 4600)
        assert session.timeouts_triggered == 0
        assert "input_audio_buffer.timeout_triggered" not in session.sent_types()
        assert len(session.responses) == 1


async def test_speech_before_the_idle_timeout_is_a_normal_turn(make_server: MakeServer) -> None:
    scenario = Scenario(user_transcripts=["Hello.", "Still here."], replies=["Hi.", "Good."])
    server = await make_server(scenario=scenario)
    async with connect_client(server) as client:
        session = await reply_then_listen(server, client, 1000)
        await client.send_audio(silence(0.5))
        await client.send_audio(utterance(0.6, lead_s=0.1, tail_s=0.6, seed=3))  # to 3.4 s
        done, before = await client.recv_until("response.done")
        assert "input_audio_buffer.speech_started" in [e["type"] for e in before]
        assert done["response"]["output"][0]["content"][0]["transcript"] == "Good."
        await settled(server, session, 3400)
        assert session.timeouts_triggered == 0


async def test_idle_timeout_is_refused_in_beta_and_with_semantic_vad(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    async with connect_client(server, dialect="beta") as client:
        update = beta_session(turn_detection={"type": "server_vad", "idle_timeout_ms": 5000})
        error = await expect_error(
            client, {"type": "session.update", "event_id": "e1", "session": update}, raw=True
        )
        assert (error["code"], error["param"]) == (
            "unknown_parameter",
            "session.turn_detection.idle_timeout_ms",
        )
    async with connect_client(server) as client:
        update = ga_with_detection(semantic("auto", idle_timeout_ms=5000))
        error = await expect_error(
            client, {"type": "session.update", "event_id": "e2", "session": update}, raw=True
        )
        assert error["code"] == "unknown_parameter"
        accepted = await client.update_session(ga_session(turn_detection={"idle_timeout_ms": 5000}))
        assert accepted["session"]["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 5000


# --- manual turns and client-owned turn-taking --------------------------------------------------


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_push_to_talk_turns(make_server: MakeServer, dialect: str) -> None:
    scenario = Scenario(user_transcripts=["First.", "Second."], replies=["One.", "Two."])
    server = await make_server(scenario=scenario)
    async with connect_client(server, dialect=dialect) as client:
        if dialect == "ga":
            await client.update_session(ga_with_detection(None))
        else:
            await client.update_session(beta_session(turn_detection=None))
        session = server.sessions[0]
        for number, (heard, reply) in enumerate(
            zip(scenario.user_transcripts, ["One.", "Two."], strict=True)
        ):
            await client.send_audio(utterance(0.8, seed=number))
            await settled(server, session, (number + 1) * 1900)
            await client.send(ev.input_audio_commit())
            committed, _ = await client.recv_until("input_audio_buffer.committed")
            # Frames are handled in order: every append was handled before the commit.
            assert len(session.responses) == number  # speech alone starts nothing
            completed, _ = await client.recv_until(
                "conversation.item.input_audio_transcription.completed"
            )
            assert completed["item_id"] == committed["item_id"]
            assert completed["transcript"] == heard
            done, _ = await respond(client)
            assert done["response"]["output"][0]["content"][0]["transcript"] == reply
        await client.send_audio(speech_like(0.4))
        await client.send(ev.input_audio_clear())
        await client.recv_until("input_audio_buffer.cleared")
        empty = ev.input_audio_commit()
        error = await expect_error(client, empty)
        assert error["code"] == "input_audio_buffer_commit_empty"
        assert not any(e["type"].startswith("input_audio_buffer.speech") for e in client.events)
        assert [v.role for v in session.items] == ["user", "assistant", "user", "assistant"]


async def test_client_owned_turn_taking(make_server: MakeServer) -> None:
    """create_response and interrupt_response false: VAD still commits every turn, nothing
    answers or cancels by itself; the client decides with response.create."""
    scenario = Scenario(user_transcripts=["Tell me a story.", "Mm-hm."], replies=[LONG_REPLY])
    server = await make_server(speed=10.0, scenario=scenario)
    async with connect_client(server) as client:
        detection = {"create_response": False, "interrupt_response": False}
        await client.update_session(ga_session(turn_detection=detection))
        session = server.sessions[0]
        await client.send_audio(utterance(0.8))
        first, _ = await client.recv_until("conversation.item.input_audio_transcription.completed")
        assert first["transcript"] == "Tell me a story."
        await settled(server, session, 1900)
        assert session.responses == []
        await client.send(ev.response_create())
        delta, _ = await client.recv_until("response.output_audio.delta")
        await client.send_audio(utterance(0.5, lead_s=0.0, tail_s=0.6, seed=4))
        done, during = await client.recv_until("response.done")
        types = [e["type"] for e in during]
        assert "input_audio_buffer.speech_started" in types
        assert "input_audio_buffer.committed" in types
        assert done["response"]["id"] == delta["response_id"]
        assert done["response"]["status"] == "completed"
        await server.wait_for(
            lambda: len(session.items) == 3 and session.items[2].text != "", scaled(5)
        )
        assert len(session.responses) == 1
        assert [v.role for v in session.items] == ["user", "assistant", "user"]
        assert session.items[2].text == "Mm-hm."


# --- out-of-band responses ----------------------------------------------------------------------


def is_done_of(response_id: str) -> Callable[[JSON], bool]:
    return lambda e: e["type"] == "response.done" and e["response"]["id"] == response_id


async def test_out_of_band_response_runs_beside_a_reply_and_adds_nothing(
    make_server: MakeServer,
) -> None:
    server = await make_server(speed=10.0, scenario=Scenario(replies=[LONG_REPLY]))
    async with connect_client(server) as client:
        user = await create_text(client, "Tell me about the sea.")
        await client.send(ev.response_create())
        delta, _ = await client.recv_until("response.output_audio.delta")
        default_id = delta["response_id"]
        busy = await expect_error(client, ev.response_create())
        assert busy["code"] == "conversation_already_has_active_response"
        oob = ev.out_of_band_response_create(
            "ga", instructions=SUMMARY, metadata={"purpose": "summary"}
        )
        await client.send(oob)
        created, _ = await client.recv_until(
            lambda e: e["type"] == "response.created" and e["response"]["id"] != default_id
        )
        oob_id = created["response"]["id"]
        assert created["response"]["conversation_id"] is None
        done, between = await client.recv_until(is_done_of(oob_id))
        mine = [e for e in between if e.get("response_id") == oob_id]
        assert squeeze([e["type"] for e in mine]) == [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ]
        oob_item = mine[0]["item"]["id"]
        assert not any(
            e["type"].startswith("conversation.item") and e["item"]["id"] == oob_item
            for e in between
        )
        text = "".join(e["delta"] for e in mine if e["type"] == "response.output_text.delta")
        head, said = text.split("\nassistant: ")
        assert head == "Summary:\nuser: Tell me about the sea."
        assert said and LONG_REPLY.startswith(said)  # what had been said when it read
        response = done["response"]
        assert response["conversation_id"] is None
        assert response["metadata"] == {"purpose": "summary"}
        assert response["status"] == "completed"
        assert response["usage"]["output_token_details"] == {
            "text_tokens": math.ceil(len(text) / 4),
            "audio_tokens": 0,
        }
        assert response["usage"]["input_tokens"] > 0
        # The default reply was never disturbed.
        default_done, _ = await client.recv_until(is_done_of(default_id))
        assert default_done["response"]["status"] == "completed"
        assert default_done["response"]["conversation_id"] is not None
        session = server.sessions[0]
        assert [v.id for v in session.items] == [user, default_done["response"]["output"][0]["id"]]
        report = session.report()
        assert report["out_of_band_items_in_conversation"] == []
        assert [r["conversation"] for r in report["responses"]] == ["auto", "none"]
        assert report["responses"][1]["output"] == [oob_item]


async def test_out_of_band_input_usage_and_cache(make_server: MakeServer) -> None:
    server = await make_server(scenario=Scenario(replies=["Noted.", "Noted again."]))
    async with connect_client(server) as client:
        await client.update_session(ga_session(instructions="Be brief."))
        session = server.sessions[0]
        note = "I keep bees in my garden and sell the honey at the Saturday market. " * 70
        user = await create_text(client, note)
        first, _ = await respond(client)
        assert first["response"]["usage"]["input_token_details"]["cached_tokens"] == 0
        window = session.window_tokens.total
        preamble = math.ceil(len("Be brief.") / 4)
        user_tokens = math.ceil(len(note) / 4)

        # Whole conversation, the session's instructions: what it read is the window, and
        # the prefix the last response read is cached.
        same, _ = await respond(
            client, {"conversation": "none", "output_modalities": ["text"], "metadata": {"k": "1"}}
        )
        usage = same["response"]["usage"]
        assert usage["input_tokens"] == window
        assert (
            usage["input_token_details"]["cached_tokens"] == (preamble + user_tokens) // 128 * 128
        )
        assert same["response"]["output"][0]["content"][0]["text"] == f"You said: {note}"

        # Own instructions: another prompt prefix, nothing cached.
        summary, _ = await respond(
            client, {"conversation": "none", "output_modalities": ["text"], "instructions": SUMMARY}
        )
        usage = summary["response"]["usage"]
        assert usage["input_tokens"] == window - preamble + math.ceil(len(SUMMARY) / 4)
        assert usage["input_token_details"]["cached_tokens"] == 0
        text = summary["response"]["output"][0]["content"][0]["text"]
        assert text.splitlines()[1:] == ["user: " + note.strip()[:197] + "...", "assistant: Noted."]

        # input: [] reads nothing but the instructions.
        empty, _ = await respond(
            client,
            {
                "conversation": "none",
                "output_modalities": ["text"],
                "instructions": SUMMARY,
                "input": [],
            },
        )
        assert empty["response"]["usage"]["input_tokens"] == math.ceil(len(SUMMARY) / 4)
        assert (
            empty["response"]["output"][0]["content"][0]["text"] == "Summary:\n(nothing was said)"
        )

        # References and inline items: exactly those.
        picked = ev.out_of_band_response_create(
            "ga",
            instructions=SUMMARY,
            input_items=[ev.item_reference(user), ev.message_item("user", "And wax.", "ga")],
        )
        validate_ga_response_create_with_references(picked)
        await client.send(picked, raw=True)
        done, _ = await client.recv_until("response.done")
        lines = done["response"]["output"][0]["content"][0]["text"].splitlines()
        assert len(lines) == 3 and lines[2] == "user: And wax."
        assert done["response"]["usage"]["input_tokens"] == (
            math.ceil(len(SUMMARY) / 4) + user_tokens + math.ceil(len("And wax.") / 4)
        )
        unknown = ev.out_of_band_response_create(
            "ga", instructions=SUMMARY, input_items=[ev.item_reference("item_nope")]
        )
        error = await expect_error(client, unknown, raw=True)
        assert (error["code"], error["param"]) == ("item_not_found", "item_id")

        # A normal response after them still finds its prefix cached, and the conversation
        # holds only the normal responses' items.
        second, _ = await respond(client)
        cached = second["response"]["usage"]["input_token_details"]["cached_tokens"]
        assert cached == window // 128 * 128
        assert [v.role for v in session.items] == ["user", "assistant", "assistant"]
        assert session.report()["out_of_band_items_in_conversation"] == []


async def test_barge_in_cancels_the_reply_but_not_the_out_of_band_response(
    make_server: MakeServer,
) -> None:
    server = await make_server(speed=2.0, scenario=Scenario(replies=[LONG_REPLY, "Short."]))
    async with connect_client(server) as client:
        await client.update_session(ga_session())
        await create_text(client, "Go on.")
        await client.send(ev.response_create())
        delta, _ = await client.recv_until("response.output_audio.delta")
        default_id = delta["response_id"]
        spoken_oob = {
            "conversation": "none",
            "output_modalities": ["audio"],
            "input": [ev.message_item("user", LONG_REPLY, "ga")],
        }
        await client.send(
            {"type": "response.create", "event_id": "evt_oob", "response": spoken_oob}
        )
        created, _ = await client.recv_until(
            lambda e: e["type"] == "response.created" and e["response"]["id"] != default_id
        )
        oob_id = created["response"]["id"]
        await client.send_audio(speech_like(0.5, seed=9))
        cancelled, _ = await client.recv_until(is_done_of(default_id))
        assert cancelled["response"]["status_details"]["reason"] == "turn_detected"
        still, _ = await client.recv_until(
            lambda e: e["type"] == "response.output_audio.delta" and e["response_id"] == oob_id
        )
        assert still["response_id"] == oob_id
        # Without response_id, cancel means the default conversation's response: none now.
        not_active = await expect_error(client, ev.response_cancel())
        assert not_active["code"] == "response_cancel_not_active"
        await client.send(ev.response_cancel(oob_id))
        done, _ = await client.recv_until(is_done_of(oob_id))
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        session = server.sessions[0]
        assert session.out_of_band == [] and session.active_response is None
        assert session.report()["out_of_band_items_in_conversation"] == []


async def test_out_of_band_response_in_beta(make_server: MakeServer) -> None:
    server = await make_server()
    async with connect_client(server, dialect="beta") as client:
        await create_text(client, "Remember: the code is 42.")
        event = ev.out_of_band_response_create(
            "beta", instructions=SUMMARY, metadata={"purpose": "summary"}
        )
        await client.send(event)
        done, events = await client.recv_until("response.done")
        assert not any(e["type"] == "conversation.item.created" for e in events)
        text = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
        assert text == "Summary:\nuser: Remember: the code is 42."
        assert done["response"]["conversation_id"] is None
        assert done["response"]["metadata"] == {"purpose": "summary"}
        assert done["response"]["modalities"] == ["text"]
        normal, events = await respond(client)
        assert any(e["type"] == "conversation.item.created" for e in events)
        assert normal["response"]["conversation_id"] is not None
        assert len(server.sessions[0].items) == 2


# --- hosted MCP (GA) ----------------------------------------------------------------------------


def mcp_session(**tool: Any) -> JSON:
    config = ev.mcp_tool(
        tool.pop("server_label", "home"),
        server_url="https://mcp.example.com/mcp",
        authorization="secret-token",
        **tool,
    )
    return ga_session(tools=[config], tool_choice="auto")


async def test_mcp_tools_are_listed_once_per_configuration(make_server: MakeServer) -> None:
    server = await make_server(mcp_unreachable=frozenset({"down"}))
    async with connect_client(server) as client:
        session = mcp_session(require_approval="never")
        await client.send({"type": "session.update", "event_id": "u1", "session": session})
        updated, _ = await client.recv_until("session.updated")
        shown = updated["session"]["tools"][0]
        assert "authorization" not in shown and shown["server_label"] == "home"
        assert "secret-token" not in json.dumps(client.events)
        done, events = await client.recv_until("conversation.item.done")
        assert [e["type"] for e in events] == [
            "conversation.item.added",
            "mcp_list_tools.in_progress",
            "mcp_list_tools.completed",
        ]
        assert events[0]["item"]["tools"] == []
        assert done["item"]["type"] == "mcp_list_tools"
        assert [t["name"] for t in done["item"]["tools"]] == ["get_weather", "send_message"]
        # The same configuration again: no new listing; a narrower one: listed again.
        await client.update_session(session)
        await client.update_session(mcp_session(allowed_tools=["get_weather"]))
        again, _ = await client.recv_until("conversation.item.done")
        assert [t["name"] for t in again["item"]["tools"]] == ["get_weather"]
        await client.update_session(mcp_session(server_label="down"))
        failed, events = await client.recv_until("conversation.item.done")
        assert "mcp_list_tools.failed" in [e["type"] for e in events]
        assert failed["item"]["tools"] == []
        held = server.sessions[0]
        assert [v.type for v in held.items] == ["mcp_list_tools"] * 3
        assert held.report()["mcp_tools"] == {"home": ["get_weather"], "down": []}


async def test_mcp_call_without_approval_then_speech(make_server: MakeServer) -> None:
    call = McpCall("get_weather", {"city": "Paris"})
    server = await make_server(scenario=Scenario(replies=[call]))
    async with connect_client(server) as client:
        await client.update_session(mcp_session(require_approval="never"))
        await client.recv_until("conversation.item.done")
        await create_text(client, "Weather in Paris?")
        done, events = await respond(client)
        assert squeeze([e["type"] for e in events]) == [
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.mcp_call_arguments.delta",
            "response.mcp_call_arguments.done",
            "response.mcp_call.in_progress",
            "response.mcp_call.completed",
            "response.output_item.done",
            "conversation.item.done",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added",
            "response.output_audio_transcript.delta",
            "response.output_audio.delta",
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
        ]
        arguments = "".join(e["delta"] for e in events if e["type"].endswith("arguments.delta"))
        assert json.loads(arguments) == {"city": "Paris"}
        call_item, message = done["response"]["output"]
        assert call_item["type"] == "mcp_call" and call_item["server_label"] == "home"
        assert call_item["output"] == "Sunny and 21 degrees in Paris."
        assert call_item["error"] is None and call_item["approval_request_id"] is None
        assert message["content"][0]["transcript"] == (
            "The get_weather tool says: Sunny and 21 degrees in Paris."
        )
        completed = next(e for e in events if e["type"] == "response.mcp_call.completed")
        assert (completed["item_id"], completed["output_index"]) == (call_item["id"], 0)
        assert [v.type for v in server.sessions[0].items] == [
            "mcp_list_tools",
            "message",
            "mcp_call",
            "message",
        ]


async def test_mcp_call_that_fails_and_a_tool_that_is_not_offered(make_server: MakeServer) -> None:
    replies = [
        McpCall("send_message", {"to": "Ann"}, error="The phone is offline."),
        McpCall("send_message", {"to": "Ann"}),
    ]
    server = await make_server(scenario=Scenario(replies=list(replies)))
    async with connect_client(server) as client:
        await client.update_session(
            mcp_session(require_approval="never", allowed_tools=["send_message"])
        )
        await client.recv_until("conversation.item.done")
        done, events = await respond(client)
        assert "response.mcp_call.failed" in [e["type"] for e in events]
        call_item, message = done["response"]["output"]
        assert call_item["error"] == {
            "type": "tool_execution_error",
            "message": "The phone is offline.",
        }
        assert message["content"][0]["transcript"] == (
            "The send_message tool failed: The phone is offline."
        )
        await client.update_session(mcp_session(require_approval="never", allowed_tools=[]))
        await client.recv_until("conversation.item.done")
        done, events = await respond(client)
        assert not any("mcp_call" in e["type"] for e in events)
        assert done["response"]["output"][0]["content"][0]["transcript"] == (
            "I could not use send_message: no such tool is available."
        )


@pytest.mark.parametrize("approve", [True, False])
async def test_mcp_approval_round_trip(make_server: MakeServer, approve: bool) -> None:
    call = McpCall("send_message", {"to": "Ann", "text": "Late"})
    server = await make_server(scenario=Scenario(replies=[call, "Anything else?"]))
    async with connect_client(server) as client:
        await client.update_session(
            mcp_session(require_approval={"never": {"tool_names": ["get_weather"]}})
        )
        await client.recv_until("conversation.item.done")
        await create_text(client, "Tell Ann I am late.")
        asked, events = await respond(client)
        assert squeeze([e["type"] for e in events]) == [
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.output_item.done",
            "conversation.item.done",
        ]
        (request,) = asked["response"]["output"]
        assert request["type"] == "mcp_approval_request"
        assert (request["server_label"], request["name"]) == ("home", "send_message")
        assert json.loads(request["arguments"]) == {"to": "Ann", "text": "Late"}
        session = server.sessions[0]
        assert list(session.mcp_pending) == [request["id"]]

        unknown = ev.mcp_approval_response_create("item_nope", True)
        error = await expect_error(client, unknown)
        assert (error["code"], error["param"]) == ("item_not_found", "item.approval_request_id")

        answer = ev.mcp_approval_response_create(request["id"], approve)
        await client.send(answer)
        added, _ = await client.recv_until("conversation.item.added")
        assert added["item"]["type"] == "mcp_approval_response"
        assert added["item"]["approve"] is approve
        followed, events = await client.recv_until("response.done")
        assert "response.created" in [e["type"] for e in events]
        output = followed["response"]["output"]
        if approve:
            call_item, message = output
            assert call_item["approval_request_id"] == request["id"]
            assert call_item["output"] == "Message sent to Ann."
            assert message["content"][0]["transcript"] == (
                "The send_message tool says: Message sent to Ann."
            )
        else:
            (message,) = output
            assert not any("mcp_call" in e["type"] for e in events)
            assert message["content"][0]["transcript"] == (
                "I could not use send_message: you did not approve it."
            )
        assert session.mcp_pending == {}
        again = await expect_error(client, ev.mcp_approval_response_create(request["id"], True))
        assert again["code"] == "item_not_found"
        # The follow-up used no scenario line: the next reply is the next one scripted.
        last, _ = await respond(client)
        assert last["response"]["output"][0]["content"][0]["transcript"] == "Anything else?"


async def test_beta_refuses_mcp_tools_and_approval_items(make_server: MakeServer) -> None:
    server = await make_server()
    async with connect_client(server, dialect="beta") as client:
        tool = ev.mcp_tool("home", server_url="https://mcp.example.com/mcp")
        update = {"type": "session.update", "event_id": "u1", "session": beta_session(tools=[tool])}
        error = await expect_error(client, update, raw=True)
        assert (error["code"], error["param"]) == ("invalid_value", "session.tools[0].type")
        assert server.sessions[0].mcp_listed == {}
        function = {"type": "function", "name": "f", "description": "F.", "parameters": {}}
        accepted = await client.update_session(beta_session(tools=[function]))
        assert accepted["session"]["tools"] == [function]
        item = ev.mcp_approval_response_create("item_1", True)
        error = await expect_error(client, item, raw=True)
        assert error["param"] == "item.type"


# --- images -------------------------------------------------------------------------------------


async def test_image_message_is_answered_and_counted(make_server: MakeServer) -> None:
    server = await make_server()
    async with connect_client(server) as client:
        await client.update_session(ga_session(instructions="Be brief."))
        image = ev.image_message_create(png_bytes(1024, 1024), "ga", text="What is this?")
        await client.send(image)
        added, _ = await client.recv_until("conversation.item.added")
        assert [p["type"] for p in added["item"]["content"]] == ["input_text", "input_image"]
        done, _ = await respond(client)
        reply = done["response"]["output"][0]["content"][0]["transcript"]
        assert reply == "You said: What is this? [image 1024x1024]"
        details = done["response"]["usage"]["input_token_details"]
        assert details["image_tokens"] == 765
        assert done["response"]["usage"]["input_tokens"] == (
            math.ceil(len("Be brief.") / 4) + math.ceil(len("What is this?") / 4) + 765
        )
        low = ev.image_message_create(png_bytes(1024, 1024), "ga", detail="low")
        await client.send(low)
        await client.recv_until("conversation.item.added")
        assert server.sessions[0].window_tokens.image == 765 + 85
        bad = ev.message_create("user", "x", "ga")
        bad["item"]["content"] = [
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
        ]
        error = await expect_error(client, bad)
        assert (error["code"], error["param"]) == ("invalid_value", "item.content[0].image_url")
        assert len(server.sessions[0].items) == 3


async def test_beta_refuses_images(make_server: MakeServer) -> None:
    server = await make_server()
    async with connect_client(server, dialect="beta") as client:
        image = ev.image_message_create(png_bytes(16, 16), "ga")
        error = await expect_error(client, image, raw=True)
        assert (error["code"], error["param"]) == ("invalid_value", "item.content[0].type")
        await create_text(client, "Text still works.")
        assert [v.text for v in server.sessions[0].items] == ["Text still works."]


async def test_faults_still_apply_to_out_of_band_responses(make_server: MakeServer) -> None:
    server = await make_server(faults=Faults(response_delay_s=0.2))
    async with connect_client(server) as client:
        await create_text(client, "Hello.")
        oob = ev.out_of_band_response_create("ga", instructions=SUMMARY)
        await client.send(oob)
        created, _ = await client.recv_until("response.created")
        await client.send(ev.response_cancel(created["response"]["id"]))
        done, before = await client.recv_until("response.done")
        assert before == [] and done["response"]["status"] == "cancelled"


async def test_a_held_out_of_band_response_waits_while_replies_go_on(
    make_server: MakeServer,
) -> None:
    hold = asyncio.Event()
    server = await make_server(faults=Faults(hold_out_of_band=hold))
    async with connect_client(server) as client:
        await create_text(client, "Hello.")
        oob = ev.out_of_band_response_create("ga", instructions=SUMMARY)
        await client.send(oob)
        created, _ = await client.recv_until("response.created")
        oob_id = created["response"]["id"]
        # A reply of the conversation runs and ends while the summary is held.
        reply, between = await respond(client)
        assert reply["response"]["conversation_id"] is not None
        assert not [e for e in between if e.get("response_id") == oob_id]
        assert [r.id for r in server.sessions[0].out_of_band] == [oob_id]
        hold.set()
        done, streamed = await client.recv_until(is_done_of(oob_id))
        assert done["response"]["status"] == "completed"
        assert any(e["type"] == "response.output_text.delta" for e in streamed)
        # Held again: a cancel ends it at once, with nothing streamed.
        hold.clear()
        await client.send(ev.out_of_band_response_create("ga", instructions=SUMMARY))
        created, _ = await client.recv_until("response.created")
        await client.send(ev.response_cancel(created["response"]["id"]))
        cancelled, before = await client.recv_until(is_done_of(created["response"]["id"]))
        assert cancelled["response"]["status"] == "cancelled"
        assert [e["type"] for e in before] == []


async def test_out_of_band_response_reads_a_truncated_view_without_truncating(
    make_server: MakeServer,
) -> None:
    # Output reserve 4,096 (max_output_tokens inf): a 300-token input limit.
    server = await make_server(context_window_tokens=4096 + 300)
    async with connect_client(server) as client:
        for letter in "abcd":
            await create_text(client, letter * 400)  # 100 tokens each
        session = server.sessions[0]
        done, _ = await respond(client, {"conversation": "none", "output_modalities": ["text"]})
        assert done["response"]["usage"]["input_tokens"] == session.window_tokens.total - 200
        assert len(session.items) == 4 and session.truncated_ids == []
        await respond(client, {"output_modalities": ["text"]})
        assert len(session.truncated_ids) == 2
        assert [v.text[0] for v in session.items[:2]] == ["c", "d"]


async def test_an_approval_during_a_reply_is_answered_after_it(make_server: MakeServer) -> None:
    call = McpCall("send_message", {"to": "Bo", "text": "Hi"})
    server = await make_server(speed=10.0, scenario=Scenario(replies=[call, LONG_REPLY]))
    async with connect_client(server) as client:
        await client.update_session(mcp_session())
        await client.recv_until("conversation.item.done")
        await create_text(client, "Text Bo.")
        asked, _ = await respond(client)
        request_id = asked["response"]["output"][0]["id"]
        await create_text(client, "Meanwhile, tell me a story.")
        await client.send(ev.response_create())
        delta, _ = await client.recv_until("response.output_audio.delta")
        await client.send(ev.mcp_approval_response_create(request_id, True))
        story, during = await client.recv_until(is_done_of(delta["response_id"]))
        assert story["response"]["status"] == "completed"
        assert "response.created" not in [e["type"] for e in during]
        assert any(e["type"] == "conversation.item.added" for e in during)
        created, _ = await client.recv_until("response.created")
        done, _ = await client.recv_until(is_done_of(created["response"]["id"]))
        call_item = done["response"]["output"][0]
        assert (call_item["approval_request_id"], call_item["output"]) == (
            request_id,
            "Message sent to Bo.",
        )
        assert [r.trigger for r in server.sessions[0].responses] == [
            "client",
            "client",
            "mcp_approval",
        ]
