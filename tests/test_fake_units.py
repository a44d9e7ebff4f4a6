"""The fake server's pure parts: VAD, synthesis, item store and tokens, scenario, session config."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from realtime_voicebot.fake import session_config
from realtime_voicebot.fake.conversation import (
    ContentPart,
    Conversation,
    Item,
    TokenCount,
    TokenRates,
    cached_tokens,
)
from realtime_voicebot.fake.errors import RequestError
from realtime_voicebot.fake.scenario import Scenario, ScenarioCursor, ScenarioError, ToolCall
from realtime_voicebot.fake.synth import silence, speech_like, tone
from realtime_voicebot.fake.vad import (
    EnergyVad,
    SpeechStarted,
    SpeechStopped,
    VadEvent,
    VadSettings,
    level_dbfs,
    threshold_dbfs,
)
from realtime_voicebot.transport.events import ErrorCode

RATE = 24000


def ms(samples: int) -> float:
    return samples * 1000 / RATE


def run_vad(audio: np.ndarray, settings: VadSettings, chunk: int | None = None) -> list[VadEvent]:
    vad = EnergyVad(settings)
    if chunk is None:
        return vad.feed(audio)
    events: list[VadEvent] = []
    for offset in range(0, audio.size, chunk):
        events += vad.feed(audio[offset : offset + chunk])
    return events


# --- VAD ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lead_s", "burst_s", "padding_ms", "silence_ms", "chunk"),
    [
        (0.73, 1.21, 300, 500, 888),
        (1.005, 0.4, 0, 200, 2400),
        (0.2, 2.0, 300, 500, 37),
        (2.0, 0.333, 500, 800, None),
        (0.5, 1.0, 150, 350, 4801),
    ],
)
def test_vad_marks_tone_burst_within_one_frame(
    lead_s: float, burst_s: float, padding_ms: int, silence_ms: int, chunk: int | None
) -> None:
    settings = VadSettings(prefix_padding_ms=padding_ms, silence_duration_ms=silence_ms)
    audio = np.concatenate([silence(lead_s), tone(burst_s), silence(silence_ms / 1000 + 0.5)])
    events = run_vad(audio, settings, chunk)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    started, stopped = events
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    truth_start = lead_s * 1000
    truth_end = (lead_s + burst_s) * 1000
    expected_start = max(0.0, truth_start - padding_ms)
    assert abs(ms(started.start_sample) - expected_start) <= settings.frame_ms
    assert abs(ms(started.onset_sample) - truth_start) <= settings.frame_ms
    assert abs(ms(stopped.end_sample) - (truth_end + silence_ms)) <= settings.frame_ms
    assert abs(ms(stopped.last_voiced_sample) - truth_end) <= settings.frame_ms


def test_vad_events_do_not_depend_on_chunking() -> None:
    audio = np.concatenate([silence(0.31), speech_like(1.3, seed=4), silence(0.9), tone(0.5)])
    audio = np.concatenate([audio, silence(1.0)])
    settings = VadSettings()
    whole = run_vad(audio, settings)
    assert len(whole) == 4
    for chunk in (1, 7, 240, 1001):
        assert run_vad(audio, settings, chunk) == whole


@pytest.mark.parametrize(
    ("level", "threshold", "speech"),
    [(-45.0, 0.5, False), (-45.0, 0.3, True), (-30.0, 0.5, True), (-30.0, 0.9, False)],
)
def test_vad_threshold_maps_to_dbfs(level: float, threshold: float, speech: bool) -> None:
    audio = np.concatenate([silence(0.2), tone(1.0, level_dbfs=level), silence(1.0)])
    events = run_vad(audio, VadSettings(threshold=threshold))
    assert bool(events) is speech


def test_threshold_mapping_and_levels() -> None:
    assert threshold_dbfs(0.0) == -70.0
    assert threshold_dbfs(0.5) == -40.0
    assert threshold_dbfs(1.0) == -10.0
    assert level_dbfs(tone(0.5, level_dbfs=-20.0)) == pytest.approx(-20.0, abs=0.1)
    assert level_dbfs(silence(0.1)) == -120.0


def test_vad_ignores_clicks_shorter_than_min_speech() -> None:
    audio = np.concatenate([silence(0.5), tone(0.02), silence(1.0)])
    assert run_vad(audio, VadSettings()) == []


def test_vad_pause_shorter_than_silence_duration_keeps_one_utterance() -> None:
    settings = VadSettings(silence_duration_ms=500)
    short_gap = np.concatenate([tone(0.5), silence(0.3), tone(0.5), silence(1.0)])
    long_gap = np.concatenate([tone(0.5), silence(0.7), tone(0.5), silence(1.0)])
    assert len(run_vad(short_gap, settings)) == 2
    assert len(run_vad(long_gap, settings)) == 4


def test_vad_padding_never_reaches_before_floor() -> None:
    vad = EnergyVad(VadSettings(prefix_padding_ms=300))
    vad.feed(silence(1.0))
    vad.floor = vad.position - 2400  # the buffer began 100 ms ago
    events = vad.feed(np.concatenate([tone(0.5), silence(1.0)]))
    started = events[0]
    assert isinstance(started, SpeechStarted)
    assert ms(started.start_sample) == 900.0
    assert ms(started.onset_sample) == 1000.0


def test_vad_settings_from_turn_detection() -> None:
    settings = VadSettings.from_turn_detection(
        {
            "type": "server_vad",
            "threshold": 0.7,
            "prefix_padding_ms": 100,
            "silence_duration_ms": 250,
        }
    )
    assert (settings.threshold, settings.prefix_padding_ms, settings.silence_duration_ms) == (
        0.7,
        100,
        250,
    )
    eager = VadSettings.from_turn_detection({"type": "semantic_vad", "eagerness": "high"})
    assert eager.silence_duration_ms < VadSettings().silence_duration_ms


# --- synthesis ---------------------------------------------------------------------------------


def test_speech_like_level_length_and_determinism() -> None:
    audio = speech_like(2.0, seed=7, level_dbfs=-20.0)
    assert audio.dtype == np.int16
    assert audio.size == 48000
    assert level_dbfs(audio) == pytest.approx(-20.0, abs=0.2)
    assert np.array_equal(audio, speech_like(2.0, seed=7))
    assert not np.array_equal(audio, speech_like(2.0, seed=8))
    assert speech_like(0.0).size == 0


def test_speech_like_is_syllable_modulated_and_stays_above_threshold() -> None:
    audio = speech_like(3.0, seed=1)
    frames = audio[: audio.size // 240 * 240].reshape(-1, 240)
    levels = np.array([level_dbfs(f) for f in frames])
    inner = levels[2:-2]
    assert inner.max() - inner.min() > 6.0  # audible syllables, not a steady tone
    assert inner.min() > threshold_dbfs(0.5) + 5.0  # yet one utterance to the VAD
    # Envelope peaks at syllable rate: 3 to 7 a second.
    smooth = np.convolve(inner, np.ones(5) / 5, mode="same")
    peaks = np.sum((smooth[1:-1] > smooth[:-2]) & (smooth[1:-1] >= smooth[2:]))
    assert 3 * 3 <= peaks <= 7 * 3


# --- conversation and tokens -------------------------------------------------------------------


def text_item(item_id: str, text: str, role: str = "user") -> Item:
    kind = "output_text" if role == "assistant" else "input_text"
    return Item(item_id, "message", role=role, content=[ContentPart(kind, text=text)])  # type: ignore[arg-type]


def assistant_audio(item_id: str, transcript: str, audio_ms: float) -> Item:
    part = ContentPart("output_audio", transcript=transcript, audio_ms=audio_ms)
    return Item(item_id, "message", role="assistant", content=[part])


def test_insert_order_and_previous_ids() -> None:
    conversation = Conversation()
    assert conversation.insert(text_item("a", "one")) is None
    assert conversation.insert(text_item("b", "two")) == "a"
    assert conversation.insert(text_item("s", "summary", "system"), "root") is None
    assert conversation.insert(text_item("x", "after a"), "a") == "a"
    assert conversation.ids == ["s", "a", "x", "b"]
    with pytest.raises(RequestError) as unknown:
        conversation.insert(text_item("y", "?"), "nope")
    assert unknown.value.code == ErrorCode.ITEM_NOT_FOUND
    assert unknown.value.param == "previous_item_id"
    with pytest.raises(RequestError, match="already exists"):
        conversation.insert(text_item("a", "again"))
    assert conversation.delete("x").id == "x"
    assert conversation.ids == ["s", "a", "b"]
    with pytest.raises(RequestError) as missing:
        conversation.delete("x")
    assert missing.value.code == ErrorCode.ITEM_NOT_FOUND


def test_token_window_counts_text_and_audio_by_role() -> None:
    rates = TokenRates()
    conversation = Conversation()
    conversation.insert(text_item("t", "x" * 41))  # 11 tokens
    user_audio = Item(
        "u", "message", role="user", content=[ContentPart("input_audio", audio_ms=2500)]
    )
    conversation.insert(user_audio)  # 25 tokens
    conversation.insert(assistant_audio("r", "words are not counted twice", 1500))  # 30 tokens
    assert conversation.tokens(rates) == TokenCount(text=11, audio=55)
    conversation.delete("u")
    assert conversation.tokens(rates) == TokenCount(text=11, audio=30)
    slow = TokenRates(chars_per_text_token=2, assistant_audio_tokens_per_s=10)
    assert conversation.tokens(slow) == TokenCount(text=21, audio=15)


def test_truncate_cuts_audio_and_transcript_in_proportion() -> None:
    conversation = Conversation()
    conversation.insert(assistant_audio("r", "abcdefghij klmnopqrst", 2000))
    item = conversation.truncate("r", 0, 1000)
    assert item.audio_ms == 1000
    assert item.content[0].transcript == "abcdefghij"
    assert conversation.tokens(TokenRates()).audio == 20


@pytest.mark.parametrize(
    ("item", "end_ms", "code", "message"),
    [
        (
            assistant_audio("r", "hello", 2450),
            2535,
            ErrorCode.INVALID_VALUE,
            "Audio content of 2450ms is already shorter than 2535ms",
        ),
        (
            text_item("r", "hello", "assistant"),
            100,
            ErrorCode.UNSUPPORTED_CONTENT_TYPE,
            "Only model output audio messages can be truncated",
        ),
        (
            Item("r", "message", role="user", content=[ContentPart("input_audio", audio_ms=900)]),
            100,
            ErrorCode.UNSUPPORTED_CONTENT_TYPE,
            "Only model output audio messages can be truncated",
        ),
        (
            assistant_audio("r", "", 0),
            0,
            ErrorCode.UNSUPPORTED_CONTENT_TYPE,
            "Only model output audio messages can be truncated",
        ),
    ],
)
def test_truncate_errors(item: Item, end_ms: int, code: str, message: str) -> None:
    conversation = Conversation()
    conversation.insert(item)
    before = copy.deepcopy(item)
    with pytest.raises(RequestError) as error:
        conversation.truncate("r", 0, end_ms)
    assert error.value.code == code
    assert error.value.message == message
    assert conversation.items[0] == before


def test_cached_tokens_need_a_long_common_prefix() -> None:
    previous = [("p", 600), ("a", 600), ("b", 300)]
    assert cached_tokens(previous, [("p", 600), ("a", 600), ("c", 10)]) == 1152
    assert cached_tokens(previous, [("p", 600), ("x", 600), ("b", 300)]) == 0
    assert cached_tokens([("p", 500)], [("p", 500), ("a", 800)]) == 0


# --- scenario ----------------------------------------------------------------------------------


def test_scenario_from_json_and_text(tmp_path: Path) -> None:
    data = {
        "user_transcripts": ["Hi.", "Book it."],
        "replies": ["Hello!", {"tool_call": {"name": "book", "arguments": {"people": 2}}}],
    }
    json_file = tmp_path / "s.json"
    json_file.write_text(json.dumps(data))
    text_file = tmp_path / "s.txt"
    text_file.write_text(
        '# a comment\nuser: Hi.\nassistant: Hello!\n\nuser: Book it.\ntool: book {"people": 2}\n'
    )
    for loaded in (Scenario.load(json_file), Scenario.load(text_file)):
        assert loaded.user_transcripts == ["Hi.", "Book it."]
        assert loaded.replies == ["Hello!", ToolCall("book", {"people": 2})]
    assert ToolCall("book", {"people": 2}).arguments_json == '{"people":2}'


@pytest.mark.parametrize(
    "bad",
    [
        {"replies": [{"tool_call": {"arguments": {}}}]},
        {"replies": [3]},
        {"user_transcripts": "hi"},
        {"turns": []},
        [],
    ],
)
def test_scenario_rejects_bad_shapes(bad: object) -> None:
    with pytest.raises(ScenarioError):
        Scenario.from_dict(bad)


def test_scenario_text_rejects_unknown_speaker() -> None:
    with pytest.raises(ScenarioError, match="line 2"):
        Scenario.from_text("user: hi\nnarrator: hm\n")


def test_cursor_falls_back_to_placeholder_and_echo() -> None:
    cursor = ScenarioCursor(Scenario(["First."], ["Reply one."]))
    assert cursor.next_transcript(1800) == "First."
    assert cursor.next_transcript(1849) == "[speech 1.8 s]"
    assert cursor.next_reply("First.") == "Reply one."
    assert cursor.next_reply("Second thing") == "You said: Second thing"
    assert "fake" in ScenarioCursor(None).next_reply(None)


# --- session config ----------------------------------------------------------------------------


def ga_default() -> dict[str, object]:
    return session_config.default_session("ga", "sess_1", "gpt-realtime", 1_900_000_000)


@pytest.mark.parametrize(
    ("update", "code", "param"),
    [
        ({"instructions": "x"}, ErrorCode.MISSING_PARAMETER, "session.type"),
        (
            {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
            },
            ErrorCode.INVALID_VALUE,
            "session.audio.input.format.rate",
        ),
        (
            {"type": "realtime", "output_modalities": ["audio", "text"]},
            ErrorCode.INVALID_VALUE,
            "session.output_modalities",
        ),
        (
            {"type": "realtime", "turn_detection": {"type": "server_vad"}},
            ErrorCode.UNKNOWN_PARAMETER,
            "session.turn_detection",
        ),
        (
            {"type": "realtime", "audio": {"input": {"turn_detection": {"threshold": 2}}}},
            ErrorCode.MISSING_PARAMETER,
            "session.audio.input.turn_detection.type",
        ),
        (
            {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}},
            },
            ErrorCode.INVALID_VALUE,
            "session.audio.input.turn_detection.threshold",
        ),
        ({"type": "transcription"}, ErrorCode.INVALID_VALUE, "session.type"),
    ],
)
def test_ga_session_update_errors(update: dict[str, object], code: str, param: str) -> None:
    current = ga_default()
    before = copy.deepcopy(current)
    with pytest.raises(RequestError) as error:
        session_config.apply_update(current, update, "ga", voice_locked=False)
    assert (error.value.code, error.value.param) == (code, param)
    assert current == before


def test_ga_session_update_merges_nested_audio_and_fills_vad_defaults() -> None:
    current = ga_default()
    step1 = session_config.apply_update(
        current,
        {
            "type": "realtime",
            "audio": {
                "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 200}}
            },
        },
        "ga",
        voice_locked=False,
    )
    step2 = session_config.apply_update(
        step1,
        {"type": "realtime", "audio": {"output": {"voice": "cedar"}}},
        "ga",
        voice_locked=False,
    )
    detection = session_config.turn_detection(step2, "ga")
    assert detection is not None
    assert detection["silence_duration_ms"] == 200
    assert detection["threshold"] == 0.5 and detection["interrupt_response"] is True
    assert session_config.voice(step2, "ga") == "cedar"
    assert step2["id"] == "sess_1" and step2["expires_at"] == 1_900_000_000
    off = session_config.apply_update(
        step2,
        {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        "ga",
        voice_locked=False,
    )
    assert session_config.turn_detection(off, "ga") is None


def test_voice_cannot_change_after_assistant_audio() -> None:
    with pytest.raises(RequestError) as error:
        session_config.apply_update(
            ga_default(),
            {"type": "realtime", "audio": {"output": {"voice": "cedar"}}},
            "ga",
            voice_locked=True,
        )
    assert error.value.code == ErrorCode.CANNOT_UPDATE_VOICE
    same = session_config.apply_update(
        ga_default(),
        {"type": "realtime", "audio": {"output": {"voice": "marin"}}},
        "ga",
        voice_locked=True,
    )
    assert session_config.voice(same, "ga") == "marin"


@pytest.mark.parametrize(
    ("update", "param"),
    [
        ({"modalities": ["audio"]}, "session.modalities"),
        ({"input_audio_format": "g711_ulaw"}, "session.input_audio_format"),
        ({"output_modalities": ["audio"]}, "session.output_modalities"),
        ({"audio": {}}, "session.audio"),
    ],
)
def test_beta_session_update_errors(update: dict[str, object], param: str) -> None:
    current = session_config.default_session("beta", "sess_1", "gpt-4o-realtime-preview", 1)
    with pytest.raises(RequestError) as error:
        session_config.apply_update(current, update, "beta", voice_locked=False)
    assert error.value.param == param


def test_beta_session_names_a_known_model() -> None:
    session = session_config.default_session("beta", "sess_1", "my-azure-deployment", 1)
    assert session["model"] in session_config.BETA_MODELS
