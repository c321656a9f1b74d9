"""Session recordings end to end: a real ssh session through `gatepass serve` leaves DATA/recordings/<session>.cast,
and the broker's session-end audit event carries that file's SHA-256."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow


def test_session_end_event_carries_the_recording_hash(stack: Stack) -> None:
    request = stack.request("vendor1", "hmi-01", "--for", "10m", "--reason", "e2e recording")
    stack.approve("sup-a1", request["id"])
    grant = stack.grant_of("vendor1", request["id"])
    result = stack.gatepass("ssh", "hmi-01", "--", "echo recorded-output; exit 3", user="vendor1", check=False)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "recorded-output\n"

    event = stack.grant_event("gateway:session:ended", grant["id"])
    recording = event["details"]["recording"]
    assert recording["name"] == f"{event['subject']}.cast"
    path = stack.data / "recordings" / recording["name"]
    data = path.read_bytes()
    assert recording["sha256"] == hashlib.sha256(data).hexdigest()
    assert recording["bytes"] == len(data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    lines = data.decode().splitlines()
    header = json.loads(lines[0])
    assert header["gatepass"]["session"] == event["subject"]
    assert header["gatepass"]["grant"] == grant["id"]
    assert (header["gatepass"]["identity"], header["gatepass"]["site"]) == ("vendor1", "plant-a")
    events = [json.loads(line) for line in lines[1:]]
    assert "".join(e[2] for e in events if e[1] == "o") == "recorded-output\n"
    assert events[-1][1:] == ["m", "exit 3"]
