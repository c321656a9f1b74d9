"""Fixtures for the SIEM tests: a real rsyslogd (the Debian package) listening on a free loopback port, and a
fresh copy of the standard plant whose audit trail the forwarder sends to it.

- ``plant``: as in ``tests/broker/conftest.py`` (SQLite, or PostgreSQL with ``GATEPASS_TEST_POSTGRES``)
- ``rsyslog``: an ``Rsyslog`` with its own config, work directory and pid file; ``start()``, ``stop()`` (SIGTERM,
  waited for), and ``messages()``: every raw message it wrote to its output file, in arrival order
- ``raw_rsyslog``: the same, but writing control characters as they arrive (rsyslog's default turns them into
  ``#ooo`` on receipt, which would hide a raw line break we sent); ``other_messages()``: what it filed
  elsewhere (its own messages, and anything that did not parse as ours, such as the rest of an oversize frame)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.ports import free_port, wait_for_port

RSYSLOGD = "/usr/sbin/rsyslogd"

# imtcp only (no imuxsock/imklog: this rsyslog must not read the host's logs); every message is written raw,
# one per line, so the test counts exactly what arrived; rsyslogd's own messages go to another file. imtcp
# accepts RFC 6587 octet counting by default.
CONFIG = """\
global(workDirectory="{work}"{options})
module(load="imtcp")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\\n")
if $app-name == "gatepass" then {{
  action(type="omfile" file="{output}" template="raw")
}} else {{
  action(type="omfile" file="{other}")
}}
"""


class Rsyslog:
    def __init__(self, directory: Path, *, keep_controls: bool = False) -> None:
        self.directory = directory
        self.work = directory / "work"
        self.work.mkdir(parents=True)
        self.output = directory / "received.log"
        self.config = directory / "rsyslog.conf"
        self.pidfile = directory / "rsyslogd.pid"
        self.port = free_port()
        options = (' parser.escapeControlCharactersOnReceive="off"' if keep_controls
                   else "")
        self.other = directory / "rsyslogd-own.log"
        self.config.write_text(CONFIG.format(work=self.work, port=self.port, output=self.output, other=self.other,
                                              options=options))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None, "rsyslogd is already running"
        self.pidfile.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.config), "-i", str(self.pidfile)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        process = self.process
        wait_for_port("127.0.0.1", self.port, timeout=10, alive=lambda: process.poll() is None)

    def stop(self) -> None:
        """SIGTERM, as systemd stops it; rsyslogd closes its connections and writes out what it took."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            raise
        finally:
            self.process = None

    def messages(self) -> list[str]:
        return self.output.read_text().splitlines() if self.output.exists() else []

    def other_messages(self) -> bytes:
        return self.other.read_bytes() if self.other.exists() else b""


def _started(directory: Path, *, keep_controls: bool = False) -> Rsyslog:
    if not os.access(RSYSLOGD, os.X_OK) or shutil.which("rsyslogd", path="/usr/sbin") is None:
        pytest.fail(f"{RSYSLOGD} is missing: install the Debian package rsyslog (.ci/run does)")
    collector = Rsyslog(directory, keep_controls=keep_controls)
    collector.start()
    return collector


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    collector = _started(tmp_path / "rsyslog")
    try:
        yield collector
    finally:
        if collector.process is not None:
            collector.process.kill()
            collector.process.wait(timeout=5)



@pytest.fixture
def raw_rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    collector = _started(tmp_path / "raw-rsyslog", keep_controls=True)
    try:
        yield collector
    finally:
        if collector.process is not None:
            collector.process.kill()
            collector.process.wait(timeout=5)
