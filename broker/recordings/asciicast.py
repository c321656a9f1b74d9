"""asciicast v2 recordings as data: parse a file (bounded), and their output as plain text for search."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.errors import BrokerError

# A header is a small JSON object; a line this long is not one (or is not asciicast at all).
MAX_HEADER_BYTES = 64 * 1024
# Parsing for search and playback stops here; the rest of a bigger file is reported as not shown.
MAX_PARSE_BYTES = 64 * 1024 * 1024
# "ob"/"ib": output/input bytes that were not UTF-8, base64-encoded by the gateway (docs/API.md, Recordings).
EVENT_CODES = frozenset({"o", "i", "r", "m", "ob", "ib"})


class RecordingFormatError(BrokerError, ValueError):
    """The file is not an asciicast v2 recording (bad header, or a broken line before the last)."""


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
ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]"
    r"|\x1b"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip_escapes(text: str) -> str:
    """Output as plain text: escape sequences and control characters gone, CR LF as LF, backspace applied."""
    text = ESCAPE_SEQUENCE.sub("", text).replace("\r\n", "\n")
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
