"""State one gateway shares with all its connections, and a home for background report tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.broker_client import BrokerClient
from gateway.models import RecordingInfo
from gateway.monitor import GrantMonitor
from gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from gateway.connection import GatewayConnection

logger = logging.getLogger("gatepass.gateway")


@dataclass(eq=False)
class GatewayContext:
    settings: GatewaySettings
    broker: BrokerClient
    monitor: GrantMonitor
    user_ca: str | None = None
    connections: set[GatewayConnection] = field(default_factory=set)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

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


class SessionOwner(Protocol):
    """The connection a session or tunnel belongs to."""

    ctx: GatewayContext

    def cut_reason(self) -> tuple[str, str | None] | None: ...


def report_end(
    owner: SessionOwner, session_id: str | None, error: str | None, bytes_in: int, bytes_out: int,
    recording: RecordingInfo | None = None,
) -> None:
    """Tell the broker a session ended, in the background: why (the cut, an error, or the client), bytes,
    and the recording's hash."""
    if session_id is None:  # the broker never recorded its start
        return
    reason, detail = owner.cut_reason() or (("error", error) if error else ("client_closed", None))
    report = owner.ctx.broker.session_end(
        session_id, reason=reason, bytes_in=bytes_in, bytes_out=bytes_out, detail=detail, recording=recording
    )
    owner.ctx.spawn(report, f"reporting the end of session {session_id}")
