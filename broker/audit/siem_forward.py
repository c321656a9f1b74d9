"""Forward the audit trail to a syslog collector: RFC 5424 messages, RFC 6587 octet counting, over TCP or TLS.

The audit trail itself is the durable on-disk queue: events are already committed in the database, in seq
order, before anyone forwards them, and ``siem_cursors.last_seq`` records how far each destination has
taken them. Nothing is deleted on delivery, so a collector that is down for an hour simply gets that hour
when it is back, from the cursor on.

The cursor moves only after the collector's TCP stack has acknowledged every byte of a batch (the socket's
unacknowledged send queue, Linux ``SIOCOUTQ``, is empty) *and* the connection has seen neither EOF nor a
reset. Plain RFC 6587 has no application acknowledgement, so this is the strongest evidence TCP gives; the
reset check matters because Linux answers a close with unread data by RST (RFC 1122 §4.2.2.13) and purges
our send queue, which would otherwise read as "all acknowledged". A collector only ever reads, so anything
readable on the socket is its EOF or reset: the connection is dropped then and never written into again.

What this gives, honestly:
- collector stopped, restarted, unreachable: nothing lost, nothing repeated (the batch in flight when it
  went away is not confirmed and is sent again, from the cursor, on the next connection);
- this process dies after the collector acknowledged a batch but before the cursor write commits: that
  batch is sent again. Each message carries ``seq`` and ``hash`` in its structured data, so a SIEM can drop
  the repeat;
- a collector that dies with acknowledged bytes still unread in its kernel buffer resets the connection; a
  reset seen within ``SETTLE_SECONDS`` of the acknowledgement fails the batch (it is sent again), a later one
  cannot be told from a delivery. Only an application-level acknowledgement (RELP) closes that gap.

Only one process forwards to a destination at a time: it holds a lease (``holder``, ``lease_until``) on the
cursor row, renewed every round; a replica that finds a live lease held by someone else waits.

Errors: ``ForwardError`` (base) ← ``DestinationInvalid`` (a URL we cannot use), ``LeaseHeld`` (another
process forwards there now), ``DeliveryFailed`` (the collector did not take a batch; resend from the cursor).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import select
import socket
import ssl
import struct
import termios
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select as sql_select
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from broker.audit import siem_formats
from broker.clock import Clock
from broker.db import unit_of_work
from broker.errors import BrokerError
from broker.models import AuditEvent, SiemCursor

log = logging.getLogger("gatepass.siem")


class ForwardError(BrokerError):
    """Base of the forwarder's errors; the message says what went wrong in an operator's words."""


class DestinationInvalid(ForwardError, ValueError):
    pass


class LeaseHeld(ForwardError):
    pass


class DeliveryFailed(ForwardError):
    pass


@dataclass(frozen=True)
class Destination:
    """``tcp://host:port`` or ``tls://host:port``; the URL as written is the cursor's key."""

    url: str
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Destination:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("tcp", "tls") or not parts.hostname:
            raise DestinationInvalid(f"'{url}' is not a syslog destination: write tcp://HOST:PORT or tls://HOST:PORT")
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None or port == 0:
            raise DestinationInvalid(f"'{url}' names no port: write tcp://HOST:PORT or tls://HOST:PORT")
        if len(url.strip()) > 255:
            raise DestinationInvalid("the destination URL is longer than 255 characters")
        return cls(url=url.strip(), host=parts.hostname, port=port, tls=parts.scheme == "tls")

    def ssl_context(self, ca_file: Path | None) -> ssl.SSLContext | None:
        """TLS with certificate and host name checks (RFC 5425 §5.2), against ``ca_file`` or the system store."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


# How long to watch a connection for a reset after the collector acknowledged a batch (once per batch).
SETTLE_SECONDS = 0.05


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes written but not yet acknowledged by the peer (Linux SIOCOUTQ, which is TIOCOUTQ)."""
    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", raw)[0])


class CollectorConnection:
    """One TCP (or TLS) connection to the collector, written to only while the collector has not closed it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed_by_peer = False

    @classmethod
    def open(cls, destination: Destination, context: ssl.SSLContext | None, *, timeout: float) -> CollectorConnection:
        raw = socket.create_connection((destination.host, destination.port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        try:
            sock = context.wrap_socket(raw, server_hostname=destination.host) if context else raw
        except (OSError, ssl.SSLError):
            raw.close()
            raise
        return cls(sock)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _drain_incoming(self) -> None:
        """Read whatever is readable: a collector never talks, so data is ignored, EOF or a reset is noted."""
        previous = self.sock.gettimeout()
        self.sock.settimeout(0.0)
        try:
            while True:
                try:
                    data = self.sock.recv(4096)
                except (ssl.SSLWantReadError, BlockingIOError):
                    return  # nothing more (or a TLS 1.3 session ticket, consumed)
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    self.closed_by_peer = True
                    return
                if not data:
                    self.closed_by_peer = True
                    return
        finally:
            self.sock.settimeout(previous)

    def _readable(self, wait: float) -> bool:
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        ready, _, _ = select.select([self.sock], [], [], wait)
        return bool(ready)

    def usable(self) -> bool:
        """False once the collector has closed its side: writing then is how events get lost."""
        if not self.closed_by_peer and self._readable(0):
            try:
                self._drain_incoming()
            except OSError:  # reset
                self.closed_by_peer = True
        return not self.closed_by_peer

    def send_confirmed(self, data: bytes, *, timeout: float, stopping: threading.Event | None = None) -> None:
        """Write ``data`` and return only once the collector's TCP acknowledged all of it and it did not reset."""
        if not self.usable():
            raise DeliveryFailed("the collector closed the connection before the batch was sent")
        self.sock.sendall(data)
        deadline = time.monotonic() + timeout
        while _unacknowledged(self.sock) > 0:
            if self.closed_by_peer:
                raise DeliveryFailed("the collector closed the connection with part of the batch unacknowledged")
            if time.monotonic() > deadline:
                raise DeliveryFailed(f"the collector did not acknowledge the batch within {timeout:g}s")
            if stopping is not None and stopping.is_set():
                raise DeliveryFailed("stopping before the collector acknowledged the batch")
            if self._readable(0.01):
                self._drain_incoming()
        # All acknowledged. A collector that closed with our bytes unread answers with RST, which also empties
        # the send queue: look once more, for a moment, so a reset that follows the acknowledgement is a failure
        # and not a delivery. (A reset later than SETTLE is the window plain TCP cannot close; see above.)
        if self._readable(SETTLE_SECONDS):
            self._drain_incoming()
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise DeliveryFailed(f"the connection to the collector failed: {os.strerror(error)}")


def holder_name() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Forwarder:
    """Send the audit trail after the destination's cursor, batch by batch, moving the cursor on confirmation."""

    def __init__(self, *, session_factory: sessionmaker[Session], destination: Destination, clock: Clock,
                 ssl_context: ssl.SSLContext | None = None, holder: str | None = None, hostname: str | None = None,
                 batch_size: int = 500, lease: dt.timedelta = dt.timedelta(seconds=30),
                 ack_timeout: float = 10.0, connect_timeout: float = 5.0,
                 max_message_octets: int = siem_formats.FORWARD_MAX_OCTETS) -> None:
        if ack_timeout + connect_timeout >= lease.total_seconds():
            raise ValueError("the lease must outlast a connect and an acknowledgement wait")
        self.session_factory = session_factory
        self.destination = destination
        self.clock = clock
        self.ssl_context = ssl_context
        self.holder = holder or holder_name()
        self.hostname = hostname or socket.gethostname()
        self.procid = str(os.getpid())
        self.batch_size = batch_size
        self.lease = lease
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.max_message_octets = max_message_octets
        self.connection: CollectorConnection | None = None
        self.stopping = threading.Event()  # set by run()'s caller: a pending acknowledgement wait gives up

    # --- the cursor and its lease ----------------------------------------------------------------------

    def _take_lease(self, session: Session, now: dt.datetime) -> int:
        cursor = session.get(SiemCursor, self.destination.url, with_for_update=True)
        if cursor is None:
            # A new destination gets the whole trail: a SIEM wants the history, and seq lets it skip what it has.
            session.add(SiemCursor(destination=self.destination.url, last_seq=0, holder=self.holder,
                                   lease_until=now + self.lease, updated_at=now))
            session.flush()  # so a replica inserting the same destination fails here, inside our error handling
            return 0
        if (cursor.holder not in (None, self.holder) and cursor.lease_until is not None
                and cursor.lease_until > now):
            raise LeaseHeld(f"{cursor.holder} forwards to {self.destination.url} (lease until "
                            f"{cursor.lease_until:%Y-%m-%d %H:%M:%S} UTC)")
        cursor.holder, cursor.lease_until, cursor.updated_at = self.holder, now + self.lease, now
        return int(cursor.last_seq)

    def _pending(self) -> tuple[int, list[dict[str, object]]]:
        try:
            with unit_of_work(self.session_factory) as session:
                now = self.clock.now()
                after = self._take_lease(session, now)
                rows = session.scalars(sql_select(AuditEvent).where(AuditEvent.seq > after)
                                       .order_by(AuditEvent.seq).limit(self.batch_size)).all()
                return after, [row.as_dict() for row in rows]
        except IntegrityError:
            raise LeaseHeld(f"another process just started forwarding to {self.destination.url}") from None

    def _advance(self, *, after: int, to: int) -> None:
        with unit_of_work(self.session_factory) as session:
            now = self.clock.now()
            moved = session.execute(
                update(SiemCursor)
                .where(SiemCursor.destination == self.destination.url, SiemCursor.holder == self.holder,
                       SiemCursor.last_seq == after)
                .values(last_seq=to, lease_until=now + self.lease, updated_at=now)
            ).rowcount  # type: ignore[attr-defined]
        if moved != 1:
            raise LeaseHeld(f"lost the lease on {self.destination.url} while sending; events up to {to} may "
                            "reach the collector twice (seq and hash identify a repeat)")

    def release(self) -> None:
        """Give the lease up so another replica can take over at once instead of waiting for it to lapse."""
        try:
            with unit_of_work(self.session_factory) as session:
                session.execute(update(SiemCursor).where(SiemCursor.destination == self.destination.url,
                                                         SiemCursor.holder == self.holder)
                                .values(holder=None, lease_until=None, updated_at=self.clock.now()))
        except SQLAlchemyError as error:
            log.warning("could not release the SIEM lease on %s: %s", self.destination.url, error)

    def cursor(self) -> int:
        with unit_of_work(self.session_factory) as session:
            value = session.scalar(sql_select(SiemCursor.last_seq)
                                   .where(SiemCursor.destination == self.destination.url))
            return int(value or 0)

    # --- sending ---------------------------------------------------------------------------------------

    def disconnect(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def step(self) -> int:
        """One round: renew the lease, send the next batch after the cursor, confirm it, move the cursor.
        Returns how many events were delivered (0: nothing new). Raises ``DeliveryFailed``/``OSError`` when
        the collector did not take the batch (the cursor did not move), ``LeaseHeld`` when it is not ours."""
        after, events = self._pending()
        if self.connection is not None and not self.connection.usable():
            self.disconnect()
        if not events:
            return 0
        # The same message as `gatepass audit export --format syslog` (controls escaped by broker/siem_escaping),
        # cut to a size every collector takes whole: one record per event, whatever text the event holds.
        payload = b"".join(siem_formats.octet_frame(siem_formats.to_syslog(
            event, hostname=self.hostname, procid=self.procid, max_octets=self.max_message_octets))
            for event in events)
        try:
            if self.connection is None:
                self.connection = CollectorConnection.open(self.destination, self.ssl_context,
                                                           timeout=self.connect_timeout)
            self.connection.send_confirmed(payload, timeout=self.ack_timeout, stopping=self.stopping)
        except BaseException:
            self.disconnect()  # never write again into a connection whose state we do not know
            raise
        self._advance(after=after, to=int(str(events[-1]["seq"])))
        return len(events)

    def drain(self) -> int:
        """Send everything there is now (``gatepass audit forward --once``); stop at the first failure."""
        total = 0
        try:
            while sent := self.step():
                total += sent
        finally:
            self.disconnect()
            self.release()
        return total

    def run(self, stop: threading.Event, *, idle: float = 0.5, max_backoff: float = 30.0) -> None:
        """Forward until ``stop`` is set: poll the trail every ``idle`` seconds, reconnect with back-off."""
        backoff = 0.5
        self.stopping = stop
        try:
            while not stop.is_set():
                try:
                    sent = self.step()
                except LeaseHeld as error:
                    log.info("%s", error)
                    stop.wait(min(self.lease.total_seconds() / 3, max_backoff))
                    continue
                except (OSError, DeliveryFailed, SQLAlchemyError) as error:
                    log.warning("SIEM forwarding to %s failed, resending from the cursor in %.1fs: %s",
                                self.destination.url, backoff, error)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, max_backoff)
                    continue
                except Exception:  # a bug must not end forwarding for the life of the broker: log, back off, retry
                    log.exception("SIEM forwarding to %s failed unexpectedly; retrying in %.1fs",
                                  self.destination.url, backoff)
                    self.disconnect()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, max_backoff)
                    continue
                backoff = 0.5
                if sent == 0:
                    stop.wait(idle)
        finally:
            self.disconnect()
            self.release()
