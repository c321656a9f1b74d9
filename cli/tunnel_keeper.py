"""Keep one ``ssh -N -L`` running while its grant lasts: rerun it after a network drop, stop when the grant ends.

ssh exits 255 both when the link dies and when the gateway cuts the grant; only the broker knows which,
so every exit is followed by a look at the grant (``GET /grants/{id}``). A dead link is noticed by ssh's
own keep-alives (``ServerAliveInterval``/``ServerAliveCountMax``, set by ``sshargs.keepalive_options``).
"""

from __future__ import annotations

import datetime as dt
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from cli.errors import ClientError, LocalSetupError
from cli.sshargs import UsableGrant, format_time

# Seconds to wait before each reconnect; the last one repeats until the grant ends.
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
# A run of ssh this long counts as a working tunnel: the next drop starts the back-off from the beginning.
STABLE_RUN = 30.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Seconds between TERMs to a stopped tunnel's ssh until it exits: OpenSSH before 9.6 (Debian 12 ships 9.2) can
# miss a TERM that lands between its main loop's check and its poll() (upstream bug 3531), and then sleeps until
# its next keep-alive, seconds later; a second TERM ends it at once.
TERM_AGAIN = 1.0


@dataclass(frozen=True)
class GrantEnd:
    """Why the tunnel must not come back, and the exit status for it."""

    message: str
    exit_code: int


GrantCheck = Callable[[], GrantEnd | None]


def grant_end(grant: UsableGrant, api_grant: dict[str, object] | None, now: dt.datetime) -> GrantEnd | None:
    """Whether the grant is over, from the broker's answer (None: the broker could not be asked) and the clock."""
    status = str(api_grant.get("status")) if api_grant is not None else None
    what = f"your grant {grant.id} for {grant.asset}"
    if status == "revoked":
        return GrantEnd(f"{what} was revoked: the tunnel is closed", 1)
    if status == "expired" or now >= grant.ends_at:
        return GrantEnd(f"{what} ended at {format_time(grant.ends_at)}: the tunnel is closed", 0)
    return None


@dataclass
class TunnelKeeper:
    """Runs ``argv`` (an ``ssh -N -L``) again and again until the grant ends or the user stops it."""

    argv: Sequence[str]
    grant: UsableGrant
    check_grant: GrantCheck
    note: Callable[[str], None]
    clock: Callable[[], dt.datetime]
    sleep_step: float = 0.1
    _child: subprocess.Popen[bytes] | None = None
    _stopped_by: int | None = None
    _previous: dict[int, object] = field(default_factory=dict)

    def run(self) -> int:
        self._install_handlers()
        try:
            return self._loop()
        finally:
            self._restore_handlers()

    def _loop(self) -> int:
        attempt = 0
        while True:
            started = time.monotonic()
            code = self._run_ssh()
            if self._stopped_by is not None:
                self.note("gatepass: tunnel stopped")
                return 0
            ended = self.check_grant()
            if ended is not None:
                self.note(f"gatepass: {ended.message}")
                return ended.exit_code
            if time.monotonic() - started >= STABLE_RUN:
                attempt = 0
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
            attempt += 1
            self.note(
                f"gatepass: the tunnel dropped (ssh exited with status {code}); the grant lasts until "
                f"{format_time(self.grant.ends_at)}: reconnecting in {delay:g} s"
            )
            if not self._wait(delay):
                self.note("gatepass: tunnel stopped")
                return 0

    def _run_ssh(self) -> int:
        try:
            self._child = subprocess.Popen(list(self.argv))  # argv from ssh_command, no shell
        except FileNotFoundError as exc:
            raise LocalSetupError(
                f"{self.argv[0]} was not found: install the OpenSSH client (or set GATEPASS_SSH_BIN)"
            ) from exc
        if self._stopped_by is not None:
            # Stopped while ssh was starting (the handler saw no child yet): without this, the wait below would
            # wait for an ssh that nothing stops, e.g. a held tunnel's, which never exits on its own.
            self._terminate_child()
        try:
            code = self._child.wait()
        finally:
            self._child = None
        return 128 - code if code < 0 else code

    def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` (less if the grant ends first); False if the user stopped the tunnel."""
        until = time.monotonic() + min(seconds, max(0.0, (self.grant.ends_at - self.clock()).total_seconds()))
        while time.monotonic() < until:
            if self._stopped_by is not None:
                return False
            time.sleep(self.sleep_step)
        return self._stopped_by is None

    # -- signals: Ctrl-C, kill and hang-up stop the tunnel (and its ssh) instead of restarting it ------

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stopped_by = signum
        self._terminate_child()

    def _terminate_child(self) -> None:
        """TERM to ssh, and again every TERM_AGAIN seconds (from a timer thread) while it still runs."""
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
            again = threading.Timer(TERM_AGAIN, self._terminate_child)
            again.daemon = True
            again.start()

    def _install_handlers(self) -> None:
        for signum in _STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._stop)
            except ValueError:  # not the main thread: signals stay as they are
                return

    def _restore_handlers(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()


def check_local_port(port: int) -> None:
    """Refuse a local port that is taken now, with the fix, instead of letting ssh fail on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ClientError(
                f"local port 127.0.0.1:{port} is not free ({exc.strerror}): choose another with --local-port"
            ) from None
