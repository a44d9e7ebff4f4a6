"""Echo handling: the gate against a leaking reply and a user talking over it, and WebRTC AEC.

The player's side is simulated by appending the played reference to a PlaybackTap block by
block, the microphone by a delayed, attenuated copy of it plus (sometimes) the user.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from realtime_voicebot.audio.devices import AudioUnavailableError
from realtime_voicebot.audio.echo import EchoGate, PassThrough, make_echo_processor
from realtime_voicebot.audio.output import PlaybackTap
from realtime_voicebot.audio.resample import rms_dbfs

RATE = 24000
BLOCK = 480  # 20 ms


def speech_like(
    seconds: float, pitch: float, syllables_hz: float, peak: float, seed: int
) -> np.ndarray:
    """A voiced, pitch-gliding harmonic signal with a syllable envelope and a little breath."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    f0 = pitch * (1 + 0.2 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 15))
    envelope = np.clip(np.sin(2 * np.pi * syllables_hz * t), 0, None) ** 0.5
    envelope *= 0.6 + 0.4 * np.sin(2 * np.pi * 0.37 * t)
    signal = (voiced + 0.05 * rng.standard_normal(t.shape[0])) * envelope
    return np.asarray(np.rint(signal / np.max(np.abs(signal)) * peak), dtype=np.int16)


def sustained_vowel(seconds: float, pitch: float, rms: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    phase = 2 * np.pi * pitch * t
    voiced = sum(np.sin(k * phase) / k for k in range(1, 10))
    return np.asarray(np.rint(voiced / np.sqrt(np.mean(voiced**2)) * rms), dtype=np.int16)


def echo_of(reference: np.ndarray, delay_ms: float, gain_db: float) -> np.ndarray:
    delay = round(delay_ms * RATE / 1000)
    echo = np.zeros(reference.shape[0])
    echo[delay:] = reference[: reference.shape[0] - delay] * 10 ** (gain_db / 20)
    return echo


def to_pcm(signal: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(np.rint(signal), -32768, 32767), dtype=np.int16)


def run_gate(gate: EchoGate, tap: PlaybackTap, played: np.ndarray, mic: np.ndarray) -> list[bytes]:
    """Block by block: the device plays a block, then the mic block is processed."""
    outputs = []
    for start in range(0, mic.shape[0], BLOCK):
        tap.append(played[start : start + BLOCK])
        outputs.append(gate.process(mic[start : start + BLOCK].tobytes()))
    return outputs


# --- gate ----------------------------------------------------------------------------------


def test_gate_blocks_a_reply_leaking_back_at_minus_10_db() -> None:
    tap = PlaybackTap(RATE)
    gate = EchoGate(tap)
    reply = speech_like(3.0, 180, 3.3, 12000, seed=1)
    mic = to_pcm(echo_of(reply, delay_ms=40, gain_db=-10))
    outputs = run_gate(gate, tap, reply, mic)
    assert sum(len(out) for out in outputs) == mic.nbytes  # timing kept
    assert not np.frombuffer(b"".join(outputs), dtype=np.int16).any()
    assert gate.openings == 0
    assert gate.counts["gated"] == len(outputs)


def test_loud_user_over_the_reply_passes_after_160_ms_with_its_start() -> None:
    tap = PlaybackTap(RATE)
    gate = EchoGate(tap)
    reply = speech_like(3.0, 180, 3.3, 12000, seed=2)
    leak = echo_of(reply, delay_ms=40, gain_db=-10)
    reference_peak = max(rms_dbfs(reply[i : i + BLOCK]) for i in range(0, reply.shape[0], BLOCK))
    user_rms = 32768 * 10 ** ((reference_peak + 10) / 20)  # 10 dB above the loudest frame
    user = np.zeros(reply.shape[0])
    user_start = 50 * BLOCK  # 1 s in
    user_end = user_start + round(1.0 * RATE)
    user[user_start:user_end] = sustained_vowel(1.0, 120, user_rms)
    mic = to_pcm(leak + user)
    outputs = run_gate(gate, tap, reply, mic)
    assert all(out == bytes(BLOCK * 2) for out in outputs[:50])  # only the leak: silence
    assert outputs[50:57] == [b""] * 7  # held while the gate makes sure: 7 × 20 ms
    assert gate.openings == 1
    released = np.frombuffer(outputs[57], dtype=np.int16)
    assert np.array_equal(released, mic[user_start : user_start + 8 * BLOCK])  # with its start
    for index in range(58, 100):  # the user keeps talking over the reply: it passes unchanged
        assert outputs[index] == mic[index * BLOCK : (index + 1) * BLOCK].tobytes()
    # the user stopped at block 100: the gate closes after 400 ms (20 blocks) of quiet
    assert gate.is_open is False
    assert any(outputs[index] != bytes(BLOCK * 2) for index in range(100, 120))
    assert all(out == bytes(BLOCK * 2) for out in outputs[121:])
    assert sum(len(out) for out in outputs) == mic.nbytes


def test_short_loud_burst_does_not_open_the_gate() -> None:
    tap = PlaybackTap(RATE)
    gate = EchoGate(tap)
    reply = speech_like(2.0, 180, 3.3, 12000, seed=3)
    mic = echo_of(reply, delay_ms=40, gain_db=-10)
    mic[RATE : RATE + 5 * BLOCK] += sustained_vowel(0.1, 300, 20000)  # a 100 ms cough
    mic_pcm = to_pcm(mic)
    outputs = run_gate(gate, tap, reply, mic_pcm)
    joined = np.frombuffer(b"".join(outputs), dtype=np.int16)
    assert joined.shape[0] == mic_pcm.shape[0]
    assert not joined.any()
    assert gate.openings == 0


def test_everything_passes_while_the_assistant_is_silent() -> None:
    tap = PlaybackTap(RATE)
    gate = EchoGate(tap)
    quiet_user = speech_like(1.0, 200, 3.0, 1000, seed=4)  # far below any margin
    outputs = run_gate(gate, tap, np.zeros_like(quiet_user), quiet_user)
    assert b"".join(outputs) == quiet_user.tobytes()
    assert gate.counts["gated"] == 0


def test_gate_reopens_fully_when_the_reply_stops() -> None:
    tap = PlaybackTap(RATE)
    gate = EchoGate(tap)
    reply = speech_like(1.0, 180, 3.3, 12000, seed=5)
    played = np.concatenate([reply, np.zeros(RATE, dtype=np.int16)])
    user = np.zeros(played.shape[0])
    user[RATE:] = speech_like(1.0, 220, 3.0, 3000, seed=6)  # normal voice after the reply
    outputs = run_gate(gate, tap, played, to_pcm(user))
    after = np.frombuffer(b"".join(outputs[65:]), dtype=np.int16)  # 300 ms window elapsed
    assert np.array_equal(after, to_pcm(user)[65 * BLOCK :])


def test_pass_through_and_factory() -> None:
    tap = PlaybackTap(RATE)
    off = make_echo_processor("off", tap)
    assert isinstance(off, PassThrough)
    assert off.process(b"\x01\x02") == b"\x01\x02"
    assert off.counts == {"blocks": 1}
    assert isinstance(make_echo_processor("gate", tap), EchoGate)


def test_aec_without_livekit_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "livekit", None)
    with pytest.raises(AudioUnavailableError, match=r"realtime_voicebot\[aec\]"):
        make_echo_processor("aec", PlaybackTap(RATE))


# --- AEC -----------------------------------------------------------------------------------


def energy_db(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(samples.astype(np.float64) ** 2) + 1e-9))


def run_aec(*, feed_reference: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """4 s of reply echo (played at 48 kHz), then 2 s of the user alone; returns mic, user, out."""
    import soxr

    from realtime_voicebot.audio.echo import AcousticEchoCanceller

    device_rate = 48000
    tap = PlaybackTap(device_rate)  # the player runs at the device's rate
    aec = AcousticEchoCanceller(tap, stream_delay_ms=40)
    reply = speech_like(4.0, 150, 3.3, 16000, seed=7)
    played = np.asarray(soxr.resample(reply, RATE, device_rate), dtype=np.int16)
    if not feed_reference:
        played[:] = 0
    echo = echo_of(reply, delay_ms=40, gain_db=-6)
    echo += 0.3 * echo_of(reply, delay_ms=51, gain_db=-6)  # a reflection
    mic = to_pcm(echo)
    user = speech_like(2.0, 230, 2.9, 9000, seed=8)
    out = []
    for start in range(0, mic.shape[0], BLOCK):  # echo only
        tap.append(played[start * 2 : (start + BLOCK) * 2])
        out.append(aec.process(mic[start : start + BLOCK].tobytes()))
    for start in range(0, user.shape[0], BLOCK):  # then the user alone, nothing played
        tap.append(np.zeros(BLOCK * 2, dtype=np.int16))
        out.append(aec.process(user[start : start + BLOCK].tobytes()))
    return mic, user, np.frombuffer(b"".join(out), dtype=np.int16), aec.counts


def test_aec_attenuates_the_echo_and_keeps_the_user() -> None:
    pytest.importorskip("livekit")
    mic, user, result, counts = run_aec(feed_reference=True)
    assert result.shape[0] == mic.shape[0] + user.shape[0]
    echo_in, echo_out = mic[2 * RATE :], result[2 * RATE : 4 * RATE]  # after convergence
    erle_db = energy_db(echo_in) - energy_db(echo_out)
    assert erle_db > 6.0, f"echo return loss enhancement only {erle_db:.1f} dB"
    user_in, user_out = user[RATE:], result[5 * RATE :]
    assert abs(energy_db(user_out) - energy_db(user_in)) < 6.0
    assert counts["frames"] - 2 <= counts["reference_frames"] <= counts["frames"]


def test_aec_needs_the_played_reference() -> None:
    """Control: without the far-end reference the same mic signal is barely reduced, so the
    attenuation above is echo cancellation, not noise suppression."""
    pytest.importorskip("livekit")
    mic, _, result, _ = run_aec(feed_reference=False)
    reduction_db = energy_db(mic[2 * RATE :]) - energy_db(result[2 * RATE : 4 * RATE])
    assert reduction_db < 6.0
