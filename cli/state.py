"""The client's state directory (``$GATEPASS_HOME`` or ``~/.gatepass``): session, key, certs, known_hosts.

Layout, all private to the user (directory 0700, files 0600) because the session token and the private
key are bearer credentials:

    session.json            {"server", "username", "token", "expires_at"}
    id_ed25519(.pub)        the vendor's key; grant certificates are issued for its public half
    certs/<asset>-cert.pub  the certificate of the grant last used for that asset
    known_hosts             the gateways' host keys as the broker reported them (pinned, strict checking)
    ssh_config              `gatepass ssh-config --write`: Host ASSET.gatepass entries, included by ~/.ssh/config
    putty/<asset>.ppk       `gatepass key export --format ppk`: the key with a grant's certificate, for PuTTY
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from cli.durations import parse_api_time
from cli.errors import LocalSetupError, NotLoggedIn, UsageError

DEFAULT_SERVER = "http://127.0.0.1:8080"
KEY_NAME = "id_ed25519"

# Asset names end up in file names and in ssh's command line: allow no path separators and no leading dash.
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_asset_name(name: str) -> str:
    if not _ASSET_NAME.fullmatch(name) or ".." in name:  # fullmatch: `$` would let a trailing line break through
        raise UsageError(
            f"'{name}' is not an asset name: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def default_server(environ: Mapping[str, str]) -> str:
    return normalize_server(environ.get("GATEPASS_SERVER") or DEFAULT_SERVER)


def normalize_server(url: str) -> str:
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise UsageError(
            f"'{url}' is not a server URL: write it like https://gatepass.example.com or {DEFAULT_SERVER}"
        )
    return url


@dataclasses.dataclass(frozen=True)
class Session:
    server: str
    username: str
    token: str = dataclasses.field(repr=False)  # never in logs, tracebacks or output
    expires_at: dt.datetime

    def is_expired(self, now: dt.datetime) -> bool:
        return now >= self.expires_at

    def to_json(self) -> dict[str, str]:
        return {
            "server": self.server,
            "username": self.username,
            "token": self.token,
            "expires_at": self.expires_at.isoformat(),
        }


def login_hint(server: str, username: str | None = None) -> str:
    return f"run `gatepass login --server {server} --user {username or 'NAME'}`"


class ClientState:
    """Paths and private files under one state directory; nothing is created until it is needed."""

    def __init__(self, home: Path) -> None:
        self.home = home

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ClientState:
        home = environ.get("GATEPASS_HOME")
        # Absolute from the start: the paths written into ssh's config (IdentityFile, CertificateFile, Include) are
        # read by ssh from wherever it runs, and a relative one would name another file there.
        return cls(Path(home).expanduser().absolute() if home else Path.home() / ".gatepass")

    @property
    def session_path(self) -> Path:
        return self.home / "session.json"

    @property
    def key_path(self) -> Path:
        return self.home / KEY_NAME

    @property
    def public_key_path(self) -> Path:
        return self.home / f"{KEY_NAME}.pub"

    @property
    def certs_dir(self) -> Path:
        return self.home / "certs"

    @property
    def known_hosts_path(self) -> Path:
        return self.home / "known_hosts"

    @property
    def ssh_config_path(self) -> Path:
        return self.home / "ssh_config"

    def certificate_path(self, asset: str) -> Path:
        return self.certs_dir / f"{check_asset_name(asset)}-cert.pub"

    # -- directory -----------------------------------------------------------------------------------

    def ensure_home(self) -> Path:
        """Create the directory 0700, or tighten an existing one that others could read."""
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            if stat.S_IMODE(self.home.stat().st_mode) & 0o077:
                self.home.chmod(0o700)
        except OSError as exc:
            raise LocalSetupError(
                f"cannot use {self.home} as the gatepass state directory: {exc.strerror}"
            ) from exc
        return self.home

    def _write_private(self, path: Path, text: str) -> None:
        write_private_file(path, text)

    # -- session -------------------------------------------------------------------------------------

    def load_session(self) -> Session | None:
        try:
            raw = json.loads(self.session_path.read_text(encoding="utf-8"))
            return Session(
                server=str(raw["server"]),
                username=str(raw["username"]),
                token=str(raw["token"]),
                expires_at=parse_api_time(str(raw["expires_at"])),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            # A damaged session file is the same as none: the user logs in again.
            return None

    def require_session(self, *, environ: Mapping[str, str], now: dt.datetime) -> Session:
        session = self.load_session()
        if session is None:
            server = default_server(environ)
            raise NotLoggedIn(f"you are not logged in to {server}: {login_hint(server)}")
        if session.is_expired(now):
            raise NotLoggedIn(
                f"your session on {session.server} expired at {session.expires_at:%Y-%m-%d %H:%M} UTC: "
                f"{login_hint(session.server, session.username)}"
            )
        return session

    def save_session(self, session: Session) -> None:
        self.ensure_home()
        self._write_private(self.session_path, json.dumps(session.to_json(), indent=2) + "\n")

    def delete_session(self) -> bool:
        try:
            self.session_path.unlink()
        except FileNotFoundError:
            return False
        return True

    # -- SSH key, certificates, known_hosts ----------------------------------------------------------

    def ensure_key(self) -> str:
        """Return the public key (``ssh-ed25519 AAAA… gatepass``), creating the key pair on first need."""
        self.ensure_home()
        if not self.key_path.exists():
            _run_ssh_keygen(["-q", "-t", "ed25519", "-N", "", "-C", "gatepass", "-f", str(self.key_path)])
        elif not self.public_key_path.exists():
            public = _run_ssh_keygen(["-y", "-f", str(self.key_path)])
            self._write_private(self.public_key_path, public.strip() + "\n")
        # OpenSSH refuses a private key that others can read.
        if stat.S_IMODE(self.key_path.stat().st_mode) & 0o077:
            self.key_path.chmod(0o600)
        return self.public_key_path.read_text(encoding="utf-8").strip()

    def write_certificate(self, asset: str, certificate: str) -> Path:
        path = self.certificate_path(asset)
        self.ensure_home()
        self.certs_dir.mkdir(mode=0o700, exist_ok=True)
        self._write_private(path, certificate.strip() + "\n")
        return path

    def pin_host_keys(self, entries: Iterable[tuple[str, int, str]]) -> Path:
        """Pin each gateway ``(host, port, host_key)``, replacing what was pinned before for that address."""
        new_lines = {
            known_hosts_pattern(host, port): f"{known_hosts_pattern(host, port)} {key.strip()}"
            for host, port, key in entries
        }
        try:
            existing = self.known_hosts_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            existing = []
        kept = [line for line in existing if line.strip() and line.split(maxsplit=1)[0] not in new_lines]
        self.ensure_home()
        self._write_private(self.known_hosts_path, "\n".join([*kept, *new_lines.values()]) + "\n")
        return self.known_hosts_path


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically (a reader never sees half a file); a missing folder is
    created 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def known_hosts_pattern(host: str, port: int) -> str:
    """The name OpenSSH looks up in known_hosts: ``host`` on port 22, ``[host]:port`` otherwise (sshd(8))."""
    return host if port == 22 else f"[{host}]:{port}"


def _run_ssh_keygen(args: list[str]) -> str:
    try:
        done = subprocess.run(["ssh-keygen", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise LocalSetupError("ssh-keygen was not found: install the OpenSSH client to use gatepass") from exc
    if done.returncode != 0:
        raise LocalSetupError(f"ssh-keygen failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout
