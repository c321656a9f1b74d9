"""BrokerClient against real HTTP: the fake broker, and a raw socket server for SSE edge cases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncssh
import pytest

from gateway.broker_client import BrokerClient
from gateway.errors import BrokerProtocolError, BrokerRefused, BrokerUnavailable
from tests.fixtures.ports import free_port
from tests.gateway.fake_broker import TOKEN, FakeBroker

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(fake_broker: FakeBroker) -> AsyncIterator[BrokerClient]:
    client = BrokerClient(fake_broker.url, TOKEN, timeout=5)
    yield client
    await client.aclose()


async def test_register_authorize_and_sessions(client: BrokerClient, fake_broker: FakeBroker) -> None:
    registration = await client.register(ssh_host="gw.plant-a", ssh_port=2222, host_key="ssh-ed25519 AAAA")
    assert (registration.user_ca, registration.gateway) == (fake_broker.user_ca, "gw-test")
    assert fake_broker.registrations == [{"ssh_host": "gw.plant-a", "ssh_port": 2222, "host_key": "ssh-ed25519 AAAA"}]

    key = asyncssh.generate_private_key("ssh-ed25519")
    ends_at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    target = {"host": "10.0.0.5", "ssh_port": 22, "username": "root", "password": "s3cret", "private_key": None,
              "host_key": "ssh-ed25519 AAAA"}  # fmt: skip
    grant, _ = fake_broker.issue(key, asset="hmi-01", ends_at=ends_at, target=target, ports=[502])
    auth = await client.authorize(grant_id=grant.grant_id, serial=grant.serial, asset="hmi-01", peer="1.2.3.4:5")
    assert (auth.asset, auth.ends_at, auth.ports, auth.interactive) == ("hmi-01", ends_at, (502,), True)
    assert auth.target is not None
    assert auth.target.password == "s3cret"
    assert "s3cret" not in repr(auth)  # credentials never reach a log line through repr

    session_id = await client.session_start(grant_id=grant.grant_id, kind="exec", peer="1.2.3.4:5", command="ls")
    await client.session_end(session_id, reason="client_closed", bytes_in=1, bytes_out=2)
    assert fake_broker.ended[session_id] == {"reason": "client_closed", "bytes_in": 1, "bytes_out": 2, "detail": None}

    states = await client.grants_status([grant.grant_id, "grt-unknown"])
    assert list(states) == [grant.grant_id]
    assert states[grant.grant_id].status == "active"


async def test_refusals_carry_the_brokers_message(client: BrokerClient, fake_broker: FakeBroker) -> None:
    with pytest.raises(BrokerRefused) as refused:
        await client.authorize(grant_id="grt-nope", serial=1, asset="hmi-01", peer="1.2.3.4:5")
    assert refused.value.status == 403
    assert refused.value.code == "forbidden"
    assert "does not belong to any grant" in refused.value.message

    bad_token = BrokerClient(fake_broker.url, "gpg_wrong")
    with pytest.raises(BrokerRefused) as unauthenticated:
        await bad_token.register(ssh_host="h", ssh_port=1, host_key="k")
    assert unauthenticated.value.status == 401
    await bad_token.aclose()

    fake_broker.down = True
    with pytest.raises(BrokerUnavailable):
        await client.grants_status(["grt-1"])


async def test_unreachable_broker() -> None:
    client = BrokerClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout=2)
    with pytest.raises(BrokerUnavailable):
        await client.register(ssh_host="h", ssh_port=1, host_key="k")
    with pytest.raises(BrokerUnavailable):
        async for _ in client.events():
            pass
    await client.aclose()


@contextlib.asynccontextmanager
async def _raw_http(body: bytes, content_type: bytes = b"text/event-stream") -> AsyncIterator[str]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_event_stream_parsing() -> None:
    stream = (
        b": keepalive\r\n\r\n"
        b'event: hello\r\ndata: {"server_time": "2026-11-27T10:00:00+00:00"}\r\n\r\n'
        b'event: grant\ndata: {"grant_id": "grt-1",\ndata: "status": "revoked"}\n\n'
        b'data: {"untyped": true}\n\n'
        b'event: grant\ndata: {"grant_id": "grt-2"}\n'  # no blank line: never dispatched
    )
    async with _raw_http(stream) as url:
        client = BrokerClient(url, TOKEN)
        events = [(event.type, dict(event.data)) async for event in client.events()]
        await client.aclose()
    assert events == [
        ("hello", {"server_time": "2026-11-27T10:00:00+00:00"}),
        ("grant", {"grant_id": "grt-1", "status": "revoked"}),
        ("message", {"untyped": True}),
    ]


async def test_event_that_is_not_json_is_a_protocol_error() -> None:
    async with _raw_http(b"event: grant\ndata: not json\n\n") as url:
        client = BrokerClient(url, TOKEN)
        with pytest.raises(BrokerProtocolError):
            async for _ in client.events():
                pass
        await client.aclose()
