"""Fixtures for the gateway's tests: ``fake_broker`` (tests/gateway/fake_broker.py) on a real port, a started
gateway, grant helpers. The name says fake: elsewhere ``broker`` is the real broker under uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gateway import Gateway, GatewaySettings
from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.fake_broker import TOKEN, FakeBroker, FakeGrant


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fake_broker() -> AsyncIterator[FakeBroker]:
    fake = FakeBroker()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@dataclass
class Clock:
    """A clock the test moves; defaults to real time so loop timers and the clock agree."""

    fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed or datetime.now(UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def recordings_dir(tmp_path: Path) -> Path:
    """Where the gateway writes session recordings; a test module may override it (e.g. a small tmpfs)."""
    return tmp_path / "recordings"


@pytest.fixture
def gateway_options() -> dict[str, Any]:
    """Extra GatewaySettings for the gateway fixture; a test module may override it."""
    return {}


@pytest.fixture
async def gateway(
    fake_broker: FakeBroker, tmp_path: Path, clock: Clock, recordings_dir: Path, gateway_options: dict[str, Any]
) -> AsyncIterator[Gateway]:
    settings = GatewaySettings(
        broker_url=fake_broker.url,
        token=TOKEN,
        host_key_path=tmp_path / "gateway" / "host_key",
        recordings_dir=recordings_dir,
        listen_port=0,
        clock=clock,
        target_connect_timeout=5,
        refusal_grace=0.3,
        **gateway_options,
    )
    gw = Gateway(settings)
    await gw.start()
    await asyncio.wait_for(gw.events_connected.wait(), 5)
    try:
        yield gw
    finally:
        await gw.stop()


def sshd_credential(sshd: OpenSSHServer) -> dict[str, Any]:
    """The ``target`` object the broker would send for the sshd fixture (key login, pinned host key)."""
    return {
        "host": sshd.host,
        "ssh_port": sshd.port,
        "username": sshd.username,
        "password": None,
        "private_key": sshd.client_private_key_text,
        "host_key": sshd.host_key,
    }


@dataclass
class Vendor:
    """A vendor's key and the grant certificate the broker issued for it."""

    key: asyncssh.SSHKey
    cert: asyncssh.SSHCertificate
    grant: FakeGrant
    gateway: Gateway

    async def connect(self, username: str | None = None, **options: Any) -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(
            "127.0.0.1",
            self.gateway.port,
            username=username or self.grant.asset,
            client_keys=[(self.key, self.cert)],
            known_hosts=([asyncssh.import_public_key(self.gateway.host_public_key)], [], []),
            config=None,
            agent_path=None,
            **options,
        )


GrantFactory = Callable[..., Vendor]


@pytest.fixture
def grant_for(fake_broker: FakeBroker, gateway: Gateway) -> GrantFactory:
    """``grant_for(target, asset="hmi-01", seconds=600, **issue_options) -> Vendor``."""

    def make(target: dict[str, Any] | None, *, asset: str = "hmi-01", seconds: float = 600, **kw: Any) -> Vendor:
        key = asyncssh.generate_private_key("ssh-ed25519")
        ends_at = datetime.now(UTC) + timedelta(seconds=seconds)
        grant, cert = fake_broker.issue(key, asset=asset, ends_at=ends_at, target=target, **kw)
        return Vendor(key=key, cert=cert, grant=grant, gateway=gateway)

    return make


@pytest.fixture
async def plc_port() -> AsyncIterator[int]:
    """A TCP echo server standing in for a PLC's Modbus port."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
