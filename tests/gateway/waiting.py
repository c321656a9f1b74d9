"""Waiting in the gateway's tests on what a test expects to see, with a deadline, instead of a guessed sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How often a condition is asked again: short next to the timeouts, long enough not to busy the two-core CI box.
POLL_INTERVAL = 0.01


async def eventually(condition: Callable[[], T], *, timeout: float = 5.0, what: str) -> T:
    """Wait until ``condition()`` is true and return its value; fail naming ``what`` after ``timeout`` seconds.

    The gateway reports, flushes and cuts in the background, so the only honest wait is on the outcome itself.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := condition()):
        if loop.time() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)
    return value
