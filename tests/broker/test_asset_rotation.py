"""`gatepass admin asset rotate NAME`: a new credential, proven against a real sshd before the vault holds it; the old
key taken off the machine after; every failure that reached the machine audited, the vault and the machine as
they were (or as the message says)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path

import asyncssh
import pytest

from gateway import Gateway, GatewaySettings
from tests.broker.conftest import AdminCli
from tests.broker.target_assets import (
    ASSET,
    add_sshd_asset,
    logs_in,
    pinned,
    read_authorized_keys_from,
    vaulted,
    write_key,
)
from tests.fixtures.broker import BrokerServer, Plant
from tests.fixtures.keys import generate_ssh_keypair
from tests.fixtures.sshd import OpenSSHServer

# What sits in the target's authorized_keys besides the asset's key: a colleague's key with options, a comment.
OTHER_LINES = ('# plant IT: keep these\n'
               'from="10.0.0.0/8",no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHm0C5Flk2ZqQm9vVY4kF2R8cTgqF6v2fnUhN1yS'
               'yJ3b colleague@plant\n')


@pytest.fixture
def target(plant: Plant, sshd: OpenSSHServer) -> OpenSSHServer:
    """The sshd as asset hmi-ssh; its authorized_keys holds other people's lines too, mode 0640."""
    add_sshd_asset(plant, sshd)
    sshd.authorized_keys.write_text(OTHER_LINES + sshd.client_key.public_line + " old-key\n")
    sshd.authorized_keys.chmod(0o640)
    return sshd


def public_of(private_text: str) -> str:
    return " ".join(asyncssh.import_private_key(private_text).export_public_key("openssh").decode().split()[:2])


def fingerprint_of(private_text: str) -> str:
    return str(asyncssh.import_private_key(private_text).get_fingerprint())


def assert_no_secret_in_trail(plant: Plant, *secrets: str) -> None:
    """No private key (nor any line of its body) and no password appears in any audit event."""
    trail = json.dumps(plant.audit())
    for secret in secrets:
        assert secret not in trail
        for line in secret.splitlines():
            if len(line) > 20 and not line.startswith("-----"):
                assert line not in trail


def rotate(admin_cli: AdminCli, sshd: OpenSSHServer, *args: str) -> tuple[int, str, str]:
    return admin_cli("admin", "asset", "rotate", ASSET, "--authorized-keys", str(sshd.authorized_keys), *args)


# --- generated: Gatepass swaps a new key for the vaulted one -------------------------------------------------------


def test_a_generated_key_replaces_the_old_one_on_the_machine_and_in_the_vault(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli, tmp_path: Path) -> None:
    old_private = target.client_private_key_text
    seq = plant.last_seq()

    code, out, err = rotate(admin_cli, target)

    assert (code, err) == (0, ""), err
    kind, new_private = vaulted(plant)
    assert kind == "private_key"
    assert new_private != old_private
    assert asyncssh.import_private_key(new_private).algorithm == b"ssh-ed25519"
    new_public = public_of(new_private)
    # The file: other lines kept byte for byte, the old key's line gone, the new one named, the mode kept.
    text = target.authorized_keys.read_text()
    assert text == OTHER_LINES + f"{new_public} gatepass:{ASSET}:2026-11-27\n"
    assert target.authorized_keys.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in target.authorized_keys.parent.iterdir() if ".gatepass-" in p.name] == []
    # sshd itself: the new key logs in, the old one is refused.
    assert logs_in(target, write_key(tmp_path, "new_key", new_private))
    assert not logs_in(target, target.client_private_key)
    # What the admin reads.
    assert fingerprint_of(new_private) in out
    assert fingerprint_of(old_private) in out
    assert "1 line(s) removed" in out
    assert "the machine now refuses it" in out
    # The trail: the rotation, in the vault's transaction, then the old key's removal; never a secret.
    [rotated] = plant.audit("admin:asset:credential_rotated", after_seq=seq)
    assert rotated["outcome"] == "success"
    assert rotated["subject"] == ASSET
    assert rotated["actor"].startswith("cli:")
    assert rotated["details"]["method"] == "generated"
    assert rotated["details"]["kind"] == "private_key"
    assert rotated["details"]["fingerprint"] == fingerprint_of(new_private)
    assert rotated["details"]["old_fingerprint"] == fingerprint_of(old_private)
    assert rotated["details"]["authorized_keys"] == str(target.authorized_keys)
    [removal] = plant.audit("admin:asset:old_credential_removed", after_seq=seq)
    assert removal["outcome"] == "success"
    assert removal["details"]["lines_removed"] == 1
    assert removal["details"]["old_still_logs_in"] is False
    assert removal["details"]["warning"] is None
    assert removal["seq"] > rotated["seq"]
    assert plant.audit("admin:asset:credential_rotation_failed") == []
    assert_no_secret_in_trail(plant, new_private, old_private)


def test_the_new_key_keeps_the_restrictions_the_old_key_had_on_the_machine(
        plant: Plant, sshd: OpenSSHServer, admin_cli: AdminCli, tmp_path: Path) -> None:
    # The plant allowed the vaulted key only from the Gatepass host, without forwarding: a rotation that wrote the
    # new key's line bare would hand the vault's next key more than the old one ever had.
    add_sshd_asset(plant, sshd)
    options = 'from="127.0.0.1,::1",no-agent-forwarding,no-port-forwarding,no-X11-forwarding'
    sshd.authorized_keys.write_text(OTHER_LINES + f"{options} {sshd.client_key.public_line} old-key\n")

    code, _out, err = rotate(admin_cli, sshd)

    assert (code, err) == (0, ""), err
    _kind, new_private = vaulted(plant)
    assert sshd.authorized_keys.read_text() == (
        OTHER_LINES + f"{options} {public_of(new_private)} gatepass:{ASSET}:2026-11-27\n")
    assert logs_in(sshd, write_key(tmp_path, "new_key", new_private))
    assert not logs_in(sshd, sshd.client_private_key)


def test_a_path_the_machine_reports_cannot_write_control_characters_to_the_admins_terminal(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli) -> None:
    # The machine's login (perhaps compromised) names its real authorized_keys; its SFTP server reports that name,
    # which Gatepass prints. An escape sequence in it would clear or retitle the admin's terminal, or hide text.
    real = target.authorized_keys.with_name("keys\x1b]0;all good\x07\x1b[2J\x1b[8m")
    target.authorized_keys.rename(real)
    target.authorized_keys.symlink_to(real.name)

    code, out, err = rotate(admin_cli, target)

    assert (code, err) == (0, ""), err
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "keys\\x1b]0;all good\\x07\\x1b[2J\\x1b[8m" in out  # shown escaped, so the admin still sees the name

    # A refusal names the file too: a decoy sshd does not read, behind a link with an escape sequence in its name.
    decoy = target.directory / "decoy\x1b[2J"
    decoy.write_text(OTHER_LINES)
    (target.directory / "decoy").symlink_to(decoy.name)
    code, out, err = admin_cli("admin", "asset", "rotate", ASSET, "--authorized-keys", str(target.directory / "decoy"))
    assert code == 1
    assert "did not log in" in err
    assert "decoy\\x1b[2J" in err
    assert "\x1b" not in err


def test_a_second_rotation_of_the_same_asset_at_the_same_time_is_refused_and_changes_nothing(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli) -> None:
    # Two at once each rewrite authorized_keys from what they read: the one whose key the vault takes can lose its
    # line to the other's write, leaving the vault a key the machine refuses.
    from broker.admin import rotation_lock

    before_vault, before_keys = vaulted(plant), target.authorized_keys.read_bytes()
    with rotation_lock(plant.settings, ASSET):  # another admin's rotation, running
        code, out, err = rotate(admin_cli, target)
    assert (code, out) == (1, "")
    assert err.startswith(f"gatepass: another rotation of {ASSET}'s credential is running"), err
    assert vaulted(plant) == before_vault
    assert target.authorized_keys.read_bytes() == before_keys
    assert plant.audit("admin:asset:credential_rotation_failed") == []

    code, _out, err = rotate(admin_cli, target)  # once it is over
    assert code == 0, err


def test_json_says_what_was_done_and_never_a_secret(plant: Plant, target: OpenSSHServer, admin_cli: AdminCli) -> None:
    old_private = target.client_private_key_text

    code, out, _err = rotate(admin_cli, target, "--json")

    assert code == 0
    _kind, new_private = vaulted(plant)
    assert json.loads(out) == {
        "asset": ASSET, "kind": "private_key", "method": "generated", "fingerprint": fingerprint_of(new_private),
        "old_fingerprint": fingerprint_of(old_private), "old_key_still_logs_in": False,
        "authorized_keys": str(target.authorized_keys), "old_lines_removed": 1, "warning": None,
    }
    assert "PRIVATE KEY" not in out


def test_an_old_key_still_authorised_elsewhere_is_a_warning_not_a_failure(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli) -> None:
    elsewhere = target.directory / "authorized_keys2"
    elsewhere.write_text(target.client_key.public_line + "\n")
    read_authorized_keys_from(target, target.authorized_keys, elsewhere)
    old_private = target.client_private_key_text

    code, _out, err = rotate(admin_cli, target)

    assert code == 0
    assert "WARNING" in err
    assert "still logs in" in err
    assert "authorised somewhere else too" in err
    assert vaulted(plant)[1] != old_private
    assert logs_in(target, target.client_private_key)  # what the warning says
    [removal] = plant.audit("admin:asset:old_credential_removed")
    assert removal["outcome"] == "failure"
    assert removal["details"]["old_still_logs_in"] is True
    assert removal["details"]["lines_removed"] == 1
    assert "still logs in" in removal["details"]["warning"]
    assert len(plant.audit("admin:asset:credential_rotated")) == 1


def test_a_new_key_that_does_not_log_in_is_taken_out_again_and_nothing_is_vaulted(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli) -> None:
    """The file given is not one sshd reads: the new key's line goes in, does not log in, comes out again."""
    decoy = target.directory / "not_read_by_sshd"
    decoy.write_text(OTHER_LINES)
    decoy.chmod(0o600)
    before_vault, before_keys = vaulted(plant), target.authorized_keys.read_bytes()

    code, out, err = admin_cli("admin", "asset", "rotate", ASSET, "--authorized-keys", str(decoy))

    assert code == 1
    assert out == ""
    assert "did not log in" in err
    assert "Its line was removed again" in err
    assert "The vault still holds the old credential" in err
    assert "Traceback" not in err
    assert decoy.read_text() == OTHER_LINES
    assert decoy.stat().st_mode & 0o777 == 0o600
    assert target.authorized_keys.read_bytes() == before_keys
    assert vaulted(plant) == before_vault
    assert logs_in(target, target.client_private_key)
    assert plant.audit("admin:asset:credential_rotated") == []
    [failure] = plant.audit("admin:asset:credential_rotation_failed")
    assert failure["outcome"] == "failure"
    assert failure["details"]["method"] == "generated"
    assert "did not log in" in failure["details"]["reason"]
    assert "removed again" in failure["details"]["machine"]
    assert failure["details"]["old_fingerprint"] == fingerprint_of(before_vault[1])


def test_a_file_the_rotation_made_for_a_key_that_does_not_log_in_is_removed_again(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli) -> None:
    missing = target.directory / "no_such_authorized_keys"
    before = vaulted(plant)

    code, _out, err = admin_cli("admin", "asset", "rotate", ASSET, "--authorized-keys", str(missing))

    assert code == 1
    assert f"is {missing} a file sshd reads for this login?" in err
    assert "Its line was removed again" in err
    assert not missing.exists()
    assert vaulted(plant) == before


def test_a_vaulted_key_that_no_longer_logs_in_is_a_failure_that_changes_nothing(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli) -> None:
    target.authorized_keys.write_text(OTHER_LINES)
    before = vaulted(plant)

    code, _out, err = rotate(admin_cli, target)

    assert code == 1
    assert "the key in the vault no longer logs in" in err
    assert "--ssh-key-file" in err
    assert target.authorized_keys.read_text() == OTHER_LINES
    assert vaulted(plant) == before
    [failure] = plant.audit("admin:asset:credential_rotation_failed")
    assert "changed nothing" in failure["details"]["machine"]


def test_a_machine_with_another_host_key_is_offered_no_credential(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli) -> None:
    stale = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    with plant.session() as session:
        from broker.inventory.sites import get_asset

        get_asset(session, ASSET).host_key = stale
    before_vault, before_keys = vaulted(plant), target.authorized_keys.read_bytes()

    code, _out, err = rotate(admin_cli, target)

    assert code == 1
    assert "presents another SSH host key than the one pinned" in err
    assert f"gatepass admin asset scan {ASSET}" in err
    assert (vaulted(plant), target.authorized_keys.read_bytes(), pinned(plant)) == (before_vault, before_keys, stale)
    # sshd saw no login attempt at all (no key was offered to it).
    assert "Accepted publickey" not in target.log_text()
    assert len(plant.audit("admin:asset:credential_rotation_failed")) == 1


def test_a_password_credential_is_not_rotated_by_gatepass(plant: Plant, admin_cli: AdminCli) -> None:
    seq = plant.last_seq()
    code, out, err = admin_cli("admin", "asset", "rotate", "hmi-01")
    assert code == 1
    assert out == ""
    assert "the vault holds a password for hmi-01" in err
    assert "--ssh-password-file" in err
    assert plant.audit(after_seq=seq) == []


@pytest.mark.parametrize(("asset", "expected"), [("plc-01", "has no SSH service"),
                                                 ("nope", "there is no asset named 'nope'")])
def test_an_asset_without_ssh_or_unknown_is_refused(plant: Plant, admin_cli: AdminCli, asset: str,
                                                    expected: str) -> None:
    seq = plant.last_seq()
    code, _out, err = admin_cli("admin", "asset", "rotate", asset)
    assert code == 1
    assert expected in err
    assert plant.audit(after_seq=seq) == []


# --- supplied: the admin set the new credential on the machine ------------------------------------------------------


def test_a_supplied_key_that_logs_in_is_vaulted_and_an_old_key_that_still_does_is_reported(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli, tmp_path: Path) -> None:
    new = generate_ssh_keypair(tmp_path / "keys", "admin_made")
    target.authorize(new.public_line)
    before_keys = target.authorized_keys.read_bytes()
    old_private = target.client_private_key_text

    code, out, err = rotate(admin_cli, target, "--ssh-key-file", str(new.private_key))

    assert code == 0
    assert vaulted(plant) == ("private_key", new.private_text)
    assert target.authorized_keys.read_bytes() == before_keys  # Gatepass changed nothing on the machine
    assert fingerprint_of(new.private_text) in out
    assert "the old key still logs in" in err
    [rotated] = plant.audit("admin:asset:credential_rotated")
    assert rotated["details"] == {"kind": "private_key", "method": "supplied",
                                  "fingerprint": fingerprint_of(new.private_text), "old_kind": "private_key",
                                  "old_fingerprint": fingerprint_of(old_private), "old_still_logs_in": True}
    assert_no_secret_in_trail(plant, new.private_text, old_private)


def test_a_supplied_key_that_does_not_log_in_is_refused_and_audited(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli, tmp_path: Path) -> None:
    wrong = generate_ssh_keypair(tmp_path / "keys", "not_authorised")
    before = vaulted(plant)

    code, _out, err = rotate(admin_cli, target, "--ssh-key-file", str(wrong.private_key))

    assert code == 1
    assert f"the new key does not log in to {ASSET} (127.0.0.1:{target.port}) as {target.username}" in err
    assert "The vault still holds the old credential" in err
    assert vaulted(plant) == before
    [failure] = plant.audit("admin:asset:credential_rotation_failed")
    assert failure["details"]["method"] == "supplied"
    assert failure["details"]["machine"] == "Gatepass changed nothing on the machine."
    assert plant.audit("admin:asset:credential_rotated") == []
    assert_no_secret_in_trail(plant, wrong.private_text)


def test_a_supplied_password_that_does_not_log_in_is_refused(plant: Plant, target: OpenSSHServer,
                                                             admin_cli: AdminCli, tmp_path: Path) -> None:
    """The sshd takes keys only: no password logs in, so none is vaulted."""
    password_file = tmp_path / "password"
    password_file.write_text("Correct-Horse-7\n")
    before = vaulted(plant)

    code, _out, err = rotate(admin_cli, target, "--ssh-password-file", str(password_file))

    assert code == 1
    assert "the new password does not log in" in err
    assert vaulted(plant) == before
    assert_no_secret_in_trail(plant, "Correct-Horse-7")


def test_a_supplied_password_that_logs_in_replaces_the_vaulted_one(plant: Plant, admin_cli: AdminCli,
                                                                   tmp_path: Path) -> None:
    """A machine that takes passwords (the demo target, asyncssh): hmi-01's vaulted password was changed there."""
    from tests.fixtures.demo import ThreadedDemoTarget

    old_password = plant.target_secrets["hmi-01"]
    machine = ThreadedDemoTarget.start(state_dir=tmp_path / "demo", password="New-Pass-9 with spaces")
    try:
        with plant.session() as session:
            from broker.inventory.sites import get_asset

            asset = get_asset(session, "hmi-01")
            asset.host, asset.ssh_port = "127.0.0.1", machine.target.port
            asset.ssh_user, asset.host_key = "operator", machine.target.host_key
        password_file = tmp_path / "password"
        password_file.write_text("New-Pass-9 with spaces\n")

        code, out, err = admin_cli("admin", "asset", "rotate", "hmi-01", "--ssh-password-file", str(password_file))
    finally:
        machine.stop()

    assert (code, err) == (0, ""), err
    assert "the password you gave logs in" in out
    assert vaulted(plant, "hmi-01") == ("password", "New-Pass-9 with spaces")
    [rotated] = plant.audit("admin:asset:credential_rotated")
    assert rotated["details"] == {"kind": "password", "method": "supplied", "fingerprint": None,
                                  "old_kind": "password", "old_fingerprint": None, "old_still_logs_in": False}
    assert_no_secret_in_trail(plant, "New-Pass-9", old_password)


@pytest.mark.parametrize("content", ["not a key at all\n", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA public only\n"])
def test_a_file_that_is_not_a_private_key_is_refused_before_anything(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli, tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad_key"
    bad.write_text(content)
    before_vault, before_keys, seq = vaulted(plant), target.authorized_keys.read_bytes(), plant.last_seq()

    code, _out, err = rotate(admin_cli, target, "--ssh-key-file", str(bad))

    assert code == 1
    assert "does not hold a usable" in err
    assert content.strip() not in err
    assert (vaulted(plant), target.authorized_keys.read_bytes()) == (before_vault, before_keys)
    assert plant.audit(after_seq=seq) == []


def test_an_unreadable_file_and_the_same_key_again_are_refused(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli, tmp_path: Path) -> None:
    before, seq = vaulted(plant), plant.last_seq()

    code, _out, err = rotate(admin_cli, target, "--ssh-key-file", str(tmp_path / "missing"))
    assert code == 1
    assert "No such file" in err

    code, _out, err = rotate(admin_cli, target, "--ssh-key-file", str(target.client_private_key))
    assert code == 1
    assert "the credential the vault already holds" in err
    assert vaulted(plant) == before
    assert plant.audit(after_seq=seq) == []


# --- the gateway: running sessions go on, the next login uses the new key ---------------------------------------


def test_the_next_gateway_login_uses_the_rotated_key_while_a_running_session_goes_on(
        plant: Plant, target: OpenSSHServer, admin_cli: AdminCli, tmp_path: Path) -> None:
    # The gateway checks certificates on the real clock: the plant's clock is set to it for this test.
    plant.clock.set(dt.datetime.now(dt.UTC))
    plant.ensure("vendor1", "sup-a1")
    vendor = asyncssh.generate_private_key("ssh-ed25519")
    grant_id = plant.request_and_approve(
        "vendor1", "sup-a1", asset=ASSET, public_key=vendor.export_public_key("openssh").decode().strip())
    certificate = asyncssh.import_certificate(
        plant.row("SELECT certificate FROM grants WHERE id = :id", id=grant_id)[0])
    broker = BrokerServer(plant.settings).start()

    async def scenario() -> None:
        gateway = Gateway(GatewaySettings(broker_url=broker.url, token=plant.gateway_token,
                                          host_key_path=tmp_path / "gateway" / "host_key",
                                          recordings_dir=tmp_path / "recordings", listen_port=0,
                                          target_connect_timeout=5))
        await gateway.start()

        def connect() -> asyncssh.connection._ClientConnectionContext:
            return asyncssh.connect("127.0.0.1", gateway.port, username=ASSET, client_keys=[(vendor, certificate)],
                                    known_hosts=([asyncssh.import_public_key(gateway.host_public_key)], [], []),
                                    config=None, agent_path=None)
        try:
            async with connect() as running:
                process = await running.create_process("cat")
                process.stdin.write("before\n")
                assert await asyncio.wait_for(process.stdout.readline(), 10) == "before\n"

                code, _out, err = await asyncio.to_thread(rotate, admin_cli, target)
                assert (code, err) == (0, ""), err

                # The session opened with the old key goes on.
                process.stdin.write("after the rotation\n")
                assert await asyncio.wait_for(process.stdout.readline(), 10) == "after the rotation\n"
                process.stdin.write_eof()
                await asyncio.wait_for(process.wait(), 10)
            # A new login: the old key is gone from the machine, so only the rotated one can have let it in.
            async with connect() as fresh:
                done = await asyncio.wait_for(fresh.run("echo through the gateway", check=True), 15)
                assert done.stdout == "through the gateway\n"
        finally:
            await gateway.stop()

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()
    new_fingerprint = fingerprint_of(vaulted(plant)[1])
    accepted = re.findall(r"Accepted publickey for \S+ from \S+ port \d+ ssh2: ED25519 (SHA256:\S+)",
                          target.log_text())
    old_fingerprint = fingerprint_of(target.client_private_key_text)
    # The gateway's first login (old key), the rotation's logins, then the gateway's next login with the new key.
    assert accepted[0] == old_fingerprint
    assert accepted[-1] == new_fingerprint
    assert not logs_in(target, target.client_private_key)


# --- the authorized_keys edit itself (pure) -------------------------------------------------------------------------


def test_every_line_of_the_old_key_goes_with_or_without_options_and_nothing_else() -> None:
    from broker.inventory.asset_credentials import with_line_added, without_key

    old = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    blob = old.split()[1]
    text = ("# the old key, also commented out: " + old + "\n"
            + old + "\n"
            + f'command="/usr/bin/backup --all",no-pty {old.split()[0]} {blob} backup@plant\n'
            + OTHER_LINES
            + f"ssh-ed25519 {blob}X not-the-same-key\n")

    kept, removed = without_key(text, old)

    assert removed == 2
    assert kept == ("# the old key, also commented out: " + old + "\n" + OTHER_LINES
                    + f"ssh-ed25519 {blob}X not-the-same-key\n")
    assert with_line_added("no newline at the end", "ssh-ed25519 AAAA new") == (
        "no newline at the end\nssh-ed25519 AAAA new\n")
    assert with_line_added("", "ssh-ed25519 AAAA new") == "ssh-ed25519 AAAA new\n"


def test_the_new_key_is_added_under_each_old_lines_options_once_and_bare_without_an_old_line() -> None:
    from broker.inventory.asset_credentials import with_key_added

    old = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    new = "ssh-ed25519 AAAAnew gatepass:hmi-ssh:2026-11-27"
    text = (f"# from=\"10.9.9.9\" {old}\n"  # commented out: not the old key's options
            + f"restrict,pty {old} gateway\n"
            + f'command="/usr/bin/backup --all",no-pty {old} backup@plant\n'
            + f"restrict,pty {old} again\n"
            + OTHER_LINES)

    assert with_key_added(text, new, replacing=old) == (
        text + f"restrict,pty {new}\n" + f'command="/usr/bin/backup --all",no-pty {new}\n')
    assert with_key_added(OTHER_LINES, new, replacing=old) == OTHER_LINES + new + "\n"
    assert with_key_added(f"{old}\n", new, replacing=old) == f"{old}\n{new}\n"
