"""Containment from the web, end to end: a supervisor clicks `Lock down plant` in real Chromium and a live
stock-ssh session through the real gateway (`gatepass serve` in its own process, OpenSSH sshd as the plant
machine) ends within one second (DESIGN invariant 2)."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pyotp
import pytest
from playwright.sync_api import expect

from tests.e2e.stack import GATEPASS, Stack

pytestmark = pytest.mark.slow


def test_lockdown_button_cuts_a_live_ssh_session_within_a_second(stack: Stack, page: Any) -> None:
    # A supervisor of plant-a who has not used a one-time code yet (the fixture's users signed in on the CLI).
    stack.add_user("sup-web", "supervisor", "plant-a")
    creds = stack.users["sup-web"]

    request = stack.request("vendor1", "hmi-01", "--for", "10m", "--reason", "web lockdown drill")
    stack.approve("sup-a1", request["id"])
    grant_id = stack.grant_of("vendor1", request["id"])["id"]
    session = subprocess.Popen([GATEPASS, "ssh", "hmi-01", "--", "echo ready; sleep 60"],
                               env=stack.env(stack.home("vendor1")), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert session.stdout is not None
        assert session.stdout.readline().strip() == "ready"

        page.goto(stack.base_url + "/sign-in")
        page.get_by_label("Username").fill("sup-web")
        page.get_by_label("Password").fill(creds["password"])
        page.get_by_label("One-time code").fill(pyotp.TOTP(creds["totp_secret"]).now())
        page.get_by_label("Enrolment code").fill(creds["enrolment_code"])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(stack.base_url + "/approvals")
        expect(page.locator("#sessions").get_by_role("button", name="End session")).to_have_count(1, timeout=6_000)

        page.get_by_label("Reason (optional)").fill("ransomware alarm: cut plant-a")
        with page.expect_response(lambda answer: answer.url.endswith("/approvals/sites/plant-a/lockdown")) as posted:
            page.get_by_role("button", name="Lock down plant").click()
        assert posted.value.status == 303
        committed = time.monotonic()  # the answer comes after the lockdown's transaction committed
        _, stderr = session.communicate(timeout=10)
        elapsed = time.monotonic() - committed
        assert elapsed < 1.0, f"the session ended {elapsed:.2f} s after the lockdown"
        assert "locked down" in stderr
        expect(page.get_by_role("status")).to_contain_text("Plant locked down")
    finally:
        if session.poll() is None:
            session.kill()
            session.communicate()
        stack.gatepass("admin", "site", "lift", "plant-a", check=False)

    ended = [e for e in stack.audit_events() if e["action"] == "gateway:session:ended"
             and e["details"]["grant"] == grant_id]
    assert [e["details"]["reason"] for e in ended] == ["lockdown"]
    locked = [e for e in stack.audit_events() if e["action"] == "containment:site:locked_down"]
    assert locked[-1]["actor"] == "sup-web"
    assert locked[-1]["details"]["reason"] == "ransomware alarm: cut plant-a"
