"""The identity lifecycle, end to end: `gatepass admin identity suspend|retire` (another process than the
running broker) ends the identity's live session within a second and says why on its screen; a retired name
never comes back; the inventory shows it all to security over the API."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.e2e.stack import GATEPASS, Stack

pytestmark = pytest.mark.slow


def _live_session(stack: Stack, user: str) -> tuple[str, subprocess.Popen[str]]:
    request = stack.request(user, "hmi-01", "--for", "10m", "--reason", "lifecycle drill")
    stack.approve("sup-a1", request["id"])
    grant_id = stack.grant_of(user, request["id"])["id"]
    process = subprocess.Popen([GATEPASS, "ssh", "hmi-01", "--", "echo ready; sleep 60"],
                               env=stack.env(stack.home(user)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return grant_id, process


def test_suspending_cuts_within_a_second_and_resume_brings_the_identity_back(stack: Stack) -> None:
    grant_id, session = _live_session(stack, "vendor1")

    stack.gatepass("admin", "identity", "suspend", "vendor1", "--reason", "laptop reported stolen")
    committed = time.monotonic()
    _, stderr = session.communicate(timeout=10)
    assert time.monotonic() - committed < 1.0
    assert "your identity was suspended" in stderr
    ended = stack.grant_event("gateway:session:ended", grant_id)
    assert ended["details"]["reason"] == "revoked"
    # Signed out everywhere: the CLI's token no longer works.
    assert stack.gatepass("requests", user="vendor1", check=False).returncode == 1

    record = stack.api_get("security1", "/identities/vendor1")
    assert (record["status"], record["status_reason"]) == ("suspended", "laptop reported stolen")
    stack.gatepass("admin", "identity", "resume", "vendor1", "--reason", "laptop found, disk checked")
    assert stack.api_get("security1", "/identities/vendor1")["status"] == "active"
    suspended = [e for e in stack.audit_events() if e["action"] == "identity:lifecycle:suspended"]
    assert suspended[-1]["subject"] == "vendor1"
    assert suspended[-1]["details"]["reason"] == "laptop reported stolen"


def test_a_retired_identity_is_cut_final_and_its_name_never_reused(stack: Stack) -> None:
    _grant_id, session = _live_session(stack, "vendor2")

    stack.gatepass("admin", "identity", "retire", "vendor2", "--reason", "contract ended")
    committed = time.monotonic()
    _, stderr = session.communicate(timeout=10)
    assert time.monotonic() - committed < 1.0
    assert "your identity was retired" in stderr

    again = stack.gatepass("admin", "identity", "resume", "vendor2", "--reason", "oops", check=False)
    assert again.returncode == 1
    assert "only a suspended identity can be resumed" in again.stderr
    reused = stack.gatepass("admin", "user", "add", "vendor2", "--role", "vendor", check=False)
    assert reused.returncode == 1
    assert "already exists" in reused.stderr
    listed = stack.api_get("security1", "/identities?status=retired")
    assert [r["username"] for r in listed] == ["vendor2"]
