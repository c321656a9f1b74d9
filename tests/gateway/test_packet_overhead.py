"""Per-packet work asyncssh does that the gateway leaves out (gateway/packet_overhead.py).

Empty SSH_MSG_IGNORE packets are counted where they arrive, with asyncssh's own handler for them wrapped in this
process: the vendor's client and a plant machine played by an asyncssh server must receive none from the gateway,
while the gateway still receives them from those unmodified asyncssh peers (so the count works, and asyncssh still
sends the packet the way the wrapper expects). Packet log lines: none is formatted while asyncssh's packet log is
off, and with it on every one is still written.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, ClassVar

import asyncssh
import pytest
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE
from asyncssh.logging import logger as asyncssh_logger
from asyncssh.logging import sftp_logger
from asyncssh.packet import SSHPacketLogger

from gateway import Gateway
from gateway.algorithms import CLIENT_FACING_ENCRYPTION_ALGS, TARGET_FACING_ENCRYPTION_ALGS
from gateway.models import Target
from gateway.packet_overhead import skip_unlogged_packet_lines
from gateway.upstream import connect_target
from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import GrantFactory, sshd_credential

pytestmark = pytest.mark.anyio

PAYLOAD = 3 * 1024 * 1024


@pytest.fixture
def ignores_received(monkeypatch: pytest.MonkeyPatch) -> Counter[Any]:
    """SSH_MSG_IGNORE packets received, per asyncssh connection in this process."""
    received: Counter[Any] = Counter()
    process_ignore = SSHConnection._packet_handlers[MSG_IGNORE]

    def counting(conn: Any, *args: Any) -> Any:
        received[conn] += 1
        return process_ignore(conn, *args)

    monkeypatch.setitem(SSHConnection._packet_handlers, MSG_IGNORE, counting)  # type: ignore[index]
    return received


def test_no_cbc_cipher_is_offered_on_either_hop() -> None:
    """Leaving the IGNORE packets out is sound only while no CBC mode can be negotiated."""
    for name in (*CLIENT_FACING_ENCRYPTION_ALGS, *TARGET_FACING_ENCRYPTION_ALGS):
        assert "cbc" not in name.lower()


async def test_the_vendor_receives_no_ignore_packets_from_the_gateway(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, ignores_received: Counter[Any]
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    async with await vendor.connect() as conn:
        result = await conn.run(f"head -c {PAYLOAD} /dev/zero", encoding=None, check=True)
        assert len(result.stdout) == PAYLOAD
        await conn.run("cat > /dev/null", input=b"u" * PAYLOAD, encoding=None, check=True)
        assert ignores_received[conn] == 0  # over a hundred packets of output, and not one IGNORE among them
    # The gateway's side did receive them from the stock asyncssh client, one with each packet of its upload.
    assert sum(count for peer, count in ignores_received.items() if peer is not conn) > 100


class _Target(asyncssh.SSHServer):
    connections: ClassVar[list[asyncssh.SSHServerConnection]] = []

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        _Target.connections.append(conn)

    def begin_auth(self, username: str) -> bool:  # noqa: ARG002 - every user must log in
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return (username, password) == ("operator", "plant-secret")


async def _swallow(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """The plant machine's command: reads everything, answers with as many bytes and then their count."""
    total = 0
    while data := await process.stdin.read(65536):
        total += len(data)
    process.stdout.write(b"d" * total + str(total).encode())
    process.exit(0)


async def test_the_plant_machine_receives_no_ignore_packets_from_the_gateway(ignores_received: Counter[Any]) -> None:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    _Target.connections = []
    server = await asyncssh.create_server(_Target, "127.0.0.1", 0, server_host_keys=[host_key],
                                          process_factory=_swallow, encoding=None)
    try:
        target = Target(host="127.0.0.1", ssh_port=server.sockets[0].getsockname()[1], username="operator",
                        password="plant-secret", private_key=None,
                        host_key=host_key.export_public_key().decode())
        conn = await connect_target(target, asset="hmi-01", timeout=10)
        (machine,) = _Target.connections
        during_login = ignores_received[machine]  # the login's packets went before the gateway had the connection
        async with conn:
            result = await conn.run("swallow", input=b"u" * PAYLOAD, encoding=None, check=True)
            assert result.stdout == b"d" * PAYLOAD + str(PAYLOAD).encode()
        assert ignores_received[machine] == during_login  # an upload of 3 MiB, and not one IGNORE with it
        assert ignores_received[conn] > 100  # the stock asyncssh server sends one with each packet of its answer
    finally:
        server.close()
        await server.wait_closed()


async def test_packet_log_lines_are_formatted_only_when_the_packet_log_is_on(
    gateway: Gateway, grant_for: GrantFactory, sshd_target: OpenSSHServer, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    formatted: list[str] = []
    format_line = SSHPacketLogger._log_packet

    def counting(self: SSHPacketLogger, msg: str, pkttype: int, *args: Any) -> None:
        formatted.append(f"{msg} {pkttype}")
        format_line(self, msg, pkttype, *args)

    monkeypatch.setattr(SSHPacketLogger, "_log_packet", counting)
    vendor = grant_for(sshd_credential(sshd_target))
    async with await vendor.connect() as conn:  # the packet log is off, as it is unless someone turns it on
        assert len((await conn.run(f"head -c {PAYLOAD} /dev/zero", encoding=None, check=True)).stdout) == PAYLOAD
    assert formatted == []
    asyncssh.set_debug_level(3)
    try:
        with caplog.at_level(logging.DEBUG, logger="asyncssh"):
            async with await vendor.connect() as conn:
                assert (await conn.run("echo logged", check=True)).stdout == "logged\n"
    finally:
        asyncssh.set_debug_level(1)
    # Every packet, the vendor's test client's and the gateway's, both ways: logged as asyncssh always did.
    assert any(line.startswith("Sent 94") for line in formatted)  # MSG_CHANNEL_DATA
    assert any(line.startswith("Received 98") for line in formatted)  # MSG_CHANNEL_REQUEST
    assert sum("Sent" in record.getMessage() for record in caplog.records if record.name.startswith("asyncssh")) \
        == sum(line.startswith("Sent") for line in formatted)


class _SftpPackets(SSHPacketLogger):
    """A packet handler that logs as asyncssh's SFTP and scp ones do: to the child logger ``asyncssh.sftp``."""

    _handler_names: ClassVar[dict[int, str]] = {3: "SSH_FXP_OPEN"}

    @property
    def logger(self) -> Any:
        return sftp_logger


def test_a_child_logger_at_debug_still_gets_its_packet_lines(caplog: pytest.LogCaptureFixture) -> None:
    """The check asks the logger the line goes to: with only ``asyncssh.sftp`` at DEBUG, its lines are written."""
    skip_unlogged_packet_lines()
    asyncssh.set_debug_level(3)
    try:
        with caplog.at_level(logging.WARNING, logger="asyncssh"), \
                caplog.at_level(logging.DEBUG, logger="asyncssh.sftp"):
            _SftpPackets().log_sent_packet(3, 1, b"\0" * 9)
            Counting().log_sent_packet(3, 1, b"\0" * 9)  # the parent at WARNING: nothing
    finally:
        asyncssh.set_debug_level(1)
    assert [record.name for record in caplog.records] == ["asyncssh.sftp"]


class Counting(SSHPacketLogger):
    _handler_names: ClassVar[dict[int, str]] = {3: "SOMETHING"}

    @property
    def logger(self) -> Any:
        return asyncssh_logger
