from __future__ import annotations

import base64
import json
from typing import Any

import pydantic
import pytest

from realtime_voicebot.config import load_settings
from realtime_voicebot.transport import events as ev
from realtime_voicebot.transport import payloads as pl
from realtime_voicebot.transport.events import EventParser, ServerEventType

from .spec import validate_client, validate_server

DIALECTS = ["ga", "beta"]


def all_builders(dialect: ev.Dialect) -> list[dict[str, Any]]:
    s = load_settings({"max_output_tokens": "400"})
    tool = {
        "type": "function",
        "name": "current_time",
        "description": "Now.",
        "parameters": {"type": "object", "properties": {}},
    }
    return [
        ev.session_update(s, dialect),
        ev.session_update(s, dialect, tools=[tool]),
        ev.session_update(s, dialect, vad=False),
        ev.input_audio_append(b"\x00\x01" * 480),
        ev.input_audio_commit(),
        ev.input_audio_clear(),
        ev.message_create("system", "summary", dialect, previous_item_id="root"),
        ev.message_create("user", "hello", dialect),
        ev.message_create("assistant", "hi there", dialect, previous_item_id="item_1"),
        ev.function_output_create("call_1", '{"ok": true}'),
        ev.item_delete("item_1"),
        ev.item_truncate("item_2", 1234),
        ev.item_retrieve("item_3"),
        ev.response_create(),
        ev.response_create("Say hi."),
        ev.response_cancel(),
    ]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_builder_validates_against_the_sdk(dialect: ev.Dialect) -> None:
    for event in all_builders(dialect):
        validate_client(event, dialect)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_event_ids_are_unique(dialect: ev.Dialect) -> None:
    ids = [e["event_id"] for e in all_builders(dialect) + all_builders(dialect)]
    assert len(ids) == len(set(ids))


def test_ga_session_update_exact_shape() -> None:
    s = load_settings()
    event = ev.session_update(s, "ga")
    assert set(event) == {"type", "event_id", "session"}
    session = event["session"]
    assert set(session) == {
        "type",
        "model",
        "instructions",
        "output_modalities",
        "audio",
        "truncation",
    }
    assert session["type"] == "realtime"
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "marin",
    }
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }


def test_beta_session_update_exact_shape() -> None:
    s = load_settings({"voice": "alloy", "max_output_tokens": "300"})
    session = ev.session_update(s, "beta")["session"]
    assert set(session) == {
        "modalities",
        "instructions",
        "voice",
        "input_audio_format",
        "output_audio_format",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "turn_detection",
        "max_response_output_tokens",
    }
    assert session["input_audio_noise_reduction"] is None
    assert session["voice"] == "alloy"
    assert session["input_audio_format"] == "pcm16"
    assert session["max_response_output_tokens"] == 300
    assert "type" not in session and "audio" not in session


def test_ga_session_update_rejected_by_beta_spec_and_vice_versa() -> None:
    # The two shapes really differ: the GA one is not a valid beta session and back.
    s = load_settings()
    with pytest.raises(pydantic.ValidationError):
        validate_client(ev.session_update(s, "beta") | {"session": {"type": 5}}, "ga")
    beta = ev.session_update(s, "beta")
    assert "type" not in beta["session"]


@pytest.mark.parametrize(("dialect", "part_type"), [("ga", "output_text"), ("beta", "text")])
def test_assistant_text_part_type_per_dialect(dialect: ev.Dialect, part_type: str) -> None:
    event = ev.message_create("assistant", "hi", dialect)
    assert event["item"]["content"] == [{"type": part_type, "text": "hi"}]


def test_system_item_uses_input_text_and_root() -> None:
    event = ev.message_create("system", "summary", "ga", previous_item_id="root")
    assert set(event) == {"type", "event_id", "item", "previous_item_id"}
    assert event["previous_item_id"] == "root"
    assert event["item"] == {
        "type": "message",
        "role": "system",
        "content": [{"type": "input_text", "text": "summary"}],
    }
    assert "previous_item_id" not in ev.message_create("user", "x", "ga")


def test_audio_append_round_trips() -> None:
    pcm = bytes(range(256)) * 4
    event = ev.input_audio_append(pcm)
    assert set(event) == {"type", "event_id", "audio"}
    assert base64.b64decode(event["audio"]) == pcm


def test_truncate_and_delete_exact_keys() -> None:
    t = ev.item_truncate("item_9", 1500.7)  # type: ignore[arg-type]
    assert {k: v for k, v in t.items() if k != "event_id"} == {
        "type": "conversation.item.truncate",
        "item_id": "item_9",
        "content_index": 0,
        "audio_end_ms": 1500,
    }
    assert ev.item_truncate("x", -3)["audio_end_ms"] == 0
    d = ev.item_delete("item_9")
    assert set(d) == {"type", "event_id", "item_id"}


@pytest.mark.parametrize(
    ("wire", "internal"),
    [
        ("response.output_audio.delta", ServerEventType.AUDIO_DELTA),
        ("response.audio.delta", ServerEventType.AUDIO_DELTA),
        ("response.audio_transcript.done", ServerEventType.AUDIO_TRANSCRIPT_DONE),
        ("response.output_audio_transcript.done", ServerEventType.AUDIO_TRANSCRIPT_DONE),
        ("response.text.delta", ServerEventType.TEXT_DELTA),
        ("conversation.item.created", ServerEventType.ITEM_ADDED),
        ("conversation.item.added", ServerEventType.ITEM_ADDED),
        ("input_audio_buffer.speech_started", ServerEventType.SPEECH_STARTED),
    ],
)
def test_both_dialects_map_to_one_internal_name(wire: str, internal: ServerEventType) -> None:
    parser = EventParser()
    event = parser.parse(json.dumps({"type": wire, "event_id": "e1", **MINIMAL}))
    assert event is not None
    assert event.type is internal
    assert event.wire_type == wire


MINIMAL = {
    "item_id": "item_1",
    "response_id": "resp_1",
    "delta": "",
    "item": {"id": "item_1"},
    "response": {"id": "resp_1"},
}
"""Fields enough for the payload of every event type the bot reads."""


def test_wire_names_round_trip_through_the_parser() -> None:
    parser = EventParser()
    for dialect in DIALECTS:
        for t in ServerEventType:
            wire = ev.wire_name(t, dialect)  # type: ignore[arg-type]
            if wire is None:
                assert dialect == "beta"
                continue
            parsed = parser.parse(json.dumps({"type": wire, **MINIMAL}))
            assert parsed is not None and parsed.type is t


def test_beta_names_are_what_the_beta_spec_accepts() -> None:
    # Every renamed event: the beta spelling is in the beta union, the GA one is not.
    assert ev.wire_name(ServerEventType.AUDIO_DELTA, "beta") == "response.audio.delta"
    validate_server(
        {
            "type": "response.audio.delta",
            "event_id": "e",
            "response_id": "r",
            "item_id": "i",
            "output_index": 0,
            "content_index": 0,
            "delta": "",
        },
        "beta",
    )
    with pytest.raises(pydantic.ValidationError):
        validate_server(
            {
                "type": "response.output_audio.delta",
                "event_id": "e",
                "response_id": "r",
                "item_id": "i",
                "output_index": 0,
                "content_index": 0,
                "delta": "",
            },
            "beta",
        )
    assert ev.wire_name(ServerEventType.ITEM_DONE, "beta") is None


@pytest.mark.parametrize(
    ("frame", "counter"),
    [
        ("{not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        ("[1, 2]", "not_an_object"),
        ('"text"', "not_an_object"),
        ('{"no_type": 1}', "missing_type"),
        ('{"type": 7}', "missing_type"),
        ('{"type": "response.brand_new"}', "unknown_type"),
    ],
)
def test_bad_frames_are_counted_not_raised(frame: str | bytes, counter: str) -> None:
    parser = EventParser()
    assert parser.parse(frame) is None
    assert getattr(parser.stats, counter) == 1
    assert parser.stats.dropped == 1


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "response.output_audio.delta", "item_id": "i", "delta": "not base64!"},
        {"type": "response.output_audio.delta", "item_id": "i"},
        {"type": "response.output_audio.delta", "delta": "AAAA"},
        {"type": "conversation.item.added", "item": "not an object"},
        {"type": "conversation.item.deleted", "item_id": ["x"]},
        {"type": "response.created", "response": {"id": 7}},
    ],
)
def test_bad_payloads_of_known_events_are_dropped_and_counted(frame: dict[str, object]) -> None:
    parser = EventParser()
    assert parser.parse(json.dumps(frame)) is None
    assert parser.stats.bad_payload == 1 and parser.stats.dropped == 1


def test_good_payloads_are_typed_once_where_they_enter() -> None:
    parser = EventParser()
    delta = parser.parse(
        json.dumps({"type": "response.output_audio.delta", "item_id": "i", "delta": "AAAA"})
    )
    assert delta is not None and isinstance(delta.payload, pl.AudioDelta)
    assert delta.payload.pcm == b"\x00\x00\x00" and delta.payload.item_id == "i"
    error = parser.parse(
        json.dumps({"type": "error", "error": {"code": ["a", {"b": 1}], "message": 5}})
    )
    assert error is not None and isinstance(error.payload, pl.ServerError)
    assert error.payload.code == "['a', {'b': 1}]" and error.payload.message == "5"
    hash(error.payload.code)  # usable as a counter key
    done = parser.parse(
        json.dumps(
            {
                "type": "response.done",
                "response": {"id": "r", "output": "oops", "usage": {"input_tokens": 10**400}},
            }
        )
    )
    assert done is not None and isinstance(done.payload, pl.ResponseDone)
    assert done.payload.output == () and done.payload.usage is not None
    assert done.payload.usage.input_tokens == pl.MAX_COUNT
    created = parser.parse(json.dumps({"type": "session.created", "session": "nope"}))
    assert created is not None and created.payload == pl.SessionCreated()
    assert parser.stats.dropped == 0


def test_known_uninteresting_events_are_not_counted_as_unknown() -> None:
    parser = EventParser()
    assert parser.parse('{"type": "input_audio_buffer.dtmf_event_received"}') is None
    assert parser.stats.unknown_type == 0 and parser.stats.ignored == 1


def test_every_ga_server_event_type_is_known() -> None:
    import typing

    from openai.types.realtime import RealtimeServerEvent

    members = typing.get_args(typing.get_args(RealtimeServerEvent)[0])
    parser = EventParser()
    for model in members:
        wire = typing.get_args(model.model_fields["type"].annotation)[0]
        parser.parse(json.dumps({"type": wire, **MINIMAL}))
    assert parser.stats.unknown_type == 0, parser.stats.unknown_types


def test_item_text_reads_text_and_transcripts() -> None:
    item = {
        "content": [
            {"type": "output_audio", "transcript": "Hello"},
            {"type": "input_text", "text": "world"},
            {"type": "audio", "transcript": None},
        ]
    }
    assert ev.item_text(item) == "Hello world"
    assert ev.has_audio(item)
    assert ev.item_text({"content": "bad"}) == ""
