"""A watched tunnel's live feed at the gateway: the connection, byte totals and Modbus requests as frames; bounded
when the broker is slow (oldest dropped, counted); and the relay unchanged by watching, against a real PLC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncssh
import pytest
from pymodbus.client import AsyncModbusTcpClient

from gateway.broker_client import BrokerClient
from gateway.modbus import RefusedRequest
from gateway.observers import FEED_BUFFER_BYTES, FEED_MAX_FRAMES, SAMPLE_INTERVAL, LiveFeed, LiveRegistry
from gateway.tunnel_feed import TunnelWatch, modbus_frames
from tests.gateway.conftest import GrantFactory
from tests.gateway.fake_broker import FakeBroker
from tests.gateway.modbus_plc import REGISTERS, UNIT, ModbusPlc

pytestmark = pytest.mark.anyio


class Counts:
    def __init__(self) -> None:
        self.bytes_in = self.bytes_out = 0
        self.ended: list[str] = []

    def totals(self) -> tuple[int, int]:
        return self.bytes_in, self.bytes_out


def codes(frames: list[list[Any]]) -> list[list[Any]]:
    return [frame[1:] for frame in frames]


async def test_a_watched_tunnel_starts_with_its_connection_and_ends_with_its_totals() -> None:
    broker = BrokerClient("http://127.0.0.1:9", "gpg_unused")  # never called: the feed is set without a sender
    registry = LiveRegistry(broker)
    counts = Counts()
    watch = TunnelWatch(registry, session_id="ses-t", peer="192.0.2.7:50122", port=502, totals=counts.totals,
                        end=counts.ended.append)
    assert watch.feed is None  # unwatched: no feed, nothing kept
    counts.bytes_in, counts.bytes_out = 12, 29
    live = registry.session("ses-t")
    assert live is watch.live
    assert live.opening is not None
    assert live.sample is not None
    feed = live.feed = LiveFeed("t")
    live.opening(feed)  # as registry.watch does, without its sender
    assert codes(feed.take()[0]) == [["co", "192.0.2.7:50122 502"], ["cb", "12 29"]]
    counts.bytes_in = 24
    live.sample(feed)  # within a second of the last totals: nothing yet (once a second while changing)
    assert feed.take()[0] == []
    await asyncio.sleep(SAMPLE_INTERVAL)
    live.sample(feed)
    live.sample(feed)  # unchanged since: nothing more
    assert codes(feed.take()[0]) == [["cb", "24 29"]]
    modbus_frames(feed, [(1, 1, 3, "0-9"), (2, 1, 6, "40")],
                  [RefusedRequest(transaction_id=2, unit_id=1, function_code=6)])
    registry.end("ses-t", "gatepass: bob (supervisor, plant-a) ended this session: done")
    assert counts.ended == ["gatepass: bob (supervisor, plant-a) ended this session: done"]
    watch.closed("target connection lost: reset\nby peer")
    frames, _, _ = feed.take()
    assert codes(frames) == [["q", "1 3 0-9 Read Holding Registers"],
                             ["qx", "1 6 40 Write Single Register is not a read and the grant is read-only"],
                             ["cc", "24 29 target connection lost: reset by peer"]]
    assert feed.ended
    assert registry.session("ses-t") is None
    counts.bytes_out = 99
    await asyncio.sleep(SAMPLE_INTERVAL)
    live.sample(feed)  # the sender's last round, after the close: the closing totals stay the last word
    assert feed.take()[0] == []
    await broker.aclose()


async def test_refusals_match_their_own_request_not_an_earlier_one_of_the_same_function() -> None:
    feed = LiveFeed("t")
    too_long = RefusedRequest(transaction_id=8, unit_id=1, function_code=3, exception_code=3, problem="too long")
    modbus_frames(feed, [(7, 1, 3, "0"), (8, 1, 3, "0-1")], [too_long])
    modbus_frames(feed, [], [RefusedRequest(transaction_id=9, unit_id=2, function_code=16)])
    assert codes(feed.take()[0]) == [["q", "1 3 0 Read Holding Registers"], ["qx", "1 3 0-1 too long"],
                                     ["qx", "2 16 - Write Multiple Registers is not a read and the grant is "
                                            "read-only"]]


@pytest.fixture
async def stalled_broker() -> AsyncIterator[str]:
    """An HTTP server that takes requests and never answers (a broker stuck behind a slow database)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in held:
        writer.close()
    server.close()


async def test_a_stalled_broker_costs_a_watched_tunnel_a_bounded_buffer_and_drops_are_counted(
        stalled_broker: str) -> None:
    broker = BrokerClient(stalled_broker, "gpg_unused", timeout=30)
    registry = LiveRegistry(broker)
    counts = Counts()
    TunnelWatch(registry, session_id="ses-s", peer="192.0.2.7:50122", port=502, totals=counts.totals,
                end=counts.ended.append)
    registry.watch("ses-s", "feed-token")
    live = registry.session("ses-s")
    assert live is not None
    feed = live.feed
    assert feed is not None
    await asyncio.sleep(0.2)  # the sender took the opening frames and waits on the broker, which never answers
    requests = 20_000
    for number in range(requests):  # a Modbus poller at full speed while the broker is stuck
        modbus_frames(feed, [(number & 0xFFFF, 1, 3, f"{number % 1000}-{number % 1000 + 9}")], [])
    frames, dropped, size = feed.take()
    assert size <= FEED_BUFFER_BYTES
    assert len(frames) <= FEED_MAX_FRAMES  # what the broker takes in one call
    assert len(frames) + dropped == requests  # every request either waits or is counted as dropped
    assert dropped > 0
    assert frames[-1][1:] == ["q", "1 3 999-1008 Read Holding Registers"]  # the newest are kept
    registry.unwatch("ses-s")
    assert live.feed is None
    assert live.sender is None
    await broker.aclose()


@pytest.fixture
def plc() -> Iterator[ModbusPlc]:
    server = ModbusPlc().start()
    try:
        yield server
    finally:
        server.stop()


async def _client(conn: asyncssh.SSHClientConnection) -> tuple[AsyncModbusTcpClient, asyncssh.SSHListener]:
    listener = await conn.forward_local_port("127.0.0.1", 0, "hmi-01", 502)
    client = AsyncModbusTcpClient("127.0.0.1", port=listener.get_port(), timeout=5, retries=0)
    assert await client.connect()
    return client, listener


def _watch_now(registry: LiveRegistry, fake_broker: FakeBroker) -> LiveFeed:
    (session_id,) = fake_broker.sessions
    live = registry.session(session_id)
    assert live is not None
    assert live.opening is not None
    live.feed = LiveFeed("t")
    live.opening(live.feed)
    return live.feed


@pytest.mark.parametrize("read_only", [True, False])
async def test_watching_a_modbus_tunnel_changes_nothing_for_the_relay(
        grant_for: GrantFactory, fake_broker: FakeBroker, plc: ModbusPlc, read_only: bool) -> None:
    vendor = grant_for(None, ssh=False, ports=[502], read_only=read_only, asset_host=plc.host)
    registry = vendor.gateway.ctx.live
    assert registry is not None
    async with await vendor.connect() as conn:
        client, listener = await _client(conn)
        await fake_broker.until(lambda: len(fake_broker.sessions) == 1, what="the tunnel's session")
        assert (await client.read_holding_registers(0, count=2, device_id=UNIT)).registers == REGISTERS[:2]
        feed = _watch_now(registry, fake_broker)
        assert (await client.read_holding_registers(0, count=len(REGISTERS), device_id=UNIT)).registers == REGISTERS
        written = await client.write_register(4, 4242, device_id=UNIT)
        assert written.isError() is read_only
        if read_only:
            assert written.exception_code == 1  # ILLEGAL FUNCTION, from the gateway, as unwatched
        again = await client.read_holding_registers(4, count=1, device_id=UNIT)  # the stream is still in step
        assert again.registers == [REGISTERS[4] if read_only else 4242]
        client.close()
        listener.close()
    await fake_broker.until(lambda: fake_broker.ended, what="the tunnel's end")
    ((session_id, ended),) = fake_broker.ended.items()
    frames = codes(feed.take()[0])
    assert frames[0][0] == "co"
    assert frames[0][1].endswith(" 502")
    write = ["qx", "1 6 4 Write Single Register is not a read and the grant is read-only"] if read_only else \
        ["q", "1 6 4 Write Single Register"]
    assert [f for f in frames if f[0] in ("q", "qx")] == [
        ["q", "1 3 0-9 Read Holding Registers"], write, ["q", "1 3 4 Read Holding Registers"]]
    # The last frame closes the connection with the totals the broker got at the end: watching counted nothing
    # differently.
    assert frames[-1][0] == "cc"
    assert frames[-1][1].startswith(f"{ended['bytes_in']} {ended['bytes_out']}")
    assert ended["reason"] == "client_closed"
    assert feed.ended
    assert registry.session(session_id) is None
    if not read_only:
        assert (await asyncio.to_thread(plc.registers))[4] == 4242
