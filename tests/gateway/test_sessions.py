"""Exec, shell and sftp through the gateway to a real OpenSSH sshd, with a real asyncssh client."""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import GrantFactory, sshd_credential
from tests.gateway.fake_broker import FakeBroker

pytestmark = pytest.mark.anyio


async def test_exec_passes_stdin_stdout_and_exit_status(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, broker: FakeBroker
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    async with await vendor.connect() as conn:
        result = await conn.run("cat; echo err >&2; exit 7", input="hello\n")
    assert result.stdout == "hello\n"
    assert result.stderr == "err\n"
    assert result.exit_status == 7
    await asyncio.sleep(0.2)
    ((session_id, started),) = broker.sessions.items()
    assert started["kind"] == "exec"
    assert started["command"] == "cat; echo err >&2; exit 7"
    assert broker.ended[session_id]["reason"] == "client_closed"
    assert broker.ended[session_id]["bytes_in"] == 6
    assert broker.ended[session_id]["bytes_out"] == 10
