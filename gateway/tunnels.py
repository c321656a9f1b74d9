"""TCP forwarding (``ssh -L``) to a granted port of the asset, as a pair of asyncio Protocols.

The destination host comes from the asset inventory (invariant 1), never from the client's request;
the client's host name only has to name that asset. Bytes go channel → socket and socket → channel
straight from the callbacks; each side pauses the other when its buffer fills. A tunnel the broker recorded can be
watched live (``gateway/tunnel_feed.py``): its byte counts are read from here by the feed, not pushed per chunk.

At a site (or asset) that requires supervision (issue 13) the vendor's channel opens, but the asset is connected
only once a supervisor of the site watches the session (``gateway/supervised.py``); when the last one leaves,
neither side is read any more (TCP and SSH flow control hold the bytes at their senders) and the connection is cut
after the site's grace unless one watches again.
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
from gateway.supervised import TUNNEL_WORDS, SupervisedHold
from gateway.tunnel_feed import TunnelWatch

if TYPE_CHECKING:
    from gateway.observers import LiveRegistry

logger = logging.getLogger("gatepass.gateway.tunnels")

# Host names a client may put in `-L LOCAL:HOST:PORT` to mean "the asset of this grant".
_SELF_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# What a held tunnel may keep of bytes delivered before reading stopped: asyncssh hands over at most one SSH packet
# (32 KiB) after the channel is paused, an asyncio transport one read (256 KiB). More means reading did not stop:
# the tunnel is closed rather than buffering on (fail closed, bounded memory).
MAX_HELD_BYTES = 512 * 1024


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
    """Record the session with the broker, connect to the asset, return the channel's session object.

    A supervised session is returned before the asset is connected: it connects once a supervisor watches."""
    live = host.ctx.live
    if auth.supervision_required and live is None:
        # Nobody could ever watch it, so it could never run (fail closed).
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
            f"{auth.asset} requires a supervisor of {auth.site} to watch every session, and this gateway cannot be "
            "watched",
        )
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
    if auth.supervision_required and live is not None:
        # Watchable before anything is connected: watching it is what lets it through.
        tunnel.watchable(live, session_id=session_id, peer=host.peer, port=port)
        tunnel.hold_until_supervised(auth, address, port)
        return tunnel
    try:
        await _connect(tunnel, address, port, host.ctx.settings.target_connect_timeout)
    except (OSError, TimeoutError) as exc:
        tunnel.failed(str(exc) or type(exc).__name__)
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED, f"{auth.asset} port {port} does not answer"
        ) from None
    if live is not None:
        tunnel.watchable(live, session_id=session_id, peer=host.peer, port=port)
    return tunnel


async def _connect(tunnel: TunnelSession, address: str, port: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.create_connection(lambda: _TargetSide(tunnel), address, port), timeout)


class TunnelSession(asyncssh.SSHTCPSession[bytes]):
    """SSH side of one forwarded connection.

    Subclasses that look at the bytes (the Modbus tally and read-only filter) override ``from_client`` and
    ``target_data``, the relay itself; ``data_received`` and the asset side's callbacks only decide whether bytes
    may pass now (a held session's may not)."""

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
        # Whether bytes may pass now: False while a supervised session waits for, or has lost, its supervisor.
        self._relaying = True
        self._started = False  # the client's channel is open
        self._asset_full = False  # the asset's socket cannot take more: the client's channel is not read
        self._client_full = False  # the client's channel cannot take more: the asset is not read
        # What arrived as reading stopped for a hold (bounded by MAX_HELD_BYTES), passed on once relaying again.
        self._held_from_client: list[bytes] = []
        self._held_from_asset: list[bytes] = []
        self._held_bytes = 0
        self._held_client_eof = False
        self._held_asset_eof = False
        self.hold: SupervisedHold | None = None
        self._hold_line: str | None = None  # what the hold said last (a new observer reads it first)
        self._release: asyncio.Task[None] | None = None

    def watchable(self, registry: LiveRegistry, *, session_id: str, peer: str, port: int) -> None:
        self.watch = TunnelWatch(registry, session_id=session_id, peer=peer, port=port,
                                 totals=lambda: (self.bytes_in, self.bytes_out), end=self._end_by_observer,
                                 state=self._hold_state)

    def _end_by_observer(self, message: str) -> None:
        """End session from the watch view: the connection is cut as on a revocation (the broker revokes the grant
        too); the vendor's ssh prints the observer's line as the disconnect reason."""
        if self.watch is not None:
            self.watch.note(message)
        self._host.cut("revoked", message, "ended by an observer")

    # -- supervision (gateway/supervised.py) -----------------------------------------------------

    def hold_until_supervised(self, auth: Authorization, address: str, port: int) -> None:
        """Relay nothing until a supervisor of the site watches; then connect to the asset.

        The asset is not even connected before that (rather than connected and left silent): nothing of the vendor's
        reaches the plant unwatched, not a TCP handshake either — a PLC serves only a few connections (a held one
        could lock out the plant's own HMI), some protocols act or log on connect, and the plant's IDS sees no
        vendor connection nobody watches. The price: a port that does not answer shows only once a supervisor
        watches (the vendor's connection then closes; the watch view and the session's end say why)."""
        # The cut ends the whole SSH connection, as for a shell: the disconnect reason is the only line a tunnel's
        # client (`ssh -N -L`) prints.
        self.hold = SupervisedHold(auth, warn=self._note, pause=self._stop_relaying, resume=self._start_relaying,
                                   cut=lambda line: self._host.cut("revoked", line, "unsupervised"),
                                   words=TUNNEL_WORDS)
        self._relaying = False
        if self.watch is not None:
            self.watch.live.on_supervision = self.hold.changed
        self._release = asyncio.ensure_future(self._connect_when_supervised(auth, address, port))

    async def _connect_when_supervised(self, auth: Authorization, address: str, port: int) -> None:
        assert self.hold is not None  # noqa: S101 - set before this task starts
        await self.hold.released()
        if self._reported or self._host.cut_reason() is not None:
            return
        try:
            await _connect(self, address, port, self._host.ctx.settings.target_connect_timeout)
        except (OSError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            logger.info("supervised tunnel %s: %s port %d does not answer: %s", self._session_id, auth.asset, port, why)
            self._error = f"target connection failed: {why}"
            if self._chan is not None:
                self._chan.close()  # connection_lost reports the end, with this error
            else:
                self._report()
            return
        if self._reported:  # the client went while the asset was being connected
            if self._transport is not None:
                self._transport.close()
            return
        if not self.hold.held:
            self._start_relaying()

    def _note(self, line: str) -> None:
        """A tunnel has no terminal: what the hold says goes to its observers and the log."""
        self._hold_line = line
        logger.info("tunnel session %s: %s", self._session_id, line)
        if self.watch is not None:
            self.watch.note(line)

    def _hold_state(self) -> str | None:
        return None if self._relaying else self._hold_line

    def _stop_relaying(self) -> None:
        """Hold both directions: neither side is read, so each sender's flow control holds its bytes."""
        self._relaying = False
        if self._chan is not None:
            self._chan.pause_reading()
        if self._transport is not None:
            self._transport.pause_reading()

    def _start_relaying(self) -> None:
        """Released, or a supervisor is back: what was held passes on, then both sides are read again."""
        if self._transport is None or self._reported:
            return  # not connected yet: the connection starts relaying once it is (unless held again by then)
        self._relaying = True
        from_client, from_asset = self._held_from_client, self._held_from_asset
        self._held_from_client, self._held_from_asset, self._held_bytes = [], [], 0
        for data in from_client:
            self.from_client(data)
        if self._held_client_eof:
            self._held_client_eof = False
            self._client_eof()
        for data in from_asset:
            self.target_data(data)
        if self._held_asset_eof:
            self._held_asset_eof = False
            self.target_eof()
        self._read_client()
        self._read_asset()

    def _keep(self, held: list[bytes], data: bytes) -> None:
        self._held_bytes += len(data)
        held.append(data)
        if self._held_bytes > MAX_HELD_BYTES:
            logger.warning("tunnel session %s: %d bytes arrived while held; closing it", self._session_id,
                           self._held_bytes)
            self._error = self._error or "bytes kept arriving while the session was held"
            self.terminate()

    def _read_client(self) -> None:
        if self._chan is not None and self._relaying and not self._asset_full:
            self._chan.resume_reading()

    def _read_asset(self) -> None:
        if self._transport is not None and self._relaying and self._started and not self._client_full:
            self._transport.resume_reading()

    # -- client side -----------------------------------------------------------------------------

    def target_connected(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Nothing may be read from the asset until the SSH channel exists to carry it.
        transport.pause_reading()
        self._read_asset()

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan

    def session_started(self) -> None:
        self._started = True
        self._read_asset()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:  # noqa: ARG002
        if not self._relaying and self.answer_while_held(data):
            return
        if not self._relaying:
            # asyncssh resumes reading a channel right after session_started, so a held session can get one chunk:
            # it stops reading here and keeps the chunk for when bytes may pass.
            if self._chan is not None:
                self._chan.pause_reading()
            self._keep(self._held_from_client, data)
            return
        self.from_client(data)

    def answer_while_held(self, data: bytes) -> bool:
        """A protocol-aware tunnel may answer the client's requests itself while held (the Modbus one does before its
        first supervisor); True if it took ``data``. Here: no, the bytes are kept for the release."""
        del data
        return False

    def from_client(self, data: bytes) -> None:
        """The client's bytes on their way to the asset (overridden by the Modbus tally and filter)."""
        self.bytes_in += len(data)
        if self._transport is not None:
            self._transport.write(data)

    def eof_received(self) -> bool:
        if not self._relaying:
            self._held_client_eof = True  # passed on after what it follows
        else:
            self._client_eof()
        return True

    def _client_eof(self) -> None:
        if self._transport is not None and self._transport.can_write_eof():
            self._transport.write_eof()

    def pause_writing(self) -> None:
        self._client_full = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._client_full = False
        self._read_asset()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._release is not None:
            self._release.cancel()
        if self._transport is not None:
            self._transport.close()
        if exc is not None:
            self._client_gone = str(exc)
        self._report()

    def terminate(self) -> None:
        """Close both sides now (the grant ended)."""
        if self._release is not None:
            self._release.cancel()
        if self._transport is not None:
            self._transport.abort()
        if self._chan is not None:
            self._chan.close()

    def failed(self, reason: str) -> None:
        self._error = f"target connection failed: {reason}"
        self._report()

    # -- asset side ------------------------------------------------------------------------------

    def asset_data(self, data: bytes) -> None:
        """From the asset's socket: relayed, or kept while held (reading stops)."""
        if not self._relaying:
            if self._transport is not None:
                self._transport.pause_reading()
            self._keep(self._held_from_asset, data)
            return
        self.target_data(data)

    def asset_eof(self) -> None:
        if not self._relaying:
            self._held_asset_eof = True
        else:
            self.target_eof()

    def target_data(self, data: bytes) -> None:
        """The asset's bytes on their way to the client (overridden by the read-only filter)."""
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
        self._asset_full = True
        if self._chan is not None:
            self._chan.pause_reading()

    def target_resumed(self) -> None:
        self._asset_full = False
        self._read_client()

    def _report(self) -> None:
        if self._reported:
            return
        self._reported = True
        if self.hold is not None:
            self.hold.close()
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
        self._tunnel.asset_data(data)

    def eof_received(self) -> bool:
        self._tunnel.asset_eof()
        return True

    def pause_writing(self) -> None:
        self._tunnel.target_paused()

    def resume_writing(self) -> None:
        self._tunnel.target_resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._tunnel.target_closed(exc)
