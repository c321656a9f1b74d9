"""SFTP version 3 wire format (draft-ietf-secsh-filexfer-02, what OpenSSH speaks): framing and fields.

``PacketStream`` cuts one direction of a channel's byte stream into whole packets without growing a
``bytes`` object per chunk (a partial packet waits in one ``bytearray``); ``Fields`` reads the fields of
one packet from a ``memoryview`` so a WRITE or DATA payload is never copied to be looked at.
Anything that is not SFTP framing raises ``MalformedPacket``: the inspector then ends the session
(fail closed) instead of relaying bytes it cannot account for.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gateway.errors import GatewayError

# Packet types (draft-ietf-secsh-filexfer-02 §3).
INIT, VERSION = 1, 2
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME, READLINK, SYMLINK = range(11, 21)
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
EXTENDED, EXTENDED_REPLY = 200, 201

# OPEN pflags (§6.3).
FXF_READ, FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
FXF_MODIFYING = FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC
_FLAG_NAMES = (
    (FXF_READ, "read"),
    (FXF_WRITE, "write"),
    (FXF_APPEND, "append"),
    (FXF_CREAT, "creat"),
    (FXF_TRUNC, "trunc"),
    (FXF_EXCL, "excl"),
)

# ATTRS flags (§5).
ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME, ATTR_EXTENDED = 0x1, 0x2, 0x4, 0x8, 0x80000000

# STATUS codes (§7).
FX_OK, FX_EOF, FX_PERMISSION_DENIED = 0, 1, 3
STATUS_NAMES = {
    0: "ok",
    1: "end of file",
    2: "no such file",
    3: "permission denied",
    4: "failure",
    5: "bad message",
    6: "no connection",
    7: "connection lost",
    8: "operation unsupported",
}

# The version the gateway inspects; clients offering a later one are asked for this one (§4).
SFTP_VERSION = 3
# OpenSSH refuses messages longer than 256 KiB (SFTP_MAX_MSG_LENGTH) and so do we, with some headroom
# for servers that pack directory listings a little fuller. Longer is not SFTP we can inspect.
MAX_PACKET_LENGTH = 256 * 1024 + 8 * 1024
# What the gateway tells the client the target accepts (limits@openssh.com): whole packets fit the cap.
LIMIT_PACKET_LENGTH = 256 * 1024
LIMIT_READ_WRITE_LENGTH = 256 * 1024 - 1024

_UINT32 = struct.Struct(">I")
_UINT64 = struct.Struct(">Q")


class MalformedPacket(GatewayError):
    """Bytes that are not an SFTP v3 packet; ``str(exc)`` says what was wrong."""


class PacketStream:
    """Whole packets out of one direction of the stream; the tail of a partial packet is kept."""

    def __init__(self, sender: str) -> None:
        self._sender = sender  # "client" or "target", for messages
        self._partial = bytearray()
        self._need = 0  # bytes the partial packet needs before another parse is worth it

    @property
    def at_boundary(self) -> bool:
        return not self._partial

    def feed(self, data: bytes) -> tuple[bytes, list[int]]:
        """Add ``data``; return the bytes of the whole packets now complete and where each one starts.

        Each start points at the packet's 4-byte length; the rest stays buffered for the next call.
        """
        if self._partial:
            self._partial += data
            if len(self._partial) < self._need:
                return b"", []
            data, self._partial = bytes(self._partial), bytearray()
        starts: list[int] = []
        pos, size = 0, len(data)
        need = 4
        while size - pos >= 4:
            (length,) = _UINT32.unpack_from(data, pos)
            if length < 1 or length > MAX_PACKET_LENGTH:
                raise MalformedPacket(
                    f"the {self._sender} sent an SFTP packet of {length} bytes (the limit is {MAX_PACKET_LENGTH})"
                )
            if size - pos - 4 < length:
                need = 4 + length
                break
            starts.append(pos)
            pos += 4 + length
        if pos < size:
            self._partial = bytearray(memoryview(data)[pos:])
            self._need = need
            return data[:pos], starts
        return data, starts


class Fields:
    """Reads the fields of one packet body (type byte first) in order; short bodies raise MalformedPacket."""

    __slots__ = ("_body", "_pos")

    def __init__(self, body: memoryview) -> None:
        self._body = body
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._body) - self._pos

    def rest(self) -> memoryview:
        """Everything not read yet (e.g. INIT's extension pairs, passed on as they are)."""
        value = self._body[self._pos :]
        self._pos = len(self._body)
        return value

    def byte(self) -> int:
        if self._pos >= len(self._body):
            raise MalformedPacket("an SFTP packet ends before its type")
        value = self._body[self._pos]
        self._pos += 1
        return value

    def uint32(self) -> int:
        if self._pos + 4 > len(self._body):
            raise MalformedPacket("an SFTP packet ends inside a 32-bit field")
        (value,) = _UINT32.unpack_from(self._body, self._pos)
        self._pos += 4
        return int(value)

    def uint64(self) -> int:
        if self._pos + 8 > len(self._body):
            raise MalformedPacket("an SFTP packet ends inside a 64-bit field")
        (value,) = _UINT64.unpack_from(self._body, self._pos)
        self._pos += 8
        return int(value)

    def string(self) -> memoryview:
        """A length-prefixed string, as a view into the packet (no copy)."""
        length = self.uint32()
        if length > len(self._body) - self._pos:
            raise MalformedPacket("an SFTP string is longer than its packet")
        value = self._body[self._pos : self._pos + length]
        self._pos += length
        return value

    def text(self) -> str:
        """A string field meant to be read (a path, a message); OpenSSH sends UTF-8, else escapes."""
        return bytes(self.string()).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Attributes:
    """The parts of an ATTRS structure (§5) worth an audit line."""

    size: int | None = None
    uid_gid: tuple[int, int] | None = None
    permissions: int | None = None
    times: tuple[int, int] | None = None  # atime, mtime

    def describe(self) -> str:
        parts = []
        if self.size is not None:
            parts.append(f"size={self.size}")
        if self.uid_gid is not None:
            parts.append(f"uid={self.uid_gid[0]} gid={self.uid_gid[1]}")
        if self.permissions is not None:
            parts.append(f"mode={self.permissions & 0o7777:04o}")
        if self.times is not None:
            parts.append(f"atime={self.times[0]} mtime={self.times[1]}")
        return " ".join(parts)


def read_attributes(fields: Fields) -> Attributes:
    flags = fields.uint32()
    size = fields.uint64() if flags & ATTR_SIZE else None
    uid_gid = (fields.uint32(), fields.uint32()) if flags & ATTR_UIDGID else None
    permissions = fields.uint32() if flags & ATTR_PERMISSIONS else None
    times = (fields.uint32(), fields.uint32()) if flags & ATTR_ACMODTIME else None
    if flags & ATTR_EXTENDED:
        for _ in range(fields.uint32()):
            fields.string()
            fields.string()
    return Attributes(size=size, uid_gid=uid_gid, permissions=permissions, times=times)


def describe_open_flags(pflags: int) -> str:
    return ",".join(name for bit, name in _FLAG_NAMES if pflags & bit) or "none"


def _string(value: bytes) -> bytes:
    return _UINT32.pack(len(value)) + value


def status_packet(request_id: int, code: int, message: str) -> bytes:
    """An SSH_FXP_STATUS reply (§7) the gateway sends itself."""
    body = bytes([STATUS]) + _UINT32.pack(request_id) + _UINT32.pack(code) + _string(message.encode()) + _string(b"en")
    return _UINT32.pack(len(body)) + body


def init_packet(version: int, rest: bytes) -> bytes:
    """An SSH_FXP_INIT with ``version`` and the client's extension pairs ``rest`` unchanged."""
    body = bytes([INIT]) + _UINT32.pack(version) + rest
    return _UINT32.pack(len(body)) + body


def limits_reply(request_id: int, fields: Fields) -> bytes:
    """The target's limits@openssh.com answer with each length capped to what the gateway inspects.

    PROTOCOL (OpenSSH) §4.8: uint64 max-packet-length, max-read-length, max-write-length, max-open-handles;
    0 means "no limit", which here becomes the cap too.
    """
    packet_length, read_length, write_length, open_handles = (fields.uint64() for _ in range(4))

    def capped(value: int, cap: int) -> int:
        return cap if value == 0 else min(value, cap)

    body = (
        bytes([EXTENDED_REPLY]) + _UINT32.pack(request_id)
        + _UINT64.pack(capped(packet_length, LIMIT_PACKET_LENGTH))
        + _UINT64.pack(capped(read_length, LIMIT_READ_WRITE_LENGTH))
        + _UINT64.pack(capped(write_length, LIMIT_READ_WRITE_LENGTH))
        + _UINT64.pack(open_handles)
    )  # fmt: skip
    return _UINT32.pack(len(body)) + body
