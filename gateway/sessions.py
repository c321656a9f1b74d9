"""One client session channel (shell, exec or sftp) bridged to a session channel on the target.

Bytes are relayed at the channel-callback level (``data_received`` → ``write``), not through
asyncssh's stream/process layer: no per-chunk coroutine, and flow control is passed on by pausing
the opposite channel when one side's send window fills (FIELD-NOTES: Protocols, not streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Protocol

import asyncssh
from asyncssh.misc import TermModes, TermSize

from gateway.command_policy import judge_exec
from gateway.context import GatewayContext, report_end
from gateway.errors import BrokerCallFailed, BrokerRefused
from gateway.models import Authorization
from gateway.notice import REFUSED_EXIT_STATUS
from gateway.recording import RecordingFailure, RecordingsRefused
from gateway.stopping import KILL_WAIT, TargetStop
from gateway.supervised import SupervisedHold
from gateway.taps import (
    ChannelTap,
    PassThrough,
    SessionInfo,
    TapFailure,
    is_recorded,
    open_tap,
    recording_name,
    until_recording,
)
from gateway.target_session import TargetSession

logger = logging.getLogger("gatepass.gateway.sessions")

# Exit status sent when the gateway ends a session: what ssh itself returns for a lost connection.
CUT_EXIT_STATUS = 255
# Client environment variables stay at the gateway unless the asset names them (Authorization.passed_env, exact
# names checked by the broker): a variable is input to what runs on the target (LC_* once carried Shellshock).


class SessionHost(Protocol):
    """What a session needs from its client connection (gateway.connection.GatewayConnection)."""

    ctx: GatewayContext
    peer: str

    def session_ended(self, session: ProxySession) -> None: ...

    def cut_reason(self) -> tuple[str, str | None] | None: ...

    def report_refusal(self, auth: Authorization, kind: str, reason: str) -> None: ...

    def cut(self, reason: str, message: str, detail: str | None = None) -> None: ...


class ProxySession(asyncssh.SSHServerSession[bytes]):
    """Server side of one session channel: client requests in, target session out."""

    def __init__(self, host: SessionHost, auth: Authorization, upstream: asyncssh.SSHClientConnection) -> None:
        self._host = host
        self._auth = auth
        self._upstream_conn = upstream
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._upstream: asyncssh.SSHClientChannel[bytes] | None = None
        self.kind: str | None = None
        self.command: str | None = None
        self._term_type: str | None = None
        self._term_size: TermSize = (0, 0, 0, 0)
        self._term_modes: TermModes = {}
        self._pending: list[tuple[bytes, asyncssh.DataType]] = []
        self._pending_eof = False
        self._session_id: str | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._exit_status: int | None = None
        self._exit_signal: tuple[str, bool, str] | None = None
        self._closed = False
        # The gateway sent this session's end (terminate): it is over, though the client may not have answered the
        # channel's close yet (a frozen laptop never does) and the session is still listed until it does.
        self._ended = False
        # Why this channel's exec is refused (a command an AI agent was not delegated); nothing reaches the target.
        self._refused: str | None = None
        self._error: str | None = None
        self._pty_newline = b"\n"
        # The recorder or transfer inspector; set once the broker has recorded the session's start.
        self._tap: ChannelTap = PassThrough()
        self._recording_failed = False
        # Why reading is paused, besides supervision: the client's window is full (stop reading the target), the
        # target's window is full (stop reading the client), the recording is behind (stop reading both).
        self._client_full = False
        self._target_full = False
        self._recording_behind = False
        # Set when the gateway ends the session while the target still runs its command (a cut).
        self._stop: TargetStop | None = None
        self._target_gone = asyncio.Event()
        self.bytes_in = 0  # client -> target
        self.bytes_out = 0  # target -> client
        # A supervised site (issue 13): released once a supervisor watches; input held while none does.
        self._supervision = SupervisedHold(auth, warn=self.warn, pause=self._pause_client, resume=self._resume_client,
                                           cut=lambda line: host.cut("revoked", line, "unsupervised")) \
            if auth.supervision_required else None

    # -- client side -----------------------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, term_type: str, term_size: TermSize, term_modes: TermModes) -> bool:
        if not self._auth.interactive:
            self._notice(f"gatepass: {self._auth.identity} is a non-interactive identity: no terminal (PTY)")
            return False
        self._term_type, self._term_size, self._term_modes = term_type, term_size, term_modes
        self._pty_newline = b"\r\n"
        return True

    def shell_requested(self) -> bool:
        if not self._auth.interactive:
            self._notice(
                f"gatepass: {self._auth.identity} is a non-interactive identity: "
                "interactive shells are not allowed, run a command instead"
            )
            return False
        self.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        verdict = judge_exec(self._auth, command)
        self.kind, self.command = "exec", verdict.command
        if verdict.refusal is not None:
            # Accepted, then answered with the reason and exit status 1 at session start: a refused exec request
            # shows the user only "exec request failed", without why.
            self._refused = verdict.refusal
            self._host.report_refusal(self._auth, "exec", verdict.refusal)
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            self._notice(f"gatepass: the {subsystem!r} subsystem is not offered; only sftp is")
            self._host.report_refusal(self._auth, "subsystem", f"the {subsystem[:64]!r} subsystem is not offered")
            return False
        self.kind, self.command = "sftp", None
        return True

    def session_started(self) -> None:
        if self._refused is not None:
            self.terminate(f"gatepass: {self._refused}", REFUSED_EXIT_STATUS)
            return
        self._start_task = asyncio.ensure_future(self._start())

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.bytes_in += len(data)
        if self._upstream is not None:
            self._to_target(data, datatype)
        else:
            # asyncssh resumes reading right after session_started, so pause here (FIELD-NOTES).
            self._pending.append((data, datatype))
            if self._chan is not None:
                self._chan.pause_reading()

    def eof_received(self) -> bool:
        if self._upstream is not None:
            self._upstream.write_eof()
        else:
            self._pending_eof = True
        return True  # keep the channel open for the target's remaining output

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._term_size = (width, height, pixwidth, pixheight)
        self._tap.resized(width, height)
        if self._upstream is not None:
            self._upstream.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self._upstream is not None:
            self._upstream.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self._upstream is not None:
            self._upstream.send_break(msec)
            return True
        return False

    def pause_writing(self) -> None:
        self._client_full = True
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_writing(self) -> None:
        self._client_full = False
        self._resume_target()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._supervision is not None:
            self._supervision.close()
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()
        if self._upstream is not None and self._stop is None:
            self._upstream.close()  # a stop in progress closes the target's channel itself, at its end
        client_gone = None if exc is None else str(exc)
        self._host.session_ended(self)
        recording = None
        try:
            recording = self._tap.close(self._exit_status)
        except RecordingFailure as exc:
            # The last of the recording did not reach the store: the end says so, and the broker hears it.
            self._report_recording_failure(exc)
        except TapFailure as exc:
            self._error = self._error or f"recording failed: {exc}"
        # A cut session's end says how its command ended, so it waits for the stop (bounded by the grace); the
        # gateway closed that channel itself, so how the client's side went is no detail of it.
        report_end(self._host, self._session_id, self._error, self.bytes_in, self.bytes_out, recording,
                   client_gone=client_gone if self._stop is None else None, stop=self._stop,
                   recording_failed=self._report_recording_failure)

    # -- what the gateway does to the session ----------------------------------------------------

    @property
    def site(self) -> str:
        return self._auth.site

    def runs_command(self) -> bool:
        """A shell or exec whose command may still run on the target."""
        return self.kind in ("shell", "exec") and self._upstream is not None

    def stop_pending(self) -> TargetStop | None:
        """The stop of this session's command while it is not yet reported (the connection may add a sweep)."""
        return self._stop if self._stop is not None and not self._stop.finished.is_set() else None

    def recording_failed(self, error: str) -> None:
        """Recordings at this session's site cannot be written: end it if it is recorded (fail closed)."""
        if is_recorded(self._tap):
            self._end_unrecorded(RecordingFailure(error))

    def recording_name(self) -> str | None:
        """The file name of this session's recording; None if it is not recorded (or has ended, or is ending: the
        recordings disk's guard must not pick a session it already ended over the one filling the disk now)."""
        return None if self._closed or self._ended else recording_name(self._tap)

    def end_for_space(self, why: str) -> None:
        """The recordings disk is nearly full and this session is filling it: end it, its recording closed whole
        (the reserve still has room for that), with ``why`` on the vendor's terminal, in the recording and in the
        end report (reason ``error``)."""
        if self._closed or self._ended:
            return
        logger.warning("session %s on %s ended: %s", self._session_id, self._auth.asset, why)
        self._error = f"recordings disk nearly full: {why}"
        self.terminate(f"gatepass: this session is ended: {why}")

    def warn(self, message: str) -> None:
        """One line on the user's terminal (stderr), without ending anything."""
        self._tap.note(message)
        self._notice(message)

    def terminate(self, message: str, status: int = CUT_EXIT_STATUS) -> TargetStop | None:
        """Write ``message`` to stderr, send the exit status and close the client's channel now; stop the
        target's command behind it (TERM, KILL after the site's grace, close). Returns that stop, if any."""
        self._ended = True
        self._tap.note(message)
        self._notice(message)
        stop = self._stop_target()
        if stop is not None:
            line = (f"gatepass: the commands of this session on {self._auth.asset} are being stopped (TERM now, "
                    f"KILL after {stop.grace:g} s)")
            self._tap.note(line)
            self._notice(line)
        if self._chan is not None and not self._closed:
            self._chan.exit(status)
        if self._upstream is not None and stop is None:
            self._upstream.close()
        return stop

    async def _supervisor_joined(self) -> bool:
        """A supervised site (gateway/supervised.py): nothing reaches the target until a supervisor of the site
        watches. False if nothing may run."""
        auth = self._auth
        if self._host.ctx.live is None or self._supervision is None:  # nobody could ever supervise (fail closed)
            self.terminate(f"gatepass: {auth.asset} requires a supervisor of {auth.site} to watch every session, "
                           "and this gateway cannot be watched", REFUSED_EXIT_STATUS)
            return False
        await self._supervision.released()
        return not self._closed and self._host.cut_reason() is None

    def _holds_input(self) -> bool:
        return self._supervision is not None and self._supervision.held

    def _pause_client(self) -> None:
        if self._chan is not None and not self._closed:
            self._chan.pause_reading()

    def _resume_client(self) -> None:
        """Read from the client again, unless something still holds it (the target's window, supervision, the
        recording) or nothing can reach the target yet."""
        if self._chan is not None and not self._closed and self._upstream is not None and not self._target_full \
                and not self._recording_behind and not self._holds_input():
            self._chan.resume_reading()

    def _resume_target(self) -> None:
        """Read from the target again, unless the client's window or the recording still holds it."""
        if self._upstream is not None and not self._client_full and not self._recording_behind:
            self._upstream.resume_reading()

    def _hold_for_recording(self, behind: bool) -> None:
        """The recorder's flow control (gateway/recording.py): while its store is behind, neither side is read,
        so a slow disk slows this session alone and nothing waits on the event loop."""
        self._recording_behind = behind
        if behind:
            if self._upstream is not None and self._stop is None:  # a stopping target's output is dropped anyway
                self._upstream.pause_reading()
            self._pause_client()
        else:
            self._resume_target()
            self._resume_client()

    def _end_by_observer(self, message: str) -> None:
        """An observer ended the session from the watch view: the connection is cut as on a revocation (the broker
        revokes the grant as well), with the observer's reason as the line the vendor reads."""
        self._host.cut("revoked", message, "ended by an observer")

    def _stop_target(self) -> TargetStop | None:
        """Ask the target to end a running shell/exec command (RFC 4254 §6.9 signal), in the background."""
        upstream = self._upstream
        if upstream is None or self._stop is not None or self.kind not in ("shell", "exec"):
            return None
        self._stop = TargetStop(grace=self._auth.cut_grace, exit=self._exit_text())
        # From now on what the target sends is dropped (target_data), so nothing holds its reading any more (a
        # full client window, a recording behind): its exit status and close must come through to confirm the stop.
        upstream.resume_reading()
        self._send_signal(upstream, self._stop, "TERM")
        self._host.ctx.spawn(self._finish_stop(upstream, self._stop), f"stopping session {self._session_id}")
        return self._stop

    @staticmethod
    def _send_signal(upstream: asyncssh.SSHClientChannel[bytes], stop: TargetStop, signal: str) -> None:
        with contextlib.suppress(OSError, asyncssh.Error):  # the channel is closing already
            upstream.send_signal(signal)
            stop.signals.append(signal)

    async def _finish_stop(self, upstream: asyncssh.SSHClientChannel[bytes], stop: TargetStop) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._target_gone.wait(), stop.grace)
            if not self._target_gone.is_set():
                self._send_signal(upstream, stop, "KILL")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._target_gone.wait(), KILL_WAIT)
            stop.confirmed = self._target_gone.is_set() and stop.exit is not None
            upstream.close()
        finally:
            stop.channel_done.set()
            if not stop.awaits_sweep:
                stop.finished.set()

    def _notice(self, message: str) -> None:
        if self._chan is None or self._closed:
            return
        # On a terminal, start on a fresh line: the cursor may sit after a prompt.
        lead = b"\r\n" if self._term_type else b""
        with contextlib.suppress(OSError):  # the channel is already closing
            self._chan.write_stderr(lead + message.encode() + self._pty_newline)

    # -- target side -----------------------------------------------------------------------------

    async def _start(self) -> None:
        auth, ctx = self._auth, self._host.ctx
        try:
            self._session_id = await ctx.broker.session_start(
                grant_id=auth.grant_id, kind=self.kind or "exec", peer=self._host.peer, command=self.command
            )
        except BrokerRefused as exc:
            self.terminate(f"gatepass: {exc.message}", REFUSED_EXIT_STATUS)
            return
        except BrokerCallFailed as exc:
            # Fail closed: a session the audit trail cannot hold does not run. Sessions already open keep
            # running (and still end at ends_at on the gateway's own clock); only new ones wait for the broker.
            logger.warning("session on grant %s refused: the broker cannot record it: %s", auth.grant_id, exc)
            self._error = "the broker could not record the session"
            self.terminate(f"gatepass: {auth.asset}: the session cannot be recorded right now (the broker is "
                           "unreachable); nothing was run, try again in a moment", REFUSED_EXIT_STATUS)
            return
        try:
            self._tap = open_tap(ctx, SessionInfo(
                session_id=self._session_id, auth=auth, kind=self.kind or "exec", command=self.command,
                term_type=self._term_type, term_size=self._term_size, tell_user=self.warn, cut=self.terminate,
                hold_streams=self._hold_for_recording,
            ))
            await until_recording(self._tap)
        except TapFailure as exc:
            self._tap_failed(exc)
            return
        if self._closed or self._host.cut_reason() is not None:
            return  # ended while the recording was being started: nothing runs (the close reports the end)
        if ctx.live is not None and self.kind in ("shell", "exec"):
            # Watchable (gateway/observers.py): costs one check per chunk until somebody watches.
            self._tap = ctx.live.track(self._tap, session_id=self._session_id, record_input=auth.record_input,
                                       width=self._term_size[0], height=self._term_size[1], tell=self.warn,
                                       end=self._end_by_observer,
                                       on_supervision=self._supervision.changed if self._supervision is not None
                                       else None)
        if auth.silent_observers and self.kind in ("shell", "exec"):
            # The plant's policy, told before anything runs: nobody is watched silently without knowing it may be.
            self.warn(f"gatepass: at {auth.site}, supervisors and security may watch this session without it being "
                      "announced here (site policy)")
        if auth.supervision_required and self.kind not in ("shell", "exec"):
            # An SFTP session cannot be watched yet, so on a supervised site it does not run (fail closed).
            self.terminate(f"gatepass: {auth.asset} requires a supervisor of {auth.site} to watch every session, and "
                           "an SFTP session cannot be watched; use scp, which can", REFUSED_EXIT_STATUS)
            return
        if auth.supervision_required and not await self._supervisor_joined():
            return
        try:
            upstream, _ = await self._upstream_conn.create_session(
                lambda: TargetSession(self),
                command=self.command if self.kind == "exec" else None,
                subsystem="sftp" if self.kind == "sftp" else None,
                env=self._environment(),
                term_type=self._term_type,
                term_size=self._term_size if self._term_type else None,
                term_modes=self._term_modes if self._term_type else None,
                encoding=None,
            )
        except (asyncssh.Error, OSError) as exc:
            self._error = f"target refused the session: {exc}"
            self.terminate(f"gatepass: {auth.asset} refused the session: {exc}", CUT_EXIT_STATUS)
            return
        if self._closed or self._host.cut_reason() is not None:
            # Cut while the target was opening the channel: the target connection now stays open for the stop of
            # the other sessions, so this one must not start relaying (the sweep stops what it may have started).
            upstream.close()
            return
        self._upstream = upstream
        if self._client_full or self._recording_behind:
            upstream.pause_reading()
        pending, self._pending = self._pending, []
        for data, datatype in pending:
            self._to_target(data, datatype)
        if self._pending_eof:
            upstream.write_eof()
        self._resume_client()

    def _environment(self) -> dict[str | bytes, str | bytes]:
        env: Mapping[str, str] = self._chan.get_environment() if self._chan else {}
        allowed = frozenset(self._auth.passed_env)
        return {name: value for name, value in env.items() if name in allowed}

    def _to_target(self, data: bytes, datatype: asyncssh.DataType) -> None:
        """Client bytes through the tap to the target; the tap may answer the client itself."""
        if self._upstream is None:
            return
        if datatype is not None:
            # Extended data from a client (RFC 4254 §5.2) has no meaning on a session channel: OpenSSH never
            # sends it, sshd discards it and asyncssh 2.24's server channel refuses it as a protocol error. Should
            # that change, passing it on would reach the target beside the tap (unrecorded, uncounted by a
            # download-only site's cap), so it goes nowhere.
            logger.info("session %s: %d bytes of extended data from the client dropped", self._session_id, len(data))
            return
        try:
            forward, reply = self._tap.from_client(data)
        except TapFailure as exc:
            self._tap_failed(exc)
            return
        if forward:
            self._upstream.write(forward)
        if reply and self._chan is not None and not self._closed:
            self._chan.write(reply)

    def _tap_failed(self, exc: TapFailure) -> None:
        """The recorder or inspector cannot go on: the session must not run unrecorded (fail closed)."""
        if isinstance(exc, RecordingsRefused):
            # The site is blocked already: refused before anything ran on the target.
            self._error = f"recording failed: {exc}"
            self.terminate(f"gatepass: {exc}", REFUSED_EXIT_STATUS)
            return
        if isinstance(exc, RecordingFailure):
            self._end_unrecorded(exc)
            # Then every other recorded session at the site, and no new ones until the store recovers.
            self._host.ctx.recording_failed(self._auth.site, exc.error)
            return
        logger.warning("session %s on %s ended: %s", self._session_id, self._auth.asset, exc)
        self._error = f"recording failed: {exc}"
        self.terminate(f"gatepass: {exc}; the session is ended because it cannot be recorded")

    def _end_unrecorded(self, exc: RecordingFailure) -> None:
        if self._recording_failed or self._closed:
            return
        logger.warning("session %s on %s ended: %s", self._session_id, self._auth.asset, exc)
        self._report_recording_failure(exc)
        self.terminate(f"gatepass: {exc}; the session is ended because it cannot be recorded")

    def _report_recording_failure(self, exc: Exception) -> None:
        """Once per session: the end carries the reason, and the broker audits gateway:recording:failed."""
        self._error = f"recording failed: {exc}"
        if self._recording_failed:
            return
        self._recording_failed = True
        ctx, session_id = self._host.ctx, self._session_id
        if session_id is not None:
            ctx.spawn(ctx.broker.session_event(session_id, kind="recording_failed", detail={"error": str(exc)}),
                      f"reporting the recording failure of session {session_id}")

    def target_data(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._chan is None or self._closed or self._stop is not None:  # cut: nothing more reaches the client
            return
        self.bytes_out += len(data)
        try:
            data = self._tap.from_target(data, stderr=datatype == asyncssh.EXTENDED_DATA_STDERR)
        except TapFailure as exc:
            self._tap_failed(exc)
            return
        if data:
            self._chan.write(data, datatype)

    def target_eof(self) -> None:
        if self._chan is not None and not self._closed and self._stop is None:
            self._chan.write_eof()

    def target_exit(self, status: int | None, signal: tuple[str, bool, str] | None) -> None:
        self._exit_status, self._exit_signal = status, signal
        if self._stop is not None:
            self._stop.exit = self._exit_text()

    def _exit_text(self) -> str | None:
        """How the target said its command ended: ``signal TERM``, ``status 0``, or None (not yet)."""
        if self._exit_signal is not None:
            return f"signal {self._exit_signal[0]}"
        return None if self._exit_status is None else f"status {self._exit_status}"

    def target_closed(self, exc: Exception | None) -> None:
        self._upstream = None
        self._target_gone.set()
        if self._chan is None or self._closed or self._stop is not None:
            return
        # Always end the client's channel with a status, or the client waits forever (FIELD-NOTES).
        if self._exit_signal is not None:
            signal, core_dumped, msg = self._exit_signal
            self._chan.exit_with_signal(signal, core_dumped, msg)
        elif self._exit_status is not None:
            self._chan.exit(self._exit_status)
        else:
            self._error = f"target closed the session without an exit status ({exc or 'no reason'})"
            self.terminate(f"gatepass: the session on {self._auth.asset} ended without an exit status")

    def target_paused(self) -> None:
        self._target_full = True
        self._pause_client()

    def target_resumed(self) -> None:
        self._target_full = False
        self._resume_client()
