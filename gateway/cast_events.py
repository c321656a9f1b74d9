"""Asciicast event lines from the raw bytes of a stream, byte for byte what ``json.dumps`` would write, cheaply.

A recorded session's output is mostly text with a handful of characters JSON must escape (``\\r\\n`` above all,
then tabs, quotes, backslashes and the terminal's ESC). ``json.dumps`` escapes a string one character at a time
(2.5-9 ms per MB on this 2-core box, the more loaded the slower, the largest part of what recording cost the
relay); a few single-byte ``bytes.replace`` calls, each a C scan that only copies when the byte occurs, do the
same in about a third of that (a two-byte pattern such as CR LF is slower to replace than its two bytes apart).
Anything else (other control characters) takes ``json.dumps`` as before, so the file format and its bytes do not
change (docs/API.md, "Recordings").
"""

from __future__ import annotations

import base64
import codecs
import json
from collections.abc import Sequence
from typing import cast

# The streams of a session, as a batch names them; "r" and "m" events carry their code instead.
INPUT, STDOUT, STDERR = 0, 1, 2
# Chunks of one stream this close in time (seconds) are written as one event: well under a frame of playback.
MERGE_WINDOW = 0.005
# One entry of a batch: (monotonic time, stream or event code, bytes or text); None as data: the stream's end.
Entry = tuple[float, int | str, bytes | str | None]

# Control characters with a JSON escape the fast path writes itself, as json.dumps does (RFC 8259 §7): the short
# forms and ESC, which every coloured terminal line carries. Backslash first, so no escape is escaped again.
_REPLACEMENTS = (
    (b"\\", b"\\\\"), (b'"', b'\\"'), (b"\n", b"\\n"), (b"\r", b"\\r"), (b"\t", b"\\t"), (b"\x1b", b"\\u001b"),
    (b"\x08", b"\\b"), (b"\x0c", b"\\f"),
)  # fmt: skip
# Any other control character sends the chunk down json.dumps (rare in bulk output: BEL, NUL, SO/SI). Looked for
# one byte at a time: 24 memchr scans of a chunk cost less than one pass of a regular expression's character class.
_OTHER_CONTROLS = tuple(bytes([code]) for code in range(0x20) if code not in b"\n\r\t\x1b\x08\x0c")


def json_string(text: bytes) -> bytes:
    """``text`` (valid UTF-8) as a JSON string, quotes included: the bytes ``json.dumps(str, ensure_ascii=False)``
    gives, UTF-8 encoded."""
    return b'"' + escaped(text) + b'"'


def escaped(text: bytes) -> bytes:
    """What goes between the quotes of ``json_string(text)``. UTF-8 never uses bytes below 0x80 inside a multibyte
    character, so escaping bytes is safe."""
    if any(control in text for control in _OTHER_CONTROLS):
        return json.dumps(text.decode("utf-8"), ensure_ascii=False).encode("utf-8")[1:-1]
    for plain, replacement in _REPLACEMENTS:
        if plain in text:  # a memchr scan; replace would copy even when nothing matched
            text = text.replace(plain, replacement)
    return text


class CastStream:
    """One stream (output or input) of a recording as JSON event payloads: ``o``/``i`` text while the bytes are
    UTF-8, else the chunk whole as base64 (``ob``/``ib``), exactly as ``gateway.recording.StreamText`` decides.

    Not thread-safe: one writer calls it, in the order the chunks crossed the gateway.
    """

    def __init__(self, code: str) -> None:
        self._code = code.encode("ascii")
        self._binary = self._code + b"b"
        # A character split across chunks is held back by the decoder and written with the next chunk.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._holding = False

    def encode(self, data: bytes, final: bool = False) -> tuple[bytes, bytes]:
        """``(code, JSON string without its quotes)``: ``b""`` when nothing is complete yet (write no event).
        Base64 needs no escaping, so for ``ob``/``ib`` that is the base64 itself."""
        if not self._holding and data.isascii():  # the common case: no decoder, no copy of the text
            return self._code, escaped(data) if data else b""
        held = self._decoder.getstate()[0]
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError:
            self._decoder.reset()
            self._holding = False
            return self._binary, base64.b64encode(held + data)
        self._holding = bool(self._decoder.getstate()[0])
        return self._code, escaped(text.encode("utf-8")) if text else b""


    def encode_group(self, chunks: list[bytes]) -> list[tuple[bytes, bytes]]:
        """Consecutive chunks as one payload if together they are text; else each one as ``encode`` gives it
        (so a line of text before binary output stays text): one ``(code, payload)``, or one per chunk."""
        if len(chunks) == 1:
            return [self.encode(chunks[0])]
        joined = b"".join(chunks)
        if not self._holding and joined.isascii():
            return [(self._code, escaped(joined))]
        state = self._decoder.getstate()
        try:
            text = self._decoder.decode(joined)
        except UnicodeDecodeError:
            self._decoder.setstate(state)
            return [self.encode(chunk) for chunk in chunks]
        self._holding = bool(self._decoder.getstate()[0])
        return [(self._code, escaped(text.encode("utf-8")) if text else b"")]


def event_line(elapsed: float, code: bytes, body: bytes) -> bytes:
    """One event line, ``[t, "code", "body"]`` and a newline, spaced as ``json.dumps`` spaces a list (one copy of
    the body: quoting it separately would be another)."""
    return b'[%r, "%s", "%s"]\n' % (elapsed, code, body)


class CastRenderer:
    """A recording's events as asciicast event lines, batch after batch in order (one renderer per recording,
    used by one writer: it holds the streams' decoders, so a character split across batches stays whole)."""

    def __init__(self, started: float) -> None:
        self.started = started  # the recording's start, on the monotonic clock its entries are stamped with
        self._streams = (CastStream("i"), CastStream("o"), CastStream("o"))

    def render(self, batch: Sequence[Entry]) -> bytes:
        """A batch as event lines (``json.dumps`` output, byte for byte). Consecutive chunks of one stream that
        arrived within ``MERGE_WINDOW`` of each other and together are text become one event, stamped with the
        first one's time: a terminal delivers bulk output ~4 KiB at a time, and each event has a fixed cost to
        encode and to store. Chunks that are not text together stay one event each, as they came."""
        lines = []
        started = self.started
        streams = self._streams
        count, index = len(batch), 0
        while index < count:
            at, stream, data = batch[index]
            index += 1
            elapsed = round(at - started, 6)
            if isinstance(stream, str):  # "r" or "m": the gateway's own few words
                lines.append(json.dumps([elapsed, stream, data], ensure_ascii=False).encode() + b"\n")
                continue
            if data is None:
                code, payload = streams[stream].encode(b"", final=True)
                if payload:
                    lines.append(event_line(elapsed, code, payload))
                continue
            first = index - 1
            while index < count and batch[index][1] == stream and batch[index][2] is not None \
                    and batch[index][0] - at <= MERGE_WINDOW:
                index += 1
            group = batch[first:index]
            encoded = streams[stream].encode_group([cast(bytes, chunk) for _, _, chunk in group])
            # Merged, the event has the first chunk's time; else each chunk is its own event, as it came.
            times = [elapsed] if len(encoded) == 1 else [round(chunk_at - started, 6) for chunk_at, _, _ in group]
            for chunk_elapsed, (code, payload) in zip(times, encoded, strict=True):
                if payload:
                    lines.append(event_line(chunk_elapsed, code, payload))
        return b"".join(lines)
