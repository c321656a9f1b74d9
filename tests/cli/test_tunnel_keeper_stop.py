"""`gatepass tunnel` stopped (Ctrl-C, kill, hang-up) at any moment ends, with its ssh: also when the signal comes
while ssh is being started, before the keeper knows its child (a held tunnel's ssh never exits on its own), and
when ssh misses the TERM (OpenSSH 9.2's signal race)."""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

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


class Running:
    """A keeper's ``_loop`` in a thread, with every ssh it starts (``subprocess.Popen`` swapped for the test)."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []
        self.result: list[int] = []
        self.runner: threading.Thread | None = None


@contextlib.contextmanager
def keeper_running(keeper: TunnelKeeper, *, after_start: Callable[[], None] | None = None,
                   stdout: int | None = None) -> Iterator[Running]:
    """Run ``keeper`` in a thread; ``after_start`` is called right after each ssh is started (before the keeper
    holds it). Every child is killed, reaped and closed at the end."""
    running = Running()
    real_popen = subprocess.Popen

    def popen(argv: list[str]) -> subprocess.Popen[bytes]:
        child = real_popen(argv, stdout=stdout)
        running.started.append(child)
        if after_start is not None:
            after_start()
        return child

    subprocess.Popen = popen  # type: ignore[assignment, misc]
    try:
        running.runner = threading.Thread(target=lambda: running.result.append(keeper._loop()), daemon=True)
        running.runner.start()
        yield running
    finally:
        subprocess.Popen = real_popen  # type: ignore[misc]
        for child in running.started:
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()


def test_a_stop_while_ssh_is_starting_stops_the_new_ssh() -> None:
    notes: list[str] = []
    keeper = _keeper(notes)
    # The signal lands after the fork, before the keeper holds the child.
    with keeper_running(keeper, after_start=lambda: keeper._stop(signal.SIGTERM, None)) as running:
        assert running.runner is not None
        running.runner.join(timeout=20)
    assert not running.runner.is_alive(), "the keeper waited for an ssh nothing stopped"
    assert running.result == [0]
    assert notes == ["gatepass: tunnel stopped"]
    assert running.started[0].returncode == -signal.SIGTERM


# Stands in for OpenSSH 9.2's ssh when a TERM lands in its signal race (upstream bug 3531): the first TERM is
# handled and changes nothing; it goes on until a keep-alive, here 600 s.
MISSES_ONE_TERM = ["/bin/sh", "-c", "trap 'trap - TERM' TERM; echo ready; while :; do sleep 0.05; done"]


def test_a_stopped_tunnel_sends_term_again_until_ssh_exits() -> None:
    notes: list[str] = []
    keeper = _keeper(notes)
    keeper.argv = MISSES_ONE_TERM
    with keeper_running(keeper, stdout=subprocess.PIPE) as running:
        assert running.runner is not None
        deadline = time.monotonic() + 10
        while not running.started and time.monotonic() < deadline:
            time.sleep(0.01)
        stdout = running.started[0].stdout
        assert stdout is not None
        assert stdout.readline() == b"ready\n"  # its trap is set
        stopped = time.monotonic()
        keeper._stop(signal.SIGTERM, None)
        running.runner.join(timeout=10)
        elapsed = time.monotonic() - stopped
    assert not running.runner.is_alive(), "the keeper waited for an ssh that missed its TERM"
    assert elapsed < TERM_AGAIN + 2
    assert running.result == [0]
    assert notes == ["gatepass: tunnel stopped"]
    assert running.started[0].returncode == -signal.SIGTERM
