"""The stock OpenSSH client through the gateway: what a vendor actually sees in their terminal."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.fixtures.ports import free_port
from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import GrantFactory, Vendor, sshd_credential
from tests.gateway.fake_broker import FakeBroker

pytestmark = pytest.mark.anyio


def _ssh_argv(vendor: Vendor, directory: Path, *remote: str, options: tuple[str, ...] = ()) -> list[str]:
    key = directory / "id_ed25519"
    key.write_bytes(vendor.key.export_private_key())
    os.chmod(key, 0o600)
    cert = directory / "id_ed25519-cert.pub"
    cert.write_bytes(vendor.cert.export_certificate())
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{vendor.gateway.port} {vendor.gateway.host_public_key}\n")
    return [
        "ssh", "-F", "none", "-p", str(vendor.gateway.port),
        "-i", str(key), "-o", f"CertificateFile={cert}", "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        *options, f"{vendor.grant.asset}@127.0.0.1", *remote,
    ]  # fmt: skip


async def _ssh(argv: list[str], stdin: bytes = b"", timeout: float = 10) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout)
    assert process.returncode is not None
    return process.returncode, stdout, stderr


async def _ssh_running(argv: list[str], first_line: bytes = b"started\n") -> asyncio.subprocess.Process:
    """The stock ssh, returned once the remote command's first line came back through the gateway: from then on
    the session runs (and what it printed is recorded), so a test can cut it without guessing when."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 10)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    assert line == first_line, f"the session did not start: ssh printed {line!r} first"
    return process


async def _ssh_finished(process: asyncio.subprocess.Process, timeout: float) -> tuple[int, bytes, bytes]:
    """What an ``_ssh_running`` ssh printed after its first line, and its exit code."""
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, stdout, stderr


async def test_command_output_and_exit_code(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    code, stdout, _ = await _ssh(_ssh_argv(vendor, tmp_path, "cat; exit 4"), stdin=b"via gateway\n")
    assert (code, stdout) == (4, b"via gateway\n")


async def test_terminal_session_with_tt(grant_for: GrantFactory, sshd_target: OpenSSHServer, tmp_path: Path) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    code, stdout, _ = await _ssh(_ssh_argv(vendor, tmp_path, options=("-tt",)), stdin=b"tty; exit 5\n")
    assert code == 5
    assert b"/dev/pts/" in stdout


async def test_revocation_message_is_printed_and_ssh_exits_255(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    process = await _ssh_running(_ssh_argv(vendor, tmp_path, "echo started; sleep 30"))
    fake_broker.revoke(vendor.grant.grant_id)
    code, stdout, stderr = await _ssh_finished(process, 2)
    assert stdout == b""  # nothing after "started"
    assert b"gatepass: access to hmi-01 ended: the grant was revoked by the plant" in stderr
    assert code == 255


async def test_broker_refusal_is_printed(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    fake_broker.grants[vendor.grant.grant_id].status = "revoked"
    code, stdout, stderr = await _ssh(_ssh_argv(vendor, tmp_path, "echo should-not-run"))
    assert stdout == b""
    assert b"gatepass: access to hmi-01 refused: the grant for hmi-01 was revoked" in stderr
    assert code != 0


async def test_no_session_connection_is_told_at_disconnect(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target), seconds=1.5)
    code, _, stderr = await _ssh(_ssh_argv(vendor, tmp_path, options=("-N",)), timeout=5)
    assert code == 255
    assert b"access to hmi-01 ended: the grant expired at" in stderr


async def test_local_forward_with_ssh_L(grant_for: GrantFactory, plc_port: int, tmp_path: Path) -> None:
    vendor = grant_for(None, ssh=False, ports=[plc_port])
    local = free_port()
    argv = _ssh_argv(
        vendor, tmp_path, options=("-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:hmi-01:{plc_port}")
    )
    ssh = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:  # ssh -N prints nothing once its forward listens: connecting is the only way to know
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", local)
                break
            except OSError as exc:
                refused = exc
            assert ssh.returncode is None, f"ssh -L exited ({refused})"
            assert loop.time() < deadline, f"ssh -L did not listen on port {local} within 5 s ({refused})"
            await asyncio.sleep(0.02)
        writer.write(b"read holding registers")
        assert await asyncio.wait_for(reader.readexactly(22), 5) == b"read holding registers"
        writer.close()
    finally:
        ssh.terminate()
        await ssh.wait()


@pytest.mark.parametrize("cipher", ["3des-cbc", "aes128-cbc", "aes128-ctr", "chacha20-poly1305@openssh.com"])
async def test_weak_or_slow_ciphers_are_not_offered(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, tmp_path: Path, cipher: str
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    code, _, stderr = await _ssh(_ssh_argv(vendor, tmp_path, "true", options=("-o", f"Ciphers={cipher}")))
    assert code == 255
    assert b"no matching cipher" in stderr


async def test_stock_client_negotiates_aes_gcm(grant_for: GrantFactory, sshd_target: OpenSSHServer,
                                               tmp_path: Path) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    code, _, stderr = await _ssh(_ssh_argv(vendor, tmp_path, "true", options=("-v",)))
    assert code == 0
    assert b"cipher: aes128-gcm@openssh.com" in stderr
