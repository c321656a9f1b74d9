"""Push of grant changes to connected gateways.

A change is written to the ``grant_changes`` outbox in the transaction that makes it. The process that
made it hands it to its hub right after commit (the fast path, a few milliseconds); every broker process
also relays recent outbox rows it has not seen yet (the path for changes made by another replica or by
`gatepass admin`). The hub drops duplicates by row id, and gateways resync on every reconnect.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.db import after_commit
from broker.models import Grant, GrantChange

# How far back the relay looks, and how long the hub remembers what it delivered: far more than any
# commit takes, so a row whose id was taken before a later one's commit is still found.
RELAY_WINDOW = dt.timedelta(seconds=60)
RELAY_INTERVAL_SECONDS = 0.25


@dataclass(frozen=True)
class GrantEvent:
    event_id: int
    grant_id: str
    status: str
    ends_at: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"grant_id": self.grant_id, "status": self.status, "ends_at": self.ends_at, "reason": self.reason}

    @classmethod
    def from_row(cls, row: GrantChange) -> GrantEvent:
        return cls(row.id, row.grant_id, row.status, row.ends_at.isoformat(), row.reason)


class EventPublisher(Protocol):
    def publish(self, event: GrantEvent) -> None: ...


def announce(session: Session, *, now: dt.datetime, events: EventPublisher, grant: Grant, status: str,
             reason: str) -> None:
    """Record a grant change for the gateways, and push it as soon as the transaction commits."""
    change = GrantChange(created_at=now, grant_id=grant.id, status=status, ends_at=grant.ends_at, reason=reason)
    session.add(change)
    session.flush()  # assigns change.id, the key the hubs de-duplicate on
    event = GrantEvent.from_row(change)
    after_commit(session, lambda: events.publish(event))


class EventHub:
    """Fan-out to every subscriber queue. ``publish`` is called from worker threads (sync endpoints run in
    a thread pool), so it hands the event to the event loop with ``call_soon_threadsafe``."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[asyncio.Queue[GrantEvent]] = set()
        self._delivered: dict[int, float] = {}
        self._lock = threading.Lock()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> asyncio.Queue[GrantEvent]:
        queue: asyncio.Queue[GrantEvent] = asyncio.Queue(maxsize=10_000)
        with self._lock:
            self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[GrantEvent]) -> None:
        with self._lock:
            self._subscribers.discard(queue)

    def publish(self, event: GrantEvent) -> None:
        loop = self._loop
        now = time.monotonic()
        with self._lock:
            if event.event_id in self._delivered:
                return
            self._delivered[event.event_id] = now
            if len(self._delivered) > 1000:
                horizon = now - 2 * RELAY_WINDOW.total_seconds()
                self._delivered = {k: t for k, t in self._delivered.items() if t > horizon}
            queues = list(self._subscribers)
        if loop is None or loop.is_closed():
            return  # no gateway can be connected without a running loop; they resync on connect
        for queue in queues:
            loop.call_soon_threadsafe(_offer, queue, event)


def _offer(queue: asyncio.Queue[GrantEvent], event: GrantEvent) -> None:
    # A gateway that stopped reading loses events, not the broker its memory; it resyncs on reconnect.
    if not queue.full():
        queue.put_nowait(event)


def recent_changes(session: Session, *, now: dt.datetime) -> list[GrantEvent]:
    rows = session.scalars(select(GrantChange).where(GrantChange.created_at >= now - RELAY_WINDOW)
                           .order_by(GrantChange.id)).all()
    return [GrantEvent.from_row(row) for row in rows]


class NullPublisher:
    """For `gatepass admin` outside the server: the running brokers relay the outbox rows themselves."""

    def publish(self, event: GrantEvent) -> None:  # noqa: ARG002 (the protocol's signature)
        return None
