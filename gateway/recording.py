"""Session recordings: every shell and exec session written as an asciicast v2 file, or not run at all.

The format is a contract (docs/API.md, "Recordings"): a header line, then one JSON array per event,
``[seconds since start, code, text]`` with codes ``o`` (output, stdout and stderr as the client saw them),
``i`` (input, only if the site records input), ``ob``/``ib`` (output/input bytes that are not UTF-8, base64),
``r`` (resize, ``"WxH"``) and ``m`` (gateway notices and the final ``"exit N"``). A storage error ends the
session and blocks recorded sessions at the site (fail closed, issue 5); that part lives in
``GatewayContext``, this module only raises and reports.

Errors: ``TapFailure`` (gateway.taps) ← ``RecordingFailure`` (the store failed: cut, block the site)
                                      ← ``RecordingsRefused`` (the site is blocked: refuse a new session).
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from gateway import recording_wire as wire
from gateway.cast_events import INPUT, STDERR, STDOUT
from gateway.models import PendingRecording, RecordingInfo, StoredRecording
from gateway.recording_store import RecordingWriter
from gateway.taps import ChannelTap, SessionInfo, TapFailure

if TYPE_CHECKING:
    from gateway.context import GatewayContext

# Batched events reach the writer at least this often (seconds), so a crash loses at most about a second.
FLUSH_INTERVAL = 1.0
# A batch this large goes to the writer at once: one hand-off (and one write) per ~half a megabyte.
BATCH_BYTES = 512 * 1024
# A busy session's next batch is allocated at this size up front (room for one more chunk past BATCH_BYTES), so
# it never grows; a quiet session's starts at FIRST_BATCH_BYTES and doubles when it needs room. Grown by
# ``bytearray +=`` (an eighth at a time), a half-megabyte batch was copied about nine times over as it grew: about
# a third of what recording cost the relay's thread in bench/bench_recording.py.
FULL_BATCH_BYTES = BATCH_BYTES + 64 * 1024
FIRST_BATCH_BYTES = 4 * 1024
_CHUNK = wire.CHUNK
_CHUNK_HEADER = wire.CHUNK.size
# Seconds between checks of a stalled store while a start or a close finishes in the background.
STALL_CHECK = 1.0
_T = TypeVar("_T")
# Terminal size written in the header when the client asked for no PTY (asciinema's own default).
DEFAULT_SIZE = (80, 24)


class RecordingFailure(TapFailure):
    """The recording could not be written; ``error`` is the storage's reason (e.g. No space left on device)."""

    def __init__(self, error: str) -> None:
        super().__init__(f"the session recording cannot be written ({error})")
        self.error = error


class RecordingsRefused(TapFailure):
    """Recordings at this site failed and the store has not recovered: new recorded sessions are refused."""

    def __init__(self, site: str, error: str) -> None:
        super().__init__(f"sessions at site {site} are refused: recordings cannot be written ({error}); "
                         "ask the plant to fix the gateway's storage")


def describe(exc: OSError) -> str:
    """An OSError in words: ``No space left on device`` rather than ``[Errno 28] …: '/path'``."""
    return exc.strerror or str(exc) or type(exc).__name__


def open_recorder(ctx: GatewayContext, info: SessionInfo) -> ChannelTap:
    """The asciicast recorder for a shell or exec session; raises TapFailure if it cannot record."""
    site = info.auth.site
    refusal = ctx.recordings_refusal(site)
    if refusal is not None:
        raise RecordingsRefused(site, refusal)
    try:
        name, writer = ctx.recordings.create(f"{info.session_id}.cast")
    except OSError as exc:
        raise RecordingFailure(describe(exc)) from exc
    except ValueError as exc:  # a session id the store cannot use as a file name: not a storage failure
        raise TapFailure(f"the session cannot be recorded: {exc}") from exc
    return AsciicastRecorder(ctx, info, name, writer)


def header(info: SessionInfo, timestamp: int) -> dict[str, Any]:
    auth = info.auth
    width, height = info.term_size[:2]
    if info.term_type is None or not width or not height:
        width, height = DEFAULT_SIZE
    return {
        "version": 2, "width": width, "height": height, "timestamp": timestamp,
        "env": {"TERM": info.term_type},
        "title": f"{auth.identity}@{auth.asset}: {info.command if info.kind == 'exec' else 'shell'}",
        "gatepass": {
            "session": info.session_id, "grant": auth.grant_id, "identity": auth.identity, "asset": auth.asset,
            "site": auth.site, "kind": info.kind, "command": info.command, "input_recorded": auth.record_input,
        },
    }  # fmt: skip


class StreamText:
    """Bytes of one stream as asciicast events: text (``o``/``i``) while they are UTF-8, else base64 (``ob``/``ib``).

    Terminal output is text; what a command pipes out (``cat firmware.bin``, ``tar c``) often is not. Decoding
    that with U+FFFD replacements would lose the bytes, inflate the file 2-3x and run at ~40 MB/s; a chunk that
    is not UTF-8 is kept whole as base64 instead (lossless, 1.33x, C speed), and text stays searchable.
    """

    def __init__(self, code: str) -> None:
        self._code = code
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")

    def decode(self, data: bytes, final: bool = False) -> tuple[str, str | bytes]:
        """``(code, text)``; for bytes that are not UTF-8 the text is base64, as ASCII bytes ready to write."""
        held = self._decoder.getstate()[0]  # the start of a character split across chunks
        try:
            return self._code, self._decoder.decode(data, final)
        except UnicodeDecodeError:
            self._decoder.reset()
            return self._code + "b", base64.b64encode(held + data)


class AsciicastRecorder:
    """The tap on a shell or exec channel: passes every byte unchanged and records it.

    On the event loop a chunk costs a time stamp and an append to the session's batch (gateway.recording_wire);
    the batch goes to the gateway's writer thread (gateway.recording_queue) once it holds ``BATCH_BYTES`` or a
    second has passed, and on to the gateway's writer process, which turns it into event lines
    (gateway.cast_events), hashes and writes them. A write error comes back through ``_store_failed``: the next
    chunk is refused and the site is blocked (fail closed). The session's start (``until_started``: the header
    is in the file) and its close (a ``PendingRecording``) finish in the background, for that session alone.

    Nothing here waits for the store. When the recording has as much queued as it may, the session is paused
    (``SessionInfo.hold_streams``: no more is read from the target or the client) until the writer catches up;
    a store that takes nothing for its stall timeout meanwhile fails the recording and blocks the site.
    """

    def __init__(self, ctx: GatewayContext, info: SessionInfo, name: str, writer: RecordingWriter) -> None:
        self._ctx = ctx
        self._site = info.auth.site
        self._name = name
        self._writer = writer
        self._record_input = info.auth.record_input
        self._hold_streams = info.hold_streams
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._behind = False  # the store has no room for more: the session is paused until it has
        self._stall_timer: asyncio.TimerHandle | None = None
        self._failure: RecordingFailure | None = None
        self._closed = False
        self._started = time.monotonic()
        # The chunks since the last hand-off, already in the form the writer process reads
        # (gateway.recording_wire): a chunk costs its header and one copy here, and no per-chunk work later.
        # ``_batch`` is allocated ahead (see FULL_BATCH_BYTES) when the first chunk after a hand-off comes, at
        # ``_next_size``; its first ``_used`` bytes are the batch. Empty: nothing since the last hand-off (an idle
        # session holds no batch).
        self._batch, self._used, self._next_size = bytearray(), wire.STARTED.size, FIRST_BATCH_BYTES
        timestamp = int(ctx.settings.clock().timestamp())
        writer.on_failure = self._failed_in_writer
        # The header reaches the store before anything runs: a full disk refuses the session up front. The session
        # waits for ``started`` (gateway.taps.until_recording) while the event loop goes on: a slow or stuck store
        # holds up that session, not every relay of the gateway.
        self._started_writing: asyncio.Future[None] = self._loop.create_future()
        self._started_writing.add_done_callback(_retrieved)
        try:
            room = writer.submit(json.dumps(header(info, timestamp), ensure_ascii=False).encode() + b"\n")
            writer.flush_soon(lambda _, error: self._from_writer(self._header_written, error))
            if not room:
                self._fall_behind()
        except OSError as exc:
            self._failure = RecordingFailure(describe(exc))
            writer.abort()
            raise self._failure from exc

    @property
    def name(self) -> str:
        """The recording's file name in the store (the recordings disk's guard measures the file by it)."""
        return self._name

    # -- the tap ---------------------------------------------------------------------------------

    def from_client(self, data: bytes) -> tuple[bytes, bytes]:
        self._check()
        if self._record_input:
            self._add(INPUT, data)
        return data, b""

    def from_target(self, data: bytes, stderr: bool) -> bytes:
        # The hot path of a recorded session: _check and _add inlined, one append per chunk.
        if self._failure is not None or self._writer.failure is not None:
            self._check()
        size = _CHUNK_HEADER + len(data)
        if self._used + size > len(self._batch):
            self._make_room(size)
        batch, start = self._batch, self._used
        end = start + size
        _CHUNK.pack_into(batch, start, time.monotonic(), STDERR if stderr else STDOUT, len(data))
        batch[start + _CHUNK_HEADER:end] = data  # same length: a copy, never a resize
        self._used = end
        if end >= BATCH_BYTES:
            self._hand_off(busy=True)
        elif self._timer is None:
            self._timer = self._loop.call_later(FLUSH_INTERVAL, self._timed_hand_off)
        return data

    def resized(self, width: int, height: int) -> None:
        self._quietly(lambda: self._add("r", f"{width}x{height}"))

    def note(self, text: str) -> None:
        self._quietly(lambda: self._add("m", text))

    def close(self, exit_status: int | None) -> StoredRecording | None:
        if self._closed:
            return None
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stall_timer is not None:  # a close waiting on a stuck store fails in _until instead
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._failure is None:
            try:
                self._check()
                for stream in (INPUT, STDOUT, STDERR):  # what a decoder still holds: an incomplete character
                    if stream != INPUT or self._record_input:
                        self._add(stream, None)
                if exit_status is not None:
                    self._add("m", f"exit {exit_status}")
                self._hand_off()
                # The writer writes the rest, fsyncs and hashes while the loop goes on (a slow disk's fsync, or
                # other sessions' batches queued before this one, must not hold up every relay and every cut);
                # the session's end is reported once it is done.
                finished: asyncio.Future[RecordingInfo] = self._loop.create_future()
                finished.add_done_callback(_retrieved)
                self._writer.close_soon(
                    lambda result, error: self._from_writer(self._finished, finished, result, error))
            except RecordingFailure:
                self._report()
            except OSError as exc:
                self._failure = RecordingFailure(describe(exc))
                self._report()
            else:
                return PendingRecording(self._name, lambda: self._until(finished))
        self._writer.abort()
        assert self._failure is not None  # noqa: S101 - set on every path that gets here
        raise self._failure

    # -- on the event loop -------------------------------------------------------------------------

    def _add(self, stream: int | str, data: bytes | str | None) -> None:
        """One chunk (or event) into the batch; the batch goes to the writer thread when it is large."""
        event = wire.new_event(time.monotonic(), stream, data)
        if self._used + len(event) > len(self._batch):
            self._make_room(len(event))
        end = self._used + len(event)
        self._batch[self._used:end] = event
        self._used = end
        if end >= BATCH_BYTES:
            self._hand_off(busy=True)
            return
        if self._timer is None and not self._closed:
            self._timer = self._loop.call_later(FLUSH_INTERVAL, self._timed_hand_off)

    def _hand_off(self, *, busy: bool = False) -> None:
        """The batch to the writer thread, without waiting; if that leaves the recording no room, the session
        pauses until the writer catches up. ``busy``: the batch went because it was full, so the next one is
        allocated full size at once (else it starts small: a session that slowed down, or an idle one, holds little)."""
        used = self._used
        if used <= wire.STARTED.size:
            return
        batch = memoryview(self._batch)[:used]
        self._batch, self._used = bytearray(), wire.STARTED.size  # the next chunk allocates the next batch
        self._next_size = FULL_BATCH_BYTES if busy else FIRST_BATCH_BYTES
        try:
            room = self._writer.submit_events(batch)
        except OSError as exc:
            self._failure = RecordingFailure(describe(exc))
            raise self._failure from exc
        if not room and not self._behind:
            self._fall_behind()

    def _make_room(self, size: int) -> None:
        """Room in the batch for ``size`` more bytes. None allocated since the last hand-off: one of ``_next_size``
        (or larger, for a larger chunk), its header written. A batch at least half full goes to the writer first;
        else it moves to a buffer twice its size (at least what is needed; at most a full batch's unless one chunk is
        larger), so a quiet session's batch stays small and a busy one's is copied at most once as it grows."""
        if self._batch and self._used >= BATCH_BYTES // 2:
            self._hand_off(busy=True)
        if not self._batch:
            self._batch = bytearray(max(self._next_size, wire.STARTED.size + size))
            wire.STARTED.pack_into(self._batch, 0, self._started)
            return
        needed = self._used + size
        if needed <= len(self._batch):
            return
        current = len(self._batch)
        # Never less than half as large again: growing by one chunk at a time would copy the batch at every chunk.
        larger = bytearray(max(needed, min(2 * current, FULL_BATCH_BYTES), current + current // 2))
        larger[:self._used] = memoryview(self._batch)[:self._used]
        self._batch = larger

    def _fall_behind(self) -> None:
        """The store has all this recording may queue: pause the session until it has room again, and check
        meanwhile that the store is moving at all."""
        self._behind = True
        if self._hold_streams is not None:
            self._hold_streams(True)
        self._stall_timer = self._loop.call_later(STALL_CHECK, self._check_stall)
        self._writer.when_room(lambda: self._from_writer(self._caught_up))

    def _caught_up(self) -> None:
        """On the loop: the writer has room again; the session reads on (unless it is over or failed)."""
        if not self._behind:
            return
        self._behind = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._hold_streams is not None and not self._closed and self._failure is None:
            self._hold_streams(False)

    def _check_stall(self) -> None:
        """While paused: a store that took nothing for its stall timeout fails the recording (fail closed)."""
        self._stall_timer = None
        if not self._behind or self._closed or self._failure is not None:
            return
        writer = self._writer
        if writer.stalled_for() < writer.stall_timeout:
            self._stall_timer = self._loop.call_later(STALL_CHECK, self._check_stall)
            return
        self._fail_stalled()

    def _fail_stalled(self) -> RecordingFailure:
        """The store took nothing for its stall timeout: the recording fails (unless it already had) and the site
        is blocked."""
        if self._failure is None:
            self._failure = RecordingFailure(
                f"the recording store took nothing for {self._writer.stall_timeout:g} s")
            self._report()
        return self._failure

    def _timed_hand_off(self) -> None:
        self._timer = None
        if self._failure is not None or self._closed:
            return
        try:
            self._hand_off()
        except RecordingFailure:
            self._report()

    def _check(self) -> None:
        """Nothing passes once the recording has failed: the session is being ended."""
        if self._failure is None and self._writer.failure is not None:
            # The writer thread met an error its callback has not brought to this loop yet.
            self._failure = RecordingFailure(describe(self._writer.failure))
        if self._failure is not None:
            raise self._failure

    def _quietly(self, write: Callable[[], None]) -> None:
        """For resizes and notices, which the session does not wait on: a failure ends it via the context."""
        if self._failure is not None or self._closed:
            return
        try:
            write()
        except RecordingFailure:
            self._report()

    def _report(self) -> None:
        """Tell the context (which ends every recorded session at the site and blocks new ones)."""
        if self._failure is not None:
            failure = self._failure
            self._loop.call_soon(self._ctx.recording_failed, self._site, failure.error)

    def _store_failed(self, exc: OSError) -> None:
        """A write in the writer thread failed: unless a chunk found out first, end the site's recorded sessions."""
        if self._failure is not None:
            return  # whoever set it first reports it
        self._failure = RecordingFailure(describe(exc))
        if not self._closed:
            self._ctx.recording_failed(self._site, self._failure.error)

    # -- in the writer thread ---------------------------------------------------------------------

    def _from_writer(self, call: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the gateway is gone
            self._loop.call_soon_threadsafe(call, *args)

    async def until_started(self) -> None:
        """Until the header is in the file (the session may run); RecordingFailure if the store refused it or
        took nothing for its stall timeout."""
        await self._until(self._started_writing)

    def _header_written(self, error: OSError | None) -> None:
        """On the loop: the header is in the file (the session may start), or the store refused it."""
        if self._started_writing.done():
            return
        if error is None and self._failure is None:
            self._started_writing.set_result(None)
            return
        self._started_writing.set_exception(self._failed_with(error, "the recording was not started"))

    async def _until(self, done: asyncio.Future[_T]) -> _T:
        """``done``'s result, waited for while the loop goes on; a store that takes nothing for its stall timeout
        meanwhile fails the recording (as a write waiting on it would) and blocks the site."""
        writer = self._writer
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(done), STALL_CHECK)
            except TimeoutError:
                if writer.stalled_for() < writer.stall_timeout:
                    continue
            failure = self._fail_stalled()
            writer.abort()
            raise failure

    def _finished(self, finished: asyncio.Future[RecordingInfo], result: tuple[str, int] | None,
                  error: OSError | None) -> None:
        """On the loop: the writer closed the file (the hash of exactly what it holds), or failed to."""
        if finished.done():
            return
        if result is not None and error is None:
            finished.set_result(RecordingInfo(name=self._name, sha256=result[0], bytes=result[1]))
            return
        failure = self._failed_with(error, "the recording was not closed")
        self._report()  # no hash is claimed for a recording that is not whole; the site is blocked
        finished.set_exception(failure)

    def _failed_with(self, error: OSError | None, otherwise: str) -> RecordingFailure:
        """The recording's failure: the first one met, else ``error`` (or ``otherwise`` in words)."""
        if self._failure is None:
            self._failure = RecordingFailure(describe(error or OSError(otherwise)))
        return self._failure

    def _failed_in_writer(self, exc: OSError) -> None:
        self._from_writer(self._store_failed, exc)


def _retrieved(done: asyncio.Future[Any]) -> None:
    """A failure nobody awaits (a session that ended before it started, or one the broker never recorded) is not an
    unhandled one: it was reported."""
    if not done.cancelled():
        done.exception()
