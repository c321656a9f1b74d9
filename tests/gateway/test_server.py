"""The Gateway process: host key on disk, registration, stop() ending sessions, run_gateway retrying."""

from __future__ import annotations

import asyncio
import json
import resource
import stat
from pathlib import Path

import asyncssh
import pytest

from gateway import BrokerRefused, Gateway, GatewaySettings, run_gateway
from gateway.hostkey import load_or_create_host_key
from gateway.report_outbox import SPOOL
from gateway.server import raise_open_files_limit
from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import GrantFactory, sshd_credential
from tests.gateway.fake_broker import TOKEN, FakeBroker
from tests.gateway.waiting import eventually

pytestmark = pytest.mark.anyio


def test_host_key_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "gw" / "ssh_host_ed25519_key"
    key = load_or_create_host_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert key.algorithm == b"ssh-ed25519"
    again = load_or_create_host_key(path)
    assert again.export_public_key() == key.export_public_key()


async def test_registers_its_address_and_host_key(gateway: Gateway, fake_broker: FakeBroker) -> None:
    (registration,) = fake_broker.registrations
    # kept_ends: a starting gateway carries no session, so the broker may end what an earlier run left open.
    assert registration == {"ssh_host": "127.0.0.1", "ssh_port": gateway.port, "host_key": gateway.host_public_key,
                            "kept_ends": []}
    assert gateway.name == "gw-test"


async def test_public_host_is_what_the_broker_is_told(fake_broker: FakeBroker, tmp_path: Path) -> None:
    settings = GatewaySettings(
        broker_url=fake_broker.url, token=TOKEN, host_key_path=tmp_path / "k", recordings_dir=tmp_path / "rec",
        listen_port=0, public_host="gw.plant-a",
    )
    gateway = Gateway(settings)
    await gateway.start()
    await gateway.stop()
    assert fake_broker.registrations[0]["ssh_host"] == "gw.plant-a"
    assert TOKEN not in repr(settings)


async def test_a_restart_tells_the_broker_which_session_ends_it_still_has_to_report(
        fake_broker: FakeBroker, tmp_path: Path) -> None:
    spool = tmp_path / "rec" / SPOOL
    spool.mkdir(parents=True)
    body = {"reason": "client_closed", "bytes_in": 0, "bytes_out": 0, "detail": None}
    for number, path in enumerate(("/gateway/sessions/ses-kept01/end", "/gateway/sessions/ses-kept01/events",
                                   "/gateway/sessions/ses-kept02/end"), start=1):
        (spool / f"{number:012d}.json").write_text(json.dumps({"path": path, "body": body, "upload": None}))
    settings = GatewaySettings(broker_url=fake_broker.url, token=TOKEN, host_key_path=tmp_path / "k",
                               recordings_dir=tmp_path / "rec", listen_port=0)
    gateway = Gateway(settings)
    await gateway.start()
    await gateway.stop()
    assert fake_broker.registrations[0]["kept_ends"] == ["ses-kept01", "ses-kept02"]


async def test_wrong_token_fails_start_and_frees_the_port(fake_broker: FakeBroker, tmp_path: Path) -> None:
    settings = GatewaySettings(
        broker_url=fake_broker.url, token="gpg_wrong", host_key_path=tmp_path / "k", recordings_dir=tmp_path / "rec",
        listen_port=0,
    )
    gateway = Gateway(settings)
    with pytest.raises(BrokerRefused):
        await gateway.start()
    await gateway.broker.aclose()


async def test_stop_ends_sessions_as_gateway_lost(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    conn = await vendor.connect()
    process = await conn.create_process("echo started; sleep 30")
    assert await asyncio.wait_for(process.stdout.readline(), 5) == "started\n"
    await gateway.stop()
    result = await asyncio.wait_for(process.wait(), 2)
    assert "the gateway is shutting down" in str(result.stderr)
    assert [end["reason"] for end in fake_broker.ended.values()] == ["gateway_lost"]


async def test_run_gateway_waits_for_the_broker_and_stops_when_cancelled(fake_broker: FakeBroker,
                                                                         tmp_path: Path) -> None:
    fake_broker.down = True
    settings = GatewaySettings(
        broker_url=fake_broker.url, token=TOKEN, host_key_path=tmp_path / "k", recordings_dir=tmp_path / "rec",
        listen_port=0,
    )
    task = asyncio.ensure_future(run_gateway(settings, retry_backoff=0.05))
    # Refused once and back again after its backoff: the gateway keeps trying while the broker is down.
    await eventually(lambda: fake_broker.refused_while_down >= 2, what="the gateway to try the down broker twice")
    assert fake_broker.registrations == []
    fake_broker.down = False
    await fake_broker.until(lambda: fake_broker.stream_count, what="its registration and event stream")
    assert len(fake_broker.registrations) == 1
    port = fake_broker.registrations[0]["ssh_port"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ConnectionRefusedError):
        await asyncssh.connect("127.0.0.1", port, known_hosts=None, config=None)


def test_open_files_limit_is_raised_towards_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert raise_open_files_limit(wanted=512) == min(512, hard)
        assert raise_open_files_limit(wanted=300) == min(512, hard)  # never lowered
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
