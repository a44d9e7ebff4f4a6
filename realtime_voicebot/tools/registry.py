"""Tools the model may call, and the registry of one session's tools."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

from realtime_voicebot.errors import VoicebotError
from realtime_voicebot.tools.schema import JSON, parameters_for, schema_problems

ToolFunction = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=ToolFunction)

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolError(VoicebotError):
    """A failure whose message is meant for the model as is (e.g. an unknown time zone)."""


class ToolTimeout(ToolError):
    """A tool gave up waiting on something under its own deadline (counted as a timeout)."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: its name, description, JSON-schema parameters, and code."""

    name: str
    description: str
    parameters: JSON
    function: ToolFunction

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"tool name {self.name!r} must match {_NAME.pattern}")
        if not inspect.iscoroutinefunction(self.function):
            raise TypeError(f"tool {self.name}: the function must be async")
        if self.parameters.get("type") != "object":
            raise ValueError(f"tool {self.name}: parameters must be an object schema")

    @classmethod
    def from_function(
        cls,
        function: ToolFunction,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: JSON | None = None,
    ) -> Tool:
        """A tool from an async function: name, docstring and type hints unless given."""
        tool_name = name or function.__name__
        if description is None:
            doc = inspect.getdoc(function) or ""
            description = " ".join(doc.split("\n\n", 1)[0].split())
        if not description:
            raise ValueError(f"tool {tool_name} needs a description (a docstring or description=)")
        schema = parameters if parameters is not None else parameters_for(function)
        return cls(tool_name, description, schema, function)

    def spec(self) -> JSON:
        """The tool as ``session.tools`` takes it, in both dialects."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }

    def argument_problems(self, arguments: JSON) -> list[str]:
        """Schema mismatches, then what the Python signature would refuse; [] when callable."""
        problems = schema_problems(arguments, self.parameters)
        if problems:
            return problems
        try:
            inspect.signature(self.function).bind(**arguments)
        except TypeError as exc:
            return [str(exc)]
        return []


class ToolSource(Protocol):
    """Tools that change while the bot runs (an MCP server's): asked for at every lookup."""

    def tools(self) -> Sequence[Tool]: ...


class ToolRegistry:
    """The tools of a session by name: its own in registration order, then its sources'.

    A source (`add_source`) is consulted at every lookup, so a tool list that changes (an MCP
    server's) is seen by the next call and the next ``specs()``. A name already taken by an
    earlier tool is skipped: the first one wins.
    """

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._sources: list[ToolSource] = []

    @overload
    def register(self, function: F) -> F: ...

    @overload
    def register(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: JSON | None = None,
    ) -> Callable[[F], F]: ...

    def register(
        self,
        function: ToolFunction | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: JSON | None = None,
    ) -> Any:
        """Register an async function as a tool: ``@registry.register`` or with options.

        The schema comes from the type hints and the description from the docstring unless
        ``parameters`` / ``description`` are given. Returns the function unchanged.
        """

        def add(fn: ToolFunction) -> ToolFunction:
            self.add(
                Tool.from_function(fn, name=name, description=description, parameters=parameters)
            )
            return fn

        return add(function) if function is not None else add

    def add(self, tool: Tool) -> Tool:
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def add_source(self, source: ToolSource) -> None:
        """Consult ``source.tools()`` at every lookup, after the registered tools."""
        self._sources.append(source)

    def _all(self) -> dict[str, Tool]:
        if not self._sources:
            return self._tools
        merged = dict(self._tools)
        for source in self._sources:
            for tool in source.tools():
                merged.setdefault(tool.name, tool)
        return merged

    def get(self, name: str) -> Tool | None:
        return self._all().get(name)

    def names(self) -> list[str]:
        return list(self._all())

    def specs(self) -> list[JSON]:
        """Every tool in the ``session.update`` shape: pass as ``session_update(tools=...)``.

        Ask again after a source's tools changed: the list is built at each call.
        """
        return [tool.spec() for tool in self._all().values()]

    def __contains__(self, name: object) -> bool:
        return name in self._all()

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._all().values()))
