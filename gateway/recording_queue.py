"""One writer thread per gateway: recordings leave the event loop here, in order.

The relay hands each recording's events over in batches (``QueuedWriter.submit_events``); the thread passes
them to the recording's file, which for the gateway is its writer process (gateway.recording_process: the
thread's socket calls release the GIL, the rendering, hashing and writing run in the other process).

The queue is bounded in bytes, per recording (``writer_limit``) and for the gateway (``limit``), by flow control
rather than by waiting: ``submit``/``submit_events`` never wait and say whether there is room for more; when there
is not, the recorder pauses its own session (it stops reading from the target and the client) until the thread
calls its ``when_room`` callback. A slow disk slows the sessions it records, each on its own; the event loop, and
with it every other relay and every cut, never waits for the disk. Memory stays bounded: a paused recording adds at
most the batch it was handing off, so the queue holds at most ``limit`` plus one batch per recording.

A disk that takes nothing for ``stall_timeout`` seconds fails the recording (fail closed, issue 5): a paused
recorder asks ``stalled_for``; the blocking calls (``write``, ``flush``, ``close``: for callers off the event
loop) raise. A write error fails only that recording: its further batches are dropped, ``on_failure`` is called
(in the writer thread) and ``flush``/``close`` raise the ``OSError``; ``flush_soon``/``close_soon`` hand it to
their callback.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

# Bytes handed over and not yet written, across every recording of the gateway, before recorders are paused.
QUEUE_LIMIT = 32 * 1024 * 1024
# Bytes one recording may have handed over and not yet written before its session is paused: a few batches, so
# a busy session keeps the writer fed while it waits for nothing, and one fast session cannot take the whole queue.
WRITER_LIMIT = 4 * 1024 * 1024
# Seconds the writer may take nothing from the queue, while the relay waits on it, before the recording fails.
STALL_TIMEOUT = 10.0


class SyncWriter(Protocol):
    """What the thread writes to (gateway.recording_process.WorkerFile; gateway.recording_store.FileWriter)."""

    def write(self, data: bytes) -> None: ...

    def write_events(self, batch: bytes | bytearray | memoryview) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> tuple[str, int]: ...

    def abort(self) -> None: ...


class _Job:
    """One step of one recording, run by the thread: a write (``action`` on the file), flush, close or abort."""

    __slots__ = ("action", "done", "finished", "kind", "result", "size", "writer")

    def __init__(self, writer: QueuedWriter, kind: str, action: Callable[[SyncWriter], None] | None = None,
                 size: int = 0) -> None:
        self.writer = writer
        self.kind = kind  # "write" | "flush" | "close" | "abort"
        self.action = action
        self.size = size
        self.done = False
        self.result: tuple[str, int] | None = None
        # For a close that nobody waits for: called in the thread with (result, failure) once it is over.
        self.finished: Callable[[tuple[str, int] | None, OSError | None], None] | None = None


class RecordingQueue:
    """The gateway's writer thread and its bounded queue; the thread runs while a recording is open."""

    def __init__(self, *, limit: int = QUEUE_LIMIT, writer_limit: int = WRITER_LIMIT,
                 stall_timeout: float = STALL_TIMEOUT) -> None:
        self.limit = limit
        self.writer_limit = writer_limit
        self.stall_timeout = stall_timeout
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._queued = 0  # bytes of write jobs not yet written
        self._progress = 0  # jobs finished: a waiter that sees it move knows the store is not stuck
        self._open = 0  # writers neither closed nor aborted
        self._stalled_at: int | None = None  # the progress count at which a waiter gave up on the thread
        self._thread: threading.Thread | None = None
        self._running = False  # the thread is in a job now
        self._last_progress = time.monotonic()  # when the thread last finished a job (or had nothing to do)
        # Recordings paused for room, with what to call (in the thread) once they have it again.
        self._waiting: dict[QueuedWriter, Callable[[], None]] = {}

    def stalled_for(self) -> float:
        """Seconds the thread has had work and finished none of it (0 when it is idle or moving): what a caller
        that does not wait in ``put``/``wait_for`` (a close or start finishing in the background) checks."""
        with self._cond:
            if not self._jobs and not self._running:
                return 0.0
            return time.monotonic() - self._last_progress

    @property
    def queued_bytes(self) -> int:
        with self._cond:
            return self._queued

    def open(self, file: SyncWriter) -> QueuedWriter:
        """A writer for ``file``, whose writing this queue's thread does from now on."""
        with self._cond:
            self._open += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gatepass-recordings", daemon=True)
                self._thread.start()
        return QueuedWriter(self, file)

    # -- the caller's side (the event loop) --------------------------------------------------------------------

    def put(self, job: _Job) -> None:
        """Queue ``job``; waits while the queue is full (raises OSError if the writer is stuck). For callers off
        the event loop; the recorder uses ``put_now`` and flow control."""
        with self._cond:
            # One batch larger than the limit still goes through alone, so nothing is refused for its size.
            self._wait(lambda: self._queued == 0 or self._queued + job.size <= self.limit)
            self._append(job)

    def put_now(self, job: _Job) -> bool:
        """Queue ``job`` without waiting; whether its recording still has room (``_has_room``) afterwards."""
        with self._cond:
            self._append(job)
            return self._has_room(job.writer)

    def _append(self, job: _Job) -> None:
        self._note_work()
        self._jobs.append(job)
        self._queued += job.size
        job.writer.queued += job.size
        self._cond.notify_all()

    def _has_room(self, writer: QueuedWriter) -> bool:
        """With the lock held: whether ``writer`` may hand over more now."""
        return writer.queued < self.writer_limit and self._queued < self.limit

    def _drained(self, writer: QueuedWriter) -> bool:
        """With the lock held: whether a paused ``writer`` may go on: down to half its share and half the limit, so
        a session that outruns the disk is paused and let go a few times a second, not once per batch (each
        resume costs the relay a round trip to the target before data flows again)."""
        return writer.queued <= self.writer_limit // 2 and self._queued <= self.limit // 2

    def when_room(self, writer: QueuedWriter, callback: Callable[[], None]) -> None:
        """Call ``callback`` once ``writer`` has room again (at once, here, if it has now; else in the thread)."""
        with self._cond:
            if not self._drained(writer):
                self._waiting[writer] = callback
                return
        callback()

    def _note_work(self) -> None:
        """With the lock held, before a job is queued: an idle thread's wait for progress starts now."""
        if not self._jobs and not self._running:
            self._last_progress = time.monotonic()

    def wait_for(self, job: _Job) -> None:
        """Until the thread has run ``job`` (raises OSError if the writer is stuck)."""
        with self._cond:
            self._wait(lambda: job.done)

    def _wait(self, ready: Callable[[], bool]) -> None:
        """With the lock held: wait until ``ready()``, or raise once the thread made no progress for too long."""
        progress, since = self._progress, time.monotonic()
        while not ready():
            now = time.monotonic()
            if self._progress != progress:
                progress, since = self._progress, now
            elif now - since >= self.stall_timeout or self._stalled_at == progress:
                # Once stuck, every waiter fails at once until the thread moves again: the event loop (and the
                # gateway's other relays with it) waits out the timeout once, not once per session.
                self._stalled_at = progress
                raise OSError(errno.ETIMEDOUT, f"the recording store took nothing for {self.stall_timeout:g} s")
            self._cond.wait(timeout=max(0.01, since + self.stall_timeout - now))

    # -- the thread ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    if self._open == 0:
                        self._thread = None  # the next open() starts a new one
                        return
                    self._cond.wait()
                job = self._jobs.popleft()
                self._running = True
            job.writer.run(job)
            if job.finished is not None:
                with contextlib.suppress(Exception):  # the recorder's loop may be gone
                    job.finished(job.result, job.writer.failure)
            with self._cond:
                if job.kind == "write":
                    self._queued -= job.size
                    job.writer.queued -= job.size
                if job.kind in ("close", "abort") and not job.writer.finished:
                    job.writer.finished = True
                    self._open -= 1
                    self._waiting.pop(job.writer, None)
                job.done = True
                self._running = False
                self._progress += 1
                self._last_progress = time.monotonic()
                ready = [self._waiting.pop(w) for w in list(self._waiting) if self._drained(w)]
                self._cond.notify_all()
            for callback in ready:
                with contextlib.suppress(Exception):  # the recorder's loop may be gone
                    callback()


class QueuedWriter:
    """One recording's writer (gateway.recording_store.RecordingWriter): calls queue, the queue's thread writes.

    ``write``/``submit_events`` return at once (unless the queue is full); ``flush`` and ``close`` wait for the thread.
    A failure is kept in ``failure`` and raised by every later call.
    """

    def __init__(self, queue: RecordingQueue, file: SyncWriter) -> None:
        self._queue = queue
        self._file = file
        self.queued = 0  # bytes handed over and not yet written (changed under the queue's lock)
        self.failure: OSError | None = None
        self.finished = False  # set by the thread once the file is closed or aborted
        self._closing = False  # close() or abort() was called: nothing more may be queued
        self._closed = False  # close() succeeded
        self._aborted = False
        # Called once, in the writer thread, when a write fails (the recorder passes it to its event loop).
        self.on_failure: Callable[[OSError], None] | None = None

    @property
    def stall_timeout(self) -> float:
        return self._queue.stall_timeout

    def stalled_for(self) -> float:
        """Seconds the writer thread has had work and done none (RecordingQueue.stalled_for)."""
        return self._queue.stalled_for()

    def write(self, data: bytes) -> None:
        """Queue ``data``, waiting while the queue is full (for callers off the event loop)."""
        self._usable()
        self._queue.put(_Job(self, "write", lambda file: file.write(data), len(data)))

    def submit(self, data: bytes) -> bool:
        """Queue ``data`` without waiting; whether there is room for more (else pause, see ``when_room``)."""
        self._usable()
        return self._queue.put_now(_Job(self, "write", lambda file: file.write(data), len(data)))

    def submit_events(self, batch: bytes | bytearray | memoryview) -> bool:
        """Queue a batch of the session's chunks (an EVENTS payload of gateway.recording_wire), written after
        everything queued before, without waiting; whether there is room for more (else pause, see ``when_room``)."""
        self._usable()
        return self._queue.put_now(_Job(self, "write", lambda file: file.write_events(batch), len(batch)))

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this recording may hand over more: at once if it may now, else in the thread."""
        self._queue.when_room(self, callback)

    def flush(self) -> None:
        """Wait until everything queued so far is in the file; raises OSError if it is not."""
        self._usable()
        job = _Job(self, "flush")
        self._queue.put(job)
        self._queue.wait_for(job)
        self._usable()

    def close(self) -> tuple[str, int]:
        """Write what is queued, fsync and close: (hex SHA-256, size) of exactly what is in the file."""
        self._usable()
        self._closing = True
        job = _Job(self, "close")
        self._queue.put(job)
        self._queue.wait_for(job)
        self._usable_after_close()
        assert job.result is not None  # noqa: S101 - the thread sets it whenever it sets no failure
        self._closed = True
        return job.result

    def flush_soon(self, finished: Callable[[tuple[str, int] | None, OSError | None], None]) -> None:
        """``flush`` without waiting: ``finished(None, failure)`` is called in the thread once everything queued
        so far is in the file (or is not)."""
        self._usable()
        job = _Job(self, "flush")
        job.finished = finished
        self._queue.put_now(job)  # never waits: it is called on the event loop

    def close_soon(self, finished: Callable[[tuple[str, int] | None, OSError | None], None]) -> None:
        """``close`` without waiting: ``finished(result, failure)`` is called in the thread once it is over.
        Raises OSError at once if the recording has already failed."""
        self._usable()
        self._closing = True
        job = _Job(self, "close")
        job.finished = finished
        self._queue.put_now(job)  # never waits: it is called on the event loop

    def abort(self) -> None:
        """Drop what is queued and close the file; never raises, never waits."""
        if self._aborted or self._closed:
            return
        self._aborted = self._closing = True
        self._queue.put_now(_Job(self, "abort"))

    def _usable_after_close(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _usable(self) -> None:
        if self.failure is not None:
            raise self.failure
        if self._closing:
            raise OSError(errno.EBADF, "the recording is already closed")

    # -- in the thread -------------------------------------------------------------------------------------------

    def run(self, job: _Job) -> None:
        if job.kind == "abort" or (self.failure is not None and job.kind != "flush"):
            self._file.abort()
            return
        if job.kind == "flush":
            return
        try:
            if job.kind == "write":
                assert job.action is not None  # noqa: S101 - every write job has one
                job.action(self._file)
                self._file.flush()  # each batch reaches the file when the thread gets to it
            else:
                job.result = self._file.close()
        except Exception as exc:  # whatever stops the recording fails it (fail closed)
            self.failure = exc if isinstance(exc, OSError) else OSError(errno.EIO, f"the recording failed: {exc}")
            self._file.abort()
            if self.on_failure is not None:
                with contextlib.suppress(Exception):  # the recorder's loop may be gone; the failure stays here
                    self.on_failure(self.failure)
