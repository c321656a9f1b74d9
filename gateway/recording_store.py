"""Where session recordings are kept: a directory of ``<session id>.cast`` files, hashed as they are written.

The store is deliberately small: ``create(name)`` creates the file (here, in the gateway) and gives a writer;
the store's writer thread (gateway.recording_queue) hands what is written to the store's writer process
(gateway.recording_process), which renders, hashes and writes it with a ``FileWriter``: the SHA-256 of exactly
the bytes that reached the file. ``close()`` fsyncs and returns (sha256, bytes). Every storage problem surfaces as
``OSError``; the recorder turns that into a session cut and blocks the site (fail closed).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gateway import recording_wire as wire
from gateway.cast_events import CastRenderer
from gateway.recording_process import RecordingProcess
from gateway.recording_queue import RecordingQueue

# The name the broker accepts for a recording (broker.gateways.RECORDING_NAME): no separators, no paths.
RECORDING_NAME = re.compile(r"[A-Za-z0-9_-]{1,48}(\.[0-9]{1,6})?\.cast")
# Buffered bytes that trigger a write on their own (the recorder also flushes at least once a second).
FLUSH_THRESHOLD = 64 * 1024
# Written bytes after which the file's pages are dropped from the page cache (see FileWriter._release_cache).
CACHE_RELEASE_BYTES = 8 * 1024 * 1024
# What a probe writes to tell whether the store takes data again (one page on most file systems).
PROBE_BYTES = 4096


class RecordingWriter(Protocol):
    # The first write error, once the writer thread met it; every later call raises it.
    failure: OSError | None
    # Called (in the writer thread) when a write fails: the recorder hands it to its event loop.
    on_failure: Callable[[OSError], None] | None

    def write(self, data: bytes) -> None:
        """Queue ``data``, waiting for room; raises OSError if the recording failed or the store takes nothing
        any more. Off the event loop only."""
        ...

    def submit(self, data: bytes) -> bool:
        """Queue ``data`` without waiting; False when the recording has no room left (its session should pause
        until ``when_room``). Raises OSError if the recording failed."""
        ...

    def submit_events(self, batch: bytes | bytearray | memoryview) -> bool:
        """``submit`` for a batch of the session's chunks (gateway.recording_wire), rendered as event lines
        elsewhere."""
        ...

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (at once, or later in the writer thread) once the recording has room again."""
        ...

    def flush(self) -> None:
        """Wait until everything queued so far is in the file; raises OSError if the store cannot take it."""
        ...

    def close(self) -> tuple[str, int]:
        """Flush, make durable and close: (hex SHA-256, size) of exactly what was written."""
        ...

    @property
    def stall_timeout(self) -> float:
        """Seconds the store may take nothing while someone waits on it before the recording fails."""
        ...

    def stalled_for(self) -> float:
        """Seconds the store has had work and done none (0 when idle or moving)."""
        ...

    def flush_soon(self, finished: Callable[[tuple[str, int] | None, OSError | None], None]) -> None:
        """``flush`` without waiting: ``finished(None, failure)`` is called (in the writer thread) when done."""
        ...

    def close_soon(self, finished: Callable[[tuple[str, int] | None, OSError | None], None]) -> None:
        """``close`` without waiting: ``finished(result, failure)`` is called (in the writer thread) when done."""
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

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still add to the recordings' file system; OSError if it cannot tell."""
        ...


class DirectoryStore:
    """Recordings as files in one directory (mode 0700), each created once (O_EXCL), mode 0600."""

    def __init__(self, path: Path, queue: RecordingQueue | None = None) -> None:
        self.path = path
        self.queue = queue or RecordingQueue()
        self.process = RecordingProcess()

    def prepare(self) -> None:
        """Create the directory if needed and restrict it to the gateway's user; start the writer process."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        self.process.start()

    def close(self) -> None:
        """Stop the writer process (the gateway stops; its recordings are closed before)."""
        self.process.stop()

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
            return candidate, self.queue.open(self.process.file(fd, self.path))
        raise FileExistsError(f"no free recording name for {name} in {self.path}")

    def free_bytes(self) -> int:
        found = os.statvfs(self.path)
        return found.f_bavail * found.f_frsize

    def probe(self) -> None:
        self.prepare()
        path = self.path / f".probe-{secrets.token_hex(8)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)


class FileWriter:
    """One open recording file: a write buffer, the running SHA-256 and the byte count (used by one thread; in
    the gateway's writer process, gateway.recording_worker)."""

    def __init__(self, fd: int, directory: Path) -> None:
        self._fd: int | None = fd
        self._directory = directory
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._written = 0
        self._released = 0  # bytes up to which the page cache was last told to drop the file
        self._renderer: CastRenderer | None = None

    def write_events(self, batch: bytes | bytearray | memoryview) -> None:
        """A batch of the session's chunks (an EVENTS payload, gateway.recording_wire) as event lines; OSError if
        it is not one."""
        try:
            started, entries = wire.decode_batch(batch)
        except ValueError as exc:
            raise OSError(errno.EPROTO, f"the gateway sent a broken batch ({exc})") from exc
        if self._renderer is None:
            self._renderer = CastRenderer(started)
        self.write(self._renderer.render(entries))

    def write(self, data: bytes) -> None:
        if not self._buffer and len(data) >= FLUSH_THRESHOLD:
            self._write_out(data)  # a large batch goes straight to the file, without a copy into the buffer
            return
        self._buffer += data  # a bytearray grows in place, unlike bytes +=
        if len(self._buffer) >= FLUSH_THRESHOLD:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            if self._fd is None:
                raise OSError("the recording is already closed")
            return
        data = bytes(self._buffer)
        self._buffer.clear()  # after an error the recording is failed and aborted: the rest is not kept
        self._write_out(data)

    def _write_out(self, data: bytes) -> None:
        """Write ``data`` whole, or raise having counted and hashed only what did reach the file."""
        if self._fd is None:
            raise OSError("the recording is already closed")
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                written = os.write(self._fd, view[done:])
                # Hash what reached the file, not what was meant to: the reported hash must match the file.
                self._hash.update(view[done:done + written])
                done += written
        finally:
            self._written += done
        if self._written - self._released >= CACHE_RELEASE_BYTES:
            self._release_cache()

    def _release_cache(self) -> None:
        """Drop what was written from the page cache. A recording is written once and read rarely, much later:
        cached, a busy gateway's recordings push out everything else, and once the cache is full each new page
        costs a reclaim (on this project's 2-core VMs, writing went from 0.25 to 2.8 ms of kernel time per MB
        after the first gigabyte). The advice also starts the writeback of dirty pages, which are dropped when a
        later call finds them clean: each call covers the last two steps again. Durability is unchanged: that
        is close()'s fsync."""
        start = max(0, self._released - 2 * CACHE_RELEASE_BYTES)
        with contextlib.suppress(OSError, AttributeError):  # advice only (and absent on some systems)
            os.posix_fadvise(self._fd, start, self._written - start, os.POSIX_FADV_DONTNEED)  # type: ignore[arg-type]
        self._released = self._written

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


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may take less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def sync_directory(path: Path) -> None:
    """fsync a directory: what was created, renamed or deleted in it is durable too."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    """Make the new file's directory entry durable too (a file fsynced in a lost directory is lost)."""
    with contextlib.suppress(OSError):
        sync_directory(path)
