"""A fake Chat Completions endpoint, for summarizers and benchmarks that must not need a network.

It answers ``POST /v1/chat/completions`` with a deterministic "summary" (the last words of
the prompt) after a configurable delay, or fails on purpose (HTTP 500, or no answer at all),
so the summarizer's timeout, retry and fallback paths run against a real HTTP server.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

ChatMode = Literal["ok", "error", "hang"]


@dataclass
class FakeChatConfig:
    delay_s: float = 0.0
    mode: ChatMode = "ok"
    summary_words: int = 60


@dataclass
class FakeChatServer:
    """Runs in a thread; `base_url` is what OPENAI_BASE_URL or `base_url=` takes."""

    config: FakeChatConfig = field(default_factory=FakeChatConfig)
    requests: list[dict[str, Any]] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)
    """`time.monotonic()` at which each request's body had arrived (benchmarks time stalls)."""
    _server: ThreadingHTTPServer | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeChatServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.request_times.append(time.monotonic())
                fake.requests.append(body)
                if fake.config.mode == "hang":
                    fake._stopped.wait(60)
                    return
                fake._stopped.wait(fake.config.delay_s)
                if fake.config.mode == "error" or not self.path.endswith("/chat/completions"):
                    self._reply(500, {"error": {"message": "fake failure", "type": "server"}})
                    return
                self._reply(200, fake._completion(body))

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        summary = " ".join(text.split()[-self.config.summary_words :])
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": summary},
                }
            ],
            "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": 60, "total_tokens": 0},
        }
