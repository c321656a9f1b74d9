"""`gatepass tunnel` stopped (Ctrl-C, kill, hang-up) at any moment ends, with its ssh: also when the signal comes
while ssh is being started, before the keeper knows its child (a held tunnel's ssh never exits on its own)."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
import time

from cli.sshargs import Gateway, UsableGrant
from cli.tunnel_keeper import TERM_AGAIN, TunnelKeeper

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
# Stands in for `ssh -N -L` to a held tunnel: runs until it is told to stop.
FOREVER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _keeper(notes: list[str]) -> TunnelKeeper:
    grant = UsableGrant(id="grt-1", asset="plc-01", status="active", starts_at=NOW, ends_at=NOW + dt.timedelta(hours=1),
                        ssh=False, ports=(502,), certificate=None,
                        gateway=Gateway(host="127.0.0.1", port=2222, host_key="ssh-ed25519 AAAA"))
    return TunnelKeeper(argv=FOREVER, grant=grant, check_grant=lambda: None, note=notes.append, clock=lambda: NOW)


def test_a_stop_while_ssh_is_starting_stops_the_new_ssh() -> None:
    notes: list[str] = []
    keeper = _keeper(notes)
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen_then_signal(argv: list[str]) -> subprocess.Popen[bytes]:
        child = real_popen(argv)
        started.append(child)
        keeper._stop(signal.SIGTERM, None)  # the signal lands after the fork, before the keeper holds the child
        return child

    subprocess.Popen = popen_then_signal  # type: ignore[assignment, misc]
    result: list[int] = []
    try:
        runner = threading.Thread(target=lambda: result.append(keeper._loop()), daemon=True)
        runner.start()
        runner.join(timeout=20)
    finally:
        subprocess.Popen = real_popen  # type: ignore[misc]
        for child in started:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert not runner.is_alive(), "the keeper waited for an ssh nothing stopped"
    assert result == [0]
    assert notes == ["gatepass: tunnel stopped"]
    assert started[0].returncode == -signal.SIGTERM


# Stands in for OpenSSH 9.2's ssh when a TERM lands in its signal race (upstream bug 3531): the first TERM is
# handled and changes nothing; it goes on until a keep-alive, here 600 s.
MISSES_ONE_TERM = ["/bin/sh", "-c", "trap 'trap - TERM' TERM; echo ready; while :; do sleep 0.05; done"]


def test_a_stopped_tunnel_sends_term_again_until_ssh_exits() -> None:
    notes: list[str] = []
    keeper = _keeper(notes)
    keeper.argv = MISSES_ONE_TERM
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(argv: list[str]) -> subprocess.Popen[bytes]:
        child = real_popen(argv, stdout=subprocess.PIPE)
        started.append(child)
        return child

    subprocess.Popen = popen  # type: ignore[assignment, misc]
    result: list[int] = []
    try:
        runner = threading.Thread(target=lambda: result.append(keeper._loop()), daemon=True)
        runner.start()
        deadline = time.monotonic() + 10
        while not started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started[0].stdout is not None
        assert started[0].stdout.readline() == b"ready\n"  # its trap is set
        stopped = time.monotonic()
        keeper._stop(signal.SIGTERM, None)
        runner.join(timeout=10)
        elapsed = time.monotonic() - stopped
    finally:
        subprocess.Popen = real_popen  # type: ignore[misc]
        for child in started:
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()
    assert not runner.is_alive(), "the keeper waited for an ssh that missed its TERM"
    assert elapsed < TERM_AGAIN + 2
    assert result == [0]
    assert notes == ["gatepass: tunnel stopped"]
    assert started[0].returncode == -signal.SIGTERM
