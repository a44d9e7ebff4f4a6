"""Files the bot writes about the conversation (transcript, metrics, recording): private.

Each is created ``0600`` in folders created ``0700``, and a symbolic link planted where the
file is to be written is refused (``O_NOFOLLOW``), never followed: someone who can write to
the folder cannot make the bot append the conversation to a file of their choice, or read
it. An existing file the path names (a regular file of the user, ``/dev/null``) is appended
to or overwritten as asked; its permissions are left as the user set them.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import IO, Literal

from realtime_voicebot.errors import VoicebotError

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700

WriteMode = Literal["a", "w", "ab", "wb"]


class PrivateFileError(VoicebotError, OSError):
    """A file that cannot be opened privately; the message names it and says why."""


def make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents ``0700``; existing folders stay as they are."""
    missing: list[Path] = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(path, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask


def open_private(path: Path | str, mode: WriteMode = "a", *, encoding: str = "utf-8") -> IO[str]:
    """``path`` opened for writing text (``a``: append, ``w``: truncate), created ``0600``.

    Raises `PrivateFileError` (an OSError) when the path is a symbolic link or a folder,
    and OSError for everything else the system refuses.
    """
    if "b" in mode:
        raise ValueError("open_private opens text; use open_private_binary")
    descriptor = _open_descriptor(Path(path), mode)
    return os.fdopen(descriptor, mode, encoding=encoding)


def open_private_binary(path: Path | str, mode: WriteMode = "wb") -> IO[bytes]:
    """Like `open_private`, for bytes (``ab`` or ``wb``)."""
    if "b" not in mode:
        raise ValueError("open_private_binary opens bytes; use open_private")
    descriptor = _open_descriptor(Path(path), mode)
    return os.fdopen(descriptor, mode)


def open_private_descriptor(path: Path | str, mode: WriteMode = "wb") -> int:
    """Like `open_private_binary`, as a raw descriptor (for ``os.pwrite``); close it yourself."""
    return _open_descriptor(Path(path), mode)


def write_private_text(path: Path | str, text: str, *, encoding: str = "utf-8") -> None:
    """Replace the contents of ``path`` with ``text`` (blocking: run it off the event loop)."""
    with open_private(path, "w", encoding=encoding) as file:
        file.write(text)


def _open_descriptor(path: Path, mode: WriteMode) -> int:
    make_private_dirs(path.parent)
    # O_NONBLOCK: a FIFO planted at the path fails at once (ENXIO) instead of hanging here.
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    flags |= os.O_APPEND if mode.startswith("a") else os.O_TRUNC
    try:
        descriptor = os.open(path, flags, PRIVATE_FILE_MODE)
    except OSError as exc:
        reason = _REFUSED.get(exc.errno or 0)
        if reason is not None:
            raise PrivateFileError(exc.errno, f"cannot write {path}: {reason}") from None
        raise
    os.set_blocking(descriptor, True)
    return descriptor


_REFUSED = {
    errno.ELOOP: "it is a symbolic link, which is never followed (give the real file's path)",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENXIO: "it is a pipe nobody reads",
}
