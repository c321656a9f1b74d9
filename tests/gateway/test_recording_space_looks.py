"""The recordings disk's guard when its look fails (the directory gone, a mount lost): said once, not every second."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway import Gateway
from tests.gateway.waiting import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
def gateway_options() -> dict[str, Any]:
    return {"recording_reserve": 8 << 20, "recording_space_interval": 0.05}


async def test_a_look_that_keeps_failing_is_logged_once_and_its_recovery_once(
    gateway: Gateway, recordings_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatepass.gateway")
    away = recordings_dir.with_name("recordings-away")
    recordings_dir.rename(away)  # statvfs: No such file or directory, at every look
    try:
        await asyncio.sleep(1)  # about 20 looks
    finally:
        away.rename(recordings_dir)
    await eventually(lambda: "can be read again" in caplog.text, what="the next look")

    failures = [r for r in caplog.records if "cannot tell the recordings disk's free space" in r.getMessage()]
    assert [r.getMessage() for r in failures] == [
        "cannot tell the recordings disk's free space (No such file or directory)"]
    assert caplog.text.count("can be read again") == 1
