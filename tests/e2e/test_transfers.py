"""File transfers end to end: the stock sftp client through `gatepass serve` to a real sshd, and what the
audit trail says about them (gateway:file:transferred / changed / refused), on a normal and a
download-only site — also uploads that do not call themselves uploads (issue 9)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow


def _approved_grant(stack: Stack, asset: str, approver: str) -> dict[str, Any]:
    grant = stack.fresh_grant(asset, "--for", "10m", "--reason", "firmware update", approver=approver)
    stack.gatepass("ssh-config", user="vendor1")  # writes the certificate and pins the gateway's key
    return grant


def _sftp(stack: Stack, asset: str, directory: Path, *commands: str) -> subprocess.CompletedProcess[str]:
    home = stack.home("vendor1")
    batch = directory / "batch"
    batch.write_text("".join(command + "\n" for command in commands))
    argv = [
        "sftp", "-P", str(stack.ssh_port), "-i", str(home / "id_ed25519"),
        "-o", f"CertificateFile={home / 'certs' / f'{asset}-cert.pub'}", "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-b", str(batch), f"{asset}@127.0.0.1",
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_sftp_upload_and_rename_are_in_the_audit_trail(stack: Stack, tmp_path: Path) -> None:
    grant = _approved_grant(stack, "hmi-01", "sup-a1")
    firmware = tmp_path / "firmware.bin"
    data = os.urandom(1024 * 1024 + 17)
    firmware.write_bytes(data)
    remote = tmp_path / "remote"
    remote.mkdir()

    result = _sftp(
        stack,
        "hmi-01",
        tmp_path,
        f"put {firmware} {remote}/firmware.new",
        f"rename {remote}/firmware.new {remote}/fw.bin",
    )

    assert result.returncode == 0, result.stderr
    assert (remote / "fw.bin").read_bytes() == data
    (transferred,) = stack.grant_events("gateway:file:transferred", grant["id"])
    assert transferred["actor"] == "vendor1"
    assert transferred["outcome"] == "ok"
    details = transferred["details"]
    assert (details["path"], details["mode"], details["status"]) == (f"{remote}/firmware.new", "write", "ok")
    assert details["bytes_written"] == len(data)
    assert details["sha256_written"] == hashlib.sha256(data).hexdigest()
    (changed,) = stack.grant_events("gateway:file:changed", grant["id"])
    assert (changed["details"]["operation"], changed["details"]["new_path"]) == ("rename", f"{remote}/fw.bin")


def test_download_only_site_refuses_the_upload_and_audits_it(stack: Stack, tmp_path: Path) -> None:
    stack.gatepass("admin", "site", "set", "plant-b", "--transfers", "download-only")
    grant = _approved_grant(stack, "hmi-b", "sup-b")
    local = tmp_path / "firmware.bin"
    local.write_bytes(os.urandom(5000))
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "plc.cfg").write_text("setpoint=42\n")

    result = _sftp(
        stack, "hmi-b", tmp_path, f"-put {local} {remote}/firmware.bin", f"get {remote}/plc.cfg {tmp_path}/plc.cfg"
    )

    assert result.returncode == 0, result.stderr
    assert f"site plant-b allows downloads only: writing {remote}/firmware.bin is refused" in result.stderr
    assert not (remote / "firmware.bin").exists()
    assert (tmp_path / "plc.cfg").read_text() == "setpoint=42\n"
    (refused,) = stack.grant_events("gateway:file:refused", grant["id"])
    assert refused["outcome"] == "refused"
    assert "allows downloads only" in refused["details"]["reason"]
    (download,) = stack.grant_events("gateway:file:transferred", grant["id"])
    assert (download["details"]["mode"], download["details"]["bytes_read"]) == ("read", 12)


def _ssh(stack: Stack, asset: str, *remote: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    home = stack.home("vendor1")
    argv = [
        "ssh", "-F", "none", "-p", str(stack.ssh_port), "-i", str(home / "id_ed25519"),
        "-o", f"CertificateFile={home / 'certs' / f'{asset}-cert.pub'}", "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={home / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", f"{asset}@127.0.0.1", *remote,
    ]  # fmt: skip
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=60, check=False)


def test_download_only_site_cuts_an_upload_by_command_at_its_limit_and_audits_it(
    stack: Stack, tmp_path: Path
) -> None:
    stack.gatepass("admin", "site", "set", "plant-b", "--transfers", "download-only", "--exec-upload-limit", "16k")
    grant = _approved_grant(stack, "hmi-b", "sup-b")
    remote = tmp_path / "remote"
    remote.mkdir()

    small = _ssh(stack, "hmi-b", "cat", stdin=b"hi\n")
    assert (small.returncode, small.stdout) == (0, b"hi\n"), small.stderr
    result = _ssh(stack, "hmi-b", f"cat > {remote}/fw.bin", stdin=os.urandom(1024 * 1024))
    stream = _ssh(stack, "hmi-b", f"env scp -t {remote}", stdin=b"C0644 12 plc.cfg\nsetpoint=99\n\x00")

    assert result.returncode != 0
    assert ("gatepass: site plant-b allows downloads only: sending more than 16 KiB (16384 bytes) of input to a "
            "command without a terminal (an upload) is refused; the session is ended") in result.stderr.decode()
    assert not (remote / "fw.bin").exists() or (remote / "fw.bin").stat().st_size <= 16384
    assert stream.returncode != 0
    assert f"site plant-b allows downloads only: writing {remote} with scp is refused" in stream.stderr.decode()
    assert not (remote / "plc.cfg").exists()
    cut, scp_refused = stack.grant_events("gateway:file:refused", grant["id"], count=2)
    assert cut["outcome"] == "refused"
    assert (cut["details"]["protocol"], cut["details"]["limit"]) == ("exec", 16384)
    assert cut["details"]["command"] == f"cat > {remote}/fw.bin"
    assert "sending more than 16 KiB" in cut["details"]["reason"]
    assert (scp_refused["details"]["protocol"], scp_refused["details"]["path"]) == ("scp", str(remote))
    [changed] = [e for e in stack.audit_events() if e["action"] == "admin:site:updated"
                 and "exec_upload_limit" in e["details"]]
    assert changed["details"]["exec_upload_limit"] == {"old": 65536, "new": 16384}
