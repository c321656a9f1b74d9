"""File transfers through the gateway (SFTP, legacy scp): which inspector a session gets, and what it reports.

Each file opened over SFTP or carried by scp becomes one ``file_transferred`` event (path, mode, bytes
each way, SHA-256 of what was written or read); renames, removals, directory and attribute changes
become ``file_changed``; what a download-only site does not allow is answered by the gateway itself and
reported as ``file_refused``. The protocol work lives in ``gateway.sftp_inspector`` and
``gateway.scp_protocol``; this module holds what both share.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from collections import deque
from typing import TYPE_CHECKING

from gateway.errors import BrokerCallFailed
from gateway.taps import ChannelTap, SessionInfo

if TYPE_CHECKING:
    from gateway.context import GatewayContext

logger = logging.getLogger("gatepass.gateway.transfers")

Detail = dict[str, int | str | bool | None]

# The broker keeps string values up to 4096 characters (broker/api/schemas.py SessionEventIn).
MAX_DETAIL_TEXT = 4096
# Refusals reported one by one per session; a client retrying in a loop must not flood the audit trail
# (the log still counts them all). Transfers and changes are always reported: each one changed something.
MAX_REPORTED_REFUSALS = 100


def open_inspector(ctx: GatewayContext, info: SessionInfo) -> ChannelTap | None:
    """A tap for sftp sessions and commands named sftp-server or legacy scp; None for anything else (the recorder
    takes those). A name is only a hint: ``gateway.exec_guard`` also recognises both protocols by their bytes."""
    from gateway.scp_protocol import ScpInspector, parse_scp_command
    from gateway.sftp_inspector import SftpInspector

    download_only, tell_user = info.auth.download_only, info.tell_user
    if info.kind == "sftp" or (info.kind == "exec" and runs_sftp_server(info.command)):
        return SftpInspector(TransferReporter(ctx, info), download_only=download_only, tell_user=tell_user)
    if info.kind == "exec" and info.command is not None:
        command = parse_scp_command(info.command)
        if command is not None:
            return ScpInspector(TransferReporter(ctx, info), command, download_only=download_only)
    return None


def runs_sftp_server(command: str | None) -> bool:
    """``sftp -s /usr/lib/openssh/sftp-server`` asks for the server program by exec instead of the subsystem:
    the same protocol, so the same inspection (and the same download-only refusals)."""
    if not command:
        return False
    program = command.split(maxsplit=1)[0].strip("'\"")
    return posixpath.basename(program) == "sftp-server"


def clip(text: str) -> str:
    """A path or message short enough for an audit detail value."""
    return text if len(text) <= MAX_DETAIL_TEXT else text[: MAX_DETAIL_TEXT - 1] + "…"


class TransferReporter:
    """Sends one session's transfer events to the broker in the background."""

    def __init__(self, ctx: GatewayContext, info: SessionInfo) -> None:
        self._ctx = ctx
        self.session_id = info.session_id
        self.site = info.auth.site
        # An AI agent's grant is download-only whatever the site allows people (unless the site lets agents write).
        self._agent = info.auth.identity_kind == "ai_agent"
        self.refusals = 0
        self._queue: deque[tuple[str, Detail]] = deque()
        self._sending = False

    def report(self, kind: str, detail: Detail) -> None:
        """Queue one event; the session's events reach the broker one at a time, in the order they happened."""
        self._queue.append(
            (kind, {key: clip(value) if isinstance(value, str) else value for key, value in detail.items()})
        )
        if not self._sending:
            self._sending = True
            self._ctx.spawn(self._send(), f"reporting file transfers on session {self.session_id}")

    async def _send(self) -> None:
        try:
            while self._queue:
                kind, detail = self._queue.popleft()
                try:
                    await self._ctx.broker.session_event(self.session_id, kind=kind, detail=detail)
                except BrokerCallFailed as exc:  # one lost event must not hold back the ones after it
                    logger.warning("reporting %s on session %s failed: %s", kind, self.session_id, exc)
        finally:
            self._sending = False

    def refused(self, detail: Detail) -> None:
        self.refusals += 1
        logger.info("session %s: %s", self.session_id, detail.get("reason"))
        if self.refusals <= MAX_REPORTED_REFUSALS:
            self.report("file_refused", detail)

    def download_only_message(self, what: str) -> str:
        """What the vendor reads when a download-only site refuses ``what`` ("writing /tmp/x")."""
        if self._agent:
            return f"site {self.site} allows AI agents downloads only: {what} is refused"
        return f"site {self.site} allows downloads only: {what} is refused"


class TransferRecord:
    """Bytes and SHA-256 of one file's transfer, each way, in offset order.

    The hash is honest only over data seen in order: OpenSSH sends writes (and asks for reads) at
    increasing offsets, so both are hashed as they pass. Data at any other offset (a resumed upload,
    out-of-order requests) makes that direction's hash unknown (None) with a note saying why.
    """

    def __init__(self, path: str, *, reading: bool, writing: bool, protocol: str) -> None:
        self.path = path
        self.reading, self.writing = reading, writing
        self.protocol = protocol
        self.bytes_read = self.bytes_written = 0
        self.size: int | None = None
        self.extra: Detail = {}
        self._read_hash: hashlib._Hash | None = hashlib.sha256()
        self._write_hash: hashlib._Hash | None = hashlib.sha256()
        self._read_next = self._write_next = 0
        self._write_end = 0
        self._notes: list[str] = []

    def wrote(self, offset: int, data: memoryview | bytes) -> None:
        self.bytes_written += len(data)
        self._write_end = max(self._write_end, offset + len(data))
        if self._write_hash is not None and offset == self._write_next:
            self._write_hash.update(data)
            self._write_next += len(data)
        elif data:
            self.unverifiable_writes("non-sequential writes")

    def read(self, offset: int, data: memoryview | bytes) -> None:
        self.bytes_read += len(data)
        if self._read_hash is not None and offset == self._read_next:
            self._read_hash.update(data)
            self._read_next += len(data)
        elif data:
            self._read_hash = None
            self._note("non-sequential reads")

    def read_to_end(self, offset: int) -> None:
        """A read at ``offset`` found the end of the file: after in-order reads from 0, that is its size."""
        if self.size is None and self._read_hash is not None and offset == self._read_next:
            self.size = offset

    def unverifiable_writes(self, why: str) -> None:
        """Something changed the file's content where the gateway cannot see it (e.g. a server-side copy)."""
        self._write_hash = None
        self._note(why)

    def _note(self, why: str) -> None:
        if why not in self._notes:
            self._notes.append(why)

    @property
    def sequential_from_start(self) -> bool:
        """Every write so far continued the last one, from offset 0 (so the hash covers the whole file)."""
        return self._write_hash is not None

    @property
    def write_end(self) -> int:
        return self._write_end

    @property
    def mode(self) -> str:
        return "read-write" if self.reading and self.writing else "write" if self.writing else "read"

    def detail(self, status: str) -> Detail:
        detail: Detail = {
            "protocol": self.protocol, "path": self.path, "mode": self.mode,
            "bytes_read": self.bytes_read, "bytes_written": self.bytes_written,
        }  # fmt: skip
        if self.writing:
            detail["sha256_written"] = None if self._write_hash is None else self._write_hash.hexdigest()
        if self.reading or self.bytes_read:
            detail["sha256_read"] = None if self._read_hash is None else self._read_hash.hexdigest()
        if self._notes:
            detail["sha256_note"] = "; ".join(self._notes)
        detail["size"] = self.size
        detail["status"] = status
        detail.update(self.extra)
        return detail
