"""Parse and format the contract's durations (``30s``, ``10m``, ``2h``, ``1d``) and times on the client."""

from __future__ import annotations

import datetime as dt

from broker import durations
from broker.durations import format_duration
from broker.errors import InvalidInput
from cli.errors import UsageError

__all__ = ["format_duration", "parse_api_time", "parse_duration", "parse_since", "parse_start"]


def parse_duration(text: str) -> dt.timedelta:
    """Return the duration written as ``30s``/``10m``/``2h``/``1d``; ``UsageError`` otherwise (the grammar is the
    broker's own, broker.durations: one home)."""
    try:
        return durations.parse_duration(text)
    except InvalidInput as error:
        raise UsageError(error.message) from None


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
    if durations.is_duration(text):
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
