"""TCP forwarding to granted ports of the asset only, and cut with the grant."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import asyncssh
import pytest

from gateway.connection import MAX_AUDITED_REFUSALS
from gateway.models import Authorization
from gateway.tunnels import check_forward
from tests.gateway.conftest import GrantFactory
from tests.gateway.fake_broker import FakeBroker

pytestmark = pytest.mark.anyio


async def test_granted_port_is_forwarded_to_the_inventory_address(
    grant_for: GrantFactory, fake_broker: FakeBroker, plc_port: int
) -> None:
    vendor = grant_for(None, ssh=False, ports=[plc_port])
    async with await vendor.connect() as conn:
        reader, writer = await conn.open_connection("hmi-01", plc_port)
        payload = bytes(range(256)) * 4096  # 1 MiB, more than one channel window
        writer.write(payload)
        received = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
        assert received == payload
        writer.close()
    await fake_broker.until(lambda: len(fake_broker.ended) == 1, what="the tunnel's end")
    ((session_id, started),) = fake_broker.sessions.items()
    assert (started["kind"], started["port"]) == ("tcp", plc_port)
    assert fake_broker.ended[session_id]["bytes_in"] == len(payload)
    assert fake_broker.ended[session_id]["bytes_out"] == len(payload)


async def test_a_client_that_vanishes_closed_its_own_tunnel(
    grant_for: GrantFactory, fake_broker: FakeBroker, plc_port: int
) -> None:
    """A dropped SSH connection (a killed `gatepass tunnel`, a closed laptop) is the client's doing, not an
    error of the gateway: reason client_closed, with how the connection went as the detail."""
    vendor = grant_for(None, ssh=False, ports=[plc_port])
    conn = await vendor.connect()
    reader, writer = await conn.open_connection("hmi-01", plc_port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    conn.abort()  # no channel close, no disconnect message: the TCP connection just goes
    await fake_broker.until(lambda: fake_broker.ended, what="the tunnel's end")
    ((_, ended),) = fake_broker.ended.items()
    assert ended["reason"] == "client_closed"
    assert ended["detail"]


@pytest.mark.parametrize(
    ("host", "port_offset", "says"),
    [
        ("hmi-01", 1, "is not part of this grant (granted: "),
        ("10.9.9.9", 0, "this grant reaches hmi-01 only, not 10.9.9.9"),
    ],
)
async def test_other_ports_and_hosts_are_refused(
    grant_for: GrantFactory, plc_port: int, host: str, port_offset: int, says: str
) -> None:
    vendor = grant_for(None, ssh=False, ports=[plc_port])
    async with await vendor.connect() as conn:
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await conn.open_connection(host, plc_port + port_offset)
    assert refused.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    assert says in refused.value.reason


async def test_a_forward_the_gateway_refuses_reaches_the_audit_trail(
    grant_for: GrantFactory, fake_broker: FakeBroker, plc_port: int
) -> None:
    vendor = grant_for(None, ssh=False, ports=[plc_port])
    async with await vendor.connect() as conn:
        for _ in range(MAX_AUDITED_REFUSALS + 5):  # a client looping on refusals floods nothing
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("hmi-01", plc_port + 1)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("10.9.9.9", plc_port)
        await fake_broker.until(lambda: len(fake_broker.refusals) >= MAX_AUDITED_REFUSALS,
                                what=f"{MAX_AUDITED_REFUSALS} refused forwards")
    (grant_id,) = fake_broker.grants
    assert len(fake_broker.refusals) == MAX_AUDITED_REFUSALS
    first = fake_broker.refusals[0]
    assert (first["grant_id"], first["kind"], first["host"], first["port"]) == (
        grant_id, "forward", "hmi-01", plc_port + 1)
    assert "is not part of this grant" in first["reason"]


async def test_tunnel_is_cut_with_the_grant(grant_for: GrantFactory, fake_broker: FakeBroker, plc_port: int) -> None:
    vendor = grant_for(None, ssh=False, ports=[plc_port])
    conn = await vendor.connect()
    reader, writer = await conn.open_connection("localhost", plc_port)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    fake_broker.revoke(vendor.grant.grant_id, "lockdown")
    assert await asyncio.wait_for(reader.read(), 1) == b""
    await asyncio.wait_for(conn.wait_closed(), 1)
    await fake_broker.until(lambda: len(fake_broker.ended) == 1, what="the tunnel's end")
    assert [end["reason"] for end in fake_broker.ended.values()] == ["lockdown"]


def test_check_forward_without_ports() -> None:
    auth = Authorization(
        grant_id="grt-1", identity="v", identity_kind="human", asset="hmi-01", site="plant-a",
        starts_at=datetime.now(UTC), ends_at=datetime.now(UTC), ssh=True, interactive=True, ports=(),
        target=None, asset_host="10.0.0.5",
    )  # fmt: skip
    with pytest.raises(asyncssh.ChannelOpenError, match="TCP forwarding is not part of this grant"):
        check_forward(auth, "hmi-01", 502)
    assert check_forward(replace(auth, ports=(502,)), "hmi-01", 502) == "10.0.0.5"


async def _open_at_once(conn: asyncssh.SSHClientConnection, port: int, count: int) -> list[object]:
    """``count`` forwarded connections requested together, each checked with an echo (or the refusal)."""

    async def one() -> bytes:
        reader, writer = await conn.open_connection("hmi-01", port)
        writer.write(b"p")
        try:
            return await asyncio.wait_for(reader.readexactly(1), 10)
        finally:
            writer.close()

    return await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)


async def test_connections_opened_at_once_are_each_recorded_in_a_few_broker_calls(
    grant_for: GrantFactory, fake_broker: FakeBroker, plc_port: int
) -> None:
    vendor = grant_for(None, ssh=False, ports=[plc_port])
    async with await vendor.connect() as conn:
        answers = await _open_at_once(conn, plc_port, 60)
    assert answers == [b"p"] * 60
    assert len(fake_broker.sessions) == 60
    assert all(body["port"] == plc_port for body in fake_broker.sessions.values())
    assert fake_broker.start_calls <= 10, "the starts waiting together were not sent together"
    await fake_broker.until(lambda: len(fake_broker.ended) == 60, what="every tunnel's end")


async def test_connections_opened_at_once_are_refused_when_the_broker_cannot_record_them(
    grant_for: GrantFactory, fake_broker: FakeBroker, plc_port: int
) -> None:
    vendor = grant_for(None, ssh=False, ports=[plc_port])
    async with await vendor.connect() as conn:
        assert await _open_at_once(conn, plc_port, 1) == [b"p"]  # authorized, and the broker records
        fake_broker.down = True  # the broker cannot record what comes next
        answers = await _open_at_once(conn, plc_port, 20)
    refusals = [answer for answer in answers if isinstance(answer, asyncssh.ChannelOpenError)]
    assert len(refusals) == 20, answers
    assert all("cannot be recorded" in refusal.reason for refusal in refusals)
    assert len(fake_broker.sessions) == 1


async def test_a_broker_without_the_batch_endpoint_records_each_start_alone(
    grant_for: GrantFactory, fake_broker: FakeBroker, plc_port: int
) -> None:
    fake_broker.batch_starts = False
    vendor = grant_for(None, ssh=False, ports=[plc_port])
    async with await vendor.connect() as conn:
        answers = await _open_at_once(conn, plc_port, 20)
    assert answers == [b"p"] * 20
    assert len(fake_broker.sessions) == 20
    assert fake_broker.start_calls == 20
