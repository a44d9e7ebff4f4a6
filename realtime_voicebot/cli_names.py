"""How a setting's name becomes a CLI flag (shared by the CLI and the README generator)."""

REPEATABLE_FLAGS = {
    "mcp_servers": "--mcp-server",
    "tools_modules": "--tools-module",
    "hosted_mcp": "--hosted-mcp",
}
"""List settings given one value per flag, the flag repeated: `--mcp-server A --mcp-server B`."""


def flag_for(setting: str) -> str:
    """`summary_threshold` -> `--summary-threshold`; `mcp_servers` -> `--mcp-server`."""
    return REPEATABLE_FLAGS.get(setting) or "--" + setting.replace("_", "-")
