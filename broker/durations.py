"""Parse and format the contract's durations: ``30s``, ``10m``, ``2h``, ``1d``."""

from __future__ import annotations

import datetime as dt
import re

from broker.errors import InvalidInput

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> dt.timedelta:
    match = _DURATION.match(text or "")
    if not match:
        raise InvalidInput(f"'{text}' is not a duration: write it like 30s, 10m, 2h or 1d")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise InvalidInput(f"'{text}' is not a usable duration: it must be longer than zero")
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
