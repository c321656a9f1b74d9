"""OPC UA (asyncua) browsed and read through a tunnel: the gateway relays any TCP protocol on a granted port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.gateway.conftest import GrantFactory
from tests.gateway.modbus_plc import free_loopback_address

asyncua = pytest.importorskip("asyncua", reason="asyncua is optional: pip install asyncua")

pytestmark = pytest.mark.anyio

OPC_UA_PORT = 4840


@pytest.fixture
async def opcua_server() -> AsyncIterator[tuple[str, str]]:
    host = free_loopback_address(OPC_UA_PORT)
    server = asyncua.Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://{host}:{OPC_UA_PORT}/plc/")
    namespace = await server.register_namespace("urn:gatepass:test")
    plc = await server.nodes.objects.add_object(namespace, "Line1")
    await plc.add_variable(namespace, "Speed", 42.5)
    async with server:
        yield host, "Line1"


async def test_opc_ua_browse_and_read_through_the_tunnel(
    grant_for: GrantFactory, opcua_server: tuple[str, str]
) -> None:
    host, object_name = opcua_server
    vendor = grant_for(None, ssh=False, ports=[OPC_UA_PORT], asset_host=host)
    async with await vendor.connect() as conn:
        listener = await conn.forward_local_port("127.0.0.1", 0, "hmi-01", OPC_UA_PORT)
        client = asyncua.Client(f"opc.tcp://127.0.0.1:{listener.get_port()}/plc/", timeout=5)
        async with client:
            names = [(await child.read_browse_name()).Name for child in await client.nodes.objects.get_children()]
            assert object_name in names
            line = await client.nodes.objects.get_child([f"2:{object_name}"])
            speed = await line.get_child(["2:Speed"])
            assert await speed.read_value() == 42.5
        listener.close()
