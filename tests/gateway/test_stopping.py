"""The process sweep's shell command on its own (POSIX shells, with and without a grep that knows -z), and the
site's cut grace as the gateway reads it from the broker."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import BrokerProtocolError
from gateway.models import Authorization
from gateway.stopping import _SWEEP

SHELLS = [shell for shell in ("/bin/dash", "/bin/bash") if Path(shell).exists()]


@pytest.fixture
def no_grep_z(tmp_path: Path) -> Path:
    """A PATH folder whose grep refuses -z, like a grep without it (the sweep must fall back to its loop)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    wrapper = folder / "grep"
    wrapper.write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in -*z*) exit 2;; esac; done\nexec /bin/grep "$@"\n')
    wrapper.chmod(0o755)
    return folder


@pytest.fixture
def connection() -> Iterator[tuple[str, subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """A made-up SSH_CONNECTION, a process carrying it, and one carrying another connection's."""
    ours = f"192.0.2.1 {uuid.uuid4().int % 60000 + 1024} 192.0.2.2 22"
    env = {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}
    mine = subprocess.Popen(["sleep", "60"], env={**env, "SSH_CONNECTION": ours})
    other = subprocess.Popen(["sleep", "60"], env={**env, "SSH_CONNECTION": ours + "0"})
    try:
        yield ours, mine, other
    finally:
        for process in (mine, other):
            process.kill()
            process.wait()


def run_sweep(shell: str, signal: str, ssh_connection: str, path: str) -> str:
    env = {"SSH_CONNECTION": ssh_connection, "PATH": path}
    return subprocess.run([shell, "-c", _SWEEP.replace("@SIGNAL@", signal)], env=env, capture_output=True,
                          text=True, timeout=30, check=True).stdout


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("grep_z", [True, False], ids=["grep -z", "loop"])
def test_the_sweep_signals_exactly_the_processes_of_its_connection(
    shell: str, grep_z: bool, no_grep_z: Path,
    connection: tuple[str, subprocess.Popen[bytes], subprocess.Popen[bytes]],
) -> None:
    ours, mine, other = connection
    path = "/usr/bin:/bin" if grep_z else f"{no_grep_z}:/usr/bin:/bin"

    assert run_sweep(shell, "0", ours, path) == "gatepass-swept 1\n"  # counts, signals nothing
    assert mine.poll() is None
    assert run_sweep(shell, "TERM", ours, path) == "gatepass-swept 1\n"
    assert mine.wait(timeout=5) == -15
    assert other.poll() is None, "a process of another SSH connection must never be touched"
    assert run_sweep(shell, "KILL", ours, path) == "gatepass-swept 0\n"


def _authorization(**fields: Any) -> dict[str, Any]:
    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    return {"grant_id": "grt-1", "identity": "vendor1", "identity_kind": "human", "asset": "hmi-01",
            "site": "plant-a", "starts_at": now.isoformat(), "ends_at": (now + timedelta(hours=1)).isoformat(),
            "ssh": True, "interactive": True, "ports": [], "target": None, **fields}


def test_the_cut_grace_comes_from_the_authorization_with_a_default_for_older_brokers() -> None:
    assert Authorization.from_json(_authorization()).cut_grace == 2.0
    assert Authorization.from_json(_authorization(cut_grace_ms=500)).cut_grace == 0.5
    assert Authorization.from_json(_authorization(cut_grace_ms=0)).cut_grace == 0.0


@pytest.mark.parametrize("value", [-1, 30_001, "2s", 1.5, True])
def test_a_cut_grace_outside_the_contract_is_a_protocol_error(value: object) -> None:
    with pytest.raises(BrokerProtocolError, match="cut_grace_ms"):
        Authorization.from_json(_authorization(cut_grace_ms=value))
