"""Date and time tools: what time it is somewhere, and calendar arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.tools.base import Tool, ToolError


def _zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(name or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(
            f"Unknown time zone '{name}'; use an IANA name such as Europe/Paris."
        ) from None


def _moment(text: Any, name: str) -> datetime:
    if not isinstance(text, str):
        raise ToolError(f"'{name}' must be a date such as 2026-11-23 or 2026-11-23T14:30.")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ToolError(f"'{name}' is not an ISO date: '{text[:40]}'.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _describe(moment: datetime) -> str:
    return f"{moment.isoformat()} ({moment.strftime('%A')})"


def _current_time(arguments: dict[str, Any]) -> str:
    return _describe(datetime.now(_zone(arguments.get("timezone"))).replace(microsecond=0))


def _date_add(arguments: dict[str, Any]) -> str:
    start = arguments.get("date")
    moment = _moment(start, "date")
    try:
        delta = timedelta(
            weeks=float(arguments.get("weeks", 0)),
            days=float(arguments.get("days", 0)),
            hours=float(arguments.get("hours", 0)),
            minutes=float(arguments.get("minutes", 0)),
        )
        result = moment + delta
    except (TypeError, ValueError, OverflowError):
        raise ToolError("weeks, days, hours and minutes must be numbers in range.") from None
    if isinstance(start, str) and len(start) == 10 and delta % timedelta(days=1) == timedelta(0):
        return f"{result.date().isoformat()} ({result.strftime('%A')})"
    return _describe(result)


def _date_diff(arguments: dict[str, Any]) -> str:
    start = _moment(arguments.get("start"), "start")
    end = _moment(arguments.get("end"), "end")
    delta = end - start
    days = delta.total_seconds() / 86400
    whole = int(days)
    weeks, rest = divmod(abs(whole), 7)
    return (
        f"{days:g} days ({'-' if whole < 0 else ''}{weeks} weeks and {rest} days; "
        f"{delta.total_seconds() / 3600:g} hours)"
    )


CURRENT_TIME = Tool(
    name="current_time",
    description="The current date, time and weekday in a time zone (IANA name, default UTC).",
    parameters={
        "type": "object",
        "properties": {"timezone": {"type": "string", "description": "e.g. Asia/Tokyo"}},
    },
    function=_current_time,
)

DATE_ADD = Tool(
    name="date_add",
    description="Add (or, with negative numbers, subtract) weeks, days, hours and minutes to "
    "an ISO date or date-time; returns the result and its weekday.",
    parameters={
        "type": "object",
        "properties": {
            "date": {"type": "string", "description": "e.g. 2026-11-23 or 2026-11-23T09:00"},
            "weeks": {"type": "number"},
            "days": {"type": "number"},
            "hours": {"type": "number"},
            "minutes": {"type": "number"},
        },
        "required": ["date"],
    },
    function=_date_add,
)

DATE_DIFF = Tool(
    name="date_diff",
    description="How long from one ISO date or date-time to another, in days, weeks and hours.",
    parameters={
        "type": "object",
        "properties": {"start": {"type": "string"}, "end": {"type": "string"}},
        "required": ["start", "end"],
    },
    function=_date_diff,
)
