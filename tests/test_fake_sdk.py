"""A whole conversation with the fake server through the official SDK client.

`AsyncOpenAI(websocket_base_url=server.url)` connects to ``{url}/realtime?model=...`` with
``Authorization: Bearer KEY`` (see `openai.resources.realtime.realtime._prepare_url`), so
this proves the server speaks to the SDK as the service does. Every frame is also validated
against the SDK's GA server union.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import openai
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from realtime_voicebot.fake import FakeRealtimeServer, FakeServerConfig, Scenario
from realtime_voicebot.fake.synth import silence, speech_like
from tests.fake_harness import ga_session
from tests.spec import validate_server

JSON = dict[str, Any]
WAIT_S = 5.0


class SdkEvents:
    """Reads the SDK connection, validates each frame, and keeps them all."""

    def __init__(self, conn: AsyncRealtimeConnection) -> None:
        self.conn = conn
        self.all: list[JSON] = []

    async def until(self, event_type: str) -> tuple[JSON, list[JSON]]:
        before: list[JSON] = []
        async with asyncio.timeout(WAIT_S):
            while True:
                raw = await self.conn.recv_bytes()
                event = json.loads(raw)
                validate_server(event, "ga")
                parsed = self.conn.parse_event(raw)
                assert parsed.type == event["type"]
                self.all.append(event)
                if event["type"] == event_type:
                    return event, before
                before.append(event)


async def test_conversation_through_the_official_sdk() -> None:
    scenario = Scenario(
        user_transcripts=["What is the tallest mountain?"],
        replies=["Mount Everest, at about eight thousand eight hundred metres."],
    )
    config = FakeServerConfig(speed=0, scenario=scenario, api_keys=frozenset({"sk-test"}))
    async with FakeRealtimeServer(config) as server:
        client = openai.AsyncOpenAI(api_key="sk-test", websocket_base_url=server.url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            events = SdkEvents(conn)
            created, _ = await events.until("session.created")
            assert created["session"]["type"] == "realtime"
            await conn.session.update(session=ga_session())  # type: ignore[arg-type]
            updated, _ = await events.until("session.updated")
            assert updated["session"]["audio"]["input"]["transcription"] is not None

            # A spoken user turn: VAD, commit, transcript, then the audio response.
            audio = np.concatenate([silence(0.4), speech_like(1.2, seed=5), silence(0.8)])
            pcm = audio.astype("<i2").tobytes()
            for offset in range(0, len(pcm), 4800):
                chunk = base64.b64encode(pcm[offset : offset + 4800]).decode()
                await conn.input_audio_buffer.append(audio=chunk)
            transcript, before = await events.until(
                "conversation.item.input_audio_transcription.completed"
            )
            assert [e["type"] for e in before[:3]] == [
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed",
            ]
            assert transcript["transcript"] == "What is the tallest mountain?"
            user_item = transcript["item_id"]
            done, streamed = await events.until("response.done")
            audio_bytes = sum(
                len(base64.b64decode(e["delta"]))
                for e in streamed
                if e["type"] == "response.output_audio.delta"
            )
            reply = done["response"]["output"][0]
            assert reply["content"][0]["transcript"] == scenario.replies[0]
            assert audio_bytes == len(str(scenario.replies[0])) * 65 * 48
            assert done["response"]["usage"]["input_token_details"]["audio_tokens"] > 0

            # A system item at the very start, the user turn deleted, the reply truncated.
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_text", "text": "Summary: mountains."}],
                },
                previous_item_id="root",
            )
            added, _ = await events.until("conversation.item.added")
            assert added["previous_item_id"] is None
            await conn.conversation.item.delete(item_id=user_item)
            deleted, _ = await events.until("conversation.item.deleted")
            assert deleted["item_id"] == user_item
            await conn.conversation.item.truncate(
                item_id=reply["id"], content_index=0, audio_end_ms=500
            )
            truncated, _ = await events.until("conversation.item.truncated")
            assert truncated["audio_end_ms"] == 500

        session = server.sessions[0]
        assert session.handshake.path == "/v1/realtime?model=gpt-realtime"
        held = session.items
        assert (held[0].role, held[0].text) == ("system", "Summary: mountains.")
        assert [v.id for v in held] == [added["item"]["id"], reply["id"]]
        assert held[1].audio_ms == 500
        assert session.window_tokens.audio == 10  # 0.5 s of assistant audio at 20 tokens/s
