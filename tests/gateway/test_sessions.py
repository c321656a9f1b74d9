"""Exec, shell and sftp through the gateway to a real OpenSSH sshd, with a real asyncssh client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh
import pytest

from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import GrantFactory, sshd_credential
from tests.gateway.fake_broker import FakeBroker

pytestmark = pytest.mark.anyio


async def test_exec_passes_stdin_stdout_and_exit_status(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    async with await vendor.connect() as conn:
        result = await conn.run("cat; echo err >&2; exit 7", input="hello\n")
    assert result.stdout == "hello\n"
    assert result.stderr == "err\n"
    assert result.exit_status == 7
    await fake_broker.until(lambda: len(fake_broker.ended) == 1, what="the session's end")
    ((session_id, started),) = fake_broker.sessions.items()
    assert started["kind"] == "exec"
    assert started["command"] == "cat; echo err >&2; exit 7"
    assert fake_broker.ended[session_id]["reason"] == "client_closed"
    assert fake_broker.ended[session_id]["bytes_in"] == 6
    assert fake_broker.ended[session_id]["bytes_out"] == 10


async def test_shell_with_pty_passes_terminal_size_and_resize(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    async with await vendor.connect() as conn:
        process = await conn.create_process(term_type="xterm", term_size=(100, 30), encoding=None)
        process.stdin.write(b"stty size; echo TERM=$TERM\n")
        output = b""
        while b"TERM=xterm" not in output:
            output += await asyncio.wait_for(process.stdout.read(4096), 5)
        assert b"30 100" in output
        process.change_terminal_size(120, 40)
        process.stdin.write(b"stty size; exit 3\n")
        result = await asyncio.wait_for(process.wait(), 5)
        assert result.exit_status == 3
        assert b"40 120" in result.stdout
    await fake_broker.until(lambda: len(fake_broker.sessions) == 1, what="the session's start")
    (started,) = fake_broker.sessions.values()
    assert started["kind"] == "shell"


async def test_non_interactive_identity_runs_commands_but_gets_no_shell(
    grant_for: GrantFactory, sshd_target: OpenSSHServer
) -> None:
    vendor = grant_for(sshd_credential(sshd_target), identity="ai-maint", interactive=False)
    async with await vendor.connect() as conn:
        result = await conn.run("echo ok")
        assert result.stdout == "ok\n"
        with pytest.raises(asyncssh.ChannelOpenError):
            # asyncssh's client raises when the shell request is refused.
            await conn.create_process()


async def test_sftp_is_bridged_to_the_target(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, tmp_path: Path, fake_broker: FakeBroker
) -> None:
    remote = tmp_path / "remote.txt"
    remote.write_text("firmware v2\n")
    vendor = grant_for(sshd_credential(sshd_target))
    async with await vendor.connect() as conn, conn.start_sftp_client() as sftp:
        async with sftp.open(str(remote)) as file:
            assert await file.read() == "firmware v2\n"
        await sftp.put(str(remote), str(tmp_path / "copy.txt"))
    assert (tmp_path / "copy.txt").read_text() == "firmware v2\n"
    await fake_broker.until(lambda: len(fake_broker.sessions) == 1, what="the session's start")
    assert [s["kind"] for s in fake_broker.sessions.values()] == ["sftp"]


async def test_tcp_forwarding_and_remote_forwarding_are_refused_with_a_reason(
    grant_for: GrantFactory, sshd_target: OpenSSHServer
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    async with await vendor.connect() as conn:
        # A certificate without permit-port-forwarding: asyncssh refuses before the gateway is asked.
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await conn.create_connection(asyncssh.SSHTCPSession, "hmi-01", 502)
        assert refused.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)
        # The connection survives both refusals.
        assert (await conn.run("echo still-here")).stdout == "still-here\n"
