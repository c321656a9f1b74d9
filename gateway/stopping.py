"""Stopping what a cut session started on the target: signals to its command, then a sweep of its processes.

A cut closes the vendor's channels at once (DESIGN invariant 2); what the vendor started on the target is
stopped behind it, bounded by the site's grace (``Authorization.cut_grace``):

1. Each shell/exec channel gets the SSH ``signal`` request TERM (RFC 4254 §6.9), and KILL if the target has
   not closed the channel within the grace; then the channel is closed. OpenSSH's sshd (7.9 and later) sends it
   to the process group of the shell running the command, and only while that shell runs: a job left behind by
   a shell that already ended (``ssh host 'sleep 600 &'``, which holds the channel open through its output) or
   one in a process group of its own (``setsid``, an interactive shell's jobs) is not reached.
2. So the gateway also sweeps the login's processes of *this* SSH connection, on the same connection: a
   small POSIX shell command sends the signal to every process of the login whose environment carries this
   connection's ``SSH_CONNECTION`` (sshd sets it per connection; children inherit it). TERM at the cut; once
   the channels are closed, if any such process is left, KILL when the grace is over. It needs a Linux
   ``/proc`` and a POSIX shell on the target; where either is missing the sweep reports an error
   and only step 1 and closing the channels remain (see README, "What a cut stops").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from gateway.errors import GatewayError

logger = logging.getLogger("gatepass.gateway.stopping")

# After KILL, how long the target has to confirm the end (exit-signal/exit-status, then close).
KILL_WAIT = 1.0
# Longest a sweep command may take on the target (it forks two small processes per process of the login).
SWEEP_TIMEOUT = 5.0
# Signals the gateway ever sends on a cut, in the order it sends them.
STOP_SIGNALS = ("TERM", "KILL")

# Run by the target login's shell on the cut connection; prints how many processes it signalled. The processes
# are those whose /proc/PID/environ holds this connection's SSH_CONNECTION (readable only for the login's own
# processes, mode 0400): with one `grep -z` over all of them where grep has -z (GNU, busybox), else one check per
# process. The script and the helpers it forks are dead or skipped by the time it signals; @SIGNAL@ is TERM, KILL
# or 0 (count only), never anything a vendor typed.
_SWEEP = (
    'c="SSH_CONNECTION=$SSH_CONNECTION"; s=$$; n=0; '
    "if printf 'a\\000' | grep -qzx a 2>/dev/null; then "
    'l=$(grep -lzxF "$c" /proc/[0-9]*/environ 2>/dev/null); '
    "else l=; for f in /proc/[0-9]*/environ; do "
    'if [ -r "$f" ] && tr "\\000" "\\n" < "$f" 2>/dev/null | grep -qxF "$c"; then l="$l $f"; fi; done; fi; '
    'for f in $l; do p=${f#/proc/}; p=${p%/environ}; '
    'if [ "$p" != "$s" ] && kill -@SIGNAL@ "$p" 2>/dev/null; then n=$((n+1)); fi; done; '
    'echo "gatepass-swept $n"'
)


@dataclass(eq=False)
class TargetStop:
    """What was done to stop one session's command on the target, for its end event (docs/API.md)."""

    grace: float
    signals: list[str] = field(default_factory=list)
    exit: str | None = None  # "signal TERM", "status 0": what the target said about the command's end
    confirmed: bool = False  # the target closed the channel itself, after an exit-status or exit-signal
    swept: dict[str, int] = field(default_factory=dict)  # signal -> processes of the connection it reached
    sweep_error: str | None = None
    # Set once the channel part is over (confirmed, or closed by the gateway after KILL).
    channel_done: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once everything is over, the sweep included: the session's end is reported then.
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    # True when the connection sweeps after this channel (a whole-connection cut): it sets ``finished``.
    awaits_sweep: bool = False

    def as_json(self) -> dict[str, Any]:
        stop: dict[str, Any] = {"signals": list(self.signals), "confirmed": self.confirmed, "exit": self.exit,
                                "grace_ms": round(self.grace * 1000)}
        if self.swept or self.sweep_error:
            stop["swept"] = dict(self.swept)
            stop["sweep_error"] = self.sweep_error
        return stop


async def sweep(conn: asyncssh.SSHClientConnection, signal: str) -> int:
    """Send ``signal`` to every process of this connection's login session(s); how many it reached. Signal
    ``0`` only counts them.

    Raises ``SweepFailed`` when the target cannot run the sweep (no POSIX shell or /proc, a refused channel).
    """
    if signal not in (*STOP_SIGNALS, "0"):
        raise ValueError(f"not a stop signal: {signal}")
    try:
        # The target connection is opened with encoding=None for the relays; the sweep speaks text.
        command = _SWEEP.replace("@SIGNAL@", signal)
        result = await asyncio.wait_for(conn.run(command, check=False, encoding="utf-8"), SWEEP_TIMEOUT)
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        raise SweepFailed(str(exc) or type(exc).__name__) from None
    output = result.stdout if isinstance(result.stdout, str) else ""
    for line in output.splitlines():
        if line.startswith("gatepass-swept "):
            with contextlib.suppress(ValueError):
                return int(line.removeprefix("gatepass-swept "))
    error = result.stderr if isinstance(result.stderr, str) else ""
    raise SweepFailed(f"the target could not run the sweep (exit {result.exit_status}): {error.strip()[:200]}")


class SweepFailed(GatewayError):
    """The target did not run the process sweep; the message says what it answered."""


async def sweep_connection(conn: asyncssh.SSHClientConnection, stops: list[TargetStop], *, grace: float) -> None:
    """TERM every process of the connection now; once the channels are closed, KILL what is left, if anything,
    when the grace is over. A command that ends on TERM is therefore reported at once, not after the grace.

    Fills in each stop's ``swept``/``sweep_error`` and sets its ``finished``; never raises.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    errors: list[str] = []

    async def one(signal: str) -> int | None:
        try:
            count = await sweep(conn, signal)
        except SweepFailed as exc:
            logger.warning("the %s sweep of a cut connection failed: %s", signal, exc)
            errors.append(f"{'count' if signal == '0' else signal}: {exc}")
            return None
        if signal != "0":
            for stop in stops:
                stop.swept[signal] = count
        return count

    try:
        await one("TERM")
        await asyncio.gather(*(stop.channel_done.wait() for stop in stops))
        if await one("0") != 0:
            # The grace counts for background jobs too: they got TERM at the cut, like the commands did.
            await asyncio.sleep(max(0.0, grace - (loop.time() - started)))
            await one("KILL")
    finally:
        for stop in stops:
            stop.sweep_error = "; ".join(errors) or None
            stop.finished.set()
