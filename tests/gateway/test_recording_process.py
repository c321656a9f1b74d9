"""The recording writer process: the same bytes as rendering in the gateway, and fail closed when it goes away."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import recording_process, recording_wire
from gateway.cast_events import INPUT, STDERR, STDOUT, CastRenderer, Entry
from gateway.recording_queue import RecordingQueue
from gateway.recording_store import DirectoryStore, FileWriter


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DirectoryStore]:
    store = DirectoryStore(tmp_path / "recordings")
    store.prepare()
    yield store
    store.close()


def batches(seed: int, count: int = 40) -> list[list[Entry]]:
    """Batches shaped like a session's: text and binary chunks, both streams, input, resizes, notices, ends."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    now = 1000.0
    result: list[list[Entry]] = []
    for index in range(count):
        batch: list[Entry] = []
        for _ in range(rng.randrange(1, 60)):
            now += rng.choice((0.0001, 0.002, 0.004, 0.01, 0.3))
            kind = rng.random()
            if kind < 0.05:
                batch.append((now, "r", f"{rng.randrange(20, 200)}x{rng.randrange(10, 60)}"))
            elif kind < 0.08:
                batch.append((now, "m", "gatepass: a notice — with “quotes” and \\ backslash"))
            elif kind < 0.15:
                batch.append((now, INPUT, "typed é\r".encode()))
            elif kind < 0.3:
                batch.append((now, STDOUT, os.urandom(rng.randrange(1, 40_000))))
            else:
                text = "".join(rng.choice("ab é€\r\n\t\x1b\"\\") for _ in range(rng.randrange(1, 5000)))
                batch.append((now, rng.choice((STDOUT, STDERR)), text.encode()))
        if index == count - 1:
            batch += [(now, INPUT, None), (now, STDOUT, None), (now, STDERR, None), (now, "m", "exit 0")]
        result.append(batch)
    return result


def test_a_batch_crosses_the_wire_unchanged() -> None:
    for batch in batches(3, count=10):
        payload = recording_wire.encode_batch(12.5, batch)
        assert recording_wire.decode_batch(payload) == (12.5, batch)
        for cut in (1, recording_wire.STARTED.size + 3, len(payload) - 1):
            if cut < len(payload):
                with pytest.raises(ValueError, match="batch"):
                    recording_wire.decode_batch(payload[:cut])


def test_the_worker_writes_what_rendering_in_the_gateway_writes(store: DirectoryStore, tmp_path: Path) -> None:
    reference_path = tmp_path / "reference.cast"
    reference = FileWriter(os.open(reference_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), tmp_path)
    name, writer = store.create("ses-1.cast")
    header = b'{"version": 2, "width": 80, "height": 24}\n'
    reference.write(header)
    writer.write(header)
    for batch in batches(7):
        reference.write_events(recording_wire.encode_batch(1000.0, batch))
        writer.submit_events(recording_wire.encode_batch(1000.0, batch))
    # One batch larger than the shared memory goes through the socket instead.
    big: list[Entry] = [(2000.0, STDOUT, b"x" * (recording_process.SHARED_BYTES + 10))]
    reference.write_events(recording_wire.encode_batch(1000.0, big))
    writer.submit_events(recording_wire.encode_batch(1000.0, big))
    expected = reference.close()
    assert writer.close() == expected
    data = (store.path / name).read_bytes()
    assert data == reference_path.read_bytes()
    assert expected == (hashlib.sha256(data).hexdigest(), len(data))


def test_rendering_happens_in_the_worker_not_in_the_gateway(store: DirectoryStore,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> bytes:
        raise AssertionError("rendered in the gateway's process")

    monkeypatch.setattr(CastRenderer, "render", fail)
    name, writer = store.create("ses-2.cast")
    writer.submit_events(recording_wire.encode_batch(0.0, [(0.5, STDOUT, b"hello\r\n")]))
    writer.close()
    assert (store.path / name).read_bytes() == b'[0.5, "o", "hello\\r\\n"]\n'


def test_a_worker_that_dies_fails_its_recordings_and_the_next_one_gets_a_new_worker(store: DirectoryStore) -> None:
    _name, writer = store.create("ses-3.cast")
    failures: list[OSError] = []
    writer.on_failure = failures.append
    writer.write(b"before\n")
    writer.flush()
    first = store.process._process
    assert first is not None
    first.kill()
    first.wait()
    writer.write(b"after\n")
    with pytest.raises(OSError, match="the recording writer process stopped") as raised:
        writer.flush()
    assert raised.value.errno == errno.EIO
    assert [str(failure) for failure in failures] == [str(raised.value)]
    with pytest.raises(OSError, match="the recording writer process stopped"):
        writer.close()  # no hash is claimed for a recording that is not whole
    # The next recording starts a new worker.
    other_name, other = store.create("ses-4.cast")
    other.write(b"fresh\n")
    assert other.close() == (hashlib.sha256(b"fresh\n").hexdigest(), 6)
    assert store.process._process is not None
    assert store.process._process.pid != first.pid
    assert (store.path / other_name).read_bytes() == b"fresh\n"


def test_interrupts_and_terminate_signals_do_not_stop_the_worker(store: DirectoryStore) -> None:
    _name, writer = store.create("ses-5.cast")
    writer.write(b"one\n")
    writer.flush()
    worker = store.process._process
    assert worker is not None
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(worker.pid, sig)  # as Ctrl-C or systemd's stop reach the whole group: the gateway still closes
    time.sleep(0.2)
    writer.write(b"two\n")
    assert writer.close() == (hashlib.sha256(b"one\ntwo\n").hexdigest(), 8)
    assert worker.poll() is None


def test_a_broken_request_is_refused_with_words() -> None:
    process = recording_process.RecordingProcess()
    process.start()
    try:
        with pytest.raises(OSError, match="the recording is not open"):
            process.call(recording_wire.RAW, 99, b"x")
        with pytest.raises(OSError, match="unknown request 77"):
            process.call(77, 99)
    finally:
        process.stop()


def test_closing_the_store_stops_the_worker(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "recordings")
    store.prepare()
    worker = store.process._process
    assert worker is not None
    assert worker.poll() is None
    store.close()
    assert worker.poll() is not None
    store.close()  # twice is harmless


def test_a_queued_writer_on_the_worker_keeps_fail_closed_semantics(store: DirectoryStore) -> None:
    """A write error the worker meets (here: a file the worker cannot write) fails that recording only."""
    queue = RecordingQueue()
    read_only = os.open(store.path / "ses-ro.cast", os.O_RDONLY | os.O_CREAT, 0o600)
    broken = queue.open(store.process.file(read_only, store.path))
    fine_name, fine = store.create("ses-ok.cast")
    broken.write(b"x")
    with pytest.raises(OSError, match="Bad file descriptor"):
        broken.flush()
    fine.write(b"still fine\n")
    assert fine.close()[1] == 11
    assert (store.path / fine_name).read_bytes() == b"still fine\n"
