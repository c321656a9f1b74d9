"""The gateway's SSH connections do not send an empty SSH_MSG_IGNORE before every packet.

asyncssh (2.24), once a connection is encrypted, sends an empty SSH_MSG_IGNORE ahead of every packet after the
key exchange: the old countermeasure for CBC modes, where the next packet's IV is predictable (OpenSSH did this for
CBC in the 2000s; RFC 4251 §9.3.1). The gateway never negotiates CBC (gateway.algorithms: AES-GCM towards vendors;
AES-GCM, AES-CTR and ChaCha20-Poly1305 towards plant machines, whose IVs or nonces are not taken from the last
ciphertext), so each of those packets protects nothing and costs the relay a second AEAD call, a second
``getrandom`` for its padding and a second ``send``: about a tenth of the gateway's time per megabyte in a tunnel
or a bulk download (bench/README.md, session 10).

``skip_empty_ignore_packets`` wraps one connection's ``send_packet`` (asyncssh calls it through the instance,
itself included) and drops exactly that packet: type SSH_MSG_IGNORE with an empty string as its data. Anything
else, an IGNORE with content included, goes out as before. pyproject.toml pins asyncssh <2.25;
tests/gateway/test_ignore_packets.py fails if asyncssh stops sending the packet this way or the wrapper stops
taking it out, and if a CBC cipher is ever offered (the countermeasure would then be needed again).
"""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh.constants import MSG_IGNORE

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
