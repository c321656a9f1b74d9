"""A session that runs nothing: it tells the user on stderr why, then exits with status 1."""

from __future__ import annotations

from collections.abc import Callable

import asyncssh
from asyncssh.misc import TermModes, TermSize

# Exit status sent when the gateway refuses a session before anything ran on the target.
REFUSED_EXIT_STATUS = 1


class NoticeSession(asyncssh.SSHServerSession[bytes]):
    """A session that only tells the user why nothing runs, on stderr, and exits 1.

    It waits for the client's shell/exec/subsystem request before answering: an exit status that
    arrives before that request confuses some clients (asyncssh's fails outright).
    """

    def __init__(self, message: str, on_delivered: Callable[[], None] | None = None) -> None:
        self._message = message
        self._on_delivered = on_delivered
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, term_type: str, term_size: TermSize, term_modes: TermModes) -> bool:  # noqa: ARG002
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:  # noqa: ARG002
        return True

    def subsystem_requested(self, subsystem: str) -> bool:  # noqa: ARG002
        return True

    def session_started(self) -> None:
        if self._chan is not None:
            self._chan.write_stderr(self._message.encode() + b"\r\n")
            self._chan.exit(REFUSED_EXIT_STATUS)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
        # The client closes its end only after writing our stderr out: now a disconnect cannot
        # overtake the message (OpenSSH exits on a disconnect without flushing its buffers).
        if self._on_delivered is not None:
            self._on_delivered()
