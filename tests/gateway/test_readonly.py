"""Read-only Modbus/TCP grants through the gateway, against a real pymodbus server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncssh
import pytest
from pymodbus.client import AsyncModbusTcpClient

from tests.gateway.conftest import GrantFactory
from tests.gateway.fake_broker import FakeBroker
from tests.gateway.modbus_plc import REGISTERS, UNIT, ModbusPlc

pytestmark = pytest.mark.anyio


@pytest.fixture
def plc() -> Iterator[ModbusPlc]:
    server = ModbusPlc().start()
    try:
        yield server
    finally:
        server.stop()


async def _client(conn: asyncssh.SSHClientConnection, asset: str) -> tuple[AsyncModbusTcpClient, asyncssh.SSHListener]:
    listener = await conn.forward_local_port("127.0.0.1", 0, asset, 502)
    client = AsyncModbusTcpClient("127.0.0.1", port=listener.get_port(), timeout=5, retries=0)
    assert await client.connect()
    return client, listener


async def test_read_only_grant_reads_and_refuses_writes(
    grant_for: GrantFactory, fake_broker: FakeBroker, plc: ModbusPlc
) -> None:
    vendor = grant_for(None, ssh=False, ports=[502], read_only=True, asset_host=plc.host)
    async with await vendor.connect() as conn:
        client, listener = await _client(conn, "hmi-01")
        read = await client.read_holding_registers(0, count=len(REGISTERS), device_id=UNIT)
        assert read.registers == REGISTERS
        for attempt in (
            client.write_register(2, 42, device_id=UNIT),
            client.write_registers(0, [1, 2, 3], device_id=UNIT),
            client.write_coil(0, True, device_id=UNIT),
        ):
            refused = await attempt
            assert refused.isError()
            assert refused.exception_code == 1  # ILLEGAL FUNCTION
        again = await client.read_holding_registers(0, count=3, device_id=UNIT)  # the stream is still in step
        assert again.registers == REGISTERS[:3]
        # The refusals are reported in the background while the tunnel is still up.
        await fake_broker.until(lambda: len(fake_broker.session_events) >= 3, what="the three refused writes")
        client.close()
        listener.close()
    assert await asyncio.to_thread(plc.registers) == REGISTERS
    await fake_broker.until(lambda: fake_broker.ended, what="the tunnel's end")
    refusals = [e for e in fake_broker.session_events if e[1]["kind"] == "modbus_write_refused"]
    codes = [event["detail"]["function_code"] for _, event in refusals]
    assert sorted(codes) == [5, 6, 16]  # reported in the background, in any order
    session_id, event = next(e for e in refusals if e[1]["detail"]["function_code"] == 6)
    # At the end, what the connection asked (refused writes included), for the watcher's baselines.
    await fake_broker.until(lambda: any(e["kind"] == "modbus_activity" for _, e in fake_broker.session_events),
                            what="the connection's Modbus activity")
    [(_, activity)] = [e for e in fake_broker.session_events if e[1]["kind"] == "modbus_activity"]
    assert activity["detail"] == {"requests": 5, "functions": "3:2,5:1,6:1,16:1",
                                  "registers": f"3:0-{len(REGISTERS) - 1};5:0;6:2;16:0-2"}
    assert event["kind"] == "modbus_write_refused"
    assert event["detail"]["reason"] == "Write Single Register is not a read and the grant is read-only"
    assert fake_broker.ended[session_id]["reason"] == "client_closed"


async def test_full_grant_writes(grant_for: GrantFactory, fake_broker: FakeBroker, plc: ModbusPlc) -> None:
    vendor = grant_for(None, ssh=False, ports=[502], asset_host=plc.host)
    async with await vendor.connect() as conn:
        client, listener = await _client(conn, "hmi-01")
        written = await client.write_register(2, 42, device_id=UNIT)
        assert not written.isError()
        client.close()
        listener.close()
    assert (await asyncio.to_thread(plc.registers))[2] == 42
    # Nothing refused on a full grant; what the connection asked is reported once, at its end.
    await fake_broker.until(lambda: fake_broker.session_events, what="the connection's Modbus activity")
    [(_, activity)] = fake_broker.session_events
    assert activity == {"kind": "modbus_activity", "detail": {"requests": 1, "functions": "6:1", "registers": "6:2"}}


async def test_read_only_grant_on_a_port_without_a_filter_is_refused(grant_for: GrantFactory, plc_port: int) -> None:
    vendor = grant_for(None, ssh=False, ports=[plc_port], read_only=True)
    async with await vendor.connect() as conn:
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await conn.open_connection("hmi-01", plc_port)
    assert refused.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    assert refused.value.reason == (
        f"read-only access is only available for Modbus/TCP (port 502), not port {plc_port}"
    )


async def test_malformed_framing_closes_the_connection(
    grant_for: GrantFactory, fake_broker: FakeBroker, plc: ModbusPlc
) -> None:
    vendor = grant_for(None, ssh=False, ports=[502], read_only=True, asset_host=plc.host)
    async with await vendor.connect() as conn:
        reader, writer = await conn.open_connection("hmi-01", 502)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 2) == b""
        await fake_broker.until(lambda: len(fake_broker.ended) == 1, what="the tunnel's end")
    ((_, ended),) = fake_broker.ended.items()
    assert ended["reason"] == "error"
    assert "protocol id" in ended["detail"]
    assert "never relayed unfiltered" in ended["detail"]


async def test_gateway_answer_waits_for_the_end_of_the_assets_frame(
    grant_for: GrantFactory, fake_broker: FakeBroker
) -> None:
    """A refusal made while the asset's answer is half sent goes out after that answer, never inside it."""
    host = ModbusPlc().host  # a free loopback address with port 502 (no pymodbus server on it)
    read = bytes([0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1])
    answer = bytes([0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 42])
    write = bytes([0, 2, 0, 0, 0, 6, 1, 6, 0, 0, 0, 7])
    half_sent = asyncio.Event()

    async def slow_plc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(len(read)) == read
        writer.write(answer[:4])
        await writer.drain()
        half_sent.set()
        # Pacing of this fake PLC, not a guess: the rest of its answer comes while the refused write is in flight.
        await asyncio.sleep(0.3)
        writer.write(answer[4:])
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(slow_plc, host, 502)
    try:
        vendor = grant_for(None, ssh=False, ports=[502], read_only=True, asset_host=host)
        async with await vendor.connect() as conn:
            reader, writer = await conn.open_connection("hmi-01", 502)
            writer.write(read)
            await asyncio.wait_for(half_sent.wait(), 5)
            # The half answer has come through the gateway: it is in the middle of the asset's frame now.
            received = await asyncio.wait_for(reader.readexactly(4), 5)
            writer.write(write)
            received += await asyncio.wait_for(reader.readexactly(len(answer) + 9 - 4), 5)
            writer.close()
    finally:
        server.close()
    assert received == answer + bytes([0, 2, 0, 0, 0, 3, 1, 0x86, 0x01])
