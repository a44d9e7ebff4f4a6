"""JSON schemas of tool parameters from Python type hints, and a checker for arguments.

Only the subset of JSON schema that function tools use: scalar types, ``Literal`` enums,
``Optional[X]``, ``list[X]`` and ``Annotated[T, "description"]``.
"""

from __future__ import annotations

import inspect
import json
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

JSON = dict[str, Any]

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_JSON_SCALARS = (str, int, float, bool, type(None))


def schema_for(annotation: Any) -> JSON:
    """The JSON schema of a parameter type: str, int, float, bool, Literal, Optional, list[X].

    ``Annotated[T, "text"]`` adds ``text`` as the description. Raises TypeError otherwise.
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *meta = get_args(annotation)
        schema = schema_for(base)
        notes = [m for m in meta if isinstance(m, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    if origin is Literal:
        values = list(get_args(annotation))
        kinds = {_SCALARS.get(type(v)) for v in values}
        if None in kinds:
            raise TypeError(f"unsupported Literal values in {annotation!r}")
        schema = {"enum": values}
        if len(kinds) == 1:
            schema = {"type": kinds.pop(), "enum": values}
        return schema
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        others = [a for a in args if a is not type(None)]
        if len(others) != 1 or len(args) != 2:
            raise TypeError(f"unsupported union {annotation!r}: only Optional[X]")
        schema = schema_for(others[0])
        if isinstance(schema.get("type"), str):
            schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        return schema
    if origin is list:
        (item,) = get_args(annotation) or (None,)
        if item is None:
            raise TypeError("a list parameter needs an item type, e.g. list[str]")
        return {"type": "array", "items": schema_for(item)}
    raise TypeError(f"unsupported parameter type {annotation!r}")


def parameters_for(function: Callable[..., Any]) -> JSON:
    """The ``parameters`` schema of a function from its type hints; defaults make optional."""
    hints = get_type_hints(function, include_extras=True)
    properties: JSON = {}
    required: list[str] = []
    for param in inspect.signature(function).parameters.values():
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            raise TypeError(f"{function.__name__}: parameter {param.name} must be named")
        if param.name not in hints:
            raise TypeError(f"{function.__name__}: parameter {param.name} has no type hint")
        schema = schema_for(hints[param.name])
        if param.default is param.empty:
            required.append(param.name)
        elif isinstance(param.default, _JSON_SCALARS):
            schema["default"] = param.default
        properties[param.name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _type_matches(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return True  # a type this checker does not know: let the tool judge


def _json_kind(value: Any) -> str:
    for kind in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _type_matches(value, kind):
            return kind
    return type(value).__name__


def _same(a: Any, b: Any) -> bool:
    """JSON equality: True is not 1, but 1 is 1.0."""
    numbers = {"integer", "number"}
    return bool(a == b) and (
        _json_kind(a) == _json_kind(b) or {_json_kind(a), _json_kind(b)} <= numbers
    )


def schema_problems(value: Any, schema: JSON, where: str = "arguments") -> list[str]:
    """What is wrong with ``value`` under the subset of JSON schema tools use; [] when valid.

    Checks ``type`` (one or a list), ``enum``, object ``properties``/``required``/
    ``additionalProperties: false`` and array ``items``. Other keywords are ignored.
    """
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_type_matches(value, k) for k in kinds):
            return [f"{where} should be {' or '.join(kinds)}, got {_json_kind(value)}"]
    enum = schema.get("enum")
    if isinstance(enum, list) and not any(_same(value, e) for e in enum):
        return [f"{where} should be one of {', '.join(json.dumps(e) for e in enum)}"]
    problems: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                problems.append(f"missing required argument {name!r}")
        for name, item in value.items():
            if name in properties:
                problems += schema_problems(item, properties[name], f"argument {name!r}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"unexpected argument {name!r}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += schema_problems(item, schema["items"], f"{where}[{index}]")
    return problems
