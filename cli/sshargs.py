"""Choose the grant to connect with and turn it into stock OpenSSH: a command line or a config block."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cli.client_commands import OBJECT_ID
from cli.durations import parse_api_time
from cli.errors import NoUsableGrant, ServerUnreachable, UsageError
from cli.state import check_asset_name

ED25519_CERT_TYPE = "ssh-ed25519-cert-v01@openssh.com"
_HOST = re.compile(r"^[A-Za-z0-9_.:%\[\]-]+$")
# A gateway's host key as pinned in known_hosts: type, base64, an optional comment; one line, no control character
# (a line break would add known_hosts lines of the broker's choosing, @cert-authority among them).
_HOST_KEY = re.compile(r"[A-Za-z0-9@._+-]+ [A-Za-z0-9+/]+=*(?: [^\x00-\x1f\x7f]*)?")


@dataclasses.dataclass(frozen=True)
class Gateway:
    host: str
    port: int
    host_key: str


@dataclasses.dataclass(frozen=True)
class UsableGrant:
    """The parts of an API ``Grant`` the client connects with, checked for shape."""

    id: str
    asset: str
    status: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    ssh: bool
    ports: tuple[int, ...]
    certificate: str | None
    gateway: Gateway
    # Sessions wait until a supervisor of the site watches (absent from brokers before issue 13: False).
    supervision_required: bool = False

    @classmethod
    def from_api(cls, grant: Mapping[str, Any]) -> UsableGrant:
        if grant.get("gateway") is None and "id" in grant:
            raise NoUsableGrant(
                f"grant {grant['id']} has no gateway to connect through: no gateway has registered with "
                "the broker yet (ask the admin to start `gatepass gateway`)"
            )
        try:
            gateway = grant["gateway"]
            host = str(gateway["host"])
            if not _HOST.fullmatch(host) or host.startswith("-"):  # fullmatch: `$` lets a final line break through
                raise ValueError(f"unusable gateway host {host!r}")
            grant_id, asset = str(grant["id"]), str(grant["asset"])
            host_key = str(gateway["host_key"]).strip()
            if not _HOST_KEY.fullmatch(host_key):
                raise ValueError(f"unusable gateway host key {host_key[:100]!r}")
            # Written into the ssh config `ssh-config --write` has ~/.ssh/config include, where a line break would add
            # directives for every connection: an id as `gatepass revoke GRANT_ID` takes one, and nothing else.
            if not OBJECT_ID.fullmatch(grant_id):
                raise ValueError(f"unusable grant id {grant_id[:70]!r}")
            try:
                check_asset_name(asset)
            except UsageError:  # the broker's, not the user's: said as such, quoted (it may hold control characters)
                raise ValueError(f"unusable asset name {asset[:140]!r}") from None
            return cls(
                id=grant_id,
                asset=asset,
                status=str(grant["status"]),
                starts_at=parse_api_time(str(grant["starts_at"])),
                ends_at=parse_api_time(str(grant["ends_at"])),
                ssh=bool(grant.get("ssh", False)),
                ports=tuple(int(p) for p in grant.get("ports") or ()),
                certificate=grant.get("certificate") or None,
                gateway=Gateway(
                    host=host, port=int(gateway["port"]), host_key=host_key
                ),
                supervision_required=grant.get("supervision_required") is True,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerUnreachable(f"the broker sent a grant the client cannot use ({exc})") from exc

    def is_active(self, now: dt.datetime) -> bool:
        # Decide on the times too: a grant whose start has passed is usable even if the list said "scheduled".
        return self.status in {"active", "scheduled"} and self.starts_at <= now < self.ends_at

    def is_usable(self, now: dt.datetime) -> bool:
        return self.status in {"active", "scheduled"} and now < self.ends_at

    def covers(self, *, port: int | None) -> bool:
        return self.ssh if port is None else port in self.ports

    def services(self) -> str:
        return describe_services(ssh=self.ssh, ports=self.ports)


def describe_services(*, ssh: bool, ports: Sequence[int]) -> str:
    parts = (["ssh"] if ssh else []) + [f"tcp/{port}" for port in ports]
    return ", ".join(parts) or "nothing"


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def usable_grants(
    grants: Sequence[Mapping[str, Any]], *, username: str, now: dt.datetime
) -> list[UsableGrant]:
    """The caller's own grants that can still be used (supervisors also see other people's grants)."""
    mine = [g for g in grants if g.get("identity", username) == username]
    return [grant for grant in (UsableGrant.from_api(g) for g in mine) if grant.is_usable(now)]


def choose_grant(
    grants: Sequence[UsableGrant], *, asset: str, now: dt.datetime, port: int | None = None
) -> UsableGrant:
    """The active grant for ``asset`` covering SSH (``port=None``) or that TCP port, ending last.

    Raises ``NoUsableGrant`` with the next step spelled out: request access, wait for the start, or use
    the service the grant does cover.
    """
    wanted = "SSH" if port is None else f"TCP port {port}"
    how = "" if port is None else f" --port {port}"  # SSH is what a request asks for by default
    request_hint = f"`gatepass request {asset}{how} --for 1h --reason …`"
    for_asset = [g for g in grants if g.asset == asset]
    if not for_asset:
        raise NoUsableGrant(f"no active grant for {asset}: request access with {request_hint}")
    active = [g for g in for_asset if g.is_active(now)]
    covering = [g for g in active if g.covers(port=port)]
    if covering:
        chosen = max(covering, key=lambda g: g.ends_at)
        if not chosen.certificate:
            raise NoUsableGrant(
                f"the broker sent no certificate for grant {chosen.id}: only its grantee can connect"
            )
        return chosen
    later = sorted(
        (g for g in for_asset if not g.is_active(now) and g.covers(port=port)), key=lambda g: g.starts_at
    )
    if later:
        first = later[0]
        wait = _format_wait(first.starts_at - now)
        raise NoUsableGrant(
            f"your grant {first.id} for {asset} starts at {format_time(first.starts_at)} "
            f"(in {wait}): connect then"
        )
    other = active[0] if active else for_asset[0]
    raise NoUsableGrant(
        f"your grant {other.id} for {asset} covers {other.services()}, not {wanted}: "
        f"request it with {request_hint}"
    )


def pick_per_asset(grants: Sequence[UsableGrant], *, now: dt.datetime) -> list[UsableGrant]:
    """One grant per asset (certificate files are per asset): the active one ending last, else the next."""
    chosen: dict[str, UsableGrant] = {}
    for grant in grants:
        current = chosen.get(grant.asset)
        if current is None or _better(grant, current, now=now):
            chosen[grant.asset] = grant
    return [chosen[asset] for asset in sorted(chosen)]


def _better(candidate: UsableGrant, current: UsableGrant, *, now: dt.datetime) -> bool:
    if candidate.is_active(now) != current.is_active(now):
        return candidate.is_active(now)
    if candidate.is_active(now):
        return candidate.ends_at > current.ends_at
    return candidate.starts_at < current.starts_at


def _format_wait(delta: dt.timedelta) -> str:
    minutes = max(1, int(delta.total_seconds() + 59) // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def certificate_key_matches(certificate: str, public_key: str) -> bool | None:
    """Whether an ed25519 certificate was issued for ``public_key``; ``None`` when that cannot be read.

    Certificate layout (OpenSSH PROTOCOL.certkeys): string type, string nonce, string pk, ...
    """
    try:
        cert_type, cert_b64 = certificate.split()[:2]
        key_type, key_b64 = public_key.split()[:2]
        if cert_type != ED25519_CERT_TYPE or key_type != "ssh-ed25519":
            return None
        cert_fields = _read_strings(base64.b64decode(cert_b64), 3)
        key_fields = _read_strings(base64.b64decode(key_b64), 2)
    except (ValueError, binascii.Error):
        return None
    return cert_fields[2] == key_fields[1]


def _read_strings(blob: bytes, count: int) -> list[bytes]:
    fields, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(blob):
            raise ValueError("truncated")
        size = int.from_bytes(blob[offset : offset + 4], "big")
        offset += 4
        if offset + size > len(blob):
            raise ValueError("truncated")
        fields.append(blob[offset : offset + size])
        offset += size
    return fields


@dataclasses.dataclass(frozen=True)
class SshFiles:
    key: Path
    certificate: Path
    known_hosts: Path


def ssh_binary(environ: Mapping[str, str]) -> list[str]:
    """The ssh client to run: ``$GATEPASS_SSH_BIN`` (split like a shell would) or ``ssh`` from PATH."""
    return shlex.split(environ.get("GATEPASS_SSH_BIN") or "ssh")


def ssh_command(
    *,
    ssh: Sequence[str],
    grant: UsableGrant,
    files: SshFiles,
    command: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    """Stock OpenSSH to the grant's gateway as user ASSET, with the grant certificate and pinned host key."""
    return [
        *ssh,
        "-p",
        str(grant.gateway.port),
        "-i",
        str(files.key),
        "-o",
        f"CertificateFile={files.certificate}",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={files.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        *extra,
        f"{grant.asset}@{grant.gateway.host}",
        *command,
    ]


def tunnel_options(*, asset: str, remote_port: int, local_port: int) -> list[str]:
    """``-N -L`` forwarding of one granted port; the gateway resolves ASSET from its inventory, not DNS."""
    return [
        "-N",
        "-L",
        f"127.0.0.1:{local_port}:{asset}:{remote_port}",
        "-o",
        "ExitOnForwardFailure=yes",
    ]


# ssh asks the gateway after 5 s without news and gives up when 3 asks went unanswered: a dead link is
# noticed within about 20 s (measured 20.3 s), while a shorter drop is ridden out by TCP itself.
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3


def keepalive_options() -> list[str]:
    """Keep-alives for a long-lived tunnel, and no prompts: it runs unattended between reconnects."""
    return [
        "-o",
        f"ServerAliveInterval={KEEPALIVE_INTERVAL}",
        "-o",
        f"ServerAliveCountMax={KEEPALIVE_COUNT}",
        "-o",
        "BatchMode=yes",
    ]


def config_value(value: str | Path) -> str:
    """A path or word as OpenSSH's config (and a shell line) reads it: quoted when it holds a space."""
    text = str(value)
    return f'"{text}"' if any(ch.isspace() for ch in text) else text


def render_ssh_config(
    entries: Sequence[tuple[UsableGrant, Path]], *, key: Path, known_hosts: Path, header: str
) -> str:
    """One ``Host ASSET.gatepass`` block per (grant, certificate path), for ``ssh -F`` or ``Include``."""
    lines = [f"# {header}"]
    if not entries:
        lines.append("# (no usable grants: request access with `gatepass request ASSET --for 1h --reason …`)")
    for grant, certificate in entries:
        lines += [
            "",
            f"Host {grant.asset}.gatepass",
            f"    # grant {grant.id} ({grant.services()}) {grant.status} "
            f"{format_time(grant.starts_at)} to {format_time(grant.ends_at)}",
            f"    HostName {grant.gateway.host}",
            f"    Port {grant.gateway.port}",
            f"    User {grant.asset}",
            f"    IdentityFile {config_value(key)}",
            f"    CertificateFile {config_value(certificate)}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {config_value(known_hosts)}",
            "    StrictHostKeyChecking yes",
            "    GlobalKnownHostsFile /dev/null",
        ]
    return "\n".join(lines) + "\n"
