"""The user's own Python functions as tools: ``@tool``, ``--tools-module`` and entry points.

A tools module is a plain Python file (or an importable module) whose functions are marked
with ``@tool``::

    from realtime_voicebot import tool

    @tool
    def add_note(text: str, tags: list[str] | None = None) -> str:
        \"\"\"Save a note for later.\"\"\"
        ...

The schema comes from the type hints and the description from the docstring, as for the
built-ins (`realtime_voicebot.tools.schema`). Async functions run on the event loop; plain
ones run in a thread of their own (a daemon thread: a function that never returns cannot
hold up the exit), at most ``MAX_THREADS`` at a time. Results become a string for the model
(JSON unless already a string), cut at ``max_output_chars``.

An installed package adds tools with an entry point in the ``realtime_voicebot.tools`` group
naming a module (its ``@tool`` functions), a function, or a list of functions::

    [project.entry-points."realtime_voicebot.tools"]
    weather = "my_package.voice_tools"
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, overload

import structlog

from realtime_voicebot.errors import UserError
from realtime_voicebot.tools.registry import Tool, ToolError
from realtime_voicebot.tools.schema import parameters_for

log = structlog.get_logger(component="tools")

ENTRY_POINT_GROUP = "realtime_voicebot.tools"
MAX_THREADS = 8
"""Sync tool calls running at once; more are refused until one returns."""
DEFAULT_MAX_OUTPUT_CHARS = 16000
_MARK = "__voicebot_tool__"

F = TypeVar("F", bound=Callable[..., Any])


class ToolLoadError(UserError):
    """A tools module that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True, slots=True)
class ToolMark:
    """What ``@tool`` records on a function."""

    name: str | None = None
    description: str | None = None


@overload
def tool(function: F) -> F: ...


@overload
def tool(*, name: str | None = None, description: str | None = None) -> Callable[[F], F]: ...


def tool(
    function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Any:
    """Mark a function (sync or async) as a tool the model may call: ``@tool`` or
    ``@tool(name=..., description=...)``. The function itself is returned unchanged."""

    def mark(fn: F) -> F:
        setattr(fn, _MARK, ToolMark(name, description))
        return fn

    return mark(function) if function is not None else mark


def is_tool(obj: object) -> bool:
    return isinstance(getattr(obj, _MARK, None), ToolMark)


# --- running sync functions ----------------------------------------------------------------


@dataclass
class SyncToolThreads:
    """Threads of sync tools: how many run now (bounded), started, refused."""

    max_threads: int = MAX_THREADS
    running: int = 0
    started: int = 0
    refused: int = 0

    async def run(self, function: Callable[[], str]) -> str:
        """``function()`` in a daemon thread; its result or exception comes back here."""
        if self.running >= self.max_threads:
            self.refused += 1
            raise ToolError(f"{self.running} earlier tool calls are still running; try again later")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        context = contextvars.copy_context()

        def settle(result: str | None, error: BaseException | None) -> None:
            self.running -= 1
            if future.done():  # the caller timed out or was cancelled
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result or "")

        def work() -> None:
            result: str | None = None
            error: BaseException | None = None
            try:
                result = context.run(function)
            except BaseException as exc:  # handed back to the loop, raised there
                error = exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(settle, result, error)

        self.running += 1
        self.started += 1
        try:
            threading.Thread(target=work, name="voicebot-tool", daemon=True).start()
        except BaseException:
            self.running -= 1
            raise
        return await future

    def snapshot(self) -> dict[str, int]:
        return {"running": self.running, "started": self.started, "refused": self.refused}


sync_tool_threads = SyncToolThreads()


def to_output(result: Any, max_chars: int) -> str:
    """What the model gets: the string, or the result as JSON; cut at ``max_chars``."""
    if isinstance(result, str):
        text = result
    else:
        try:
            text = json.dumps(result, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            raise ToolError(
                f"the tool returned a {type(result).__name__}, which is not JSON"
            ) from None
    if len(text) > max_chars:
        text = f"{text[:max_chars]}\n[truncated: {len(text) - max_chars} more characters]"
    return text


def user_tool(
    function: Callable[..., Any],
    *,
    where: str,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    threads: SyncToolThreads | None = None,
) -> Tool:
    """A `Tool` from a plain function, sync or async, ``@tool``-marked or not.

    ``where`` names the file or package in the one-line `ToolLoadError`.
    """
    mark = getattr(function, _MARK, None)
    mark = mark if isinstance(mark, ToolMark) else ToolMark()
    label = getattr(function, "__name__", repr(function))
    if not inspect.isfunction(function) and not inspect.ismethod(function):
        raise ToolLoadError(f"{where}: {label} is not a function")
    runner = threads or sync_tool_threads
    try:
        parameters = parameters_for(function)
    except (TypeError, NameError) as exc:
        raise ToolLoadError(f"{where}: function {label}: {exc}") from None

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def call(**arguments: Any) -> str:
            return to_output(await function(**arguments), max_output_chars)

    else:

        @functools.wraps(function)
        async def call(**arguments: Any) -> str:
            return await runner.run(lambda: to_output(function(**arguments), max_output_chars))

    try:
        return Tool.from_function(
            call, name=mark.name or label, description=mark.description, parameters=parameters
        )
    except (TypeError, ValueError) as exc:
        raise ToolLoadError(f"{where}: function {label}: {exc}") from None


def marked_functions(module: ModuleType) -> list[Callable[..., Any]]:
    """The ``@tool`` functions of a module, in the order they are defined, once each."""
    seen: set[int] = set()
    found = []
    for value in vars(module).values():
        if is_tool(value) and id(value) not in seen:
            seen.add(id(value))
            found.append(value)
    return found


# --- loading modules -----------------------------------------------------------------------


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _failure(where: str, path: str | None, exc: BaseException) -> ToolLoadError:
    """``cannot load tools module WHERE: line N: NameError: ...`` (the line in that file)."""
    place = ""
    if isinstance(exc, SyntaxError) and exc.lineno:
        place = f"line {exc.lineno}: "
        message = f"SyntaxError: {exc.msg}"
    else:
        frames = [
            frame
            for frame in traceback.extract_tb(exc.__traceback__)
            if path and Path(frame.filename) == Path(path)
        ]
        if frames:
            place = f"line {frames[-1].lineno}: "
        detail = _one_line(str(exc))
        message = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return ToolLoadError(_one_line(f"cannot load tools module {where}: {place}{message}", 400))


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def import_tools_module(spec: str) -> tuple[ModuleType, str]:
    """Import a file path or a module name; the module and how to name it in messages.

    Reads and runs files: call it before the event loop runs or in a thread.
    """
    if _looks_like_path(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ToolLoadError(f"no tools module at {spec}: check the path")
        resolved = path.resolve()
        stem = re.sub(r"\W", "_", path.stem)
        digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
        name = f"voicebot_tools_{stem}_{digest}"
        module_spec = importlib.util.spec_from_file_location(name, resolved)
        if module_spec is None or module_spec.loader is None:
            raise ToolLoadError(f"cannot load tools module {spec}: not a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            sys.modules.pop(name, None)
            raise _failure(spec, str(resolved), exc) from None
        return module, spec
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", spec):
        raise ToolLoadError(
            f"{spec!r} is neither a .py file nor a module name: give a path like tools.py "
            "or a module like my_package.tools"
        )
    try:
        return importlib.import_module(spec), spec
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise ToolLoadError(
                f"no module named {spec}: give a file path (my_tools.py) or an importable "
                "module name"
            ) from None
        origin = _origin(spec)
        raise _failure(f"{spec} ({origin})" if origin else spec, origin, exc) from None
    except (Exception, SystemExit) as exc:
        origin = _origin(spec)
        raise _failure(f"{spec} ({origin})" if origin else spec, origin, exc) from None


def _origin(module: str) -> str | None:
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return found.origin if found is not None else None


def load_tools_module(spec: str, *, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> list[Tool]:
    """The ``@tool`` functions of one ``--tools-module`` as tools. Raises ToolLoadError."""
    module, where = import_tools_module(spec)
    functions = marked_functions(module)
    if not functions:
        log.warning("tools_module_without_tools", module=where, hint="mark functions with @tool")
    return [user_tool(fn, where=where, max_output_chars=max_output_chars) for fn in functions]


# --- entry points ---------------------------------------------------------------------------


@dataclass
class EntryPointTools:
    """Tools from installed packages, and one line per entry point that could not be used."""

    tools: list[Tool] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _entry_point_label(entry_point: EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    package = getattr(dist, "name", None)
    return f"{package} ({entry_point.name})" if package else entry_point.name


def tools_from_entry_points(
    entry_points: Iterable[EntryPoint] | None = None,
    *,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> EntryPointTools:
    """Tools of the ``realtime_voicebot.tools`` entry points: a module (its ``@tool``
    functions), a function or a list of functions each. A broken one is skipped with a line.
    """
    if entry_points is None:
        from importlib.metadata import entry_points as installed

        entry_points = installed(group=ENTRY_POINT_GROUP)
    found = EntryPointTools()
    for entry_point in entry_points:
        label = _entry_point_label(entry_point)
        try:
            target = entry_point.load()
            if isinstance(target, ModuleType):
                functions = marked_functions(target)
            elif isinstance(target, list | tuple):
                functions = list(target)
            else:
                functions = [target]
            tools = [
                item
                if isinstance(item, Tool)
                else user_tool(item, where=f"package {label}", max_output_chars=max_output_chars)
                for item in functions
            ]
        except ToolLoadError as exc:
            found.problems.append(f"tools of {exc}; skipped")
            continue
        except (Exception, SystemExit) as exc:
            detail = _one_line(f"{type(exc).__name__}: {exc}")
            found.problems.append(f"tools of package {label} not loaded: {detail}")
            continue
        found.tools += tools
    return found
