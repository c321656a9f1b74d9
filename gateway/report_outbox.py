"""Reports the broker must not miss, kept on the gateway's disk while the broker cannot be reached.

A gateway reports a session's end (with its recording's SHA-256, which puts the recording under the hash chain),
file transfers, Modbus activity and the requests it refused. A plant's link to the broker does go down, and a
report lost then leaves a session that never ends in the trail (counted as open by the watcher for ever), a
recording no hash covers and a separate gateway's recording that the broker will never take. So a report the
broker did not answer (no connection, a timeout, a 5xx) is written to ``DIR/.reports/<n>.json`` (fsynced) and sent
again, in order, backing off to a minute, until the broker answers; after a restart the gateway sends what it
finds there first. While any report waits, new ones queue behind it, so a session's events still reach the broker
before its end. A report the broker refuses (4xx) is logged and dropped, as before: sending it again would not
change the answer (a session end answered 409 had arrived before its answer was lost).

Each report has a key of its own (``Report.key``, kept with it on disk), sent as the ``Idempotency-Key`` header
every time: a report the broker recorded whose answer was lost is answered again and not recorded twice
(broker/inventory/report_receipts.py). A session end carries the time the session ended on the gateway
(``ended_at``), so a late report does not move it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import BrokerCallFailed, BrokerRefused, BrokerUnavailable
from gateway.recording_store import RECORDING_NAME, sync_directory, write_all

logger = logging.getLogger("gatepass.gateway.reports")

# The spool, inside the recordings directory (the gateway's durable state already lives there).
SPOOL = ".reports"
FIRST_RETRY = 1.0
LAST_RETRY = 60.0
# The only calls a kept report may make: a file in the spool is data read from disk, and the client sends the
# gateway's credential with every call (an absolute URL there would carry it to another host).
REPORT_PATH = re.compile(
    r"/gateway/(?:sessions/(?P<session>[A-Za-z0-9_-]{1,64})/(?P<call>end|events)|refusals|login-refusals)")
# What the broker takes as a report's key (broker/inventory/report_receipts.py); the gateway makes 32 hex digits.
REPORT_KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")
# A kept report larger than this is not one the gateway wrote.
MAX_REPORT_BYTES = 1024 * 1024
# A report the broker answers with a 5xx this many times in a row is set aside (``.rejected``), so that one report
# the broker cannot take does not hold up every later one; "cannot be reached" is waited out for ever.
MAX_SERVER_ERRORS = 20


@dataclass(frozen=True)
class Report:
    """One call of the gateway API's reports: its path and JSON body; ``upload``: the recording the broker takes
    once this report (a session's end) is in."""

    path: str
    body: Mapping[str, Any]
    upload: str | None = None
    # The report's own key, the same on every sending, so the broker records it once. None only for a report kept
    # by a gateway from before keys (it goes without one, as it would have).
    key: str | None = field(default_factory=lambda: secrets.token_hex(16))

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "body": dict(self.body), "upload": self.upload, "key": self.key}

    @classmethod
    def from_json(cls, data: Any) -> Report:
        """A kept report, checked: one of the gateway API's report paths, and an upload only of the ended session's
        own recording (a plain name in the recordings directory)."""
        if not isinstance(data, dict) or not isinstance(data.get("path"), str) or not isinstance(data.get("body"),
                                                                                                 dict):
            raise ValueError("not a kept report")
        path, upload = data["path"], data.get("upload")
        if not REPORT_PATH.fullmatch(path):
            raise ValueError(f"{path[:80]!r} is not a gateway API report")
        if upload is not None and not (isinstance(upload, str) and RECORDING_NAME.fullmatch(upload)
                                       and path == f"/gateway/sessions/{upload.split('.', 1)[0]}/end"):
            raise ValueError(f"{str(upload)[:80]!r} is not the recording of the session this report ends")
        key = data.get("key")
        if key is not None and not (isinstance(key, str) and REPORT_KEY.fullmatch(key)):
            raise ValueError(f"{str(key)[:80]!r} is not a report key")
        return cls(path=path, body=data["body"], upload=upload, key=key)


Deliver = Callable[[Report], Awaitable[Any]]


class ReportOutbox:
    """Delivers reports now if the broker answers, else keeps them in ``directory`` and delivers them later."""

    def __init__(self, directory: Path, deliver: Deliver, *, delivered: Callable[[Report], None] | None = None,
                 first_retry: float = FIRST_RETRY, last_retry: float = LAST_RETRY) -> None:
        self._directory = directory
        self._deliver = deliver
        self._delivered = delivered
        self._first_retry, self._last_retry = first_retry, last_retry
        self._pending: deque[tuple[Path, Report]] = deque()
        self._number = 0
        self._loaded = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def waiting(self) -> int:
        """Reports kept for a later delivery."""
        return len(self._pending)

    def waiting_uploads(self) -> set[str]:
        """Recordings whose session's end has not reached the broker yet (their upload must wait for it)."""
        return {report.upload for _, report in self._pending if report.upload}

    def kept_session_ends(self) -> list[str]:
        """The sessions whose end this gateway still has to report (kept from an earlier run, once ``load``ed)."""
        return [match["session"] for _, report in self._pending
                if (match := REPORT_PATH.fullmatch(report.path)) and match["call"] == "end"]

    def start(self) -> None:
        """Take up what an earlier run left (``load``, unless done already) and start the delivery loop."""
        self.load()
        if self._pending:
            logger.info("%d report(s) kept from before are sent to the broker first", len(self._pending))
            self.idle.clear()
        self._task = asyncio.ensure_future(self._run())
        self._task.add_done_callback(_loop_ended)

    def load(self) -> None:
        """Read what an earlier run left, oldest first (once). A file that is not a report this gateway wrote is
        set aside (renamed ``.rejected``) and logged, never sent and never in the way."""
        if self._loaded:
            return
        self._loaded = True
        found = []
        with contextlib.suppress(FileNotFoundError):
            for partial in self._directory.glob("*.partial"):  # a crash mid-write: its send never returned
                with contextlib.suppress(OSError):
                    partial.unlink()
            for path in self._directory.glob("*.json"):
                with contextlib.suppress(ValueError):
                    found.append((int(path.stem), path))
        for number, path in sorted(found):
            self._number = max(self._number, number)  # a new report never takes a kept one's number
            try:
                report = _read(path)
            except Exception as exc:  # whatever is in the file (deep nesting: RecursionError), the gateway starts
                logger.warning("a kept report %s is not one this gateway wrote (%s); it is set aside", path,
                               str(exc)[:200])
                _set_aside(path)
                continue
            self._pending.append((path, report))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # a loop that died was logged already
                await self._task
            self._task = None

    async def send(self, report: Report) -> None:
        """Deliver ``report``, or keep it for later if the broker cannot take it now (returns either way); raises
        BrokerRefused if the broker refused it, and OSError if it could be neither delivered nor kept."""
        if not self._pending:
            try:
                await self._deliver(report)
            except BrokerRefused:
                raise
            except BrokerCallFailed as exc:
                logger.warning("the broker did not take a report (%s); it is kept and sent again", exc)
            else:
                self._done(report)
                return
        await self._keep(report)

    async def _keep(self, report: Report) -> None:
        self._number += 1
        path = self._directory / f"{self._number:012d}.json"
        await asyncio.to_thread(_write_durably, path, json.dumps(report.as_json()).encode())
        self._pending.append((path, report))
        self.idle.clear()
        self._wake.set()

    def _done(self, report: Report) -> None:
        if self._delivered is not None:
            self._delivered(report)

    async def _run(self) -> None:
        delay = self._first_retry
        server_errors = 0
        while True:
            if not self._pending:
                self.idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            path, report = self._pending[0]
            try:
                await self._deliver(report)
            except BrokerRefused as refusal:
                if refusal.status == 409 and report.path.endswith("/end"):
                    # The end arrived before and its answer was lost: the broker has the hash, the upload may go.
                    self._done(report)
                else:  # it would be refused again
                    logger.warning("the broker refused a kept report to %s (%s); it is dropped", report.path,
                                   refusal.message)
            except BrokerCallFailed as exc:
                # The broker answered, with a 5xx: it may fail this report for ever; not answering is an outage.
                answered = isinstance(exc, BrokerUnavailable) and exc.status is not None
                server_errors = server_errors + 1 if answered else 0
                if server_errors < MAX_SERVER_ERRORS:
                    logger.info("kept reports still wait for the broker (%s); next try in %.0f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._last_retry)
                    continue
                logger.error("the broker failed a kept report to %s %d times (%s); it is set aside in %s so the "
                             "reports behind it go", report.path, server_errors, exc, self._directory)
                await asyncio.to_thread(_set_aside, path)
            else:
                self._done(report)
            delay, server_errors = self._first_retry, 0
            self._pending.popleft()
            try:
                await asyncio.to_thread(path.unlink)
            except FileNotFoundError:
                pass
            except OSError as exc:  # a disk gone read-only: this process does not send it again
                logger.warning("a delivered report %s could not be deleted (%s); after a restart it is sent again",
                               path, exc)


def _read(path: Path) -> Report:
    if not path.is_file() or path.stat().st_size > MAX_REPORT_BYTES:
        raise ValueError("not a regular file of a report's size")
    return Report.from_json(json.loads(path.read_bytes()))


def _set_aside(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rename(path.with_name(path.name + ".rejected"))


def _loop_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the delivery of kept reports stopped: %r; they are sent after a restart", task.exception())


def _write_durably(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    partial = path.with_suffix(".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(partial, path)
    sync_directory(path.parent)
