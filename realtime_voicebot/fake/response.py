"""One response: streams its output (audio with transcript, text, function calls, or a hosted
MCP call followed by speech) in a task, paced at a multiple of real time, and finishes with
the ``.done`` events and usage.

An out-of-band response (``in_conversation`` False) streams the same events but adds no
item to the conversation (no ``conversation.item.added``/``.done``), and its
``response.done`` has ``conversation_id: null``.

Pacing: the delta carrying audio from ``t`` seconds on is sent at ``start + t / speed``;
speed 0 or infinity sends as fast as the socket takes it. Cancelling (barge-in or
``response.cancel``) wakes the pacing wait; the task then sends the ``.done`` events for what
was actually sent and ``response.done`` with status ``cancelled``, and nothing after it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
from typing import TYPE_CHECKING, Any, Literal

from realtime_voicebot.fake import mcp, session_config
from realtime_voicebot.fake.conversation import ContentPart, Item, TokenCount
from realtime_voicebot.fake.errors import SessionEnded
from realtime_voicebot.fake.scenario import McpCall, Reply, ToolCall, reply_calls
from realtime_voicebot.fake.synth import speech_like, to_pcm16
from realtime_voicebot.transport.events import (
    PCM_BYTES_PER_MS,
    PCM_RATE,
    ItemType,
    ServerEventType,
)

if TYPE_CHECKING:
    from realtime_voicebot.fake.session import FakeSession

JSON = dict[str, Any]
S = ServerEventType
ARGUMENT_DELTA_CHARS = 24
SAMPLES_PER_MS = PCM_RATE // 1000


class ResponseRun:
    """One response: streams its output in a task, finishes or gets cancelled."""

    def __init__(
        self,
        *,
        session: FakeSession,
        response_id: str,
        reply: Reply | mcp.McpFollowUp,
        modalities: list[str],
        in_conversation: bool,
        input_tokens: TokenCount,
        cached_tokens: int,
        metadata: JSON | None,
        trigger: str,
        tools: Any = None,
    ) -> None:
        self.session = session
        self.id = response_id
        self.reply = reply
        self.modalities = modalities
        self.in_conversation = in_conversation
        self.input_tokens = input_tokens
        self.cached_tokens = cached_tokens
        self.metadata = metadata
        self.trigger = trigger
        self.tools = tools
        """The tools this response may use (the request's, else the session's)."""
        self.status = "in_progress"
        self.cancel_reason: str | None = None
        self.item: Item | None = None
        """The latest output item (the only one unless the reply is several calls)."""
        self.items: list[Item] = []
        """Every output item, in output_index order."""
        self.audio_ms_sent = 0.0
        self.text_sent = ""
        self.usage: JSON | None = None
        self.task: asyncio.Task[None] | None = None
        self.first_audio_input_sample: int | None = None
        """The session's input position when the first audio delta went out."""
        self._cancel = asyncio.Event()
        self._part_open: Literal["audio", "text"] | None = None
        self._output_index: dict[str, int] = {}
        self._closed_ids: set[str] = set()
        self._clock = 0.0

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def reply_text(self) -> str:
        """The full reply text (or the calls' JSON arguments), sent or not."""
        reply = self.reply
        if isinstance(reply, mcp.McpFollowUp):
            reply = reply.call
        if isinstance(reply, McpCall):
            return reply.arguments_json
        calls = reply_calls(reply)
        if calls:
            return "".join(call.arguments_json for call in calls)
        assert isinstance(reply, str)
        return reply

    async def cancel(self, reason: str) -> None:
        """Stop streaming and wait until ``response.done`` (cancelled) has been sent."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self._cancel.set()
        if self.task is not None and self.task is not asyncio.current_task():
            await asyncio.wait({self.task})

    # --- streaming ----------------------------------------------------------------------------

    async def _wait(self, seconds: float) -> None:
        """Sleep, but wake up at once when cancelled."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._cancel.wait(), seconds)

    async def _until(self, event: asyncio.Event) -> None:
        """Wait until ``event`` is set, or the response is cancelled."""
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._cancel.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _pace(self, media_s: float) -> None:
        """Wait until ``media_s`` of output is due at the configured speed."""
        speed = self.session.config.speed
        if speed <= 0 or math.isinf(speed):
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        await self._wait(self._clock + media_s / speed - loop.time())

    async def stream(self) -> None:
        session = self.session
        try:
            await self._wait(session.faults.response_delay_s)
            hold = session.faults.hold_out_of_band
            if hold is not None and not self.in_conversation:
                await self._until(hold)
            self._clock = asyncio.get_running_loop().time()
            reply = self.reply
            calls = () if isinstance(reply, mcp.McpFollowUp) else reply_calls(reply)
            if not self.cancelled:
                if isinstance(reply, mcp.McpFollowUp):
                    await self._mcp_follow_up(reply)
                elif isinstance(reply, McpCall):
                    await self._mcp(reply)
                elif calls:
                    for call in calls:
                        await self._call(call)
                        if self.cancelled:
                            break
                elif isinstance(reply, str):
                    await self._say(reply)
            await self._finish()
        except SessionEnded:
            self.status = "failed"
        finally:
            self._release()

    def _release(self) -> None:
        """This response no longer runs: free the default conversation (or its OOB slot)."""
        session = self.session
        if session.active_response is self:
            session.active_response = None
        if self in session.out_of_band:
            session.out_of_band.remove(self)

    async def _open_item(self, item: Item) -> None:
        session = self.session
        item.response_id = self.id
        self._output_index[item.id] = len(self.items)
        self.item = item
        self.items.append(item)
        await session.emit(
            S.OUTPUT_ITEM_ADDED,
            response_id=self.id,
            output_index=self._output_index[item.id],
            item=item.to_wire(),
        )
        if self.in_conversation:
            previous = session.conversation.insert(item)
            await session.emit(S.ITEM_ADDED, previous_item_id=previous, item=item.to_wire())

    async def _close_item(self, item: Item) -> None:
        """``response.output_item.done`` (and ``conversation.item.done``) for one item."""
        session = self.session
        if item.id in self._closed_ids:
            return
        self._closed_ids.add(item.id)
        if item.status == "in_progress":
            item.status = "incomplete" if self.cancelled else "completed"
        await session.emit(
            S.OUTPUT_ITEM_DONE,
            response_id=self.id,
            output_index=self._output_index[item.id],
            item=item.to_wire(),
        )
        conversation = session.conversation
        if self.in_conversation and conversation.contains(item.id):
            index = conversation.ids.index(item.id)
            previous = conversation.items[index - 1].id if index else None
            await session.emit(S.ITEM_DONE, previous_item_id=previous, item=item.to_wire())

    async def _say(self, text: str) -> None:
        """A message in the response's modality: audio with its transcript, or text."""
        if "audio" in self.modalities:
            await self._speak(text)
        else:
            await self._write(text)

    async def _open_part(self, item: Item, kind: Literal["audio", "text"]) -> ContentPart:
        dialect = self.session.dialect
        if kind == "audio":
            part = ContentPart("output_audio" if dialect == "ga" else "audio", transcript="")
            wire: JSON = {"type": "audio", "transcript": ""}
        else:
            part = ContentPart("output_text" if dialect == "ga" else "text", text="")
            wire = {"type": "text", "text": ""}
        item.content.append(part)
        self._part_open = kind
        await self.session.emit(S.CONTENT_PART_ADDED, **self._where(item), part=wire)
        return part

    def _where(self, item: Item) -> JSON:
        return {
            "response_id": self.id,
            "item_id": item.id,
            "output_index": self._output_index[item.id],
            "content_index": 0,
        }

    async def _speak(self, text: str) -> None:
        session = self.session
        config = session.config
        item = Item(session.ids.new("item"), "message", role="assistant", status="in_progress")
        await self._open_item(item)
        part = await self._open_part(item, "audio")
        seconds = max(0.1, len(text) * config.ms_per_char / 1000.0)
        pcm = to_pcm16(speech_like(seconds, seed=len(session.responses)))
        chunk_bytes = max(2, config.audio_delta_ms * PCM_BYTES_PER_MS)
        total_ms = len(pcm) / PCM_BYTES_PER_MS
        said = ""
        for offset in range(0, len(pcm), chunk_bytes):
            await self._pace(offset / PCM_BYTES_PER_MS / 1000.0)
            if self.cancelled:
                return
            chunk = pcm[offset : offset + chunk_bytes]
            end_ms = (offset + len(chunk)) / PCM_BYTES_PER_MS
            upto = len(text) if end_ms >= total_ms else math.ceil(len(text) * end_ms / total_ms)
            if upto > len(said):
                delta = text[len(said) : upto]
                await session.emit(S.AUDIO_TRANSCRIPT_DELTA, **self._where(item), delta=delta)
                said = text[:upto]
                self.text_sent += delta
                part.transcript = said
            if self.first_audio_input_sample is None:
                self.first_audio_input_sample = session.input_samples
            await session.emit(
                S.AUDIO_DELTA, **self._where(item), delta=base64.b64encode(chunk).decode("ascii")
            )
            session.assistant_audio_sent = True
            self.audio_ms_sent += len(chunk) / PCM_BYTES_PER_MS
            part.audio_ms = end_ms

    async def _write(self, text: str) -> None:
        session = self.session
        item = Item(session.ids.new("item"), "message", role="assistant", status="in_progress")
        await self._open_item(item)
        part = await self._open_part(item, "text")
        words = text.split(" ")
        written = ""
        for index, word in enumerate(words):
            await self._pace(0.0)
            if self.cancelled:
                return
            delta = word if index == len(words) - 1 else word + " "
            await session.emit(S.TEXT_DELTA, **self._where(item), delta=delta)
            self.text_sent += delta
            written += delta
            part.text = written

    async def _call(self, call: ToolCall) -> None:
        session = self.session
        item = Item(
            session.ids.new("item"),
            "function_call",
            status="in_progress",
            call_id=session.ids.new("call"),
            name=call.name,
            arguments="",
        )
        await self._open_item(item)
        output_index = self._output_index[item.id]
        arguments = call.arguments_json
        for offset in range(0, len(arguments), ARGUMENT_DELTA_CHARS):
            await self._pace(0.0)
            if self.cancelled:
                return
            delta = arguments[offset : offset + ARGUMENT_DELTA_CHARS]
            await session.emit(
                S.FUNCTION_ARGUMENTS_DELTA,
                response_id=self.id,
                item_id=item.id,
                output_index=output_index,
                call_id=item.call_id,
                delta=delta,
            )
            self.text_sent += delta
            item.arguments = (item.arguments or "") + delta
        await session.emit(
            S.FUNCTION_ARGUMENTS_DONE,
            response_id=self.id,
            item_id=item.id,
            output_index=output_index,
            call_id=item.call_id,
            name=call.name,
            arguments=arguments,
        )

    # --- hosted MCP (see fake.mcp) ------------------------------------------------------------

    def _mcp_target(self, call: McpCall) -> tuple[mcp.McpServer | None, JSON | None]:
        """The server a call goes to and the tool it names (None when not offered)."""
        session = self.session
        if session.dialect != "ga":
            return None, None
        servers = mcp.servers(self.tools)
        if call.server_label is not None:
            servers = [s for s in servers if s.label == call.server_label]
        if not servers:
            return None, None
        server = servers[0]
        listed = session.mcp_tools.get(server.label)
        if listed is None:  # a response-level server nobody listed
            failed = server.list_error(session.config.mcp_unreachable) is not None
            listed = [] if failed else server.tools(session.config.mcp_tools)
        tool = next((t for t in listed if t.get("name") == call.name), None)
        return server, tool

    async def _mcp(self, call: McpCall) -> None:
        server, tool = self._mcp_target(call)
        if server is None or tool is None:
            await self._say(mcp.unavailable_speech(call))
            return
        if not server.needs_approval(tool):
            await self._mcp_call(call, server.label, None)
            return
        item = Item(
            self.session.ids.new("item"),
            ItemType.MCP_APPROVAL_REQUEST,
            server_label=server.label,
            name=call.name,
            arguments=call.arguments_json,
        )
        await self._open_item(item)
        await self._close_item(item)
        self.session.mcp_pending[item.id] = mcp.PendingApproval(call, server.label)

    async def _mcp_follow_up(self, follow_up: mcp.McpFollowUp) -> None:
        if follow_up.approved:
            await self._mcp_call(
                follow_up.call, follow_up.server_label, follow_up.approval_request_id
            )
        else:
            await self._say(mcp.refusal_speech(follow_up.call))

    async def _mcp_call(self, call: McpCall, label: str, approval_request_id: str | None) -> None:
        """The ``mcp_call`` item with its events, then a message saying the result."""
        session = self.session
        item = Item(
            session.ids.new("item"),
            ItemType.MCP_CALL,
            status="in_progress",
            server_label=label,
            name=call.name,
            arguments="",
            approval_request_id=approval_request_id,
        )
        await self._open_item(item)
        where = {"item_id": item.id, "output_index": self._output_index[item.id]}
        arguments = call.arguments_json
        for offset in range(0, len(arguments), ARGUMENT_DELTA_CHARS):
            await self._pace(0.0)
            if self.cancelled:
                return
            delta = arguments[offset : offset + ARGUMENT_DELTA_CHARS]
            await session.emit(
                S.MCP_CALL_ARGUMENTS_DELTA, response_id=self.id, **where, delta=delta
            )
            self.text_sent += delta
            item.arguments = (item.arguments or "") + delta
        await session.emit(
            S.MCP_CALL_ARGUMENTS_DONE, response_id=self.id, **where, arguments=arguments
        )
        await session.emit(S.MCP_CALL_IN_PROGRESS, **where)
        if call.error is not None:
            item.error = {"type": "tool_execution_error", "message": call.error}
            await session.emit(S.MCP_CALL_FAILED, **where)
        else:
            item.output = (
                call.output if call.output is not None else mcp.run_tool(call.name, call.arguments)
            )
            await session.emit(S.MCP_CALL_COMPLETED, **where)
        item.status = "completed"
        await self._close_item(item)
        if not self.cancelled:
            await self._say(mcp.result_speech(call, item.output, call.error))

    async def _finish(self) -> None:
        """The ``.done`` events, in the service's order, then ``response.done``."""
        session = self.session
        item = self.item
        if item is not None and item.id not in self._closed_ids:
            if self._part_open == "audio":
                part = item.content[0]
                await session.emit(S.AUDIO_DONE, **self._where(item))
                await session.emit(
                    S.AUDIO_TRANSCRIPT_DONE, **self._where(item), transcript=part.transcript or ""
                )
                await session.emit(
                    S.CONTENT_PART_DONE,
                    **self._where(item),
                    part={"type": "audio", "transcript": part.transcript or ""},
                )
            elif self._part_open == "text":
                part = item.content[0]
                await session.emit(S.TEXT_DONE, **self._where(item), text=part.text or "")
                await session.emit(
                    S.CONTENT_PART_DONE,
                    **self._where(item),
                    part={"type": "text", "text": part.text or ""},
                )
        for done in self.items:
            await self._close_item(done)
        self.status = "cancelled" if self.cancelled else "completed"
        self.usage = self._usage()
        self._release()
        await session.emit(S.RESPONSE_DONE, response=self.to_wire())
        if session.config.rate_limits:
            await session.emit(S.RATE_LIMITS_UPDATED, rate_limits=self._rate_limits())
        session.after_response(self, self._playback_end())

    def _playback_end(self) -> int:
        """Where the client's playback of this response ends, in session input samples:
        audio plays from its first delta for its length, and not before ``response.done``."""
        now = self.session.input_samples
        if self.first_audio_input_sample is None:
            return now
        played = self.first_audio_input_sample + round(self.audio_ms_sent * SAMPLES_PER_MS)
        return max(now, played)

    def _usage(self) -> JSON:
        rates = self.session.config.rates
        output_text = rates.text(self.text_sent)
        output_audio = rates.audio(self.audio_ms_sent, "assistant")
        window = self.input_tokens
        cached_text = min(self.cached_tokens, window.text)
        cached_audio = min(self.cached_tokens - cached_text, window.audio)
        cached_image = self.cached_tokens - cached_text - cached_audio
        input_details: JSON = {
            "text_tokens": window.text,
            "audio_tokens": window.audio,
            "cached_tokens": self.cached_tokens,
            "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio},
        }
        if window.image:
            input_details["image_tokens"] = window.image
            input_details["cached_tokens_details"]["image_tokens"] = cached_image
        return {
            "total_tokens": window.total + output_text + output_audio,
            "input_tokens": window.total,
            "output_tokens": output_text + output_audio,
            "input_token_details": input_details,
            "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
        }

    def _rate_limits(self) -> list[JSON]:
        used = self.usage["total_tokens"] if self.usage else 0
        return [
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {"name": "tokens", "limit": 400000, "remaining": 400000 - used, "reset_seconds": 0.5},
        ]

    def to_wire(self) -> JSON:
        session = self.session
        details: JSON | None = None
        if self.status == "cancelled":
            details = {"type": "cancelled", "reason": self.cancel_reason or "client_cancelled"}
        voice = session_config.voice(session.session, session.dialect)
        response: JSON = {
            "object": "realtime.response",
            "id": self.id,
            "status": self.status,
            "status_details": details,
            "output": [item.to_wire() for item in self.items],
            "conversation_id": session.conversation_id if self.in_conversation else None,
            "max_output_tokens": "inf",
            "usage": self.usage,
            "metadata": self.metadata,
        }
        if session.dialect == "ga":
            response["output_modalities"] = self.modalities
            response["audio"] = {
                "output": {"format": {"type": "audio/pcm", "rate": PCM_RATE}, "voice": voice}
            }
        else:
            response.update(
                modalities=self.modalities,
                voice=voice,
                output_audio_format="pcm16",
                temperature=0.8,
            )
        return response
