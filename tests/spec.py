"""The `openai` package's pydantic unions, the protocol's machine-readable spec, as validators.

Use `validate_client(event, dialect)` / `validate_server(event, dialect)` on every event a
test sends or receives; they raise `pydantic.ValidationError` when the shape is wrong.
"""

from __future__ import annotations

from typing import Annotated, Any

from openai.types.beta.realtime import RealtimeClientEvent as BetaClientEvent
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import (
    RealtimeClientEvent,
    RealtimeServerEvent,
    ResponseCreateEventWithReferencesParam,
)
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


_GA_RESPONSE_CREATE_WITH_REFERENCES: TypeAdapter[Any] = TypeAdapter(
    ResponseCreateEventWithReferencesParam
)


def validate_ga_response_create_with_references(event: dict[str, Any]) -> Any:
    """A GA ``response.create`` whose ``input`` holds ``item_reference`` entries.

    The SDK's pydantic union has no item reference in ``response.input``; its request
    TypedDict does. The TypedDict validates iterables lazily, so the input is walked here.
    """
    validated = _GA_RESPONSE_CREATE_WITH_REFERENCES.validate_python(event)
    response = validated.get("response") or {}
    if "input" in response:
        response["input"] = list(response["input"])
    return validated
