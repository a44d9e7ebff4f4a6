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
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import typer

from realtime_voicebot import __version__
from realtime_voicebot.cli_names import flag_for

if TYPE_CHECKING:
    from realtime_voicebot.ui import ConversationView

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


@functools.cache
def _setting_options() -> list[dict[str, str]]:
    path = Path(__file__).with_name("cli_settings.json")
    options: list[dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
    return options


def settings_options(func: F) -> F:
    """Add one CLI option per non-secret setting and pass the given ones as ``overrides``.

    The options come from the generated `cli_settings.json`, not from `Settings`, so that
    building the CLI (and `--help`) does not import pydantic. Values stay strings here;
    pydantic validates them exactly as it validates the environment, so
    `--summary-threshold -5` fails with the same message as `VOICEBOT_SUMMARY_THRESHOLD=-5`.
    """
    own = [p for p in inspect.signature(func).parameters.values() if p.name != "overrides"]
    own_names = {p.name for p in own}
    added: list[inspect.Parameter] = []
    for entry in _setting_options():
        name, kind, meta, description = (
            entry["name"],
            entry["kind"],
            entry["metavar"],
            entry["help"],
        )
        if name in own_names:
            continue
        flag = flag_for(name)
        annotation: Any = str | None
        if kind == "repeatable":
            option = typer.Option(
                None,
                flag,
                help=f"{description} Repeatable.",
                rich_help_panel=SETTINGS_PANEL,
                show_default=False,
                metavar=meta,
            )
            annotation = list[str] | None
        elif kind == "bool":
            option = typer.Option(
                None,
                f"{flag}/--no-{flag[2:]}",
                help=description,
                rich_help_panel=SETTINGS_PANEL,
                show_default=False,
            )
            annotation = bool | None
        else:
            option = typer.Option(
                None,
                flag,
                help=description,
                rich_help_panel=SETTINGS_PANEL,
                show_default=False,
                metavar=meta,
            )
        added.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            )
        )
    setting_names = {p.name for p in added}

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        overrides = {
            k: kwargs.pop(k)
            for k in list(kwargs)
            if k in setting_names and kwargs[k] is not None and kwargs[k] != []
        }
        for k in setting_names:
            kwargs.pop(k, None)
        return func(overrides=overrides, **kwargs)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper  # type: ignore[return-value]


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
    """Show the effective settings, secrets masked, where each value came from, and where the
    conversation goes (the realtime endpoint and the summarizer)."""
    from realtime_voicebot.config import env_file_redirects, shown_value, value_sources
    from realtime_voicebot.transport.endpoint import (
        EndpointError,
        realtime_url,
        summarizer_destination,
    )

    settings = load_or_exit(overrides)
    sources = value_sources(overrides)
    try:
        realtime = realtime_url(settings)
    except EndpointError as exc:
        realtime = f"nowhere yet: {exc}"
    from realtime_voicebot.audio.echo import planned_echo_status

    destinations = {
        "realtime endpoint": realtime,
        "summarizer": summarizer_destination(settings),
        "echo handling": planned_echo_status(settings.echo).removeprefix("echo handling: "),
    }
    notices = env_file_redirects(settings, sources)
    rows: list[tuple[str, str, str]] = []
    for name in type(settings).model_fields:
        rows.append((name, shown_value(name, getattr(settings, name)), sources[name]))
    if as_json:
        values = {n: {"value": v, "source": s} for n, v, s in rows}
        data = {**values, "destinations": destinations, "notices": notices}
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="voicebot settings", show_lines=False)
    table.add_column("setting", style="bold")
    table.add_column("value", overflow="fold")
    table.add_column("source", style="dim")
    for row in rows:
        table.add_row(*row)
    console = Console(width=max(100, Console().width))
    console.print(table)
    for what, where in destinations.items():
        console.print(f"{what}: {where}", markup=False, highlight=False, soft_wrap=True)
    for notice in notices:
        console.print(f"note: {notice}", markup=False, highlight=False, soft_wrap=True)


devices_app = typer.Typer(help="Audio devices.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")


@devices_app.command("list")
def devices_list() -> None:
    """List audio devices: index, name, channels, default rate, and the defaults."""
    from realtime_voicebot.audio.devices import AudioUnavailableError, print_devices

    try:
        print_devices()
    except AudioUnavailableError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@devices_app.command("test")
def devices_test(
    input_device: str | None = typer.Option(
        None, "--input-device", help="Microphone: index or name substring (default: settings)."
    ),
    output_device: str | None = typer.Option(
        None, "--output-device", help="Speaker: index or name substring (default: settings)."
    ),
) -> None:
    """Play a short sound and record the microphone: level, echo, latency, echo mode to use."""
    from realtime_voicebot.audio.check import run_check
    from realtime_voicebot.audio.devices import AudioUnavailableError

    settings = load_or_exit({})
    try:
        result = run_check(
            input_device if input_device is not None else settings.input_device,
            output_device if output_device is not None else settings.output_device,
            on_start=lambda: typer.echo("playing a short sound and recording the microphone ..."),
        )
    except AudioUnavailableError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for line in result.report():
        typer.echo(line)


@app.command("run")
@settings_options
def run(
    overrides: dict[str, Any],
    fake_server: bool = typer.Option(
        False, "--fake-server", help="Talk to an in-process fake server: no key, no network."
    ),
    input_file: Path | None = typer.Option(
        None, "--input-file", help="Stream this WAV file as the microphone, then silence."
    ),
    output_file: Path | None = typer.Option(
        None, "--output-file", help="Write the assistant audio, as it would have played, here."
    ),
    text: bool = typer.Option(False, "--text", help="Type lines instead of speaking."),
    max_turns: int | None = typer.Option(
        None, "--max-turns", min=1, help="Exit after N completed assistant replies."
    ),
    exit_when_input_ends: bool = typer.Option(
        False, "--exit-when-input-ends", help="Exit once the input is done and replied to."
    ),
    transcript: Path | None = typer.Option(
        None, "--transcript", help="JSONL transcript file (same as --transcript-path)."
    ),
    record: Path | None = typer.Option(
        None, "--record", help="Record the conversation to this stereo WAV (as --record-path)."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Start a new session seeded from a saved transcript."
    ),
    fake_scenario: Path | None = typer.Option(
        None, "--fake-scenario", help="With --fake-server: a scenario file of transcripts/replies."
    ),
    fake_session_max_s: float | None = typer.Option(
        None, "--fake-session-max-s", help="With --fake-server: session time limit in seconds."
    ),
    fake_speed: float | None = typer.Option(
        None, "--fake-speed", help="With --fake-server: reply speed against real time."
    ),
) -> None:
    """Hold a spoken conversation (or a typed one with --text)."""
    import asyncio

    from realtime_voicebot.app import RunOptions, VoiceBot
    from realtime_voicebot.logging import configure_logging

    if transcript is not None:
        overrides["transcript_path"] = str(transcript)
    if record is not None:
        overrides["record_path"] = str(record)
    settings = load_or_exit(overrides)
    configure_logging(run_log_level(settings.log_level, overrides), settings.log_format)
    check_env_file_or_exit(settings, overrides, fake_server=fake_server)
    check_inputs_or_exit(resume=resume, input_file=input_file)
    fake_config = None
    if fake_server and (fake_scenario or fake_session_max_s or fake_speed):
        from realtime_voicebot.fake.config import FakeServerConfig
        from realtime_voicebot.fake.scenario import Scenario, ScenarioError

        fake_config = FakeServerConfig()
        if fake_scenario is not None:
            try:
                fake_config.scenario = Scenario.load(fake_scenario)
            except (OSError, ScenarioError) as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
        if fake_session_max_s is not None:
            fake_config.session_max_s = fake_session_max_s
        if fake_speed is not None:
            fake_config.speed = fake_speed
    options = RunOptions(
        fake_server=fake_server,
        fake_server_config=fake_config,
        input_file=input_file,
        output_file=output_file,
        text=text,
        max_turns=max_turns,
        exit_when_input_ends=exit_when_input_ends,
        resume=resume,
    )
    from realtime_voicebot.tools.mcp_config import McpConfigError
    from realtime_voicebot.tools.user import ToolLoadError
    from realtime_voicebot.ui import LiveView

    view = select_view(settings.log_format, push_to_talk=settings.push_to_talk)
    # The live console reads keys itself, so that nothing typed tears its display.
    options.keyboard = isinstance(view, LiveView) and sys.stdin.isatty()
    bot = VoiceBot(settings, options, view)
    try:
        code = asyncio.run(bot.run())
    except (ToolLoadError, McpConfigError) as exc:  # a tools module or MCP entry to fix
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def check_env_file_or_exit(settings: Any, overrides: dict[str, Any], *, fake_server: bool) -> None:
    """One line per endpoint a .env file sets (stderr); exit 2 when it would take a key that
    comes from elsewhere to another place without confirmation. Nothing with `--fake-server`:
    its own endpoint and key replace them, and summaries are made on this machine."""
    from realtime_voicebot.config import (
        env_file_redirect_errors,
        env_file_redirects,
        value_sources,
    )

    if fake_server:
        return
    sources = value_sources(overrides)
    errors = env_file_redirect_errors(settings, sources)
    for line in errors:
        typer.echo(f"error: {line}", err=True)
    if errors:
        raise typer.Exit(2)
    for line in env_file_redirects(settings, sources):
        typer.echo(f"note: {line}", err=True)


def check_inputs_or_exit(*, resume: Path | None, input_file: Path | None) -> None:
    """A transcript to resume and a WAV input checked before connecting: one line naming the
    file and the problem, exit 2."""
    from realtime_voicebot.audio.files import AudioFileError, check_wav
    from realtime_voicebot.transcript import TranscriptError, load_transcript

    try:
        if resume is not None:
            load_transcript(resume)
        if input_file is not None:
            check_wav(input_file)
    except TranscriptError as exc:
        typer.echo(f"error: --resume: {exc}", err=True)
        raise typer.Exit(2) from None
    except AudioFileError as exc:
        typer.echo(f"error: --input-file: {exc}", err=True)
        raise typer.Exit(2) from None


def run_log_level(level: str, overrides: dict[str, Any]) -> str:
    """`run` logs warnings and worse unless a level was set (flag, environment or .env),
    so that log lines do not tear the live console."""
    from realtime_voicebot.config import value_sources

    return level if value_sources(overrides)["log_level"] != "default" else "WARNING"


def select_view(
    log_format: str, stdout: TextIO | None = None, *, push_to_talk: bool = False
) -> ConversationView:
    """The conversation view for `run`: JSON lines with `--log-format json`, the live console
    on a terminal, plain lines otherwise (pipes, files, CI)."""
    from realtime_voicebot.ui import JsonLinesView, LiveView, PlainView

    out = stdout or sys.stdout
    if log_format == "json":
        return JsonLinesView(out)
    if out.isatty():
        from rich.console import Console

        return LiveView(Console(file=out), push_to_talk=push_to_talk)
    return PlainView(out)


@app.command("fake-server")
def fake_server_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8765, "--port", min=0, help="Port to listen on (0: any free one)."),
    dialect: str | None = typer.Option(
        None,
        "--dialect",
        metavar="ga|beta",
        help="Force a dialect; default: beta when the client sends OpenAI-Beta: realtime=v1.",
    ),
    scenario: Path | None = typer.Option(
        None, "--scenario", help="JSON or text file of user transcripts and replies."
    ),
    speed: float = typer.Option(
        4.0, "--speed", min=0.0, help="Reply speed against real time (0: as fast as possible)."
    ),
    session_max_s: float = typer.Option(
        3600.0, "--session-max-s", min=0.1, help="Session time limit in seconds."
    ),
) -> None:
    """Run a fake Realtime server on this machine until Ctrl-C (no key, no network)."""
    import asyncio
    import contextlib
    import signal

    from realtime_voicebot.fake.config import FakeServerConfig
    from realtime_voicebot.fake.scenario import Scenario, ScenarioError
    from realtime_voicebot.fake.server import FakeRealtimeServer
    from realtime_voicebot.logging import configure_logging

    if dialect not in (None, "ga", "beta"):
        typer.echo(f"error: --dialect must be ga or beta, not {dialect!r}", err=True)
        raise typer.Exit(2)
    config = FakeServerConfig(
        host=host,
        port=port,
        dialect=dialect,  # type: ignore[arg-type]
        speed=speed,
        session_max_s=session_max_s,
    )
    if scenario is not None:
        try:
            config.scenario = Scenario.load(scenario)
        except (OSError, ScenarioError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    configure_logging("INFO")  # session logs to stderr; stdout has the URL only

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        async with FakeRealtimeServer(config) as server:
            typer.echo(f"Fake Realtime server listening on {server.url}")
            typer.echo(
                f"Point the bot at it: voicebot run --url {server.url}  (any API key works, "
                "e.g. OPENAI_API_KEY=sk-fake). Ctrl-C stops it."
            )
            await stop.wait()
        typer.echo("Fake Realtime server stopped.")

    try:
        asyncio.run(serve())
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


@app.command("test")
def selftest_command(
    fake_server: bool = typer.Option(
        False,
        "--fake-server",
        help="Run scripted conversations through the app against an in-process fake server.",
    ),
    dialect: str = typer.Option("ga", "--dialect", metavar="ga|beta", help="API dialect."),
) -> None:
    """Self-test: turn, barge-in, compaction, dropped connection, rollover (no key needed)."""
    if not fake_server:
        typer.echo(
            "Only the fake-server self-test exists: run `voicebot test --fake-server`.", err=True
        )
        raise typer.Exit(2)
    if dialect not in ("ga", "beta"):
        typer.echo(f"error: --dialect must be ga or beta, not {dialect!r}", err=True)
        raise typer.Exit(2)
    from realtime_voicebot.logging import configure_logging
    from realtime_voicebot.selftest import run_and_report

    configure_logging("ERROR")  # the checklist is the output; a failure says why itself
    raise typer.Exit(run_and_report(typer.echo, dialect=dialect))


def main() -> None:
    """Entry point of the `voicebot` script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
