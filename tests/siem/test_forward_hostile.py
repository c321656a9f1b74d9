"""Hostile text in the trail reaches the collector as exactly one clean record per event (DESIGN invariant 10):
the forwarder sends the same escaped RFC 5424 message as ``gatepass audit export --format syslog``, over TCP to
a real rsyslogd that keeps control characters as they arrive (with its default 8 KiB message size, past which
it would read the rest of a frame as a new message), and over TCP and TLS to sockets that keep the raw bytes
(each RFC 6587 frame checked on its own)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

from broker.audit.siem_formats import FORWARD_MAX_OCTETS
from broker.audit.siem_forward import Destination, Forwarder
from broker.db import make_session_factory
from tests.broker.test_siem_formats import SYSLOG_MESSAGE
from tests.fixtures.broker import Api, Plant
from tests.fixtures.hostile import LAST_ACTOR, assert_one_clean_record_per_line, raw_controls, write_hostile_trail
from tests.siem.conftest import Rsyslog
from tests.siem.test_forward_semantics import Collector, frames, read_all
from tests.siem.test_forward_tls import TLSCollector, self_signed
from tests.siem.test_rsyslog import HEADER, wait_until

SEQ = re.compile(r'\[gatepass@32473 seq="(\d+)"')


def make_forwarder(plant: Plant, url: str, **options: object) -> Forwarder:
    return Forwarder(session_factory=make_session_factory(plant.engine), destination=Destination.parse(url),
                     clock=plant.clock, hostname="broker-1", batch_size=4, ack_timeout=3.0, connect_timeout=2.0,
                     **options)  # type: ignore[arg-type]


def check_frames(data: bytes, plant: Plant) -> None:
    """Every frame one RFC 5424 message with no raw control; one frame per event, in order."""
    messages = frames(data)
    assert len(messages) == plant.last_seq()
    texts = assert_one_clean_record_per_line(b"".join(message + b"\n" for message in messages), len(messages))
    parsed = [SYSLOG_MESSAGE.fullmatch(text) for text in texts]
    assert all(parsed)
    assert all(len(message) <= FORWARD_MAX_OCTETS for message in messages)
    assert_same_events([json.loads(match["msg"]) for match in parsed if match], plant.audit())


def assert_same_events(sent: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """MSG is the exact event, in seq order; an event too long for one message is cut, says so, keeps seq and hash."""
    assert [(m["seq"], m["hash"]) for m in sent] == [(e["seq"], e["hash"]) for e in events]
    cut = [m["seq"] for m in sent if m.pop("truncated", False)]
    assert cut == [events[-1]["seq"]]  # only the domain event with 17 500 characters of details
    assert sent[:-1] == events[:-1]


def test_rsyslog_gets_one_clean_record_per_hostile_event(plant: Plant, api: Api, raw_rsyslog: Rsyslog) -> None:
    write_hostile_trail(plant, api)

    assert make_forwarder(plant, raw_rsyslog.url).drain() == plant.last_seq()
    raw_rsyslog.stop()  # writes out what it took

    data = raw_rsyslog.output.read_bytes()
    lines = assert_one_clean_record_per_line(data, plant.last_seq())
    assert [int(SEQ.search(line)[1]) for line in lines] == list(range(1, plant.last_seq() + 1))  # type: ignore[index]
    assert all(HEADER.match(line) for line in lines)
    domain = lines[-1]  # forged records in actor and subject: shown as escapes, inert
    assert 'actor="vendor1\\\\n<110>1 2026-11-27T08:00:00Z broker gatepass' in domain
    parsed = [SYSLOG_MESSAGE.fullmatch(line) for line in lines]
    assert_same_events([json.loads(match["msg"]) for match in parsed if match], plant.audit())
    message = json.loads(parsed[-1]["msg"])  # type: ignore[index]
    assert message["actor"] == LAST_ACTOR  # short values stay whole; the long ones are cut
    assert message["details"]["long"].endswith(" [cut]")
    # Nothing was filed as a message of its own: no rest of a frame, no forged record.
    assert b"<110>" not in raw_rsyslog.other_messages()
    assert b"LLLL" not in raw_rsyslog.other_messages()


def test_this_rsyslog_would_show_a_raw_line_break(raw_rsyslog: Rsyslog) -> None:
    """The collector above is a fair judge: a message with a raw line break does come out as two lines."""
    message = b"<110>1 2026-11-27T08:00:00.000000Z broker-1 gatepass 1 test [gatepass@32473 seq=\"1\"] one\ntwo"
    with socket.create_connection(("127.0.0.1", raw_rsyslog.port)) as sock:
        sock.sendall(str(len(message)).encode() + b" " + message)
    wait_until(lambda: raw_rsyslog.output.exists() and raw_rsyslog.output.stat().st_size > 0, timeout=10,
               what="rsyslogd to write the message")
    raw_rsyslog.stop()
    assert raw_rsyslog.output.read_bytes().count(b"\n") == 2
    assert raw_controls(raw_rsyslog.output.read_text()) == ["\n"]


def test_tcp_frames_hold_one_clean_message_per_hostile_event(plant: Plant, api: Api) -> None:
    write_hostile_trail(plant, api)
    received = Collector(lambda conn, _index: read_all(conn))
    try:
        assert make_forwarder(plant, received.url).drain() == plant.last_seq()
    finally:
        received.close()

    check_frames(b"".join(received.received), plant)


def test_tls_frames_hold_one_clean_message_per_hostile_event(plant: Plant, api: Api, tmp_path: Path) -> None:
    write_hostile_trail(plant, api)
    cert, key = self_signed(tmp_path, "collector")
    server = TLSCollector(cert, key)
    destination = Destination.parse(f"tls://127.0.0.1:{server.port}")
    try:
        sent = make_forwarder(plant, destination.url, ssl_context=destination.ssl_context(cert)).drain()
    finally:
        server.close()

    assert sent == plant.last_seq()
    check_frames(bytes(server.received), plant)
