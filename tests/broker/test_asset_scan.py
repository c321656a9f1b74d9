"""`gatepass admin asset scan NAME [--pin] [--json]`: the host key a real sshd presents, against the pinned one."""

from __future__ import annotations

import json

import asyncssh
import pytest

from broker import admin
from broker.inventory.target_access import TargetUnreachable
from tests.broker.conftest import AdminCli
from tests.broker.target_assets import ASSET, add_sshd_asset, pinned, tcp_listener
from tests.fixtures.broker import Plant
from tests.fixtures.ports import free_port
from tests.fixtures.sshd import OpenSSHServer


def fingerprint(key: str) -> str:
    return str(asyncssh.import_public_key(key).get_fingerprint())


def other_key(kind: str = "ssh-ed25519") -> str:
    return asyncssh.generate_private_key(kind).export_public_key("openssh").decode().strip()


def test_a_machine_that_presents_the_pinned_key_matches(plant: Plant, sshd: OpenSSHServer, admin_cli: AdminCli) -> None:
    add_sshd_asset(plant, sshd)
    seq = plant.last_seq()

    code, out, err = admin_cli("admin", "asset", "scan", ASSET)

    assert (code, err) == (0, "")
    assert f"pinned:    {fingerprint(sshd.host_key)} (ssh-ed25519)" in out
    assert f"presented: {fingerprint(sshd.host_key)} (ssh-ed25519)" in out
    assert "matches" in out
    assert plant.audit(after_seq=seq) == []


def test_another_key_is_reported_and_nothing_changes_without_pin(plant: Plant, sshd: OpenSSHServer,
                                                                 admin_cli: AdminCli) -> None:
    stale = other_key()
    add_sshd_asset(plant, sshd, host_key=stale)
    seq = plant.last_seq()

    code, out, err = admin_cli("admin", "asset", "scan", ASSET)

    assert code == 1
    assert f"pinned:    {fingerprint(stale)}" in out
    assert f"presented: {fingerprint(sshd.host_key)}" in out
    assert "presents ANOTHER host key than the one pinned" in err
    assert "reinstalled or re-keyed" in err
    assert "machine's owner" in err
    assert f"gatepass admin asset scan {ASSET} --pin" in err
    assert "Traceback" not in err
    assert pinned(plant) == stale
    assert plant.audit(after_seq=seq) == []


def test_pin_replaces_the_pinned_key_audited_with_both_fingerprints(plant: Plant, sshd: OpenSSHServer,
                                                                     admin_cli: AdminCli) -> None:
    stale = other_key()
    add_sshd_asset(plant, sshd, host_key=stale)

    code, out, err = admin_cli("admin", "asset", "scan", ASSET, "--pin")

    assert (code, err) == (0, ""), err
    assert "Pinned the presented key" in out
    assert pinned(plant) == sshd.host_key
    [event] = plant.audit("admin:asset:host_key_pinned")
    assert event["subject"] == ASSET
    assert event["site"] == "plant-a"
    assert event["actor"].startswith("cli:")
    assert event["details"] == {"old_fingerprint": fingerprint(stale), "old_type": "ssh-ed25519",
                                "new_fingerprint": fingerprint(sshd.host_key), "new_type": "ssh-ed25519"}
    # Pinned now: the next scan matches, and pinning again changes nothing and writes nothing.
    seq = plant.last_seq()
    assert admin_cli("admin", "asset", "scan", ASSET, "--pin")[0] == 0
    assert plant.audit(after_seq=seq) == []
    assert admin.show_asset(plant.settings, name=ASSET)["name"] == ASSET


def test_a_pinned_key_of_a_type_the_machine_does_not_have_is_another_key(plant: Plant, sshd: OpenSSHServer,
                                                                          admin_cli: AdminCli) -> None:
    """The sshd has an Ed25519 host key only; an ECDSA key pinned for it cannot match."""
    stale = other_key("ecdsa-sha2-nistp256")
    add_sshd_asset(plant, sshd, host_key=stale)

    code, out, _err = admin_cli("admin", "asset", "scan", ASSET, "--json")

    assert code == 1
    shown = json.loads(out)
    assert shown == {
        "asset": ASSET, "host": sshd.host, "port": sshd.port,
        "pinned": {"key": stale, "fingerprint": fingerprint(stale)},
        "presented": {"key": sshd.host_key, "fingerprint": fingerprint(sshd.host_key)},
        "matches": False, "pinned_now": False,
    }


def test_json_of_a_match_and_of_a_pin(plant: Plant, sshd: OpenSSHServer, admin_cli: AdminCli) -> None:
    add_sshd_asset(plant, sshd)
    code, out, _ = admin_cli("admin", "asset", "scan", ASSET, "--json")
    assert code == 0
    assert json.loads(out)["matches"] is True
    assert json.loads(out)["pinned_now"] is False

    with plant.session() as session:
        from broker.inventory.sites import get_asset

        get_asset(session, ASSET).host_key = other_key()
    code, out, _ = admin_cli("admin", "asset", "scan", ASSET, "--json", "--pin")
    assert code == 0
    assert (json.loads(out)["matches"], json.loads(out)["pinned_now"]) == (False, True)


@pytest.mark.parametrize(("asset", "expected"), [
    ("plc-01", "plc-01 has no SSH service"),
    ("no-such-asset", "there is no asset named 'no-such-asset'"),
])
def test_an_asset_that_cannot_be_scanned_is_refused_plainly(plant: Plant, admin_cli: AdminCli, asset: str,
                                                            expected: str) -> None:
    seq = plant.last_seq()
    code, out, err = admin_cli("admin", "asset", "scan", asset, "--pin")
    assert code == 1
    assert out == ""
    assert expected in err
    assert "Traceback" not in err
    assert plant.audit(after_seq=seq) == []


def _point_at(plant: Plant, port: int) -> str:
    """Move hmi-01 (SSH, password) to a local port; return its pinned key."""
    with plant.session() as session:
        from broker.inventory.sites import get_asset

        asset = get_asset(session, "hmi-01")
        asset.host, asset.ssh_port = "127.0.0.1", port
        return str(asset.host_key)


def test_a_closed_port_is_reported_and_nothing_changes(plant: Plant, admin_cli: AdminCli) -> None:
    key = _point_at(plant, free_port())
    seq = plant.last_seq()
    code, _out, err = admin_cli("admin", "asset", "scan", "hmi-01", "--pin")
    assert code == 1
    assert "cannot be reached" in err
    assert "Traceback" not in err
    assert pinned(plant, "hmi-01") == key
    assert plant.audit(after_seq=seq) == []


def test_a_service_that_is_not_ssh_is_reported(plant: Plant, admin_cli: AdminCli) -> None:
    with tcp_listener(reply=b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n") as port:
        key = _point_at(plant, port)
        code, _out, err = admin_cli("admin", "asset", "scan", "hmi-01", "--pin")
    assert code == 1
    assert "SSH" in err
    assert "Traceback" not in err
    assert pinned(plant, "hmi-01") == key


def test_a_silent_service_is_given_up_on_in_time(plant: Plant) -> None:
    with tcp_listener(reply=None) as port:
        _point_at(plant, port)
        with pytest.raises(TargetUnreachable, match=r"did not answer within 0\.5 s"):
            admin.scan_asset(plant.settings, name="hmi-01", pin=True, timeout=0.5)
