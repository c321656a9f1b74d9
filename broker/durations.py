"""Parse and format the contract's durations: ``30s``, ``10m``, ``2h``, ``1d``: the one grammar, used by the
broker and by the `gatepass` command alike (which turns the refusal into its own usage error)."""

from __future__ import annotations

import datetime as dt
import re

from broker.errors import InvalidInput

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def is_duration(text: str) -> bool:
    """Whether ``text`` is written in the duration grammar (zero included; ``parse_duration`` refuses it)."""
    return _DURATION.match(text or "") is not None


def parse_duration(text: str) -> dt.timedelta:
    match = _DURATION.match(text or "")
    if not match:
        raise InvalidInput(f"'{text}' is not a duration: write a whole number and a unit, like 30s, 10m, 2h or 1d")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise InvalidInput(f"'{text}' is not a usable duration: it must be longer than zero")
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta | int) -> str:
    """Write a duration in the largest unit that divides it exactly: 7200 s -> ``2h``, 5400 s -> ``90m``."""
    seconds = int(delta.total_seconds()) if isinstance(delta, dt.timedelta) else int(delta)
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
