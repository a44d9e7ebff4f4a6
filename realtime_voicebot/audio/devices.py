"""Audio devices: list them, pick one by index or name, and say what to do when none works.

sounddevice loads PortAudio when it is imported and raises OSError when the library is
missing, so it is imported lazily (`load_sounddevice`) and every failure becomes an
`AudioUnavailableError` whose message tells the user the next step.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from realtime_voicebot.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

DeviceKind = Literal["input", "output"]

LIST_HINT = "run `voicebot devices list`"


class AudioUnavailableError(UserError):
    """No usable audio library or device; the message says what to do about it."""


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device as the user sees it in `voicebot devices list`."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool
    is_default_output: bool

    def channels(self, kind: DeviceKind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels


def load_sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio or package into AudioUnavailableError."""
    try:
        return importlib.import_module("sounddevice")
    except OSError as exc:
        raise AudioUnavailableError(
            f"PortAudio is not installed ({exc}): run `apt-get install libportaudio2` "
            "(Debian/Ubuntu) or `brew install portaudio` (macOS)"
        ) from exc
    except ImportError as exc:
        raise AudioUnavailableError(
            f"The sounddevice package is missing ({exc}): run `pip install sounddevice`"
        ) from exc


def _port_audio_error(exc: Exception) -> AudioUnavailableError:
    return AudioUnavailableError(f"PortAudio failed: {exc}. Check your sound setup, {LIST_HINT}")


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio reports, with its capabilities and default flags."""
    sd = load_sounddevice()
    try:
        raw_devices: Any = sd.query_devices()
        hostapis: Any = sd.query_hostapis()
        default_in, default_out = _default_indices(sd)
    except sd.PortAudioError as exc:
        raise _port_audio_error(exc) from exc
    devices = []
    for raw in raw_devices:
        index = int(raw["index"])
        hostapi_index = int(raw.get("hostapi", 0))
        hostapi = str(hostapis[hostapi_index]["name"]) if hostapi_index < len(hostapis) else ""
        devices.append(
            DeviceInfo(
                index=index,
                name=str(raw["name"]),
                hostapi=hostapi,
                max_input_channels=int(raw["max_input_channels"]),
                max_output_channels=int(raw["max_output_channels"]),
                default_samplerate=float(raw["default_samplerate"]),
                is_default_input=index == default_in,
                is_default_output=index == default_out,
            )
        )
    return devices


def _default_indices(sd: ModuleType) -> tuple[int, int]:
    """PortAudio's default input and output device indices (-1 when there is none)."""
    default_in, default_out = sd.default.device
    return (
        -1 if default_in is None else int(default_in),
        -1 if default_out is None else int(default_out),
    )


def resolve_device(spec: str | None, kind: DeviceKind) -> int | None:
    """The PortAudio index for a device given as index or name substring; None = the default.

    Raises AudioUnavailableError when nothing fits.
    """
    return choose_device(list_devices(), spec, kind)


def choose_device(devices: list[DeviceInfo], spec: str | None, kind: DeviceKind) -> int | None:
    """`resolve_device` over a given device list (pure, for tests)."""
    usable = [d for d in devices if d.channels(kind) > 0]
    if not usable:
        raise AudioUnavailableError(f"No {kind} device found: {LIST_HINT}")
    if spec is None or not spec.strip():
        if any(d.is_default_input if kind == "input" else d.is_default_output for d in usable):
            return None
        return usable[0].index
    text = spec.strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        match = next((d for d in devices if d.index == index), None)
        if match is None:
            raise AudioUnavailableError(f"No device has index {index}: {LIST_HINT}")
        if match.channels(kind) == 0:
            raise AudioUnavailableError(
                f"Device {index} ({match.name!r}) has no {kind} channels: {LIST_HINT}"
            )
        return index
    needle = text.casefold()
    matches = [d for d in devices if needle in d.name.casefold()]
    if not matches:
        raise AudioUnavailableError(f"No device matches {text!r}: {LIST_HINT}")
    fitting = [d for d in matches if d.channels(kind) > 0]
    if not fitting:
        names = ", ".join(repr(d.name) for d in matches)
        raise AudioUnavailableError(f"No {kind} device matches {text!r} ({names}): {LIST_HINT}")
    exact = [d for d in fitting if d.name.casefold() == needle]
    return (exact or fitting)[0].index


def supported_samplerate(device: int | None, kind: DeviceKind, preferred: int) -> int:
    """`preferred` when the device accepts it for mono int16, else the device's default rate."""
    sd = load_sounddevice()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=device, channels=1, dtype="int16", samplerate=preferred)
        return preferred
    except (sd.PortAudioError, ValueError):
        pass
    try:
        info: Any = sd.query_devices(device, kind)
    except (sd.PortAudioError, ValueError) as exc:
        raise AudioUnavailableError(f"No {kind} device found ({exc}): {LIST_HINT}") from exc
    return int(info["default_samplerate"])


def shared_stream_support(
    input_device: int | None, output_device: int | None, preferred: int
) -> tuple[int, str] | None:
    """The sample rate at which one callback can serve both devices, and their host API's
    name; None when it cannot (two host APIs, or no rate both accept for mono int16).

    The rate is `preferred` if both accept it, else the input's default, else the output's.
    """
    sd = load_sounddevice()
    try:
        input_info: Any = sd.query_devices(input_device, "input")
        output_info: Any = sd.query_devices(output_device, "output")
        hostapis: Any = sd.query_hostapis()
    except (sd.PortAudioError, ValueError):
        return None

    def accepts(rate: int) -> bool:
        try:
            sd.check_input_settings(device=input_device, channels=1, dtype="int16", samplerate=rate)
            sd.check_output_settings(
                device=output_device, channels=1, dtype="int16", samplerate=rate
            )
        except (sd.PortAudioError, ValueError):
            return False
        return True

    hostapi = int(input_info["hostapi"])
    rate = choose_duplex_samplerate(
        hostapi,
        int(output_info["hostapi"]),
        [preferred, int(input_info["default_samplerate"]), int(output_info["default_samplerate"])],
        accepts,
    )
    if rate is None:
        return None
    return rate, str(hostapis[hostapi]["name"]) if hostapi < len(hostapis) else ""


def choose_duplex_samplerate(
    input_hostapi: int,
    output_hostapi: int,
    candidates: list[int],
    accepts: Callable[[int], bool],
) -> int | None:
    """`shared_stream_support`'s rate over given facts (pure, for tests): the first
    candidate both devices accept, None when the host APIs differ or no candidate fits."""
    if input_hostapi != output_hostapi:
        return None
    tried: set[int] = set()
    for rate in candidates:
        if rate <= 0 or rate in tried:
            continue
        tried.add(rate)
        if accepts(rate):
            return rate
    return None


def devices_table(devices: list[DeviceInfo] | None = None) -> Table:
    """A rich table of the devices; defaults are marked with *."""
    from rich.table import Table

    table = Table(title="Audio devices (* = default)")
    table.add_column("index", justify="right")
    table.add_column("name")
    table.add_column("host API")
    table.add_column("in", justify="right")
    table.add_column("out", justify="right")
    table.add_column("rate (Hz)", justify="right")
    for device in list_devices() if devices is None else devices:
        marks = ("*in" if device.is_default_input else "") + (
            " *out" if device.is_default_output else ""
        )
        table.add_row(
            str(device.index),
            f"{device.name} {marks.strip()}".strip(),
            device.hostapi,
            str(device.max_input_channels),
            str(device.max_output_channels),
            f"{device.default_samplerate:g}",
        )
    return table


def print_devices(console: Console | None = None) -> None:
    """Print the device table (what `voicebot devices list` shows)."""
    from rich.console import Console

    (console or Console()).print(devices_table())
