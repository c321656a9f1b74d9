"""The gateway's side of its recording writer process (gateway.recording_worker): start it, talk to it, stop it.

``RecordingProcess`` is one worker per gateway, started when the store is prepared (gateway start-up) and kept
until the gateway stops; ``WorkerFile`` is one recording in it, the file the writer thread
(gateway.recording_queue) writes to. Only that thread sends requests; each waits for its reply (the socket
call releases the GIL, so the relay runs meanwhile). A worker that dies fails the recordings it held
(``OSError``: fail closed, as a disk error would) and the next recording starts a new one.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from gateway import recording_wire as wire

# Seconds a stopping gateway gives its worker to finish before it is killed.
STOP_TIMEOUT = 5.0
# Memory shared with the worker for one batch at a time (a batch is handed over at ~512 KiB, see
# gateway.recording; a larger one goes through the socket).
SHARED_BYTES = 4 * 1024 * 1024
# A request up to this size is sent with its header in one system call.
SMALL_REQUEST = 64 * 1024


class RecordingProcess:
    """One recording writer process and the socket to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._shared: mmap.mmap | None = None
        self.generation = 0  # bumped each time a worker starts: a file opened in an earlier one is lost
        self._numbers = 0

    def start(self) -> None:
        """Start the worker unless it runs (cheap when it does; a fork and exec when it does not)."""
        with self._lock:
            if self._sock is not None:
                return
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            memory = _shared_memory()
            try:
                argv = [sys.executable, "-m", "gateway.recording_worker", str(theirs.fileno())]
                if memory is not None:
                    argv.append(str(memory))
                self._process = subprocess.Popen(
                    argv, pass_fds=(theirs.fileno(),) if memory is None else (theirs.fileno(), memory),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                self._shared = None if memory is None else mmap.mmap(memory, SHARED_BYTES)
            except OSError:
                ours.close()
                raise
            finally:
                theirs.close()
                if memory is not None:
                    os.close(memory)
            self._sock = ours
            self.generation += 1

    def stop(self) -> None:
        """Close the socket (the worker finishes and exits) and wait for it; kill it if it does not go."""
        with self._lock:
            sock, process, self._sock, self._process = self._sock, self._process, None, None
            self._drop_shared()
        if sock is not None:
            sock.close()
        if process is not None:
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def file(self, fd: int, directory: Path) -> WorkerFile:
        """A recording for the file ``fd`` (the worker gets the descriptor with the first request)."""
        with self._lock:
            self._numbers += 1
            return WorkerFile(self, self._numbers, fd, directory)

    def call_events(self, number: int, batch: bytes | bytearray | memoryview, generation: int | None) -> None:
        """Hand a batch to the worker: copied once into the shared memory if it fits, else through the socket."""
        with self._lock:
            shared = self._shared if len(batch) <= SHARED_BYTES else None
            if shared is not None:
                shared[:len(batch)] = batch
                self._call_locked(wire.SHARED_EVENTS, number, wire.SHARED_LENGTH.pack(len(batch)), None, generation)
            else:
                self._call_locked(wire.EVENTS, number, batch, None, generation)

    def call(self, op: int, number: int, payload: bytes = b"", *, fd: int | None = None,
             generation: int | None = None) -> bytes:
        """Send one request and return its reply's payload; OSError if it failed or the worker is gone."""
        with self._lock:
            return self._call_locked(op, number, payload, fd, generation)

    def _call_locked(self, op: int, number: int, payload: bytes | bytearray | memoryview, fd: int | None,
                     generation: int | None) -> bytes:
        """With the lock held: one request and its reply (the worker's end of ``call``)."""
        sock = self._sock
        if sock is None or (generation is not None and generation != self.generation):
            raise OSError(errno.EIO, "the recording writer process stopped")
        header = wire.REQUEST.pack(op, number, len(payload))
        try:
            if fd is not None:  # the descriptor rides with the request's first bytes
                rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))
                sent = sock.sendmsg([header], [rights])
                sock.sendall(header[sent:])
                sock.sendall(payload)
            elif len(payload) <= SMALL_REQUEST:
                sock.sendall(header + payload)  # one system call
            else:
                sock.sendall(header)
                sock.sendall(payload)  # no copy of a large payload to put the header in front
            status, length = wire.REPLY.unpack(_read(sock, wire.REPLY.size))
            reply = _read(sock, length)
        except OSError as exc:
            self._lost()
            raise OSError(errno.EIO, "the recording writer process stopped") from exc
        if status != wire.DONE:
            wire.raise_failure(reply)
        return reply

    def _lost(self) -> None:
        """With the lock held: the worker is gone (its recordings fail); the next start makes a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._drop_shared()
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(OSError):
                process.kill()
            threading.Thread(target=process.wait, daemon=True).start()  # reap it without holding the lock


    def _drop_shared(self) -> None:
        if self._shared is not None:
            self._shared.close()
            self._shared = None


def _shared_memory() -> int | None:
    """A descriptor of SHARED_BYTES of anonymous memory to share with the worker, or None where there is none
    (memfd_create is Linux's; elsewhere every batch goes through the socket)."""
    try:
        fd = os.memfd_create("gatepass-recording-batch", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        return None
    try:
        os.ftruncate(fd, SHARED_BYTES)
    except OSError:
        os.close(fd)
        return None
    return fd


def _read(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        received = sock.recv_into(view[done:])
        if received == 0:
            raise ConnectionResetError(errno.ECONNRESET, "the recording writer process closed its end")
        done += received
    return bytes(buffer)


class WorkerFile:
    """One recording written by the worker (what gateway.recording_queue's thread writes to)."""

    def __init__(self, process: RecordingProcess, number: int, fd: int, directory: Path) -> None:
        self._process = process
        self._number = number
        self._fd: int | None = fd  # ours until the worker has it
        self._directory = directory
        self._generation: int | None = None  # the worker that holds the file, once it does
        self._closed = False

    def write(self, data: bytes) -> None:
        self._call(wire.RAW, data)

    def write_events(self, batch: bytes | bytearray | memoryview) -> None:
        self._ready()
        self._process.call_events(self._number, batch, self._generation)

    def flush(self) -> None:
        """Nothing to do: the worker writes each request's bytes before it replies."""
        if self._closed:
            raise OSError(errno.EBADF, "the recording is already closed")

    def close(self) -> tuple[str, int]:
        reply = self._call(wire.CLOSE)
        self._closed = True
        sha256, size = wire.CLOSED.unpack(reply)
        return sha256.decode("ascii"), size

    def abort(self) -> None:
        if self._fd is not None:  # the worker never had it
            os.close(self._fd)
            self._fd = None
        elif self._generation is not None and not self._closed:
            with contextlib.suppress(OSError):
                self._process.call(wire.ABORT, self._number, generation=self._generation)
        self._closed = True

    def _ready(self) -> None:
        """Before a request: refused once closed; the first one hands the file to the worker."""
        if self._closed:
            raise OSError(errno.EBADF, "the recording is already closed")
        if self._fd is not None:
            self._open()

    def _call(self, op: int, payload: bytes = b"") -> bytes:
        self._ready()
        try:
            return self._process.call(op, self._number, payload, generation=self._generation)
        except OSError:
            self._closed = op == wire.CLOSE or self._closed
            raise

    def _open(self) -> None:
        assert self._fd is not None  # noqa: S101 - only called while we hold it
        self._process.start()  # a worker that died since the store started is replaced
        generation = self._process.generation
        fd, self._fd = self._fd, None
        try:
            self._process.call(wire.OPEN, self._number, str(self._directory).encode("utf-8"), fd=fd,
                               generation=generation)
        finally:
            os.close(fd)  # the worker has its own copy now (or the recording failed)
        self._generation = generation
