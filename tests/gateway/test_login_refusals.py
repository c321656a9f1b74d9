"""Every refused SSH login at the gateway reaches the broker's audit trail (IEC 62443-3-3 SR 2.8): a certificate for
another asset, an expired one, one from a foreign CA, a plain key, `ssh -R` asked before authorisation — with the
presented key's fingerprint, the certificate's key id and the reason. Stock OpenSSH client, real gateway."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import GrantFactory, Vendor, sshd_credential
from tests.gateway.fake_broker import FakeBroker

pytestmark = pytest.mark.anyio


async def _ssh_login(vendor: Vendor, directory: Path, *, login: str, key: asyncssh.SSHKey,
                     cert: asyncssh.SSHCertificate | None) -> tuple[int, bytes]:
    key_file = directory / "id_ed25519"
    key_file.write_bytes(key.export_private_key())
    os.chmod(key_file, 0o600)
    options = ["-o", "CertificateFile=none"]
    if cert is not None:
        cert_file = directory / "id_ed25519-cert.pub"
        cert_file.write_bytes(cert.export_certificate())
        options = ["-o", f"CertificateFile={cert_file}"]
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{vendor.gateway.port} {vendor.gateway.host_public_key}\n")
    process = await asyncio.create_subprocess_exec(
        "ssh", "-F", "none", "-p", str(vendor.gateway.port), "-i", str(key_file), *options,
        "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", f"{login}@127.0.0.1", "true",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode is not None
    return process.returncode, stderr


def _certificates(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The certificate attempts of a report (OpenSSH offers the plain key after its certificate, too)."""
    kinds = [a["kind"] for a in report["attempts"]]
    assert set(kinds) <= {"certificate", "key"}, kinds
    return [a for a in report["attempts"] if a["kind"] == "certificate"]


async def _one_report(fake_broker: FakeBroker, timeout: float = 5.0) -> dict[str, Any]:
    await fake_broker.until(lambda: fake_broker.login_refusals, timeout=timeout, what="a refused login")
    [report] = fake_broker.login_refusals
    return report


async def test_a_certificate_for_another_asset_is_reported(grant_for: GrantFactory, fake_broker: FakeBroker,
                                                           tmp_path: Path) -> None:
    vendor = grant_for(None, asset="hmi-01")

    code, stderr = await _ssh_login(vendor, tmp_path, login="plc-01", key=vendor.key, cert=vendor.cert)

    assert code == 255
    assert b"Permission denied" in stderr
    report = await _one_report(fake_broker)
    assert (report["peer"], report["username"]) == ("127.0.0.1", "plc-01")
    [attempt] = _certificates(report)
    assert attempt["kind"] == "certificate"
    assert attempt["reason"] == "certificate is for hmi-01, not plc-01"
    assert attempt["identity"] == "vendor1"
    assert vendor.grant.grant_id in attempt["key_id"]
    assert attempt["fingerprint"] == vendor.key.get_fingerprint()


async def test_an_expired_certificate_is_reported(grant_for: GrantFactory, fake_broker: FakeBroker,
                                                  tmp_path: Path) -> None:
    vendor = grant_for(None, valid_before=time.time() - 10)  # valid from 30 s ago until 10 s ago

    code, _ = await _ssh_login(vendor, tmp_path, login="hmi-01", key=vendor.key, cert=vendor.cert)

    assert code == 255
    [attempt] = _certificates(await _one_report(fake_broker))
    assert attempt["reason"].startswith("certificate expired at ")
    assert attempt["identity"] == "vendor1"


async def test_a_foreign_ca_and_a_plain_key_are_reported_without_a_believed_identity(
    grant_for: GrantFactory, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(None)
    foreign_ca, key = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    forged = foreign_ca.generate_user_certificate(key, "gatepass grant=grt-forged identity=sup-a1",
                                                  principals=["hmi-01"], valid_after=0, valid_before=2**40)

    code, _ = await _ssh_login(vendor, tmp_path, login="hmi-01", key=key, cert=forged)
    assert code == 255
    [attempt] = _certificates(await _one_report(fake_broker))
    assert attempt["reason"] == "certificate signed by a CA this gateway does not trust"
    assert attempt["identity"] is None  # the key id is the forger's word, not an identity
    assert attempt["key_id"] == "gatepass grant=grt-forged identity=sup-a1"

    fake_broker.login_refusals.clear()
    code, _ = await _ssh_login(vendor, tmp_path / "..", login="hmi-01", key=key, cert=None)
    assert code == 255
    [attempt] = (await _one_report(fake_broker))["attempts"]
    assert (attempt["kind"], attempt["fingerprint"]) == ("key", key.get_fingerprint())
    assert attempt["reason"] == "a plain SSH key is not a grant certificate"


async def test_a_good_login_reports_nothing(grant_for: GrantFactory, fake_broker: FakeBroker, tmp_path: Path) -> None:
    vendor = grant_for(None, ssh=False, ports=[502])
    async with await vendor.connect():
        pass
    # A report that must NOT come has no condition to wait on: this bounded pause gives a wrong one (sent in the
    # background, like every report) the time to arrive.
    await asyncio.sleep(0.2)
    assert fake_broker.login_refusals == []


async def test_an_unknown_subsystem_is_reported_under_the_grant(grant_for: GrantFactory, fake_broker: FakeBroker,
                                                                sshd_target: OpenSSHServer) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    async with await vendor.connect() as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_session(asyncssh.SSHClientSession, subsystem="netconf")
        await fake_broker.until(lambda: fake_broker.refusals, what="the refused subsystem")
    [refusal] = fake_broker.refusals
    assert (refusal["grant_id"], refusal["kind"]) == (vendor.grant.grant_id, "subsystem")
    assert "netconf" in refusal["reason"]
