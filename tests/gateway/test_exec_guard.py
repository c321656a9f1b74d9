"""Uploads that do not say they are uploads (issue 9): SFTP and scp recognised by their bytes whatever the command
is called, and the download-only cap on what a command without a PTY takes from the client — with the stock
ssh, sftp, scp and rsync clients through the gateway to a real sshd."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from gateway.exec_guard import Verdict, classify
from tests.fixtures.sshd import OpenSSHServer
from tests.gateway.conftest import GrantFactory, Vendor, sshd_credential
from tests.gateway.fake_broker import FakeBroker
from tests.gateway.test_transfers import (
    MIB,
    _client_files,
    download_only,
    events,
    no_events,
    random_file,
    scp,
    sftp,
)

pytestmark = pytest.mark.anyio

REASON = "gatepass: site plant-a allows downloads only: "
CAP_REASON = (REASON + "sending more than 64 KiB (65536 bytes) of input to a command without a terminal "
              "(an upload) is refused; the session is ended")


def ssh_argv(vendor: Vendor, directory: Path, *remote: str, options: tuple[str, ...] = ()) -> list[str]:
    """The stock ``ssh`` through the gateway (the sftp/scp options, with ssh's own port flag)."""
    common = _client_files(vendor, directory / "client")
    common[common.index("-P")] = "-p"
    return ["ssh", *common, *options, f"{vendor.grant.asset}@127.0.0.1", *remote]


async def run(argv: list[str], stdin: bytes = b"", timeout: float = 30) -> tuple[int, bytes, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout)
    assert process.returncode is not None
    return process.returncode, stdout, stderr.decode(errors="replace")


def renaming_wrapper(directory: Path) -> Path:
    """An ``scp -S`` program that runs ssh with ``env`` put before the remote command: the same scp on the
    target, under a name the gateway's command parser does not know."""
    wrapper = directory / "ssh-env"
    wrapper.write_text(
        f"#!{sys.executable}\nimport os, sys\nargs = sys.argv[1:]\nargs[-1] = 'env ' + args[-1]\n"
        "os.execvp('ssh', ['ssh', *args])\n"
    )
    wrapper.chmod(0o755)
    return wrapper


# -- recognising the protocols by their first bytes ------------------------------------------------------------


@pytest.mark.parametrize(("first", "verdict"), [
    (b"\x00\x00\x00\x05\x01\x00\x00\x00\x03", Verdict.SFTP),  # SSH_FXP_INIT, version 3
    (b"\x00\x00\x00\x05\x01", Verdict.SFTP),
    (b"\x00", Verdict.SCP_DOWNLOAD),  # a sink's "ready" to scp -f
    (b"\x00\x00\x00\x00\x00\x00", Verdict.PLAIN),  # zeros, not a packet
    (b"\x00\x00\x00\x05\x03", Verdict.PLAIN),  # sftp-server refuses anything but INIT first
    (b"C0644 5 fw.bin\n", Verdict.SCP_UPLOAD),
    (b"D0755 0 configs\n", Verdict.SCP_UPLOAD),
    (b"T1700000000 0 1700000000 0\n", Verdict.SCP_UPLOAD),
    (b"T +17 0 1 0\n", Verdict.SCP_UPLOAD),  # scp.c reads the times with strtol: spaces and a sign pass
    (b"\x01\x02binary", Verdict.PLAIN),
    (b"C0FFEE\n", Verdict.PLAIN),
    (b"Done.\n", Verdict.PLAIN),
    (b"Tuesday\n", Verdict.PLAIN),
    (b"hi\n", Verdict.PLAIN),
])  # fmt: skip
def test_first_client_bytes_say_which_protocol_runs(first: bytes, verdict: Verdict) -> None:
    assert classify(first) is verdict


@pytest.mark.parametrize("prefix", [b"\x00\x00", b"\x00\x00\x00\x05", b"C", b"C064", b"C0644", b"T", b"T 1"])
def test_a_prefix_that_could_still_be_either_waits_for_more(prefix: bytes) -> None:
    assert classify(prefix) is None


def test_a_control_line_after_the_targets_ready_is_an_scp_upload() -> None:
    assert classify(b"Cx", target_said_ready=True) is Verdict.SCP_UPLOAD
    assert classify(b"Cx") is Verdict.PLAIN
    # The sink skips an error line and then takes a file: after its "ready", that starts an upload as well.
    assert classify(b"\x01skipped\nC0644 5 x\n", target_said_ready=True) is Verdict.SCP_UPLOAD


# -- download-only: each upload under another name --------------------------------------------------------------


async def test_sftp_server_under_another_name_is_inspected_and_refuses_the_upload(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    local = tmp_path / "firmware.bin"
    random_file(local, 100_000)
    remote = tmp_path / "remote"
    remote.mkdir()
    config_sha = random_file(remote / "plc.cfg", 300_000)
    vendor = grant_for(sshd_credential(sshd_target))
    download_only(fake_broker, vendor)

    code, _, stderr = await sftp(
        vendor, tmp_path, f"-put {local} {remote}/firmware.bin", f"get {remote}/plc.cfg {tmp_path}/plc.cfg",
        options=("-s", "env /usr/lib/openssh/sftp-server"),
    )  # fmt: skip

    assert code == 0, stderr
    assert f"{REASON}writing {remote}/firmware.bin is refused" in stderr
    assert not (remote / "firmware.bin").exists()
    assert hashlib.sha256((tmp_path / "plc.cfg").read_bytes()).hexdigest() == config_sha
    (refused,) = await events(fake_broker, "file_refused", 1)
    assert (refused["protocol"], refused["operation"], refused["path"]) == ("sftp", "open", f"{remote}/firmware.bin")
    (download,) = await events(fake_broker, "file_transferred", 1)
    assert (download["protocol"], download["bytes_read"], download["sha256_read"]) == ("sftp", 300_000, config_sha)
    assert [s["command"] for s in fake_broker.sessions.values()] == ["env /usr/lib/openssh/sftp-server"]


async def test_scp_sink_started_by_another_command_and_fed_a_stream_is_refused(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    vendor = grant_for(sshd_credential(sshd_target))
    download_only(fake_broker, vendor)
    stream = b"C0644 12 plc.cfg\nsetpoint=99\n\x00"

    code, stdout, stderr = await run(ssh_argv(vendor, tmp_path, f"env scp -t {remote}"), stream)

    assert code != 0
    assert f"{REASON}writing {remote} with scp is refused" in stderr
    # What scp itself would print: a fatal error line in the protocol (scp.c response()).
    assert b"\x02gatepass: site plant-a allows downloads only: " in stdout
    assert list(remote.iterdir()) == []
    (refused,) = await events(fake_broker, "file_refused", 1)
    assert (refused["protocol"], refused["operation"], refused["path"]) == ("scp", "upload", str(remote))
    assert refused["reason"] == f"site plant-a allows downloads only: writing {remote} with scp is refused"


async def test_stock_scp_through_a_wrapper_that_renames_the_remote_command_is_refused_and_downloads_work(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    local = tmp_path / "fw.bin"
    random_file(local, 5000)
    remote = tmp_path / "remote"
    remote.mkdir()
    config_sha = random_file(remote / "plc.cfg", 200_000)
    vendor = grant_for(sshd_credential(sshd_target))
    download_only(fake_broker, vendor)
    wrapper = renaming_wrapper(tmp_path)

    code, _, stderr = await scp(vendor, tmp_path, "-O", "-S", str(wrapper), str(local), f"{{asset}}:{remote}/fw.bin")
    assert code != 0
    assert f"{REASON}writing {remote}/fw.bin with scp is refused" in stderr
    assert not (remote / "fw.bin").exists()
    (refused,) = await events(fake_broker, "file_refused", 1)
    assert (refused["protocol"], refused["path"]) == ("scp", f"{remote}/fw.bin")

    code, _, stderr = await scp(
        vendor, tmp_path, "-O", "-S", str(wrapper), f"{{asset}}:{remote}/plc.cfg", str(tmp_path / "plc.cfg"))
    assert code == 0, stderr
    assert hashlib.sha256((tmp_path / "plc.cfg").read_bytes()).hexdigest() == config_sha
    (download,) = await events(fake_broker, "file_transferred", 1)
    assert (download["protocol"], download["mode"], download["path"]) == ("scp", "read", f"{remote}/plc.cfg")
    assert (download["bytes_read"], download["sha256_read"]) == (200_000, config_sha)
    upload_command, download_command = (s["command"] for s in fake_broker.sessions.values())
    assert upload_command.startswith("env scp -t ")
    assert download_command.startswith("env scp -f ")


async def test_piping_a_file_into_cat_is_cut_at_the_cap(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    download_only(fake_broker, vendor)
    target_file = tmp_path / "firmware.bin"
    data = os.urandom(MIB)

    code, _, stderr = await run(ssh_argv(vendor, tmp_path, f"cat > {target_file}"), data)

    assert code != 0
    assert CAP_REASON in stderr
    # The shell's redirection makes the file before any byte arrives; at most the cap of the upload reaches it.
    assert not target_file.exists() or target_file.stat().st_size <= 65536
    (refused,) = await events(fake_broker, "file_refused", 1)
    assert (refused["protocol"], refused["operation"], refused["limit"]) == ("exec", "upload", 65536)
    assert refused["bytes"] > 65536
    assert refused["command"] == f"cat > {target_file}"
    assert refused["reason"] == CAP_REASON.removeprefix("gatepass: ").removesuffix("; the session is ended")


async def test_the_cap_is_the_sites_limit_and_small_input_still_works(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    download_only(fake_broker, vendor)
    fake_broker.grants[vendor.grant.grant_id].exec_upload_limit = 1000

    code, stdout, stderr = await run(ssh_argv(vendor, tmp_path, "cat"), b"hi\n")
    assert (code, stdout) == (0, b"hi\n"), stderr
    code, stdout, stderr = await run(ssh_argv(vendor, tmp_path, "cat"), b"x" * 1000)
    assert (code, len(stdout)) == (0, 1000), stderr
    code, _, stderr = await run(ssh_argv(vendor, tmp_path, f"cat > {tmp_path}/big.txt"), b"x" * 1001)
    assert code != 0
    assert "sending more than 1000 bytes of input to a command without a terminal" in stderr
    assert len(await events(fake_broker, "file_refused", 1)) == 1


async def test_a_shell_without_a_pty_is_capped_like_a_command(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    vendor = grant_for(sshd_credential(sshd_target))
    download_only(fake_broker, vendor)
    script = f"cat > {tmp_path}/fw.b64 <<'EOF'\n".encode() + b"QUFB" * 40_000 + b"\nEOF\n"

    # `ssh host < script`: no command and no terminal, so the shell reads the script from the client.
    code, _, stderr = await run([*ssh_argv(vendor, tmp_path), "-T"], script)

    assert code != 0
    assert CAP_REASON in stderr
    assert not (tmp_path / "fw.b64").exists() or (tmp_path / "fw.b64").stat().st_size <= 65536
    assert [s["kind"] for s in fake_broker.sessions.values()] == ["shell"]


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed (.ci/run installs it)")
async def test_rsync_upload_is_cut_at_the_cap(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    local = tmp_path / "fw.bin"
    random_file(local, MIB)
    remote = tmp_path / "remote"
    remote.mkdir()
    vendor = grant_for(sshd_credential(sshd_target))
    download_only(fake_broker, vendor)
    ssh = ssh_argv(vendor, tmp_path)[:-1]  # rsync adds the login and its own `rsync --server` command

    code, _, stderr = await run(["rsync", "-e", " ".join(ssh), str(local), f"{vendor.grant.asset}@127.0.0.1:{remote}/"])

    assert code != 0
    assert CAP_REASON in stderr
    assert not (remote / "fw.bin").exists()
    assert sum(path.stat().st_size for path in remote.iterdir()) <= 65536  # rsync removes its partial file
    (refused,) = await events(fake_broker, "file_refused", 1)
    assert refused["command"].startswith("rsync --server")


# -- download-only: what still works ---------------------------------------------------------------------------


async def test_downloads_and_typing_at_a_pty_still_work_on_a_download_only_site(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    (tmp_path / "remote").mkdir()
    config_sha = random_file(tmp_path / "remote" / "plc.cfg", 3 * MIB)
    vendor = grant_for(sshd_credential(sshd_target))
    download_only(fake_broker, vendor)

    # A large download over a plain command: the client sends nothing, the cap is not touched.
    code, stdout, stderr = await run(ssh_argv(vendor, tmp_path, f"cat {tmp_path}/remote/plc.cfg"))
    assert code == 0, stderr
    assert hashlib.sha256(stdout).hexdigest() == config_sha

    # Typing (here: 100 lines of 1000 characters) at a terminal is interactive work, not capped.
    async with await vendor.connect() as conn:
        process = await conn.create_process(
            "stty -echo; head -c 100100 > /dev/null && echo typed-it-all", term_type="xterm", term_size=(80, 24))
        for _ in range(100):
            process.stdin.write("a" * 1000 + "\n")
        result = await asyncio.wait_for(process.wait(), 15)
    assert result.exit_status == 0, result.stderr
    assert "typed-it-all" in str(result.stdout)
    assert await no_events(fake_broker, "file_refused", pause=0.3) == []


async def test_sites_with_uploads_allowed_get_the_transfer_reported_and_no_cap(
    grant_for: GrantFactory, sshd_target: OpenSSHServer, fake_broker: FakeBroker, tmp_path: Path
) -> None:
    local, upload_sha = tmp_path / "fw.bin", random_file(tmp_path / "fw.bin", 2 * MIB + 3)
    remote = tmp_path / "remote"
    remote.mkdir()
    vendor = grant_for(sshd_credential(sshd_target))

    code, _, stderr = await sftp(vendor, tmp_path, f"put {local} {remote}/fw.bin",
                                 options=("-s", "env /usr/lib/openssh/sftp-server"))
    assert code == 0, stderr
    code, _, stderr = await scp(vendor, tmp_path, "-O", "-S", str(renaming_wrapper(tmp_path)), str(local),
                                f"{{asset}}:{remote}/fw2.bin")
    assert code == 0, stderr
    code, _, stderr = await run(ssh_argv(vendor, tmp_path, f"cat > {remote}/fw3.bin"), local.read_bytes())
    assert code == 0, stderr

    for name in ("fw.bin", "fw2.bin", "fw3.bin"):
        assert hashlib.sha256((remote / name).read_bytes()).hexdigest() == upload_sha
    sftp_upload, scp_upload = await events(fake_broker, "file_transferred", 2)
    assert (sftp_upload["protocol"], sftp_upload["path"], sftp_upload["sha256_written"]) == (
        "sftp", f"{remote}/fw.bin", upload_sha)
    assert (scp_upload["protocol"], scp_upload["path"], scp_upload["sha256_written"]) == (
        "scp", f"{remote}/fw2.bin", upload_sha)
