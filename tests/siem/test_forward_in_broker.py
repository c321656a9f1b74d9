"""``gatepass broker`` with GATEPASS_SYSLOG set forwards while it runs and gives its lease up when stopped; two
forwarders on one destination (two broker replicas) send each event once between them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from broker.audit.siem_forward import Destination, Forwarder
from broker.db import make_session_factory
from tests.fixtures.broker import Plant
from tests.fixtures.ports import free_port, wait_for_port
from tests.siem.conftest import Rsyslog
from tests.siem.test_rsyslog import Running, arrived, wait_until

REPO = Path(__file__).resolve().parents[2]


def test_the_broker_forwards_while_it_runs_and_releases_the_lease_on_sigterm(
    plant: Plant, rsyslog: Rsyslog, tmp_path: Path
) -> None:
    http_port = free_port()
    env = {**os.environ, "GATEPASS_SYSLOG": rsyslog.url, "GATEPASS_HTTP": f"127.0.0.1:{http_port}",
           "GATEPASS_DATABASE_URL": plant.settings.effective_database_url}
    log = (tmp_path / "broker.log").open("wb")
    broker = subprocess.Popen([sys.executable, "-m", "cli", "broker", "--data", str(plant.settings.data_dir)],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", http_port, timeout=20, alive=lambda: broker.poll() is None)
        wait_until(lambda: len(rsyslog.messages()) >= plant.last_seq(), timeout=15, what="the trail to arrive")
        plant.add_site("while-the-broker-runs")
        wait_until(lambda: len(rsyslog.messages()) >= plant.last_seq(), timeout=15, what="the new event")
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=20)
        log.close()

    assert plant.row("SELECT last_seq, holder, lease_until FROM siem_cursors") == (plant.last_seq(), None, None)
    rsyslog.stop()
    assert sorted(arrived(rsyslog).elements()) == list(range(1, plant.last_seq() + 1))


def test_two_replicas_forward_each_event_once(plant: Plant, rsyslog: Rsyslog) -> None:
    replicas = [Running(Forwarder(session_factory=make_session_factory(plant.engine), clock=plant.clock,
                                  destination=Destination.parse(rsyslog.url), hostname=name, batch_size=5))
                for name in ("replica-a", "replica-b")]
    try:
        for number in range(30):
            plant.add_site(f"busy-{number}")
            time.sleep(0.01)
        wait_until(lambda: replicas[0].forwarder.cursor() == plant.last_seq(), timeout=15, what="the catch-up")
    finally:
        for replica in replicas:
            replica.stop()
    rsyslog.stop()

    seqs = arrived(rsyslog)
    assert sorted(seqs) == list(range(1, plant.last_seq() + 1))
    assert max(seqs.values()) == 1
    # The lease (which does not lapse on the test's fixed clock) kept one replica out the whole time.
    senders = Counter(line.split(" ")[2] for line in rsyslog.messages())
    assert len(senders) == 1, senders
