"""The gateway process: register with the broker, serve SSH, follow grant events, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import resource
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import asyncssh

from gateway.algorithms import server_algorithm_options
from gateway.broker_client import BrokerClient
from gateway.connection import GatewayConnection
from gateway.context import GatewayContext, measure_recordings
from gateway.errors import BrokerUnavailable
from gateway.hostkey import load_or_create_host_key, public_key_line
from gateway.monitor import GrantMonitor
from gateway.observers import LiveRegistry, follow_live
from gateway.packet_overhead import skip_unlogged_packet_lines
from gateway.recording_store import DirectoryStore
from gateway.recording_upload import RecordingUploader
from gateway.report_outbox import SPOOL, Report, ReportOutbox
from gateway.settings import GatewaySettings
from gateway.sync import follow_broker

if TYPE_CHECKING:
    from gateway.sessions import ProxySession

_T = TypeVar("_T")
logger = logging.getLogger("gatepass.gateway")

# Seconds a stopping gateway gives pending session reports to reach the broker.
DRAIN_TIMEOUT = 2.0
# Each tunnel connection holds one socket to the asset; the usual soft limit of 1,024 descriptors would
# cap a gateway below 1,000 concurrent tunnels, so the soft limit is raised towards the hard one.
WANTED_OPEN_FILES = 65536


def raise_open_files_limit(wanted: int = WANTED_OPEN_FILES) -> int:
    """Raise RLIMIT_NOFILE's soft limit to ``wanted`` (at most the hard limit); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Gateway:
    """One gateway: ``await start()``, then ``serve_forever()`` or ``stop()``."""

    def __init__(self, settings: GatewaySettings, *, broker: BrokerClient | None = None) -> None:
        self.settings = settings
        self._own_broker = broker is None
        self.broker = broker or BrokerClient(settings.broker_url, settings.token, timeout=settings.broker_timeout)
        self.monitor = GrantMonitor(clock=settings.clock, warn_before=settings.warn_before)
        self.recordings = DirectoryStore(settings.recordings_dir)
        self.uploads = RecordingUploader(self.broker, settings.recordings_dir) if settings.upload_recordings else None
        # Reports wait on disk while the broker cannot be reached; a session's end, once in, lets its upload go.
        self.outbox = ReportOutbox(settings.recordings_dir / SPOOL, self.broker.deliver_report,
                                   delivered=self._report_delivered)
        self.broker.outbox = self.outbox
        self.ctx = GatewayContext(settings=settings, broker=self.broker, monitor=self.monitor,
                                  recordings=self.recordings, live=LiveRegistry(self.broker), uploads=self.uploads)
        self.host_key = load_or_create_host_key(settings.host_key_path)
        self.name: str | None = None
        # Set while the event stream is connected and live grants have been resynced.
        self.events_connected = asyncio.Event()
        self._server: asyncssh.SSHAcceptor | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._live_task: asyncio.Task[None] | None = None
        self._space_task: asyncio.Task[None] | None = None
        # Set while the live link (observers' watch requests) is connected.
        self.live_connected = asyncio.Event()
        self._stopped = asyncio.Event()

    def _report_delivered(self, report: Report) -> None:
        if report.upload is not None and self.uploads is not None:  # the broker knows its hash: it takes the file
            self.uploads.queue(report.upload)

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``listen_port=0``)."""
        if self._server is None:
            raise RuntimeError("the gateway is not started")
        return self._server.get_port()

    @property
    def host_public_key(self) -> str:
        """``ssh-ed25519 AAAA…``: what clients pin for this gateway."""
        return public_key_line(self.host_key)

    async def start(self) -> None:
        """Prepare the recordings directory, bind the SSH port, register with the broker, follow grant events.

        Raises OSError (recordings directory), BrokerRefused (bad token) or BrokerUnavailable; nothing is left
        running then.
        """
        settings = self.settings
        # A gateway that cannot even create its recordings directory does not start (fail closed).
        self.recordings.prepare()
        try:
            await self._listen_and_register()
        except BaseException:
            self.recordings.close()  # the writer process prepare() started
            raise
        logger.info("gateway %s listening on %s:%d", self.name, settings.listen_host, self.port)

    async def _listen_and_register(self) -> None:
        settings = self.settings
        skip_unlogged_packet_lines()  # asyncssh's per-packet log lines, formatted only if written (packet_overhead)
        open_files = raise_open_files_limit()
        if open_files < 2 * 1024:
            logger.warning("only %d open files allowed: the gateway holds fewer than 1,000 tunnels", open_files)
        self._server = await asyncssh.create_server(
            lambda: GatewayConnection(self.ctx),
            settings.listen_host,
            settings.listen_port,
            server_host_keys=[self.host_key],
            # Byte-transparent proxying: no encoding, no line editing (FIELD-NOTES).
            encoding=None,
            line_editor=False,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            kbdint_auth=False,
            password_auth=False,
            gss_host=None,
            login_timeout=30,
            keepalive_interval=30,
            server_version="Gatepass",
            **server_algorithm_options(),
        )
        try:
            # A gateway that starts carries no session: the broker ends those an earlier run left open (it stopped
            # without reporting them: a crash, a power cut), except those whose end this run still has to report.
            self.outbox.load()
            registration = await self.broker.register(
                ssh_host=settings.advertised_host, ssh_port=self.port, host_key=self.host_public_key,
                kept_ends=self.outbox.kept_session_ends(),
            )
        except BaseException:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            raise
        self.ctx.user_ca = registration.user_ca.strip()
        self.name = registration.gateway
        self._follow_task = asyncio.ensure_future(
            follow_broker(self.broker, self.monitor, connected=self.events_connected)
        )
        assert self.ctx.live is not None  # noqa: S101 - set in __init__
        self._live_task = asyncio.ensure_future(follow_live(self.broker, self.ctx.live,
                                                            connected=self.live_connected))
        if settings.recording_reserve > 0:
            self._space_task = asyncio.ensure_future(self._guard_recording_space())
        self.outbox.start()  # what an earlier run could not report goes first
        if self.uploads is not None:  # what an earlier run left here, except what waits for its session's end
            self.uploads.start(exclude=self.outbox.waiting_uploads())

    async def _guard_recording_space(self) -> None:
        """Look at the recordings disk's free space now and every ``recording_space_interval`` seconds
        (GatewayContext.check_recording_space). The look runs in a daemon thread of its own (``in_daemon_thread``):
        statvfs and stat on a hung mount block until it answers. A failing look is logged when it starts failing (or
        fails otherwise) and when it works again, not at every look: a warning a second for as long as a mount is
        gone would flood the log (and the disk it is on)."""
        failing: str | None = None
        while True:
            look = functools.partial(_look_at_disk, self.recordings, self.ctx.recording_files())
            sizes, free, error = await in_daemon_thread(look)
            if error is not None:
                why = str(error.strerror or error)
                if why != failing:
                    logger.warning("cannot tell the recordings disk's free space (%s)", why)
                failing = why
            else:
                if failing is not None:
                    logger.info("the recordings disk's free space can be read again")
                failing = None
            try:
                self.ctx.check_recording_space(free, sizes)
            except Exception:  # a look that went wrong must not end the guard
                logger.exception("looking at the recordings disk's free space failed")
            await asyncio.sleep(self.settings.recording_space_interval)

    async def stop(self) -> None:
        """Cut every connection (reason gateway_lost), close the port, flush reports to the broker."""
        if self._space_task is not None:
            self._space_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._space_task
            self._space_task = None
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task
            self._follow_task = None
        if self._live_task is not None:
            self._live_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._live_task
            self._live_task = None
        for connection in list(self.ctx.connections):
            connection.cut("gateway_lost", "gatepass: the gateway is shutting down", "gateway stopped")
        self.monitor.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # Let the connections' close callbacks queue their session reports, then send them.
        for _ in range(100):
            if not self.ctx.connections:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        await self.ctx.drain(DRAIN_TIMEOUT)
        await self.outbox.stop()  # what is kept stays on disk and goes after the next start
        if self.uploads is not None:  # what is not uploaded yet stays on disk and goes after the next start
            await self.uploads.stop()
        await asyncio.to_thread(self.recordings.close)  # the recordings are closed: the writer process may go
        if self._own_broker:
            await self.broker.aclose()
        self._stopped.set()

    async def serve_forever(self) -> None:
        """Wait until ``stop()`` is called (or this task is cancelled)."""
        await self._stopped.wait()


def _look_at_disk(store: DirectoryStore, files: list[tuple[ProxySession, Path]],
                  ) -> tuple[dict[ProxySession, int], int | None, OSError | None]:
    """One look, blocking (one thread hop a look): each recording file's size, and the disk's free bytes or why
    they cannot be told."""
    sizes = measure_recordings(files)
    try:
        return sizes, store.free_bytes(), None
    except OSError as error:
        return sizes, None, error


def in_daemon_thread(call: Callable[[], _T]) -> asyncio.Future[_T]:
    """``call()`` in a thread of its own, marked daemon: a look at a hung mount may block for ever, and the threads of
    ``asyncio.to_thread`` are joined when the process exits, so one stuck statvfs would keep a stopped gateway from
    ever exiting. Cancelling the future leaves the thread to finish (or not) on its own."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile (the gateway stopped)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]  # None only with an error

    def run() -> None:
        try:
            result, error = call(), None
        except BaseException as exc:  # handed to the awaiting task, which decides
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed while the call hung: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="gatepass-disk-look", daemon=True).start()
    return future


async def run_gateway(settings: GatewaySettings, *, retry_backoff: float = 1.0, max_backoff: float = 30.0) -> None:
    """Run a gateway until cancelled; waits for the broker (with backoff) if it is not up yet."""
    backoff = retry_backoff
    while True:
        gateway = Gateway(settings)
        try:
            await gateway.start()
        except BrokerUnavailable as exc:
            await gateway.broker.aclose()
            logger.warning("cannot register with the broker (%s); retrying in %.0f s", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
            continue
        except BaseException:
            await gateway.broker.aclose()
            raise
        break
    try:
        await gateway.serve_forever()
    finally:
        await gateway.stop()
