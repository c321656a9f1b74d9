"""Extending a live grant end to end: the vendor asks with `gatepass extend`, a supervisor approves with
`gatepass approve-extension`, and the running SSH session outlives the grant's old end without reconnecting."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time

import pytest

from tests.e2e.stack import GATEPASS, Stack

pytestmark = pytest.mark.slow


def test_an_approved_extension_moves_the_cut_off_of_a_live_session(stack: Stack) -> None:
    grant = stack.fresh_grant("hmi-01", "--for", "10s", "--reason", "e2e: short job that runs long")
    old_end = dt.datetime.fromisoformat(grant["ends_at"])
    process = subprocess.Popen([GATEPASS, "ssh", "hmi-01", "--", "echo ready; sleep 60"],
                               env=stack.env(stack.home("vendor1")), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        stack.grant_event("gateway:session:started", grant["id"])

        asked = json.loads(stack.gatepass("extend", grant["id"], "--for", "1m", "--reason", "needs a reboot",
                                          "--json", user="vendor1").stdout)
        assert asked["status"] == "pending"
        pending = stack.gatepass("extensions", "--pending", user="sup-a1").stdout
        assert asked["id"] in pending
        approved = stack.gatepass("approve-extension", asked["id"], "--json", user="sup-a1")
        assert dt.datetime.now(dt.UTC) < old_end, "the approval came after the old end: the test proves nothing"
        new_end = dt.datetime.fromisoformat(json.loads(approved.stdout)["new_ends_at"])
        assert new_end == old_end + dt.timedelta(minutes=1)

        # Still running two seconds after the old end: the gateway moved the cut-off.
        time.sleep(max(0.0, (old_end - dt.datetime.now(dt.UTC)).total_seconds()) + 2.0)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""

        # A new connection after the old end works too: the CLI fetches the re-issued certificate.
        fresh = stack.gatepass("ssh", "hmi-01", "--", "echo again", user="vendor1", check=False)
        assert fresh.returncode == 0, fresh.stderr
        assert "again" in fresh.stdout

        stack.gatepass("revoke", grant["id"], user="vendor1")
        _, stderr = process.communicate(timeout=15)
        assert "revoked" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    ended = [e["details"]["reason"] for e in stack.audit_events()
             if e["action"] == "gateway:session:ended" and e["details"]["grant"] == grant["id"]]
    assert "revoked" in ended
    assert "expired" not in ended
    actions = {e["action"] for e in stack.audit_events() if e["subject"] in (grant["id"], asked["id"])}
    assert {"access:extension:requested", "access:extension:approved", "access:grant:extended"} <= actions
