"""Standing access for automation end to end (issue 11): the plant approves once with `gatepass admin standing
add`; the joined service's `gatepass request` is then granted at once for at most an hour and its `gatepass ssh`
runs through `gatepass serve` to a real sshd, audited like any session; once revoked, requests wait for the plant."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess

import pytest

from tests.e2e.stack import GATEPASS, Stack

pytestmark = pytest.mark.slow

SERVICE = "exporter"


def test_a_service_with_standing_access_is_granted_at_once_and_runs_its_command(stack: Stack) -> None:
    stack.gatepass("admin", "user", "add", SERVICE, "--role", "vendor", "--kind", "service", "--owner", "sup-a1",
                   "--purpose", "exports the historian every night", "--site", "plant-a")
    token = json.loads(stack.gatepass("admin", "identity", "join-token", SERVICE, "--json").stdout)["token"]
    stack.gatepass("join", "--server", stack.base_url, "--token", token, user=SERVICE)
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).date().isoformat()
    policy = json.loads(stack.gatepass("admin", "standing", "add", SERVICE, "--asset", "hmi-01", "--ssh", "--until",
                                       until, "--json").stdout)

    request = stack.request(SERVICE, "hmi-01", "--for", "4h", "--reason", "nightly export")

    assert request["status"] == "approved"
    grant = request["grant"]
    lasted = dt.datetime.fromisoformat(grant["ends_at"]) - dt.datetime.fromisoformat(grant["starts_at"])
    assert lasted == dt.timedelta(hours=1)
    done = subprocess.run([GATEPASS, "ssh", "hmi-01", "--", "uname", "-n"], env=stack.env(stack.home(SERVICE)),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert (done.returncode, done.stdout) == (0, socket.gethostname() + "\n"), done.stderr
    started = stack.grant_event("gateway:session:started", grant["id"])
    assert (started["actor"], started["details"]["kind"]) == (SERVICE, "exec")
    used = [e for e in stack.audit_events() if e["action"] == "access:standing_policy:used"]
    assert [(e["subject"], e["details"]["grant"]) for e in used] == [(policy["id"], grant["id"])]

    stack.gatepass("admin", "standing", "revoke", policy["id"], "--reason", "export moved")
    assert stack.request(SERVICE, "hmi-01", "--for", "30m", "--reason", "nightly export")["status"] == "pending"
