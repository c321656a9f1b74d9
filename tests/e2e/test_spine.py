"""The spine, end to end: vendor requests, the plant approves, stock ssh reaches the machine through the
gateway with the grant certificate, and the session is cut on time — with real ssh, sshd and `gatepass serve`."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import GATEPASS, Stack

pytestmark = pytest.mark.slow


def _approved_grant(stack: Stack, asset: str = "hmi-01", duration: str = "10m", *extra: str) -> dict[str, str]:
    """A fresh grant for vendor1; earlier ones for the asset are revoked so this is the one `gatepass ssh` uses."""
    return stack.fresh_grant(asset, "--for", duration, "--reason", "e2e maintenance", *extra)


def _ssh_args(stack: Stack, user: str, asset: str, *, cert: Path | None = None) -> list[str]:
    home = stack.home(user)
    known_hosts = home / "known_hosts"
    return ["ssh", "-p", str(stack.ssh_port), "-i", str(home / "id_ed25519"),
            "-o", f"CertificateFile={cert or home / 'certs' / f'{asset}-cert.pub'}",
            "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{asset}@127.0.0.1"]


def _login_refusal(stack: Stack, reason: str, timeout: float = 10) -> dict[str, Any]:
    """The gateway:auth:refused event whose certificate attempt says ``reason`` (the gateway reports it when the
    refused connection closes)."""
    deadline = time.monotonic() + timeout
    while True:
        for event in stack.audit_events():
            attempts = event["details"].get("attempts", []) if event["action"] == "gateway:auth:refused" else []
            if any(a["kind"] == "certificate" and a["reason"].startswith(reason) for a in attempts):
                return event
        assert time.monotonic() < deadline, f"no gateway:auth:refused event saying {reason!r}"
        time.sleep(0.1)


def _start_ssh(stack: Stack, command: str) -> subprocess.Popen[str]:
    return subprocess.Popen([GATEPASS, "ssh", "hmi-01", "--", command], env=stack.env(stack.home("vendor1")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_exec_reaches_the_machine_with_output_and_exit_code(stack: Stack) -> None:
    grant = _approved_grant(stack)
    result = stack.gatepass("ssh", "hmi-01", "--", "echo hello from $(hostname); exit 7", user="vendor1",
                            check=False)
    assert result.returncode == 7, result.stderr
    assert "hello from" in result.stdout
    ended = [e for e in stack.audit_events() if e["action"] == "gateway:session:ended"
             and e["details"]["grant"] == grant["id"]]
    assert ended
    assert ended[-1]["details"]["reason"] == "client_closed"
    assert ended[-1]["details"]["bytes_out"] > 0


def test_stock_ssh_with_the_grant_certificate_and_stdin(stack: Stack) -> None:
    _approved_grant(stack)
    stack.gatepass("ssh-config", user="vendor1")  # writes the certificate and the pinned gateway key
    result = subprocess.run([*_ssh_args(stack, "vendor1", "hmi-01"), "wc -c"], input="twelve bytes",
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "12"


def test_interactive_shell_gets_a_pty_with_the_client_window_size(stack: Stack) -> None:
    _approved_grant(stack)
    stack.gatepass("ssh-config", user="vendor1")
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    process = subprocess.Popen(_ssh_args(stack, "vendor1", "hmi-01"), stdin=terminal, stdout=terminal,
                               stderr=terminal, start_new_session=True)
    os.close(terminal)
    output = b""
    try:
        os.write(controller, b"stty size; tty; exit 5\n")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    output += os.read(controller, 4096)
                except OSError:
                    break
        process.wait(timeout=10)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    text = output.decode(errors="replace")
    assert "33 111" in text, text
    assert "/dev/pts/" in text, text
    assert process.returncode == 5


def test_no_grant_means_no_connection(stack: Stack) -> None:
    result = stack.gatepass("ssh", "hmi-b", "--", "true", user="vendor2", check=False)
    assert result.returncode != 0
    assert "hmi-b" in result.stderr
    assert "request" in result.stderr


def test_certificate_for_one_asset_does_not_open_another(stack: Stack) -> None:
    _approved_grant(stack)
    stack.gatepass("ssh-config", user="vendor1")
    cert = stack.home("vendor1") / "certs" / "hmi-01-cert.pub"
    result = subprocess.run([*_ssh_args(stack, "vendor1", "hmi-b", cert=cert), "true"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    event = _login_refusal(stack, "certificate is for hmi-01, not hmi-b")
    assert (event["actor"], event["subject"], event["details"]["source"]) == ("vendor1", "hmi-b", "127.0.0.1")


def test_certificate_of_another_ca_is_refused(stack: Stack, tmp_path: Path) -> None:
    _approved_grant(stack)
    stack.gatepass("ssh-config", user="vendor1")
    rogue_ca = tmp_path / "rogue_ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(rogue_ca)], check=True)
    key = tmp_path / "id_ed25519"
    subprocess.run(["cp", str(stack.home("vendor1") / "id_ed25519.pub"), f"{key}.pub"], check=True)
    subprocess.run(["ssh-keygen", "-q", "-s", str(rogue_ca), "-I", "gatepass grant=grt-00000000 identity=vendor1",
                    "-n", "hmi-01", "-V", "-5m:+1h", f"{key}.pub"], check=True)
    result = subprocess.run([*_ssh_args(stack, "vendor1", "hmi-01", cert=tmp_path / "id_ed25519-cert.pub"),
                             "true"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    event = _login_refusal(stack, "certificate signed by a CA this gateway does not trust")
    assert event["actor"] is None  # a rogue CA's key id names whoever the forger likes


def test_scheduled_grant_is_refused_until_it_starts(stack: Stack) -> None:
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(microsecond=0).isoformat()
    request = stack.request("vendor2", "hmi-01", "--for", "1h", "--reason", "tomorrow's job", "--start", start)
    stack.approve("sup-a1", request["id"])
    result = stack.gatepass("ssh", "hmi-01", "--", "true", user="vendor2", check=False)
    assert result.returncode != 0
    assert "starts" in result.stderr or "not yet" in result.stderr


def test_expired_certificate_is_refused(stack: Stack) -> None:
    grant = _approved_grant(stack, "hmi-01", "2s")
    stack.gatepass("ssh-config", user="vendor1")  # pins the gateway's host key
    cert_copy = stack.home("vendor1") / "expired-cert.pub"
    cert_copy.write_text(stack.api_get("vendor1", f"/grants/{grant['id']}")["certificate"] + "\n")
    ends_at = dt.datetime.fromisoformat(grant["ends_at"])
    time.sleep(max(0.0, (ends_at - dt.datetime.now(dt.UTC)).total_seconds()) + 0.5)
    result = subprocess.run([*_ssh_args(stack, "vendor1", "hmi-01", cert=cert_copy), "true"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    assert _login_refusal(stack, "certificate expired at")["actor"] == "vendor1"


def test_session_is_cut_within_a_second_of_the_grant_end(stack: Stack) -> None:
    grant = _approved_grant(stack, "hmi-01", "6s")
    process = _start_ssh(stack, "sleep 60")
    _, stderr = process.communicate(timeout=30)
    ended = dt.datetime.now(dt.UTC)
    lateness = (ended - dt.datetime.fromisoformat(grant["ends_at"])).total_seconds()
    assert process.returncode != 0
    assert -0.2 < lateness < 1.0, f"cut {lateness:.3f}s after the grant end"
    assert "ended" in stderr or "expired" in stderr
    reasons = [e["details"]["reason"] for e in stack.audit_events()
               if e["action"] == "gateway:session:ended" and e["details"]["grant"] == grant["id"]]
    assert reasons == ["expired"]


def test_session_is_cut_within_a_second_of_revocation(stack: Stack) -> None:
    grant = _approved_grant(stack)
    process = _start_ssh(stack, "sleep 60")
    stack.grant_event("gateway:session:started", grant["id"])
    revoked_at = time.monotonic()
    stack.gatepass("revoke", grant["id"], user="sup-a1")
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - revoked_at < 1.0 + 0.5  # the revoke command's own start-up is inside this
    assert "revoked" in stderr
    reasons = [e["details"]["reason"] for e in stack.audit_events()
               if e["action"] == "gateway:session:ended" and e["details"]["grant"] == grant["id"]]
    assert reasons == ["revoked"]


def test_two_approvals_for_a_high_criticality_machine(stack: Stack) -> None:
    request = stack.request("vendor1", "plc-01", "--for", "10m", "--reason", "PLC firmware")
    assert request["approvals_required"] == 2
    stack.approve("sup-a1", request["id"])
    again = stack.gatepass("approve", request["id"], user="sup-a1", check=False)
    assert again.returncode == 1
    assert "already" in again.stderr
    assert stack.gatepass("ssh", "plc-01", "--", "true", user="vendor1", check=False).returncode != 0
    stack.approve("sup-a2", request["id"])
    assert stack.gatepass("ssh", "plc-01", "--", "true", user="vendor1", check=False).returncode == 0


def test_approvals_belong_to_the_plant(stack: Stack) -> None:
    request = stack.request("vendor2", "hmi-01", "--for", "10m", "--reason", "look at alarms")
    other_plant = stack.gatepass("approve", request["id"], user="sup-b", check=False)
    assert other_plant.returncode == 1
    assert "plant-a" in other_plant.stderr
    pending = stack.gatepass("requests", "--pending", "--json", user="sup-b").stdout
    assert request["id"] not in pending
    refused = [e for e in stack.audit_events() if e["action"] == "access:decision:refused"
               and e["subject"] == request["id"]]
    assert refused
    assert refused[-1]["actor"] == "sup-b"


def test_audit_chain_verifies_after_all_of_it(stack: Stack) -> None:
    result = subprocess.run([GATEPASS, "audit", "verify"], env=stack.env(), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "intact" in result.stdout
