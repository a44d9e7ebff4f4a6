"""The baseline: a straight-line Realtime voice agent in the style of the tutorial.

Microphone -> WebSocket; the assistant's audio is collected and played once the reply is
complete; past a token threshold the conversation is summarized inside the receive loop
(a blocking Chat Completions call), the summary inserted at the root, and the older items
deleted. It is what realtime_voicebot is measured against, so it is kept honest: it does
what the tutorial does, nothing less.

    python original/realtime_agent_cli.py --url ws://127.0.0.1:8765/v1 --api-key sk-test
"""

import argparse
import asyncio
import base64
import json
import os

import numpy as np
import openai
import sounddevice as sd
import websockets

SAMPLE_RATE = 24000
CHUNK = 480  # 20 ms
SUMMARY_THRESHOLD = 2000
KEEP_LAST_TURNS = 2


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="wss://api.openai.com/v1")
    parser.add_argument("--model", default="gpt-realtime")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", ""))
    parser.add_argument("--summary-base-url", default=None)
    parser.add_argument("--summary-model", default="gpt-4o-mini")
    parser.add_argument("--threshold", type=int, default=SUMMARY_THRESHOLD)
    parser.add_argument("--max-turns", type=int, default=0)
    return parser.parse_args()


def summarize(client, model, texts):
    """Blocking call, exactly like the tutorial: the receive loop waits for it."""
    prompt = "Summarize this conversation in French, in a few sentences:\n" + "\n".join(texts)
    result = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    return result.choices[0].message.content


async def main():
    args = parse_args()
    summary_client = openai.OpenAI(
        api_key=args.api_key or "none", base_url=args.summary_base_url, max_retries=0
    )
    url = f"{args.url}/realtime?model={args.model}"
    headers = {"Authorization": f"Bearer {args.api_key}"}
    ws = await websockets.connect(url, additional_headers=headers, max_size=None)
    await ws.send(
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "You are a helpful voice assistant.",
                    "output_modalities": ["audio"],
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
                            "transcription": {"model": "gpt-4o-mini-transcribe"},
                            "turn_detection": {"type": "server_vad"},
                        },
                        "output": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}},
                    },
                },
            }
        )
    )

    loop = asyncio.get_running_loop()
    mic_queue = asyncio.Queue()

    def mic_callback(indata, frames, time_info, status):
        loop.call_soon_threadsafe(mic_queue.put_nowait, bytes(indata))

    mic = sd.RawInputStream(
        samplerate=SAMPLE_RATE, channels=1, dtype="int16", blocksize=CHUNK, callback=mic_callback
    )
    mic.start()

    async def send_mic():
        while True:
            block = await mic_queue.get()
            audio = base64.b64encode(block).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))

    sender = asyncio.create_task(send_mic())

    items = []  # (item_id, role, text) in the order they were created
    audio_chunks = []
    turns = 0
    async for message in ws:
        event = json.loads(message)
        kind = event["type"]
        if kind in ("conversation.item.created", "conversation.item.added"):
            item = event["item"]
            if item["id"] not in [i[0] for i in items]:
                items.append([item["id"], item.get("role", ""), ""])
        elif kind == "conversation.item.input_audio_transcription.completed":
            for entry in items:
                if entry[0] == event["item_id"]:
                    entry[2] = event["transcript"]
            print("user:", event["transcript"])
        elif kind in ("response.output_audio.delta", "response.audio.delta"):
            audio_chunks.append(base64.b64decode(event["delta"]))
        elif kind in ("response.output_audio_transcript.done", "response.audio_transcript.done"):
            for entry in items:
                if entry[0] == event["item_id"]:
                    entry[2] = event["transcript"]
            print("assistant:", event["transcript"])
        elif kind == "response.done":
            if audio_chunks:
                samples = np.frombuffer(b"".join(audio_chunks), dtype=np.int16)
                sd.play(samples, SAMPLE_RATE)
                audio_chunks = []
            turns += 1
            usage = event["response"].get("usage") or {}
            if usage.get("total_tokens", 0) > args.threshold and len(items) > KEEP_LAST_TURNS:
                old = items[:-KEEP_LAST_TURNS]
                summary = summarize(summary_client, args.summary_model, [i[2] for i in old])
                await ws.send(
                    json.dumps(
                        {
                            "type": "conversation.item.create",
                            "previous_item_id": "root",
                            "item": {
                                "type": "message",
                                "role": "system",
                                "content": [{"type": "input_text", "text": summary}],
                            },
                        }
                    )
                )
                for entry in old:
                    await ws.send(
                        json.dumps({"type": "conversation.item.delete", "item_id": entry[0]})
                    )
                items = items[-KEEP_LAST_TURNS:]
                print("summarized", len(old), "items")
            if args.max_turns and turns >= args.max_turns:
                break
        elif kind == "error":
            print("error:", event["error"].get("message"))

    sender.cancel()
    mic.stop()
    sd.wait()
    await ws.close()


if __name__ == "__main__":
    asyncio.run(main())
