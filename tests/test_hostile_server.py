"""A bad server never crashes, hangs or storms the bot (issue 13, frames from the server).

Each test feeds the real app, against the fake server, one thing a broken or hostile server
could send, then checks both sides: the bot survived it, and the conversation still works
(the next typed line is answered).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from realtime_voicebot.fake import session_config
from realtime_voicebot.fake.config import Faults
from realtime_voicebot.fake.server import FakeRealtimeServer
from realtime_voicebot.fake.session import FakeSession
from realtime_voicebot.testing import Running, start_bot

from .app_harness import fake_config, settings_for


def answered(running: Running, count: int) -> bool:
    return len(running.view.assistant) >= count


async def typed_bot(server: FakeRealtimeServer, tmp_path: Path, **settings: Any) -> Running:
    running = start_bot(server, settings_for(server, tmp_path, **settings), text_lines=True)
    await running.until(lambda: running.bot.client is not None and running.bot.client.connected)
    return running


async def chat(running: Running, line: str, replies: int) -> None:
    await running.type(line)
    await running.until(lambda: answered(running, replies), 15)


@pytest.mark.parametrize("code", [["not", "a", "string"], {"an": "object"}, 7, None])
async def test_an_error_code_of_any_shape_is_counted_and_the_run_goes_on(
    tmp_path: Path, code: Any
) -> None:
    # Right after session.created: during the handshake.
    faults = Faults(error_after_events=1, error_code=code)
    async with FakeRealtimeServer(fake_config(faults=faults)) as server:
        running = await typed_bot(server, tmp_path)
        await chat(running, "hello", 1)
        session = server.sessions[0]
        session.faults.error_after_events = session.events_counted + 1  # and after it
        await chat(running, "again", 2)
        assert await running.stop() == 0
    errors = running.bot.core.snapshot()["errors"]
    assert sum(errors.values()) == 2 and all(isinstance(c, str) for c in errors)
    assert running.bot.snapshot()["app"]["core_errors"] == 0


async def test_a_session_created_whose_session_is_not_an_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_config, "public", lambda session: "not an object")
    async with FakeRealtimeServer(fake_config()) as server:
        running = await typed_bot(server, tmp_path)
        await chat(running, "hello", 1)
        assert await running.stop() == 0
    client = running.bot.client
    assert client is not None and client.session is not None
    assert client.session.lifetime_s is None  # unknown: no rollover scheduled on it


async def test_an_expiry_in_the_past_starts_no_reconnect_storm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_public = session_config.public

    def expired(session: dict[str, Any]) -> dict[str, Any]:
        return {**real_public(session), "expires_at": int(time.time()) - 3600}

    monkeypatch.setattr(session_config, "public", expired)
    async with FakeRealtimeServer(fake_config()) as server:
        running = await typed_bot(server, tmp_path)
        await chat(running, "hello", 1)
        await chat(running, "still one session?", 2)
        handshakes = len(server.sessions)
        assert await running.stop() == 0
    assert handshakes == 1


async def test_a_response_done_with_a_bad_output_and_absurd_usage(tmp_path: Path) -> None:
    async with FakeRealtimeServer(fake_config()) as server:
        running = await typed_bot(server, tmp_path)
        await chat(running, "hello", 1)
        bad = {
            "type": "response.done",
            "event_id": "evt_bad",
            "response": {
                "id": "resp_bad",
                "status": "completed",
                "output": {"not": "a list"},
                "usage": {"input_tokens": 10**400, "output_tokens": 1e308},
            },
        }
        await server.sessions[0].send_raw(json.dumps(bad))
        await chat(running, "the next line is still sent", 2)
        assert await running.stop() == 0
    summary = running.bot.summary()
    assert summary["cost_usd"] < 1e6  # clamped, not infinite
    assert json.dumps(summary)  # the metrics file can still be written


async def test_an_audio_delta_that_is_not_base64_is_a_bad_frame(tmp_path: Path) -> None:
    async with FakeRealtimeServer(fake_config()) as server:
        running = await typed_bot(server, tmp_path)
        await chat(running, "hello", 1)
        bad = {
            "type": "response.output_audio.delta",
            "event_id": "evt_bad",
            "response_id": "resp_x",
            "item_id": "item_x",
            "output_index": 0,
            "content_index": 0,
            "delta": "this is not base64!",
        }
        await server.sessions[0].send_raw(json.dumps(bad))
        await chat(running, "still here?", 2)
        assert await running.stop() == 0
    client = running.bot.client
    assert client is not None and client.parser.stats.bad_payload == 1
    assert running.bot.snapshot()["app"]["audio_device_failures"] == 0
    assert not running.view.errors


async def test_a_frame_over_the_size_limit_is_a_dropped_connection(tmp_path: Path) -> None:
    async with FakeRealtimeServer(fake_config()) as server:
        running = await typed_bot(server, tmp_path, backoff_initial_s=0.05)
        await chat(running, "hello", 1)
        huge = json.dumps({"type": "rate_limits.updated", "pad": "x" * (17 * 2**20)})
        await server.sessions[0].send_raw(huge)
        second = await running.session(2)
        await chat(running, "after the reconnect", 2)
        assert await running.stop() == 0
    assert server.sessions[0].close_code == 1009
    assert second.received_types()[0] == "session.update"
    assert running.bot.summary()["reconnects"] == 1


async def test_a_server_gone_silent_is_told_cancelled_and_replaced(tmp_path: Path) -> None:
    async with FakeRealtimeServer(fake_config()) as server:
        running = await typed_bot(server, tmp_path, response_timeout_s=1)
        await chat(running, "hello", 1)
        first: FakeSession = server.sessions[0]
        first.faults.mute_after_events = first.events_counted + 1  # silent mid-answer
        await running.type("are you there?")
        await running.until(lambda: any("has not answered" in e for e in running.view.errors), 10)
        second = await running.session(2)  # still mute: a new session, with the line again
        await running.until(lambda: answered(running, 2), 15)
        assert await running.stop() == 0
    assert first.muted and first.muted_events >= 1
    assert running.view.assistant[-1][1] == "You said: are you there?"
    creates = [e for e in second.received if e["type"] == "conversation.item.create"]
    assert any(e["item"]["role"] == "user" for e in creates)  # the line, sent again
    turns = running.bot.core.turns.stats
    assert turns.watchdog_cancels == 1 and turns.watchdog_reconnects == 1


async def test_a_slow_but_talking_server_is_not_taken_for_a_silent_one(tmp_path: Path) -> None:
    # The other side of the watchdog: a reply that takes longer than the timeout to finish,
    # but whose events keep coming, is not cancelled.
    async with FakeRealtimeServer(fake_config(speed=1.0)) as server:
        running = await typed_bot(server, tmp_path, response_timeout_s=1)
        await chat(running, "tell me something long " * 3, 1)
        assert await running.stop() == 0
    assert running.bot.core.turns.stats.watchdog_cancels == 0
    assert not running.view.errors
    assert server.sessions[0].responses[0].status == "completed"
