"""Grant choice, the ssh command line, and the ssh-config block, checked against the real OpenSSH client."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cli.errors import NoUsableGrant, ServerUnreachable
from cli.sshargs import (
    SshFiles,
    UsableGrant,
    certificate_key_matches,
    choose_grant,
    pick_per_asset,
    render_ssh_config,
    ssh_binary,
    ssh_command,
    tunnel_options,
    usable_grants,
)

NOW = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
FILES = SshFiles(key=Path("/h/id_ed25519"), certificate=Path("/h/certs/hmi-01-cert.pub"), known_hosts=Path("/h/kh"))


def api_grant(**overrides: Any) -> dict[str, Any]:
    grant = {
        "id": "grt-1", "request_id": "req-1", "asset": "hmi-01", "site": "plant-a", "identity": "vendor1",
        "status": "active", "starts_at": "2026-11-27T09:00:00+00:00", "ends_at": "2026-11-27T11:00:00+00:00",
        "ssh": True, "ports": [], "certificate": "ssh-ed25519-cert-v01@openssh.com AAAA",
        "gateway": {"host": "127.0.0.1", "port": 2222, "host_key": "ssh-ed25519 AAAAgw"},
    }
    return grant | overrides


def grant(**overrides: Any) -> UsableGrant:
    return UsableGrant.from_api(api_grant(**overrides))


def test_ssh_command_is_stock_openssh_with_certificate_and_pinned_host_key() -> None:
    argv = ssh_command(ssh=["ssh"], grant=grant(), files=FILES, command=["uname", "-a"])
    assert argv == [
        "ssh", "-p", "2222", "-i", "/h/id_ed25519",
        "-o", "CertificateFile=/h/certs/hmi-01-cert.pub", "-o", "IdentitiesOnly=yes",
        "-o", "UserKnownHostsFile=/h/kh", "-o", "StrictHostKeyChecking=yes",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "hmi-01@127.0.0.1", "uname", "-a",
    ]


def test_tunnel_forwards_a_loopback_port_to_the_asset_name() -> None:
    extra = tunnel_options(asset="plc-01", remote_port=502, local_port=10502)
    argv = ssh_command(ssh=["ssh"], grant=grant(asset="plc-01"), files=FILES, extra=extra)
    assert argv[-6:] == [
        "-N", "-L", "127.0.0.1:10502:plc-01:502", "-o", "ExitOnForwardFailure=yes", "plc-01@127.0.0.1"
    ]


def test_ssh_binary_can_be_overridden() -> None:
    assert ssh_binary({}) == ["ssh"]
    assert ssh_binary({"GATEPASS_SSH_BIN": "/opt/ssh -q"}) == ["/opt/ssh", "-q"]


def test_openssh_parses_the_command_line_as_intended(tmp_path: Path) -> None:
    argv = ssh_command(ssh=["ssh", "-G"], grant=grant(), files=FILES)
    config = dict(line.split(" ", 1) for line in subprocess.run(
        argv, capture_output=True, text=True, check=True).stdout.splitlines())
    assert config["user"] == "hmi-01"
    assert config["hostname"] == "127.0.0.1"
    assert config["port"] == "2222"
    assert config["certificatefile"] == "/h/certs/hmi-01-cert.pub"
    assert config["stricthostkeychecking"] in {"true", "yes"}


def test_no_grant_at_all_says_how_to_request_one() -> None:
    with pytest.raises(NoUsableGrant, match=r"no active grant for hmi-01: request access with `gatepass request"):
        choose_grant([], asset="hmi-01", now=NOW)


def test_a_scheduled_grant_says_when_it_starts() -> None:
    later = grant(status="scheduled", starts_at="2026-11-27T12:00:00+00:00", ends_at="2026-11-27T13:00:00+00:00")
    with pytest.raises(NoUsableGrant, match=r"grt-1 for hmi-01 starts at 2026-11-27 12:00 UTC \(in 2h00m\)"):
        choose_grant([later], asset="hmi-01", now=NOW)


def test_a_ports_only_grant_is_not_used_for_ssh() -> None:
    ports_only = grant(ssh=False, ports=[502])
    with pytest.raises(NoUsableGrant, match=r"covers tcp/502, not SSH"):
        choose_grant([ports_only], asset="hmi-01", now=NOW)
    assert choose_grant([ports_only], asset="hmi-01", now=NOW, port=502) == ports_only
    with pytest.raises(NoUsableGrant, match=r"not TCP port 4840: .*--port 4840"):
        choose_grant([ports_only], asset="hmi-01", now=NOW, port=4840)


def test_the_active_grant_ending_last_is_chosen() -> None:
    short = grant(id="grt-short", ends_at="2026-11-27T10:30:00+00:00")
    long = grant(id="grt-long", ends_at="2026-11-27T12:00:00+00:00")
    assert choose_grant([short, long], asset="hmi-01", now=NOW).id == "grt-long"


def test_a_scheduled_grant_whose_start_has_passed_counts_as_active() -> None:
    started = grant(status="scheduled", starts_at="2026-11-27T09:59:00+00:00")
    assert choose_grant([started], asset="hmi-01", now=NOW) == started


def test_only_the_callers_unended_grants_are_usable() -> None:
    grants = [
        api_grant(id="grt-mine"),
        api_grant(id="grt-theirs", identity="vendor2", certificate=None),
        api_grant(id="grt-over", ends_at="2026-11-27T10:00:00+00:00"),
        api_grant(id="grt-revoked", status="revoked"),
    ]
    assert [g.id for g in usable_grants(grants, username="vendor1", now=NOW)] == ["grt-mine"]


def test_a_gateway_host_that_looks_like_an_option_is_refused() -> None:
    with pytest.raises(ServerUnreachable, match="cannot use"):
        grant(gateway={"host": "-oProxyCommand=x", "port": 2222, "host_key": "k"})


@pytest.mark.parametrize("grant_id", ["grt-1\nHost *\n    ProxyCommand sh -c 'touch /tmp/owned'",
                                      'grt-1\rMatch exec "touch /tmp/owned"', "grt-1 \x1b[2J", "", "-grt", "grt-1\n"])
def test_a_grant_id_that_is_not_a_plain_word_is_refused(grant_id: str) -> None:
    # The id is written into the ssh config that `ssh-config --write` includes at the top of ~/.ssh/config (and into
    # the PPK's comment): a line break in it would add directives every ssh on the laptop obeys.
    with pytest.raises(ServerUnreachable, match="cannot use"):
        grant(id=grant_id)


@pytest.mark.parametrize("sent", [{"asset": "hmi-01\n"}, {"gateway": {"host": "127.0.0.1\n", "port": 2222,
                                                                     "host_key": "k"}}])
def test_a_name_or_host_with_a_final_line_break_is_refused(sent: dict[str, Any]) -> None:
    # `Host hmi-01\n.gatepass` would be a bad line in the included config: every ssh on the laptop would stop.
    with pytest.raises(ServerUnreachable, match="cannot use"):
        grant(**sent)


@pytest.mark.parametrize("host_key", ["ssh-ed25519 AAAAgw\n@cert-authority * ssh-ed25519 AAAAattacker",
                                      "ssh-ed25519", "ssh-ed25519 AAAA\x1b[2J", ""])
def test_a_gateway_host_key_that_is_not_one_key_line_is_refused(host_key: str) -> None:
    # It is pinned in the known_hosts the generated config names: a line break would add lines of the sender's choosing.
    with pytest.raises(ServerUnreachable, match="cannot use"):
        grant(gateway={"host": "127.0.0.1", "port": 2222, "host_key": host_key})


def test_one_grant_per_asset_active_first() -> None:
    active = grant(id="grt-a")
    scheduled = grant(id="grt-s", status="scheduled", starts_at="2026-11-27T12:00:00+00:00",
                      ends_at="2026-11-27T13:00:00+00:00")
    other = grant(id="grt-o", asset="plc-01", ssh=False, ports=[502])
    assert [g.id for g in pick_per_asset([scheduled, other, active], now=NOW)] == ["grt-a", "grt-o"]


def test_ssh_config_block_is_read_by_openssh(tmp_path: Path) -> None:
    home = tmp_path / "my home"  # a space, to check quoting
    text = render_ssh_config(
        [(grant(), home / "certs" / "hmi-01-cert.pub"), (grant(asset="plc-01", ports=[502]),
                                                          home / "certs" / "plc-01-cert.pub")],
        key=home / "id_ed25519", known_hosts=home / "known_hosts", header="test",
    )
    assert "Host hmi-01.gatepass\n" in text
    assert "Host plc-01.gatepass\n" in text
    config_file = tmp_path / "config"
    config_file.write_text(text)
    out = subprocess.run(["ssh", "-G", "-F", str(config_file), "hmi-01.gatepass"],
                         capture_output=True, text=True, check=True).stdout
    seen = dict(line.split(" ", 1) for line in out.splitlines())
    assert seen["hostname"] == "127.0.0.1"
    assert seen["port"] == "2222"
    assert seen["user"] == "hmi-01"
    assert seen["identitiesonly"] == "yes"
    assert seen["certificatefile"] == str(home / "certs" / "hmi-01-cert.pub")
    assert seen["userknownhostsfile"] == str(home / "known_hosts")
    assert seen["stricthostkeychecking"] in {"true", "yes"}


def test_empty_ssh_config_is_still_a_valid_file() -> None:
    text = render_ssh_config([], key=Path("/k"), known_hosts=Path("/kh"), header="none")
    assert all(line.startswith("#") for line in text.splitlines())


@pytest.fixture
def signed(tmp_path: Path) -> tuple[str, str, str]:
    """A real user certificate: (certificate, the key it was issued for, another key)."""
    for name in ("ca", "user", "other"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "gatepass grant=grt-1", "-n", "hmi-01",
                    "-V", "+1h", str(tmp_path / "user.pub")], check=True)
    return ((tmp_path / "user-cert.pub").read_text(), (tmp_path / "user.pub").read_text(),
            (tmp_path / "other.pub").read_text())


def test_certificate_is_matched_to_the_key_it_was_issued_for(signed: tuple[str, str, str]) -> None:
    certificate, user_key, other_key = signed
    assert certificate_key_matches(certificate, user_key) is True
    assert certificate_key_matches(certificate, other_key) is False
    assert certificate_key_matches("garbage", user_key) is None


def test_a_grant_without_a_registered_gateway_says_so() -> None:
    with pytest.raises(NoUsableGrant, match="no gateway has registered with the broker yet"):
        grant(gateway=None)
