"""Regenerate the README's configuration table from Settings."""

from __future__ import annotations

import re
from pathlib import Path

from realtime_voicebot.config import settings_reference_markdown

BEGIN, END = "<!-- settings-table:begin -->", "<!-- settings-table:end -->"


def main() -> None:
    readme = Path(__file__).parents[1] / "README.md"
    text = readme.read_text()
    block = f"{BEGIN}\n{settings_reference_markdown()}\n{END}"
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    readme.write_text(new)


if __name__ == "__main__":
    main()
