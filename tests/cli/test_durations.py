"""Durations and times as the contract writes them: 30s, 10m, 2h, 1d; ISO 8601 with UTC as the default."""

from __future__ import annotations

import datetime as dt

import pytest

from cli.durations import format_duration, parse_duration, parse_since, parse_start
from cli.errors import UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), (" 90m ", 5400)],
)
def test_parse_duration_accepts_the_contract_units(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "1.5h", "-1h", "2 hours", "1h30m", "PT2H"])
def test_parse_duration_refuses_anything_else_with_an_example(text: str) -> None:
    with pytest.raises(UsageError, match=r"is not a duration: .*30s, 10m, 2h or 1d") as caught:
        parse_duration(text)
    assert caught.value.exit_code == 2


def test_parse_duration_refuses_zero() -> None:
    with pytest.raises(UsageError, match="longer than zero"):
        parse_duration("0m")


@pytest.mark.parametrize(
    ("seconds", "text"), [(30, "30s"), (600, "10m"), (7200, "2h"), (86400, "1d"), (5400, "90m"), (61, "61s")]
)
def test_format_duration_uses_the_largest_exact_unit(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text
    assert format_duration(dt.timedelta(seconds=seconds)) == text


def test_parse_start_keeps_the_offset_and_reads_naive_times_as_utc() -> None:
    assert parse_start("2026-11-27T14:00:00+01:00").utcoffset() == dt.timedelta(hours=1)
    assert parse_start("2026-11-27T14:00:00") == dt.datetime(2026, 11, 27, 14, 0, tzinfo=dt.UTC)
    assert parse_start("2026-11-27T14:00:00Z") == dt.datetime(2026, 11, 27, 14, 0, tzinfo=dt.UTC)


def test_parse_start_refuses_non_iso_text() -> None:
    with pytest.raises(UsageError, match="is not a start time: write ISO 8601"):
        parse_start("tomorrow 2pm")


def test_parse_since_takes_a_time_or_a_duration_back_from_now() -> None:
    now = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
    assert parse_since("1d", now=now) == now - dt.timedelta(days=1)
    assert parse_since("2026-11-01T00:00:00+00:00", now=now) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with pytest.raises(UsageError, match="is not a time"):
        parse_since("last week", now=now)
