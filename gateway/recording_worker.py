"""The recording writer process: renders a gateway's recordings to asciicast lines, hashes and writes them.

Started by the gateway (gateway.recording_process) as ``python -m gateway.recording_worker FD``, with one end
of a socket pair as FD; it serves the requests of gateway.recording_wire until the gateway closes its end (or
dies, which closes it too). In its own process the work of recording (JSON escaping, base64 for binary output,
SHA-256, the writes) runs beside the relay instead of taking turns with it for the gateway's GIL: the relay
only copies each batch of chunks once into the socket.

Each recording is a ``FileWriter`` (gateway.recording_store) on the descriptor the gateway created (O_EXCL,
0600) and passed over, which renders batches with a ``CastRenderer``; an error is the reply to the request
that met it, and the gateway fails that recording (fail closed). Interrupts and terminate signals are ignored:
at shutdown the gateway still closes its live recordings through this process, which goes when the gateway does.
"""

from __future__ import annotations

import array
import contextlib
import errno
import mmap
import os
import signal
import socket
import sys
from pathlib import Path

from gateway import recording_wire as wire
from gateway.recording_store import FileWriter

# Room for the descriptors that may ride on one read (one OPEN's at a time, a few to spare).
_FDS = socket.CMSG_SPACE(8 * array.array("i").itemsize)


class Connection:
    """The worker's end of the socket: exact reads that keep any descriptor arriving with the bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.fds: list[int] = []

    def read(self, size: int) -> bytearray | None:
        """``size`` bytes, or None at the end (the gateway closed its end)."""
        buffer = bytearray(size)
        view, done = memoryview(buffer), 0
        while done < size:
            received, ancillary, _, _ = self._sock.recvmsg_into([view[done:]], _FDS)
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                    self.fds.extend(fds)
            if received == 0:
                return None
            done += received
        return buffer

    def reply(self, status: int, payload: bytes = b"") -> None:
        self._sock.sendall(wire.REPLY.pack(status, len(payload)) + payload)


def serve(connection: Connection, shared: mmap.mmap | None = None) -> None:
    recordings: dict[int, FileWriter] = {}
    try:
        while (header := connection.read(wire.REQUEST.size)) is not None:
            op, number, length = wire.REQUEST.unpack(header)
            payload = connection.read(length) if length else bytearray()
            if payload is None:
                return
            try:
                connection.reply(wire.DONE, _handle(op, number, payload, recordings, connection, shared))
            except Exception as exc:  # the request failed: the gateway fails that recording
                connection.reply(wire.FAILED, wire.failure(exc))
    finally:
        for recording in recordings.values():
            recording.abort()


def _handle(op: int, number: int, payload: bytearray, recordings: dict[int, FileWriter],
            connection: Connection, shared: mmap.mmap | None) -> bytes:
    if op not in (wire.OPEN, wire.RAW, wire.EVENTS, wire.SHARED_EVENTS, wire.CLOSE, wire.ABORT):
        raise OSError(errno.EPROTO, f"unknown request {op}")
    if op == wire.OPEN:
        if not connection.fds:
            raise OSError(errno.EBADF, "the recording file did not arrive")
        recordings[number] = FileWriter(connection.fds.pop(0), Path(payload.decode("utf-8")))
        return b""
    recording = recordings.get(number)
    if recording is None:
        raise OSError(errno.EBADF, "the recording is not open")
    if op == wire.RAW:
        recording.write(bytes(payload))
        recording.flush()
    elif op == wire.EVENTS:
        recording.write_events(payload)
        recording.flush()
    elif op == wire.SHARED_EVENTS:
        if shared is None or len(payload) != wire.SHARED_LENGTH.size:
            raise OSError(errno.EPROTO, "the gateway sent a broken batch (no memory is shared with this worker)")
        (length,) = wire.SHARED_LENGTH.unpack(payload)
        recording.write_events(memoryview(shared)[:length])
        recording.flush()
    elif op == wire.CLOSE:
        del recordings[number]
        sha256, size = recording.close()
        return wire.CLOSED.pack(sha256.encode("ascii"), size)
    else:  # ABORT
        del recordings[number]
        recording.abort()
    return b""


def main(argv: list[str]) -> int:
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    shared = None
    if len(argv) > 1:  # the memory the gateway puts batches in (gateway.recording_process.SHARED_BYTES)
        fd = int(argv[1])
        shared = mmap.mmap(fd, os.fstat(fd).st_size)
        os.close(fd)
    with contextlib.suppress(ConnectionError):
        serve(Connection(sock), shared)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
