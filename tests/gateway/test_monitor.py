"""GrantMonitor on a clock the test moves: cuts, warnings, moved ends, revocations."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from gateway.models import GrantState
from gateway.monitor import GrantMonitor, cut_message
from tests.gateway.waiting import eventually

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
END = START + timedelta(hours=1)


@dataclass(eq=False)
class Recorder:
    warnings: list[str] = field(default_factory=list)
    cuts: list[tuple[str, str, str | None]] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def cut(self, reason: str, message: str, detail: str | None = None) -> None:
        self.cuts.append((reason, message, detail))


@dataclass
class MovableClock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now


def _monitor(clock: MovableClock) -> GrantMonitor:
    return GrantMonitor(clock=clock, warn_before=(timedelta(minutes=5), timedelta(minutes=1)))


async def test_cut_at_end_and_warnings_before_it() -> None:
    clock = MovableClock()
    monitor = _monitor(clock)
    conn = Recorder()
    monitor.watch("grt-1", asset="hmi-01", ends_at=END, connection=conn)
    clock.now = END - timedelta(minutes=5)
    monitor.check()
    clock.now = END - timedelta(seconds=60)
    monitor.check()
    assert conn.warnings == [
        "gatepass: access to hmi-01 ends in 5 minutes, at 10:00 UTC",
        "gatepass: access to hmi-01 ends in 1 minute, at 10:00 UTC",
    ]
    assert conn.cuts == []
    clock.now = END
    monitor.check()
    assert conn.cuts == [("expired", "gatepass: access to hmi-01 ended: the grant expired at 10:00 UTC", None)]
    assert monitor.live_grant_ids() == []


async def test_watch_after_the_end_cuts_at_once_and_skips_passed_warnings() -> None:
    clock = MovableClock(END - timedelta(minutes=3))
    monitor = _monitor(clock)
    late = Recorder()
    monitor.watch("grt-1", asset="hmi-01", ends_at=END, connection=late)
    clock.now = END - timedelta(seconds=30)
    monitor.check()
    assert late.warnings == ["gatepass: access to hmi-01 ends in 30 seconds, at 10:00 UTC"]
    expired = Recorder()
    monitor.watch("grt-2", asset="plc-01", ends_at=START, connection=expired)
    assert [cut[0] for cut in expired.cuts] == ["expired"]


async def test_revocation_cuts_every_connection_of_the_grant_only() -> None:
    monitor = _monitor(MovableClock())
    first, second, other = Recorder(), Recorder(), Recorder()
    monitor.watch("grt-1", asset="hmi-01", ends_at=END, connection=first)
    monitor.watch("grt-1", asset="hmi-01", ends_at=END, connection=second)
    monitor.watch("grt-2", asset="hmi-01", ends_at=END, connection=other)
    monitor.apply(GrantState("grt-1", "revoked", END, "lockdown"))
    assert (
        first.cuts == second.cuts == [("lockdown", "gatepass: access to hmi-01 ended: the plant was locked down", None)]
    )
    assert other.cuts == []
    monitor.apply(GrantState("grt-2", "revoked", END, "identity_disabled"))
    assert other.cuts == [
        ("revoked", "gatepass: access to hmi-01 ended: your identity was disabled", "identity_disabled")
    ]


async def test_moved_end_is_announced_and_rescheduled() -> None:
    clock = MovableClock()
    monitor = _monitor(clock)
    conn = Recorder()
    monitor.watch("grt-1", asset="hmi-01", ends_at=END, connection=conn)
    earlier = START + timedelta(minutes=10)
    monitor.apply(GrantState("grt-1", "active", earlier))
    assert conn.warnings == ["gatepass: access to hmi-01 now ends at 09:10 UTC"]
    assert monitor.ends_at("grt-1") == earlier
    clock.now = earlier
    monitor.check()
    assert conn.cuts[0][1] == "gatepass: access to hmi-01 ended: the grant expired at 09:10 UTC"


async def test_forgotten_connections_are_not_cut() -> None:
    monitor = _monitor(MovableClock())
    conn = Recorder()
    monitor.watch("grt-1", asset="hmi-01", ends_at=END, connection=conn)
    monitor.forget("grt-1", conn)
    monitor.apply(GrantState("grt-1", "revoked", END, "revoked"))
    assert conn.cuts == []
    assert monitor.live_grant_ids() == []


async def test_real_timer_fires_from_the_loop() -> None:
    monitor = GrantMonitor(clock=lambda: datetime.now(UTC))
    conn = Recorder()
    monitor.watch("grt-1", asset="hmi-01", ends_at=datetime.now(UTC) + timedelta(milliseconds=50), connection=conn)
    await eventually(lambda: conn.cuts, timeout=2, what="the monitor's own timer to cut at the end")
    assert [cut[0] for cut in conn.cuts] == ["expired"]


def test_cut_messages() -> None:
    assert (
        cut_message("hmi-01", "revoked", END) == "gatepass: access to hmi-01 ended: the grant was revoked by the plant"
    )
    assert cut_message("hmi-01", "something-new", END).endswith("the grant is no longer valid")
