"""What the user gives the bot besides the microphone: typed lines, from stdin or from the
live console's own input line (raw keys)."""

from __future__ import annotations

import asyncio
import atexit
import codecs
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

TYPED_LINES_LIMIT = 256
TYPED_AHEAD = 8
"""Typed lines the session core holds before they are sent (shown at once); more wait here."""
MAX_LINE_CHARS = 2000


def stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdin
        return False


def stdin_lines() -> asyncio.Queue[str | None]:
    """Lines typed on stdin (None at its end), read by a daemon thread.

    A blocked read never holds up exit. While the queue is full the thread waits: typed lines
    are delayed, never dropped.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue(TYPED_LINES_LIMIT)

    def put(line: str | None) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(line), loop).result()

    def read() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the run is over
            for line in sys.stdin:  # one line as soon as it is typed, not at end of input
                put(line)
            put(None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return queue


class Keyboard:
    """The live console's own input line: keys read raw from the terminal.

    The terminal echoes nothing and keeps no line of its own (cbreak mode: Ctrl-C still
    interrupts), so nothing typed can tear the live display: the console draws the line being
    typed (``on_edit``). Enter hands the line over (``on_line``); Backspace and Ctrl-U edit;
    escape sequences (arrow keys) are ignored. With push-to-talk, the space bar on an empty
    line is the talk key (``on_talk``). A daemon thread blocks on the terminal and hands the
    bytes to the loop; `close` puts the terminal back as it was.
    """

    def __init__(
        self,
        on_line: Callable[[str], None],
        on_edit: Callable[[str], None],
        on_talk: Callable[[], None] | None = None,
        fd: int | None = None,
    ) -> None:
        self.on_line = on_line
        self.on_edit = on_edit
        self.on_talk = on_talk
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.buffer = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._escape = False
        self._saved: list[Any] | None = None

    def open(self) -> None:
        """Put the terminal in cbreak mode and start reading."""
        import termios
        import tty

        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd, termios.TCSANOW)
        atexit.register(self.close)
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, args=(loop,), name="keyboard", daemon=True).start()

    def close(self) -> None:
        """The terminal as it was (idempotent)."""
        saved, self._saved = self._saved, None
        if saved is not None:
            import termios

            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(OSError, RuntimeError):  # the terminal or the loop is gone
            while data := os.read(self.fd, 1024):
                loop.call_soon_threadsafe(self.feed, data)

    def feed(self, data: bytes) -> None:
        """Keys as the terminal sent them (on the loop)."""
        for char in self._decoder.decode(data):
            self._key(char)

    def _key(self, char: str) -> None:
        if self._escape:  # inside an escape sequence: it ends with a letter or ~
            self._escape = not (char.isalpha() or char == "~")
            return
        if char == "\x1b":
            self._escape = True
        elif char in "\r\n":
            line, self.buffer = self.buffer, ""
            self.on_edit("")
            self.on_line(line)
        elif char in "\x7f\b":
            self.buffer = self.buffer[:-1]
            self.on_edit(self.buffer)
        elif char == "\x15":  # Ctrl-U
            self.buffer = ""
            self.on_edit("")
        elif char == " " and not self.buffer and self.on_talk is not None:
            self.on_talk()
        elif char.isprintable() and len(self.buffer) < MAX_LINE_CHARS:
            self.buffer += char
            self.on_edit(self.buffer)
