"""The few messages between a gateway and its recording writer process (gateway.recording_worker), on one socket.

Strictly request, then reply: the gateway's writer thread sends one request and reads its reply before the next,
so the worker needs no buffering of its own and a reply always belongs to the request before it.

A request is ``op`` (1 byte), the recording's number (4) and the payload's length (4), then the payload:
  OPEN    the recording file's descriptor rides along (SCM_RIGHTS); payload: its directory, for the fsync at close
  RAW     bytes to write as they are (the header line)
  EVENTS  a batch of the session's chunks, for the worker to render as event lines (gateway.cast_events)
  CLOSE   write what is left, fsync, close; the reply carries the SHA-256 (hex) and size of exactly the file
  ABORT   close the file, keep what is in it
  SHARED_EVENTS  as EVENTS, but the batch is in the memory shared with the worker (from offset 0); the payload
          is its length (4 bytes). One copy into shared memory instead of two through the socket; a batch too
          large for it goes as EVENTS
A reply is a status (1 byte: 0 done, 1 failed) and the payload's length (4): for a failure the errno (4) and the
error's words, for CLOSE the hash and size.

An EVENTS payload is the recording's start (8-byte float, the monotonic clock the chunks were stamped with), then
per chunk its time (8-byte float), its stream (1 byte) and its length (4), then its bytes. Streams 0-2 are
input, stdout and stderr (length ``END``: the stream's end); 3 and 4 carry the text of ``r`` and ``m`` events.
Floats go over as they are, so the worker's ``round(at - started, 6)`` is the one the gateway computed before.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence

from gateway.cast_events import Entry

OPEN, RAW, EVENTS, CLOSE, ABORT, SHARED_EVENTS = 1, 2, 3, 4, 5, 6
DONE, FAILED = 0, 1
REQUEST = struct.Struct("<BII")
SHARED_LENGTH = struct.Struct("<I")
REPLY = struct.Struct("<BI")
STARTED = struct.Struct("<d")
CHUNK = struct.Struct("<dBI")
CLOSED = struct.Struct("<64sQ")
ERROR = struct.Struct("<i")
END = 0xFFFFFFFF  # the length that marks a stream's end (no bytes follow)
# The text events' codes on the wire (after the three byte streams).
TEXT_CODES = {"r": 3, "m": 4}
TEXT_EVENTS = {number: code for code, number in TEXT_CODES.items()}


def new_batch(started: float) -> bytearray:
    """An empty EVENTS payload, to which the recorder appends each chunk as it crosses the gateway (``add``)."""
    return bytearray(STARTED.pack(started))


def add(batch: bytearray, at: float, stream: int | str, data: bytes | str | None) -> None:
    """Append one chunk (or an ``r``/``m`` event, or a stream's end) to an EVENTS payload. The recorder's hot path
    writes the bytes case into a batch allocated ahead instead (gateway.recording: ``CHUNK.pack_into``)."""
    batch += new_event(at, stream, data)


def new_event(at: float, stream: int | str, data: bytes | str | None) -> bytes:
    """One chunk (or an ``r``/``m`` event, or a stream's end) as it goes into an EVENTS payload."""
    if data is None:
        return CHUNK.pack(at, int(stream), END)
    if isinstance(stream, str):
        body = str(data).encode("utf-8")
        return CHUNK.pack(at, TEXT_CODES[stream], len(body)) + body
    body = data.encode("utf-8") if isinstance(data, str) else data
    return CHUNK.pack(at, stream, len(body)) + body


def encode_batch(started: float, entries: Sequence[Entry]) -> bytearray:
    """The EVENTS payload of ``entries`` (``decode_batch`` gives them back)."""
    batch = new_batch(started)
    for at, stream, data in entries:
        add(batch, at, stream, data)
    return batch


def decode_batch(payload: bytes | bytearray | memoryview) -> tuple[float, list[Entry]]:
    """``(started, batch)`` from an EVENTS payload; ValueError if it is not one."""
    view = memoryview(payload)
    if len(view) < STARTED.size:
        raise ValueError("an events batch shorter than its header")
    (started,) = STARTED.unpack_from(view, 0)
    batch: list[Entry] = []
    offset, size = STARTED.size, len(view)
    while offset < size:
        if offset + CHUNK.size > size:
            raise ValueError("an events batch cut inside a chunk's header")
        at, stream, length = CHUNK.unpack_from(view, offset)
        offset += CHUNK.size
        if length == END:
            batch.append((at, stream, None))
            continue
        if offset + length > size:
            raise ValueError("an events batch cut inside a chunk")
        data = bytes(view[offset:offset + length])
        offset += length
        if stream in TEXT_EVENTS:
            batch.append((at, TEXT_EVENTS[stream], data.decode("utf-8")))
        elif stream <= 2:
            batch.append((at, stream, data))
        else:
            raise ValueError(f"an events batch names stream {stream}")
    return started, batch


def failure(exc: BaseException) -> bytes:
    """A FAILED reply's payload: errno and words, so the gateway raises the OSError the worker met."""
    number = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
    words = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or type(exc).__name__
    return ERROR.pack(number) + words.encode("utf-8", "replace")


def raise_failure(payload: bytes) -> None:
    (number,) = ERROR.unpack_from(payload, 0)
    raise OSError(number, payload[ERROR.size:].decode("utf-8", "replace"))
