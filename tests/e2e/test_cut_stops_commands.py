"""A cut stops what the vendor started, end to end (issue 15): `gatepass ssh` sessions on a real sshd that logs in a
dedicated unprivileged user; after a revocation, an expiry or a lockdown nothing of theirs runs there 3 s later."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.stack import GATEPASS, Stack
from tests.fixtures.sshd import TARGET_LOGIN, OpenSSHServer, start_sshd

pytestmark = pytest.mark.slow

ASSET = "hmi-t"
COMMANDS = ("echo ready; sleep 600", "echo ready; while :; do sleep 1; done", "sleep 600 & echo ready",
            "nohup setsid sleep 601 >/dev/null 2>&1 & echo ready; sleep 600")


def wait_for(condition: str, check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{condition} did not happen within {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def login_machine(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[OpenSSHServer]:
    """A second plant machine, logging in only TARGET_LOGIN, as asset hmi-t in plant-a."""
    server = start_sshd(tmp_path_factory.mktemp("login-sshd"), username=TARGET_LOGIN)
    try:
        stack.gatepass("admin", "asset", "add", ASSET, "--site", "plant-a", "--host", server.host,
                       "--ssh-port", str(server.port), "--ssh-user", server.username,
                       "--ssh-key-file", str(server.client_private_key), "--host-key", server.host_key)
        yield server
    finally:
        server.kill_login_processes()
        server.stop()


def fresh_grant(stack: Stack, duration: str = "10m") -> str:
    grant_id: str = stack.fresh_grant(ASSET, "--for", duration, "--reason", "issue 15: what a cut stops")["id"]
    return grant_id


def start_sessions(stack: Stack, machine: OpenSSHServer) -> list[subprocess.Popen[str]]:
    """The vendor's sessions: three commands without a PTY, and an interactive shell (a PTY) running sleep 700."""
    env = stack.env(stack.home("vendor1"))
    sessions = []
    for command in COMMANDS:
        session = subprocess.Popen([GATEPASS, "ssh", ASSET, "--", command], env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert session.stdout is not None
        assert session.stdout.readline().strip() == "ready"
        sessions.append(session)
    # `script` gives the stock ssh client a terminal, so it asks for a PTY and a shell, as a person's would.
    shell = subprocess.Popen(["script", "-qfec", shlex.join([GATEPASS, "ssh", ASSET]), "/dev/null"], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert shell.stdin is not None
    wait_for("a shell prompt", lambda: any("-bash" in line for line in machine.login_processes()))
    shell.stdin.write("sleep 700\n")
    shell.stdin.flush()
    sessions.append(shell)
    wait_for("sleep 700 in the PTY shell", lambda: any("sleep 700" in line for line in machine.login_processes()))
    wait_for("the background job", lambda: any("sleep 601" in line for line in machine.login_processes()))
    return sessions


def outputs(sessions: list[subprocess.Popen[str]], timeout: float) -> str:
    text = ""
    for session in sessions:
        out, err = session.communicate(timeout=timeout)
        text += (out or "") + (err or "")
    return text


@pytest.mark.parametrize("cut", ["revocation", "expiry", "lockdown"])
def test_after_a_cut_nothing_of_the_session_runs_on_the_machine(stack: Stack, login_machine: OpenSSHServer,
                                                                 cut: str) -> None:
    assert login_machine.is_running()
    grant_id = fresh_grant(stack, "25s" if cut == "expiry" else "10m")
    sessions = start_sessions(stack, login_machine)
    try:
        if cut == "revocation":
            stack.gatepass("revoke", grant_id, user="sup-a1")
        elif cut == "lockdown":
            stack.gatepass("admin", "site", "lockdown", "plant-a", "--reason", "issue 15 drill")
        else:
            assert all(session.poll() is None for session in sessions), "a session ended before the grant did"
        committed = time.monotonic()
        deadline = time.monotonic() + (40 if cut == "expiry" else 10)
        wait_for("the end of every session", lambda: all(s.poll() is not None for s in sessions),
                 timeout=deadline - time.monotonic())
        cut_seen = time.monotonic()
        if cut != "expiry":  # the vendor's access ends within a second, whatever the target does (invariant 2)
            assert cut_seen - committed < 1.0, f"the sessions ended {cut_seen - committed:.2f} s after the {cut}"
        said = outputs(sessions, timeout=5)
    finally:
        for session in sessions:
            if session.poll() is None:
                session.kill()
                session.communicate()
        if cut == "lockdown":
            stack.gatepass("admin", "site", "lift", "plant-a")

    assert f"the commands of this session on {ASSET} are being stopped (TERM now, KILL after 2 s)" in said
    left_at = cut_seen + 3.0
    while (left := login_machine.login_processes()) and time.monotonic() < left_at:
        time.sleep(0.05)
    assert left == [], f"still running as {TARGET_LOGIN} 3 s after the cut: {left}"

    ended = stack.grant_events("gateway:session:ended", grant_id, count=len(sessions), timeout=15)
    assert len(ended) == len(sessions)
    for event in ended:
        stop = event["details"]["stop"]
        assert stop["signals"][0] == "TERM"
        assert stop["sweep_error"] is None
    commands = {event["subject"]: event["details"]["command"] or event["details"]["kind"]
                for event in stack.grant_events("gateway:session:started", grant_id, count=len(sessions))}
    stops = {commands[event["subject"]]: event["details"]["stop"] for event in ended}
    # Each `gatepass ssh` is a connection of its own, swept on its own: where a job outlived its shell, the
    # sweep is what reached it.
    assert stops["sleep 600 & echo ready"]["swept"]["TERM"] >= 1
    assert stops[COMMANDS[3]]["swept"]["TERM"] >= 1
    assert stops["echo ready; sleep 600"]["exit"] == "signal TERM"
    assert stops["shell"]["signals"] == ["TERM", "KILL"]  # an interactive bash ignores TERM


def test_a_session_that_ends_by_itself_gets_no_signal(stack: Stack, login_machine: OpenSSHServer) -> None:
    assert login_machine.is_running()
    grant_id = fresh_grant(stack)
    result = stack.gatepass("ssh", ASSET, "--", "echo done", user="vendor1")
    assert result.stdout == "done\n"
    assert "gatepass:" not in result.stderr
    [event] = stack.grant_events("gateway:session:ended", grant_id)
    assert event["details"]["reason"] == "client_closed"
    assert "stop" not in event["details"]
    wait_for("the end of the session's processes", lambda: login_machine.login_processes() == [], timeout=3)

