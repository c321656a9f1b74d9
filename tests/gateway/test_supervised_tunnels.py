"""A TCP tunnel at a site that requires supervision (issue 13): the vendor's channel opens, but the asset is not even
connected until a supervisor of the site watches; when the last one leaves (or the live link is lost) nothing passes
either way, and the connection is cut after the grace unless one comes back.

Whether a supervisor watches is set on the gateway's live registry as the broker's live link would
(``LiveRegistry.supervision``, ``stop_feeds``); the asset is a real TCP server that counts what reaches it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncssh
import pytest
from pymodbus.client import AsyncModbusTcpClient

from gateway.observers import LiveRegistry
from gateway.tunnels import MAX_HELD_BYTES, TunnelSession
from tests.gateway.conftest import GrantFactory, Vendor
from tests.gateway.fake_broker import FakeBroker
from tests.gateway.modbus_plc import REGISTERS, UNIT, ModbusPlc, free_loopback_address
from tests.gateway.waiting import eventually

pytestmark = pytest.mark.anyio

# How long a test watches for something that must not happen (a negative check: long next to a loopback round
# trip, short for the suite).
QUIET = 0.5


class Asset:
    """An echo server on loopback that keeps what reached it, and can speak first (a PLC pushing data)."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = bytearray()
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError):  # a cut aborts the gateway's side (a reset)
            while data := await reader.read(65536):
                self.received += data
                writer.write(data)
                await writer.drain()
        writer.close()

    def push(self, data: bytes) -> None:
        self.writers[-1].write(data)

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def asset() -> AsyncIterator[Asset]:
    server = Asset()
    await server.start()
    yield server
    await server.stop()


def supervised(grant_for: GrantFactory, asset: Asset, grace_ms: int = 60_000) -> Vendor:
    vendor = grant_for(None, ssh=False, ports=[asset.port])
    vendor.grant.supervision_required = True
    vendor.grant.supervision_grace_ms = grace_ms
    return vendor


def registry_of(vendor: Vendor) -> LiveRegistry:
    registry = vendor.gateway.ctx.live
    assert registry is not None
    return registry


async def tunnel_session(vendor: Vendor, fake_broker: FakeBroker) -> tuple[str, TunnelSession]:
    """The recorded session and the gateway's tunnel object of the one tunnel open."""
    (session_id,) = await fake_broker.until(lambda: list(fake_broker.sessions), what="the tunnel's session")
    (connection,) = vendor.gateway.ctx.connections
    (tunnel,) = await eventually(lambda: list(connection._tunnels), what="the tunnel on its connection")
    return session_id, tunnel


async def ended_of(fake_broker: FakeBroker, session_id: str) -> dict[str, Any]:
    await fake_broker.until(lambda: session_id in fake_broker.ended, what="the tunnel's end")
    return fake_broker.ended[session_id]


async def nothing_read(reader: asyncssh.SSHReader[bytes]) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), QUIET)


async def test_nothing_reaches_the_asset_before_a_supervisor_watches_and_everything_after(
        grant_for: GrantFactory, fake_broker: FakeBroker, asset: Asset) -> None:
    vendor = supervised(grant_for, asset)
    registry = registry_of(vendor)
    async with await vendor.connect() as conn:
        reader, writer = await conn.open_connection("hmi-01", asset.port)  # the vendor's channel opens
        session_id, _ = await tunnel_session(vendor, fake_broker)
        assert fake_broker.sessions[session_id]["kind"] == "tcp"
        writer.write(b"before anyone watched")
        await nothing_read(reader)
        assert asset.connections == 0  # not even connected
        assert asset.received == b""

        # A security reviewer's watch (supervised false) changes nothing; a supervisor's does.
        registry.supervision(session_id, False)
        await nothing_read(reader)
        assert asset.connections == 0
        registry.supervision(session_id, True)
        assert await asyncio.wait_for(reader.readexactly(21), 5) == b"before anyone watched"
        writer.write(b"after")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"after"
        assert (asset.connections, bytes(asset.received)) == (1, b"before anyone watchedafter")
        writer.close()
    ended = await ended_of(fake_broker, session_id)
    assert (ended["reason"], ended["bytes_in"], ended["bytes_out"]) == ("client_closed", 26, 26)


async def test_held_both_ways_when_the_last_supervisor_leaves_and_cut_after_the_grace(
        grant_for: GrantFactory, fake_broker: FakeBroker, asset: Asset) -> None:
    vendor = supervised(grant_for, asset, grace_ms=1500)
    registry = registry_of(vendor)
    conn = await vendor.connect()
    reader, writer = await conn.open_connection("hmi-01", asset.port)
    session_id, _ = await tunnel_session(vendor, fake_broker)
    registry.supervision(session_id, True)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"

    registry.supervision(session_id, False)  # the last supervisor left
    held = asyncio.get_running_loop().time()
    writer.write(b"while held")
    asset.push(b"plc speaks")
    await nothing_read(reader)  # not the echo, not what the PLC said
    assert bytes(asset.received) == b"ping"  # the vendor's bytes wait on their side
    assert await asyncio.wait_for(reader.read(), 10) == b""  # cut: the tunnel closes
    await asyncio.wait_for(conn.wait_closed(), 5)
    waited = asyncio.get_running_loop().time() - held
    assert 1.2 < waited < 6, f"cut {waited:.1f} s after the last supervisor left (grace 1.5 s)"
    assert bytes(asset.received) == b"ping"  # held bytes never went through
    ended = await ended_of(fake_broker, session_id)
    assert (ended["reason"], ended["detail"]) == ("revoked", "unsupervised")
    assert ended["bytes_in"] == 4


async def test_a_supervisor_back_within_the_grace_lets_the_held_bytes_through_in_order(
        grant_for: GrantFactory, fake_broker: FakeBroker, asset: Asset) -> None:
    vendor = supervised(grant_for, asset, grace_ms=60_000)
    registry = registry_of(vendor)
    async with await vendor.connect() as conn:
        reader, writer = await conn.open_connection("hmi-01", asset.port)
        session_id, tunnel = await tunnel_session(vendor, fake_broker)
        registry.supervision(session_id, True)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"

        registry.supervision(session_id, False)
        payload = bytes(range(256)) * (32 * 1024)  # 8 MiB: far more than any buffer on the way may keep
        writer.write(payload)
        asset.push(b"plc")
        await nothing_read(reader)
        assert bytes(asset.received) == b"ping"
        # Backpressure, not buffering: the gateway kept at most what arrived as reading stopped.
        assert tunnel._held_bytes <= MAX_HELD_BYTES

        registry.supervision(session_id, True)  # back within the grace
        echoed = await asyncio.wait_for(reader.readexactly(3 + len(payload)), 30)
        assert echoed == b"plc" + payload  # nothing lost, nothing reordered
        assert bytes(asset.received) == b"ping" + payload
        writer.close()
    ended = await ended_of(fake_broker, session_id)
    assert ended["reason"] == "client_closed"


async def test_a_lost_live_link_counts_as_no_supervisor(
        grant_for: GrantFactory, fake_broker: FakeBroker, asset: Asset) -> None:
    vendor = supervised(grant_for, asset, grace_ms=60_000)
    registry = registry_of(vendor)
    async with await vendor.connect() as conn:
        reader, writer = await conn.open_connection("hmi-01", asset.port)
        session_id, tunnel = await tunnel_session(vendor, fake_broker)
        registry.supervision(session_id, True)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"

        registry.stop_feeds()  # what follow_live does when the link to the broker breaks
        assert tunnel.hold is not None
        assert tunnel.hold.held
        writer.write(b"during the outage")
        await nothing_read(reader)
        assert bytes(asset.received) == b"ping"

        registry.supervision(session_id, True)  # the link is back and the broker says a supervisor watches
        assert await asyncio.wait_for(reader.readexactly(17), 5) == b"during the outage"
        writer.close()


async def test_a_supervisor_who_came_and_left_before_the_release_ran_does_not_release_it(
        grant_for: GrantFactory, fake_broker: FakeBroker, asset: Asset) -> None:
    vendor = supervised(grant_for, asset)
    registry = registry_of(vendor)
    async with await vendor.connect() as conn:
        reader, writer = await conn.open_connection("hmi-01", asset.port)
        session_id, _ = await tunnel_session(vendor, fake_broker)
        writer.write(b"x")
        registry.supervision(session_id, True)
        registry.supervision(session_id, False)  # in the same turn of the event loop
        await nothing_read(reader)
        assert asset.connections == 0


async def test_an_asset_that_does_not_answer_ends_the_released_session_with_the_reason(
        grant_for: GrantFactory, fake_broker: FakeBroker, asset: Asset) -> None:
    vendor = supervised(grant_for, asset)
    registry = registry_of(vendor)
    await asset.stop()  # the port is closed by the time a supervisor watches
    async with await vendor.connect() as conn:
        reader, _writer = await conn.open_connection("hmi-01", asset.port)
        session_id, _ = await tunnel_session(vendor, fake_broker)
        registry.supervision(session_id, True)
        assert await asyncio.wait_for(reader.read(), 10) == b""
    ended = await ended_of(fake_broker, session_id)
    assert ended["reason"] == "error"
    assert ended["detail"].startswith("target connection failed")


@dataclass
class ModbusThroughHold:
    """A pymodbus client reaching a real PLC through a supervised Modbus tunnel (port 502)."""

    plc: ModbusPlc
    client: AsyncModbusTcpClient
    registry: LiveRegistry
    vendor: Vendor

    async def relayed_read(self, count: int) -> list[int]:
        """Read registers 0..count-1, asking again while the gateway answers 10 (still connecting to the PLC)."""
        while (read := await self.client.read_holding_registers(0, count=count, device_id=UNIT)).isError():
            await asyncio.sleep(0.05)
        return list(read.registers)


@contextlib.asynccontextmanager
async def modbus_through_hold(grant_for: GrantFactory) -> AsyncIterator[ModbusThroughHold]:
    plc = ModbusPlc().start()
    try:
        vendor = grant_for(None, ssh=False, ports=[502], asset_host=plc.host)
        vendor.grant.supervision_required = True
        vendor.grant.supervision_grace_ms = 60_000
        async with await vendor.connect() as conn:
            listener = await conn.forward_local_port("127.0.0.1", 0, "hmi-01", 502)
            client = AsyncModbusTcpClient("127.0.0.1", port=listener.get_port(), timeout=5, retries=0)
            assert await client.connect()
            yield ModbusThroughHold(plc=plc, client=client, registry=registry_of(vendor), vendor=vendor)
            client.close()
            listener.close()
    finally:
        plc.stop()


async def test_a_modbus_tunnel_waiting_for_its_supervisor_answers_path_unavailable_and_writes_nothing_late(
        grant_for: GrantFactory, fake_broker: FakeBroker) -> None:
    # Held bytes would reach the PLC when the supervisor arrives: a write the engineer sent (and gave up on) minutes
    # before. A Modbus tunnel answers each request at once instead (exception 10) and drops it.
    async with modbus_through_hold(grant_for) as through:
        written = await through.client.write_register(2, 42, device_id=UNIT)
        assert written.isError()
        assert written.exception_code == 10  # GATEWAY PATH UNAVAILABLE
        session_id, _ = await tunnel_session(through.vendor, fake_broker)
        assert await asyncio.to_thread(through.plc.registers) == REGISTERS

        through.registry.supervision(session_id, True)  # a supervisor watches: the tool's next try goes through
        assert await asyncio.wait_for(through.relayed_read(len(REGISTERS)), 15) == REGISTERS
        assert await asyncio.to_thread(through.plc.registers) == REGISTERS  # the write never reached the PLC
    await fake_broker.until(lambda: any(e["kind"] == "modbus_activity" for _, e in fake_broker.session_events),
                            what="the connection's Modbus activity")
    [(_, activity)] = [e for e in fake_broker.session_events if e[1]["kind"] == "modbus_activity"]
    assert activity["detail"]["answered_while_held"] >= 1
    assert activity["detail"]["functions"].startswith("3:")
    assert "6:1" in activity["detail"]["functions"]  # asked, though never relayed


async def test_a_modbus_tunnel_whose_supervisor_left_answers_path_unavailable_until_one_is_back(
        grant_for: GrantFactory, fake_broker: FakeBroker) -> None:
    async with modbus_through_hold(grant_for) as through:
        session_id, _ = await tunnel_session(through.vendor, fake_broker)
        through.registry.supervision(session_id, True)
        assert await asyncio.wait_for(through.relayed_read(3), 15) == REGISTERS[:3]
        assert not (await through.client.write_register(1, 7, device_id=UNIT)).isError()  # watched: it goes through

        through.registry.supervision(session_id, False)  # the last supervisor left
        refused = await through.client.write_register(2, 42, device_id=UNIT)
        assert refused.isError()
        assert refused.exception_code == 10
        assert (await asyncio.to_thread(through.plc.registers))[:3] == [REGISTERS[0], 7, REGISTERS[2]]

        through.registry.supervision(session_id, True)  # one is back: the tool asks again and is heard
        assert await asyncio.wait_for(through.relayed_read(3), 15) == [REGISTERS[0], 7, REGISTERS[2]]
        assert (await asyncio.to_thread(through.plc.registers))[:3] == [REGISTERS[0], 7, REGISTERS[2]]  # 42 never


async def test_a_modbus_tunnel_held_with_an_answer_half_way_holds_the_bytes_instead_of_splicing_its_own(
        grant_for: GrantFactory, fake_broker: FakeBroker) -> None:
    # The PLC's answer has reached the tool half-way when the last supervisor leaves: an answer of the gateway's
    # written now would land inside it. The hold then holds the bytes, as for any tunnel.
    host = free_loopback_address()
    first_half = b"\x00\x01\x00\x00\x00\x05"  # the MBAP header of a 11-byte read answer: transaction 1, length 5
    requests = bytearray()

    async def half_answering_plc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            requests.extend(data)
            if len(requests) == 12:  # the first read request: answer its first half only
                writer.write(first_half)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(half_answering_plc, host, 502)
    try:
        vendor = grant_for(None, ssh=False, ports=[502], asset_host=host)
        vendor.grant.supervision_required = True
        vendor.grant.supervision_grace_ms = 60_000
        registry = registry_of(vendor)
        async with await vendor.connect() as conn:
            reader, writer = await conn.open_connection("hmi-01", 502)
            session_id, _ = await tunnel_session(vendor, fake_broker)
            registry.supervision(session_id, True)
            read = b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01"  # Read Holding Registers 0, one

            async def relayed_read() -> bytes:
                while True:  # answered 10 (and dropped) until the gateway has connected to the PLC
                    writer.write(read)
                    head = await reader.readexactly(6)
                    if head[4:6] != b"\x00\x03":
                        return head
                    await reader.readexactly(3)
                    await asyncio.sleep(0.05)

            assert await asyncio.wait_for(relayed_read(), 15) == first_half

            registry.supervision(session_id, False)  # the last supervisor left, the answer half-way
            writer.write(b"\x00\x02\x00\x00\x00\x06\x01\x06\x00\x02\x00\x2a")  # Write Single Register 2 = 42
            await nothing_read(reader)  # no exception answer spliced into the PLC's half-sent one
            assert len(requests) == 12  # and the write did not reach the PLC
            writer.close()
    finally:
        server.close()
