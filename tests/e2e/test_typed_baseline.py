"""Typed commands as a baseline, end to end: a vendor types into a real shell (stock ssh -tt, the gateway, a real
sshd and its PTY, which echoes what is typed); the broker's watcher reads the programs back from the recording's
input and keeps them in the vendor's baseline — and a password typed blind at a prompt is not among them."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow


def _baseline_commands(stack: Stack) -> dict[str, Any]:
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(
                "SELECT b.profile FROM baselines b JOIN identities i ON i.id = b.identity_id "
                "WHERE i.username = 'vendor1'")).scalars().all()
    finally:
        engine.dispose()
    commands: dict[str, Any] = {}
    for profile in rows:
        loaded = json.loads(profile) if isinstance(profile, str) else profile
        commands.update(loaded.get("commands") or {})
    return commands


def test_programs_typed_in_a_recorded_shell_reach_the_vendors_baseline(stack: Stack) -> None:
    grant = stack.fresh_grant("hmi-01", "--for", "10m", "--reason", "e2e typed commands")
    home = stack.home("vendor1")
    stack.gatepass("ssh-config", user="vendor1")
    args = ["ssh", "-tt", "-p", str(stack.ssh_port), "-i", str(home / "id_ed25519"),
            "-o", f"CertificateFile={home / 'certs' / 'hmi-01-cert.pub'}", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "hmi-01@127.0.0.1"]
    shell = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    keyboard, screen = shell.stdin, shell.stdout
    assert keyboard is not None
    assert screen is not None
    os.set_blocking(screen.fileno(), False)
    seen = b""

    def typing(line: str, *, then: bytes) -> None:
        """Type a line as a person does, once the shell is ready for it, and wait for what it prints."""
        nonlocal seen
        keyboard.write(line.encode() + b"\n")
        keyboard.flush()
        deadline = time.monotonic() + 15
        while then not in seen and time.monotonic() < deadline:
            select.select([screen], [], [], 0.2)
            seen += screen.read() or b""
        assert then in seen, seen

    try:
        typing("uname -s", then=b"Linux")
        # The echo goes off as at a password prompt: what is typed then must not become a "program".
        typing("stty -echo; echo ECHO-OFF; read secret; stty echo; echo ECHO-ON", then=b"ECHO-OFF\r\n")
        typing("hunter2", then=b"ECHO-ON")
        typing("hostname; echo DONE", then=b"DONE\r\n")
        keyboard.write(b"exit\n")
        keyboard.close()
        assert shell.wait(timeout=15) == 0
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        screen.close()
        if shell.stderr is not None:
            shell.stderr.close()
    assert b"hunter2" not in seen  # the terminal did not show it
    ended = stack.grant_event("gateway:session:ended", grant["id"])
    assert ended["details"]["recording"]["name"]

    deadline = time.monotonic() + 15  # the watcher reads the trail every half second
    while not {"uname", "hostname"} <= set(commands := _baseline_commands(stack)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {"uname", "stty", "hostname"} <= set(commands)
    assert "hunter2" not in commands
