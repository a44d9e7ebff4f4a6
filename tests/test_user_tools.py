"""The user's own Python functions: ``@tool``, ``--tools-module`` (file or module name) and the
``realtime_voicebot.tools`` entry-point group, run through the real runner."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import realtime_voicebot
from realtime_voicebot.config import load_settings
from realtime_voicebot.testing import scaled
from realtime_voicebot.tools import ToolError, ToolRunner
from realtime_voicebot.tools.builtin import build_registry
from realtime_voicebot.tools.user import (
    ENTRY_POINT_GROUP,
    SyncToolThreads,
    ToolLoadError,
    load_tools_module,
    tool,
    tools_from_entry_points,
    user_tool,
)

TOOLS = '''
"""Tools of a test user."""
import asyncio
import threading
from typing import Annotated, Literal

from realtime_voicebot import tool


@tool
def add_note(text: Annotated[str, "What to remember"], tags: list[str] | None = None) -> dict:
    """Save a note for later.

    Longer explanation the model does not need.
    """
    return {"saved": text, "tags": tags or [], "thread": threading.current_thread().name}


@tool(name="weather_now", description="The weather in a city, right now.")
async def weather(city: str, unit: Literal["C", "F"] = "C") -> str:
    await asyncio.sleep(0)
    return f"{city}: 21 {unit}, thread {threading.current_thread().name}"


def helper(x: int) -> int:
    """Not marked: not a tool."""
    return x
'''


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


async def run(runner: ToolRunner, tool_name: str, /, **arguments: Any) -> Any:
    return await runner.run(tool_name, json.dumps(arguments))


def test_the_decorator_is_importable_from_the_package_and_returns_the_function() -> None:
    assert realtime_voicebot.tool is tool

    def plain(x: int) -> int:
        """Double."""
        return 2 * x

    assert tool(plain) is plain and plain(2) == 4
    assert tool(name="other")(plain) is plain
    with pytest.raises(AttributeError):
        _ = realtime_voicebot.no_such_name  # type: ignore[attr-defined]


async def test_a_tools_file_gives_sync_and_async_tools_with_schemas(tmp_path: Path) -> None:
    path = write(tmp_path, "my_tools.py", TOOLS)
    settings = load_settings({"tools_modules": [str(path)], "tools": "current_time"})
    registry = build_registry(settings)
    assert registry.names() == ["current_time", "add_note", "weather_now"]
    specs = {spec["name"]: spec for spec in registry.specs()}
    assert specs["add_note"]["description"] == "Save a note for later."
    assert specs["add_note"]["parameters"]["properties"] == {
        "text": {"type": "string", "description": "What to remember"},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}, "default": None},
    }
    assert specs["weather_now"]["description"] == "The weather in a city, right now."
    assert specs["weather_now"]["parameters"]["properties"]["unit"]["enum"] == ["C", "F"]

    runner = ToolRunner(registry)
    note = json.loads((await run(runner, "add_note", text="milk", tags=["shop"])).output)
    assert note["saved"] == "milk" and note["tags"] == ["shop"]
    assert note["thread"] == "voicebot-tool"  # a sync function runs off the event loop
    weather = (await run(runner, "weather_now", city="Paris")).output
    assert weather == f"Paris: 21 C, thread {threading.current_thread().name}"
    refused = await run(runner, "weather_now", city="Paris", unit="K")
    assert refused.outcome == "error" and "should be one of" in refused.output


async def test_a_tools_module_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "voice_pkg"
    package.mkdir()
    write(package, "__init__.py", "")
    write(package, "tools.py", TOOLS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("VOICEBOT_TOOLS_MODULES", "voice_pkg.tools")
    registry = build_registry(load_settings())
    assert registry.names() == ["add_note", "weather_now"]
    assert (await run(ToolRunner(registry), "add_note", text="x")).outcome == "ok"


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("def broken(:\n    pass\n", r"^cannot load tools module .*bad\.py: line 1: SyntaxError: "),
        (
            "import os\n\nx = undefined_name + 1\n",
            r"^cannot load tools module .*bad\.py: line 3: NameError: name 'undefined_name'",
        ),
        ("import no_such_dependency_xyz\n", r"bad\.py: line 1: ModuleNotFoundError: No module"),
        ("import sys\nsys.exit(2)\n", r"bad\.py: line 2: SystemExit: 2"),
        (
            "from realtime_voicebot import tool\n@tool\ndef f(x):\n    'Doc.'\n",
            r"^.*bad\.py: function f: f: parameter x has no type hint$",
        ),
        (
            "from realtime_voicebot import tool\n@tool\ndef f(x: int) -> int:\n    return x\n",
            r"bad\.py: function f: tool f needs a description",
        ),
    ],
)
def test_a_bad_tools_file_is_one_line_naming_it(tmp_path: Path, source: str, error: str) -> None:
    path = write(tmp_path, "bad.py", source)
    with pytest.raises(ToolLoadError) as caught:
        load_tools_module(str(path))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert re.search(error, message), message


def test_missing_files_and_modules_say_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ToolLoadError, match=r"^no tools module at .*nope\.py: check the path$"):
        load_tools_module(str(tmp_path / "nope.py"))
    with pytest.raises(ToolLoadError, match=r"^no module named nope_xyz_tools: give a file path"):
        load_tools_module("nope_xyz_tools")
    with pytest.raises(ToolLoadError, match=r"neither a \.py file nor a module name"):
        load_tools_module("not a module")


def test_a_tool_name_already_taken_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "clash.py",
        """
        from realtime_voicebot import tool

        @tool
        def current_time() -> str:
            "Mine."
            return "noon"
        """,
    )
    settings = load_settings({"tools": "current_time", "tools_modules": [str(path)]})
    with pytest.raises(ToolLoadError, match="a tool named current_time already exists"):
        build_registry(settings)
    assert build_registry(load_settings({"tools_modules": [str(path)]})).names() == ["current_time"]


async def test_results_are_capped_and_non_json_results_are_errors() -> None:
    def long_text(size: int) -> str:
        """Text."""
        return "y" * size

    async def an_object() -> object:
        """An object."""
        return object()

    def numbers() -> list[int]:
        """Numbers."""
        return [1, 2]

    registry = build_registry(load_settings())
    for function in (long_text, an_object, numbers):
        registry.add(user_tool(function, where="test", max_output_chars=300))
    runner = ToolRunner(registry)
    capped = (await run(runner, "long_text", size=1000)).output
    assert capped == "y" * 300 + "\n[truncated: 700 more characters]"
    assert (await run(runner, "long_text", size=300)).output == "y" * 300
    bad = await run(runner, "an_object")
    assert bad.outcome == "error" and "returned a object, which is not JSON" in bad.output
    assert (await run(runner, "numbers")).output == "[1, 2]"


async def test_sync_tools_run_in_a_bounded_number_of_daemon_threads() -> None:
    release = threading.Event()
    entered = threading.Event()
    ran_in: list[threading.Thread] = []

    def wait_for_release() -> str:
        """Blocks until released."""
        ran_in.append(threading.current_thread())
        entered.set()
        release.wait(scaled(10))
        return "released"

    threads = SyncToolThreads(max_threads=1)
    blocking = user_tool(wait_for_release, where="test", threads=threads)
    first = asyncio.create_task(blocking.function())
    await asyncio.to_thread(entered.wait, scaled(10))
    assert threads.running == 1
    with pytest.raises(ToolError, match="still running; try again later"):
        await blocking.function()
    assert threads.refused == 1
    release.set()
    assert await first == "released"
    assert threads.running == 0
    assert await blocking.function() == "released"  # the slot is free again

    # a call that times out keeps its slot until the function returns: the bound holds
    release.clear()
    entered.clear()
    registry = build_registry(load_settings())
    registry.add(blocking)
    result = await ToolRunner(registry, timeout_s=0.2).run("wait_for_release", "{}")
    assert result.outcome == "timeout"
    assert threads.running == 1
    release.set()
    # The thread hands its end to the loop before it ends; this wait's own end is handed over
    # after that, so the slot is free when it returns.
    await asyncio.to_thread(ran_in[-1].join, scaled(10))
    assert threads.running == 0


# --- entry points ------------------------------------------------------------------------------


def install_plugin(root: Path, entry_points: str, module: str = TOOLS) -> None:
    """A tiny installed distribution: its module and its dist-info on ``sys.path``."""
    write(root, "voicebot_demo_plugin.py", module)
    info = root / "voicebot_demo_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: voicebot-demo-plugin\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}\n")


async def test_an_installed_package_adds_tools_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(
        tmp_path,
        "notes = voicebot_demo_plugin\n"
        "helper = voicebot_demo_plugin:helper\n"
        "broken = voicebot_demo_plugin_missing\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = tools_from_entry_points()
    assert [t.name for t in found.tools] == ["add_note", "weather_now", "helper"]
    assert len(found.problems) == 1
    assert found.problems[0].startswith(
        "tools of package voicebot-demo-plugin (broken) not loaded: ModuleNotFoundError"
    )

    registry = build_registry(load_settings())
    assert registry.names() == ["add_note", "weather_now", "helper"]
    assert (await run(ToolRunner(registry), "helper", x=4)).output == "4"
    assert build_registry(load_settings({"tool_entry_points": "false"})).names() == []
    del sys.modules["voicebot_demo_plugin"]


def readme_block(language: str, containing: str) -> str:
    """The README's fenced ``language`` block that contains ``containing``."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(rf"```{language}\n(.*?)```", readme, flags=re.S)
    (block,) = [b for b in blocks if containing in b]
    return str(block)


async def test_the_readme_tools_module_works(tmp_path: Path) -> None:
    path = write(tmp_path, "my_tools.py", readme_block("python", "from realtime_voicebot import"))
    registry = build_registry(load_settings({"tools_modules": [str(path)]}))
    assert registry.names() == ["add_to_shopping_list", "convert_temperature"]
    runner = ToolRunner(registry)
    assert (await run(runner, "add_to_shopping_list", item="milk", quantity=2)).output == (
        "added 2 x milk"
    )
    assert await asyncio.to_thread(Path("shopping.txt").read_text) == "2 x milk\n"
    assert (await run(runner, "convert_temperature", value=212, to="C")).output == "100.0"
