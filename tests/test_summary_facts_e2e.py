"""The offline summarizer keeps the facts: spoken turns through the real app and the fake.

Twelve planted facts spoken (the fake transcribes each utterance as the scenario's line),
filler turns between them, a 250-token threshold so that nearly every turn compacts; the
summary item the fake server holds at the end still states at least 11 of the 12 facts.
"""

from __future__ import annotations

from pathlib import Path

from realtime_voicebot.app import RunOptions
from realtime_voicebot.audio.output import WavFilePlayer
from realtime_voicebot.core.recap import read_recap
from realtime_voicebot.fake.scenario import Scenario
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.testing import PushInput

from .app_harness import fake_config, settings_for, spoken_turn, start_bot
from .planted_facts import FACTS, facts_held, filler_sentences, planted_turns

THRESHOLD = 250


async def test_spoken_facts_survive_ten_compactions(tmp_path: Path) -> None:
    turns = planted_turns()
    scenario = Scenario(
        user_transcripts=[user for user, _ in turns], replies=[reply for _, reply in turns]
    )
    async with FakeRealtimeServer(fake_config(speed=20, scenario=scenario)) as server:
        settings = settings_for(server, tmp_path, summary_threshold=THRESHOLD)
        mic = PushInput()
        player = WavFilePlayer(tmp_path / "out.wav", pace=20.0)
        running = start_bot(server, settings, RunOptions(), audio_in=mic, audio_out=player)
        session = await running.session(1)
        compactor, conversation = running.bot.core.compactor, running.bot.core.conversation
        for n in range(len(turns)):
            await spoken_turn(running, mic, player, n)
        await running.until(
            lambda: not compactor.in_flight and conversation.order == session.conversation.ids,
            10,
        )
        root = {item.id: item for item in session.items}[session.conversation.ids[0]]
        assert await running.stop() == 0

    assert compactor.stats.compactions >= 10, compactor.stats.compactions
    assert compactor.stats.failures == 0
    # The last summary the server holds, at the root of its conversation.
    assert root.role == "system"
    summary = read_recap(root.text)[0] or ""
    held = facts_held(summary)
    print(f"\nfacts held by the last of {compactor.stats.compactions} summaries: {len(held)}/12")
    assert len(held) >= 11, [f.needles for f in FACTS if f not in held]
    # Every fact turn was summarized (the kept tail is filler), so the count means something.
    user_said = [i.text for i in conversation.history if i.role == "user" and i.summarized]
    assert all(fact.said in user_said for fact in FACTS)
    kept_filler = [s for s in filler_sentences() if s in summary]
    assert not kept_filler, kept_filler
