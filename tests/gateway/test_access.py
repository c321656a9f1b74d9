"""Who gets in: grant certificates only, the broker's decision, pinned targets; refusals say why."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import asyncssh
import pytest

from gateway import Gateway
from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import GrantFactory, sshd_credential
from tests.gateway.fake_broker import FakeBroker

pytestmark = pytest.mark.anyio


async def _refusal(vendor_conn: asyncssh.SSHClientConnection) -> tuple[str, int | None]:
    """Open a session and return what the gateway wrote to stderr and the exit status."""
    result = await vendor_conn.run("echo should-not-run")
    assert result.stdout == ""
    return str(result.stderr), result.exit_status


async def test_plain_key_is_refused(gateway: Gateway) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1", gateway.port, username="hmi-01", client_keys=[key], known_hosts=None, config=None,
            agent_path=None,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("login", "issue"),
    [
        ("plc-01", {}),  # certificate for hmi-01 used on another asset
        ("hmi-01", {"principals": ["plc-01"]}),
        ('hmi-01",permitopen="x', {}),  # a login name trying to inject authorized_keys options
        ("hmi-01", {"expired": True}),  # expired certificate (its times are computed when the test runs)
    ],
)
async def test_certificates_that_do_not_fit_the_login_are_refused(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, login: str, issue: dict[str, object]
) -> None:
    issue = dict(issue)
    if issue.pop("expired", False):
        issue["valid_before"] = time.time() - 5
    vendor = grant_for(sshd_credential(sshd_target), **issue)
    with pytest.raises(asyncssh.PermissionDenied):
        await vendor.connect(username=login)


async def test_certificate_without_principals_is_refused(grant_for: GrantFactory, sshd_target: OpenSSHServer) -> None:
    vendor = grant_for(sshd_credential(sshd_target), principals=[])
    with pytest.raises(asyncssh.PermissionDenied):
        await vendor.connect()


async def test_certificate_from_another_ca_is_refused(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    other_ca = asyncssh.generate_private_key("ssh-ed25519")
    vendor.cert = other_ca.generate_user_certificate(
        vendor.key, key_id=f"gatepass grant={vendor.grant.grant_id} identity=vendor1",
        serial=vendor.grant.serial, principals=["hmi-01"],
    )  # fmt: skip
    with pytest.raises(asyncssh.PermissionDenied):
        await vendor.connect()
    assert fake_broker.authorizations == []


async def test_broker_refusal_is_shown_on_stderr_and_the_client_disconnected(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    fake_broker.grants[vendor.grant.grant_id].status = "revoked"
    async with await vendor.connect() as conn:
        stderr, status = await _refusal(conn)
        await conn.wait_closed()
    assert "gatepass: access to hmi-01 refused: the grant for hmi-01 was revoked" in stderr
    assert status == 1
    (asked,) = fake_broker.authorizations
    assert asked["grant_id"] == vendor.grant.grant_id
    assert asked["serial"] == vendor.grant.serial
    assert asked["asset"] == "hmi-01"
    assert asked["peer"].startswith("127.0.0.1:")
    assert fake_broker.sessions == {}


async def test_broker_down_refuses_new_connections(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    fake_broker.down = True
    async with await vendor.connect() as conn:
        stderr, status = await _refusal(conn)
    assert "cannot be checked now: the broker is unreachable" in stderr
    assert status == 1


async def test_grant_already_ended_by_the_gateways_clock_is_refused(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, clock: object
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    clock.fixed = datetime.now(UTC) + timedelta(hours=1)  # type: ignore[attr-defined]
    async with await vendor.connect() as conn:
        stderr, _status = await _refusal(conn)
    assert "refused: the grant ended at" in stderr


async def test_target_without_pinned_host_key_is_never_contacted(
    grant_for: GrantFactory, sshd_target: OpenSSHServer
) -> None:
    target = sshd_credential(sshd_target) | {"host_key": None}
    vendor = grant_for(target)
    async with await vendor.connect() as conn:
        stderr, status = await _refusal(conn)
    assert "hmi-01 has no pinned SSH host key, so the gateway will not connect to it" in stderr
    assert status == 1
    assert "Accepted" not in sshd_target.log_text()


async def test_target_with_another_host_key_is_refused(grant_for: GrantFactory, sshd_target: OpenSSHServer) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    vendor = grant_for(sshd_credential(sshd_target) | {"host_key": impostor})
    async with await vendor.connect() as conn:
        stderr, _status = await _refusal(conn)
    assert "the SSH host key of hmi-01 does not match the key pinned for it" in stderr


async def test_tcp_only_grant_gets_no_ssh_session(grant_for: GrantFactory) -> None:
    vendor = grant_for(None, ssh=False, ports=[502])
    async with await vendor.connect() as conn:
        stderr, _ = await _refusal(conn)
    assert "covers TCP ports only" in stderr


async def test_password_and_keyboard_interactive_are_not_offered(gateway: Gateway) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1", gateway.port, username="hmi-01", password="x", client_keys=None, known_hosts=None,
            config=None, agent_path=None,
        )  # fmt: skip
