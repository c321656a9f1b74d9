"""One client SSH connection: broker authorization, target connection, channels, cut-off.

The object lives as long as the client's TCP connection (asyncssh creates one SSHServer per
connection). Everything is denied unless a method below allows it: no password or keyboard-
interactive login, no plain keys, no agent/X11/remote forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncssh

from gateway.certificates import CertificateWatch, watch_certificates
from gateway.context import GatewayContext
from gateway.errors import BrokerCallFailed, BrokerRefused, TargetError
from gateway.login import CertificateLogin
from gateway.login_refusals import Attempt, LoginAttempts
from gateway.modbus_activity import ModbusObservedTunnel, ModbusReadOnlyObservedTunnel
from gateway.models import Authorization, Target
from gateway.monitor import clock_time
from gateway.notice import NoticeSession
from gateway.packet_overhead import skip_empty_ignore_packets
from gateway.protocols import MODBUS_TCP, protocol_of
from gateway.sessions import ProxySession
from gateway.stopping import TargetStop, sweep_connection
from gateway.tunnels import TunnelSession, check_forward, open_tunnel
from gateway.upstream import connect_target

logger = logging.getLogger("gatepass.gateway.connection")


# Longest wait, after a cut, for the client to close its session channels before the disconnect.
CUT_GRACE = 0.3
# Refusals a connection reports to the broker's audit trail; a client looping on refused forwards gets the
# first ones audited and the rest counted in the log, so it cannot flood the trail (or the gateway's memory).
MAX_AUDITED_REFUSALS = 20


class GatewayConnection(CertificateLogin):
    """asyncssh's per-connection server object, holding this connection's grant and sessions."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.peer = ""
        self._conn: asyncssh.SSHServerConnection | None = None
        self._certs: CertificateWatch | None = None
        self._asset = ""
        loop = asyncio.get_running_loop()
        # None = refused (self._refusal says why); sessions wait on these, nothing ever raises into them.
        self._authorized: asyncio.Future[Authorization | None] = loop.create_future()
        self._target: asyncio.Future[asyncssh.SSHClientConnection | str] = loop.create_future()
        self._target_task: asyncio.Task[None] | None = None
        self._refusal = ""
        self._refusal_seen = asyncio.Event()
        self._sessions_closed = asyncio.Event()
        self._disconnect_task: asyncio.Task[None] | None = None
        self._sessions: set[ProxySession] = set()
        self._tunnels: set[TunnelSession] = set()
        self._grant_id: str | None = None
        self._cut: tuple[str, str | None] | None = None
        # After a cut: stopping what the sessions started on the target; it closes the target connection.
        self._stopping: asyncio.Task[None] | None = None
        self._closed = False
        self._refusals_reported = 0

    def user_ca(self) -> str | None:
        return self.ctx.user_ca

    # -- connection lifecycle --------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        skip_empty_ignore_packets(conn)
        self._certs = watch_certificates(conn, self.certificate_refused)
        peer = conn.get_extra_info("peername") or ("", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        self.ctx.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.ctx.connections.discard(self)
        if self._grant_id is not None:
            self.ctx.monitor.forget(self._grant_id, self)
        if not self._authorized.done():
            self._authorized.set_result(None)
        if self._stopping is None or self._stopping.done():
            self._close_target()
        self.report_failed_login()
        logger.info("connection from %s to %s closed%s", self.peer, self._asset, f": {exc}" if exc else "")

    async def auth_completed(self) -> None:
        cert = self._certs.accepted if self._certs else None
        if cert is None:
            await self._refuse("gatepass: login refused: no grant certificate was presented")
            return
        try:
            auth = await self.ctx.broker.authorize(
                grant_id=cert.grant_id, serial=cert.serial, asset=self._asset, peer=self.peer
            )
        except BrokerRefused as exc:
            await self._refuse(f"gatepass: access to {self._asset} refused: {exc.message}")
            return
        except BrokerCallFailed as exc:
            logger.warning("authorizing grant %s failed: %s", cert.grant_id, exc)
            await self._refuse(
                f"gatepass: access to {self._asset} cannot be checked now: the broker is unreachable; "
                "try again in a minute"
            )
            return
        if auth.grant_id != cert.grant_id or auth.asset != self._asset:
            await self._refuse(f"gatepass: access to {self._asset} refused: the grant is for another asset")
            return
        if auth.ends_at <= self.ctx.settings.clock():
            await self._refuse(
                f"gatepass: access to {self._asset} refused: the grant ended at {clock_time(auth.ends_at)}"
            )
            return
        if self._closed:
            return
        logger.info("%s on grant %s connected to %s from %s", auth.identity, auth.grant_id, auth.asset, self.peer)
        self._grant_id = auth.grant_id
        self._authorized.set_result(auth)
        if auth.ssh and auth.target is not None:
            # Opened now, overlapping the client's channel open (FIELD-NOTES: connection setup).
            self._target_task = asyncio.ensure_future(self._connect_target(auth, auth.target))
        else:
            self._target.set_result(f"the grant for {auth.asset} covers TCP ports only, not SSH sessions")
        # Last: the monitor may cut at once, and a cut connection must not start anything.
        self.ctx.monitor.watch(auth.grant_id, asset=auth.asset, ends_at=auth.ends_at, connection=self)

    async def _refuse(self, message: str) -> None:
        """Tell the user why (stderr of any session they open), then disconnect."""
        logger.info("connection from %s to %s refused: %s", self.peer, self._asset, message)
        self._refusal = message
        if not self._authorized.done():
            self._authorized.set_result(None)
        # OpenSSH shows a disconnect reason only at log level INFO and above; a session channel's
        # stderr always shows. Give the client a moment to open one (ssh -N never does).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._refusal_seen.wait(), self.ctx.settings.refusal_grace)
        self._disconnect(message)

    async def _connect_target(self, auth: Authorization, target: Target) -> None:
        try:
            conn = await connect_target(target, asset=auth.asset, timeout=self.ctx.settings.target_connect_timeout)
        except TargetError as exc:
            logger.warning("grant %s: %s", auth.grant_id, exc)
            self._target.set_result(str(exc))
            return
        if self._closed or self._cut is not None:
            conn.close()
            return
        self._target.set_result(conn)

    # -- channels --------------------------------------------------------------------------------

    def session_requested(self) -> asyncio.Future[asyncssh.SSHServerSession[bytes]]:
        # A coroutine: asyncssh answers the channel open only once it resolves, so a session opened
        # while the broker is still deciding simply waits for the decision.
        return asyncio.ensure_future(self._open_session())

    async def _open_session(self) -> asyncssh.SSHServerSession[bytes]:
        auth = await self._authorized
        if auth is None or self._cut is not None:
            return NoticeSession(self._refusal or "gatepass: access has ended", self._refusal_seen.set)
        target = await self._target
        if isinstance(target, str):
            return NoticeSession(f"gatepass: {target}")
        if self._cut is not None:
            return NoticeSession("gatepass: access has ended")
        session = ProxySession(self, auth, target)
        self._sessions.add(session)
        return session

    def session_ended(self, session: ProxySession) -> None:
        self._sessions.discard(session)
        if not self._sessions:
            self._sessions_closed.set()

    def cut_reason(self) -> tuple[str, str | None] | None:
        return self._cut

    def connection_requested(
        self,
        dest_host: str,
        dest_port: int,
        orig_host: str,  # noqa: ARG002
        orig_port: int,  # noqa: ARG002
    ) -> asyncio.Future[TunnelSession]:
        # asyncssh has already refused this unless the certificate permits port forwarding.
        return asyncio.ensure_future(self._open_tunnel(dest_host, dest_port))

    async def _open_tunnel(self, dest_host: str, dest_port: int) -> TunnelSession:
        auth = await self._authorized
        if auth is None or self._cut is not None:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, self._refusal.removeprefix("gatepass: ")
            )
        try:
            address = check_forward(auth, dest_host, dest_port)
        except asyncssh.ChannelOpenError as exc:
            self._report_refusal(auth, "forward", exc.reason, dest_host, dest_port)
            raise
        # check_forward let a read-only grant through only to a port whose protocol the gateway filters. A Modbus
        # port is tallied either way (function codes, registers) for the watcher's baselines.
        modbus = protocol_of(dest_port) == MODBUS_TCP
        make_session = (ModbusReadOnlyObservedTunnel if auth.read_only else
                        ModbusObservedTunnel if modbus else None)
        tunnel = await open_tunnel(self, auth, address, dest_port, make_session)
        if self._cut is not None:
            tunnel.terminate()
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "access has ended")
        self._tunnels.add(tunnel)
        return tunnel

    def tunnel_ended(self, tunnel: TunnelSession) -> None:
        self._tunnels.discard(tunnel)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        logger.info("remote forwarding request from %s refused", self.peer)
        auth = self._authorized.result() if self._authorized.done() else None
        if auth is not None:
            self._report_refusal(auth, "remote_forward", "the plant never opens listeners for a vendor (ssh -R)",
                                 listen_host, listen_port)
        else:
            # Asked before the broker authorised the login (or after it refused it): no grant to file it under.
            early = LoginAttempts()
            cert = self._certs.accepted if self._certs else None
            early.add(Attempt(kind="remote_forward", identity=cert.identity if cert else None,
                              reason=f"ssh -R {listen_host[:64]}:{listen_port} asked before the login was authorised"))
            self.report_login_refusal(early)
        return False  # ssh -R: the plant never opens listeners for a vendor

    def report_refusal(self, auth: Authorization, kind: str, reason: str) -> None:
        """What a session refused on its own (an unknown subsystem), audited under the connection's grant."""
        self._report_refusal(auth, kind, reason, "", 0)

    def _report_refusal(self, auth: Authorization, kind: str, reason: str, host: str, port: int) -> None:
        """Tell the broker, in the background, what the gateway refused on its own (audited there)."""
        self._refusals_reported += 1
        if self._refusals_reported > MAX_AUDITED_REFUSALS:
            logger.warning("%s refused for %s on grant %s (not audited: over %d on this connection): %s",
                           kind, self.peer, auth.grant_id, MAX_AUDITED_REFUSALS, reason)
            return
        report = self.ctx.broker.refusal(grant_id=auth.grant_id, kind=kind, reason=reason, host=host[:255] or None,
                                         port=port or None)
        self.ctx.spawn(report, f"reporting a refused {kind} on grant {auth.grant_id}")

    # -- what the monitor does -------------------------------------------------------------------

    def warn(self, message: str) -> None:
        for session in list(self._sessions):
            session.warn(message)

    def recorded_sessions(self) -> list[tuple[ProxySession, str]]:
        """This connection's recorded sessions, each with its recording's file name."""
        return [(session, name) for session in list(self._sessions)
                if (name := session.recording_name()) is not None]

    def recording_failed(self, site: str, error: str) -> None:
        """Recordings at ``site`` cannot be written: end this connection's recorded sessions there."""
        for session in list(self._sessions):
            if session.site == site:
                session.recording_failed(error)
        # When no command of this connection goes on, what those ended sessions left behind (a background job)
        # is swept like on a cut; the target connection stays for the sessions that may go on (SFTP).
        if any(session.stop_pending() is None and session.runs_command() for session in self._sessions):
            return
        stops = [stop for session in self._sessions if (stop := session.stop_pending()) is not None]
        target = self._target.result() if self._target.done() else None
        if stops and isinstance(target, asyncssh.SSHClientConnection) and self._cut is None:
            for stop in stops:
                stop.awaits_sweep = True
            self._stopping = asyncio.ensure_future(self._stop_target(target, stops, close=False))

    def cut(self, reason: str, message: str, detail: str | None = None) -> None:
        """End everything on this connection now: message, exit status, close, disconnect."""
        if self._cut is not None or self._closed:
            return
        self._cut = (reason, detail)
        self._refusal = message
        logger.info("cutting connection from %s to %s: %s", self.peer, self._asset, reason)
        stops = [stop for session in list(self._sessions) if (stop := session.terminate(message)) is not None]
        for tunnel in list(self._tunnels):
            tunnel.terminate()
        target = self._target.result() if self._target.done() else None
        if stops and isinstance(target, asyncssh.SSHClientConnection):
            # The client is cut now; the target connection stays until its commands are stopped (a cut must stop
            # what the vendor started, not only the connection), bounded by the site's grace.
            for stop in stops:
                stop.awaits_sweep = True
            self._stopping = asyncio.ensure_future(self._stop_target(target, stops))
        else:
            self._close_target()
        # Nothing reaches the target any more; the client's connection goes once its session
        # channels are closed, so the disconnect cannot overtake the stderr line (OpenSSH exits on
        # a disconnect without flushing what it still buffers).
        if self._sessions:
            self._disconnect_task = asyncio.ensure_future(self._disconnect_when_closed(message))
        else:
            self._disconnect(message)

    async def _stop_target(self, target: asyncssh.SSHClientConnection, stops: list[TargetStop], *,
                           close: bool = True) -> None:
        try:
            await sweep_connection(target, stops, grace=max(stop.grace for stop in stops))
        finally:
            if close or self._closed:  # a client gone meanwhile left the target open for this sweep
                target.close()

    async def _disconnect_when_closed(self, message: str) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._sessions_closed.wait(), CUT_GRACE)
        self._disconnect(message)

    def _close_target(self) -> None:
        if self._target_task is not None and not self._target_task.done():
            self._target_task.cancel()
        if self._target.done():
            target = self._target.result()
            if not isinstance(target, str):
                target.close()
        else:
            self._target.set_result("the connection is closing")

    def _disconnect(self, message: str) -> None:
        if self._conn is not None and not self._closed:
            self._conn.disconnect(asyncssh.DISC_BY_APPLICATION, message.removeprefix("gatepass: "))
