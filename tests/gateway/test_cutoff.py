"""Access ends on time: at ends_at, on revocation or lockdown, when the end moves, without the broker."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gateway import Gateway
from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import Clock, GrantFactory, sshd_credential
from tests.gateway.fake_broker import FakeBroker
from tests.gateway.waiting import eventually

pytestmark = pytest.mark.anyio


async def _long_command(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHClientProcess[str]:
    process = await conn.create_process("echo started; sleep 30")
    assert await asyncio.wait_for(process.stdout.readline(), 5) == "started\n"
    return process


async def _ended(fake_broker: FakeBroker, count: int = 1, timeout: float = 5) -> list[dict[str, Any]]:
    """The session ends the broker heard of, once there are ``count`` (a cut command's end waits for its stop)."""
    await fake_broker.until(lambda: len(fake_broker.ended) >= count, timeout=timeout, what=f"{count} session end(s)")
    return list(fake_broker.ended.values())


async def _wait_cut(process: asyncssh.SSHClientProcess[str], limit: float = 3.0) -> tuple[float, str, int | None]:
    """Seconds until the gateway ended the process, what it wrote to stderr, the exit status."""
    start = time.monotonic()
    result = await asyncio.wait_for(process.wait(), limit)
    return time.monotonic() - start, str(result.stderr), result.exit_status


@pytest.mark.parametrize(
    ("reason", "says", "recorded"),
    [
        ("revoked", "access to hmi-01 ended: the grant was revoked by the plant", "revoked"),
        ("lockdown", "access to hmi-01 ended: the plant was locked down", "lockdown"),
        ("identity_disabled", "access to hmi-01 ended: your identity was disabled", "revoked"),
    ],
)
async def test_revocation_event_cuts_within_a_second(
    grant_for: GrantFactory,
    sshd_target: OpenSSHServer,
    fake_broker: FakeBroker,
    reason: str,
    says: str,
    recorded: str,
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    conn = await vendor.connect()
    process = await _long_command(conn)
    fake_broker.revoke(vendor.grant.grant_id, reason)
    elapsed, stderr, status = await _wait_cut(process)
    assert elapsed < 1.0
    assert says in stderr
    assert status == 255
    await asyncio.wait_for(conn.wait_closed(), 1)
    (end,) = await _ended(fake_broker)
    assert end["reason"] == recorded
    # The command got TERM behind the cut, and the target confirmed it ended (issue 15).
    assert end["stop"]["signals"] == ["TERM"]
    assert end["stop"]["exit"] == "signal TERM"


async def test_grant_end_cuts_on_the_gateways_own_timer(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(sshd_target), seconds=1.0)
    conn = await vendor.connect()
    process = await _long_command(conn)
    _, stderr, status = await _wait_cut(process)
    late = (datetime.now(UTC) - vendor.grant.ends_at).total_seconds()
    assert 0 <= late < 0.5
    assert f"access to hmi-01 ended: the grant expired at {vendor.grant.ends_at:%H:%M} UTC" in stderr
    assert status == 255
    assert [end["reason"] for end in await _ended(fake_broker)] == ["expired"]


async def test_connection_without_sessions_is_cut_too(grant_for: GrantFactory, sshd_target: OpenSSHServer) -> None:
    # Like `ssh -N`: no session channel, so the cut must come from the connection's own timer.
    vendor = grant_for(sshd_credential(sshd_target), seconds=0.8)
    conn = await vendor.connect()
    await asyncio.wait_for(conn.wait_closed(), 2)
    assert datetime.now(UTC) >= vendor.grant.ends_at


async def test_expiry_holds_while_the_broker_is_down(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(sshd_target), seconds=1.0)
    conn = await vendor.connect()
    process = await _long_command(conn)
    fake_broker.down = True
    fake_broker.drop_streams()
    _elapsed, stderr, _ = await _wait_cut(process)
    assert "the grant expired at" in stderr


async def test_moved_end_reschedules_the_cut(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(sshd_target), seconds=600)
    conn = await vendor.connect()
    process = await _long_command(conn)
    new_end = datetime.now(UTC) + timedelta(seconds=0.5)
    fake_broker.move_end(vendor.grant.grant_id, new_end)
    line = await asyncio.wait_for(process.stderr.readline(), 1)
    assert f"now ends at {new_end:%H:%M} UTC" in line
    _, stderr, _ = await _wait_cut(process)
    assert "the grant expired at" in stderr
    assert datetime.now(UTC) >= new_end


async def test_warning_before_the_end(grant_for: GrantFactory, sshd_target: OpenSSHServer) -> None:
    vendor = grant_for(sshd_credential(sshd_target), seconds=60.4)  # the 1-minute warning is 0.4 s away
    conn = await vendor.connect()
    process = await _long_command(conn)
    line = await asyncio.wait_for(process.stderr.readline(), 2)
    assert f"gatepass: access to hmi-01 ends in 1 minute, at {vendor.grant.ends_at:%H:%M} UTC" in line
    conn.close()


async def test_revocation_missed_while_disconnected_is_caught_by_resync(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, gateway: Gateway
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    conn = await vendor.connect()
    process = await _long_command(conn)
    fake_broker.down = True
    fake_broker.drop_streams()
    await eventually(lambda: not gateway.events_connected.is_set(), what="the gateway to lose its event stream")
    fake_broker.grants[vendor.grant.grant_id].status = "revoked"  # no event: the stream is down
    fake_broker.down = False
    _, stderr, _ = await _wait_cut(process, limit=5)
    assert "revoked by the plant" in stderr
    assert [vendor.grant.grant_id] in fake_broker.status_calls


async def test_fixed_clock_moved_past_the_end(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, gateway: Gateway, clock: Clock
) -> None:
    clock.fixed = datetime.now(UTC)
    vendor = grant_for(sshd_credential(sshd_target), seconds=600)
    conn = await vendor.connect()
    process = await _long_command(conn)
    clock.fixed = vendor.grant.ends_at + timedelta(seconds=1)
    gateway.monitor.check()
    elapsed, stderr, _ = await _wait_cut(process)
    assert elapsed < 0.5
    assert "the grant expired at" in stderr


async def test_new_session_is_refused_while_the_broker_cannot_record_it(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    """Fail closed for the audit trail: a session the broker cannot record does not run; open ones go on."""
    vendor = grant_for(sshd_credential(sshd_target), seconds=600)
    conn = await vendor.connect()
    running = await _long_command(conn)
    fake_broker.down = True
    marker = tmp_path / "should-not-exist"
    refused = await asyncio.wait_for(conn.run(f"touch {marker}"), 5)
    assert refused.exit_status != 0
    assert not marker.exists()
    assert "cannot be recorded right now" in str(refused.stderr)
    assert running.exit_status is None
    fake_broker.down = False
    conn.close()


async def test_a_cut_confirms_the_command_stopped_on_term_even_when_the_client_stopped_reading(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    """The client reads nothing more (its window is full), so the gateway stops reading the target too. At a cut
    the target's output is dropped anyway, so the gateway reads it again: the command's exit on the first TERM comes
    through, instead of the stop waiting out the site's grace and sending KILL to a command that had ended."""
    vendor = grant_for(sshd_credential(sshd_target))
    conn = await vendor.connect()
    process = await conn.create_process("echo started; exec yes")
    assert await asyncio.wait_for(process.stdout.readline(), 5) == "started\n"
    await asyncio.sleep(1.0)  # never read again: `yes` fills the client's window, and the gateway holds the target
    fake_broker.revoke(vendor.grant.grant_id)
    cut = time.monotonic()
    (end,) = await _ended(fake_broker, timeout=10)
    elapsed = time.monotonic() - cut
    assert end["reason"] == "revoked"
    assert end["stop"]["signals"] == ["TERM"]
    assert end["stop"]["exit"] == "signal TERM"
    assert elapsed < 1.5, f"the stop was confirmed {elapsed:.2f} s after the cut"
    conn.close()


async def test_a_retired_gateway_cuts_what_it_carries_and_lets_nobody_in(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    """Retired (`gatepass admin gateway retire`): the broker ended the gateway's sessions in its trail and now
    answers its credential 401 gateway_retired. The gateway learns it when its event stream reconnects, and cuts
    them for real."""
    vendor = grant_for(sshd_credential(sshd_target))
    conn = await vendor.connect()
    process = await _long_command(conn)
    fake_broker.retired = True
    fake_broker.drop_streams()  # the broker ends held streams at their next keepalive
    _, stderr, status = await _wait_cut(process, limit=5.0)
    assert "access to hmi-01 ended: the plant retired this gateway" in stderr
    assert status == 255
    await asyncio.wait_for(conn.wait_closed(), 1)
    async with await vendor.connect() as again:  # and nothing runs through it any more
        result = await again.run("echo in", check=False)
    assert (result.exit_status, result.stdout) == (1, "")
    assert "access to hmi-01 refused: gateway gw-test was retired" in str(result.stderr)


async def test_a_401_that_does_not_say_retired_is_waited_out_and_cuts_nothing_until_a_retirement(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    """A 401 the gateway cannot attribute to a retirement (a proxy's challenge, a broker on another database) does
    not cut a plant's sessions: they keep their own end times."""
    vendor = grant_for(sshd_credential(sshd_target))
    conn = await vendor.connect()
    process = await _long_command(conn)
    fake_broker.token = "gpg_another-gateway-token"
    fake_broker.drop_streams()
    with pytest.raises(TimeoutError):
        await _wait_cut(process, limit=2.0)
    # A retirement after it still cuts (the first 401 cut nothing, so it is no reason to skip the cut).
    fake_broker.retired = True
    _, stderr, _ = await _wait_cut(process, limit=10.0)
    assert "the plant retired this gateway" in stderr
    conn.close()
