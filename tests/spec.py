"""The `openai` package's pydantic unions, the protocol's machine-readable spec, as validators.

Use `validate_client(event, dialect)` / `validate_server(event, dialect)` on every event a
test sends or receives; they raise `pydantic.ValidationError` when the shape is wrong.
"""

from __future__ import annotations

from typing import Annotated, Any

from openai.types.beta.realtime import RealtimeClientEvent as BetaClientEvent
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import Field, TypeAdapter

_ADAPTERS: dict[tuple[str, str], TypeAdapter[Any]] = {
    ("client", "ga"): TypeAdapter(Annotated[RealtimeClientEvent, Field(discriminator="type")]),
    ("server", "ga"): TypeAdapter(Annotated[RealtimeServerEvent, Field(discriminator="type")]),
    ("client", "beta"): TypeAdapter(Annotated[BetaClientEvent, Field(discriminator="type")]),
    ("server", "beta"): TypeAdapter(Annotated[BetaServerEvent, Field(discriminator="type")]),
}


def validate_client(event: dict[str, Any], dialect: str = "ga") -> Any:
    return _ADAPTERS[("client", dialect)].validate_python(event)


def validate_server(event: dict[str, Any], dialect: str = "ga") -> Any:
    return _ADAPTERS[("server", dialect)].validate_python(event)
