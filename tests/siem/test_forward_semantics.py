"""What the forwarder counts as delivered, against collectors that misbehave on purpose (real sockets on
loopback): a reset loses nothing, a closed connection is never written into, and ``gatepass audit forward``."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from broker.audit.siem_forward import DeliveryFailed, Destination, Forwarder
from broker.db import make_session_factory
from cli.main import main
from tests.fixtures.broker import Plant
from tests.siem.conftest import Rsyslog

SEQ = re.compile(rb'\[gatepass@32473 seq="(\d+)"')


def frames(data: bytes) -> list[bytes]:
    """Split an RFC 6587 octet-counted stream; every frame must be whole."""
    messages = []
    while data:
        length, _, rest = data.partition(b" ")
        size = int(length)
        messages.append(rest[:size])
        assert len(rest) >= size, "a frame was cut short"
        data = rest[size:]
    return messages


def seqs(data: bytes) -> list[int]:
    found = []
    for message in frames(data):
        match = SEQ.search(message)
        assert match
        found.append(int(match[1]))
    return found


class Collector:
    """A listener whose connections do what ``behaviour(conn, index)`` says; keeps what each connection read."""

    def __init__(self, behaviour: Callable[[socket.socket, int], bytes]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.behaviour = behaviour
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        index = 0
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = self.behaviour(conn, index)
            self.received.append(data)  # after the close, so a test that waits for it knows the FIN/RST is out
            index += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close() alone does not)
        self.listener.close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


def read_all(conn: socket.socket, *, idle: float = 0.3) -> bytes:
    """Read until the peer stays quiet for ``idle`` seconds (or closes)."""
    data = bytearray()
    while select.select([conn], [], [], idle)[0]:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)


@pytest.fixture
def collectors() -> Iterator[Callable[[Callable[[socket.socket, int], bytes]], Collector]]:
    made: list[Collector] = []

    def make(behaviour: Callable[[socket.socket, int], bytes]) -> Collector:
        made.append(Collector(behaviour))
        return made[-1]

    yield make
    for collector in made:
        collector.close()


def forwarder(plant: Plant, url: str, **options: object) -> Forwarder:
    return Forwarder(session_factory=make_session_factory(plant.engine), destination=Destination.parse(url),
                     clock=plant.clock, ack_timeout=3.0, connect_timeout=2.0, **options)  # type: ignore[arg-type]


def test_a_collector_that_resets_with_our_bytes_unread_gets_them_again(plant: Plant, collectors: Callable) -> None:
    def reset_first(conn: socket.socket, index: int) -> bytes:
        if index == 0:
            select.select([conn], [], [], 5)  # our batch is in its buffer, acknowledged by its kernel ...
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return b""  # ... and it goes away without reading it (RST)
        return read_all(conn)

    collector = collectors(reset_first)
    sender = forwarder(plant, collector.url)
    with pytest.raises((DeliveryFailed, OSError)):
        sender.step()  # one batch holds the whole trail of a fresh plant
    assert sender.cursor() == 0  # not one event counted as delivered from the reset connection

    sender.drain()
    collector.close()
    assert sender.cursor() == plant.last_seq()
    assert seqs(b"".join(collector.received)) == list(range(1, plant.last_seq() + 1))


def test_a_connection_the_collector_closed_is_never_written_into(plant: Plant, collectors: Callable) -> None:
    def read_then_close(conn: socket.socket, _index: int) -> bytes:
        return read_all(conn)  # reads what comes, then closes cleanly (FIN) after 0.3 s of quiet

    collector = collectors(read_then_close)
    sender = forwarder(plant, collector.url)
    assert sender.step() > 0
    first = sender.cursor()
    deadline = threading.Event()
    while len(collector.received) < 1 and not deadline.wait(0.05):
        pass  # the collector has closed the first connection (bounded: read_all returns within 0.3 s + 5 s)
    plant.add_site("after-the-close")

    assert sender.step() > 0  # goes to a new connection: the first one saw EOF
    sender.drain()
    collector.close()
    assert len(collector.received) >= 2
    assert seqs(collector.received[0]) == list(range(1, first + 1))
    assert sorted(seqs(b"".join(collector.received))) == list(range(1, plant.last_seq() + 1))


def test_gatepass_audit_forward_once(plant: Plant, rsyslog: Rsyslog, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEPASS_DATABASE_URL", plant.settings.effective_database_url)
    command = ["audit", "forward", "--to", rsyslog.url, "--data", str(plant.settings.data_dir), "--once"]

    assert main(command) == 0
    total = plant.last_seq()
    assert capsys.readouterr().out == f"Forwarded {total} events to {rsyslog.url}; its cursor is at event {total}.\n"
    plant.add_site("one-more")
    assert main(command) == 0
    assert capsys.readouterr().out == f"Forwarded 1 events to {rsyslog.url}; its cursor is at event {total + 1}.\n"
    rsyslog.stop()

    plant.add_site("while-it-is-down")
    assert main(command) == 1
    assert capsys.readouterr().err.startswith(f"gatepass: forwarding to {rsyslog.url} stopped at event {total + 1}: ")
    assert main(["audit", "forward", "--to", "udp://127.0.0.1:514", "--data", str(plant.settings.data_dir)]) == 1
    assert "not a syslog destination" in capsys.readouterr().err
    received = [int(m[1]) for m in SEQ.finditer(rsyslog.output.read_bytes())]
    assert received == list(range(1, total + 2))  # the event written while it was down waits for the next run
