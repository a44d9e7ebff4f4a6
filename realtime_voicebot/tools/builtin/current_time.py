"""The built-in ``current_time`` tool."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from realtime_voicebot.tools.registry import Tool, ToolError
from realtime_voicebot.tools.schema import JSON


def current_time_tool(clock: Callable[[], datetime] | None = None) -> Tool:
    """``current_time(timezone="UTC")``; ``clock`` returns an aware datetime (tests)."""
    now = clock or (lambda: datetime.now(UTC))

    async def current_time(
        timezone: Annotated[str, "IANA time zone, e.g. Europe/Paris or America/New_York"] = "UTC",
    ) -> JSON:
        """The current date, time and weekday in a time zone."""
        try:
            zone = ZoneInfo(timezone.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(
                f"unknown time zone {timezone!r}; use an IANA name such as Europe/Paris"
            ) from None
        local = now().astimezone(zone)
        return {
            "timezone": zone.key,
            "datetime": local.isoformat(timespec="seconds"),
            "weekday": local.strftime("%A"),
        }

    return Tool.from_function(current_time)
