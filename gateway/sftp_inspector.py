"""The SFTP session tap: every request and answer is parsed, file transfers are recorded, and a
download-only site's refusals are answered by the gateway itself.

Requests are matched to answers by request id (draft-ietf-secsh-filexfer-02 §3): an OPEN's HANDLE
answer makes the handle a ``TransferRecord``, READ's DATA answers and WRITEs are counted and hashed,
and the CLOSE's STATUS answer reports the file. Only whole packets are passed on in either direction,
so a reply the gateway writes itself never lands inside one of the target's packets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from gateway import sftp_protocol as wire
from gateway.models import StoredRecording
from gateway.sftp_protocol import Fields, MalformedPacket, PacketStream
from gateway.taps import TapFailure
from gateway.transfers import Detail, TransferRecord, TransferReporter

logger = logging.getLogger("gatepass.gateway.sftp")


# Extended requests (OpenSSH PROTOCOL §4) that only look: allowed on download-only sites too.
# Everything else that is extended is refused there (deny by default).
HARMLESS_EXTENSIONS = frozenset({
    "limits@openssh.com", "statvfs@openssh.com", "fstatvfs@openssh.com", "expand-path@openssh.com",
    "home-directory", "users-groups-by-id@openssh.com", "fsync@openssh.com",
})  # fmt: skip
# Requests in flight the gateway keeps track of; OpenSSH keeps at most 64 outstanding, asyncssh 128.
MAX_UNANSWERED = 4096
# Requests that only read, never change the target.
_LOOKING = frozenset(
    {wire.LSTAT, wire.STAT, wire.FSTAT, wire.OPENDIR, wire.READDIR, wire.REALPATH, wire.READLINK, wire.READ, wire.CLOSE}
)


@dataclass(slots=True)
class _Open:
    path: str
    pflags: int


@dataclass(slots=True)
class _Close:
    handle: bytes


@dataclass(slots=True)
class _Read:
    record: TransferRecord
    offset: int


@dataclass(slots=True)
class _Write:
    record: TransferRecord


@dataclass(slots=True)
class _Fstat:
    record: TransferRecord


@dataclass(slots=True)
class _Change:
    detail: Detail


class _Limits:
    __slots__ = ()


_Pending = _Open | _Close | _Read | _Write | _Fstat | _Change | _Limits


def status_text(code: int, message: str) -> str:
    """A STATUS answer in words: "ok", or "permission denied: <the target's message>"."""
    if code == wire.FX_OK:
        return "ok"
    name = wire.STATUS_NAMES.get(code, f"status {code}")
    return f"{name}: {message}" if message and message.lower() != name else name


class _Refused(Exception):
    """A request a download-only site does not allow: what it would have done, in words and as detail."""

    def __init__(self, what: str, detail: Detail) -> None:
        super().__init__(what)
        self.what, self.detail = what, detail


class SftpInspector:
    """ChannelTap for an ``sftp`` subsystem session (or ``sftp-server`` run as a command)."""

    def __init__(
        self, reporter: TransferReporter, *, download_only: bool, tell_user: Callable[[str], None] | None = None
    ) -> None:
        self._reporter = reporter
        self._download_only = download_only
        self._tell_user = tell_user
        self._from_client = PacketStream("client")
        self._from_target = PacketStream("target")
        self._pending: dict[int, _Pending] = {}
        self._files: dict[bytes, TransferRecord] = {}
        self._pflags: dict[bytes, int] = {}
        self._version: int | None = None

    # -- the tap interface --------------------------------------------------------------------------

    def from_client(self, data: bytes) -> tuple[bytes, bytes]:
        chunk, starts = self._feed(self._from_client, data)
        if not starts:
            return b"", b""
        return self._each_packet(chunk, starts, self._request)

    def from_target(self, data: bytes, stderr: bool) -> bytes:
        if stderr:  # the sftp server's own diagnostics, not SFTP packets
            return data
        chunk, starts = self._feed(self._from_target, data)
        if not starts:
            return b""
        forward, _ = self._each_packet(chunk, starts, self._answer)
        return forward

    def resized(self, width: int, height: int) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self, exit_status: int | None) -> StoredRecording | None:  # noqa: ARG002 - the tap interface
        """Report what never got its answer: files still open, changes the target did not confirm."""
        closing = {pending.handle for pending in self._pending.values() if isinstance(pending, _Close)}
        for handle, record in self._files.items():
            self._report_file(record, handle, "closed, no answer" if handle in closing else "not closed")
        for pending in self._pending.values():
            if isinstance(pending, _Change):
                self._reporter.report("file_changed", {**pending.detail, "status": "no answer"})
        self._files.clear()
        self._pending.clear()
        return None

    # -- framing ------------------------------------------------------------------------------------

    @staticmethod
    def _feed(stream: PacketStream, data: bytes) -> tuple[bytes, list[int]]:
        try:
            return stream.feed(data)
        except MalformedPacket as exc:
            raise TapFailure(f"the file transfer cannot be inspected: {exc}") from exc

    @staticmethod
    def _each_packet(
        chunk: bytes, starts: list[int], handle: Callable[[Fields], tuple[bytes | None, bytes]]
    ) -> tuple[bytes, bytes]:
        """Run ``handle`` on each packet; it returns (None to pass the packet on, or what replaces it;
        a reply to the other side). Unchanged packets are passed on without a copy."""
        view = memoryview(chunk)
        pieces: list[bytes | memoryview] | None = None
        replies: list[bytes] = []
        for index, start in enumerate(starts):
            end = starts[index + 1] if index + 1 < len(starts) else len(chunk)
            try:
                replacement, reply = handle(Fields(view[start + 4 : end]))
            except MalformedPacket as exc:
                raise TapFailure(f"the file transfer cannot be inspected: {exc}") from exc
            if reply:
                replies.append(reply)
            if replacement is None:
                if pieces is not None:
                    pieces.append(view[start:end])
                continue
            if pieces is None:
                pieces = [view[:start]]
            pieces.append(replacement)
        forward = chunk if pieces is None else b"".join(pieces)
        return forward, b"".join(replies)

    # -- client → target ----------------------------------------------------------------------------

    def _request(self, fields: Fields) -> tuple[bytes | None, bytes]:
        kind = fields.byte()
        if kind == wire.INIT:
            return self._init(fields), b""
        request_id = fields.uint32()
        try:
            pending = self._inspect_request(kind, fields)
        except _Refused as refused:
            return b"", self._refuse(request_id, refused)
        if pending is not None:
            if len(self._pending) >= MAX_UNANSWERED:
                raise TapFailure(f"the client has more than {MAX_UNANSWERED} requests waiting for an answer")
            self._pending[request_id] = pending
        return None, b""

    def _init(self, fields: Fields) -> bytes | None:
        version = fields.uint32()
        if version < wire.SFTP_VERSION:
            raise MalformedPacket(f"the client asked for SFTP version {version}; only version 3 is inspected")
        if version == wire.SFTP_VERSION:
            return None
        # Ask the target for version 3 (§4: the server answers with the lower of both versions).
        return wire.init_packet(wire.SFTP_VERSION, bytes(fields.rest()))

    def _inspect_request(self, kind: int, fields: Fields) -> _Pending | None:
        if kind in _LOOKING:
            return self._looking_request(kind, fields)
        if kind == wire.OPEN:
            path, pflags = fields.text(), fields.uint32()
            if self._download_only and pflags & wire.FXF_MODIFYING:
                flags = wire.describe_open_flags(pflags)
                raise _Refused(f"writing {path}", {"operation": "open", "path": path, "open_flags": flags})
            return _Open(path, pflags)
        if kind == wire.WRITE:
            handle, offset, data = bytes(fields.string()), fields.uint64(), fields.string()
            record = self._files.get(handle)
            if self._download_only:
                what = f"writing {record.path}" if record else "writing to an open file"
                raise _Refused(what, {"operation": "write", "path": record.path if record else None})
            if record is None:
                return None
            record.wrote(offset, data)
            return _Write(record)
        if kind in (wire.REMOVE, wire.RMDIR):
            path = fields.text()
            verb = "removing" if kind == wire.REMOVE else "removing the directory"
            return self._change(
                f"{verb} {path}", {"operation": "remove" if kind == wire.REMOVE else "rmdir", "path": path}
            )
        if kind == wire.MKDIR:
            path = fields.text()
            return self._change(f"creating the directory {path}", {"operation": "mkdir", "path": path})
        if kind == wire.RENAME:
            old, new = fields.text(), fields.text()
            return self._change(f"renaming {old} to {new}", {"operation": "rename", "path": old, "new_path": new})
        if kind == wire.SYMLINK:
            # OpenSSH sends the link's target first and the new link's path second (PROTOCOL §3).
            target, link = fields.text(), fields.text()
            return self._change(
                f"creating the link {link}", {"operation": "symlink", "path": link, "link_target": target}
            )
        if kind == wire.SETSTAT:
            path = fields.text()
            attributes = wire.read_attributes(fields).describe()
            return self._change(
                f"changing the attributes of {path}", {"operation": "setstat", "path": path, "attributes": attributes}
            )
        if kind == wire.FSETSTAT:
            record = self._files.get(bytes(fields.string()))
            path = record.path if record else "an open file"
            attributes = wire.read_attributes(fields).describe()
            return self._change(
                f"changing the attributes of {path}", {"operation": "setstat", "path": path, "attributes": attributes}
            )
        if kind == wire.EXTENDED:
            return self._extended(fields)
        if self._download_only:
            raise _Refused(f"the SFTP request of type {kind}", {"operation": f"type {kind}"})
        return None

    def _looking_request(self, kind: int, fields: Fields) -> _Pending | None:
        if kind == wire.READ:
            record = self._files.get(bytes(fields.string()))
            return None if record is None else _Read(record, fields.uint64())
        if kind == wire.FSTAT:
            record = self._files.get(bytes(fields.string()))
            return None if record is None else _Fstat(record)
        if kind == wire.CLOSE:
            handle = bytes(fields.string())
            return _Close(handle) if handle in self._files else None
        return None

    def _extended(self, fields: Fields) -> _Pending | None:
        name = fields.text()
        if name == "limits@openssh.com":
            return _Limits()
        if name in HARMLESS_EXTENSIONS:
            return None
        if name in ("posix-rename@openssh.com", "hardlink@openssh.com"):
            old, new = fields.text(), fields.text()
            operation = "rename" if name.startswith("posix-rename") else "hardlink"
            what = f"renaming {old} to {new}" if operation == "rename" else f"linking {new} to {old}"
            return self._change(what, {"operation": operation, "path": old, "new_path": new})
        if name == "lsetstat@openssh.com":
            path = fields.text()
            attributes = wire.read_attributes(fields).describe()
            return self._change(
                f"changing the attributes of {path}", {"operation": "setstat", "path": path, "attributes": attributes}
            )
        if name == "copy-data":
            # Server-side copy into an open file (draft-ietf-secsh-filexfer-extensions-00 §7): the data
            # never passes the gateway, so that file's hash cannot be known.
            source = self._files.get(bytes(fields.string()))
            fields.uint64()
            fields.uint64()
            destination = self._files.get(bytes(fields.string()))
            path = destination.path if destination else "an open file"
            if self._download_only:
                raise _Refused(f"copying into {path}", {"operation": "copy-data", "path": path})
            if destination is not None:
                destination.unverifiable_writes("server-side copy")
            return self._change(
                f"copying into {path}",
                {"operation": "copy-data", "path": path, "source_path": source.path if source else None},
            )
        return self._change(f"the SFTP request {name}", {"operation": name})

    def _change(self, what: str, detail: Detail) -> _Change:
        if self._download_only:
            raise _Refused(what, detail)
        return _Change({"protocol": "sftp", **detail})

    def _refuse(self, request_id: int, refused: _Refused) -> bytes:
        message = self._reporter.download_only_message(refused.what)
        self._reporter.refused({"protocol": "sftp", **refused.detail, "reason": message})
        if self._tell_user is not None:
            self._tell_user(f"gatepass: {message}")
        return wire.status_packet(request_id, wire.FX_PERMISSION_DENIED, message)

    # -- target → client ----------------------------------------------------------------------------

    def _answer(self, fields: Fields) -> tuple[bytes | None, bytes]:
        kind = fields.byte()
        if kind == wire.VERSION:
            self._version = fields.uint32()
            if self._version != wire.SFTP_VERSION:
                raise MalformedPacket(f"the target answered with SFTP version {self._version}; only 3 is inspected")
            return None, b""
        request_id = fields.uint32()
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return None, b""
        if kind == wire.STATUS:
            self._status(pending, fields.uint32(), fields.text())
        elif kind == wire.HANDLE and isinstance(pending, _Open):
            self._opened(pending, bytes(fields.string()))
        elif kind == wire.DATA and isinstance(pending, _Read):
            pending.record.read(pending.offset, fields.string())
        elif kind == wire.ATTRS and isinstance(pending, _Fstat):
            pending.record.size = wire.read_attributes(fields).size
        elif kind == wire.EXTENDED_REPLY and isinstance(pending, _Limits):
            return wire.limits_reply(request_id, fields), b""
        return None, b""

    def _opened(self, pending: _Open, handle: bytes) -> None:
        pflags = pending.pflags
        self._files[handle] = TransferRecord(
            pending.path,
            reading=bool(pflags & wire.FXF_READ),
            # Creating or truncating changes the file even when nothing is written after.
            writing=bool(pflags & wire.FXF_MODIFYING),
            protocol="sftp",
        )
        self._files[handle].extra["open_flags"] = wire.describe_open_flags(pflags)
        self._pflags[handle] = pflags

    def _status(self, pending: _Pending, code: int, message: str) -> None:
        if isinstance(pending, _Close):
            record = self._files.pop(pending.handle, None)
            if record is not None:
                self._report_file(record, pending.handle, status_text(code, message))
        elif isinstance(pending, _Change):
            self._reporter.report("file_changed", {**pending.detail, "status": status_text(code, message)})
        elif isinstance(pending, _Read) and code == wire.FX_EOF:
            pending.record.read_to_end(pending.offset)
        elif isinstance(pending, _Write) and code != wire.FX_OK:
            pending.record.extra["write_error"] = status_text(code, message)
        elif isinstance(pending, _Open) and pending.pflags & wire.FXF_MODIFYING:
            # An upload the target itself refused (e.g. no permission) is still worth a line.
            record = TransferRecord(
                pending.path, reading=bool(pending.pflags & wire.FXF_READ), writing=True, protocol="sftp"
            )
            record.extra["open_flags"] = wire.describe_open_flags(pending.pflags)
            self._reporter.report("file_transferred", record.detail(f"not opened: {status_text(code, message)}"))

    def _report_file(self, record: TransferRecord, handle: bytes, status: str) -> None:
        pflags = self._pflags.pop(handle, 0)
        if (
            record.size is None
            and record.writing
            and record.sequential_from_start
            and (pflags & wire.FXF_TRUNC or (pflags & wire.FXF_CREAT and pflags & wire.FXF_EXCL))
        ):
            record.size = record.write_end  # a file written from empty: its size is what was written
        if pflags & wire.FXF_APPEND:
            record.extra["appended"] = True
        self._reporter.report("file_transferred", record.detail(status))
