"""Read side of the session recording store: safe names, hashes, asciicast v2 parsing, transcripts, and the
check of each recording against the hash its gateway reported (``gatepass audit verify``).

The gateway writes ``<session id>.cast`` (asciicast v2, https://docs.asciinema.org/manual/asciicast/v2/) and
reports its SHA-256 and size when the session ends; the broker keeps them on the session row and in the
``gateway:session:ended`` audit event. The audit event is hash-chained, the row is not: both are compared.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.errors import BrokerError, InvalidInput, NotFound
from broker.models import AccessSession, AuditEvent
from broker.settings import Settings

# <session id>.cast, or .<n>.cast for later channels of the same session (the gateway API's rule); no paths.
RECORDING_NAME = re.compile(r"[A-Za-z0-9_-]{1,48}(\.[0-9]{1,6})?\.cast")
# A header is a small JSON object; a line this long is not one (or is not asciicast at all).
MAX_HEADER_BYTES = 64 * 1024
# Parsing for search and playback stops here; the rest of a bigger file is reported as not shown.
MAX_PARSE_BYTES = 64 * 1024 * 1024
# "ob"/"ib": output/input bytes that were not UTF-8, base64-encoded by the gateway (docs/API.md, Recordings).
EVENT_CODES = frozenset({"o", "i", "r", "m", "ob", "ib"})
SESSION_ENDED = "gateway:session:ended"


class RecordingFormatError(BrokerError, ValueError):
    """The file is not an asciicast v2 recording (bad header, or a broken line before the last)."""


def recordings_dir(settings: Settings) -> Path:
    """Where the gateway of `gatepass serve` keeps recordings (DATA_DIR/recordings)."""
    return settings.recordings_dir


def resolve(directory: Path, name: str) -> Path:
    """The path of recording ``name`` inside ``directory``; refuses anything that is not a plain recording
    name (no separators, no ``..``), so a name from a URL or a database row cannot reach another file."""
    if not RECORDING_NAME.fullmatch(name):
        raise InvalidInput(f"'{name[:60]}' is not a recording name (like ses-1a2b3c4d.cast)")
    path = directory / name
    if path.is_symlink() or path.resolve().parent != directory.resolve():
        raise InvalidInput(f"recording {name} is not a plain file in the recordings directory")
    return path


def file_digest(path: Path, chunk: int = 1024 * 1024) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in chunks (recordings can be large)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


# --- asciicast v2 ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cast:
    header: dict[str, Any]
    events: list[tuple[float, str, str]]
    # The last line was cut off (a gateway that died mid-write), or the file was longer than we parse.
    truncated: bool = False

    @property
    def width(self) -> int:
        return int(self.header["width"])

    @property
    def height(self) -> int:
        return int(self.header["height"])

    @property
    def gatepass(self) -> dict[str, Any]:
        value = self.header.get("gatepass")
        return value if isinstance(value, dict) else {}


def _header(line: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError:
        raise RecordingFormatError("the first line is not a JSON header") from None
    if not isinstance(header, dict) or header.get("version") != 2:
        raise RecordingFormatError("the header is not an asciicast version 2 header")
    for key in ("width", "height"):
        value = header.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1000:
            raise RecordingFormatError(f"the header's {key} is not a terminal size")
    return header


def _event(line: str) -> tuple[float, str, str] | None:
    try:
        item = json.loads(line)
    except ValueError:
        return None
    if (not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], int | float)
            or isinstance(item[0], bool) or item[1] not in EVENT_CODES or not isinstance(item[2], str)):
        return None
    return float(item[0]), item[1], item[2]


def parse_cast(lines: Iterable[str]) -> Cast:
    """Strict about the header, tolerant of a cut-off last line; a broken line elsewhere is an error."""
    iterator = iter(lines)
    first = next(iterator, None)
    if first is None or not first.strip():
        raise RecordingFormatError("the recording is empty")
    header = _header(first)
    events: list[tuple[float, str, str]] = []
    broken: int | None = None
    for number, line in enumerate(iterator, start=2):
        if not line.strip():
            continue
        if broken is not None:
            raise RecordingFormatError(f"line {broken} is not an asciicast event")
        event = _event(line)
        if event is None:
            broken = number
            continue
        events.append(event)
    return Cast(header=header, events=events, truncated=broken is not None)


def _lines(path: Path, limit: int) -> Iterator[str]:
    with path.open("rb") as handle:
        first = handle.readline(MAX_HEADER_BYTES + 1)
        if len(first) > MAX_HEADER_BYTES:
            raise RecordingFormatError("the first line is too long to be an asciicast header")
        read = len(first)
        yield first.decode("utf-8", errors="replace")
        for raw in handle:
            read += len(raw)
            if read > limit:
                yield "\0"  # stands for the cut: parsed as a broken last line, so the cast says truncated
                return
            yield raw.decode("utf-8", errors="replace")


def read_cast(path: Path, *, limit: int = MAX_PARSE_BYTES) -> Cast:
    return parse_cast(_lines(path, limit))


# --- text of a recording -------------------------------------------------------------------------------------

# ECMA-48 sequences: CSI, OSC (ended by BEL or ST), DCS/SOS/PM/APC strings, and two-character escapes.
_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]"
    r"|\x1b"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip_escapes(text: str) -> str:
    """Output as plain text: escape sequences and control characters gone, CR LF as LF, backspace applied."""
    text = _ESCAPE.sub("", text).replace("\r\n", "\n")
    if "\b" in text:
        kept: list[str] = []
        for char in text:
            if char == "\b":
                if kept and kept[-1] != "\n":
                    kept.pop()
            else:
                kept.append(char)
        text = "".join(kept)
    return _CONTROL.sub("", text.replace("\r", "\n"))


def search_text(cast: Cast) -> str:
    """Everything the target printed, in order, as plain text: what "text in transcript" searches (it also
    finds text a full-screen program later drew over)."""
    return strip_escapes("".join(text for _t, code, text in cast.events if code == "o"))


def contains_text(path: Path, wanted: str, *, limit: int = MAX_PARSE_BYTES) -> bool:
    """Whether the recording's output (as plain text) contains ``wanted``, case-insensitively. Reads the file
    as a stream and stops at the first match, so a search over many recordings holds one line at a time."""
    wanted = wanted.casefold()
    if not wanted:
        return True
    lines = _lines(path, limit)
    _header(next(lines, ""))
    tail = ""
    for line in lines:
        event = _event(line) if line.strip() else None
        if event is None or event[1] != "o":
            continue
        window = tail + strip_escapes(event[2]).casefold()
        if wanted in window:
            return True
        # Keep enough to find a match that spans two output events.
        tail = window[-(len(wanted) - 1):] if len(wanted) > 1 else ""
    return False


_CSI = re.compile(r"\x1b\[([0-?]*)([ -/]*)([@-~])")
# The start of an escape sequence cut off at the end of an output event: kept for the next one, as a terminal's
# parser keeps its state between writes (the gateway records output in the chunks it arrives in).
_INCOMPLETE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[PX^_][^\x1b]*\x1b?|[ -/]*)")
MAX_PENDING = 512


class Screen:
    """A minimal VT100 subset with scrollback, the same one approvals/static/player.js implements: printable
    text with wrap, CR, LF, BS, tab, CSI A/B/C/D/H/f (cursor), K/J (erase); every other sequence is ignored."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.lines: list[list[str]] = [[]]
        self.row = 0
        self.col = 0
        self._pending = ""

    @property
    def top(self) -> int:
        return max(0, len(self.lines) - self.height)

    def _line(self, row: int) -> list[str]:
        while len(self.lines) <= row:
            self.lines.append([])
        return self.lines[row]

    def _put(self, char: str) -> None:
        if self.col >= self.width:
            self.col = 0
            self.row += 1
        line = self._line(self.row)
        while len(line) < self.col:
            line.append(" ")
        if self.col < len(line):
            line[self.col] = char
        else:
            line.append(char)
        self.col += 1

    def _erase(self, row: int, start: int, end: int | None) -> None:
        line = self._line(row)
        stop = len(line) if end is None else min(end, len(line))
        for index in range(start, stop):
            line[index] = " "

    def _csi(self, params: str, final: str) -> None:
        if params.startswith(("?", ">", "<", "=")):
            return  # private modes (bracketed paste, cursor keys): nothing on the screen changes
        numbers = [int(p) if p.isdigit() else 0 for p in params.split(";")] if params else []
        first = numbers[0] if numbers else 0
        count = max(1, first)
        top = self.top
        if final == "A":
            self.row = max(top, self.row - count)
        elif final == "B":
            self.row = min(top + self.height - 1, self.row + count)
        elif final == "C":
            self.col = min(self.width - 1, self.col + count)
        elif final == "D":
            self.col = max(0, min(self.col, self.width) - count)
        elif final in "Hf":
            line = max(1, first) if numbers else 1
            column = max(1, numbers[1]) if len(numbers) > 1 else 1
            self.row = top + min(line, self.height) - 1
            self.col = min(column, self.width) - 1
        elif final == "K":
            start, end = {0: (self.col, None), 1: (0, self.col + 1), 2: (0, None)}.get(first, (0, 0))
            self._erase(self.row, start, end)
        elif final == "J":
            bottom = top + self.height
            if first == 0:
                self._erase(self.row, self.col, None)
                rows = range(self.row + 1, bottom)
            elif first == 1:
                self._erase(self.row, 0, self.col + 1)
                rows = range(top, self.row)
            else:
                rows = range(top, bottom)
            for row in rows:
                if row < len(self.lines):
                    self.lines[row] = []
        self._line(self.row)

    def feed(self, text: str) -> None:
        text, self._pending = self._pending + text, ""
        position = 0
        while position < len(text):
            char = text[position]
            if char == "\x1b":
                match = _CSI.match(text, position)
                if match:
                    self._csi(match.group(1), match.group(3))
                    position = match.end()
                    continue
                if len(text) - position <= MAX_PENDING and _INCOMPLETE.fullmatch(text, position):
                    self._pending = text[position:]
                    return
                other = _ESCAPE.match(text, position)
                position = other.end() if other else position + 1
                continue
            position += 1
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self.row += 1
                self._line(self.row)
            elif char == "\b":
                self.col = max(0, min(self.col, self.width) - 1)
            elif char == "\t":
                self.col = min(self.width - 1, (self.col // 8 + 1) * 8)
            elif char >= " " and not "\x7f" <= char <= "\x9f":
                self._put(char)

    def resize(self, width: int, height: int) -> None:
        self.width, self.height = max(1, width), max(1, height)

    def text(self, *, scrollback: bool = True) -> str:
        """The lines (all of them, or only the visible screen), right-trimmed, without trailing blank lines."""
        rows = self.lines if scrollback else self.lines[self.top:]
        return "\n".join("".join(line).rstrip() for line in rows).rstrip("\n")


def binary_marker(encoded: str) -> str:
    """What the player shows for output that was not text (player.js writes the same)."""
    size = len(encoded) // 4 * 3 - encoded[-2:].count("=")
    return f"\r\n[binary output: {size} bytes]\r\n"


def play(cast: Cast) -> Screen:
    """Run the recording's output (and resizes) through ``Screen``."""
    screen = Screen(cast.width, cast.height)
    for _t, code, text in cast.events:
        if code == "o":
            screen.feed(text)
        elif code == "ob":
            screen.feed(binary_marker(text))
        elif code == "r":
            width, _, height = text.partition("x")
            if width.isdigit() and height.isdigit():
                screen.resize(int(width), int(height))
    return screen


def transcript(cast: Cast) -> str:
    """The session as a plain-text transcript (what the terminal showed, scrollback included)."""
    return play(cast).text()


# --- verification --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordingsCheck:
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def status(record: AccessSession, directory: Path) -> str:
    """"intact", "edited", "missing", or "none" (no recording reported) for one session, checked now."""
    if not record.recording_name or not record.recording_sha256:
        return "none"
    try:
        path = resolve(directory, record.recording_name)
    except InvalidInput:
        return "edited"
    if not path.is_file():
        return "missing"
    digest, size = file_digest(path)
    return "intact" if (digest, size) == (record.recording_sha256, record.recording_bytes) else "edited"


def _who(record: AccessSession) -> str:
    grant = record.grant
    started = record.started_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"session {record.id} ({grant.identity.username} on {grant.asset.name} at {grant.asset.site.name}, "
            f"started {started})")


def _reported_in_audit(session: Session) -> dict[str, dict[str, Any]]:
    """Recording hashes from the hash-chained session-end events, by session id."""
    reported: dict[str, dict[str, Any]] = {}
    query = (select(AuditEvent.subject, AuditEvent.details)
             .where(AuditEvent.action == SESSION_ENDED, AuditEvent.details.contains('"recording":{')))
    for subject, details in session.execute(query):
        recording = json.loads(details).get("recording")
        if subject and isinstance(recording, dict):
            reported[subject] = recording
    return reported


def verify_recordings(session: Session, directory: Path) -> RecordingsCheck:
    """Check every recording a gateway reported: the file exists, and its size and SHA-256 match both the
    session row and the hash-chained audit event. One problem line per failing session (two when the row was
    changed as well)."""
    audited = _reported_in_audit(session)
    problems: list[str] = []
    checked = 0
    query = (select(AccessSession).where(AccessSession.recording_sha256.is_not(None))
             .order_by(AccessSession.started_at, AccessSession.id))
    for record in session.scalars(query):
        checked += 1
        problems.extend(_check(record, audited.pop(record.id, None), directory))
    # What is left: the audit trail records a recording, but the row no longer says so (or is gone).
    for session_id, expected in audited.items():
        checked += 1
        cleared = session.get(AccessSession, session_id)
        if cleared is None:
            problems.append(f"recording of session {session_id}: the audit trail records {expected.get('name')}, "
                            "but the session is gone from the database")
        else:
            problems.extend(_check(cleared, expected, directory))
    return RecordingsCheck(checked=checked, problems=problems)


def _check(record: AccessSession, expected: dict[str, Any] | None, directory: Path) -> list[str]:
    """Problems of one session's recording; ``expected`` is what its session-end audit event says."""
    who = _who(record)
    problems = []
    row = {"name": record.recording_name, "sha256": record.recording_sha256, "bytes": record.recording_bytes}
    if expected is not None and {k: expected.get(k) for k in row} != row:
        problems.append(f"recording of {who}: the session's stored hash differs from the one in the audit "
                        "trail (the database row was changed); checking against the audit trail")
    reference = expected if expected is not None else row
    name, sha256, size = str(reference.get("name")), reference.get("sha256"), reference.get("bytes")
    try:
        path = resolve(directory, name)
    except InvalidInput:
        return [*problems, f"recording of {who}: '{name[:60]}' is not a valid recording name"]
    if not path.is_file():
        return [*problems, f"recording of {who} is MISSING: {path} does not exist"]
    digest, actual = file_digest(path)
    if actual != size:
        problems.append(f"recording of {who} was EDITED: {path} has {actual} bytes, the gateway recorded {size}")
    elif digest != sha256:
        problems.append(f"recording of {who} was EDITED: the SHA-256 of {path} is {digest}, the gateway "
                        f"recorded {sha256}")
    return problems


def load(session: Session, session_id: str) -> AccessSession:
    record = session.get(AccessSession, session_id)
    if record is None:
        raise NotFound(f"there is no session {session_id[:40]}")
    return record
