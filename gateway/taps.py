"""What sits on a session channel between the client and the target: a recorder or a transfer inspector.

A tap sees every byte each way and decides what passes. ``gateway.sessions.ProxySession`` calls it; which
tap a session gets depends on its kind (shell and exec: the asciicast recorder; sftp and scp: the file
transfer inspector). A tap that cannot do its job raises ``TapFailure`` and the session ends (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from asyncssh.misc import TermSize

from gateway.errors import GatewayError
from gateway.models import Authorization, StoredRecording

if TYPE_CHECKING:
    from gateway.context import GatewayContext


class TapFailure(GatewayError):
    """The tap cannot go on (e.g. the recording cannot be written); ``str(exc)`` says why, for the user."""


@dataclass(frozen=True)
class SessionInfo:
    """What a tap knows about the session it sits on."""

    session_id: str
    auth: Authorization
    kind: str  # shell | exec | sftp
    command: str | None
    term_type: str | None
    term_size: TermSize
    # One line on the user's terminal (stderr), nothing ended: a tap that refuses something in-band says
    # why here as well, since clients may show only a status code (OpenSSH's sftp prints "Permission denied").
    tell_user: Callable[[str], None] | None = None
    # Ends the session with that line on the user's stderr and that exit status (a policy refusal mid-session,
    # e.g. an upload on a download-only site); None where nothing can be ended (tests of a tap alone).
    cut: Callable[[str, int], object] | None = None
    # Pauses (True) and resumes (False) the session's reading from the target and the client: the recorder's flow
    # control while its store is behind (gateway.recording_queue). None where nothing can be paused.
    hold_streams: Callable[[bool], None] | None = None


class ChannelTap(Protocol):
    def from_client(self, data: bytes) -> tuple[bytes, bytes]:
        """Bytes the client sent: returns (what to pass to the target, what to answer the client directly)."""
        ...

    def from_target(self, data: bytes, stderr: bool) -> bytes:
        """Bytes the target sent (stdout, or stderr if ``stderr``): returns what to pass to the client."""
        ...

    def resized(self, width: int, height: int) -> None:
        """The client's terminal changed size."""
        ...

    def note(self, text: str) -> None:
        """Something the gateway told the user (a warning, the reason for a cut), for the record."""
        ...

    def close(self, exit_status: int | None) -> StoredRecording | None:
        """The session is over: finish up and say what was stored (None when nothing was)."""
        ...


class PassThrough:
    """A tap that records nothing (TCP-only use; never for a shell, exec or sftp session)."""

    def from_client(self, data: bytes) -> tuple[bytes, bytes]:
        return data, b""

    def from_target(self, data: bytes, stderr: bool) -> bytes:  # noqa: ARG002 - the tap interface
        return data

    def resized(self, width: int, height: int) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self, exit_status: int | None) -> StoredRecording | None:  # noqa: ARG002 - the tap interface
        return None


def open_tap(ctx: GatewayContext, info: SessionInfo) -> ChannelTap:
    """The tap for a new session; raises TapFailure if it cannot be set up (the session must not run).

    The sftp subsystem gets the SFTP inspector. Every exec channel (and a shell without a PTY) gets an
    ``ExecGuard`` around its first tap (the inspector its command names, else the recorder): it recognises
    SFTP and scp by their bytes whatever the command is called, and on a download-only site caps what a
    command without a PTY takes from the client.
    """
    from gateway.exec_guard import ExecGuard
    from gateway.recording import open_recorder
    from gateway.transfers import open_inspector

    inspector = open_inspector(ctx, info)
    # A shell without a PTY reads its commands, and their input, from the client like an exec does.
    if info.kind != "exec" and not (info.kind == "shell" and info.term_type is None):
        return inspector if inspector is not None else open_recorder(ctx, info)
    return ExecGuard(ctx, info, inspector if inspector is not None else open_recorder(ctx, info),
                     sniff=inspector is None)


async def until_recording(tap: ChannelTap) -> None:
    """Wait until the session's recording, if it has one, holds its header: the store took the first write. Raises
    TapFailure (gateway.recording.RecordingFailure) if it did not: the session must not run (fail closed)."""
    from gateway.exec_guard import ExecGuard
    from gateway.recording import AsciicastRecorder

    recorder = tap.recorder if isinstance(tap, ExecGuard) else tap
    if isinstance(recorder, AsciicastRecorder):
        await recorder.until_started()


def recording_name(tap: ChannelTap) -> str | None:
    """The file name of the session's recording (its recorder inside ``tap``, as ``is_recorded`` finds it); None if
    the session is not recorded."""
    from gateway.exec_guard import ExecGuard
    from gateway.observers import WatchTap
    from gateway.recording import AsciicastRecorder

    if isinstance(tap, WatchTap):
        tap = tap.inner
    recorder = tap.recorder if isinstance(tap, ExecGuard) else tap
    return recorder.name if isinstance(recorder, AsciicastRecorder) else None


def is_recorded(tap: ChannelTap) -> bool:
    """Whether ``tap`` is the session's recorder or wraps it (an ``ExecGuard`` does, and a ``WatchTap`` wraps either):
    a recording failure then ends the session (fail closed)."""
    from gateway.exec_guard import ExecGuard
    from gateway.observers import WatchTap
    from gateway.recording import AsciicastRecorder

    if isinstance(tap, WatchTap):  # a watchable session's tap: what it wraps decides
        tap = tap.inner
    return isinstance(tap, AsciicastRecorder) or (isinstance(tap, ExecGuard) and tap.recorded)
