"""Continuous forwarding to a real rsyslogd: every audit event arrives exactly once, across a stop and restart
of the collector and across a restart of the forwarder itself."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from broker.audit.siem_forward import Destination, Forwarder, LeaseHeld
from broker.db import make_session_factory
from tests.fixtures.broker import Plant
from tests.siem.conftest import Rsyslog

SEQ = re.compile(r'\[gatepass@32473 seq="(\d+)"')
# RFC 5424 §6: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
HEADER = re.compile(r'^<(\d{1,3})>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S{1,255} gatepass \S{1,128} \S{1,32} \[')


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def add_events(plant: Plant, prefix: str, count: int) -> None:
    """``count`` audit events (admin:site:created), each committed on its own like the broker's."""
    for number in range(count):
        plant.add_site(f"{prefix}-{number}")


def arrived(collector: Rsyslog) -> Counter[int]:
    seqs: Counter[int] = Counter()
    for line in collector.messages():
        assert HEADER.match(line), line
        match = SEQ.search(line)
        assert match, line
        seqs[int(match.group(1))] += 1
    return seqs


class Running:
    """A forwarder running in a thread, as ``gatepass audit forward`` runs it."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=forwarder.run, args=(self.stop_event,),
                                       kwargs={"idle": 0.05, "max_backoff": 0.3}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "the forwarder did not stop"


@pytest.fixture
def make_forwarder(plant: Plant) -> Callable[..., Forwarder]:
    def make(url: str, **options: object) -> Forwarder:
        return Forwarder(session_factory=make_session_factory(plant.engine), destination=Destination.parse(url),
                         clock=plant.clock, batch_size=7, **options)  # type: ignore[arg-type]

    return make


@pytest.fixture
def running(make_forwarder: Callable[..., Forwarder]) -> Iterator[Callable[[str], Running]]:
    started: list[Running] = []

    def start(url: str) -> Running:
        started.append(Running(make_forwarder(url)))
        return started[-1]

    yield start
    for each in started:
        each.stop()


def test_every_event_arrives_once_across_a_collector_stop_and_restart(
    plant: Plant, rsyslog: Rsyslog, running: Callable[[str], Running]
) -> None:
    forwarding = running(rsyslog.url)
    add_events(plant, "before", 25)
    wait_until(lambda: forwarding.forwarder.cursor() == plant.last_seq(), timeout=15, what="the first events")

    rsyslog.stop()
    cursor_while_down = plant.last_seq()
    add_events(plant, "down", 20)
    time.sleep(1.0)  # the forwarder tries, fails to connect and backs off meanwhile
    assert forwarding.forwarder.cursor() == cursor_while_down  # nothing counted as delivered while down

    rsyslog.start()
    add_events(plant, "after", 20)
    wait_until(lambda: forwarding.forwarder.cursor() == plant.last_seq(), timeout=20, what="the catch-up")
    forwarding.stop()
    rsyslog.stop()  # writes out what it took

    seqs = arrived(rsyslog)
    assert sorted(seqs) == list(range(1, plant.last_seq() + 1))  # nothing lost
    assert [seq for seq, times in seqs.items() if times > 1] == []  # nothing twice


def test_events_written_during_the_stop_arrive_once(
    plant: Plant, rsyslog: Rsyslog, running: Callable[[str], Running]
) -> None:
    """The collector goes away while events keep coming (and the forwarder keeps sending)."""
    forwarding = running(rsyslog.url)
    writer_done = threading.Event()

    def keep_writing() -> None:
        for number in range(60):
            plant.add_site(f"busy-{number}")
            time.sleep(0.02)
        writer_done.set()

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    time.sleep(0.4)
    rsyslog.stop()
    time.sleep(0.5)
    rsyslog.start()
    writer.join(timeout=30)
    assert writer_done.is_set()
    wait_until(lambda: forwarding.forwarder.cursor() == plant.last_seq(), timeout=20, what="the catch-up")
    forwarding.stop()
    rsyslog.stop()

    seqs = arrived(rsyslog)
    assert sorted(seqs) == list(range(1, plant.last_seq() + 1))
    assert [seq for seq, times in seqs.items() if times > 1] == []


def test_a_restarted_forwarder_resumes_from_the_cursor(
    plant: Plant, rsyslog: Rsyslog, running: Callable[[str], Running]
) -> None:
    first = running(rsyslog.url)
    add_events(plant, "first", 10)
    wait_until(lambda: first.forwarder.cursor() == plant.last_seq(), timeout=15, what="the first run")
    first.stop()  # releases its lease
    delivered = plant.last_seq()

    add_events(plant, "between", 10)
    second = running(rsyslog.url)
    wait_until(lambda: second.forwarder.cursor() == plant.last_seq(), timeout=15, what="the second run")
    second.stop()
    rsyslog.stop()

    seqs = arrived(rsyslog)
    assert sorted(seqs) == list(range(1, plant.last_seq() + 1))
    assert max(seqs.values()) == 1
    assert plant.row("SELECT last_seq, holder FROM siem_cursors")[0] == plant.last_seq() > delivered


def test_a_crashed_forwarder_s_lease_keeps_others_out_until_it_lapses(
    plant: Plant, rsyslog: Rsyslog, make_forwarder: Callable[..., Forwarder]
) -> None:
    crashed = make_forwarder(rsyslog.url)
    add_events(plant, "one", 3)
    while crashed.step():
        pass
    assert crashed.cursor() == plant.last_seq()
    crashed.disconnect()  # ... and then it dies without releasing its lease

    replica = make_forwarder(rsyslog.url)
    add_events(plant, "two", 3)
    with pytest.raises(LeaseHeld, match=r"forwards to tcp://127\.0\.0\.1"):
        replica.step()
    plant.clock.advance(dt.timedelta(seconds=31))
    assert replica.drain() == 3

    rsyslog.stop()
    seqs = arrived(rsyslog)
    assert sorted(seqs) == list(range(1, plant.last_seq() + 1))
    assert max(seqs.values()) == 1
