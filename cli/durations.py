"""Parse and format the contract's durations (``30s``, ``10m``, ``2h``, ``1d``) and times on the client."""

from __future__ import annotations

import datetime as dt
import re

from cli.errors import UsageError

# Same grammar as the broker (which validates again): a whole number and one unit.
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> dt.timedelta:
    """Return the duration written as ``30s``/``10m``/``2h``/``1d``; ``UsageError`` otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(
            f"'{text}' is not a duration: write a whole number and a unit, like 30s, 10m, 2h or 1d"
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise UsageError(f"'{text}' is not a usable duration: it must be longer than zero")
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta | int) -> str:
    """Write a duration in the largest unit that divides it exactly: 7200 s -> ``2h``, 5400 s -> ``90m``."""
    seconds = int(delta.total_seconds()) if isinstance(delta, dt.timedelta) else int(delta)
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_start(text: str) -> dt.datetime:
    """Parse an ISO 8601 time; one written without an offset is taken as UTC (not local time)."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"'{text}' is not a start time: write ISO 8601, like 2026-11-27T14:00:00+01:00 "
            "(without an offset it is read as UTC)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment


def parse_since(text: str, *, now: dt.datetime) -> dt.datetime:
    """Parse ``--since``: ISO 8601 (UTC without offset), or a duration meaning that long before ``now``."""
    if _DURATION.match(text):
        return now - parse_duration(text)
    try:
        return parse_start(text)
    except UsageError:
        raise UsageError(
            f"'{text}' is not a time: write ISO 8601 (2026-11-27T10:00:00+00:00) "
            "or a duration back from now (1d)"
        ) from None


def parse_api_time(text: str) -> dt.datetime:
    """Parse a time from the broker (ISO 8601 with offset; naive ones are UTC, as the API promises)."""
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
