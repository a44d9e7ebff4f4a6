"""Echo handling: the adaptive gate against a leaking reply and a user talking over it (both
sides of the filter, at several couplings, on a flat and a reverberant echo path, and when the
coupling changes), the mode factory with its fallback and start-up line, and WebRTC AEC.

The player's side is simulated by appending the played reference to a PlaybackTap block by
block, the microphone by a delayed, attenuated (optionally reverberated) copy of it plus,
sometimes, the user. Signals are the fake server's speech-like audio: what the rig plays.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
import structlog

from realtime_voicebot.audio.devices import AudioUnavailableError
from realtime_voicebot.audio.echo import (
    STATUS_AEC,
    STATUS_GATE,
    STATUS_OFF,
    AcousticEchoCanceller,
    EchoGate,
    EchoTracker,
    PassThrough,
    echo_status,
    make_echo_processor,
)
from realtime_voicebot.audio.echo_path import EchoPathEstimator, FrameLevels
from realtime_voicebot.audio.output import PlaybackTap
from realtime_voicebot.audio.resample import rms_dbfs
from realtime_voicebot.fake.synth import speech_like

RATE = 24000
BLOCK = 480  # 20 ms
DELAY_MS = 120.0
REPLY_DBFS = -20.0  # the fake server's replies


def echo_of(
    reference: np.ndarray, delay_ms: float, gain_db: float, reverb_ms: float = 0.0
) -> np.ndarray:
    """The reference as the microphone hears it: delayed, attenuated and, with `reverb_ms`
    (the time it takes to fall by 60 dB), smeared by a room's exponentially decaying tail."""
    signal = reference.astype(np.float64)
    if reverb_ms:
        rng = np.random.default_rng(11)
        t = np.arange(round(reverb_ms * RATE / 1000)) / RATE
        response = rng.standard_normal(t.shape[0]) * np.exp(-6.9 * t / (reverb_ms / 1000))
        response[0] = 1.0
        signal = np.convolve(signal, response / np.sqrt(np.sum(response**2)))[: signal.shape[0]]
    delay = round(delay_ms * RATE / 1000)
    echo = np.zeros(signal.shape[0])
    echo[delay:] = signal[: signal.shape[0] - delay] * 10 ** (gain_db / 20)
    return echo


def to_pcm(signal: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(np.rint(signal), -32768, 32767), dtype=np.int16)


def level(signal: np.ndarray) -> float:
    return rms_dbfs(to_pcm(signal))


def user_over(length: int, start_s: float, seconds: float, level_dbfs: float) -> np.ndarray:
    user = np.zeros(length)
    speech = speech_like(seconds, seed=99, level_dbfs=level_dbfs)
    start = round(start_s * RATE)
    user[start : start + speech.shape[0]] = speech
    return user


class GateRun:
    """The gate fed block by block: the device plays a block, then the mic block is read."""

    def __init__(self, played: np.ndarray, mic: np.ndarray, **options: Any) -> None:
        self.tap = PlaybackTap(RATE)
        self.gate = EchoGate(self.tap, **options)
        self.mic = to_pcm(mic)
        self.outputs: list[bytes] = []
        self.openings_s: list[float] = []
        self.coupling_at: dict[float, float] = {}
        for start in range(0, self.mic.shape[0], BLOCK):
            self.tap.append(played[start : start + BLOCK])
            before = self.gate.openings
            self.outputs.append(self.gate.process(self.mic[start : start + BLOCK].tobytes()))
            if self.gate.openings > before:
                self.openings_s.append(start / RATE)
            self.coupling_at[round(start / RATE, 2)] = self.gate.coupling_db

    @property
    def output(self) -> np.ndarray:
        return np.frombuffer(b"".join(self.outputs), dtype=np.int16)


def reply(seconds: float, seed: int = 1) -> np.ndarray:
    return speech_like(seconds, seed=seed, level_dbfs=REPLY_DBFS)


COUPLINGS_DB = [-30.0, -18.0, -10.0, 0.0, 6.0]
PATHS = {"flat": 0.0, "room": 300.0}


# --- the gate: the echo alone never opens it -----------------------------------------------


@pytest.mark.parametrize("reverb_ms", PATHS.values(), ids=PATHS.keys())
@pytest.mark.parametrize("coupling_db", COUPLINGS_DB)
def test_echo_alone_never_opens_the_gate(coupling_db: float, reverb_ms: float) -> None:
    played = reply(8.0)
    run = GateRun(played, echo_of(played, DELAY_MS, coupling_db, reverb_ms))
    assert run.gate.openings == 0
    assert run.output.shape[0] == run.mic.shape[0]  # timing kept
    assert not run.output.any(), "the server hears silence while the bot talks"
    assert run.gate.counts["gated"] == len(run.outputs)


def test_the_gate_learns_the_coupling_and_the_delay() -> None:
    """Whatever the coupling, the learned one differs from it by the same constant (the
    reference's reverberation tail), and the delay is found within two frames."""
    played = reply(6.0)
    offsets = []
    for coupling_db in COUPLINGS_DB:
        run = GateRun(played, echo_of(played, DELAY_MS, coupling_db))
        offsets.append(run.gate.coupling_db - coupling_db)
        assert run.gate.delay_ms is not None
        assert abs(run.gate.delay_ms - DELAY_MS) <= 30.0
    assert max(offsets) - min(offsets) < 1.0, offsets


# --- the gate: a user 6 dB above the echo opens it ---------------------------------------


@pytest.mark.parametrize("above_echo_db", [6.0, 12.0])
@pytest.mark.parametrize("reverb_ms", PATHS.values(), ids=PATHS.keys())
@pytest.mark.parametrize("coupling_db", COUPLINGS_DB)
def test_user_above_the_echo_opens_the_gate_within_300_ms(
    coupling_db: float, reverb_ms: float, above_echo_db: float
) -> None:
    played = reply(7.0)
    echo = echo_of(played, DELAY_MS, coupling_db, reverb_ms)
    user = user_over(played.shape[0], 4.0, 1.0, level(echo[RATE:]) + above_echo_db)
    run = GateRun(played, echo + user)
    assert run.openings_s, "the user was never heard"
    assert 4.0 <= run.openings_s[0] <= 4.3, run.openings_s
    first = round(run.openings_s[0] * RATE / BLOCK)
    heard = np.frombuffer(b"".join(run.outputs[: first + 1]), dtype=np.int16)
    user_start = 4 * RATE
    assert np.array_equal(heard[user_start:], run.mic[user_start : heard.shape[0]]), (
        "the start of the word is released with the opening"
    )
    assert not heard[: user_start - 13 * BLOCK].any(), "the echo before it stays silent"
    assert run.output.shape[0] == run.mic.shape[0]


def test_a_short_loud_burst_does_not_open_the_gate() -> None:
    played = reply(4.0)
    mic = echo_of(played, DELAY_MS, -18.0)
    mic += user_over(played.shape[0], 2.0, 0.1, level(mic[RATE:]) + 20)  # a 100 ms cough
    run = GateRun(played, mic)
    assert run.gate.openings == 0
    assert not run.output.any()


# --- the gate: it re-learns when the coupling changes -----------------------------------


@pytest.mark.parametrize(("before_db", "after_db"), [(-10.0, -25.0), (-25.0, -12.0)])
def test_gate_relearns_when_the_coupling_changes(before_db: float, after_db: float) -> None:
    played = reply(16.0, seed=3)
    change = 8 * RATE
    mic = np.concatenate(
        [
            echo_of(played, DELAY_MS, before_db)[:change],
            echo_of(played, DELAY_MS, after_db)[change:],
        ]
    )
    echo_only = GateRun(played, mic)
    learned_before = echo_only.coupling_at[7.5]
    assert echo_only.coupling_at[11.0] - learned_before == pytest.approx(
        after_db - before_db, abs=1.5
    ), "learned within three seconds"
    # Echo alone: a coupling that falls never opens the gate; one that rises may, while it
    # is being learned (learning pauses for the first second the gate is open), never after.
    assert all(8.0 <= t < 11.0 for t in echo_only.openings_s), echo_only.openings_s
    if after_db < before_db:
        assert echo_only.openings_s == []
        assert echo_only.coupling_at[10.0] - learned_before == pytest.approx(
            after_db - before_db, abs=1.5
        ), "a fall is learned within two seconds"
    assert not echo_only.output[11 * RATE + RATE // 2 :].any()
    # The user, 6 dB above the new echo, is heard within 300 ms.
    user = user_over(played.shape[0], 12.0, 1.0, level(mic[change:]) + 6.0)
    talking = GateRun(played, mic + user)
    assert next(t for t in talking.openings_s if t >= 11.0) <= 12.3, talking.openings_s


# --- the gate: when the bot is silent, or the echo is negligible, everything passes ---------


def test_everything_passes_while_the_assistant_is_silent() -> None:
    quiet_user = speech_like(1.0, seed=4, level_dbfs=-50.0)  # far below any margin
    run = GateRun(np.zeros(quiet_user.shape[0], dtype=np.int16), quiet_user)
    assert run.output.tobytes() == quiet_user.tobytes()
    assert run.gate.counts["gated"] == 0


def test_with_headphones_the_gate_learns_there_is_no_echo_and_passes_a_quiet_user() -> None:
    """A user talking over the reply for under a second (the app stops the reply once the
    user is heard) does not move the median the coupling is learned from."""
    played = reply(6.0)
    user = user_over(played.shape[0], 3.0, 0.9, REPLY_DBFS - 25)  # quiet, over a loud reply
    run = GateRun(played, user)  # no echo path at all
    assert np.array_equal(run.output[RATE:], run.mic[RATE:])
    assert run.gate.coupling_db < -80


def test_gate_reopens_fully_when_the_reply_stops() -> None:
    sound = reply(2.0)
    played = np.concatenate([sound, np.zeros(2 * RATE, dtype=np.int16)])
    mic = echo_of(played, DELAY_MS, -18.0)
    mic += user_over(played.shape[0], 3.0, 1.0, REPLY_DBFS - 20)  # normal voice after it
    run = GateRun(played, mic)
    after = run.output[round(2.9 * RATE) :]  # the reply and the delay range have passed
    assert np.array_equal(after, run.mic[round(2.9 * RATE) :])
    assert not run.output[RATE : 2 * RATE].any()


# --- the echo path estimator and the frame levels, on their own --------------------------


def test_estimator_finds_delay_and_coupling_from_levels() -> None:
    rng = np.random.default_rng(5)
    envelope = -30 + 10 * np.sin(np.arange(400) / 7.0) + rng.normal(0, 1, 400)
    path = EchoPathEstimator(tail_decay_db=100.0)  # no reverberation tail
    delay, coupling = 17, -23.0
    for frame in range(400):
        path.push_reference(envelope[frame : frame + 1])
        if frame >= delay:
            clock = np.array([frame], dtype=np.int64)  # the frame being played
            path.learn(np.array([envelope[frame - delay] + coupling]), clock)
    assert path.delay_frames == delay
    assert path.correlation > 0.99
    # The prediction is the loudest reference frame within one frame of the delay, so the
    # coupling learned sits a little below the true one, by the envelope's frame-to-frame rise.
    assert coupling - 2.5 < path.learned_coupling_db < coupling
    assert path.spread_db < 1.5


@pytest.mark.parametrize("block", [480, 240, 720, 1000])
def test_frame_levels_match_a_full_measurement(block: int) -> None:
    rng = np.random.default_rng(block)
    levels = rng.choice([0.0, 30.0, 3000.0, 20000.0], size=60)
    stream = np.concatenate(
        [np.clip(rng.normal(0.0, lv, block), -32768, 32767).astype(np.int16) for lv in levels]
    )
    meter = FrameLevels(240)
    incremental = np.concatenate(
        [meter.push(stream[i : i + block]) for i in range(0, stream.shape[0], block)]
    )
    whole = stream.shape[0] // 240
    expected = [rms_dbfs(stream[i * 240 : (i + 1) * 240]) for i in range(whole)]
    assert incremental == pytest.approx(expected, abs=1e-9)
    assert meter.frames == whole


# --- modes: the factory, its fallback and the start-up line ------------------------------


def test_factory_builds_each_mode_with_its_start_up_line() -> None:
    tap = PlaybackTap(RATE)
    off = make_echo_processor("off", tap)
    assert isinstance(off, PassThrough)
    assert off.process(b"\x01\x02") == b"\x01\x02"
    assert off.counts == {"blocks": 1}
    assert (off.mode, off.status) == ("off", STATUS_OFF)
    gate = make_echo_processor("gate", tap)
    assert isinstance(gate, EchoGate)
    assert (gate.mode, gate.status) == ("gate", STATUS_GATE)
    aec = make_echo_processor("aec", tap)
    assert isinstance(aec, AcousticEchoCanceller)
    assert (aec.mode, aec.status) == ("aec", STATUS_AEC)


def test_aec_that_cannot_load_falls_back_to_the_gate_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "livekit", None)  # `from livekit import rtc` fails
    with structlog.testing.capture_logs() as logs:
        processor = make_echo_processor("aec", PlaybackTap(RATE))
    assert isinstance(processor, EchoGate)
    assert processor.mode == "gate"
    assert processor.status.startswith("echo handling: gate, because echo cancellation")
    assert "livekit did not load" in processor.status
    assert "\n" not in processor.status
    assert [(e["event"], e["mode"], e["requested"]) for e in logs] == [("echo_mode", "gate", "aec")]

    class Mic:
        echo = processor

    assert echo_status(Mic()) == processor.status
    assert echo_status(object()) is None


def test_aec_without_fallback_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "livekit", None)
    with pytest.raises(AudioUnavailableError, match=r"pip install .*livekit.*--echo gate"):
        make_echo_processor("aec", PlaybackTap(RATE), fallback=False)


# --- AEC -----------------------------------------------------------------------------------


def harmonic_speech(
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


def energy_db(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(samples.astype(np.float64) ** 2) + 1e-9))


def run_aec(*, feed_reference: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """4 s of reply echo (played at 48 kHz), then 2 s of the user alone; returns mic, user, out."""
    import soxr

    device_rate = 48000
    tap = PlaybackTap(device_rate)  # the player runs at the device's rate
    aec = AcousticEchoCanceller(tap, stream_delay_ms=40)
    reply = harmonic_speech(4.0, 150, 3.3, 16000, seed=7)
    played = np.asarray(soxr.resample(reply, RATE, device_rate), dtype=np.int16)
    if not feed_reference:
        played[:] = 0
    echo = echo_of(reply, delay_ms=40, gain_db=-6)
    echo += 0.3 * echo_of(reply, delay_ms=51, gain_db=-6)  # a reflection
    mic = to_pcm(echo)
    user = harmonic_speech(2.0, 230, 2.9, 9000, seed=8)
    out = []
    for start in range(0, mic.shape[0], BLOCK):  # echo only
        tap.append(played[start * 2 : (start + BLOCK) * 2])
        out.append(aec.process(mic[start : start + BLOCK].tobytes()))
    for start in range(0, user.shape[0], BLOCK):  # then the user alone, nothing played
        tap.append(np.zeros(BLOCK * 2, dtype=np.int16))
        out.append(aec.process(user[start : start + BLOCK].tobytes()))
    return mic, user, np.frombuffer(b"".join(out), dtype=np.int16), aec.counts


def test_aec_attenuates_the_echo_and_keeps_the_user() -> None:
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
    mic, _, result, _ = run_aec(feed_reference=False)
    reduction_db = energy_db(mic[2 * RATE :]) - energy_db(result[2 * RATE : 4 * RATE])
    assert reduction_db < 6.0


def test_aec_silences_residual_echo_and_keeps_a_user_over_the_reply() -> None:
    """Microphone blocks read in bursts and a reply whose echo comes 20 ms earlier than the
    last one's: nothing of the echo reaches the VAD's threshold, and a user talking over the
    reply, 6 dB above its echo, comes through."""
    tap = PlaybackTap(RATE)
    aec = AcousticEchoCanceller(tap)
    first, second = reply(6.0, seed=1), reply(4.0, seed=2)
    gap = np.zeros(RATE, dtype=np.int16)
    played = np.concatenate([first, gap, second])
    echo = np.concatenate(
        [
            echo_of(np.concatenate([first, gap]), 120.0, -18.0),
            echo_of(second, 100.0, -18.0),  # the delay shifted by 20 ms
        ]
    )
    user_start = 8.5  # 1.5 s into the second reply
    mic = to_pcm(echo + user_over(played.shape[0], user_start, 1.0, level(echo[RATE:]) + 6.0))
    out, position = [], 0
    blocks = list(range(0, mic.shape[0], BLOCK))
    for index, start in enumerate(blocks):
        tap.append(played[start : start + BLOCK])
        if index % 10 < 6:  # the loop falls behind, then reads a burst of blocks
            continue
        for queued in blocks[position : index + 1]:
            out.append(aec.process(mic[queued : queued + BLOCK].tobytes()))
        position = index + 1
    result = np.frombuffer(b"".join(out), dtype=np.int16)
    frames = result[: result.shape[0] // 240 * 240].reshape(-1, 240)
    levels = [rms_dbfs(frame) for frame in frames]
    echo_only = levels[RATE // 240 : round(user_start * RATE) // 240]  # after a second
    assert max(echo_only) < -46.0, "nothing the VAD at 0.4 would take for speech"
    user = levels[round(user_start * RATE) // 240 : round((user_start + 1.0) * RATE) // 240]
    assert max(user) > level(echo[RATE:]) + 3.0, "the user comes through"


def test_aec_silences_only_output_frames_far_below_the_predicted_echo() -> None:
    """The residual suppressor on its own: while the bot plays, a frame more than 10 dB below
    the echo predicted for it is silenced; one closer to it (a user in double talk), or any
    frame while nothing plays, is kept."""
    from realtime_voicebot.audio.echo import EchoFrames

    aec = AcousticEchoCanceller(PlaybackTap(RATE))
    frame_levels = [-55.0, -45.0, -55.0, -30.0]  # dBFS of four 10 ms output frames
    out = np.concatenate([sustained(0.01, 32768 * 10 ** (lv / 20)) for lv in frame_levels]).astype(
        np.int16
    )
    kept = out.copy()
    echo = EchoFrames(
        levels=np.array([-40.0] * 4),
        predicted=np.array([-40.0, -40.0, -40.0, -40.0]),
        playing=np.array([True, True, False, True]),
        clocks=np.arange(4, dtype=np.int64),
    )
    aec._suppress_residual(out, echo)
    frames, originals = out.reshape(4, 240), kept.reshape(4, 240)
    assert not frames[0].any(), "15 dB under the predicted echo while playing: residual"
    assert np.array_equal(frames[1:], originals[1:])
    assert aec.counts["suppressed_frames"] == 1


def sustained(seconds: float, rms: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    tone = np.sin(2 * np.pi * 300 * t)
    return np.rint(tone / np.sqrt(np.mean(tone**2)) * rms)


def tracked_clocks(*, stamped: bool, stall_blocks: int) -> np.ndarray:
    """The clocks an EchoTracker gives each microphone frame of 40 ms blocks captured 60 ms
    after the tap's position, read by a loop that stalls for `stall_blocks` blocks at a
    time (then reads the backlog at once) while the speaker goes on."""
    block = 960  # 40 ms, the default microphone block
    lead = 1440  # the tap is 60 ms ahead of the microphone where each block is captured
    tap = PlaybackTap(RATE)
    tracker = EchoTracker(tap)
    tap.append(np.zeros(lead, dtype=np.int16))
    captured: list[tuple[bytes, int]] = []
    clocks: list[np.ndarray] = []
    for index in range(150):
        tap.append(np.zeros(block, dtype=np.int16))
        captured.append((np.zeros(block, dtype=np.int16).tobytes(), tap.total_samples))
        if stall_blocks and index % (stall_blocks + 1) != stall_blocks and index < 149:
            continue
        for pcm, stamp in captured:
            frames = tracker.observe(pcm, capture_end=stamp if stamped else None)
            clocks.append(frames.clocks)
        captured.clear()
    return np.concatenate(clocks)


@pytest.mark.parametrize("stall_blocks", [0, 4, 60])
def test_capture_stamps_align_the_echo_reference_whatever_the_loop_does(
    stall_blocks: int,
) -> None:
    """With the duplex stream's capture stamps, each microphone frame's clock is the tap's
    position where it was captured, even when the loop reads blocks in bursts or after a
    stall longer than the tracker's memory of them. Without stamps (the other side), a
    stall that long moves the clocks: the stamps are what holds the alignment."""
    expected = np.arange(600, dtype=np.int64) + 1440 // 240
    assert np.array_equal(tracked_clocks(stamped=True, stall_blocks=stall_blocks), expected)
    unstamped = tracked_clocks(stamped=False, stall_blocks=stall_blocks)
    if stall_blocks == 0:
        assert np.array_equal(unstamped, expected)
    if stall_blocks == 60:
        assert not np.array_equal(unstamped, expected)


def test_aec_lets_the_user_through_in_double_talk_and_never_opens_on_the_echo() -> None:
    """The canceller's own suppressor holds a user talking over the reply down (in this
    simulation it kept 16 of 70 of the user's frames within 3 dB); the double-talk gate
    passes the raw microphone once the user is clearly above the echo: nearly every frame of
    the user's speech after its first 300 ms comes through at its level. The other side: the
    echo alone (two replies, a delay shift between them) never opens it."""
    tap = PlaybackTap(RATE)
    aec = AcousticEchoCanceller(tap)
    first, second = reply(6.0, seed=1), reply(4.0, seed=2)
    played = np.concatenate([first, np.zeros(RATE, dtype=np.int16), second])
    echo = np.concatenate(
        [
            echo_of(played[: first.shape[0] + RATE], 120.0, -18.0),
            echo_of(second, 100.0, -18.0),
        ]
    )
    user_start = 8.5
    user = to_pcm(user_over(played.shape[0], user_start, 1.0, level(echo[RATE:]) + 6.0))
    mic = to_pcm(echo + user)
    out = []
    for start in range(0, mic.shape[0], BLOCK):
        tap.append(played[start : start + BLOCK])
        out.append(aec.process(mic[start : start + BLOCK].tobytes()))
        if start / RATE < user_start:
            assert aec.double_talk.openings == 0, f"opened on the echo at {start / RATE:.2f} s"
    result = np.frombuffer(b"".join(out), dtype=np.int16)
    kept = total = 0
    for frame in range(
        round((user_start + 0.3) * RATE) // 240, round((user_start + 1.0) * RATE) // 240
    ):
        user_db = rms_dbfs(user[frame * 240 : (frame + 1) * 240])
        if user_db > -60:
            total += 1
            kept += rms_dbfs(result[frame * 240 : (frame + 1) * 240]) >= user_db - 3
    assert total > 50 and kept >= 0.9 * total, f"{kept}/{total} of the user's frames kept"
    assert aec.counts["double_talk_openings"] == 1


def test_aec_silences_a_leak_where_the_raw_microphone_held_only_the_echo() -> None:
    """The canceller leaking at the echo's own level (it re-converges) is silenced where the
    raw microphone held nothing above its predicted echo; where the raw input was 3 dB or
    more above it (a user under the gate's opening), or nothing was audible, the canceller's
    output is kept."""
    from realtime_voicebot.audio.echo import EchoFrames

    aec = AcousticEchoCanceller(PlaybackTap(RATE))
    out = np.concatenate([sustained(0.01, 32768 * 10 ** (-40 / 20)) for _ in range(4)]).astype(
        np.int16
    )
    kept = out.copy()
    canceller_view = EchoFrames(
        levels=np.full(4, -30.0),
        predicted=np.full(4, -45.0),  # the output is not far below it: not residual by that
        playing=np.ones(4, dtype=bool),
        clocks=np.arange(4, dtype=np.int64),
    )
    raw = EchoFrames(
        levels=np.array([-31.0, -26.0, -31.0, -29.5]),
        predicted=np.array([-30.0, -30.0, -30.0, -80.0]),
        playing=np.array([True, True, False, True]),
        clocks=np.arange(4, dtype=np.int64),
    )
    aec._suppress_residual(out, canceller_view, raw)
    frames, originals = out.reshape(4, 240), kept.reshape(4, 240)
    assert not frames[0].any(), "the raw frame was its echo alone: the output is a leak"
    assert np.array_equal(frames[1:], originals[1:]), "above its echo, not playing, inaudible"
