"""Sites (plants) and their assets: what exists, where it is, and the credentials the gateway injects."""

from __future__ import annotations

import datetime as dt

import asyncssh
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker import audit
from broker.audit import Action
from broker.durations import format_duration, parse_duration
from broker.errors import Conflict, InvalidInput, NotFound
from broker.identities import check_name
from broker.models import Asset, Site
from broker.vault import Vault

CRITICALITIES = ("low", "high")
# An asset of high criticality always needs two distinct approvers (DESIGN invariant 3).
HIGH_CRITICALITY_APPROVALS = 2


def credential_purpose(asset_name: str) -> str:
    return f"asset-credential:{asset_name}"


def create_site(
    session: Session, *, now: dt.datetime, actor: str, name: str, approvals_required: int = 1,
    max_window: str = "8h",
) -> Site:
    check_name(name, what="site")
    if not 1 <= approvals_required <= 5:
        raise InvalidInput(f"approvals required must be between 1 and 5, not {approvals_required}")
    window = parse_duration(max_window)
    if window > dt.timedelta(days=30):
        raise InvalidInput(f"a maximum window of {max_window} is too long: at most 30d")
    if session.scalar(select(Site).where(Site.name == name)) is not None:
        raise Conflict(f"a site named '{name}' already exists")
    site = Site(name=name, approvals_required=approvals_required,
                max_window_seconds=int(window.total_seconds()), locked_down=False, created_at=now)
    session.add(site)
    audit.record(session, now=now, action=Action.SITE_CREATED, actor=actor, subject=name, site=name,
                 details={"approvals_required": approvals_required, "max_window": format_duration(window)})
    return site


def create_asset(
    session: Session, *, vault: Vault, now: dt.datetime, actor: str, name: str, site: str, host: str,
    criticality: str = "low", ssh_port: int | None = None, ssh_user: str | None = None,
    ssh_password: str | None = None, ssh_private_key: str | None = None, host_key: str | None = None,
    tcp_ports: list[int] | None = None,
) -> Asset:
    check_name(name, what="asset")
    site_row = session.scalar(select(Site).where(Site.name == site))
    if site_row is None:
        raise NotFound(f"there is no site named '{site}': add it first with `gatepass admin site add {site}`")
    if session.scalar(select(Asset).where(Asset.name == name)) is not None:
        raise Conflict(f"an asset named '{name}' already exists")
    if criticality not in CRITICALITIES:
        raise InvalidInput(f"criticality '{criticality}' does not exist: choose low or high")
    if not host or len(host) > 255 or any(c.isspace() for c in host):
        raise InvalidInput(f"host '{host}' is not a host name or address")
    ports = sorted(set(tcp_ports or []))
    for port in [*ports, *([ssh_port] if ssh_port is not None else [])]:
        if not 1 <= port <= 65535:
            raise InvalidInput(f"port {port} is out of range: ports are 1-65535")

    asset = Asset(name=name, site_id=site_row.id, host=host, criticality=criticality, tcp_ports=ports,
                  created_at=now)
    if ssh_port is not None:
        if not ssh_user:
            raise InvalidInput("an SSH service needs --ssh-user: the account the gateway logs in as")
        if (ssh_password is None) == (ssh_private_key is None):
            raise InvalidInput("an SSH service needs exactly one credential: --ssh-password-file or --ssh-key-file")
        if ssh_private_key is not None:
            try:
                asyncssh.import_private_key(ssh_private_key)
            except (asyncssh.KeyImportError, ValueError) as error:
                raise InvalidInput(f"the SSH key file does not hold a usable private key ({error})") from None
        if not host_key:
            raise InvalidInput(
                "an SSH service needs the target's pinned host key (--host-key \"ssh-ed25519 AAAA…\"): "
                "the gateway never connects to a target it cannot authenticate"
            )
        asset.ssh_port, asset.ssh_user = ssh_port, ssh_user
        asset.host_key = normalise_public_key(host_key, what="host key")
        secret = ssh_private_key if ssh_private_key is not None else (ssh_password or "")
        asset.credential_kind = "private_key" if ssh_private_key is not None else "password"
        asset.credential_ciphertext = vault.seal(secret.encode(), purpose=credential_purpose(name))
    elif ssh_user or ssh_password or ssh_private_key or host_key:
        raise InvalidInput("SSH options need --ssh-port")

    session.add(asset)
    audit.record(
        session, now=now, action=Action.ASSET_CREATED, actor=actor, subject=name, site=site,
        # Never the credential: only which kind is vaulted.
        details={"host": host, "criticality": criticality, "ssh_port": ssh_port, "tcp_ports": ports,
                 "credential": asset.credential_kind},
    )
    return asset


def normalise_public_key(text: str, *, what: str) -> str:
    """Return ``type base64`` of an OpenSSH public key, or refuse with a clear reason."""
    try:
        key = asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError):
        raise InvalidInput(f"the {what} is not an OpenSSH public key (expected \"ssh-ed25519 AAAA…\")") from None
    return key.export_public_key("openssh").decode().strip()


def approvals_needed(asset: Asset) -> int:
    required = asset.site.approvals_required
    if asset.criticality == "high":
        required = max(required, HIGH_CRITICALITY_APPROVALS)
    return required


def get_asset(session: Session, name: str) -> Asset:
    asset = session.scalar(select(Asset).where(Asset.name == name))
    if asset is None:
        raise NotFound(f"there is no asset named '{name}'")
    return asset


def move_asset(session: Session, *, now: dt.datetime, actor: str, name: str, host: str, ssh_port: int,
               host_key: str) -> Asset:
    """Point an asset's SSH service at a new address and host key (the demo target changes port each run)."""
    asset = get_asset(session, name)
    asset.host, asset.ssh_port = host, ssh_port
    asset.host_key = normalise_public_key(host_key, what="host key")
    audit.record(session, now=now, action=Action.ASSET_UPDATED, actor=actor, subject=name, site=asset.site.name,
                 details={"host": host, "ssh_port": ssh_port})
    return asset
