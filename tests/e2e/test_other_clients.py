"""Clients other than `gatepass ssh`: PuTTY's plink with an exported .ppk, and stock ssh reading ~/.ssh/config after
`gatepass ssh-config --write` — through the real gateway to the real sshd."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import GATEPASS, Stack
from tests.fixtures.putty import putty_tool

pytestmark = pytest.mark.slow


def _grant(stack: Stack, asset: str = "hmi-01") -> dict[str, Any]:
    return stack.fresh_grant(asset, "--for", "10m", "--reason", "PuTTY on the engineering laptop")


def _plink(stack: Stack, ppk: Path, host_fingerprint: str, *command: str,
           home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([putty_tool("plink"), "-ssh", "-batch", "-P", str(stack.ssh_port), "-i", str(ppk),
                           "-hostkey", host_fingerprint, "hmi-01@127.0.0.1", *command],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, "HOME": str(home)}, stdin=subprocess.DEVNULL)


def test_plink_connects_with_the_exported_key_file_and_the_session_is_the_vendors(stack: Stack, tmp_path: Path) -> None:
    grant = _grant(stack)
    exported = json.loads(stack.gatepass("key", "export", "--format", "ppk", "--asset", "hmi-01", "--json",
                                         user="vendor1").stdout)
    [record] = exported
    ppk = Path(record["file"])
    assert (record["asset"], record["grant"], record["user"]) == ("hmi-01", grant["id"], "hmi-01")
    assert ppk == stack.home("vendor1") / "putty" / "hmi-01.ppk"
    assert stat.S_IMODE(ppk.stat().st_mode) == 0o600
    assert ppk.read_text().startswith("PuTTY-User-Key-File-3: ssh-ed25519-cert-v01@openssh.com\n")
    assert record["gateway"]["port"] == stack.ssh_port

    result = _plink(stack, ppk, record["gateway"]["fingerprint"], "echo", "from-putty", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "from-putty"
    started = stack.grant_event("gateway:session:started", grant["id"])
    assert (started["actor"], started["details"]["asset"]) == ("vendor1", "hmi-01"), started


def test_plink_refuses_a_gateway_presenting_another_host_key(stack: Stack, tmp_path: Path) -> None:
    _grant(stack)
    [record] = json.loads(stack.gatepass("key", "export", "--format", "ppk", "--asset", "hmi-01", "--json",
                                         user="vendor1").stdout)
    other = "SHA256:" + "A" * 43
    result = _plink(stack, Path(record["file"]), other, "echo", "never", home=tmp_path)
    assert result.returncode != 0
    assert "never" not in result.stdout


def test_a_revoked_grants_key_file_no_longer_opens_anything(stack: Stack, tmp_path: Path) -> None:
    grant = _grant(stack)
    [record] = json.loads(stack.gatepass("key", "export", "--format", "ppk", "--asset", "hmi-01", "--json",
                                         user="vendor1").stdout)
    stack.gatepass("revoke", grant["id"], user="vendor1")
    result = _plink(stack, Path(record["file"]), record["gateway"]["fingerprint"], "echo", "never", home=tmp_path)
    assert result.returncode != 0
    assert "never" not in result.stdout


def test_export_without_a_grant_says_what_to_do_and_writes_nothing(stack: Stack) -> None:
    result = stack.gatepass("key", "export", "--format", "ppk", "--asset", "hmi-b", user="vendor2", check=False)
    assert result.returncode == 1
    assert "no active grant for hmi-b" in result.stderr
    assert "gatepass request hmi-b" in result.stderr
    assert not (stack.home("vendor2") / "putty").exists()
    usage = stack.gatepass("key", "export", "--format", "ppk", "--out", "x.ppk", user="vendor2", check=False)
    assert usage.returncode == 2
    assert "--asset" in usage.stderr


def test_a_passphrase_file_protects_the_exported_key(stack: Stack, tmp_path: Path) -> None:
    _grant(stack)
    secret = tmp_path / "passphrase"
    secret.write_text("plant laptop passphrase\n")
    out = tmp_path / "laptop" / "hmi-01.ppk"
    stack.gatepass("key", "export", "--format", "ppk", "--asset", "hmi-01", "--out", str(out),
                   "--passphrase-file", str(secret), user="vendor1")
    assert "Encryption: aes256-cbc" in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    opened = subprocess.run([putty_tool("puttygen"), str(out), "--old-passphrase", str(secret), "-O", "cert-info"],
                            capture_output=True, text=True, check=False)
    assert opened.returncode == 0, opened.stderr
    assert "Valid user names: hmi-01" in opened.stdout


def _write_config(stack: Stack, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**stack.env(stack.home("vendor1")), "HOME": str(home)}
    return subprocess.run([GATEPASS, "ssh-config", "--write"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_ssh_config_write_lets_stock_ssh_connect_by_name_and_keeps_the_users_own_config(stack: Stack,
                                                                                      tmp_path: Path) -> None:
    _grant(stack)
    home = tmp_path / "laptop-home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    own = b"Host *\r\n    ServerAliveInterval 30\r\n\r\nHost jump\r\n    HostName 192.0.2.1\r\n"
    config = home / ".ssh" / "config"
    config.write_bytes(own)
    config.chmod(0o644)

    first = _write_config(stack, home)
    assert first.returncode == 0, first.stderr
    assert "hmi-01.gatepass" in first.stdout
    assert "one line added" in first.stdout
    written = config.read_bytes()
    assert written.endswith(own)  # the user's own lines, byte for byte (CRLF too)
    assert f"Include {stack.home('vendor1') / 'ssh_config'}".encode() in written.split(b"Host *")[0]
    assert stat.S_IMODE(config.stat().st_mode) == 0o644
    assert stat.S_IMODE((stack.home("vendor1") / "ssh_config").stat().st_mode) == 0o600

    # ssh reads the user's config (as `ssh hmi-01.gatepass` would from ~/.ssh/config; -F names it, because
    # ssh finds ~ from the password database, not $HOME).
    result = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "hmi-01.gatepass", "echo", "by-name"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "by-name"

    again = _write_config(stack, home)
    assert again.returncode == 0, again.stderr
    assert "already includes" in again.stdout
    assert config.read_bytes() == written


def test_ssh_config_write_creates_a_private_config_when_there_is_none(stack: Stack, tmp_path: Path) -> None:
    _grant(stack)
    home = tmp_path / "new-laptop"
    home.mkdir()
    result = _write_config(stack, home)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700
    assert stat.S_IMODE((home / ".ssh" / "config").stat().st_mode) == 0o600
    assert (home / ".ssh" / "config").read_text().splitlines()[1] == f"Include {stack.home('vendor1') / 'ssh_config'}"


def test_psftp_fetches_a_file_with_the_exported_key_and_the_transfer_is_recorded(stack: Stack, tmp_path: Path) -> None:
    grant = _grant(stack)
    [record] = json.loads(stack.gatepass("key", "export", "--format", "ppk", "--asset", "hmi-01", "--json",
                                         user="vendor1").stdout)
    remote = tmp_path / "drive-settings.txt"  # the plant machine is this host's sshd: the same file system
    remote.write_text("speed=1450\n")
    batch = tmp_path / "batch"
    batch.write_text(f"get {remote} {tmp_path / 'fetched.txt'}\n")
    result = subprocess.run([putty_tool("psftp"), "-batch", "-b", str(batch), "-P", str(stack.ssh_port), "-i",
                             record["file"], "-hostkey", record["gateway"]["fingerprint"], "hmi-01@127.0.0.1"],
                            capture_output=True, text=True, timeout=30, check=False,
                            env={**os.environ, "HOME": str(tmp_path)}, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "fetched.txt").read_text() == "speed=1450\n"
    (transferred,) = stack.grant_events("gateway:file:transferred", grant["id"])
    assert (transferred["actor"], transferred["details"]["path"], transferred["details"]["mode"]) == (
        "vendor1", str(remote), "read")
