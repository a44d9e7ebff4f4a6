"""The fake server's exceptions: a bad client request, and the end of a session."""

from __future__ import annotations

from realtime_voicebot.errors import VoicebotError


class RequestError(VoicebotError):
    """A client request the service would answer with an ``error`` event."""

    def __init__(
        self,
        code: str,
        message: str,
        param: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.error_type = error_type


class SessionEnded(VoicebotError):
    """The connection is gone (closed, dropped or expired): stop producing events."""
