"""Where session recordings are kept: a directory of ``<session id>.cast`` files, hashed as they are written.

The store is deliberately small: ``create(name)`` gives a writer that buffers, writes, hashes exactly the bytes
that reached the file, and on ``close()`` fsyncs and returns (sha256, bytes). Every storage problem surfaces
as ``OSError``; the recorder turns that into a session cut and blocks the site (fail closed).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Protocol

# The name the broker accepts for a recording (broker.gateways.RECORDING_NAME): no separators, no paths.
RECORDING_NAME = re.compile(r"[A-Za-z0-9_-]{1,48}(\.[0-9]{1,6})?\.cast")
# Buffered bytes that trigger a write on their own (the recorder also flushes at least once a second).
FLUSH_THRESHOLD = 64 * 1024
# What a probe writes to tell whether the store takes data again (one page on most file systems).
PROBE_BYTES = 4096


class RecordingWriter(Protocol):
    def write(self, data: bytes) -> None:
        """Buffer ``data``; may write (and raise OSError) when the buffer is large."""
        ...

    def flush(self) -> None:
        """Write everything buffered so far; raises OSError if the store cannot take it."""
        ...

    def close(self) -> tuple[str, int]:
        """Flush, make durable and close: (hex SHA-256, size) of exactly what was written."""
        ...

    def abort(self) -> None:
        """Close without writing what is still buffered (after a failure); never raises."""
        ...


class RecordingStore(Protocol):
    def create(self, name: str) -> tuple[str, RecordingWriter]:
        """A new recording named ``name`` (or a numbered variant if it exists): (name used, writer)."""
        ...

    def probe(self) -> None:
        """Write and remove a small file; raises OSError if recordings cannot be written now."""
        ...


class DirectoryStore:
    """Recordings as files in one directory (mode 0700), each created once (O_EXCL), mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def prepare(self) -> None:
        """Create the directory if needed and restrict it to the gateway's user."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)

    def create(self, name: str) -> tuple[str, RecordingWriter]:
        if not RECORDING_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a recording name (letters, digits, - and _, then .cast)")
        self.prepare()
        stem = name.removesuffix(".cast")
        # A recording is never overwritten: if the name is taken (a reused data directory), number it.
        for number in range(1000):
            candidate = name if number == 0 else f"{stem}.{number}.cast"
            try:
                fd = os.open(self.path / candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            return candidate, FileWriter(fd, self.path)
        raise FileExistsError(f"no free recording name for {name} in {self.path}")

    def probe(self) -> None:
        self.prepare()
        path = self.path / f".probe-{secrets.token_hex(8)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)


class FileWriter:
    """One open recording file: a write buffer, the running SHA-256 and the byte count."""

    def __init__(self, fd: int, directory: Path) -> None:
        self._fd: int | None = fd
        self._directory = directory
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._written = 0

    def write(self, data: bytes) -> None:
        self._buffer += data  # a bytearray grows in place, unlike bytes +=
        if len(self._buffer) >= FLUSH_THRESHOLD:
            self.flush()

    def flush(self) -> None:
        if self._fd is None:
            raise OSError("the recording is already closed")
        data = bytes(self._buffer)
        done = 0
        try:
            while done < len(data):
                written = os.write(self._fd, data[done:])
                # Hash what reached the file, not what was meant to: the reported hash must match the file.
                self._hash.update(data[done:done + written])
                done += written
        finally:
            del self._buffer[:done]
            self._written += done

    def close(self) -> tuple[str, int]:
        if self._fd is None:
            raise OSError("the recording is already closed")
        try:
            self.flush()
            os.fsync(self._fd)
        except OSError:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = None
        _fsync_directory(self._directory)
        return self._hash.hexdigest(), self._written

    def abort(self) -> None:
        self._buffer.clear()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_directory(path: Path) -> None:
    """Make the new file's directory entry durable too (a file fsynced in a lost directory is lost)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
