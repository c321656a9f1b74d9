"""Legacy scp (``scp -O``: an exec of ``scp -t PATH`` or ``scp -f PATH``) inspected like an SFTP session.

The old rcp-derived protocol has no specification beyond OpenSSH's scp.c: the *source* sends control
lines — ``C<mode> <size> <name>`` (a file, then exactly ``size`` bytes and one status byte),
``D<mode> 0 <name>`` / ``E`` (enter / leave a directory), ``T<mtime> 0 <atime> 0`` (times) — and the
*sink* answers each line, and each file's data, with one status: ``\\0`` (ok) or ``\\1``/``\\2`` and a
message line (error / fatal). The source waits for every answer before it goes on, so the answer
decides how the next bytes are read (a refused file sends no data): both directions are followed, and
anything that does not fit ends the session (fail closed). ``scp -t`` makes the target the sink (an
upload); ``scp -f`` makes it the source (a download). A download-only site refuses ``scp -t`` outright.
"""

from __future__ import annotations

import enum
import logging
import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import NoReturn

from gateway.models import StoredRecording
from gateway.taps import TapFailure
from gateway.transfers import TransferRecord, TransferReporter

logger = logging.getLogger("gatepass.gateway.scp")

# scp.c reads control lines into a 2 KiB buffer plus a path; anything longer is not scp.
MAX_LINE = 16 * 1024
_FILE_LINE = re.compile(rb"C([0-7]{4}) ([0-9]{1,20}) ([^/\n]+)")
_DIRECTORY_LINE = re.compile(rb"D([0-7]{4}) ([0-9]{1,20}) ([^/\n]+)")
_TIMES_LINE = re.compile(rb"T([0-9]{1,20}) ([0-9]{1,9}) ([0-9]{1,20}) ([0-9]{1,9})")
# Options OpenSSH's scp gives the remote scp (scp.c: -v -r -p -d, then -t or -f).
_REMOTE_OPTIONS = frozenset("tfrpdv")


@dataclass(frozen=True)
class ScpCommand:
    """A remote ``scp -t`` (the target receives: an upload) or ``scp -f`` (the target sends: a download)."""

    upload: bool
    paths: tuple[str, ...]
    into_directory: bool  # -d: the target path must be a directory
    recursive: bool


def parse_scp_command(command: str) -> ScpCommand | None:
    """The scp invocation an exec request carries, or None if it is not a legacy scp transfer.

    A command naming scp with -t/-f that cannot be read cleanly is still treated as an upload (the
    stricter case), so an odd spelling cannot slip past a download-only site.
    """
    try:
        argv = shlex.split(command)
    except ValueError:
        argv = command.split()
    if not argv or posixpath.basename(argv[0]) != "scp":
        return None
    letters: set[str] = set()
    paths: list[str] = []
    for index, arg in enumerate(argv[1:], start=1):
        if arg == "--":
            paths.extend(argv[index + 1 :])
            break
        if arg.startswith("-") and len(arg) > 1 and not paths:
            letters.update(arg[1:])
        else:
            paths.append(arg)
    if not letters & {"t", "f"}:
        return None  # scp run on the target as an ordinary command (e.g. copying between its own files)
    odd = not letters <= _REMOTE_OPTIONS or ("t" in letters) == ("f" in letters) or not paths
    upload = "t" in letters or odd
    return ScpCommand(upload=upload, paths=tuple(paths), into_directory="d" in letters, recursive="r" in letters or odd)


def scp_command_in(command: str | None, *, upload: bool) -> ScpCommand:
    """The scp invocation somewhere in ``command`` (``env scp -t DIR``, ``sh -c 'scp -f x'``), as far as it can be
    read, for the paths in events; the direction comes from the bytes (``upload``), never from the command."""
    found: ScpCommand | None = None
    if command:
        try:
            argv = shlex.split(command)
        except ValueError:
            argv = command.split()
        for index, arg in enumerate(argv):
            if posixpath.basename(arg) == "scp" and (found := parse_scp_command(shlex.join(argv[index:]))):
                break
    if found is None:
        return ScpCommand(upload=upload, paths=(), into_directory=True, recursive=True)
    return ScpCommand(upload=upload, paths=found.paths, into_directory=found.into_directory,
                      recursive=found.recursive)


class _Phase(enum.Enum):
    LINE = "a control line"
    DATA = "file data"
    STATUS = "the status byte after a file"
    ANSWER = "the other side's answer"
    DONE = "the end"


@dataclass
class _Awaiting:
    """What the sink's next answer is for."""

    what: str  # ready | times | file | data | directory | end
    record: TransferRecord | None = None
    name: str = ""


class ScpInspector:
    """ChannelTap for an exec session running the legacy scp protocol."""

    def __init__(
        self,
        reporter: TransferReporter,
        command: ScpCommand,
        *,
        download_only: bool,
    ) -> None:
        self._reporter = reporter
        self._command = command
        self._upload = command.upload
        self._phase = _Phase.ANSWER
        self._awaiting = _Awaiting("ready")
        self._line = bytearray()
        self._answer_line: bytearray | None = None  # the sink's error message being read
        self._answer_fatal = False
        self._trailer_error = False  # the line being read is the source's error instead of a status byte
        self._directories: list[str] = []
        self._record: TransferRecord | None = None
        self._size = self._offset = 0
        self._refusal: bytes | None = None
        if download_only and command.upload:
            message = reporter.download_only_message(f"writing {' '.join(command.paths) or 'files'}")
            reporter.refused(
                {"protocol": "scp", "operation": "upload", "path": " ".join(command.paths), "reason": message}
            )
            # Sent instead of the target's "ready": scp prints the message and exits (scp.c response()).
            self._refusal = b"\x02gatepass: " + message.encode() + b"\n"

    # -- the tap interface --------------------------------------------------------------------------

    def from_client(self, data: bytes) -> tuple[bytes, bytes]:
        if self._refusal is not None:
            return b"", b""  # nothing the client sends reaches the target
        if self._upload:
            self._source(data)
        else:
            self._answers(data)
        return data, b""

    def from_target(self, data: bytes, stderr: bool) -> bytes:
        if stderr:
            return data
        if self._refusal is not None:
            refusal, self._refusal = self._refusal, b""
            return refusal
        if self._upload:
            self._answers(data)
        else:
            self._source(data)
        return data

    def resized(self, width: int, height: int) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self, exit_status: int | None) -> StoredRecording | None:  # noqa: ARG002 - the tap interface
        if self._record is not None:
            self._report(self._record, "incomplete" if self._phase is _Phase.DATA else "not acknowledged")
            self._record = None
        return None

    # -- the source's stream ------------------------------------------------------------------------

    def _source(self, data: bytes) -> None:
        view, pos, size = memoryview(data), 0, len(data)
        while pos < size:
            if self._phase is _Phase.DATA:
                take = min(self._size - self._offset, size - pos)
                record = self._record
                if record is None:
                    self._fail("file data without a file")
                if self._upload:
                    record.wrote(self._offset, view[pos : pos + take])
                else:
                    record.read(self._offset, view[pos : pos + take])
                self._offset += take
                pos += take
                if self._offset == self._size:
                    self._phase = _Phase.STATUS
            elif self._phase is _Phase.STATUS:
                status = data[pos]
                pos += 1
                if status == 0:
                    self._expect(_Awaiting("data", self._record))
                elif status in (1, 2):
                    self._trailer_error = True
                    self._phase = _Phase.LINE
                else:
                    self._fail(f"the scp source ended a file with the byte {status:#04x}")
            elif self._phase is _Phase.LINE:
                newline = data.find(b"\n", pos)
                end = size if newline < 0 else newline
                self._line += view[pos:end]
                if len(self._line) > MAX_LINE:
                    self._fail("the scp source sent a control line longer than scp allows")
                pos = size if newline < 0 else newline + 1
                if newline >= 0:
                    line, self._line = bytes(self._line), bytearray()
                    self._control_line(line)
            else:
                self._fail(f"the scp source sent data while waiting for {self._phase.value}")

    def _control_line(self, line: bytes) -> None:
        if self._trailer_error:  # the file's data was sent, but the source could not read all of it
            self._trailer_error = False
            if self._record is not None:
                self._record.extra["source_error"] = line.decode("utf-8", "backslashreplace")
            self._expect(_Awaiting("data", self._record))
            return
        if line[:1] in (b"\x01", b"\x02"):  # the source's own error (e.g. a file it cannot read): no answer
            logger.info("session %s: scp source: %s", self._reporter.session_id, line[1:].decode(errors="replace"))
            self._phase = _Phase.DONE if line[:1] == b"\x02" else _Phase.LINE
            return
        if match := _FILE_LINE.fullmatch(line):
            name = match[3].decode("utf-8", "backslashreplace")
            record = TransferRecord(self._path(name), reading=not self._upload, writing=self._upload, protocol="scp")
            record.size = int(match[2])
            record.extra["permissions"] = match[1].decode()
            self._expect(_Awaiting("file", record))
        elif match := _DIRECTORY_LINE.fullmatch(line):
            if match[3] in (b".", b".."):
                self._fail("the scp source named a directory '.' or '..'")
            self._expect(_Awaiting("directory", name=match[3].decode("utf-8", "backslashreplace")))
        elif line == b"E":
            self._expect(_Awaiting("end"))
        elif _TIMES_LINE.fullmatch(line):
            self._expect(_Awaiting("times"))
        else:
            self._fail("the scp source sent a line that is not part of the scp protocol")

    def _expect(self, awaiting: _Awaiting) -> None:
        self._awaiting = awaiting
        self._phase = _Phase.ANSWER

    def _path(self, name: str) -> str:
        """Where a file or directory named in a control line is, as far as the command tells."""
        if self._directories:
            return posixpath.join(self._directories[-1], name)
        paths = self._command.paths
        if self._upload:
            target = paths[0] if paths else "."
            # Without -d a single file may be written to the target path itself (scp.c sink()).
            return posixpath.join(target, name) if self._command.into_directory or self._command.recursive else target
        if len(paths) == 1 and posixpath.basename(paths[0].rstrip("/")) == name:
            return paths[0].rstrip("/") or paths[0]
        return name

    # -- the sink's answers ---------------------------------------------------------------------------

    def _answers(self, data: bytes) -> None:
        pos, size = 0, len(data)
        while pos < size:
            if self._answer_line is not None:
                newline = data.find(b"\n", pos)
                end = size if newline < 0 else newline
                self._answer_line += data[pos:end]
                if len(self._answer_line) > MAX_LINE:
                    self._fail("the scp sink sent an error message longer than scp allows")
                pos = size if newline < 0 else newline + 1
                if newline >= 0:
                    message = self._answer_line.decode("utf-8", "backslashreplace")
                    self._answer_line = None
                    self._answered(message)
                continue
            status = data[pos]
            pos += 1
            if status == 0:
                self._answered(None)
            elif status in (1, 2):
                self._answer_line, self._answer_fatal = bytearray(), status == 2
            else:
                self._fail(f"the scp sink answered with the byte {status:#04x}")

    def _answered(self, error: str | None) -> None:
        """The sink's answer (None: ok, else its message) to what the source sent last."""
        if self._phase is not _Phase.ANSWER:
            self._fail(f"the scp sink answered while the source was sending {self._phase.value}")
        awaiting = self._awaiting
        self._phase = _Phase.LINE
        if awaiting.what == "ready" and error is not None:
            self._phase = _Phase.DONE
        elif awaiting.what == "file" and awaiting.record is not None:
            if error is None:
                self._record, self._size, self._offset = awaiting.record, awaiting.record.size or 0, 0
                self._phase = _Phase.DATA if self._size else _Phase.STATUS
            else:
                self._report(awaiting.record, f"refused: {error.strip()}")
        elif awaiting.what == "data" and awaiting.record is not None:
            self._report(awaiting.record, "ok" if error is None else f"failed: {error.strip()}")
            self._record = None
        elif awaiting.what == "directory" and error is None:
            self._directories.append(self._path(awaiting.name))
        elif awaiting.what == "end" and self._directories:
            self._directories.pop()
        if self._answer_fatal:
            self._phase = _Phase.DONE

    def _report(self, record: TransferRecord, status: str) -> None:
        self._reporter.report("file_transferred", record.detail(status))

    def _fail(self, why: str) -> NoReturn:
        raise TapFailure(f"the file transfer cannot be inspected: {why}")
