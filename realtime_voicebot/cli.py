"""The `voicebot` command line.

Heavy modules (openai, numpy, sounddevice, websockets) are imported inside the commands
that need them, so that `voicebot --help` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from realtime_voicebot import __version__
from realtime_voicebot.cli_names import flag_for

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="voicebot",
    help="A terminal voice assistant for long conversations with the OpenAI Realtime API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

SETTINGS_PANEL = "Settings (also VOICEBOT_* environment variables)"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"voicebot {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
) -> None:
    """A terminal voice assistant for long conversations with the OpenAI Realtime API."""


def settings_options(func: F) -> F:
    """Add one CLI option per non-secret setting and pass the given ones as ``overrides``.

    Values stay strings here; pydantic validates them exactly as it validates the
    environment, so `--summary-threshold -5` fails with the same message as
    `VOICEBOT_SUMMARY_THRESHOLD=-5`.
    """
    from realtime_voicebot.config import SECRET_FIELDS, Settings

    own = [p for p in inspect.signature(func).parameters.values() if p.name != "overrides"]
    own_names = {p.name for p in own}
    added: list[inspect.Parameter] = []
    for name, field in Settings.model_fields.items():
        if name in SECRET_FIELDS or name in own_names:
            continue
        flag = flag_for(name)
        if field.annotation is bool:
            option = typer.Option(
                None,
                f"{flag}/--no-{flag[2:]}",
                help=field.description,
                rich_help_panel=SETTINGS_PANEL,
                show_default=False,
            )
            annotation: Any = bool | None
        else:
            option = typer.Option(
                None,
                flag,
                help=field.description,
                rich_help_panel=SETTINGS_PANEL,
                show_default=False,
                metavar=metavar(field.annotation),
            )
            annotation = str | None
        added.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            )
        )
    setting_names = {p.name for p in added}

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        overrides = {
            k: kwargs.pop(k) for k in list(kwargs) if k in setting_names and kwargs[k] is not None
        }
        for k in setting_names:
            kwargs.pop(k, None)
        return func(overrides=overrides, **kwargs)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper  # type: ignore[return-value]


def metavar(annotation: Any) -> str:
    """A short placeholder for an option's value: choices for a Literal, else its kind."""
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    inner = args[0]
    if typing.get_origin(inner) is typing.Literal:
        return "|".join(str(choice) for choice in typing.get_args(inner))
    return {int: "INT", float: "NUM"}.get(inner, "PATH" if "Path" in str(inner) else "TEXT")


def load_or_exit(overrides: dict[str, Any]) -> Any:
    """Settings from overrides and the environment, or a one-line error per problem and exit 2."""
    from realtime_voicebot.config import SettingsError, load_settings

    try:
        return load_settings(overrides)
    except SettingsError as exc:
        for line in str(exc).splitlines():
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from None


@config_app.command("show")
@settings_options
def config_show(
    overrides: dict[str, Any],
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show the effective settings, secrets masked, and where each value came from."""
    from realtime_voicebot.config import SECRET_FIELDS, value_sources

    settings = load_or_exit(overrides)
    sources = value_sources(overrides)
    rows: list[tuple[str, str, str]] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name in SECRET_FIELDS:
            shown = "(not set)" if value is None else "********"
        else:
            shown = "" if value is None else str(value)
        rows.append((name, shown, sources[name]))
    if as_json:
        typer.echo(json.dumps({n: {"value": v, "source": s} for n, v, s in rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="voicebot settings", show_lines=False)
    table.add_column("setting", style="bold")
    table.add_column("value", overflow="fold")
    table.add_column("source", style="dim")
    for row in rows:
        table.add_row(*row)
    Console(width=max(100, Console().width)).print(table)


def main() -> None:
    """Entry point of the `voicebot` script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
