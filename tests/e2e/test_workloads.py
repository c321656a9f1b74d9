"""A service identity end to end (issue 11), with `gatepass serve`, the stock ssh and a real sshd: it joins with a
key made on its machine, is approved by the plant, runs a command through the gateway, never gets a terminal, a
password sign-in or a web session, and a copy of its machine's state is caught and locked while its other machine
keeps working."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from typing import Any

import httpx
import pytest

from tests.e2e.stack import GATEPASS, Stack

pytestmark = pytest.mark.slow

CSRF_FIELD = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def _join(stack: Stack, machine: str) -> dict[str, Any]:
    token = json.loads(stack.gatepass("admin", "identity", "join-token", "historian", "--json").stdout)["token"]
    joined: dict[str, Any] = json.loads(stack.gatepass("join", "--server", stack.base_url, "--token", token,
                                                       "--json", user=machine).stdout)
    return joined


def _approved(stack: Stack, machine: str) -> dict[str, Any]:
    request = stack.request(machine, "hmi-01", "--for", "10m", "--reason", "nightly historian export")
    stack.approve("sup-a1", request["id"])
    return stack.grant_of(machine, request["id"])


def _ssh(stack: Stack, machine: str, *command: str, ssh: str = "ssh") -> subprocess.CompletedProcess[str]:
    env = {**stack.env(stack.home(machine)), "GATEPASS_SSH_BIN": ssh}
    return subprocess.run([GATEPASS, "ssh", "hmi-01", *(["--", *command] if command else [])], env=env, text=True,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL, check=False)


def _events(stack: Stack, action: str, *, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in stack.audit_events() if e["action"] == action]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.fixture(scope="module")
def historian(stack: Stack) -> Stack:
    stack.gatepass("admin", "user", "add", "historian", "--role", "vendor", "--kind", "service", "--owner",
                   "sup-a1", "--purpose", "exports the plant historian every night", "--site", "plant-a")
    return stack


def test_a_service_joins_runs_a_command_and_never_gets_a_terminal_or_a_sign_in(historian: Stack) -> None:
    stack = historian
    joined = _join(stack, "historian")
    home = stack.home("historian")
    assert (home / "id_ed25519").stat().st_mode & 0o077 == 0
    assert stack.gatepass("whoami", user="historian").stdout.startswith("historian (service")
    assert joined["instance"]["status"] == "active"

    grant = _approved(stack, "historian")
    done = _ssh(stack, "historian", "uname")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Linux"
    assert stack.grant_event("gateway:session:started", grant["id"])["details"]["kind"] == "exec"

    # No terminal: the gateway refuses a PTY (ssh -tt insists on one, so nothing runs) ...
    forced = _ssh(stack, "historian", "tty", ssh="ssh -tt")
    assert (forced.returncode, forced.stdout) == (255, ""), forced.stderr
    assert "PTY allocation request failed" in forced.stderr
    # ... and an interactive shell.
    shell = _ssh(stack, "historian")
    assert shell.returncode != 0
    # ssh's own words; the gateway's notice ("interactive shells are not allowed") may come after ssh gave up.
    assert "shell request failed" in shell.stderr

    # No password sign-in: the API's one answer for every refused sign-in ...
    login = httpx.post(f"{stack.base_url}/api/v1/auth/login", timeout=10,
                       json={"username": "historian", "password": "anything", "totp": "123456"})
    assert (login.status_code, login.json()["error"]) == (401, "login_failed")
    # ... and no web session either.
    with httpx.Client(base_url=stack.base_url, follow_redirects=False, timeout=10) as browser:
        csrf = CSRF_FIELD.search(browser.get("/sign-in").text)
        assert csrf is not None
        page = browser.post("/sign-in", data={"csrf": csrf.group(1), "username": "historian",
                                              "password": "anything", "code": "123456"})
    assert page.status_code == 401
    assert "gatepass_session" not in page.cookies
    reasons = [e["details"]["reason"] for e in stack.audit_events()
               if e["action"] == "auth:login:failed" and e["actor"] == "historian"]
    assert reasons == ["service identities cannot sign in with a password"] * 2


def test_a_copied_machine_is_locked_and_the_other_machine_keeps_working(historian: Stack) -> None:
    stack = historian
    first = _join(stack, "historian-1")
    second = _join(stack, "historian-2")
    grant = _approved(stack, "historian-1")
    assert _ssh(stack, "historian-1", "true").returncode == 0
    # Someone copies the first machine's state directory (key, credential, counter) elsewhere.
    shutil.copytree(stack.home("historian-1"), stack.home("historian-1-copy"), dirs_exist_ok=True)

    renewed = stack.gatepass("renew", user="historian-1")
    caught = stack.gatepass("renew", user="historian-1-copy", check=False)

    assert "Renewed on" in renewed.stdout
    assert caught.returncode == 1
    assert f"instance {first['instance']['id']} of 'historian' is now locked" in caught.stderr
    [alert] = _events(stack, "workload:instance:locked")
    assert (alert["outcome"], alert["subject"], alert["details"]["cause"]) == (
        "refused", first["instance"]["id"], "stale_counter")
    # Everything the first machine held ends: its credential, and the grant issued for its key.
    assert stack.gatepass("whoami", user="historian-1", check=False).returncode == 1
    revoked = [e for e in stack.audit_events() if e["action"] == "access:grant:revoked" and e["subject"] == grant["id"]]
    assert revoked
    listing = json.loads(stack.gatepass("admin", "identity", "instances", "historian", "--json").stdout)
    states = {record["id"]: record["status"] for record in listing}
    assert states[first["instance"]["id"]] == "locked"
    assert states[second["instance"]["id"]] == "active"

    # The identity's other machine is untouched: it renews, is approved and runs its command.
    assert "Renewed on" in stack.gatepass("renew", user="historian-2").stdout
    _approved(stack, "historian-2")
    done = _ssh(stack, "historian-2", "uname")
    assert (done.returncode, done.stdout.strip()) == (0, "Linux"), done.stderr
