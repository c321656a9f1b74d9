"""Demo data for `gatepass serve --demo`: one plant, one machine, a vendor and a supervisor.

The credentials are kept in ``DATA/demo/credentials.json`` (mode 0600) so that every `make run` can
print them again; a real installation never stores passwords like this.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import asyncssh
from sqlalchemy import select

from broker.admin import local_session
from broker.identity import identities
from broker.inventory import sites
from broker.keys.vault import Vault
from broker.models import Asset
from broker.settings import Settings

SITE = "demo-plant"
ASSET = "demo-hmi"
VENDOR = "demo-vendor"
SUPERVISOR = "demo-supervisor"
TARGET_USER = "operator"
ACTOR = "gatepass-demo"


def demo_dir(settings: Settings) -> Path:
    path = settings.data_dir / "demo"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def target_client_key(settings: Settings) -> asyncssh.SSHKey:
    """The key the gateway logs in to the demo target with (vaulted in the broker like any target credential)."""
    path = demo_dir(settings) / "target_client_key"
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="gatepass demo target credential")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.export_private_key("openssh"))
    return asyncssh.read_private_key(str(path))


def seed(settings: Settings, *, target_host: str, target_port: int, target_host_key: str) -> dict[str, Any]:
    """Create the demo plant once; on later runs only move the demo machine to where its target now listens.
    Returns the demo users' credentials."""
    credentials_path = demo_dir(settings) / "credentials.json"
    vault = Vault.from_key_file(settings.master_key_path)
    now = settings.clock.now()
    key = target_client_key(settings)
    with local_session(settings) as session:
        if session.scalar(select(Asset).where(Asset.name == ASSET)) is not None:
            sites.move_asset(session, now=now, actor=ACTOR, name=ASSET, host=target_host, ssh_port=target_port,
                                 host_key=target_host_key)
            loaded: dict[str, Any] = json.loads(credentials_path.read_text())
            return loaded
        sites.create_site(session, now=now, actor=ACTOR, name=SITE, approvals_required=1, max_window="8h")
        session.flush()  # the asset below refers to the site
        sites.create_asset(
            session, vault=vault, now=now, actor=ACTOR, name=ASSET, site=SITE, host=target_host,
            ssh_port=target_port, ssh_user=TARGET_USER, ssh_private_key=key.export_private_key("openssh").decode(),
            host_key=target_host_key, tcp_ports=[],
        )
        vendor = identities.create_identity(session, vault=vault, now=now, actor=ACTOR, username=VENDOR,
                                            role="vendor", organisation="Demo Vendor Ltd")
        supervisor = identities.create_identity(session, vault=vault, now=now, actor=ACTOR, username=SUPERVISOR,
                                                role="supervisor", site_names=[SITE], organisation="Demo Plant")
    if vendor is None or supervisor is None:  # humans always get credentials; this guards the type
        raise RuntimeError("demo users were created without credentials")
    users = {"vendor": vendor.as_dict(), "supervisor": supervisor.as_dict(), "site": SITE, "asset": ASSET}
    fd = os.open(credentials_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(users, handle, indent=2)
    return users
