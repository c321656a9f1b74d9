"""Cut every connection of a grant at its end, on revocation, or when its end moves; warn before.

One timer per grant on the event loop, aimed at the grant's next warning or its end, computed from
the injected clock. When a timer fires the clock is read again, so a clock that differs from the
loop's monotonic time (a fixed clock in tests, a stepped wall clock) can delay a cut by at most one
re-check, never skip it; ``check()`` re-evaluates everything at once after the clock moved.
Nothing here waits for the broker: access ends at ``ends_at`` even when the broker is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from gateway.models import GrantState
from gateway.settings import Clock

logger = logging.getLogger("gatepass.gateway.monitor")


class Cuttable(Protocol):
    """A client connection the monitor can warn and cut (gateway.connection.GatewayConnection)."""

    def warn(self, message: str) -> None: ...

    def cut(self, reason: str, message: str, detail: str | None = None) -> None: ...


def clock_time(moment: datetime) -> str:
    """``10:00 UTC``: how the gateway names a moment in a terminal line."""
    return moment.strftime("%H:%M UTC")


def cut_message(asset: str, reason: str, ends_at: datetime) -> str:
    """The one line a user sees when access ends."""
    why = {
        "expired": f"the grant expired at {clock_time(ends_at)}",
        "revoked": "the grant was revoked by the plant",
        "lockdown": "the plant was locked down",
        "identity_disabled": "your identity was disabled",
        "identity_suspended": "your identity was suspended",
        "identity_retired": "your identity was retired",
        "identity_expired": "your identity reached its end date",
        "owner_gone": "your identity's owner left and nobody took it over",
        "playbook": "the plant ran a containment playbook",
        "read_only_mode": "the plant switched the site to read-only",
        "delegation_ended": "the grant it was delegated from ended",
        "gateway_lost": "the gateway is shutting down",
        "gateway_retired": "the plant retired this gateway",
    }.get(reason, "the grant is no longer valid")
    return f"gatepass: access to {asset} ended: {why}"


def _warning(asset: str, remaining: timedelta, ends_at: datetime) -> str:
    seconds = max(1, math.ceil(remaining.total_seconds()))
    amount = f"{math.ceil(seconds / 60)} minute" if seconds >= 60 else f"{seconds} second"
    plural = "" if amount.startswith("1 ") else "s"
    return f"gatepass: access to {asset} ends in {amount}{plural}, at {clock_time(ends_at)}"


# Broker reasons (docs/API.md, grant events) -> session end reasons the broker records.
_END_REASON = {"revoked": "revoked", "lockdown": "lockdown", "identity_disabled": "revoked",
               "identity_suspended": "revoked", "identity_retired": "revoked", "identity_expired": "revoked",
               "owner_gone": "revoked", "delegation_ended": "revoked", "playbook": "revoked",
               "read_only_mode": "revoked", "gateway_retired": "gateway_lost"}


@dataclass(eq=False)
class _Watch:
    asset: str
    ends_at: datetime
    connections: set[Cuttable] = field(default_factory=set)
    pending_warnings: list[datetime] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class GrantMonitor:
    """Timers per grant; connections join with ``watch`` and leave with ``forget``."""

    def __init__(self, *, clock: Clock, warn_before: tuple[timedelta, ...] = ()) -> None:
        self._clock = clock
        self._warn_before = tuple(sorted(warn_before, reverse=True))
        self._watches: dict[str, _Watch] = {}

    def live_grant_ids(self) -> list[str]:
        return list(self._watches)

    def ends_at(self, grant_id: str) -> datetime | None:
        watch = self._watches.get(grant_id)
        return watch.ends_at if watch else None

    def watch(self, grant_id: str, *, asset: str, ends_at: datetime, connection: Cuttable) -> None:
        """Start cutting ``connection`` at ``ends_at`` (cuts at once if that is already past)."""
        watch = self._watches.get(grant_id)
        if watch is None:
            watch = self._watches[grant_id] = _Watch(asset=asset, ends_at=ends_at)
            self._plan(watch)
        elif ends_at != watch.ends_at:
            # A fresh authorization is newer news than what the grant's other connections were told.
            watch.ends_at = ends_at
            self._plan(watch)
        watch.connections.add(connection)
        self._tick(grant_id)

    def forget(self, grant_id: str, connection: Cuttable) -> None:
        watch = self._watches.get(grant_id)
        if watch is None:
            return
        watch.connections.discard(connection)
        if not watch.connections:
            self._drop(grant_id)

    def apply(self, state: GrantState) -> None:
        """A grant event or status from the broker: cut on revoke/expiry, reschedule on a moved end."""
        watch = self._watches.get(state.grant_id)
        if watch is None:
            return
        if state.status in ("active", "scheduled"):
            if state.ends_at != watch.ends_at:
                logger.info("grant %s now ends at %s", state.grant_id, state.ends_at.isoformat())
                watch.ends_at = state.ends_at
                self._plan(watch)
                if state.ends_at > self._clock():
                    for connection in list(watch.connections):
                        connection.warn(f"gatepass: access to {watch.asset} now ends at {clock_time(state.ends_at)}")
                self._tick(state.grant_id)
        elif state.status == "expired":
            self.cut_grant(state.grant_id, "expired")
        else:
            self.cut_grant(state.grant_id, state.reason or "revoked")

    def cut_grant(self, grant_id: str, reason: str, *, detail: str | None = None) -> None:
        """Cut every connection of the grant now; ``reason`` as in grant events or ``expired``."""
        watch = self._watches.get(grant_id)
        if watch is None:
            return
        self._drop(grant_id)
        message = cut_message(watch.asset, reason, watch.ends_at)
        end_reason = _END_REASON.get(reason, reason if reason in ("expired", "gateway_lost") else "revoked")
        if detail is None and end_reason != reason:
            detail = reason
        logger.info("cutting %d connection(s) of grant %s: %s", len(watch.connections), grant_id, reason)
        for connection in list(watch.connections):
            connection.cut(end_reason, message, detail)

    def cut_all(self, reason: str, *, detail: str | None = None) -> int:
        """Cut every connection of every grant now (``cut_grant`` for each); how many grants had any."""
        grant_ids = list(self._watches)
        for grant_id in grant_ids:
            self.cut_grant(grant_id, reason, detail=detail)
        return len(grant_ids)

    def check(self) -> None:
        """Re-evaluate every grant against the clock now (after the clock moved, or a resync)."""
        for grant_id in list(self._watches):
            self._tick(grant_id)

    def close(self) -> None:
        for grant_id in list(self._watches):
            self._drop(grant_id)

    def _drop(self, grant_id: str) -> None:
        watch = self._watches.pop(grant_id, None)
        if watch is not None and watch.timer is not None:
            watch.timer.cancel()

    def _plan(self, watch: _Watch) -> None:
        # Warnings whose moment has already passed are skipped, not sent late in a burst.
        now = self._clock()
        moments = (watch.ends_at - ahead for ahead in self._warn_before)
        watch.pending_warnings = [moment for moment in moments if moment > now]

    def _tick(self, grant_id: str) -> None:
        watch = self._watches.get(grant_id)
        if watch is None:
            return
        if watch.timer is not None:
            watch.timer.cancel()
            watch.timer = None
        now = self._clock()
        if now >= watch.ends_at:
            self.cut_grant(grant_id, "expired")
            return
        due = [moment for moment in watch.pending_warnings if moment <= now]
        if due:
            watch.pending_warnings = [moment for moment in watch.pending_warnings if moment > now]
            message = _warning(watch.asset, watch.ends_at - now, watch.ends_at)
            for connection in list(watch.connections):
                connection.warn(message)
        next_moment = min([watch.ends_at, *watch.pending_warnings])
        delay = max(0.0, (next_moment - now).total_seconds())
        watch.timer = asyncio.get_running_loop().call_later(delay, self._tick, grant_id)
