"""The recorder's writer thread and its event encoding: same bytes as json.dumps, in order, bounded, fail closed."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import os
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway import recording, recording_wire
from gateway.cast_events import CastRenderer, CastStream, json_string
from gateway.models import PendingRecording
from gateway.recording import AsciicastRecorder, RecordingFailure, StreamText
from gateway.recording_queue import RecordingQueue
from gateway.recording_store import DirectoryStore, FileWriter
from gateway.taps import SessionInfo
from tests.gateway.waiting import eventually

# -- encoding ---------------------------------------------------------------------------------------------------


def test_json_string_writes_what_json_dumps_writes() -> None:
    rng = random.Random(14)  # noqa: S311 - reproducible test data
    alphabet = [chr(c) for c in range(0x20)] + ['"', "\\", "a", " ", "~", "\x7f", "é", "€", "😀", "\u2028"]
    samples = ["", "plain", "a\r\nb", '"quoted" \\ back', "\x1b[31mred\x1b[0m\t\b\f", "bell\x07", "nul\x00"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60))) for _ in range(2000)]
    for text in samples:
        assert json_string(text.encode()) == json.dumps(text, ensure_ascii=False).encode(), repr(text)


def test_cast_stream_decides_as_stream_text_and_keeps_every_byte() -> None:
    """Text stays text (a character split across chunks kept whole), a chunk that is not UTF-8 becomes base64:
    the same events the live watch's StreamText gives, and decoding them gives back the bytes."""
    chunks = [b"plain\r\n", "caf\u00e9 \u20ac".encode()[:7], "caf\u00e9 \u20ac".encode()[7:], b"\xff\xfe binary",
              b"\xe2", b"\x82\xac back to text", b"tail \xe2\x82"]
    cast, text = CastStream("o"), StreamText("o")
    restored = b""
    for index, chunk in enumerate(chunks):
        final = index == len(chunks) - 1
        code, payload = cast.encode(chunk, final=final)
        expected_code, expected = text.decode(chunk, final=final)
        assert code.decode() == expected_code
        if isinstance(expected, bytes):
            assert payload == expected
            restored += base64.b64decode(payload)
        else:
            assert payload == (json.dumps(expected, ensure_ascii=False).encode()[1:-1] if expected else b"")
            restored += json.loads(b'"' + payload + b'"').encode()
    # The incomplete "€" at the very end cannot be text: with final=True it went out as base64, whole.
    assert restored == b"".join(chunks)


def test_chunks_merge_only_when_together_they_are_text() -> None:
    euro = "\u20ac".encode()
    stream = CastStream("o")
    # Text, a character split across the two chunks: one event.
    assert stream.encode_group([b"price: " + euro[:1], euro[1:] + b" 5\r\n"]) == [
        (b"o", "price: \u20ac 5\\r\\n".encode())]
    # A line of text, then binary: the text stays text, the binary chunk is base64 on its own.
    assert stream.encode_group([b"start\n", b"\xff\x00 data", b"ok"]) == [
        (b"o", b"start\\n"), (b"ob", base64.b64encode(b"\xff\x00 data")), (b"o", b"ok")]
    # An incomplete character held from before the group travels with the group's first chunk.
    assert stream.encode_group([euro[:2]]) == [(b"o", b"")]
    assert stream.encode_group([euro[2:] + b"x", b"\xff"]) == [(b"o", "\u20acx".encode()),
                                                                 (b"ob", base64.b64encode(b"\xff"))]


# -- the writer thread --------------------------------------------------------------------------------------------


class GatedFile:
    """A SyncWriter whose writes wait for ``gate`` (a disk that has stopped) and may fail with ``error``."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.error: OSError | None = None
        self.data = bytearray()
        self.aborted = False
        self.renderer: CastRenderer | None = None

    def write(self, data: bytes) -> None:
        self.gate.wait(30)
        if self.error is not None:
            raise self.error
        self.data += data

    def write_events(self, batch: bytes | bytearray | memoryview) -> None:
        started, entries = recording_wire.decode_batch(batch)
        if self.renderer is None:
            self.renderer = CastRenderer(started)
        self.write(self.renderer.render(entries))

    def flush(self) -> None:
        pass

    def close(self) -> tuple[str, int]:
        return hashlib.sha256(self.data).hexdigest(), len(self.data)

    def abort(self) -> None:
        self.aborted = True


def test_writes_of_several_recordings_stay_in_order_and_hashes_match_the_files(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "recordings")
    writers = [store.create(f"ses-{n}.cast") for n in range(3)]
    expected: dict[str, bytes] = {name: b"" for name, _ in writers}
    for step in range(200):
        for name, writer in writers:
            line = f"{name} line {step}\n".encode() * (step % 7 + 1)
            writer.write(line)
            expected[name] += line
    for name, writer in writers:
        sha256, size = writer.close()
        data = (tmp_path / "recordings" / name).read_bytes()
        assert data == expected[name]
        assert (sha256, size) == (hashlib.sha256(data).hexdigest(), len(data))
    # The thread runs only while a recording is open.
    eventually_sync(lambda: store.queue._thread is None, "the writer thread to stop")
    store.close()


def test_a_stuck_store_bounds_the_queue_and_fails_instead_of_growing() -> None:
    queue = RecordingQueue(limit=64 * 1024, stall_timeout=0.5)
    file = GatedFile()
    writer = queue.open(file)
    chunk = b"x" * 16 * 1024
    held: list[int] = []

    def write_on() -> None:
        for _ in range(100):
            writer.write(chunk)
            held.append(queue.queued_bytes)

    started = time.monotonic()
    with pytest.raises(OSError, match=r"the recording store took nothing for 0.5 s") as raised:
        write_on()
    assert held
    assert max(held) <= 64 * 1024
    assert raised.value.errno == errno.ETIMEDOUT
    assert time.monotonic() - started >= 0.5
    assert queue.queued_bytes <= 64 * 1024
    # Another recording waiting on the same stuck thread fails at once: the timeout is waited out once.
    other = queue.open(GatedFile())
    started = time.monotonic()
    with pytest.raises(OSError, match="took nothing"):
        other.write(chunk * 4)
    assert time.monotonic() - started < 0.5
    other.abort()
    # The disk comes back: what was queued is written, in order, and the writer can still be closed.
    file.gate.set()
    eventually_sync(lambda: queue.queued_bytes == 0, "the thread to write what was queued")
    assert writer.close() == (hashlib.sha256(bytes(file.data)).hexdigest(), len(file.data))
    assert bytes(file.data) == chunk * (len(file.data) // len(chunk))


def test_a_slow_store_makes_the_caller_wait_for_room_without_failing() -> None:
    queue = RecordingQueue(limit=32 * 1024, stall_timeout=5)
    file = GatedFile()
    writer = queue.open(file)
    opener = threading.Timer(0.3, file.gate.set)
    opener.start()
    try:
        for n in range(8):
            writer.write(bytes([65 + n]) * 16 * 1024)
        assert writer.close()[1] == 8 * 16 * 1024
    finally:
        opener.cancel()
    assert bytes(file.data) == b"".join(bytes([65 + n]) * 16 * 1024 for n in range(8))


def test_submitting_never_waits_and_says_when_a_recording_must_pause_until_the_writer_has_room() -> None:
    """Flow control instead of waiting: past its own share (or the gateway's limit) a recording is told to pause,
    and called back once the thread has written enough (down to half of both: a paused session is let go a few
    times a second, not once per batch); nothing is dropped or reordered meanwhile."""
    queue = RecordingQueue(limit=256 * 1024, writer_limit=64 * 1024, stall_timeout=5)
    first_file, second_file = GatedFile(), GatedFile()
    first, second = queue.open(first_file), queue.open(second_file)
    chunk = b"a" * 16 * 1024
    started = time.monotonic()
    rooms = [first.submit(chunk) for _ in range(4)]
    assert rooms == [True, True, True, False]  # 64 KiB queued: its share is full
    assert time.monotonic() - started < 0.5  # the store takes nothing, and nothing waited for it
    called: list[str] = []
    first.when_room(lambda: called.append("first"))
    assert second.submit(chunk)  # the other recording's share is its own
    time.sleep(0.1)
    assert called == []
    # The gateway's limit pauses every recording that hands over past it, whatever its own share.
    assert not second.submit_events(recording_wire.encode_batch(0.0, [(0.0, 1, b"b" * 200 * 1024)]))
    second.when_room(lambda: called.append("second"))
    first_file.gate.set()
    eventually_sync(lambda: first.queued == 0, "the first recording's queue to be written")
    time.sleep(0.1)
    assert called == []  # its own share is free, but the gateway still holds more than half its limit
    second_file.gate.set()
    eventually_sync(lambda: sorted(called) == ["first", "second"], "both recordings' call backs")
    first.when_room(lambda: called.append("at once"))  # room now: called here, not later
    assert called[-1] == "at once"
    assert first.close()[1] == 4 * len(chunk)
    assert bytes(first_file.data) == chunk * 4


def test_a_write_error_fails_the_recording_once_and_close_after_it_raises() -> None:
    queue = RecordingQueue()
    file = GatedFile()
    file.gate.set()
    file.error = OSError(errno.ENOSPC, "No space left on device")
    writer = queue.open(file)
    failures: list[OSError] = []
    writer.on_failure = failures.append
    writer.write(b"first")
    writer.write(b"second")
    with pytest.raises(OSError, match="No space left on device"):
        writer.flush()
    assert failures == [file.error]  # once, for the first failed write; the second was dropped
    assert file.aborted
    with pytest.raises(OSError, match="No space left on device"):
        writer.write(b"more")
    with pytest.raises(OSError, match="No space left on device"):
        writer.close()
    writer.abort()  # after a failure: never raises
    writer.abort()


def test_file_writer_hashes_large_and_small_writes_alike(tmp_path: Path) -> None:
    path = tmp_path / "f.cast"
    file = FileWriter(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), tmp_path)
    parts = [b"small\n", b"L" * 200_000, b"s" * 10, b"M" * 70_000, b"end\n"]
    for part in parts:
        file.write(part)
    assert file.close() == (hashlib.sha256(b"".join(parts)).hexdigest(), sum(map(len, parts)))
    assert path.read_bytes() == b"".join(parts)


# -- the recorder on the writer thread ----------------------------------------------------------------------------


def eventually_sync(condition: Any, what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def session_info(record_input: bool = True, hold_streams: Any = None) -> SessionInfo:
    auth = SimpleNamespace(site="plant-a", record_input=record_input, identity="vendor1", asset="hmi-01",
                           grant_id="grt-1")
    return SessionInfo(session_id="ses-w", auth=auth, kind="exec", command="cat x",  # type: ignore[arg-type]
                       term_type="xterm", term_size=(80, 24, 0, 0), hold_streams=hold_streams)


class Context:
    def __init__(self, store: Any) -> None:
        self.recordings = store
        self.settings = SimpleNamespace(clock=lambda: datetime(2026, 12, 4, tzinfo=UTC))
        self.failed: list[tuple[str, str]] = []

    def recording_failed(self, site: str, error: str) -> None:
        self.failed.append((site, error))


def gated_recorder(*, disk_open: bool = True, stall_timeout: float = 10.0, writer_limit: int = 4 * 1024 * 1024,
                   hold_streams: Any = None) -> tuple[AsciicastRecorder, GatedFile, Context]:
    """A recorder on a GatedFile through a queue of its own; ``disk_open=False``: the store takes nothing yet."""
    file = GatedFile()
    if disk_open:
        file.gate.set()
    ctx = Context(None)
    queue = RecordingQueue(stall_timeout=stall_timeout, writer_limit=writer_limit)
    recorder = AsciicastRecorder(ctx, session_info(hold_streams=hold_streams), "ses-w.cast",  # type: ignore[arg-type]
                                 queue.open(file))
    return recorder, file, ctx


@pytest.mark.anyio
async def test_recorder_writes_every_byte_in_order_and_reports_the_files_hash(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "recordings")
    ctx = Context(store)
    name, writer = store.create("ses-w.cast")
    recorder = AsciicastRecorder(ctx, session_info(), name, writer)  # type: ignore[arg-type]
    rng = random.Random(5)  # noqa: S311 - reproducible test data
    sent = {"o": b"", "i": b""}
    for step in range(3000):
        if step % 50 == 0:
            data = "typed é\r".encode()
            recorder.from_client(data)
            sent["i"] += data
        data = bytes(rng.choice(b"abc \r\n\t\x1b\"\\") for _ in range(rng.randrange(1, 4000)))
        if step % 700 == 0:
            data += b"\xff\xfe not text"
        recorder.from_target(data, stderr=False)
        sent["o"] += data
        if step % 500 == 0:
            recorder.resized(100 + step % 7, 40)
            await asyncio.sleep(0)
    pending = recorder.close(0)
    assert isinstance(pending, PendingRecording)  # finished by the writer while the loop goes on
    info = await pending.result()
    data = (tmp_path / "recordings" / name).read_bytes()
    assert (info.sha256, info.bytes) == (hashlib.sha256(data).hexdigest(), len(data))
    lines = data.decode().splitlines()
    events = [json.loads(line) for line in lines[1:]]
    for line, event in zip(lines[1:], events, strict=True):
        assert line == json.dumps(event, ensure_ascii=False)  # the bytes json.dumps writes
    assert [event[0] for event in events] == sorted(event[0] for event in events)
    for code in ("o", "i"):
        restored = b"".join(base64.b64decode(e[2]) if e[1] == code + "b" else e[2].encode()
                            for e in events if e[1] in (code, code + "b"))
        assert restored == sent[code]
    assert [event[2] for event in events if event[1] == "r"] == [f"{100 + step % 7}x40" for step in range(0, 3000, 500)]
    assert events[-1][1:] == ["m", "exit 0"]
    assert ctx.failed == []
    store.close()


@pytest.mark.anyio
async def test_batches_are_allocated_ahead_small_for_a_quiet_session_and_any_chunk_size_is_recorded_whole(
        tmp_path: Path) -> None:
    """The recorder writes chunks into a batch allocated ahead (no ``bytearray +=`` growth on the relay's hot path):
    a quiet session's batch stays a few KiB, a busy one's next batch is allocated full size at once, and a chunk
    larger than a whole batch, or one that does not fit what is left, is still recorded whole and in order."""
    store = DirectoryStore(tmp_path / "recordings")
    ctx = Context(store)
    name, writer = store.create("ses-w.cast")
    recorder = AsciicastRecorder(ctx, session_info(record_input=False), name, writer)  # type: ignore[arg-type]
    sent = b""
    for _ in range(20):  # a prompt now and then: the batch stays at its first size
        recorder.from_target(b"$ ", stderr=False)
        sent += b"$ "
    assert len(recorder._batch) == recording.FIRST_BATCH_BYTES
    rng = random.Random(7)  # noqa: S311 - reproducible test data
    for size in (3000, recording.FULL_BATCH_BYTES * 3 + 5, 7, *(rng.randrange(1, 40000) for _ in range(200)),
                 recording.BATCH_BYTES - 1, 33000):
        data = bytes(rng.choice(b"xyz\r\n") for _ in range(size))
        recorder.from_target(data, stderr=False)
        sent += data
        assert recorder._used <= max(len(recorder._batch), recording.FULL_BATCH_BYTES)
    # Busy now: the batch in use was allocated full size (or, for a larger chunk, exactly as large as it).
    assert len(recorder._batch) >= recording.FULL_BATCH_BYTES
    pending = recorder.close(0)
    assert isinstance(pending, PendingRecording)
    info = await pending.result()
    data = (tmp_path / "recordings" / name).read_bytes()
    assert (info.sha256, info.bytes) == (hashlib.sha256(data).hexdigest(), len(data))
    events = [json.loads(line) for line in data.decode().splitlines()[1:]]
    assert "".join(event[2] for event in events if event[1] == "o").encode() == sent
    assert [event[0] for event in events] == sorted(event[0] for event in events)
    store.close()


@pytest.mark.anyio
async def test_a_session_that_goes_quiet_holds_no_batch(tmp_path: Path) -> None:
    """After a burst the session sits at its prompt for hours: whether its last batch went because it was full or
    on the second's timer, nothing stays allocated until the next chunk comes, and that one starts small again
    unless the last batch went full."""
    store = DirectoryStore(tmp_path / "recordings")
    name, writer = store.create("ses-w.cast")
    recorder = AsciicastRecorder(Context(store), session_info(), name, writer)  # type: ignore[arg-type]
    chunks = 0
    while chunks < 64 and (chunks == 0 or len(recorder._batch)):  # until a chunk fills a batch, which goes
        recorder.from_target(b"y" * 32768, stderr=False)
        chunks += 1
    assert len(recorder._batch) == 0
    recorder.from_target(b"$ ", stderr=False)  # busy a moment ago: the next batch is full size at once
    assert len(recorder._batch) == recording.FULL_BATCH_BYTES
    recorder.from_target(b"x" * 300_000, stderr=False)
    recorder._timed_hand_off()  # what FLUSH_INTERVAL's timer does a second later
    assert len(recorder._batch) == 0
    recorder.from_target(b"$ ", stderr=False)
    assert len(recorder._batch) == recording.FIRST_BATCH_BYTES
    pending = recorder.close(0)
    assert isinstance(pending, PendingRecording)
    info = await pending.result()
    data = (tmp_path / "recordings" / name).read_bytes()
    events = [json.loads(line) for line in data.decode().splitlines()[1:]]
    output = "".join(event[2] for event in events if event[1] == "o")
    assert output == "y" * chunks * 32768 + "$ " + "x" * 300_000 + "$ "
    assert info.bytes == len(data)
    store.close()


@pytest.mark.anyio
async def test_a_failed_write_in_the_thread_refuses_the_next_chunk_and_blocks_the_site() -> None:
    recorder, file, ctx = gated_recorder()
    file.error = OSError(errno.EIO, "Input/output error")
    recorder.from_target(b"x" * 600 * 1024, stderr=False)  # a full batch: handed to the thread at once
    # The thread's failure comes back to the loop: the site is blocked (which ends its recorded sessions).
    await eventually(lambda: ctx.failed == [("plant-a", "Input/output error")], what="the failure on the loop")
    with pytest.raises(RecordingFailure, match=r"the session recording cannot be written \(Input/output error\)"):
        recorder.from_target(b"next", stderr=False)
    with pytest.raises(RecordingFailure):
        recorder.close(0)  # no hash is claimed for a recording that is not whole
    assert file.aborted
    assert recorder.close(0) is None  # closed once


@pytest.mark.anyio
async def test_a_failure_found_at_close_raises_and_reports_it(tmp_path: Path) -> None:
    recorder, file, ctx = gated_recorder()
    recorder.from_target(b"small output\r\n", stderr=False)  # still in the session's batch
    file.error = OSError(errno.ENOSPC, "No space left on device")
    pending = recorder.close(3)
    assert isinstance(pending, PendingRecording)
    with pytest.raises(RecordingFailure, match="No space left on device"):
        await pending.result()  # no hash is claimed for a recording that is not whole
    await eventually(lambda: ctx.failed == [("plant-a", "No space left on device")], what="the report")
    assert file.aborted
    assert recorder.close(3) is None  # closed once


@pytest.mark.anyio
async def test_closing_does_not_wait_for_a_slow_disk(tmp_path: Path) -> None:
    """A close returns at once; the hash comes when the writer has written and closed the file."""
    recorder, file, ctx = gated_recorder()
    file.gate.clear()  # the disk stops taking anything
    recorder.from_target(b"output\r\n", stderr=False)
    started = time.monotonic()
    pending = recorder.close(0)
    assert time.monotonic() - started < 0.5
    assert isinstance(pending, PendingRecording)
    waiting = asyncio.ensure_future(pending.result())
    await asyncio.sleep(0.2)
    assert not waiting.done()  # the event loop ran on meanwhile
    file.gate.set()
    info = await waiting
    assert (info.sha256, info.bytes) == (hashlib.sha256(bytes(file.data)).hexdigest(), len(file.data))
    assert bytes(file.data).endswith(b'"m", "exit 0"]\n')
    assert ctx.failed == []


@pytest.mark.anyio
async def test_a_recording_starts_without_holding_the_loop_and_a_refused_header_refuses_the_session() -> None:
    started = time.monotonic()
    recorder, file, ctx = gated_recorder(disk_open=False)
    assert time.monotonic() - started < 0.5
    waiting = asyncio.ensure_future(recorder.until_started())
    await asyncio.sleep(0.1)
    assert not waiting.done()  # the session waits; the event loop does not
    file.gate.set()
    await asyncio.wait_for(waiting, 5)
    assert bytes(file.data).startswith(b'{"version": 2')
    # A store that refuses the header refuses the session (fail closed).
    refusing = GatedFile()
    refusing.gate.set()
    refusing.error = OSError(errno.ENOSPC, "No space left on device")
    other = AsciicastRecorder(ctx, session_info(), "ses-x.cast",  # type: ignore[arg-type]
                              RecordingQueue().open(refusing))
    with pytest.raises(RecordingFailure, match="No space left on device"):
        await asyncio.wait_for(other.until_started(), 5)


@pytest.mark.anyio
@pytest.mark.parametrize("step", ["start", "close"])
async def test_a_store_that_takes_nothing_fails_a_start_or_close_waiting_in_the_background(
        step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing waits on the loop for a start or a close; a store stuck past its stall timeout still fails them
    (fail closed: the site is blocked) instead of leaving the session waiting for ever."""
    monkeypatch.setattr(recording, "STALL_CHECK", 0.05)
    recorder, file, ctx = gated_recorder(disk_open=step == "close", stall_timeout=0.5)
    started = time.monotonic()
    if step == "close":
        await recorder.until_started()
        file.gate.clear()  # the disk stops now
        recorder.from_target(b"output\r\n", stderr=False)
        pending = recorder.close(0)
        assert isinstance(pending, PendingRecording)
        waiting = pending.result()
    else:
        waiting = recorder.until_started()
    with pytest.raises(RecordingFailure, match=r"the recording store took nothing for 0.5 s"):
        await asyncio.wait_for(waiting, 5)
    assert 0.5 <= time.monotonic() - started < 4
    await eventually(lambda: ctx.failed == [("plant-a", "the recording store took nothing for 0.5 s")],
                     what="the site blocked")
    file.gate.set()  # let the thread finish


@pytest.mark.anyio
async def test_a_slow_store_pauses_the_session_instead_of_the_event_loop_and_loses_nothing() -> None:
    """The session is held (no more read from the target or the client) while its recording is behind and let go
    once the writer caught up; no chunk waits on the loop, and every byte is in the file in order."""
    holds: list[bool] = []
    recorder, file, ctx = gated_recorder(writer_limit=1024 * 1024, hold_streams=holds.append)
    await recorder.until_started()
    file.gate.clear()  # the disk stops taking anything
    sent = bytearray()
    slowest = 0.0
    step = 0
    while not holds:  # as the relay would: it reads until the session is held
        data = bytes([97 + step % 26]) * 64 * 1024
        started = time.monotonic()
        recorder.from_target(data, stderr=False)
        slowest = max(slowest, time.monotonic() - started)
        sent += data
        step += 1
    assert slowest < 0.1  # nothing waited for the store
    assert holds == [True]
    assert recording_queue_bytes(recorder) <= 1024 * 1024 + recording.BATCH_BYTES
    await asyncio.sleep(0.2)
    assert holds == [True]  # held while the store takes nothing
    file.gate.set()
    await eventually(lambda: holds == [True, False], what="the session to be let go")
    pending = recorder.close(0)
    assert isinstance(pending, PendingRecording)
    await pending.result()
    events = [json.loads(line) for line in bytes(file.data).decode().splitlines()[1:]]
    assert "".join(e[2] for e in events if e[1] == "o").encode() == bytes(sent)
    assert ctx.failed == []


@pytest.mark.anyio
async def test_a_store_that_takes_nothing_while_the_session_is_held_fails_the_recording(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recording, "STALL_CHECK", 0.05)
    holds: list[bool] = []
    recorder, file, ctx = gated_recorder(writer_limit=256 * 1024, stall_timeout=0.5, hold_streams=holds.append)
    await recorder.until_started()
    file.gate.clear()
    while not holds:
        recorder.from_target(b"x" * 64 * 1024, stderr=False)
    await eventually(lambda: ctx.failed == [("plant-a", "the recording store took nothing for 0.5 s")],
                     what="the site blocked")
    assert holds == [True]  # never let go: the session is being ended
    with pytest.raises(RecordingFailure, match=r"took nothing for 0\.5 s"):
        recorder.from_target(b"more", stderr=False)
    with pytest.raises(RecordingFailure):
        recorder.close(0)  # no hash is claimed for a recording that is not whole
    file.gate.set()  # let the thread finish


def recording_queue_bytes(recorder: AsciicastRecorder) -> int:
    return recorder._writer.queued  # type: ignore[attr-defined]
