"""The echo matrix on the virtual rig: each `--echo` mode x echo coupling x user level.

`voicebot run` runs as a subprocess on the rig's default devices against a fake Realtime
server in this process. The echo path is a PulseAudio `module-loopback` from the speaker's
monitor (`vspk.monitor`) into the microphone (`vmic`), attenuated by the coupling: none
(headphones), -18 dB or -10 dB (laptop speakers). The fake server's replies are speech-like
audio at -20 dBFS RMS; its VAD runs at threshold 0.4 (-46 dBFS), so the reply's echo at
-18 dB (-38 dBFS) is speech to it, as is a user at -20 dB (-40 dBFS) with headphones.

For each mode and coupling, one bot:

1. hears a question and plays its reply through (9 s): every `speech_started` the server
   sends while nobody talks into the microphone is a false interruption (the reply's own
   echo), counted per minute of reply heard on the monitor over the whole run;
2. then, for each user level (relative to the reply's level), talks over a reply
   `INTERJECT_AFTER_S` into it (1 s of speech): the interjection is heard when the server
   sends `speech_started` during it and the app then truncates the reply at the played
   position (`audio_end_ms` within `TRUNCATE_TOLERANCE_MS` of what the monitor had heard of
   the reply when `speech_started` was sent; the app pauses the reply at once and sends the
   truncate when the user's turn is confirmed, after the speech, which is waited for);
   `speech_started` -> silence is timed on the monitor. The reply to a heard interjection is
   the next one talked over.

`off` with an echo path is not asked to hear interjections: its echo interrupts every reply
first (step 1 shows it). A cell is *in spec* when the user is at least 6 dB above the echo;
the others are measured and shown, not required. A cell passes with no false interruption,
every interjection heard and every truncate at the played position.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import Figure, median
from rig import (
    RATE,
    BenchError,
    BotProcess,
    Monitor,
    SendStamps,
    play_into_mic,
    project_command,
    require_rig,
    run_bench,
    wait_mic_streaming,
    wait_sent,
    workdir,
)

from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.synth import silence, speech_like
from realtime_voicebot.transport.events import ClientEventType, ServerEventType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.rig import echo_path

MODES = ("aec", "gate", "off")
COUPLINGS_DB: tuple[float | None, ...] = (None, -18.0, -10.0)
"""None: headphones (no echo path)."""
USER_LEVELS_DB = (-6.0, -12.0, -20.0)
"""The user's level relative to the reply's."""
REPLY_DBFS = -20.0
"""The fake server's reply level (RMS), `speech_like`'s default."""
VAD_THRESHOLD = "0.4"
SPEED = 2.0
REPLY = (
    "Here is a fairly long answer, spoken slowly and steadily, so that there is plenty of "
    "time for its echo to come back and for you to talk over it. "
)
REPLY_S = len(REPLY) * FakeServerConfig().ms_per_char / 1000
QUESTION_S = 0.6
INTERJECT_AFTER_S = 1.5
INTERJECTION_S = 1.0
HEARD_WITHIN_S = INTERJECTION_S + 1.0
"""How long after an interjection starts its `speech_started` is waited for."""
OURS_AFTER_S = 0.3
"""A `speech_started` from the start of one of our utterances to this long after its end is
ours (the gate holds the start of a word back up to 250 ms); any other is a false one."""
QUIET_MS = 300.0
TRUNCATE_TOLERANCE_MS = 40.0
"""Two 20 ms blocks: where the app read the played position against the monitor."""
MIN_ABOVE_ECHO_DB = 6.0
CONFIRM_WITHIN_S = INTERJECTION_S + 3.0
"""How long after an interjection's `speech_started` its truncate is waited for (the app sends
it once the user's turn is confirmed, after the speech and the VAD's silence)."""


def truncated(session: Any, item_id: str | None) -> bool:
    kind = ClientEventType.ITEM_TRUNCATE.value
    return any(e.get("type") == kind and e.get("item_id") == item_id for e in session.received)


@dataclass
class Interjection:
    level_db: float
    heard: bool
    item_id: str | None = None
    heard_at_cut_ms: float | None = None
    """What the monitor had heard of the reply when `speech_started` was sent."""
    truncate_error_ms: float | None = None
    silence_s: float | None = None

    @property
    def ok(self) -> bool:
        error = self.truncate_error_ms
        return self.heard and error is not None and abs(error) <= TRUNCATE_TOLERANCE_MS


@dataclass
class ModeRun:
    """One bot: a mode on one echo coupling."""

    mode: str
    coupling_db: float | None
    reply_s: float = 0.0
    false_starts: int = 0
    interjections: list[Interjection] = field(default_factory=list)
    mode_line: str = ""

    @property
    def false_per_minute(self) -> float:
        return self.false_starts * 60.0 / self.reply_s if self.reply_s else float("nan")


def utterance(seconds: float, level_dbfs: float, seed: int) -> np.ndarray[Any, Any]:
    return np.concatenate([speech_like(seconds, seed=seed, level_dbfs=level_dbfs), silence(0.1)])


@contextlib.contextmanager
def coupled(coupling_db: float | None) -> Iterator[None]:
    if coupling_db is None:
        yield
        return
    with echo_path(gain_db=coupling_db):
        yield


def in_spec(coupling_db: float | None, level_db: float) -> bool:
    return coupling_db is None or level_db - coupling_db >= MIN_ABOVE_ECHO_DB


def echo_mode_line(bot: BotProcess) -> str:
    """The bot's start-up line about echo handling, from its JSON log."""
    log = (bot.workdir / f"{bot.name}.log").read_text(errors="replace")
    for line in log.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "echo_mode":
                return f"{event.get('mode')}: {event.get('status')}"
    return "no echo_mode line"


async def run_mode(
    mode: str, coupling_db: float | None, per_level: int, monitor: Monitor
) -> ModeRun:
    result = ModeRun(mode, coupling_db)
    created = ServerEventType.RESPONSE_CREATED.value
    delta = ServerEventType.AUDIO_DELTA.value
    started_kind = ServerEventType.SPEECH_STARTED.value
    config = FakeServerConfig(speed=SPEED, scenario=Scenario(replies=[REPLY] * 200))
    ours: list[tuple[float, float]] = []  # when we talked into the microphone (monotonic)
    seed = iter(range(1000))

    def say(seconds: float, level_dbfs: float) -> float:
        at = time.monotonic()
        play_into_mic(utterance(seconds, level_dbfs, next(seed)))
        ours.append((at, at + seconds))
        return at

    settings = ("--echo", mode, "--vad-threshold", VAD_THRESHOLD, "--log-level", "INFO")
    async with FakeRealtimeServer(config) as server:
        work = workdir(f"bench-echo-{mode}-")
        with coupled(coupling_db):
            bot = BotProcess(f"echo-{mode}", project_command(server.url, work, *settings), work)
            try:
                session = await server.wait_for_session(1, 30)
                stamps = SendStamps(session)
                await wait_mic_streaming(server, session, bot, 0.5)
                result.mode_line = echo_mode_line(bot)
                started_at = monitor.position
                # 1. A reply played through with only its echo in the microphone.
                asked = say(QUESTION_S, REPLY_DBFS - 6)
                response = await wait_sent(server, stamps, created, asked, 15)
                first = await wait_sent(server, stamps, delta, response.at, 15)
                onset = await asyncio.to_thread(monitor.wait_onset, monitor.sample_at(first.at), 15)
                await asyncio.to_thread(
                    monitor.wait_samples, onset + round((REPLY_S + 1.0) * RATE), REPLY_S + 10
                )
                # 2. Interjections over the following replies.
                if mode != "off" or coupling_db is None:
                    await asyncio.to_thread(monitor.wait_quiet, onset, QUIET_MS, 30)
                    await interjections(server, session, stamps, monitor, per_level, say, result)
                ended_at = monitor.position
                bot.check_alive()
            finally:
                await bot.stop()
        result.reply_s = sum(
            (min(b.end, ended_at) - b.start) / RATE
            for b in monitor.bursts(started_at, min_gap_ms=QUIET_MS)
            if b.start < ended_at
        )
        sent = [s for s in stamps.sent if s.type == started_kind]
        result.false_starts = sum(
            1 for s in sent if not any(start <= s.at <= end + OURS_AFTER_S for start, end in ours)
        )
        truncates = {
            str(e["item_id"]): int(e["audio_end_ms"])
            for e in session.received
            if e.get("type") == ClientEventType.ITEM_TRUNCATE.value
        }
    for interjection in result.interjections:
        item, heard_at_cut = interjection.item_id, interjection.heard_at_cut_ms
        if item is not None and item in truncates and heard_at_cut is not None:
            interjection.truncate_error_ms = truncates[item] - heard_at_cut
    bot.remove_workdir()
    return result


async def interjections(
    server: Any,
    session: Any,
    stamps: SendStamps,
    monitor: Monitor,
    per_level: int,
    say: Any,
    result: ModeRun,
) -> None:
    created = ServerEventType.RESPONSE_CREATED.value
    delta = ServerEventType.AUDIO_DELTA.value
    started_kind = ServerEventType.SPEECH_STARTED.value
    after: float | None = None  # the cut whose reply comes next, or None: ask again
    previous_end = monitor.position
    for level_db in USER_LEVELS_DB:
        for _ in range(per_level):
            if after is None:
                after = say(QUESTION_S, REPLY_DBFS - 6)
            try:
                response = await wait_sent(server, stamps, created, after, 15)
            except BenchError:
                # The heard interjection brought no reply: the app took what the server's
                # VAD heard of it for noise (shorter than interruption_min_ms) and resumed
                # the reply. That interjection fails (no truncate: "truncate off: none"); ask again.
                after = say(QUESTION_S, REPLY_DBFS - 6)
                response = await wait_sent(server, stamps, created, after, 15)
            first = await wait_sent(server, stamps, delta, response.at, 15)
            since = max(previous_end, monitor.sample_at(first.at))
            onset = await asyncio.to_thread(monitor.wait_onset, since, 15)
            await asyncio.to_thread(
                monitor.wait_samples, onset + round(INTERJECT_AFTER_S * RATE), 15
            )
            spoke = say(INTERJECTION_S, REPLY_DBFS + level_db)
            try:
                cut = await wait_sent(server, stamps, started_kind, spoke, HEARD_WITHIN_S)
            except BenchError:
                cut = None
            burst = await asyncio.to_thread(monitor.wait_quiet, onset, QUIET_MS, REPLY_S + 10)
            previous_end = burst.end
            interjection = Interjection(level_db, heard=cut is not None)
            if cut is not None:
                interjection.silence_s = monitor.time_of(burst.end) - cut.at
                interjection.heard_at_cut_ms = (monitor.sample_at(cut.at) - onset) * 1000.0 / RATE
                interjection.item_id = first.item_id
                after = cut.at
                # The app pauses the reply on speech_started and truncates it once the user's
                # turn is confirmed (false_interruption resume): after the speech ends. Wait
                # for it, so the run's last interjection is judged like the others.
                with contextlib.suppress(TimeoutError):
                    await server.wait_for(
                        lambda item=first.item_id: truncated(session, item), CONFIRM_WITHIN_S
                    )
            else:
                after = None
            result.interjections.append(interjection)


# --- the matrix ------------------------------------------------------------------------


def cell(run: ModeRun, level_db: float) -> str:
    """One mode's figures in one cell."""
    false = f"{run.false_per_minute:.1f} false/min"
    if run.mode == "off" and run.coupling_db is not None:
        return f"FAIL {false}, interjections not run (its echo cuts every reply)"
    made = [i for i in run.interjections if i.level_db == level_db]
    heard = [i for i in made if i.ok]
    passed = run.false_starts == 0 and made and len(heard) == len(made)
    silences = [i.silence_s * 1000 for i in heard if i.silence_s is not None]
    silence_text = f"{median(silences):.0f} ms" if silences else "-"
    missed = sum(1 for i in made if not i.heard)
    off = [i.truncate_error_ms for i in made if i.heard and not i.ok]
    why = []
    if missed:
        why.append(f"{missed} not heard")
    if off:
        errors = ", ".join("none" if e is None else f"{e:+.0f} ms" for e in off)
        why.append(f"truncate off: {errors}")
    reasons = f" ({'; '.join(why)})" if why else ""
    return (
        f"{'PASS' if passed else 'FAIL'} {false}, heard {len(heard)}/{len(made)}{reasons}, "
        f"speech_started->silence {silence_text}"
    )


def coupling_name(coupling_db: float | None) -> str:
    return "none (headphones)" if coupling_db is None else f"{coupling_db:g} dB"


def matrix_figures(runs: dict[tuple[str, float | None], ModeRun]) -> list[Figure]:
    figures = []
    for coupling_db in COUPLINGS_DB:
        for level_db in USER_LEVELS_DB:
            cells = [f"{mode}: {cell(runs[mode, coupling_db], level_db)}" for mode in MODES]
            spec = in_spec(coupling_db, level_db)
            figures.append(
                Figure(
                    f"echo {coupling_name(coupling_db)}, user {level_db:g} dB re reply",
                    "; ".join(cells),
                    target="0 false/min, every interjection heard"
                    if spec
                    else "- (user < 6 dB above the echo)",
                    note="in spec" if spec else "measured, not required",
                )
            )
    return figures


def markdown_matrix(runs: dict[tuple[str, float | None], ModeRun]) -> str:
    lines = [
        "| echo coupling | user re reply | " + " | ".join(MODES) + " |",
        "| --- | --- |" + " --- |" * len(MODES),
    ]
    for coupling_db in COUPLINGS_DB:
        for level_db in USER_LEVELS_DB:
            marker = "" if in_spec(coupling_db, level_db) else " (not in spec)"
            cells = [cell(runs[mode, coupling_db], level_db) for mode in MODES]
            lines.append(
                f"| {coupling_name(coupling_db)} | {level_db:g} dB{marker} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines)


LAST_RUNS: dict[tuple[str, float | None], ModeRun] = {}


def figures(quick: bool) -> list[Figure]:
    require_rig()
    per_level = 1 if quick else 3
    runs: dict[tuple[str, float | None], ModeRun] = {}
    with Monitor("vspk.monitor") as monitor:
        monitor.wait_samples(RATE // 10, 10, "recording")
        for mode in MODES:
            for coupling_db in COUPLINGS_DB:
                print(f"  {mode}, echo {coupling_name(coupling_db)} ...", file=sys.stderr)
                runs[mode, coupling_db] = asyncio.run(
                    run_mode(mode, coupling_db, per_level, monitor)
                )
    LAST_RUNS.update(runs)
    print("\n" + markdown_matrix(runs) + "\n", file=sys.stderr, flush=True)
    lines = sorted({f"{mode}: {runs[mode, None].mode_line}" for mode in MODES})
    return [
        *matrix_figures(runs),
        Figure(
            "echo modes as the bot reported them at start-up",
            " | ".join(lines),
            note=f"replies of {REPLY_S:.1f} s at {REPLY_DBFS:g} dBFS; VAD threshold "
            f"{VAD_THRESHOLD}; {per_level} interjection(s) of {INTERJECTION_S:g} s per cell",
        ),
    ]


def main() -> None:
    run_bench("Echo matrix on the virtual rig (each mode side by side)", figures, __doc__)


if __name__ == "__main__":
    main()
