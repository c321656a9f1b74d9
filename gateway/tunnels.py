"""TCP forwarding (``ssh -L``) to a granted port of the asset, as a pair of asyncio Protocols.

The destination host comes from the asset inventory (invariant 1), never from the client's request;
the client's host name only has to name that asset. Bytes go channel → socket and socket → channel
straight from the callbacks; each side pauses the other when its buffer fills. A tunnel the broker recorded can be
watched live (``gateway/tunnel_feed.py``): its byte counts are read from here by the feed, not pushed per chunk.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

import asyncssh

from gateway.context import GatewayContext, report_end
from gateway.errors import BrokerCallFailed, BrokerRefused
from gateway.models import Authorization
from gateway.protocols import read_only_refusal
from gateway.tunnel_feed import TunnelWatch

if TYPE_CHECKING:
    from gateway.observers import LiveRegistry

logger = logging.getLogger("gatepass.gateway.tunnels")

# Host names a client may put in `-L LOCAL:HOST:PORT` to mean "the asset of this grant".
_SELF_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class TunnelHost(Protocol):
    ctx: GatewayContext
    peer: str

    def tunnel_ended(self, tunnel: TunnelSession) -> None: ...

    def cut_reason(self) -> tuple[str, str | None] | None: ...

    def cut(self, reason: str, message: str, detail: str | None = None) -> None: ...


def check_forward(auth: Authorization, dest_host: str, dest_port: int) -> str:
    """The inventory address to connect to, or ChannelOpenError saying why not."""
    granted = ", ".join(str(port) for port in auth.ports)
    if not auth.ports:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "TCP forwarding is not part of this grant"
        )
    host = auth.target.host if auth.target is not None else auth.asset_host
    if dest_host not in {auth.asset, host, *_SELF_NAMES}:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
            f"this grant reaches {auth.asset} only, not {dest_host}",
        )
    if dest_port not in auth.ports:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
            f"port {dest_port} on {auth.asset} is not part of this grant (granted: {granted})",
        )
    if auth.read_only and (why := read_only_refusal(dest_port)) is not None:
        # Fail closed: a read-only grant is never relayed unfiltered.
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, why)
    if host is None:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED, f"the inventory has no network address for {auth.asset}"
        )
    return host


async def open_tunnel(
    host: TunnelHost,
    auth: Authorization,
    address: str,
    port: int,
    make_session: Callable[[TunnelHost, str | None], TunnelSession] | None = None,
) -> TunnelSession:
    """Record the session with the broker, connect to the asset, return the channel's session object."""
    session_id: str | None = None
    try:
        session_id = await host.ctx.broker.session_start(grant_id=auth.grant_id, kind="tcp", peer=host.peer, port=port)
    except BrokerRefused as exc:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, exc.message) from None
    except BrokerCallFailed as exc:
        # Fail closed, as for sessions: no connection the audit trail cannot hold.
        logger.warning("tunnel on grant %s refused: the broker cannot record it: %s", auth.grant_id, exc)
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED,
            f"the connection to {auth.asset} cannot be recorded right now (the broker is unreachable)",
        ) from None
    tunnel = (make_session or TunnelSession)(host, session_id)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(
            loop.create_connection(lambda: _TargetSide(tunnel), address, port),
            host.ctx.settings.target_connect_timeout,
        )
    except (OSError, TimeoutError) as exc:
        tunnel.failed(str(exc) or type(exc).__name__)
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED, f"{auth.asset} port {port} does not answer"
        ) from None
    if host.ctx.live is not None and session_id is not None:
        tunnel.watchable(host.ctx.live, session_id=session_id, peer=host.peer, port=port)
    return tunnel


class TunnelSession(asyncssh.SSHTCPSession[bytes]):
    """SSH side of one forwarded connection."""

    def __init__(self, host: TunnelHost, session_id: str | None) -> None:
        self._host = host
        self._session_id = session_id
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._error: str | None = None
        self._client_gone: str | None = None  # how the client's side went away, if it did not close cleanly
        self._reported = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.watch: TunnelWatch | None = None  # set once it can be watched (the broker recorded it)

    def watchable(self, registry: LiveRegistry, *, session_id: str, peer: str, port: int) -> None:
        self.watch = TunnelWatch(registry, session_id=session_id, peer=peer, port=port,
                                 totals=lambda: (self.bytes_in, self.bytes_out), end=self._end_by_observer)

    def _end_by_observer(self, message: str) -> None:
        """End session from the watch view: the connection is cut as on a revocation (the broker revokes the grant
        too); the vendor's ssh prints the observer's line as the disconnect reason."""
        if self.watch is not None:
            self.watch.note(message)
        self._host.cut("revoked", message, "ended by an observer")

    def target_connected(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Nothing may be read from the asset until the SSH channel exists to carry it.
        transport.pause_reading()

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan

    def session_started(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:  # noqa: ARG002
        self.bytes_in += len(data)
        if self._transport is not None:
            self._transport.write(data)

    def eof_received(self) -> bool:
        if self._transport is not None and self._transport.can_write_eof():
            self._transport.write_eof()
        return True

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._transport.close()
        if exc is not None:
            self._client_gone = str(exc)
        self._report()

    def terminate(self) -> None:
        """Close both sides now (the grant ended)."""
        if self._transport is not None:
            self._transport.abort()
        if self._chan is not None:
            self._chan.close()

    def failed(self, reason: str) -> None:
        self._error = f"target connection failed: {reason}"
        self._report()

    # -- asset side ------------------------------------------------------------------------------

    def target_data(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self._chan is not None:
            self._chan.write(data)

    def target_eof(self) -> None:
        if self._chan is not None:
            self._chan.write_eof()

    def target_closed(self, exc: Exception | None) -> None:
        if exc is not None and self._error is None:
            self._error = f"target connection lost: {exc}"
        if self._chan is not None:
            self._chan.close()

    def target_paused(self) -> None:
        if self._chan is not None:
            self._chan.pause_reading()

    def target_resumed(self) -> None:
        if self._chan is not None:
            self._chan.resume_reading()

    def _report(self) -> None:
        if self._reported:
            return
        self._reported = True
        self._host.tunnel_ended(self)
        if self.watch is not None:
            self.watch.closed(self._error or self._client_gone)
        report_end(self._host, self._session_id, self._error, self.bytes_in, self.bytes_out,
                   client_gone=self._client_gone)


class _TargetSide(asyncio.Protocol):
    def __init__(self, tunnel: TunnelSession) -> None:
        self._tunnel = tunnel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_connection gives a Transport; uvloop's TCPTransport is not a subclass of asyncio's, so
        # no isinstance check here (it failed every forward under `gatepass serve`, which runs on uvloop).
        self._tunnel.target_connected(cast("asyncio.Transport", transport))

    def data_received(self, data: bytes) -> None:
        self._tunnel.target_data(data)

    def eof_received(self) -> bool:
        self._tunnel.target_eof()
        return True

    def pause_writing(self) -> None:
        self._tunnel.target_paused()

    def resume_writing(self) -> None:
        self._tunnel.target_resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._tunnel.target_closed(exc)
