"""The fake Realtime server over a real WebSocket: handshake, session, VAD turns, responses,
barge-in, items, errors, time limit, faults and the beta dialect.

Every server frame is validated against the SDK's union for its dialect by `fake_harness`.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from realtime_voicebot.fake import FakeRealtimeServer, Faults, Scenario, ToolCall
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.testing import scaled
from realtime_voicebot.transport import events as ev
from tests.fake_harness import (
    JSON,
    Client,
    MakeServer,
    beta_session,
    connect_client,
    decode_audio,
    ga_session,
)

DELTA_TYPES = {
    "conversation.item.input_audio_transcription.delta",
    "response.output_audio.delta",
    "response.output_audio_transcript.delta",
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.audio.delta",
    "response.audio_transcript.delta",
    "response.text.delta",
}


@pytest.fixture
async def server(make_server: MakeServer) -> FakeRealtimeServer:
    return await make_server()


def utterance(speech_s: float, lead_s: float = 0.3, tail_s: float = 0.8, seed: int = 0) -> Any:
    return np.concatenate([silence(lead_s), speech_like(speech_s, seed=seed), silence(tail_s)])


def squeeze(types: list[str]) -> list[str]:
    """Event types with each run of deltas (alternating pairs too) reduced to its first."""
    out: list[str] = []
    for kind in types:
        if kind in DELTA_TYPES and kind in out[-2:]:
            continue
        out.append(kind)
    return out


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


async def create_text(
    client: Client,
    text: str,
    role: ev.Role = "user",
    *,
    previous_item_id: str | None = None,
    item_id: str | None = None,
) -> JSON:
    """Create a text item; the server's ``conversation.item.added`` (or ``created``)."""
    sent = await client.send(
        ev.message_create(
            role,
            text,
            client.dialect,  # type: ignore[arg-type]
            previous_item_id=previous_item_id,
            item_id=item_id,
        )
    )
    added_type = (
        "conversation.item.added" if client.dialect == "ga" else "conversation.item.created"
    )
    event, _ = await client.recv_until(
        lambda e: (
            e["type"] == added_type
            or (e["type"] == "error" and e["error"]["event_id"] == sent["event_id"])
        )
    )
    if client.dialect == "ga" and event["type"] == added_type:
        await client.recv_until("conversation.item.done")
    return event


async def respond(client: Client, **response: Any) -> tuple[JSON, list[JSON]]:
    """``response.create``; (response.done, the events before it)."""
    event: JSON = {"type": "response.create", "event_id": ev.new_event_id()}
    if response:
        event["response"] = response
    await client.send(event)
    return await client.recv_until("response.done")


async def expect_error(client: Client, event: JSON, *, raw: bool = False) -> JSON:
    """Send ``event``; the ``error`` that answers it (by ``error.event_id``)."""
    event.setdefault("event_id", ev.new_event_id())
    await client.send(event, raw=raw)
    answer, _ = await client.recv_until(
        lambda e: e["type"] == "error" and e["error"].get("event_id") == event["event_id"]
    )
    assert answer["error"]["type"] == "invalid_request_error"
    return answer["error"]


# --- handshake ---------------------------------------------------------------------------------


async def test_handshake_without_key_is_401(server: FakeRealtimeServer) -> None:
    with pytest.raises(InvalidStatus) as rejected:
        async with connect(f"{server.url}/realtime?model=gpt-realtime"):
            pass
    assert rejected.value.response.status_code == 401
    body = json.loads(rejected.value.response.body or b"{}")
    assert "API key" in body["error"]["message"]
    assert [r.status for r in server.rejected] == [401]
    assert server.sessions == []


async def test_wrong_key_is_401_when_keys_are_configured(make_server: MakeServer) -> None:
    server = await make_server(api_keys=frozenset({"sk-right"}))
    with pytest.raises(InvalidStatus) as rejected:
        async with connect_client(server, headers={"Authorization": "Bearer sk-wrong"}):
            pass
    assert rejected.value.response.status_code == 401
    assert json.loads(rejected.value.response.body or b"{}")["error"]["code"] == "invalid_api_key"
    async with connect_client(server, headers={"api-key": "sk-right"}) as client:
        assert client.events[0]["type"] == "session.created"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/chat?model=gpt-realtime", 404),
        ("/v1/realtime", 400),
        ("/openai/realtime?deployment=d", 400),
    ],
)
async def test_bad_paths_are_rejected(server: FakeRealtimeServer, path: str, status: int) -> None:
    with pytest.raises(InvalidStatus) as rejected:
        async with connect_client(server, path=path):
            pass
    assert rejected.value.response.status_code == status


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/openai/v1/realtime?model=my-deployment", "azure"),
        (
            "/openai/realtime?api-version=2025-04-01-preview&deployment=my-deployment",
            "azure-legacy",
        ),
    ],
)
async def test_azure_paths(server: FakeRealtimeServer, path: str, endpoint: str) -> None:
    async with connect_client(server, path=path, headers={"api-key": "azure-key"}) as client:
        session = client.events[0]["session"]
        assert session["model"] == "my-deployment"
        assert session["type"] == "realtime"
        assert server.sessions[0].handshake.endpoint == endpoint


async def test_beta_header_or_config_selects_the_dialect(make_server: MakeServer) -> None:
    server = await make_server()
    async with connect_client(server, dialect="beta") as client:
        session = client.events[0]["session"]
        assert "type" not in session and session["modalities"] == ["text", "audio"]
    forced = await make_server(dialect="beta")
    async with connect_client(forced, dialect="beta", headers={"Authorization": "Bearer k"}):
        assert forced.sessions[0].dialect == "beta"


# --- session -----------------------------------------------------------------------------------


async def test_session_created_then_update_merged_and_echoed(server: FakeRealtimeServer) -> None:
    before = time.time()
    async with connect_client(server) as client:
        created = client.events[0]["session"]
        assert created["type"] == "realtime"
        assert created["id"].startswith("sess_")
        assert before + 3590 <= created["expires_at"] <= time.time() + 3600
        updated = await client.update_session(
            {"type": "realtime", "instructions": "Talk like a pirate."}
        )
        session = updated["session"]
        assert session["instructions"] == "Talk like a pirate."
        assert session["id"] == created["id"]
        assert session["audio"] == created["audio"]
        assert server.sessions[0].session == session


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        ({"instructions": "no type"}, "missing_required_parameter", "session.type"),
        (
            {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
            },
            "invalid_value",
            "session.audio.input.format.rate",
        ),
        (
            {"type": "realtime", "output_modalities": ["audio", "text"]},
            "invalid_value",
            "session.output_modalities",
        ),
    ],
)
async def test_invalid_session_update_is_an_error_with_event_id(
    server: FakeRealtimeServer, session: JSON, code: str, param: str
) -> None:
    async with connect_client(server) as client:
        before = server.sessions[0].session
        error = await expect_error(client, {"type": "session.update", "session": session}, raw=True)
        assert (error["code"], error["param"]) == (code, param)
        assert server.sessions[0].session == before


async def test_unknown_event_type_and_bad_json_are_errors(server: FakeRealtimeServer) -> None:
    async with connect_client(server) as client:
        error = await expect_error(client, {"type": "conversation.item.fly"}, raw=True)
        assert (error["code"], error["param"]) == ("invalid_value", "type")
        await client.ws.send("{not json")
        answer, _ = await client.recv_until("error")
        assert answer["error"]["code"] == "invalid_json"
        missing = await expect_error(client, {"type": "conversation.item.delete"}, raw=True)
        assert (missing["code"], missing["param"]) == ("missing_required_parameter", "item_id")


# --- input audio and VAD -----------------------------------------------------------------------


async def test_vad_turn_events_timing_and_transcript(make_server: MakeServer) -> None:
    server = await make_server(scenario=Scenario(user_transcripts=["Hello there, fake server."]))
    async with connect_client(server) as client:
        await client.update_session(ga_session())
        await client.send_audio(utterance(1.4, lead_s=0.6, tail_s=0.8), chunk_ms=20)
        _, before = await client.recv_until("response.created")
        types = squeeze([e["type"] for e in before])
        assert types == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.input_audio_transcription.delta",
            "conversation.item.input_audio_transcription.completed",
        ]
        started, stopped, committed, added = before[:4]
        assert abs(started["audio_start_ms"] - (600 - 300)) <= 10
        assert abs(stopped["audio_end_ms"] - (600 + 1400 + 500)) <= 10
        item_id = started["item_id"]
        assert stopped["item_id"] == committed["item_id"] == added["item"]["id"] == item_id
        assert committed["previous_item_id"] is None
        assert added["item"]["role"] == "user"
        assert added["item"]["content"][0]["type"] == "input_audio"
        completed = before[-1]
        deltas = "".join(e["delta"] for e in before if e["type"].endswith("transcription.delta"))
        assert completed["transcript"] == deltas == "Hello there, fake server."
        assert completed["usage"]["type"] == "tokens"
        audio_ms = stopped["audio_end_ms"] - started["audio_start_ms"]
        assert completed["usage"]["input_tokens"] == int(audio_ms / 100 + 0.5)
        done, _ = await client.recv_until("response.done")
        assert done["response"]["output"][0]["content"][0]["transcript"] == (
            "You said: Hello there, fake server."
        )
        held = server.sessions[0].items[0]
        assert held.audio_ms == stopped["audio_end_ms"] - started["audio_start_ms"]


async def test_audio_ms_counts_session_audio_across_turns(server: FakeRealtimeServer) -> None:
    async with connect_client(server) as client:
        await client.update_session(ga_session(turn_detection={"create_response": False}))
        await client.send_audio(utterance(1.0, lead_s=0.5, tail_s=1.0))  # 0-2500 ms
        await client.send_audio(utterance(0.8, lead_s=0.7, tail_s=1.0, seed=2))  # 2500-5000 ms
        first, _ = await client.recv_until("input_audio_buffer.speech_started")
        second, between = await client.recv_until("input_audio_buffer.speech_started")
        assert abs(first["audio_start_ms"] - 200) <= 10
        assert abs(second["audio_start_ms"] - (2500 + 700 - 300)) <= 10
        committed = [e for e in between if e["type"] == "input_audio_buffer.committed"]
        assert not any(e["type"] == "response.created" for e in between)
        stopped, _ = await client.recv_until("input_audio_buffer.speech_stopped")
        assert abs(stopped["audio_end_ms"] - (2500 + 700 + 800 + 500)) <= 10
        last, _ = await client.recv_until("input_audio_buffer.committed")
        assert last["previous_item_id"] == committed[0]["item_id"]
        assert server.sessions[0].input_ms == 5000


async def test_manual_commit_and_clear_without_vad(server: FakeRealtimeServer) -> None:
    async with connect_client(server) as client:
        session = ga_session()
        session["audio"]["input"]["turn_detection"] = None
        updated = await client.update_session(session)
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        empty = await expect_error(client, ev.input_audio_commit())
        assert empty["code"] == "input_audio_buffer_commit_empty"
        await client.send_audio(speech_like(0.3))
        await client.send(ev.input_audio_clear())
        await client.recv_until("input_audio_buffer.cleared")
        assert server.sessions[0].buffer_ms == 0
        await client.send_audio(utterance(1.0, lead_s=0.2, tail_s=0.3))
        await client.send(ev.input_audio_commit())
        committed, before = await client.recv_until("input_audio_buffer.committed")
        assert not any(e["type"].startswith("input_audio_buffer.speech") for e in before)
        await client.recv_until("conversation.item.input_audio_transcription.completed")
        assert server.sessions[0].items[0].audio_ms == 1500
        assert server.sessions[0].items[0].id == committed["item_id"]
        # No response without turn detection until the client asks for one.
        await client.send(ev.item_retrieve(committed["item_id"]))
        retrieved, before = await client.recv_until("conversation.item.retrieved")
        assert not any(e["type"] == "response.created" for e in before)
        assert retrieved["item"]["content"][0]["transcript"] == "[speech 1.5 s]"


async def test_no_transcription_events_unless_configured(server: FakeRealtimeServer) -> None:
    async with connect_client(server) as client:
        await client.send_audio(utterance(1.0))
        done, before = await client.recv_until("response.done")
        assert not any("transcription" in e["type"] for e in before)
        transcript = done["response"]["output"][0]["content"][0]["transcript"]
        assert transcript == "You said: [speech 1.8 s]"


# --- responses ---------------------------------------------------------------------------------


async def test_response_event_sequence_and_audio(server: FakeRealtimeServer) -> None:
    async with connect_client(server) as client:
        await client.update_session(ga_session())
        await create_text(client, "What is the capital of France?")
        done, events = await respond(client)
        assert squeeze([e["type"] for e in events]) == [
            "response.created",
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
        reply = "You said: What is the capital of France?"
        chunks = [decode_audio(e) for e in events if e["type"] == "response.output_audio.delta"]
        assert all(len(c) == 4800 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 4800
        audio_ms = sum(len(c) for c in chunks) / ev.PCM_BYTES_PER_MS
        assert audio_ms == len(reply) * 65
        samples = np.frombuffer(b"".join(chunks), dtype="<i2")
        assert 20 * math.log10(np.sqrt(np.mean(samples.astype(float) ** 2)) / 32768) > -25
        deltas = [e["delta"] for e in events if e["type"].endswith("transcript.delta")]
        transcript_done = next(e for e in events if e["type"].endswith("transcript.done"))
        assert "".join(deltas) == transcript_done["transcript"] == reply
        response = done["response"]
        assert response["status"] == "completed"
        assert response["output"][0]["content"] == [{"type": "output_audio", "transcript": reply}]
        assert response["output_modalities"] == ["audio"]
        assert response["usage"]["output_token_details"] == {
            "text_tokens": text_tokens(reply),
            "audio_tokens": round(audio_ms * 20 / 1000),
        }
        limits, _ = await client.recv_until("rate_limits.updated")
        assert {r["name"] for r in limits["rate_limits"]} == {"requests", "tokens"}


async def test_deltas_are_paced_at_the_speed_multiple(make_server: MakeServer) -> None:
    server = await make_server(speed=8.0, scenario=Scenario(replies=["x" * 40]))  # 2.6 s of audio
    async with connect_client(server) as client:
        started = time.monotonic()
        done, events = await respond(client)
        elapsed = time.monotonic() - started
        chunks = [e for e in events if e["type"] == "response.output_audio.delta"]
        assert len(chunks) == 26
        # The last delta is due after 2.5 s of audio, at 8x: never earlier than 0.3125 s.
        assert elapsed >= 2.5 / 8
        assert done["response"]["status"] == "completed"


async def test_usage_follows_the_token_window_across_create_and_delete(
    server: FakeRealtimeServer,
) -> None:
    async with connect_client(server) as client:
        await client.update_session(ga_session(instructions="Be brief."))
        preamble = text_tokens("Be brief.")
        note = "I like green tea with honey in the morning."
        added = await create_text(client, note)
        first, _ = await respond(client)
        reply1 = "You said: " + note
        audio1 = round(len(reply1) * 65 * 20 / 1000)
        usage = first["response"]["usage"]
        assert usage["input_tokens"] == preamble + text_tokens(note)
        assert usage["input_token_details"] == {
            "text_tokens": preamble + text_tokens(note),
            "audio_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0},
        }
        assert usage["output_tokens"] == text_tokens(reply1) + audio1
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        second, _ = await respond(client)
        assert second["response"]["usage"]["input_tokens"] == preamble + text_tokens(note) + audio1
        await client.send(ev.item_delete(added["item"]["id"]))
        deleted, _ = await client.recv_until("conversation.item.deleted")
        assert deleted["item_id"] == added["item"]["id"]
        third, _ = await respond(client)
        reply2 = "You said: " + note  # the note is still the last user item
        audio2 = round(len(reply2) * 65 * 20 / 1000)
        assert third["response"]["usage"]["input_tokens"] == preamble + audio1 + audio2
        assert server.sessions[0].window_tokens.total == preamble + audio1 + audio2 + round(
            len(third["response"]["output"][0]["content"][0]["transcript"]) * 65 * 20 / 1000
        )


async def test_text_only_response(server: FakeRealtimeServer) -> None:
    async with connect_client(server) as client:
        await create_text(client, "Spell it out.")
        done, events = await respond(client, output_modalities=["text"])
        types = squeeze([e["type"] for e in events])
        assert "response.output_audio.delta" not in types
        assert types[3:] == [
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
        ]
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == "You said: Spell it out."
        assert done["response"]["output"][0]["content"] == [{"type": "output_text", "text": text}]
        assert done["response"]["usage"]["output_token_details"]["audio_tokens"] == 0


async def test_out_of_band_response_leaves_the_conversation_alone(
    server: FakeRealtimeServer,
) -> None:
    async with connect_client(server) as client:
        await create_text(client, "In the conversation.")
        done, events = await respond(
            client,
            conversation="none",
            output_modalities=["text"],
            input=[ev.message_item("user", "Summarize: apples and pears.", "ga")],
        )
        assert not any(e["type"].startswith("conversation.item") for e in events)
        assert done["response"]["conversation_id"] is None
        assert done["response"]["output"][0]["content"][0]["text"] == (
            "You said: Summarize: apples and pears."
        )
        assert [v.text for v in server.sessions[0].items] == ["In the conversation."]


# --- barge-in and cancellation -----------------------------------------------------------------


LONG_REPLY = "This is a long answer that goes on and on about nothing in particular. " * 3


async def test_speech_during_a_response_cancels_it(make_server: MakeServer) -> None:
    server = await make_server(speed=2.0, scenario=Scenario(replies=[LONG_REPLY, "Short."]))
    async with connect_client(server) as client:
        await client.update_session(ga_session())
        await client.send_audio(utterance(0.8))
        first_delta, _ = await client.recv_until("response.output_audio.delta")
        response_id, item_id = first_delta["response_id"], first_delta["item_id"]
        audio = decode_audio(first_delta)
        await client.send_audio(speech_like(0.5, seed=9))
        cancelled, before = await client.recv_until("response.done")
        assert "input_audio_buffer.speech_started" in [e["type"] for e in before]
        audio += b"".join(decode_audio(e) for e in before if e["type"].endswith("audio.delta"))
        assert cancelled["response"]["status"] == "cancelled"
        assert cancelled["response"]["status_details"] == {
            "type": "cancelled",
            "reason": "turn_detected",
        }
        assert cancelled["response"]["output"][0]["status"] == "incomplete"
        await client.send_audio(silence(0.8))
        second, after = await client.recv_until("response.done")
        assert not any(e.get("response_id") == response_id for e in after)
        assert second["response"]["status"] == "completed"
        held = {v.id: v for v in server.sessions[0].items}
        assert held[item_id].audio_ms == len(audio) / ev.PCM_BYTES_PER_MS < len(LONG_REPLY) * 65
        assert held[item_id].status == "incomplete"
        transcript = cancelled["response"]["output"][0]["content"][0]["transcript"]
        assert LONG_REPLY.startswith(transcript) and len(transcript) < len(LONG_REPLY)
        sent_audio_tokens = cancelled["response"]["usage"]["output_token_details"]["audio_tokens"]
        assert sent_audio_tokens == round(held[item_id].audio_ms * 20 / 1000)


async def test_speech_does_not_cancel_when_interrupt_response_is_off(
    make_server: MakeServer,
) -> None:
    server = await make_server(speed=10.0, scenario=Scenario(replies=[LONG_REPLY]))
    async with connect_client(server) as client:
        await client.update_session(ga_session(turn_detection={"interrupt_response": False}))
        await client.send_audio(utterance(0.8))
        await client.recv_until("response.output_audio.delta")
        await client.send_audio(speech_like(0.5, seed=9))
        done, before = await client.recv_until("response.done")
        assert "input_audio_buffer.speech_started" in [e["type"] for e in before]
        assert done["response"]["status"] == "completed"


async def test_client_cancel_and_cancel_without_response(make_server: MakeServer) -> None:
    server = await make_server(speed=4.0, scenario=Scenario(replies=[LONG_REPLY]))
    async with connect_client(server) as client:
        await client.send(ev.response_create())
        delta, _ = await client.recv_until("response.output_audio.delta")
        busy = await expect_error(client, ev.response_create())
        assert busy["code"] == "conversation_already_has_active_response"
        await client.send(ev.response_cancel())
        done, _ = await client.recv_until("response.done")
        assert done["response"]["id"] == delta["response_id"]
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        late = await expect_error(client, ev.response_cancel())
        assert late["code"] == "response_cancel_not_active"
        assert server.sessions[0].active_response is None


# --- items -------------------------------------------------------------------------------------


async def test_item_create_honours_previous_item_id(server: FakeRealtimeServer) -> None:
    async with connect_client(server) as client:
        a = (await create_text(client, "A"))["item"]["id"]
        b = await create_text(client, "B", item_id="item_b")
        assert b["item"]["id"] == "item_b" and b["previous_item_id"] == a
        s = await create_text(client, "Summary.", "system", previous_item_id="root")
        assert s["previous_item_id"] is None
        x = await create_text(client, "X", previous_item_id=a)
        assert x["previous_item_id"] == a
        assert [v.text for v in server.sessions[0].items] == ["Summary.", "A", "X", "B"]
        unknown = await expect_error(
            client, ev.message_create("user", "Y", "ga", previous_item_id="item_nope")
        )
        assert (unknown["code"], unknown["param"]) == ("item_not_found", "previous_item_id")
        duplicate = await expect_error(
            client, ev.message_create("user", "B2", "ga", item_id="item_b")
        )
        assert duplicate["param"] == "item.id"
        bad_part = await expect_error(
            client,
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "text", "text": "s"}],
                },
            },
            raw=True,
        )
        assert bad_part["param"] == "item.content[0].type"
        output = await client.send(ev.function_output_create("call_1", '{"ok": true}'))
        accepted, _ = await client.recv_until("conversation.item.added")
        assert accepted["item"]["type"] == "function_call_output"
        assert server.sessions[0].received[-1]["event_id"] == output["event_id"]


async def test_delete_retrieve_and_truncate(server: FakeRealtimeServer) -> None:
    async with connect_client(server) as client:
        user = (await create_text(client, "Tell me a story."))["item"]["id"]
        done, _ = await respond(client)
        reply = done["response"]["output"][0]
        audio_ms = len("You said: Tell me a story.") * 65
        too_far = await expect_error(client, ev.item_truncate(reply["id"], audio_ms + 85))
        assert too_far["code"] == "invalid_value"
        assert too_far["message"] == (
            f"Audio content of {audio_ms}ms is already shorter than {audio_ms + 85}ms"
        )
        not_audio = await expect_error(client, ev.item_truncate(user, 100))
        assert not_audio["message"] == "Only model output audio messages can be truncated"
        zero = await expect_error(client, ev.item_truncate(reply["id"], 0))
        assert zero["code"] == "unsupported_content_type"
        await client.send(ev.item_truncate(reply["id"], audio_ms // 2))
        truncated, _ = await client.recv_until("conversation.item.truncated")
        assert truncated["audio_end_ms"] == audio_ms // 2
        await client.send(ev.item_retrieve(reply["id"]))
        retrieved, _ = await client.recv_until("conversation.item.retrieved")
        assert retrieved["item"]["content"][0]["transcript"] == "You said: Tel"
        held = server.sessions[0].items[1]
        assert held.audio_ms == audio_ms // 2
        await client.send(ev.item_delete(user))
        await client.recv_until("conversation.item.deleted")
        gone = await expect_error(client, ev.item_delete(user))
        assert (gone["code"], gone["param"]) == ("item_not_found", "item_id")
        missing = await expect_error(client, ev.item_retrieve(user))
        assert missing["code"] == "item_not_found"
        assert [v.id for v in server.sessions[0].items] == [reply["id"]]


async def test_tool_call_reply_then_next_reply(make_server: MakeServer) -> None:
    call = ToolCall("get_weather", {"city": "Paris", "unit": "celsius"})
    server = await make_server(scenario=Scenario(replies=[call, "It is sunny in Paris."]))
    async with connect_client(server) as client:
        await create_text(client, "Weather in Paris?")
        done, events = await respond(client)
        assert squeeze([e["type"] for e in events]) == [
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "conversation.item.done",
        ]
        added = events[1]["item"]
        assert (added["type"], added["name"], added["arguments"]) == (
            "function_call",
            "get_weather",
            "",
        )
        deltas = "".join(e["delta"] for e in events if e["type"].endswith("arguments.delta"))
        finished = next(e for e in events if e["type"].endswith("arguments.done"))
        assert json.loads(deltas) == json.loads(finished["arguments"]) == call.arguments
        assert finished["call_id"] == added["call_id"] and finished["name"] == "get_weather"
        output = done["response"]["output"][0]
        assert output["status"] == "completed" and output["call_id"] == added["call_id"]
        await client.send(ev.function_output_create(added["call_id"], '{"sky": "clear"}'))
        await client.recv_until("conversation.item.added")
        second, _ = await respond(client)
        transcript = second["response"]["output"][0]["content"][0]["transcript"]
        assert transcript == "It is sunny in Paris."
        kinds = [v.type for v in server.sessions[0].items]
        assert kinds == ["message", "function_call", "function_call_output", "message"]


# --- time limit --------------------------------------------------------------------------------


async def test_session_expires_with_error_then_close_1001(make_server: MakeServer) -> None:
    server = await make_server(session_max_s=0.4)
    before = time.time()
    async with connect_client(server) as client:
        after = time.time()
        created = client.events[0]["session"]
        # The session opened between the connect and its first event (to the millisecond).
        assert before + 0.4 - 0.001 <= created["expires_at"] <= after + 0.4 + 0.001
        closed = await client.expect_closed(timeout_s=scaled(5))
        assert client.events[-1]["type"] == "error"
        assert client.events[-1]["error"]["code"] == "session_expired"
        assert closed.rcvd is not None and closed.rcvd.code == 1001
    await server.wait_for(lambda: server.sessions[0].closed, scaled(5))
    assert server.sessions[0].ended_by == "expired"
    assert server.current_session is None


# --- faults ------------------------------------------------------------------------------------


async def test_drop_after_events_then_a_fresh_session(make_server: MakeServer) -> None:
    server = await make_server(faults=Faults(drop_after_events=2))
    async with connect_client(server) as client:
        await client.send(ev.message_create("user", "Remember me.", "ga"))
        closed = await client.expect_closed()
        assert isinstance(closed, ConnectionClosedError)
        assert closed.rcvd is None  # no close frame: 1006 to the client
        assert [e["type"] for e in client.events] == ["session.created", "conversation.item.added"]
    assert server.faults.drop_after_events is None
    async with connect_client(server) as client:
        await create_text(client, "New session.")
        assert [v.text for v in server.sessions[1].items] == ["New session."]
    assert server.sessions[0].ended_by == "dropped"
    assert server.sessions[0].items[0].text == "Remember me."


async def test_repeated_drop_after_seconds(make_server: MakeServer) -> None:
    server = await make_server(faults=Faults(drop_after_s=0.1, repeat=True))
    for _ in range(2):
        async with connect_client(server) as client:
            closed = await client.expect_closed()
            assert closed.rcvd is None
    assert [s.ended_by for s in server.sessions] == ["dropped", "dropped"]


async def test_runtime_drop_connection(server: FakeRealtimeServer) -> None:
    async with connect_client(server) as client:
        await server.drop_connection()
        closed = await client.expect_closed()
        assert closed.rcvd is None


async def test_injected_error_malformed_frame_and_unknown_event(make_server: MakeServer) -> None:
    server = await make_server(
        faults=Faults(error_after_events=1, malformed_after_events=2, unknown_event_after_events=2)
    )
    async with connect_client(server, allow_bad=True) as client:
        injected, _ = await client.recv_until("error")
        assert injected["error"]["type"] == "server_error"
        assert injected["error"]["event_id"] is None
        await client.update_session(ga_session())
        await server.inject_error(code="rate_limit_exceeded", message="Slow down.")
        runtime, _ = await client.recv_until("error")
        assert runtime["error"]["code"] == "rate_limit_exceeded"
        await server.send_unknown_event("response.brand_new_thing")
        await create_text(client, "Still alive?")
        assert client.bad_frames[0].startswith('{"type": "response.output_audio.delta"')
        assert [json.loads(f)["type"] for f in client.bad_frames[1:]] == [
            "response.fake_unknown_event",
            "response.brand_new_thing",
        ]
    assert server.sessions[0].faults_fired == [
        "error_after_events",
        "malformed_after_events",
        "malformed_frame",
        "unknown_event_after_events",
        "unknown_event",
        "unknown_event",
    ]


async def test_response_delay_and_cancel_during_it(make_server: MakeServer) -> None:
    server = await make_server(faults=Faults(response_delay_s=0.3))
    async with connect_client(server) as client:
        await client.send(ev.response_create())
        await client.recv_until("response.created")
        started = time.monotonic()
        await client.recv_until("response.output_item.added")
        assert time.monotonic() - started >= 0.25
        await client.recv_until("response.done")
        await client.send(ev.response_create())
        await client.recv_until("response.created")
        await client.send(ev.response_cancel())
        done, before = await client.recv_until("response.done")
        assert before == []
        assert done["response"]["status"] == "cancelled" and done["response"]["output"] == []


# --- beta dialect ------------------------------------------------------------------------------


async def test_beta_dialect_turn_and_response(make_server: MakeServer) -> None:
    server = await make_server(scenario=Scenario(user_transcripts=["Bonjour."]))
    async with connect_client(server, dialect="beta") as client:
        await client.update_session(beta_session())
        await client.send_audio(utterance(1.0))
        done, events = await client.recv_until("response.done")
        types = squeeze([e["type"] for e in events])
        assert "conversation.item.done" not in types
        assert types[:4] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.created",
        ]
        assert types[-6:] == [
            "response.audio_transcript.delta",
            "response.audio.delta",
            "response.audio.done",
            "response.audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
        ]
        completed = next(e for e in events if e["type"].endswith("transcription.completed"))
        assert completed["usage"] == {"type": "duration", "seconds": 1.8}
        assert done["response"]["modalities"] == ["audio", "text"]
        assert done["response"]["output"][0]["content"] == [
            {"type": "audio", "transcript": "You said: Bonjour."}
        ]
        error = await expect_error(client, ev.message_create("assistant", "hi", "ga"), raw=True)
        assert error["param"] == "item.content[0].type"


# --- inspection --------------------------------------------------------------------------------


async def test_inspection_records_and_wait_for(server: FakeRealtimeServer) -> None:
    async with connect_client(server) as client:
        await client.send(ev.input_audio_append(b"\x00\x00" * 2400))
        await client.send(ev.message_create("user", "Hi.", "ga"))
        session = await server.wait_for_session(1, scaled(5))
        await server.wait_for(lambda: len(session.received) == 2, scaled(5))
        assert session.received_types() == ["input_audio_buffer.append", "conversation.item.create"]
        assert session.received[0]["audio"] == "<4800 bytes>"
        await server.wait_for(lambda: "conversation.item.done" in session.sent_types(), scaled(5))
        assert server.current_session is session
    await server.wait_for(lambda: session.closed, scaled(5))
    assert session.ended_by == "client" and session.close_code == 1000
    with pytest.raises(TimeoutError):
        await server.wait_for(lambda: len(server.sessions) > 1, timeout_s=0.05)
