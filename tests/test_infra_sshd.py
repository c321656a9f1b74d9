"""The sshd_target fixture is a real OpenSSH server that the stock ssh client logs in to."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.fixtures.sshd import OpenSSHServer, start_sshd


def run(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=30)


def test_exec_returns_output(sshd_target: OpenSSHServer) -> None:
    result = run(sshd_target.ssh_command("echo hi"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hi\n"


def test_exec_returns_exit_code(sshd_target: OpenSSHServer) -> None:
    result = run(sshd_target.ssh_command("exit 7"))
    assert result.returncode == 7, result.stderr


def test_stdin_and_stderr_pass_through(sshd_target: OpenSSHServer) -> None:
    result = run(sshd_target.ssh_command("tr a-z A-Z; echo oops >&2"), stdin=b"plant-a\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"PLANT-A\n"
    assert b"oops" in result.stderr


def test_host_key_is_pinned(sshd_target: OpenSSHServer) -> None:
    assert sshd_target.host_key.startswith("ssh-ed25519 AAAA")
    assert len(sshd_target.host_key.split()) == 2
    known_hosts = sshd_target.directory / "wrong_known_hosts"
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBl0dH5zp2l0ZWHTqKGqYNj+u3p0iRLvFY8Y9pShz2+1"
    known_hosts.write_text(f"[{sshd_target.host}]:{sshd_target.port} {other_key}\n")
    argv = sshd_target.ssh_command("true")
    argv[argv.index(f"UserKnownHostsFile={sshd_target.write_known_hosts()}")] = f"UserKnownHostsFile={known_hosts}"
    result = run(argv)
    assert result.returncode == 255
    assert b"HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_other_keys_are_refused_until_authorized(sshd_target: OpenSSHServer, ssh_keypair) -> None:
    stranger = ssh_keypair("stranger")
    refused = run(sshd_target.ssh_command("true", key=stranger.private_key))
    assert refused.returncode == 255
    assert b"Permission denied" in refused.stderr

    sshd_target.authorize(stranger.public_line)
    allowed = run(sshd_target.ssh_command("echo in", key=stranger.private_key))
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == b"in\n"


def test_sftp_subsystem(sshd_target: OpenSSHServer, tmp_path: Path) -> None:
    source = tmp_path / "firmware.bin"
    source.write_bytes(b"\x00\x01firmware")
    destination = tmp_path / "copied.bin"
    argv = sshd_target.ssh_command()
    # sftp takes the same options as ssh, but -P for the port and the destination last.
    options = argv[1:-1]
    options[options.index("-p")] = "-P"
    batch = f"put {source} {destination}\n".encode()
    result = run(["sftp", "-b", "-", *options, argv[-1]], stdin=batch)
    assert result.returncode == 0, result.stderr
    assert destination.read_bytes() == b"\x00\x01firmware"


def test_exec_skips_shell_rc_files(sshd_target: OpenSSHServer) -> None:
    # sshd sets SHLVL=1 so Debian's bash does not source ~/.bashrc for every command (see sshd.py).
    result = run(sshd_target.ssh_command("echo $SHLVL"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {b"1", b"2"}


def test_stop_ends_sshd_and_live_sessions(tmp_path: Path) -> None:
    server = start_sshd(tmp_path / "sshd")
    session = subprocess.Popen(
        server.ssh_command("sleep 60"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Wait until the remote command runs (a process carrying this server's SSH_CONNECTION).
        for _ in range(500):
            if _sessions_of(server.port):
                break
            time.sleep(0.01)
        assert _sessions_of(server.port), server.log_text()
        server.stop()
        assert not server.is_running()
        assert session.wait(timeout=10) != 0
        for _ in range(200):  # SIGKILLed processes take a moment to be gone
            if not _sessions_of(server.port):
                break
            time.sleep(0.01)
        assert _sessions_of(server.port) == []  # the remote `sleep 60` went too, not just sshd
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()


def _sessions_of(port: int) -> list[int]:
    """Processes started through an SSH connection to ``port`` (sshd sets SSH_CONNECTION for them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(
            var.startswith(b"SSH_CONNECTION=") and var.endswith(f" {port}".encode()) for var in environment
        ):
            found.append(int(entry.name))
    return found
