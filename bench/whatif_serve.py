"""`gatepass serve` with runtime tweaks, to measure what a gateway change would be worth before making it.

Not product code and not used by default. The benchmarks run it instead of `gatepass serve` when
BENCH_SERVE_COMMAND names it, e.g.

  BENCH_SERVE_COMMAND=".venv/bin/python bench/whatif_serve.py --uvloop --gcm" \\
      .venv/bin/python -m bench --only throughput

  --uvloop  run the whole process (broker + gateway) on uvloop's event loop instead of asyncio's
  --gcm     AES-GCM for the gateway's SSH: its server side offers only aes128-gcm/aes256-gcm (the client's
            preference wins in SSH, so offering chacha20-poly1305 at all means OpenSSH picks it), and its
            client side (to the target) prefers aes128-gcm; asyncssh's chacha20-poly1305 is slow
  --quickack  until a connection has authenticated, set TCP_QUICKACK on its socket after every read
            (Linux), so the OpenSSH client's small back-to-back handshake packets are not held by Nagle
            waiting for a delayed ACK (~40 ms each time it happens); affects every asyncssh connection
            in the process (client side to the target included)
  --no-watch  no watcher (broker.app.watch_trail idles): what baselines and flags cost a burst, e.g. the
            1,000 tunnel connections of bench_tunnels, whose session-start events it reads while they open
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _prefer_gcm() -> None:
    import asyncssh

    def wrap(function: Any, algorithms: tuple[str, ...]) -> Any:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("encryption_algs", list(algorithms))
            return function(*args, **kwargs)

        return wrapper

    asyncssh.create_server = wrap(asyncssh.create_server, GCM)
    asyncssh.connect = wrap(asyncssh.connect, (*GCM, "chacha20-poly1305@openssh.com", "aes128-ctr", "aes256-ctr"))


def _quickack() -> None:
    import socket

    from asyncssh.connection import SSHConnection

    original = SSHConnection.data_received

    def data_received(self: Any, data: bytes, datatype: Any = None) -> None:
        original(self, data, datatype)
        if not getattr(self, "_auth_complete", True) and self._transport is not None:
            sock = self._transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    SSHConnection.data_received = data_received  # type: ignore[method-assign]


def _no_watch() -> None:
    import asyncio as _asyncio

    import broker.app

    async def idle(_state: Any) -> None:
        await _asyncio.Event().wait()

    broker.app.watch_trail = idle  # type: ignore[assignment]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--gcm", action="store_true")
    parser.add_argument("--quickack", action="store_true")
    parser.add_argument("--no-watch", action="store_true")
    args, rest = parser.parse_known_args()
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.gcm:
        _prefer_gcm()
    if args.quickack:
        _quickack()
    if args.no_watch:
        _no_watch()
    from cli.main import main as gatepass_main

    return gatepass_main(["serve", *rest])


if __name__ == "__main__":
    sys.exit(main())
