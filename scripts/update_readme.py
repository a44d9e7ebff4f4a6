"""Regenerate what is generated from Settings: the README's configuration table and the
CLI's option table (`realtime_voicebot/cli_settings.json`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from realtime_voicebot.config import cli_options, settings_reference_markdown

BEGIN, END = "<!-- settings-table:begin -->", "<!-- settings-table:end -->"


def main() -> None:
    readme = Path(__file__).parents[1] / "README.md"
    text = readme.read_text()
    block = f"{BEGIN}\n{settings_reference_markdown()}\n{END}"
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    readme.write_text(new)
    cli_settings = Path(__file__).parents[1] / "realtime_voicebot" / "cli_settings.json"
    cli_settings.write_text(json.dumps(cli_options(), indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
