"""The client state directory: private permissions, the session file, the SSH key, pinned host keys."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from cli.errors import NotLoggedIn, UsageError
from cli.state import ClientState, Session, check_asset_name, known_hosts_pattern, normalize_server

NOW = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def session(expires_at: dt.datetime = NOW + dt.timedelta(hours=1)) -> Session:
    return Session(server="http://broker.test", username="vendor1", token="tok-secret", expires_at=expires_at)


def test_home_defaults_to_dot_gatepass_and_honours_gatepass_home(tmp_path: Path) -> None:
    assert ClientState.from_environ({}).home == Path.home() / ".gatepass"
    assert ClientState.from_environ({"GATEPASS_HOME": str(tmp_path)}).home == tmp_path


def test_session_is_saved_private_and_read_back(tmp_path: Path) -> None:
    state = ClientState(tmp_path / "home")
    state.save_session(session())
    assert mode(state.home) == 0o700
    assert mode(state.session_path) == 0o600
    assert state.load_session() == session()
    assert json.loads(state.session_path.read_text())["expires_at"] == "2026-11-27T11:00:00+00:00"


def test_an_existing_home_readable_by_others_is_tightened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    ClientState(home).ensure_home()
    assert mode(home) == 0o700


def test_the_token_never_shows_in_repr() -> None:
    assert "tok-secret" not in repr(session())


def test_missing_or_damaged_session_means_not_logged_in(tmp_path: Path) -> None:
    state = ClientState(tmp_path)
    with pytest.raises(NotLoggedIn, match=r"you are not logged in to http://b\.test: run `gatepass login --server"):
        state.require_session(environ={"GATEPASS_SERVER": "http://b.test"}, now=NOW)
    state.session_path.write_text("{not json")
    assert state.load_session() is None


def test_expired_session_names_the_server_and_user(tmp_path: Path) -> None:
    state = ClientState(tmp_path)
    state.save_session(session(expires_at=NOW))
    with pytest.raises(NotLoggedIn, match=r"expired .*gatepass login --server http://broker\.test --user vendor1"):
        state.require_session(environ={}, now=NOW)


def test_key_is_made_once_with_ssh_keygen_and_kept_private(tmp_path: Path) -> None:
    state = ClientState(tmp_path / "home")
    public = state.ensure_key()
    assert public.startswith("ssh-ed25519 AAAA")
    assert public.endswith(" gatepass")
    assert mode(state.key_path) == 0o600
    assert state.ensure_key() == public  # not regenerated


def test_missing_public_half_is_derived_from_the_private_key(tmp_path: Path) -> None:
    state = ClientState(tmp_path / "home")
    public = state.ensure_key()
    state.public_key_path.unlink()
    assert state.ensure_key().split()[:2] == public.split()[:2]


def test_certificates_are_written_per_asset_and_private(tmp_path: Path) -> None:
    state = ClientState(tmp_path / "home")
    path = state.write_certificate("hmi-01", "ssh-ed25519-cert-v01@openssh.com AAAA")
    assert path == state.home / "certs" / "hmi-01-cert.pub"
    assert mode(path) == 0o600
    assert path.read_text() == "ssh-ed25519-cert-v01@openssh.com AAAA\n"


def test_known_hosts_pins_replace_the_entry_for_the_same_address_only(tmp_path: Path) -> None:
    state = ClientState(tmp_path)
    state.pin_host_keys([("127.0.0.1", 2222, "ssh-ed25519 OLD"), ("gw.plant-b", 22, "ssh-ed25519 B")])
    state.pin_host_keys([("127.0.0.1", 2222, "ssh-ed25519 NEW")])
    assert state.known_hosts_path.read_text().splitlines() == [
        "gw.plant-b ssh-ed25519 B",
        "[127.0.0.1]:2222 ssh-ed25519 NEW",
    ]
    assert mode(state.known_hosts_path) == 0o600


def test_known_hosts_pattern_follows_openssh() -> None:
    assert known_hosts_pattern("gw", 22) == "gw"
    assert known_hosts_pattern("gw", 2222) == "[gw]:2222"


@pytest.mark.parametrize("name", ["-oProxyCommand=x", "../etc", "a/b", "", "hmi 01", ".hidden"])
def test_asset_names_that_could_escape_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="is not an asset name"):
        check_asset_name(name)


def test_server_urls_need_a_scheme_and_lose_trailing_slashes() -> None:
    assert normalize_server("https://gp.example.com/") == "https://gp.example.com"
    with pytest.raises(UsageError, match="is not a server URL"):
        normalize_server("gp.example.com")
