"""Session objects per dialect: the defaults of ``session.created``, validating and merging
``session.update``, and reading the settings the fake server acts on. Pure logic.

The GA session nests audio settings under ``audio.input`` / ``audio.output`` and needs
``type: "realtime"``; the beta session is flat. A key of the other dialect's shape
(``turn_detection`` at the top of a GA session, ``audio`` in a beta one) is rejected as an
unknown parameter, as the service does; other unknown keys are kept.

Checked as the service checks them: ``turn_detection`` (``semantic_vad`` ``eagerness``;
``idle_timeout_ms`` only in a GA ``server_vad``), noise reduction (``near_field`` or
``far_field``, or null), and tools (beta: functions only; GA: functions and ``mcp``, see
`fake.mcp`). MCP secrets (``authorization``, ``headers``) are kept but `public` leaves them
out of what the session echoes.
"""

from __future__ import annotations

import copy
from typing import Any

from realtime_voicebot.fake import mcp
from realtime_voicebot.fake.errors import RequestError
from realtime_voicebot.transport.events import PCM_RATE, Dialect, ErrorCode

JSON = dict[str, Any]

DEFAULT_INSTRUCTIONS = "You are a helpful voice assistant. Answer briefly and clearly."
GA_DEFAULT_VOICE = "marin"
BETA_DEFAULT_VOICE = "alloy"
BETA_MODELS = frozenset(
    {
        "gpt-realtime",
        "gpt-realtime-2025-08-28",
        "gpt-4o-realtime-preview",
        "gpt-4o-realtime-preview-2024-10-01",
        "gpt-4o-realtime-preview-2024-12-17",
        "gpt-4o-realtime-preview-2025-06-03",
        "gpt-4o-mini-realtime-preview",
        "gpt-4o-mini-realtime-preview-2024-12-17",
    }
)
"""Models the beta session type names; another (an Azure deployment name) reads as the default."""

_BETA_ONLY_KEYS = frozenset(
    {
        "modalities",
        "voice",
        "input_audio_format",
        "output_audio_format",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "turn_detection",
        "max_response_output_tokens",
        "temperature",
        "speed",
    }
)
_GA_ONLY_KEYS = frozenset({"audio", "output_modalities", "max_output_tokens"})
_VAD_TYPES = ("server_vad", "semantic_vad")
EAGERNESS = ("low", "medium", "high", "auto")
NOISE_REDUCTION_TYPES = ("near_field", "far_field")


def _invalid(param: str, message: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_VALUE, message, param)


def default_turn_detection(dialect: Dialect, vad_type: str = "server_vad") -> JSON:
    if vad_type == "semantic_vad":
        return {
            "type": "semantic_vad",
            "eagerness": "auto",
            "create_response": True,
            "interrupt_response": True,
        }
    detection: JSON = {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }
    if dialect == "ga":
        detection["idle_timeout_ms"] = None
    return detection


def default_session(dialect: Dialect, session_id: str, model: str, expires_at: float) -> JSON:
    """The session object of ``session.created``: what a new connection starts with."""
    if dialect == "ga":
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": model,
            "expires_at": expires_at,
            "output_modalities": ["audio"],
            "instructions": DEFAULT_INSTRUCTIONS,
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": PCM_RATE},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": default_turn_detection("ga"),
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": PCM_RATE},
                    "voice": GA_DEFAULT_VOICE,
                    "speed": 1.0,
                },
            },
        }
    return {
        "object": "realtime.session",
        "id": session_id,
        "model": model if model in BETA_MODELS else "gpt-4o-realtime-preview",
        "expires_at": expires_at,
        "modalities": ["text", "audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "voice": BETA_DEFAULT_VOICE,
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": None,
        "input_audio_noise_reduction": None,
        "turn_detection": default_turn_detection("beta"),
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "speed": 1.0,
        "tracing": None,
    }


# --- reading ---------------------------------------------------------------------------------


def _audio(session: JSON, direction: str) -> JSON:
    audio = session.get("audio") or {}
    value = audio.get(direction) if isinstance(audio, dict) else None
    return value if isinstance(value, dict) else {}


def turn_detection(session: JSON, dialect: Dialect) -> JSON | None:
    value = _audio(session, "input").get("turn_detection") if dialect == "ga" else None
    if dialect == "beta":
        value = session.get("turn_detection")
    return value if isinstance(value, dict) else None


def transcription_model(session: JSON, dialect: Dialect) -> str | None:
    """The input transcription model, or None when input transcription is off."""
    if dialect == "ga":
        value = _audio(session, "input").get("transcription")
    else:
        value = session.get("input_audio_transcription")
    if not isinstance(value, dict):
        return None
    model = value.get("model")
    return model if isinstance(model, str) and model else "gpt-4o-mini-transcribe"


def output_modalities(session: JSON, dialect: Dialect) -> list[str]:
    value = session.get("output_modalities" if dialect == "ga" else "modalities")
    return list(value) if isinstance(value, list) else ["audio"]


def voice(session: JSON, dialect: Dialect) -> str:
    value = _audio(session, "output").get("voice") if dialect == "ga" else session.get("voice")
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else ""


def noise_reduction(session: JSON, dialect: Dialect) -> str | None:
    """``near_field``, ``far_field`` or None (off)."""
    if dialect == "ga":
        value = _audio(session, "input").get("noise_reduction")
    else:
        value = session.get("input_audio_noise_reduction")
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None


def idle_timeout_ms(session: JSON, dialect: Dialect) -> int | None:
    """The idle timeout of a GA ``server_vad`` session, else None."""
    detection = turn_detection(session, dialect)
    if detection is None or detection.get("type") != "server_vad":
        return None
    value = detection.get("idle_timeout_ms")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def public(session: JSON) -> JSON:
    """The session as ``session.created``/``.updated`` show it: MCP secrets left out."""
    tools = session.get("tools")
    if not isinstance(tools, list) or not mcp.servers(tools):
        return session
    shown = [mcp.echoed(t) if isinstance(t, dict) and t.get("type") == "mcp" else t for t in tools]
    return {**session, "tools": shown}


def instructions(session: JSON) -> str:
    value = session.get("instructions")
    return value if isinstance(value, str) else ""


DEFAULT_OUTPUT_RESERVE = 4096
"""Tokens a response keeps for its output when ``max_output_tokens`` is ``inf``."""


def truncation(session: JSON) -> str | JSON:
    """``auto``, ``disabled`` or the retention_ratio object (a beta session: ``auto``)."""
    value = session.get("truncation", "auto")
    return value if value == "disabled" or isinstance(value, dict) else "auto"


def output_reserve(session: JSON, dialect: Dialect) -> int:
    """The output tokens a response may produce, kept out of its input budget."""
    value = session.get("max_output_tokens" if dialect == "ga" else "max_response_output_tokens")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return DEFAULT_OUTPUT_RESERVE


# --- validating and merging ------------------------------------------------------------------


def _check_turn_detection(value: Any, current: Any, param: str, dialect: Dialect) -> JSON | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(param, f"Invalid type for '{param}': expected an object or null.")
    vad_type = value.get("type")
    if vad_type is None:
        if dialect == "ga":
            raise RequestError(
                ErrorCode.MISSING_PARAMETER,
                f"Missing required parameter: '{param}.type'.",
                f"{param}.type",
            )
        vad_type = current.get("type", "server_vad") if isinstance(current, dict) else "server_vad"
    if vad_type not in _VAD_TYPES:
        raise _invalid(
            f"{param}.type",
            f"Invalid value: '{vad_type}'. Supported values are: 'server_vad' and 'semantic_vad'.",
        )
    merged = default_turn_detection(dialect, vad_type)
    if isinstance(current, dict) and current.get("type") == vad_type:
        merged.update(current)
    merged.update(value)
    threshold = merged.get("threshold")
    if threshold is not None and (
        not isinstance(threshold, int | float)
        or isinstance(threshold, bool)
        or not 0.0 <= threshold <= 1.0
    ):
        raise _invalid(f"{param}.threshold", "threshold must be a number from 0.0 to 1.0.")
    for key in ("prefix_padding_ms", "silence_duration_ms"):
        number = merged.get(key)
        if number is not None and (
            not isinstance(number, int) or isinstance(number, bool) or number < 0
        ):
            raise _invalid(f"{param}.{key}", f"{key} must be a non-negative integer.")
    for key in ("create_response", "interrupt_response"):
        if not isinstance(merged.get(key), bool):
            raise _invalid(f"{param}.{key}", f"{key} must be a boolean.")
    eagerness = merged.get("eagerness")
    if vad_type == "semantic_vad" and eagerness is not None and eagerness not in EAGERNESS:
        raise _invalid(
            f"{param}.eagerness",
            f"Invalid value: '{eagerness}'. Supported values are: 'low', 'medium', 'high' "
            "and 'auto'.",
        )
    if "idle_timeout_ms" in value and (dialect != "ga" or vad_type != "server_vad"):
        raise RequestError(
            ErrorCode.UNKNOWN_PARAMETER,
            f"Unknown parameter: '{param}.idle_timeout_ms'."
            + (" Idle timeout is only supported for server_vad." if dialect == "ga" else ""),
            f"{param}.idle_timeout_ms",
        )
    idle = merged.get("idle_timeout_ms")
    if idle is not None and (not isinstance(idle, int) or isinstance(idle, bool) or idle <= 0):
        raise _invalid(f"{param}.idle_timeout_ms", "idle_timeout_ms must be a positive integer.")
    return merged


def _check_noise_reduction(value: Any, param: str) -> JSON | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in NOISE_REDUCTION_TYPES:
        raise _invalid(
            f"{param}.type",
            f"Invalid value: '{kind}'. Supported values are: 'near_field' and 'far_field'.",
        )
    return dict(value)


def _check_tools(tools: Any, dialect: Dialect) -> None:
    if not isinstance(tools, list):
        raise _invalid("session.tools", "tools must be a list.")
    supported = ("function", "mcp") if dialect == "ga" else ("function",)
    for index, tool in enumerate(tools):
        param = f"session.tools[{index}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in supported:
            names = " and ".join(f"'{k}'" for k in supported)
            raise _invalid(
                f"{param}.type", f"Invalid value: '{kind}'. Supported values are: {names}."
            )
        if kind == "mcp":
            assert isinstance(tool, dict)
            mcp.check_tool(tool, param)


def _check_format(value: Any, param: str) -> JSON:
    if not isinstance(value, dict):
        raise _invalid(param, f"Invalid type for '{param}': expected an object.")
    kind = value.get("type", "audio/pcm")
    if kind != "audio/pcm":
        raise _invalid(
            f"{param}.type", f"Invalid value: '{kind}'. The fake server speaks 'audio/pcm' only."
        )
    rate = value.get("rate", PCM_RATE)
    if rate != PCM_RATE:
        raise _invalid(f"{param}.rate", f"Invalid value: {rate}. Supported values are: {PCM_RATE}.")
    return {"type": "audio/pcm", "rate": PCM_RATE}


def _check_transcription(value: Any, param: str) -> JSON | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(param, f"Invalid type for '{param}': expected an object or null.")
    model = value.get("model")
    if model is not None and not isinstance(model, str):
        raise _invalid(f"{param}.model", "model must be a string.")
    return dict(value)


def _check_max_tokens(value: Any, param: str) -> None:
    if value == "inf":
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
        raise _invalid(param, "Must be an integer from 1 to 4096, or 'inf'.")


def _check_voice_change(old: str, new: Any, locked: bool, param: str) -> None:
    name = new.get("id") if isinstance(new, dict) else new
    if not isinstance(name, str):
        raise _invalid(param, "voice must be a string.")
    if locked and name != old:
        raise RequestError(
            ErrorCode.CANNOT_UPDATE_VOICE,
            "Cannot update a conversation's voice if assistant audio is present.",
            param,
        )


def _check_truncation(value: Any) -> None:
    if value in ("auto", "disabled"):
        return
    if not isinstance(value, dict) or value.get("type") != "retention_ratio":
        raise _invalid("session.truncation", "truncation must be 'auto', 'disabled' or an object.")
    ratio = value.get("retention_ratio")
    if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0.0 <= ratio <= 1.0:
        raise _invalid(
            "session.truncation.retention_ratio",
            "retention_ratio must be a number from 0.0 to 1.0.",
        )
    limits = value.get("token_limits")
    if limits is None:
        return
    post = limits.get("post_instructions") if isinstance(limits, dict) else None
    if not isinstance(limits, dict) or (
        post is not None and (not isinstance(post, int) or isinstance(post, bool) or post <= 0)
    ):
        raise _invalid(
            "session.truncation.token_limits.post_instructions",
            "post_instructions must be a positive integer.",
        )


def _apply_ga(session: JSON, update: JSON, voice_locked: bool) -> None:
    if "type" not in update:
        raise RequestError(
            ErrorCode.MISSING_PARAMETER,
            "Missing required parameter: 'session.type'.",
            "session.type",
        )
    if update["type"] != "realtime":
        raise _invalid(
            "session.type",
            f"Invalid value: '{update['type']}'. Supported values are: 'realtime'.",
        )
    modalities = update.get("output_modalities")
    if modalities is not None and (
        not isinstance(modalities, list)
        or len(modalities) != 1
        or modalities[0] not in ("text", "audio")
    ):
        raise _invalid(
            "session.output_modalities",
            f"Invalid modalities: {modalities!r}. Supported combinations are: "
            "['text'] and ['audio'].",
        )
    if "max_output_tokens" in update:
        _check_max_tokens(update["max_output_tokens"], "session.max_output_tokens")
    _check_truncation(update.get("truncation", "auto"))
    audio = update.get("audio")
    if audio is not None and not isinstance(audio, dict):
        raise _invalid("session.audio", "Invalid type for 'session.audio': expected an object.")
    audio = audio or {}
    inputs = audio.get("input") or {}
    outputs = audio.get("output") or {}
    if not isinstance(inputs, dict) or not isinstance(outputs, dict):
        raise _invalid("session.audio", "audio.input and audio.output must be objects.")
    current_input = _audio(session, "input")
    current_output = _audio(session, "output")
    new_input = dict(current_input)
    new_output = dict(current_output)
    for key, value in inputs.items():
        param = f"session.audio.input.{key}"
        if key == "format":
            new_input[key] = _check_format(value, param)
        elif key == "turn_detection":
            new_input[key] = _check_turn_detection(
                value, current_input.get("turn_detection"), param, "ga"
            )
        elif key == "transcription":
            new_input[key] = _check_transcription(value, param)
        elif key == "noise_reduction":
            new_input[key] = _check_noise_reduction(value, param)
        else:
            new_input[key] = value
    for key, value in outputs.items():
        param = f"session.audio.output.{key}"
        if key == "format":
            new_output[key] = _check_format(value, param)
        elif key == "voice":
            _check_voice_change(voice(session, "ga"), value, voice_locked, param)
            new_output[key] = value
        else:
            new_output[key] = value
    for key, value in update.items():
        if key != "audio":
            session[key] = copy.deepcopy(value)
    session["audio"] = {"input": new_input, "output": new_output}


def _apply_beta(session: JSON, update: JSON, voice_locked: bool) -> None:
    modalities = update.get("modalities")
    if modalities is not None and (
        not isinstance(modalities, list)
        or sorted(set(modalities)) not in (["text"], ["audio", "text"])
        or len(modalities) != len(set(modalities))
    ):
        raise _invalid(
            "session.modalities",
            f"Invalid modalities: {modalities!r}. Supported combinations are: "
            "['text'] and ['audio', 'text'].",
        )
    for key in ("input_audio_format", "output_audio_format"):
        if key in update and update[key] != "pcm16":
            raise _invalid(
                f"session.{key}",
                f"Invalid value: '{update[key]}'. The fake server speaks 'pcm16' only.",
            )
    if "max_response_output_tokens" in update:
        _check_max_tokens(
            update["max_response_output_tokens"], "session.max_response_output_tokens"
        )
    checked: JSON = {}
    if "turn_detection" in update:
        checked["turn_detection"] = _check_turn_detection(
            update["turn_detection"],
            session.get("turn_detection"),
            "session.turn_detection",
            "beta",
        )
    if "input_audio_transcription" in update:
        checked["input_audio_transcription"] = _check_transcription(
            update["input_audio_transcription"], "session.input_audio_transcription"
        )
    if "input_audio_noise_reduction" in update:
        checked["input_audio_noise_reduction"] = _check_noise_reduction(
            update["input_audio_noise_reduction"], "session.input_audio_noise_reduction"
        )
    if "voice" in update:
        _check_voice_change(voice(session, "beta"), update["voice"], voice_locked, "session.voice")
    for key, value in update.items():
        session[key] = copy.deepcopy(value)
    session.update(checked)


def apply_update(current: JSON, update: Any, dialect: Dialect, *, voice_locked: bool) -> JSON:
    """The session after ``session.update``; raises `RequestError` and changes nothing if invalid.

    ``voice_locked``: assistant audio exists, so the voice may no longer change.
    """
    if not isinstance(update, dict):
        if update is None:
            raise RequestError(
                ErrorCode.MISSING_PARAMETER, "Missing required parameter: 'session'.", "session"
            )
        raise _invalid("session", "Invalid type for 'session': expected an object.")
    foreign = _BETA_ONLY_KEYS if dialect == "ga" else _GA_ONLY_KEYS
    for key in update:
        if key in foreign:
            raise RequestError(
                ErrorCode.UNKNOWN_PARAMETER,
                f"Unknown parameter: 'session.{key}'.",
                f"session.{key}",
            )
    if "instructions" in update and not isinstance(update["instructions"], str):
        raise _invalid("session.instructions", "instructions must be a string.")
    if "tools" in update:
        _check_tools(update["tools"], dialect)
    session = copy.deepcopy(current)
    immutable = {key: session.get(key) for key in ("id", "object", "expires_at")}
    if dialect == "ga":
        _apply_ga(session, update, voice_locked)
    else:
        _apply_beta(session, update, voice_locked)
    session.update({k: v for k, v in immutable.items() if v is not None})
    if dialect == "beta" and session.get("model") not in BETA_MODELS:
        session["model"] = current.get("model")
    return session
