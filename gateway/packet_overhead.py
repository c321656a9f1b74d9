"""Per-packet work asyncssh (2.24) does that the gateway has no use for, left out; the bytes on the wire are unchanged
but for one packet that carries nothing.

Every byte a vendor moves crosses the gateway as SSH packets, so what asyncssh does per packet is what the relay
costs. Two things it does are of no use here (bench/README.md, session 10: together about a fifth of the gateway's
time per megabyte of an interactive session, and ``ssh -L`` through the gateway went from 0.89 to over 0.95 of
OpenSSH's own forwarding):

- **An empty SSH_MSG_IGNORE ahead of every packet** once a connection is encrypted: the old countermeasure for CBC
  modes, whose next IV is predictable (RFC 4251 §9.3.1). The gateway never negotiates CBC (gateway.algorithms:
  AES-GCM towards vendors; AES-GCM, AES-CTR and ChaCha20-Poly1305 towards plant machines), so each such packet
  protects nothing and costs a second AEAD call, a second ``getrandom`` for its padding and a second ``send``.
  ``skip_empty_ignore_packets`` wraps one connection's ``send_packet`` (asyncssh calls it through the instance,
  itself included) and drops exactly that packet: type SSH_MSG_IGNORE, an empty string as its data.
- **A log line formatted for every packet** (its type's name, its length in words, and for a received one a copy
  of its payload) and then thrown away unless asyncssh's packet log is on (``asyncssh.set_debug_level(3)`` and the
  ``asyncssh`` logger at DEBUG). ``skip_unlogged_packet_lines`` makes that formatting wait until the logger would
  write it (the packet's handler's logger at DEBUG): with the packet log on, every line is written as before.

pyproject.toml pins asyncssh <2.25; tests/gateway/test_packet_overhead.py fails if asyncssh stops doing either
thing the way these expect, if the gateway sends either again, and if a CBC cipher is ever offered.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncssh
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import SSHPacketLogger

# The one argument asyncssh sends with its IGNORE: String(b""), a zero length and no bytes.
_EMPTY_STRING = (b"\0\0\0\0",)


def skip_empty_ignore_packets(conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection) -> None:
    """From now on ``conn`` sends no empty SSH_MSG_IGNORE; every other packet as before."""
    send_packet = conn.send_packet  # the class's, bound to this connection

    def without_empty_ignore(pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == _EMPTY_STRING:
            return
        send_packet(pkttype, *args, handler=handler)

    conn.send_packet = without_empty_ignore  # type: ignore[method-assign]


def skip_unlogged_packet_lines() -> None:
    """From now on, in this process, asyncssh formats a packet's log line only if its logger would write it.

    Process-wide (connections, channels, SFTP: everything that logs packets goes through ``SSHPacketLogger``);
    safe to call again."""
    if getattr(SSHPacketLogger.log_sent_packet, "gatepass_lazy", False):
        return
    SSHPacketLogger.log_sent_packet = _when_logged(SSHPacketLogger.log_sent_packet)  # type: ignore[method-assign]
    SSHPacketLogger.log_received_packet = _when_logged(  # type: ignore[method-assign]
        SSHPacketLogger.log_received_packet)


def _when_logged(log: Any) -> Any:
    def log_when_written(self: SSHPacketLogger, *args: Any, **kwargs: Any) -> None:
        # The handler's own logger (``asyncssh``, or a child such as ``asyncssh.sftp`` with a level of its own);
        # logging caches the answer until a level changes.
        if self.logger.isEnabledFor(logging.DEBUG):
            log(self, *args, **kwargs)

    log_when_written.gatepass_lazy = True  # type: ignore[attr-defined]
    log_when_written.__doc__ = log.__doc__
    return log_when_written
