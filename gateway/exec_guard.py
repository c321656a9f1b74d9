"""The tap on a command channel: file-transfer protocols recognised by their bytes, and a download-only cap.

A command's name proves nothing: ``sftp -s "env /usr/lib/openssh/sftp-server"``, ``ssh ASSET 'env scp -t DIR'``
or a wrapper script run the same servers under another name. So every exec channel (and a shell without a
PTY, which is a command reading stdin too) starts with its first client bytes held back and looked at:

- SFTP starts with the client's SSH_FXP_INIT (uint32 length, byte 1; draft-ietf-secsh-filexfer-02 §4), and
  OpenSSH's sftp-server refuses any other first packet;
- an scp *sink* (``scp -t``, an upload) is sent control lines (scp.c sink(): ``C``/``D`` with four octal
  digits and a space, ``T`` with a number for strtol); it answers a single ``\\0`` first, so after a ``\\0``
  from the target a ``C``, ``D``, ``T`` or a ``\\1`` error line (the sink skips it) is an scp upload too;
- an scp *source* (``scp -f``, a download) waits for the client's lone ``\\0``.

Recognised, the channel switches to the inspector (``SftpInspector``/``ScpInspector``: the site's policy, the
``file_*`` events); anything else goes to the recorder. Bytes held while deciding are handed to whichever tap
takes over, so nothing is lost or reordered.

A download-only site also caps what a command without a PTY takes from the client (``exec_upload_limit``,
64 KiB unless the site says otherwise): past it the session is cut with the reason on the vendor's stderr and
a ``file_refused`` event. That is the rule for every upload no protocol names — ``cat > FILE``, ``dd of=``,
``rsync --server`` receiving, ``tar x``, a base64 decoder: any of them writes what it reads, so what it may
read is bounded. Typing at a PTY is not capped (it is interactive work, recorded as input where the site
records input).

Limits, knowingly: under the cap a command that no protocol names may still write what it reads (that is what
the cap allows; a site that wants none sets 0). Only the first bytes are looked at: a command that reads a
line before it starts ``scp -t`` gets the cap, not the scp inspector. Bytes held while undecided (at most a
few, a prefix of an SFTP INIT or an scp control line) are not delivered if the client sends EOF right after
them, since the session passes the client's EOF straight on.
"""

from __future__ import annotations

import asyncio
import enum
import struct
from typing import TYPE_CHECKING

from gateway import sftp_protocol as wire
from gateway.models import StoredRecording
from gateway.notice import REFUSED_EXIT_STATUS
from gateway.taps import ChannelTap, SessionInfo
from gateway.transfers import TransferReporter

if TYPE_CHECKING:
    from gateway.context import GatewayContext

# Target bytes kept while undecided, to replay into an scp inspector (a sink says "\0" and waits).
MAX_TARGET_REPLAY = 4096
# Client bytes held while undecided; an scp control line prefix needs at most a few, so a prefix still open
# after this many is treated as scp (the stricter reading).
MAX_HELD = 64
_OCTAL = frozenset(b"01234567")
_DIGITS = frozenset(b"0123456789")
# What C's isspace() skips before strtol's number (scp.c parses the T line with strtol); "\n" ends the line.
_STRTOL_SPACE = frozenset(b" \t\v\f\r")
_UINT32 = struct.Struct(">I")


class Verdict(enum.Enum):
    PLAIN = "plain"
    SFTP = "sftp"
    SCP_UPLOAD = "scp upload"
    SCP_DOWNLOAD = "scp download"


def classify(held: bytes | bytearray, *, target_said_ready: bool = False) -> Verdict | None:
    """What the client's first bytes on a command channel start; None while they could still be either.

    ``target_said_ready``: the target's first output byte was ``\\0``, what an scp sink sends first.
    """
    if not held:
        return None
    first = held[0]
    if first == 0:
        if len(held) == 1:
            # A lone "\0" is an scp sink's "ready" to a source (scp -f waits for it). Waiting for more would
            # hang that download; an SFTP client split into single bytes then fails inspection (fail closed).
            return Verdict.SCP_DOWNLOAD
        if len(held) < 5:
            return None
        (length,) = _UINT32.unpack_from(held, 0)
        if 5 <= length <= wire.MAX_PACKET_LENGTH and held[4] == wire.INIT:
            return Verdict.SFTP
        return Verdict.PLAIN
    if target_said_ready and first in b"CDT\x01":
        # After the sink's "ready", a control line or an error line it skips (and then reads a file after).
        return Verdict.SCP_UPLOAD
    if first in b"CD":
        return _file_line_prefix(held)
    if first == ord("T"):
        return _times_line_prefix(held)
    return Verdict.PLAIN


def _file_line_prefix(held: bytes | bytearray) -> Verdict | None:
    """``C``/``D``, four octal digits, a space: what scp.c's sink accepts before the size and the name."""
    for index in range(1, min(len(held), 5)):
        if held[index] not in _OCTAL:
            return Verdict.PLAIN
    if len(held) < 6:
        return None
    return Verdict.SCP_UPLOAD if held[5] == ord(" ") else Verdict.PLAIN


def _times_line_prefix(held: bytes | bytearray) -> Verdict | None:
    """``T``, then what strtol reads as a number (spaces, a sign, digits), then a space (scp.c sink())."""
    position, size = 1, len(held)
    while position < size and held[position] in _STRTOL_SPACE:
        position += 1
    if position < size and held[position] in b"+-":
        position += 1
    digits = position
    while position < size and held[position] in _DIGITS:
        position += 1
    if position == size:
        return Verdict.SCP_UPLOAD if size > MAX_HELD else None
    if position == digits:
        return Verdict.PLAIN
    return Verdict.SCP_UPLOAD if held[position] == ord(" ") else Verdict.PLAIN


def describe_size(size: int) -> str:
    """``64 KiB (65536 bytes)``, ``1 MiB (1048576 bytes)``, ``100 bytes``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit} ({size} bytes)"
    return f"{size} bytes"


class ExecGuard:
    """ChannelTap for a command channel: recognises SFTP/scp by their bytes and caps input on download-only sites.

    ``first`` is the tap the command gets to begin with: the recorder, or the inspector its name asked for
    (``sniff`` False then: the inspector parses every byte already, and anything that does not fit ends it).
    """

    def __init__(self, ctx: GatewayContext, info: SessionInfo, first: ChannelTap, *, sniff: bool) -> None:
        self._info = info
        self._reporter = TransferReporter(ctx, info)
        self._tap = first
        # The recorder stays to the end when an inspector takes over: it holds what passed before.
        self._recorder: ChannelTap | None = first if sniff else None
        self._sniffing = sniff
        self._held = bytearray()
        self._target_seen = bytearray()
        self._target_first: int | None = None
        auth = info.auth
        capped = auth.download_only and info.term_type is None
        self._limit: int | None = auth.exec_upload_limit if capped else None
        self._received = 0
        self._refused = False

    @property
    def recorded(self) -> bool:
        """The session has an asciicast recording (this guard wraps the recorder)."""
        return self._recorder is not None

    @property
    def recorder(self) -> ChannelTap | None:
        """The session's recorder, if it has one."""
        return self._recorder

    # -- the tap interface ----------------------------------------------------------------------------

    def from_client(self, data: bytes) -> tuple[bytes, bytes]:
        if self._refused:
            return b"", b""  # the session is being cut: nothing more reaches the target
        if self._limit is not None:
            self._received += len(data)
            if self._received > self._limit:
                self._over_limit()
                return b"", b""
        if not self._sniffing:
            return self._tap.from_client(data)
        self._held += data
        verdict = classify(self._held, target_said_ready=self._target_first == 0)
        if verdict is None:
            return b"", b""
        self._sniffing = False
        held, self._held = bytes(self._held), bytearray()
        if verdict is Verdict.PLAIN:
            self._target_seen.clear()
            return self._tap.from_client(held)
        return self._switch(verdict, held)

    def from_target(self, data: bytes, stderr: bool) -> bytes:
        if self._sniffing and not stderr and data:
            if self._target_first is None:
                self._target_first = data[0]
            if len(self._target_seen) <= MAX_TARGET_REPLAY:
                self._target_seen += data[: MAX_TARGET_REPLAY + 1 - len(self._target_seen)]
        return self._tap.from_target(data, stderr)

    def resized(self, width: int, height: int) -> None:
        self._tap.resized(width, height)

    def note(self, text: str) -> None:
        if self._recorder is not None:
            self._recorder.note(text)

    def close(self, exit_status: int | None) -> StoredRecording | None:
        if self._recorder is None or self._tap is self._recorder:
            return self._tap.close(exit_status)
        self._tap.close(exit_status)
        return self._recorder.close(exit_status)

    # -- recognised ----------------------------------------------------------------------------------

    def _switch(self, verdict: Verdict, held: bytes) -> tuple[bytes, bytes]:
        """Hand the channel to the inspector ``verdict`` names, with the bytes held so far."""
        from gateway.scp_protocol import ScpInspector, scp_command_in
        from gateway.sftp_inspector import SftpInspector

        auth, info = self._info.auth, self._info
        if verdict is Verdict.SCP_UPLOAD and auth.download_only:
            command = scp_command_in(info.command, upload=True)
            path = " ".join(command.paths) or "files"
            message = self._reporter.download_only_message(f"writing {path} with scp")
            self._reporter.refused({"protocol": "scp", "operation": "upload", "path": path,
                                    "command": info.command, "reason": message})
            # scp prints a fatal error line ("\2" + text) and exits (scp.c response()); then the session ends.
            self._refuse(f"gatepass: {message}")
            return b"", b"\x02gatepass: " + message.encode() + b"\n"
        inspector: ChannelTap
        if verdict is Verdict.SFTP:
            inspector = SftpInspector(self._reporter, download_only=auth.download_only, tell_user=info.tell_user)
        else:
            upload = verdict is Verdict.SCP_UPLOAD
            inspector = ScpInspector(self._reporter, scp_command_in(info.command, upload=upload),
                                     download_only=auth.download_only)
            if upload and self._target_seen:
                # The sink's "ready" already reached the client; the inspector must have seen it too.
                inspector.from_target(bytes(self._target_seen), stderr=False)
        self._target_seen.clear()
        self.note(f"gatepass: {verdict.value} recognised on this channel: the file transfers are inspected "
                  "and reported from here on, not recorded")
        self._tap = inspector
        return inspector.from_client(held)

    # -- refused -------------------------------------------------------------------------------------

    def _over_limit(self) -> None:
        limit = self._limit or 0
        message = self._reporter.download_only_message(
            f"sending more than {describe_size(limit)} of input to a command without a terminal (an upload)")
        self._reporter.refused({"protocol": "exec", "operation": "upload", "path": None,
                                "command": self._info.command, "bytes": self._received, "limit": limit,
                                "reason": message})
        self._refuse(f"gatepass: {message}; the session is ended")

    def _refuse(self, line: str) -> None:
        """Nothing more passes; the session ends right after this call's answer reached the client."""
        self._refused = True
        self._sniffing = False
        self._held.clear()
        if self._info.cut is not None:
            asyncio.get_running_loop().call_soon(self._info.cut, line, REFUSED_EXIT_STATUS)
        elif self._info.tell_user is not None:
            self._info.tell_user(line)
