"""End to end: a vendor's stock `ssh -tt` runs printf commands through the real gateway of `gatepass serve`;
the gateway records the session; a security reviewer finds it in the browser by its text, plays it back, and
the player's screen shows what the ssh client received; `gatepass audit verify` checks the recording."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import expect

from broker.recordings import asciicast, terminal
from tests.e2e.stack import GATEPASS, Stack

pytestmark = pytest.mark.slow

# Cursor movement, CR overwrite and an erase, as a terminal program would draw them.
COMMAND = ("printf 'alpha beta\\n'; printf 'progress 10%%\\rprogress 100%%\\n'; "
           "printf 'pump P-101: stale\\033[5D\\033[Kok\\n'; printf 'x\\033[1A\\033[5Cup\\n'")


def _approved_grant(stack: Stack) -> dict[str, Any]:
    return stack.fresh_grant("hmi-01", "--for", "10m", "--reason", "e2e recorded maintenance")


def _ssh_tt(stack: Stack, command: str) -> subprocess.CompletedProcess[bytes]:
    home = stack.home("vendor1")
    stack.gatepass("ssh-config", user="vendor1")  # writes the certificate and the pinned gateway key
    args = ["ssh", "-tt", "-p", str(stack.ssh_port), "-i", str(home / "id_ed25519"),
            "-o", f"CertificateFile={home / 'certs' / 'hmi-01-cert.pub'}", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "hmi-01@127.0.0.1", command]
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)


def test_reviewer_playback_shows_what_the_ssh_client_received(stack: Stack, browser: Any) -> None:
    grant = _approved_grant(stack)

    received = _ssh_tt(stack, COMMAND)

    assert received.returncode == 0, received.stderr
    client_text = received.stdout.decode()
    assert "progress 100%" in client_text
    ended = stack.grant_event("gateway:session:ended", grant["id"])
    session_id, recording = ended["subject"], ended["details"]["recording"]
    path = stack.data / "recordings" / recording["name"]
    cast = asciicast.read_cast(path)
    # The recording holds exactly the bytes the client got on its terminal, in order.
    assert "".join(text for _t, code, text in cast.events if code == "o") == client_text
    assert cast.gatepass["session"] == session_id
    # What the client's terminal showed at the end (same size as recorded), worked out from what ssh received.
    screen = terminal.Screen(cast.width, cast.height)
    screen.feed(client_text)
    shown = screen.text(scrollback=False).split("\n")
    assert shown[-3:] == ["progress 100%", "pump Pup01: ok", "x"], shown

    stack.add_user("reviewer-e2e", "security")
    creds = stack.users["reviewer-e2e"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        page.goto(stack.base_url + "/sign-in")
        page.get_by_label("Username").fill("reviewer-e2e")
        page.get_by_label("Password").fill(creds["password"])
        page.get_by_label("One-time code").fill(pyotp.TOTP(creds["totp_secret"]).now())
        page.get_by_label("Enrolment code").fill(creds["enrolment_code"])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        assert "/sign-in" not in page.url, page.locator("main").inner_text()

        page.goto(stack.base_url + "/review/sessions")
        page.get_by_label("Identity").fill("vendor1")
        page.get_by_label("Text in transcript").fill("pump P-101: stale")
        page.get_by_role("button", name="Search").click()
        page.get_by_role("link", name=session_id).click()
        expect(page.locator("#recording-status")).to_have_text("intact")
        page.get_by_role("button", name="Speed 16x").click()
        page.get_by_role("button", name="Play").click()
        expect(page.locator(".player")).to_have_attribute("data-state", "ended", timeout=15_000)
        rows = [line.rstrip() for line in page.locator("[data-player=screen]").text_content().split("\n")]
        while rows and not rows[-1]:
            rows.pop()
        assert rows == shown
    finally:
        context.close()

    verified = subprocess.run([GATEPASS, "audit", "verify"], env=stack.env(), capture_output=True, text=True,
                              timeout=60, check=False)
    assert verified.returncode == 0, verified.stderr
    assert "recordings checked" in verified.stdout
    # And an edit to the file is caught.
    data = bytearray(path.read_bytes())
    data[data.index(b"alpha")] ^= 0x20
    Path(path).write_bytes(bytes(data))
    edited = subprocess.run([GATEPASS, "audit", "verify"], env=stack.env(), capture_output=True, text=True,
                            timeout=60, check=False)
    assert edited.returncode == 1
    assert session_id in edited.stderr
    assert "EDITED" in edited.stderr
    assert json.loads(subprocess.run([GATEPASS, "audit", "verify", "--json"], env=stack.env(), capture_output=True,
                                     text=True, timeout=60, check=False).stdout)["recording_problems"]
