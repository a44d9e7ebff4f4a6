"""How a setting's name becomes a CLI flag (shared by the CLI and the README generator)."""


def flag_for(setting: str) -> str:
    """`summary_threshold` -> `--summary-threshold`."""
    return "--" + setting.replace("_", "-")
