"""One root for the bot's exceptions, and `classify`: retry, or stop and tell the user.

Every exception the bot raises on purpose derives from `VoicebotError`. Those a user can act
on (`UserError` and its kin: a bad setting, a missing device, an unreadable file, a rejected
key) carry a one-line message saying what to do and are printed without a traceback. Anything
else reaching the top is a bug, and gets one.
"""

from __future__ import annotations

import ssl
from typing import Literal

Verdict = Literal["retry", "fatal"]


class VoicebotError(Exception):
    """Root of the bot's own exceptions."""


class UserError(VoicebotError):
    """A problem the user can fix; the message says how. Printed as one line."""


class FatalConnectionError(UserError):
    """A connection failure that retrying cannot fix (bad key, no quota, refused settings)."""


class SessionConfigError(FatalConnectionError):
    """The server rejected `session.update`."""


class Disconnected(VoicebotError):
    """The connection ended; ``close_code`` says how (None: no close frame, or no socket)."""

    def __init__(self, reason: str, close_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


FATAL_CLOSE_CODES = frozenset({1008})
"""Close codes after which a new connection would be refused again (policy violation).
Every other close, a frame over the size limit (1009) included, is a dropped connection:
retried with backoff within the reconnect budget."""


def classify(exc: BaseException) -> Verdict:
    """Whether the connection should be tried again after ``exc``."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    if isinstance(exc, UserError):
        return "fatal"
    if isinstance(exc, Disconnected):
        return "fatal" if exc.close_code in FATAL_CLOSE_CODES else "retry"
    if isinstance(exc, InvalidStatus):
        return "fatal" if exc.response.status_code in (401, 403, 404) else "retry"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "fatal"
    if isinstance(exc, ConnectionClosed | InvalidHandshake | OSError | TimeoutError):
        return "retry"
    return "fatal"
