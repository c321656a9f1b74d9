"""Push of grant changes to connected gateways: an in-process hub fed after commit, read by SSE streams."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class GrantEvent:
    grant_id: str
    status: str
    ends_at: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventPublisher(Protocol):
    def publish(self, event: GrantEvent) -> None: ...


class EventHub:
    """Fan-out to every subscriber queue. ``publish`` is called from worker threads (sync endpoints run in
    a thread pool), so it hands the event to the event loop with ``call_soon_threadsafe``."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[asyncio.Queue[GrantEvent]] = set()
        self._lock = threading.Lock()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self) -> asyncio.Queue[GrantEvent]:
        queue: asyncio.Queue[GrantEvent] = asyncio.Queue(maxsize=10_000)
        with self._lock:
            self._subscribers.add(queue)
        return queue

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def unsubscribe(self, queue: asyncio.Queue[GrantEvent]) -> None:
        with self._lock:
            self._subscribers.discard(queue)

    def publish(self, event: GrantEvent) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # no gateway can be connected without a running loop; they resync on connect
        with self._lock:
            queues = list(self._subscribers)
        for queue in queues:
            loop.call_soon_threadsafe(_offer, queue, event)


def _offer(queue: asyncio.Queue[GrantEvent], event: GrantEvent) -> None:
    # A gateway that stopped reading loses events, not the broker its memory; it resyncs on reconnect.
    if not queue.full():
        queue.put_nowait(event)


class NullPublisher:
    """For command-line operations run outside the server: gateways resync when they next connect."""

    def publish(self, event: GrantEvent) -> None:  # noqa: ARG002 (the protocol's signature)
        return None
