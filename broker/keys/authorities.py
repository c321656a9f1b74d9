"""Certificate authorities: the SSH user CA that signs one certificate per grant."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

import asyncssh
from sqlalchemy.orm import Session

from broker.keys.vault import Vault
from broker.models import Authority

USER_CA = "ssh_user_ca"
# A little slack before the start so a client whose clock runs slightly behind can still use a fresh grant.
CLOCK_SKEW = dt.timedelta(seconds=30)


def _purpose(name: str) -> str:
    return f"authority:{name}"


def create_authority(session: Session, *, vault: Vault, now: dt.datetime, name: str = USER_CA) -> Authority:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"gatepass {name}")
    authority = Authority(
        name=name,
        public_key=key.export_public_key("openssh").decode().strip(),
        private_key_ciphertext=vault.seal(key.export_private_key("openssh"), purpose=_purpose(name)),
        created_at=now,
    )
    session.add(authority)
    return authority


def load_signing_key(session: Session, *, vault: Vault, name: str = USER_CA) -> asyncssh.SSHKey:
    authority = session.get(Authority, name)
    if authority is None:
        raise LookupError(f"the {name} certificate authority does not exist: run `gatepass init`")
    return asyncssh.import_private_key(vault.open(authority.private_key_ciphertext, purpose=_purpose(name)))


def public_key(session: Session, name: str = USER_CA) -> str:
    authority = session.get(Authority, name)
    if authority is None:
        raise LookupError(f"the {name} certificate authority does not exist: run `gatepass init`")
    return authority.public_key


@dataclass(frozen=True)
class CertificateSpec:
    grant_id: str
    username: str
    asset: str
    serial: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    allow_pty: bool
    allow_port_forwarding: bool


def new_serial() -> int:
    return secrets.randbits(63) or 1


def issue_user_certificate(ca_key: asyncssh.SSHKey, user_public_key: str, spec: CertificateSpec) -> str:
    """Sign the grant's certificate. asyncssh turns every permit-* extension on unless told otherwise,
    so each one is set explicitly; a certificate without principals would be valid for any login."""
    user_key = asyncssh.import_public_key(user_public_key)
    cert = ca_key.generate_user_certificate(
        user_key,
        key_id=f"gatepass grant={spec.grant_id} identity={spec.username}",
        serial=spec.serial,
        principals=[spec.asset],
        valid_after=int((spec.starts_at - CLOCK_SKEW).timestamp()),
        valid_before=int(spec.ends_at.timestamp()),
        permit_pty=spec.allow_pty,
        permit_port_forwarding=spec.allow_port_forwarding,
        permit_x11_forwarding=False,
        permit_agent_forwarding=False,
        permit_user_rc=False,
    )
    return cert.export_certificate("openssh").decode().strip()
