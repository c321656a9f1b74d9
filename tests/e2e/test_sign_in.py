"""Sign-in hardening as deployed (`gatepass serve` in its own process): uvicorn does not believe X-Forwarded-For
from its loopback peer, and a new account's first `gatepass login` needs the enrolment code."""

from __future__ import annotations

import httpx
import pyotp

from tests.e2e.stack import Stack


def test_serve_does_not_take_the_source_from_x_forwarded_for(stack: Stack) -> None:
    """uvicorn's own proxy_headers would believe the header from 127.0.0.1 (its default forwarded_allow_ips):
    anyone on the host could then choose the source the throttles and the trail see."""
    response = httpx.post(f"{stack.base_url}/api/v1/auth/login", timeout=10,
                          json={"username": "e2e-ghost", "password": "guess", "totp": "123456"},
                          headers={"X-Forwarded-For": "203.0.113.99"})

    assert response.status_code == 401
    [event] = [e for e in stack.audit_events() if e["action"] == "auth:login:failed" and e["actor"] == "e2e-ghost"]
    assert event["details"]["source"] == "127.0.0.1"


def test_a_new_accounts_first_gatepass_login_needs_the_enrolment_code(stack: Stack) -> None:
    stack.add_user("vendor-e2e", "vendor")
    creds = stack.users["vendor-e2e"]
    assert set(creds) == {"username", "password", "totp_secret", "enrolment_code"}
    assert set(stack.users["admin"]) == {"username", "password", "totp_secret", "enrolment_code"}  # init --json
    password_file = stack.home("vendor-e2e") / "password"
    password_file.write_text(creds["password"] + "\n")
    login = ["login", "--server", stack.base_url, "--user", "vendor-e2e", "--password-file", str(password_file),
             "--totp", pyotp.TOTP(creds["totp_secret"]).now()]

    refused = stack.gatepass(*login, user="vendor-e2e", check=False)
    assert refused.returncode == 1
    assert "sign-in refused" in refused.stderr

    stack.gatepass(*login, "--enrolment-code", creds["enrolment_code"], user="vendor-e2e")
    assert stack.api_get("vendor-e2e", "/me")["username"] == "vendor-e2e"
    used = [e for e in stack.audit_events() if e["action"] == "auth:enrolment_code:used"]
    assert [e["actor"] for e in used if e["actor"] == "vendor-e2e"] == ["vendor-e2e"]
