"""How the conversation is shown: plain lines (pipes, CI, JSON logs) or a live console.

The app calls a `ConversationView`; it never prints by itself.
"""

from __future__ import annotations

import sys
from typing import Protocol, TextIO


class ConversationView(Protocol):
    def user_said(self, text: str) -> None: ...
    def assistant_delta(self, item_id: str, text: str) -> None: ...
    def assistant_done(self, item_id: str, text: str, truncated: bool) -> None: ...
    def status(self, text: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def error(self, text: str) -> None: ...
    def close(self) -> None: ...


class PlainView:
    """Prints the conversation as it happens, one line a turn, streaming the reply's words."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._streaming: str | None = None

    def _end_stream(self) -> None:
        if self._streaming is not None:
            self.out.write("\n")
            self._streaming = None

    def user_said(self, text: str) -> None:
        self._end_stream()
        self.out.write(f"you: {text}\n")
        self.out.flush()

    def assistant_delta(self, item_id: str, text: str) -> None:
        if self._streaming != item_id:
            self._end_stream()
            self.out.write("bot: ")
            self._streaming = item_id
        self.out.write(text)
        self.out.flush()

    def assistant_done(self, item_id: str, text: str, truncated: bool) -> None:
        if self._streaming != item_id:
            self._end_stream()
            self.out.write(f"bot: {text}")
            self._streaming = item_id
        if truncated:
            self.out.write(" [interrupted]")
        self._end_stream()
        self.out.flush()

    def status(self, text: str) -> None:
        return

    def notice(self, text: str) -> None:
        self._end_stream()
        self.out.write(f"-- {text}\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self._end_stream()
        self.err.write(f"error: {text}\n")
        self.err.flush()

    def close(self) -> None:
        self._end_stream()
        self.out.flush()
