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
from realtime_voicebot.testing import scaled
from tests.fake_harness import ga_session
from tests.spec import validate_server

JSON = dict[str, Any]
WAIT_S = scaled(5.0)


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


async def test_features_through_the_official_sdk() -> None:
    """Hosted MCP with approval, an image, and an out-of-band summary, each parsed by the
    SDK's own ``parse_event`` as well as validated."""
    from realtime_voicebot.fake import McpCall
    from realtime_voicebot.transport import events as ev
    from tests.images import png_bytes

    scenario = Scenario(replies=[McpCall("get_weather", {"city": "Lima"}), "A picture of nothing."])
    config = FakeServerConfig(speed=0, scenario=scenario, api_keys=frozenset({"sk-test"}))
    async with FakeRealtimeServer(config) as server:
        client = openai.AsyncOpenAI(api_key="sk-test", websocket_base_url=server.url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            events = SdkEvents(conn)
            await events.until("session.created")
            tool = ev.mcp_tool("weather", server_url="https://mcp.example.com/mcp")
            await conn.session.update(session=ga_session(tools=[tool]))  # type: ignore[arg-type]
            listed, _ = await events.until("mcp_list_tools.completed")
            await conn.conversation.item.create(
                item=ev.message_item("user", "Weather in Lima?", "ga")  # type: ignore[arg-type]
            )
            await conn.response.create()
            asked, _ = await events.until("response.done")
            request = asked["response"]["output"][0]
            assert request["type"] == "mcp_approval_request"
            approval = ev.mcp_approval_response_create(request["id"], True)
            await conn.send(approval)  # type: ignore[arg-type]
            done, streamed = await events.until("response.done")
            assert "response.mcp_call.completed" in [e["type"] for e in streamed]
            assert done["response"]["output"][0]["output"] == "Sunny and 21 degrees in Lima."

            await conn.send(ev.image_message_create(png_bytes(512, 512), "ga", text="And this?"))  # type: ignore[arg-type]
            await conn.response.create()
            seen, _ = await events.until("response.done")
            assert seen["response"]["usage"]["input_token_details"]["image_tokens"] == 255
            assert seen["response"]["output"][0]["content"][0]["transcript"] == (
                "A picture of nothing."
            )

            summary = ev.out_of_band_response_create(
                "ga", instructions="Summarize.", metadata={"purpose": "summary"}
            )
            await conn.send(summary)  # type: ignore[arg-type]
            oob, streamed = await events.until("response.done")
            assert oob["response"]["conversation_id"] is None
            assert oob["response"]["metadata"] == {"purpose": "summary"}
            text = oob["response"]["output"][0]["content"][0]["text"]
            assert text.startswith("Summary:\nmcp_list_tools: [weather tools: get_weather")
            assert "user: And this? [image 512x512]" in text
        session = server.sessions[0]
        assert session.report()["out_of_band_items_in_conversation"] == []
        assert listed["item_id"] == session.items[0].id
        assert [v.type for v in session.items] == [
            "mcp_list_tools",
            "message",
            "mcp_approval_request",
            "mcp_approval_response",
            "mcp_call",
            "message",
            "message",
            "message",
        ]
