"""Retention end to end: recordings made by real ssh sessions through `gatepass serve`, a site retention set with
`gatepass admin site set`, one recording held with `gatepass admin recording hold`; then a second broker replica
over the same data directory and database, its clock moved two days on, whose purge job deletes the other one.
`gatepass audit verify` passes and says the purge is proved by the trail; a file deleted by hand fails it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from assembly.environment import broker_settings
from broker.clock import FixedClock
from tests.e2e.stack import Stack
from tests.fixtures.broker import BrokerServer

pytestmark = pytest.mark.slow


@contextmanager
def replica_two_days_on(stack: Stack) -> Iterator[BrokerServer]:
    """Another broker replica: the same data and database, its clock two days ahead, purging every 50 ms."""
    settings = broker_settings(stack.env(), clock=FixedClock(dt.datetime.now(dt.UTC) + dt.timedelta(days=2)))
    settings = dataclasses.replace(settings, retention_sweep_interval=dt.timedelta(milliseconds=50))
    running = BrokerServer(settings).start()
    try:
        yield running
    finally:
        running.stop()


def recorded_session(stack: Stack, grant_id: str, count: int) -> str:
    """The id of the grant's ``count``-th session once its gateway reported its end (and its recording)."""
    events = stack.grant_events("gateway:session:ended", grant_id, count=count)
    assert len(events) == count, events
    assert "recording" in events[-1]["details"], events[-1]
    return str(events[-1]["subject"])


def wait_for_purge(stack: Stack, session_id: str, timeout: float = 20.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in stack.audit_events() if e["action"] == "retention:recording:purged"
                 and e["subject"] == session_id]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no purge event for {session_id} within {timeout} s")
        time.sleep(0.2)


def test_a_real_recording_is_purged_by_the_job_the_held_one_kept_and_verify_says_why(stack: Stack) -> None:
    grant = stack.fresh_grant("hmi-01", "--for", "10m", "--reason", "e2e retention")
    assert stack.gatepass("ssh", "hmi-01", "--", "echo routine-output", user="vendor1").stdout == "routine-output\n"
    routine = recorded_session(stack, grant["id"], 1)
    assert stack.gatepass("ssh", "hmi-01", "--", "echo evidence-output", user="vendor1").stdout == "evidence-output\n"
    evidence = recorded_session(stack, grant["id"], 2)
    recordings = stack.data / "recordings"
    routine_file, evidence_file = recordings / f"{routine}.cast", recordings / f"{evidence}.cast"
    assert routine_file.is_file()
    assert evidence_file.is_file()
    stack.gatepass("admin", "site", "set", "plant-a", "--recording-retention-days", "1")
    held = stack.gatepass("admin", "recording", "hold", evidence, "--reason", "suspicious command, ticket 88")
    assert "on hold as evidence" in held.stdout
    # Today nothing is due: a dry run lists nothing.
    assert stack.gatepass("admin", "recording", "purge", "--dry-run").stdout.startswith("Would purge 0 recording(s)")
    reported = next(e for e in stack.audit_events() if e["action"] == "gateway:session:ended"
                    and e["subject"] == routine)["details"]["recording"]

    with replica_two_days_on(stack):
        event = wait_for_purge(stack, routine)
    assert event["details"]["recording"] == reported  # type: ignore[index]
    assert event["actor"] == "system:retention"
    assert not routine_file.exists()
    assert evidence_file.is_file()
    state = stack.api_get("security1", f"/recordings/{evidence}")
    assert state["on_hold"] is True
    assert state["holds"][0]["reason"] == "suspicious command, ticket 88"

    verified = stack.gatepass("audit", "verify", "--json", check=False)
    report = json.loads(verified.stdout)
    assert verified.returncode == 0, report
    assert report["recordings_purged"] == 1
    assert report["recording_problems"] == []
    assert "purged under retention, each proved by its audit event" in stack.gatepass("audit", "verify").stdout

    evidence_file.unlink()  # by hand: no event proves it
    broken = stack.gatepass("audit", "verify", check=False)
    assert broken.returncode == 1
    assert f"session {evidence}" in broken.stderr
    assert "MISSING" in broken.stderr
