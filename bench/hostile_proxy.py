"""A hostile Realtime server: a WebSocket proxy on loopback in front of the fake server (or
any server) that mutates, drops, repeats, reorders and injects the server's frames.

Client frames pass as they are. Each server frame goes through a `Mutator`, seeded and bounded
by a budget: at a given rate it picks one of `MUTATIONS` (random), unless a scripted `Rule`
says what to do with that frame (a reproduction). Frames it injects come from the
conversation itself (a corpus of the frames relayed so far). bench/fuzz.py drives the app
through it and checks what the app did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import string
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, WebSocketException

REORDER_WAIT_S = 0.2
"""A withheld frame goes out after the next one, or after this if none comes."""
CORPUS_SIZE = 512
CORPUS_FRAME_LIMIT = 64 * 1024
OVERSIZE_BYTES = 17 * 1024 * 1024
"""Larger than the client's 16 MiB frame limit."""
MAX_OVERSIZE = 2
MAX_DISCONNECTS = 8

MUTATIONS = {
    "drop": 6,
    "repeat": 4,
    "reorder": 4,
    "inject": 4,
    "retype": 3,
    "field": 12,
    "delete_field": 4,
    "truncate": 3,
    "binary": 1,
    "not_object": 1,
    "unknown_type": 2,
    "error_text": 3,
    "error_code": 2,
    "disconnect": 1,
    "go_silent": 1,
    "oversize": 1,
}
"""What the proxy can do to a server frame, with weights: drop it, send it twice, send it
after the next one, send an earlier frame first, change its type, give a field a value of
the wrong kind or delete it, cut it short, send it as bytes, send a JSON value that is no
object, invent a type (up to 1 MiB long), add an ``error`` with hostile text (escape
sequences, the API key, 100,000 characters) or a code that is no string, drop the
connection, go silent (pings still answered), or send a frame over the client's limit."""

_KEY_ALPHABET = string.ascii_letters + string.digits


def make_key() -> str:
    """A key shaped like OpenAI's, random each run."""
    return "sk-proj-" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(48))


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for n in range(depth):
        value = [value] if n % 2 else {"d": value}
    return value


def hostile_value(rng: random.Random) -> Any:
    """A value no protocol field expects."""
    makers: list[Callable[[], Any]] = [
        lambda: None,
        lambda: True,
        lambda: -1,
        lambda: 2**63 + 1,
        lambda: 10**40,
        lambda: -1e308,
        lambda: float("nan"),
        lambda: float("inf"),
        lambda: "",
        lambda: "x" * rng.choice([1, 1000, 65536]),
        list,
        dict,
        lambda: [1, "a", None, {"b": []}],
        lambda: _nested(rng.randint(20, 400)),
        lambda: "\x1b[2J\x1b[H\x1b]0;pwned\x07\x9b31mred",
        lambda: "!!!not base64!!!",
        lambda: "\ud800 lone surrogate",
        lambda: "A" * 4097 + "=",
    ]
    return rng.choice(makers)()


def _paths(value: Any, prefix: tuple[Any, ...] = (), limit: int = 200) -> Iterator[tuple[Any, ...]]:
    """Paths to the fields of a JSON value (not the root, not the event's own `type`)."""
    stack = [(value, prefix)]
    seen = 0
    while stack and seen < limit:
        node, path = stack.pop()
        children: list[tuple[Any, Any]] = []
        if isinstance(node, dict):
            children = list(node.items())
        elif isinstance(node, list):
            children = list(enumerate(node))
        for key, child in children:
            if path == () and key == "type":
                continue
            seen += 1
            yield (*path, key)
            stack.append((child, (*path, key)))


def set_path(value: Any, path: tuple[Any, ...], new: Any, *, delete: bool = False) -> None:
    for key in path[:-1]:
        value = value[key]
    if delete and isinstance(value, dict):
        del value[path[-1]]
    elif delete and isinstance(value, list):
        value.pop(path[-1])
    else:
        value[path[-1]] = new


class Disconnect:
    """Close the client's TCP connection without a close frame."""


DISCONNECT = Disconnect()
Out = str | bytes | Disconnect


@dataclass
class Rule:
    """A scripted mutation, for a reproduction: the ``nth`` frame of ``event_type`` in the
    run (counting from 1) is replaced by what ``rewrite(frame)`` returns."""

    event_type: str
    nth: int
    rewrite: Callable[[str | bytes], list[Out]]
    name: str = "rule"


@dataclass
class Connection:
    """What the proxy keeps per client connection."""

    silent: bool = False
    held: list[str | bytes] = field(default_factory=list)


@dataclass
class Mutator:
    """Decides what happens to each server frame; bounded by ``budget``.

    What happens to frame number N depends on ``seed`` and N alone (each frame draws from
    its own generator), so leaving some frames out (``only_frames``) does not change what the
    others get: a failing run can be narrowed down to the few mutations that matter.
    """

    seed: int
    budget: int
    rate: float
    key: str
    weights: dict[str, int] = field(default_factory=lambda: dict(MUTATIONS))
    targets: frozenset[str] | None = None
    """Event types whose frames may be mutated (None: all); narrows a reproduction."""
    rules: list[Rule] = field(default_factory=list)
    only_frames: frozenset[int] | None = None
    """Frame numbers that may be mutated at random (None: all); narrows a reproduction."""
    rng: random.Random = field(default_factory=random.Random)
    """This frame's generator (see the class docstring)."""
    seen: Counter[str] = field(default_factory=Counter)
    enabled: bool = True
    frames: int = 0
    swallowed: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    log: deque[tuple[int, str, str, str]] = field(default_factory=lambda: deque(maxlen=2000))
    """(frame number, mutation, event type, detail) of the latest mutations: what a
    reproduction needs."""
    _detail: str = ""
    corpus: deque[str] = field(default_factory=lambda: deque(maxlen=CORPUS_SIZE))
    known_types: set[str] = field(default_factory=set)

    @property
    def spent(self) -> int:
        return sum(self.counts.values())

    def _pick(self) -> str | None:
        if not self.enabled or self.spent >= self.budget or self.rng.random() >= self.rate:
            return None
        if self.only_frames is not None and self.frames not in self.only_frames:
            return None
        kinds, weights = zip(*self.weights.items(), strict=True)
        for _ in range(5):
            kind: str = self.rng.choices(kinds, weights)[0]
            if kind == "oversize" and self.counts[kind] >= MAX_OVERSIZE:
                continue
            if kind == "disconnect" and self.counts[kind] >= MAX_DISCONNECTS:
                continue
            if kind == "inject" and not self.corpus:
                continue
            return kind
        return None

    def _remember(self, frame: str | bytes) -> str | None:
        if not isinstance(frame, str):
            return None
        try:
            data = json.loads(frame)
        except ValueError:
            return None
        kind = data.get("type") if isinstance(data, dict) else None
        if isinstance(kind, str):
            self.known_types.add(kind)
            if len(frame) <= CORPUS_FRAME_LIMIT:
                self.corpus.append(frame)
            return kind
        return None

    def process(self, conn: Connection, frame: str | bytes) -> list[Out]:
        """What to send the client instead of ``frame`` (in order)."""
        self.frames += 1
        self.rng = random.Random(f"{self.seed}:{self.frames}")
        event_type = self._remember(frame) or "?"
        if conn.silent:
            self.swallowed += 1
            return []
        self.seen[event_type] += 1
        rule = next(
            (
                r
                for r in self.rules
                if r.event_type == event_type and r.nth == self.seen[event_type] and self.enabled
            ),
            None,
        )
        if rule is not None:
            self.counts[rule.name] += 1
            self.log.append((self.frames, rule.name, event_type, "scripted"))
            return rule.rewrite(frame) + self._release(conn)
        kind = None if self.targets and event_type not in self.targets else self._pick()
        self._detail = ""
        out: list[Out] = [frame] if kind is None else self._mutate(kind, conn, frame)
        if kind is not None:
            self.counts[kind] += 1
            self.log.append((self.frames, kind, event_type, self._detail))
        return out if kind == "reorder" else out + self._release(conn)

    @staticmethod
    def _release(conn: Connection) -> list[Out]:
        held, conn.held = conn.held, []
        return list(held)

    def _mutate(self, kind: str, conn: Connection, frame: str | bytes) -> list[Out]:
        rng = self.rng
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        if kind == "drop":
            return []
        if kind == "repeat":
            return [frame, frame]
        if kind == "reorder":
            conn.held.append(frame)
            return []
        if kind == "inject":
            injected = rng.choice(self.corpus)
            self._detail = injected[:200]
            return [injected, frame]
        if kind == "truncate":
            return [text[: rng.randint(0, max(0, len(text) - 1))]]
        if kind == "binary":
            return [text.encode()]
        if kind == "not_object":
            return [json.dumps(rng.choice([[1, 2], "text", None, 3.5, [{"type": "error"}]])), frame]
        if kind == "unknown_type":
            length = rng.choice([1, 100, 65536, 1024 * 1024])  # up to issue 13's 1 MiB
            name = f"response.{rng.getrandbits(64):x}" + "x" * length
            return [json.dumps({"type": name, "event_id": "evt_fuzz"}), frame]
        if kind in ("error_text", "error_code"):
            return [json.dumps(self._error_event(hostile_code=kind == "error_code")), frame]
        if kind == "disconnect":
            return [DISCONNECT]
        if kind == "go_silent":
            conn.silent = True
            return []
        if kind == "oversize":
            return [
                json.dumps({"type": "response.output_text.delta", "delta": "x" * OVERSIZE_BYTES})
            ]
        try:
            data = json.loads(text)
        except ValueError:
            return [frame]
        if not isinstance(data, dict):
            return [frame]
        if kind == "retype":
            choices = [*sorted(self.known_types), "response.invented", "error", ""]
            data["type"] = rng.choice(choices)
            self._detail = f"type -> {data['type']}"
            return [json.dumps(data)]
        paths = list(_paths(data))
        if not paths:
            return [frame]
        path = rng.choice(paths)
        delete = kind == "delete_field"
        value = None if delete else hostile_value(rng)
        set_path(data, path, value, delete=delete)
        shown = "deleted" if delete else json.dumps(value)[:60]
        self._detail = f"{'.'.join(map(str, path))} = {shown}"
        return [json.dumps(data)]

    def _error_event(self, *, hostile_code: bool) -> dict[str, Any]:
        rng = self.rng
        message = rng.choice(
            [
                f"Incorrect API key provided: {self.key}.",
                f"Bearer {self.key}\r\n was refused",
                "\x1b[2J\x1b]0;owned\x07 the server is \x9b5mangry\u202e",
                "m" * 100_000,
                ["not", "a", "string"],
                None,
            ]
        )
        codes: list[Any] = (
            [["a", "list"], {"an": "object"}, 42, None, True]
            if hostile_code
            else ["server_error", "c" * 100_000, "\x1b[31mred", f"code_{rng.getrandbits(64):x}"]
        )
        error = {"type": "server_error", "code": rng.choice(codes), "message": message}
        self._detail = json.dumps(error)[:120]
        return {"type": "error", "event_id": f"evt_{rng.getrandbits(32):08x}", "error": error}


class HostileProxy:
    """A WebSocket proxy on loopback: client frames pass as they are; server frames go
    through the `Mutator`."""

    def __init__(self, upstream: str, mutator: Mutator) -> None:
        self.upstream = upstream.rstrip("/")
        self.mutator = mutator
        self.connections = 0
        self._server: Server | None = None

    async def __aenter__(self) -> HostileProxy:
        self._server = await serve(self._handle, "127.0.0.1", 0, max_size=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1"

    async def _handle(self, client: ServerConnection) -> None:
        self.connections += 1
        request = client.request
        assert request is not None
        wanted = ("authorization", "api-key", "openai-beta")
        headers = [(k, v) for k, v in request.headers.raw_items() if k.lower() in wanted]
        try:
            async with connect(
                self.upstream + request.path, additional_headers=headers, max_size=None
            ) as server:
                pumps = [
                    asyncio.create_task(self._client_to_server(client, server)),
                    asyncio.create_task(self._server_to_client(server, client)),
                ]
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, WebSocketException):
            pass
        with contextlib.suppress(Exception):
            await client.close()

    async def _client_to_server(self, client: ServerConnection, server: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in client:
                await server.send(frame)

    async def _server_to_client(self, server: Any, client: ServerConnection) -> None:
        conn = Connection()
        flusher: asyncio.Task[None] | None = None

        async def flush_held() -> None:
            await asyncio.sleep(REORDER_WAIT_S)
            held, conn.held = conn.held, []
            for frame in held:
                await client.send(frame)

        with contextlib.suppress(ConnectionClosed):
            async for frame in server:
                for out in self.mutator.process(conn, frame):
                    if isinstance(out, Disconnect):
                        client.transport.abort()  # at once, whatever is still buffered
                        return
                    await client.send(out)
                if conn.held and (flusher is None or flusher.done()):
                    flusher = asyncio.create_task(flush_held())
        if flusher is not None:
            flusher.cancel()
