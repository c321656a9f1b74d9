"""State one gateway shares with all its connections, and a home for background report tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.broker_client import BrokerClient
from gateway.models import PendingRecording, RecordingInfo, StoredRecording
from gateway.monitor import GrantMonitor
from gateway.recording_store import RecordingStore
from gateway.recording_upload import RecordingUploader
from gateway.settings import GatewaySettings
from gateway.stopping import KILL_WAIT, SWEEP_TIMEOUT, TargetStop

if TYPE_CHECKING:
    from gateway.connection import GatewayConnection
    from gateway.observers import LiveRegistry
    from gateway.sessions import ProxySession

logger = logging.getLogger("gatepass.gateway")


# Below half the reserve, a session is ended for filling the recordings disk only if its recording grew by at least
# this share of the reserve since the last look (256 MiB: 256 KiB a second): a `tail -f` is not what fills a disk.
# A slower session is ended once it wrote at least this much, and at least half of what the disk lost, since the disk
# went below the reserve: else writing just under the rate above would fill the disk and end every session.
FILLING_SHARE = 1024


@dataclass
class RecordingHealth:
    """A site whose recordings failed at this gateway: why, and when the store was last tried."""

    error: str
    last_probe: float  # time.monotonic()


@dataclass(eq=False)
class GatewayContext:
    settings: GatewaySettings
    broker: BrokerClient
    monitor: GrantMonitor
    recordings: RecordingStore
    user_ca: str | None = None
    connections: set[GatewayConnection] = field(default_factory=set)
    # Sites whose recorded sessions are refused until a probe write to the store succeeds (fail closed).
    blocked_sites: dict[str, RecordingHealth] = field(default_factory=dict)
    # Sessions observers may watch live (gateway/observers.py); None where nothing follows the broker's live link.
    live: LiveRegistry | None = None
    # Sends finished recordings to the broker (gateway/recording_upload.py); None where they stay here.
    uploads: RecordingUploader | None = None
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    # The size of each recorded session's recording file at the last look at the disk (check_recording_space).
    _size_at_last_look: dict[ProxySession, int] = field(default_factory=dict)
    # Free bytes on the recordings disk at the last look; None before the first, without a reserve, or when the
    # store could not tell (a write that fails still fails closed).
    _free_at_last_look: int | None = None
    _below_reserve: bool = False
    # Since the disk went below the reserve: its free bytes then (less what sessions ended for space had written
    # since), and the size of each recorded session's recording file then (or when first seen after).
    _free_when_below: int = 0
    _size_when_below: dict[ProxySession, int] = field(default_factory=dict)

    def recording_failed(self, site: str, error: str) -> None:
        """A recording at ``site`` could not be written: end every recorded session there, refuse new ones.

        Issue 5: "If recording fails (disk full, storage error) the gateway fails closed: no new sessions at
        that site, live ones end with the reason." TCP tunnels are not recorded and stay up.
        """
        if site not in self.blocked_sites:
            logger.warning("recordings at site %s cannot be written (%s): recorded sessions there are ended "
                           "and refused until the store takes data again", site, error)
        self.blocked_sites[site] = RecordingHealth(error=error, last_probe=time.monotonic())
        for connection in list(self.connections):
            connection.recording_failed(site, error)

    def recordings_refusal(self, site: str) -> str | None:
        """None if sessions at ``site`` may be recorded; else why not. While a site is blocked, the store is
        probed at most every ``recording_probe_interval`` seconds, by the next session that asks. Below the
        recordings disk's reserve, no new recorded session starts at any site."""
        health = self.blocked_sites.get(site)
        if health is None:
            return self._reserve_refusal()
        now = time.monotonic()
        if now - health.last_probe < self.settings.recording_probe_interval:
            return health.error
        health.last_probe = now
        try:
            self.recordings.probe()
        except OSError as exc:
            health.error = exc.strerror or str(exc)
            return health.error
        del self.blocked_sites[site]
        logger.info("recordings at site %s can be written again: sessions there are allowed", site)
        return None

    def _reserve_refusal(self) -> str | None:
        free = self._free_at_last_look
        reserve = self.settings.recording_reserve
        if free is None or free >= reserve:
            return None
        return (f"only {size_words(free)} is free on the gateway's recordings disk, below the {size_words(reserve)} "
                "it keeps for the sessions already running")

    def recording_files(self) -> list[tuple[ProxySession, Path]]:
        """Every live recorded session with its recording's file (what the guard measures, off the event loop)."""
        directory = self.settings.recordings_dir
        return [(session, directory / name) for connection in list(self.connections)
                for session, name in connection.recorded_sessions()]

    def check_recording_space(self, free: int | None, sizes: dict[ProxySession, int]) -> ProxySession | None:
        """One look at the recordings disk: ``free`` bytes free, and the size of each live recorded session's file
        (``measure_recordings``), every ``recording_space_interval`` seconds (gateway/server.py, which reads both
        off the event loop: a hung mount must not hold up every relay). The files' own sizes, not the bytes the
        sessions sent: a control character is written as six (``\u001b``), a non-UTF-8 byte as base64. Below
        the reserve, new recorded sessions are refused from now on; below half of it, the recorded session whose
        recording grew the most since the last look is ended, and returned. Quiet sessions go on: a session that
        wrote less than 1/FILLING_SHARE of the reserve since the last look is not what fills the disk, and is never
        ended for what something else wrote (a full disk would still end it, fail closed), unless, since the disk
        went below the reserve, it wrote the most, more than that share, and at least half of what the disk lost
        (at least that share too)."""
        self._free_at_last_look = free
        reserve = self.settings.recording_reserve
        if free is None or reserve <= 0:
            self._size_at_last_look.clear()
            return None
        below = free < reserve
        if below != self._below_reserve:
            self._below_reserve = below
            self._free_when_below, self._size_when_below = free, {}
            if below:
                logger.warning("the recordings disk has %s free, below its reserve of %s: new recorded sessions are "
                               "refused until there is more", size_words(free), size_words(reserve))
            else:
                logger.info("the recordings disk has %s free again: new sessions are allowed", size_words(free))
        grown = {session: size - self._size_at_last_look.get(session, 0) for session, size in sizes.items()}
        self._size_at_last_look = sizes
        self._size_when_below = {session: self._size_when_below.get(session, size) if below else size
                                 for session, size in sizes.items()}
        written = {session: size - self._size_when_below[session] for session, size in sizes.items()}
        if free >= reserve // 2 or not grown:
            return None
        least = max(1, reserve // FILLING_SHARE)
        busiest = max(grown, key=lambda session: grown[session])
        if grown[busiest] >= least:
            interval = self.settings.recording_space_interval
            return self._end_filler(busiest, free, written[busiest],
                                    f"{size_words(grown[busiest])} in the last {interval:g} s")
        steadiest = max(written, key=lambda session: written[session])
        lost = self._free_when_below - free  # not filling (uploads freeing as much as is written): nobody is ended
        if lost >= least and written[steadiest] >= max(least, lost // 2):
            return self._end_filler(steadiest, free, written[steadiest],
                                    f"{size_words(written[steadiest])} since the disk went below its reserve")
        return None

    def _end_filler(self, session: ProxySession, free: int, written: int, how_much: str) -> ProxySession:
        reserve = self.settings.recording_reserve
        session.end_for_space(f"the gateway's recordings disk is nearly full ({size_words(free)} free, under half "
                              f"its {size_words(reserve)} reserve) and this session wrote the most to it ({how_much})")
        # What it wrote is no longer counted against the sessions that go on.
        self._free_when_below -= written
        self._size_at_last_look.pop(session, None)
        self._size_when_below.pop(session, None)
        return session

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        """Run a report to the broker in the background; its failure is logged, never raised."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._background.discard(task)
            if not task.cancelled() and task.exception() is not None:
                logger.warning("%s failed: %s", what, task.exception())

        task.add_done_callback(done)

    async def drain(self, timeout: float) -> None:
        """Give pending reports up to ``timeout`` seconds to reach the broker (on shutdown)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout)


def measure_recordings(files: list[tuple[ProxySession, Path]]) -> dict[ProxySession, int]:
    """The size of each session's recording file now (blocking: run it in a thread); a file gone is left out."""
    sizes = {}
    for session, path in files:
        with contextlib.suppress(OSError):
            sizes[session] = os.stat(path).st_size
    return sizes


def size_words(size: int) -> str:
    """``512 KiB``, ``40 MiB``, ``1.5 GiB``: a size as an operator reads it."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f} {unit}" if value < 10 and value != int(value) else f"{round(value)} {unit}"
    return f"{size} bytes"


class SessionOwner(Protocol):
    """The connection a session or tunnel belongs to."""

    ctx: GatewayContext

    def cut_reason(self) -> tuple[str, str | None] | None: ...


def report_end(
    owner: SessionOwner, session_id: str | None, error: str | None, bytes_in: int, bytes_out: int,
    recording: StoredRecording | None = None, *, client_gone: str | None = None, stop: TargetStop | None = None,
    recording_failed: Callable[[Exception], None] | None = None,
) -> None:
    """Tell the broker a session ended, in the background: why (the cut, an error, or the client), bytes,
    the recording's hash and, for a session cut while its command ran, how that command was stopped (reported
    once the stop is over: at most the grace, KILL's wait and two sweeps). A recording still being finished is
    waited for: a failure to finish it makes the end an error (unless it was cut) and goes to
    ``recording_failed`` (the session reports it to the broker)."""
    if session_id is None:  # the broker never recorded its start
        return
    # A client that vanished (its SSH connection dropped: a closed laptop, a killed tunnel) ended its own
    # session: client_closed, with how it went as the detail; "error" is for what went wrong on our side.
    reason, detail = owner.cut_reason() or (("error", error) if error else ("client_closed", client_gone))
    ended_at = owner.ctx.settings.clock()

    async def report() -> None:
        nonlocal reason, detail
        stored: RecordingInfo | None = None
        if isinstance(recording, PendingRecording):
            try:
                stored = await recording.result()
            except Exception as exc:
                if recording_failed is not None:
                    recording_failed(exc)
                if owner.cut_reason() is None:
                    reason, detail = "error", f"recording failed: {exc}"
        else:
            stored = recording
        if stop is not None:
            with contextlib.suppress(TimeoutError):  # report what is known even if a step hung past its bounds
                await asyncio.wait_for(stop.finished.wait(), stop.grace + KILL_WAIT + 2 * SWEEP_TIMEOUT + 1)
        # With uploads, the outbox queues the recording's upload once the broker has this report (its hash).
        await owner.ctx.broker.session_end(session_id, reason=reason, bytes_in=bytes_in, bytes_out=bytes_out,
                                           detail=detail, recording=stored,
                                           stop=stop.as_json() if stop is not None else None,
                                           uploads=owner.ctx.uploads is not None, ended_at=ended_at)

    owner.ctx.spawn(report(), f"reporting the end of session {session_id}")
