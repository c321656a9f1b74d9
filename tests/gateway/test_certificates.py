"""Reading the accepted grant certificate through asyncssh's private hook (pinned asyncssh <2.25)."""

from __future__ import annotations

import time
from typing import ClassVar

import asyncssh
import pytest

from gateway.certificates import CertificateWatch, GrantCertificate, parse_key_id, read_grant_certificate
from gateway.errors import CertificateRefused
from tests.gateway.waiting import eventually

pytestmark = pytest.mark.anyio


def _cert(ca: asyncssh.SSHKey, key: asyncssh.SSHKey, **options: object) -> asyncssh.SSHCertificate:
    defaults: dict[str, object] = {
        "key_id": "gatepass grant=grt-1a2b identity=vendor1",
        "serial": 2**62 + 7,
        "principals": ["hmi-01"],
        "valid_before": int(time.time()) + 600,
    }
    return ca.generate_user_certificate(key, **(defaults | options))  # type: ignore[arg-type]


def test_parse_key_id() -> None:
    assert parse_key_id("gatepass grant=grt-1a2b identity=vendor1") == ("grt-1a2b", "vendor1")
    for bad in ["grant=grt-1", "gatepass grant=grt-1", "gatepass grant=a b identity=c", ""]:
        with pytest.raises(CertificateRefused):
            parse_key_id(bad)


def test_read_grant_certificate() -> None:
    ca, key = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    info = read_grant_certificate(_cert(ca, key).export_certificate())
    assert (info.grant_id, info.identity, info.serial, info.principals) == (
        "grt-1a2b",
        "vendor1",
        2**62 + 7,
        ("hmi-01",),
    )
    with pytest.raises(CertificateRefused, match="no principals"):
        read_grant_certificate(_cert(ca, key, principals=[]).export_certificate())
    with pytest.raises(CertificateRefused, match="not a Gatepass grant"):
        read_grant_certificate(_cert(ca, key, key_id="someone else").export_certificate())
    with pytest.raises(CertificateRefused):
        read_grant_certificate(key.export_public_key())


class _Server(asyncssh.SSHServer):
    accepted: ClassVar[list[GrantCertificate | None]] = []

    def __init__(self, ca: asyncssh.SSHKey) -> None:
        self._ca = ca

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._watch = CertificateWatch(conn)

    def begin_auth(self, username: str) -> bool:
        ca_line = self._ca.export_public_key().decode().strip()
        self._conn.set_authorized_keys(
            asyncssh.import_authorized_keys(f'cert-authority,principals="{username}" {ca_line}\n')
        )
        return True

    def auth_completed(self) -> None:
        _Server.accepted.append(self._watch.accepted)


async def test_hook_records_the_certificate_asyncssh_accepted() -> None:
    ca, key, host_key = (asyncssh.generate_private_key("ssh-ed25519") for _ in range(3))
    _Server.accepted = []
    server = await asyncssh.create_server(lambda: _Server(ca), "127.0.0.1", 0, server_host_keys=[host_key])
    port = server.get_port()
    try:
        # A decoy certificate for another asset is offered first; the valid one must win.
        decoy = _cert(ca, key, key_id="gatepass grant=grt-decoy identity=x", principals=["plc-01"])
        good = _cert(ca, key)
        async with asyncssh.connect(
            "127.0.0.1", port, username="hmi-01", client_keys=[(key, decoy), (key, good)], known_hosts=None,
            config=None, agent_path=None,
        ):  # fmt: skip
            # The client's login is done; the server's auth_completed hook runs in its own time.
            await eventually(lambda: _Server.accepted, what="the server to complete the login")
        (accepted,) = _Server.accepted
        assert accepted is not None
        assert (accepted.grant_id, accepted.serial) == ("grt-1a2b", 2**62 + 7)
        with pytest.raises(asyncssh.PermissionDenied):
            await asyncssh.connect(
                "127.0.0.1", port, username="hmi-01", client_keys=[(key, _cert(ca, key, key_id="not ours"))],
                known_hosts=None, config=None, agent_path=None,
            )  # fmt: skip
    finally:
        server.close()
        await server.wait_closed()
