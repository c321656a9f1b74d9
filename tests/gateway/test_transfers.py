"""File transfers with the stock sftp and scp clients through the gateway to a real sshd: what arrives,
what the audit trail hears (file_transferred / file_changed / file_refused), and download-only sites."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.demo import ThreadedDemoTarget
from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import GrantFactory, Vendor, sshd_credential
from tests.gateway.fake_broker import FakeBroker

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


def _client_files(vendor: Vendor, directory: Path) -> list[str]:
    """Options every stock client needs: the grant key and certificate, the gateway's pinned host key."""
    directory.mkdir(exist_ok=True)
    key = directory / "id_ed25519"
    key.write_bytes(vendor.key.export_private_key())
    os.chmod(key, 0o600)
    cert = directory / "id_ed25519-cert.pub"
    cert.write_bytes(vendor.cert.export_certificate())
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{vendor.gateway.port} {vendor.gateway.host_public_key}\n")
    return [
        "-F", "none", "-P", str(vendor.gateway.port), "-i", str(key), "-o", f"CertificateFile={cert}",
        "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
    ]  # fmt: skip


async def _run(argv: list[str], timeout: float = 30) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


async def sftp(vendor: Vendor, directory: Path, *commands: str, options: tuple[str, ...] = ()) -> tuple[int, str, str]:
    """Run the stock ``sftp -b`` with ``commands`` through the gateway."""
    batch = directory / "batch"
    batch.write_text("".join(command + "\n" for command in commands))
    login = f"{vendor.grant.asset}@127.0.0.1"
    argv = ["sftp", *_client_files(vendor, directory / "client"), *options, "-b", str(batch), login]
    return await _run(argv)


async def scp(vendor: Vendor, directory: Path, *args: str) -> tuple[int, str, str]:
    """Run the stock ``scp`` through the gateway; ``{asset}`` in an argument is the gateway login."""
    login = f"{vendor.grant.asset}@127.0.0.1"
    return await _run(["scp", *_client_files(vendor, directory / "client"), *(a.format(asset=login) for a in args)])


def _details(fake_broker: FakeBroker, kind: str) -> list[dict[str, Any]]:
    return [body["detail"] for _, body in fake_broker.session_events if body["kind"] == kind]


async def events(fake_broker: FakeBroker, kind: str, count: int, timeout: float = 5) -> list[dict[str, Any]]:
    """The details of the session events of ``kind``, once there are ``count`` (waiting for background reports)."""
    await fake_broker.until(lambda: len(_details(fake_broker, kind)) >= count, timeout=timeout,
                            what=f"{count} {kind} event(s)")
    return _details(fake_broker, kind)


async def no_events(fake_broker: FakeBroker, kind: str, pause: float = 0.2) -> list[dict[str, Any]]:
    """The session events of ``kind`` after a short bounded pause: for a report that must NOT come there is no
    condition to wait on, so the pause is what gives a wrong report the time to arrive."""
    await asyncio.sleep(pause)
    return _details(fake_broker, kind)


def random_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def download_only(fake_broker: FakeBroker, vendor: Vendor) -> None:
    fake_broker.grants[vendor.grant.grant_id].transfers = "download_only"


# -- SFTP ------------------------------------------------------------------------------------------------


async def test_sftp_upload_and_download_arrive_intact_and_are_recorded_with_size_and_sha256(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    firmware, upload_sha = tmp_path / "firmware.bin", random_file(tmp_path / "firmware.bin", 3 * MIB + 123)
    remote = tmp_path / "remote"
    remote.mkdir()
    config_sha = random_file(remote / "plc.cfg", 2 * MIB + 7)
    vendor = grant_for(sshd_credential(sshd_target))

    code, _, stderr = await sftp(
        vendor, tmp_path, f"put {firmware} {remote}/firmware.bin", f"get {remote}/plc.cfg {tmp_path}/plc.cfg"
    )

    assert code == 0, stderr
    assert hashlib.sha256((remote / "firmware.bin").read_bytes()).hexdigest() == upload_sha
    assert hashlib.sha256((tmp_path / "plc.cfg").read_bytes()).hexdigest() == config_sha
    upload, download = await events(fake_broker, "file_transferred", 2)
    assert upload["path"] == f"{remote}/firmware.bin"
    assert (upload["protocol"], upload["mode"], upload["status"]) == ("sftp", "write", "ok")
    assert upload["bytes_written"] == upload["size"] == 3 * MIB + 123
    assert upload["sha256_written"] == upload_sha
    assert upload["bytes_read"] == 0
    assert upload["open_flags"] == "write,creat,trunc"
    assert download["path"] == f"{remote}/plc.cfg"
    assert (download["mode"], download["status"]) == ("read", "ok")
    assert download["bytes_read"] == download["size"] == 2 * MIB + 7
    assert download["sha256_read"] == config_sha
    assert "sha256_written" not in download
    # Every event is a flat, short detail the broker accepts (broker/api/schemas.py SessionEventIn).
    for detail in (upload, download):
        assert len(detail) <= 16
        assert all(len(key) <= 32 and isinstance(value, str | int | bool | type(None)) for key, value in detail.items())


async def test_sftp_rename_remove_and_directory_changes_are_recorded(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "old.cfg").write_text("setpoint=42\n")
    vendor = grant_for(sshd_credential(sshd_target))

    code, _, stderr = await sftp(
        vendor, tmp_path, f"rename {remote}/old.cfg {remote}/new.cfg", f"chmod 600 {remote}/new.cfg",
        f"mkdir {remote}/backup", f"rmdir {remote}/backup", f"rm {remote}/new.cfg", f"-rm {remote}/missing.cfg",
    )  # fmt: skip

    assert code == 0, stderr
    assert list(remote.iterdir()) == []
    changes = await events(fake_broker, "file_changed", 6)
    # OpenSSH renames with posix-rename@openssh.com when the server offers it.
    assert [(c["operation"], c["path"], c.get("new_path")) for c in changes] == [
        ("rename", f"{remote}/old.cfg", f"{remote}/new.cfg"),
        ("setstat", f"{remote}/new.cfg", None),
        ("mkdir", f"{remote}/backup", None),
        ("rmdir", f"{remote}/backup", None),
        ("remove", f"{remote}/new.cfg", None),
        ("remove", f"{remote}/missing.cfg", None),
    ]
    assert [c["status"] for c in changes[:5]] == ["ok"] * 5
    assert changes[5]["status"].startswith("no such file")
    assert changes[1]["attributes"] == "mode=0600"


async def test_download_only_site_refuses_uploads_and_changes_but_allows_downloads(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    local = tmp_path / "firmware.bin"
    random_file(local, 100_000)
    remote = tmp_path / "remote"
    remote.mkdir()
    config_sha = random_file(remote / "plc.cfg", 1 * MIB)
    vendor = grant_for(sshd_credential(sshd_target))
    download_only(fake_broker, vendor)

    code, _, stderr = await sftp(
        vendor, tmp_path, f"-put {local} {remote}/firmware.bin", f"-rm {remote}/plc.cfg",
        f"-rename {remote}/plc.cfg {remote}/x.cfg", f"-mkdir {remote}/new", f"get {remote}/plc.cfg {tmp_path}/plc.cfg",
    )  # fmt: skip

    assert code == 0, stderr
    assert f"gatepass: site plant-a allows downloads only: writing {remote}/firmware.bin is refused" in stderr
    assert f"allows downloads only: removing {remote}/plc.cfg is refused" in stderr
    assert "Permission denied" in stderr  # what sftp itself prints for the refusal
    assert sorted(p.name for p in remote.iterdir()) == ["plc.cfg"]
    assert hashlib.sha256((tmp_path / "plc.cfg").read_bytes()).hexdigest() == config_sha
    refused = await events(fake_broker, "file_refused", 4)
    assert [r["reason"] for r in refused] == [
        f"site plant-a allows downloads only: writing {remote}/firmware.bin is refused",
        f"site plant-a allows downloads only: removing {remote}/plc.cfg is refused",
        f"site plant-a allows downloads only: renaming {remote}/plc.cfg to {remote}/x.cfg is refused",
        f"site plant-a allows downloads only: creating the directory {remote}/new is refused",
    ]
    assert [(r["operation"], r["path"], r.get("new_path")) for r in refused] == [
        ("open", f"{remote}/firmware.bin", None),
        ("remove", f"{remote}/plc.cfg", None),
        ("rename", f"{remote}/plc.cfg", f"{remote}/x.cfg"),
        ("mkdir", f"{remote}/new", None),
    ]
    assert refused[0]["open_flags"] == "write,creat,trunc"
    (download,) = await events(fake_broker, "file_transferred", 1)
    assert (download["mode"], download["bytes_read"], download["sha256_read"]) == ("read", MIB, config_sha)
    assert await no_events(fake_broker, "file_changed") == []


async def test_sftp_server_run_as_a_command_is_inspected_the_same(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    local = tmp_path / "firmware.bin"
    random_file(local, 1000)
    vendor = grant_for(sshd_credential(sshd_target))
    download_only(fake_broker, vendor)

    # sftp -s PATH asks for the server program with an exec request instead of the sftp subsystem.
    code, _, stderr = await sftp(
        vendor, tmp_path, f"put {local} {tmp_path}/up.bin", options=("-s", "/usr/lib/openssh/sftp-server")
    )

    assert code != 0
    assert f"allows downloads only: writing {tmp_path}/up.bin is refused" in stderr
    assert not (tmp_path / "up.bin").exists()
    assert [s["kind"] for s in fake_broker.sessions.values()] == ["exec"]
    assert len(await events(fake_broker, "file_refused", 1)) == 1


async def test_file_left_open_when_the_session_ends_is_reported(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    async with await vendor.connect() as conn, conn.start_sftp_client() as client:
        file = await client.open(str(tmp_path / "partial.bin"), "wb")
        await file.write(b"half a firmware")
        # The sftp session ends without closing the file.
    (record,) = await events(fake_broker, "file_transferred", 1)
    assert (record["path"], record["status"], record["bytes_written"]) == (
        str(tmp_path / "partial.bin"),
        "not closed",
        15,
    )
    assert record["sha256_written"] == hashlib.sha256(b"half a firmware").hexdigest()


# -- scp -------------------------------------------------------------------------------------------------


async def test_scp_in_sftp_mode_upload_and_download_are_recorded(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    local, upload_sha = tmp_path / "fw.bin", random_file(tmp_path / "fw.bin", 2 * MIB + 1)
    remote = tmp_path / "remote"
    remote.mkdir()
    vendor = grant_for(sshd_credential(sshd_target))

    code, _, stderr = await scp(vendor, tmp_path, str(local), f"{{asset}}:{remote}/fw.bin")
    assert code == 0, stderr
    code, _, stderr = await scp(vendor, tmp_path, f"{{asset}}:{remote}/fw.bin", str(tmp_path / "back.bin"))
    assert code == 0, stderr

    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
    upload, download = await events(fake_broker, "file_transferred", 2)
    assert (upload["protocol"], upload["mode"], upload["bytes_written"], upload["sha256_written"]) == (
        "sftp",
        "write",
        2 * MIB + 1,
        upload_sha,
    )
    assert (download["mode"], download["bytes_read"], download["sha256_read"]) == ("read", 2 * MIB + 1, upload_sha)
    assert [s["kind"] for s in fake_broker.sessions.values()] == ["sftp", "sftp"]


async def test_scp_in_sftp_mode_upload_on_a_download_only_site_is_refused_with_the_reason(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    local = tmp_path / "fw.bin"
    random_file(local, 1000)
    vendor = grant_for(sshd_credential(sshd_target))
    download_only(fake_broker, vendor)

    code, _, stderr = await scp(vendor, tmp_path, str(local), f"{{asset}}:{tmp_path}/uploaded.bin")

    assert code != 0
    assert f"site plant-a allows downloads only: writing {tmp_path}/uploaded.bin is refused" in stderr
    assert not (tmp_path / "uploaded.bin").exists()
    (refused,) = await events(fake_broker, "file_refused", 1)
    assert refused["protocol"] == "sftp"


async def test_legacy_scp_upload_and_download_are_recorded(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    local, upload_sha = tmp_path / "fw.bin", random_file(tmp_path / "fw.bin", 3 * MIB + 5)
    remote = tmp_path / "remote"
    remote.mkdir()
    vendor = grant_for(sshd_credential(sshd_target))

    code, _, stderr = await scp(vendor, tmp_path, "-O", "-p", str(local), f"{{asset}}:{remote}/fw.bin")
    assert code == 0, stderr
    code, _, stderr = await scp(vendor, tmp_path, "-O", f"{{asset}}:{remote}/fw.bin", str(tmp_path / "back.bin"))
    assert code == 0, stderr

    assert hashlib.sha256((remote / "fw.bin").read_bytes()).hexdigest() == upload_sha
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
    upload, download = await events(fake_broker, "file_transferred", 2)
    assert upload == {
        "protocol": "scp", "path": f"{remote}/fw.bin", "mode": "write", "bytes_read": 0,
        "bytes_written": 3 * MIB + 5, "sha256_written": upload_sha, "size": 3 * MIB + 5, "status": "ok",
        "permissions": f"{local.stat().st_mode & 0o7777:04o}",
    }  # fmt: skip
    assert (download["protocol"], download["path"], download["mode"]) == ("scp", f"{remote}/fw.bin", "read")
    assert (download["bytes_read"], download["sha256_read"], download["status"]) == (3 * MIB + 5, upload_sha, "ok")
    assert [s["kind"] for s in fake_broker.sessions.values()] == ["exec", "exec"]


async def test_legacy_scp_recursive_upload_and_download_record_each_file(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    tree = tmp_path / "configs"
    (tree / "line2").mkdir(parents=True)
    first = random_file(tree / "a.cfg", 10)
    second = random_file(tree / "line2" / "b.cfg", 0)
    remote = tmp_path / "remote"
    remote.mkdir()
    vendor = grant_for(sshd_credential(sshd_target))

    code, _, stderr = await scp(vendor, tmp_path, "-O", "-r", str(tree), f"{{asset}}:{remote}")
    assert code == 0, stderr
    code, _, stderr = await scp(vendor, tmp_path, "-O", "-r", f"{{asset}}:{remote}/configs", str(tmp_path / "back"))
    assert code == 0, stderr

    assert (remote / "configs" / "line2" / "b.cfg").exists()
    assert (tmp_path / "back" / "line2" / "b.cfg").exists()
    records = await events(fake_broker, "file_transferred", 4)
    seen = [(r["path"], r["mode"], r["bytes_written"] or r["bytes_read"], r.get("sha256_written") or r["sha256_read"])
            for r in records]  # fmt: skip
    assert sorted(seen) == [
        (f"{remote}/configs/a.cfg", "read", 10, first),
        (f"{remote}/configs/a.cfg", "write", 10, first),
        (f"{remote}/configs/line2/b.cfg", "read", 0, second),
        (f"{remote}/configs/line2/b.cfg", "write", 0, second),
    ]  # fmt: skip


async def test_legacy_scp_upload_on_a_download_only_site_is_refused_and_download_works(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    local = tmp_path / "fw.bin"
    random_file(local, 1000)
    remote = tmp_path / "remote"
    remote.mkdir()
    config_sha = random_file(remote / "plc.cfg", 5000)
    vendor = grant_for(sshd_credential(sshd_target))
    download_only(fake_broker, vendor)

    code, _, stderr = await scp(vendor, tmp_path, "-O", str(local), f"{{asset}}:{remote}/fw.bin")
    assert code != 0
    assert f"gatepass: site plant-a allows downloads only: writing {remote}/fw.bin is refused" in stderr
    assert not (remote / "fw.bin").exists()
    (refused,) = await events(fake_broker, "file_refused", 1)
    assert (refused["protocol"], refused["path"]) == ("scp", f"{remote}/fw.bin")

    code, _, stderr = await scp(vendor, tmp_path, "-O", f"{{asset}}:{remote}/plc.cfg", str(tmp_path / "plc.cfg"))
    assert code == 0, stderr
    assert hashlib.sha256((tmp_path / "plc.cfg").read_bytes()).hexdigest() == config_sha
    (download,) = await events(fake_broker, "file_transferred", 1)
    assert (download["bytes_read"], download["sha256_read"]) == (5000, config_sha)


# -- other SFTP peers -------------------------------------------------------------------------------------


async def test_asyncssh_client_and_server_stay_within_the_inspected_packet_size(
    grant_for: GrantFactory, demo_target: ThreadedDemoTarget, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    """asyncssh offers 4 MiB reads and writes; the gateway caps the limits@openssh.com answer to what it
    inspects, so both ends use smaller packets instead of the session ending."""
    assert demo_target.client_key is not None
    vendor = grant_for({
        "host": demo_target.host, "ssh_port": demo_target.port, "username": demo_target.username,
        "password": None, "private_key": demo_target.client_key.private_text, "host_key": demo_target.host_key,
    })  # fmt: skip
    local, sha = tmp_path / "fw.bin", random_file(tmp_path / "fw.bin", 6 * MIB)
    async with await vendor.connect() as conn, conn.start_sftp_client() as client:
        assert client.limits.max_write_len <= 256 * 1024
        await client.put(str(local), "/fw.bin")
        await client.get("/fw.bin", str(tmp_path / "back.bin"))
    assert hashlib.sha256((demo_target.target.home / "fw.bin").read_bytes()).hexdigest() == sha
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
    upload, download = await events(fake_broker, "file_transferred", 2)
    assert (upload["path"], upload["bytes_written"], upload["sha256_written"]) == ("/fw.bin", 6 * MIB, sha)
    assert (download["bytes_read"], download["sha256_read"]) == (6 * MIB, sha)
