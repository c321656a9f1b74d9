"""Identities and their roles: humans, service accounts and AI agents, each with an owner and a purpose."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import Conflict, InvalidInput, NotFound
from broker.identity import passwords, totp
from broker.identity.policy import attestation_period, end_date
from broker.keys.vault import Vault
from broker.models import ApiToken, Identity, RoleAssignment, Site
from broker.vocabulary import IdentityKind, IdentityStatus, Role

ROLES = tuple(Role)
# "disabled" is what the contract has always said of a suspended account (`gatepass admin user disable`).
_SHOWN_STATUS: dict[str, str] = {IdentityStatus.SUSPENDED: "disabled"}
KINDS = tuple(IdentityKind)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# A deliberately plain subset of RFC 5321 addresses: dot-atom local part, a host name with at least one dot.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                           rf"@{_LABEL}(?:\.{_LABEL})+$")


def check_name(name: str, *, what: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise InvalidInput(
            f"{what} name '{name}' is not allowed: use 1-63 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_email(address: str) -> str:
    """The address, trimmed, or a refusal that says what is wrong with it."""
    address = (address or "").strip()
    # RFC 5321 §4.5.3.1: at most 64 octets before the @ and 254 in all (the path limit less the brackets).
    if len(address) > 254 or not EMAIL_PATTERN.match(address) or len(address.partition("@")[0]) > 64:
        raise InvalidInput(f"'{address[:80]}' is not an e-mail address: give one like name@plant.example")
    return address


# Crockford's base32 (no I, L, O, U): read aloud or typed from paper without mixing up 1/I/L or 0/O.
_ENROLMENT_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ENROLMENT_GROUPS, _ENROLMENT_GROUP = 3, 4  # XXXX-XXXX-XXXX: 60 random bits
ENROLMENT_CODE_TTL = dt.timedelta(hours=72)


@dataclass(frozen=True)
class NewCredentials:
    """Shown once, at creation: the broker keeps only the password's hash, the sealed TOTP secret and the
    enrolment code's SHA-256. The enrolment code must come with the password at the first sign-in: a password
    alone never shows or binds the second factor (DESIGN invariant 4)."""

    username: str
    password: str
    totp_secret: str
    enrolment_code: str

    def as_dict(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password, "totp_secret": self.totp_secret,
                "enrolment_code": self.enrolment_code}


@dataclass(frozen=True)
class NewFactor:
    """What `reset-totp` hands out once: the new (unconfirmed) TOTP secret and the enrolment code that binds it."""

    username: str
    totp_secret: str
    enrolment_code: str

    def as_dict(self) -> dict[str, str]:
        return {"username": self.username, "totp_secret": self.totp_secret, "enrolment_code": self.enrolment_code}


def enrolment_code_digest(code: str) -> str:
    """SHA-256 of the code in its canonical form: case, spaces and dashes do not matter, and the letters
    Crockford's base32 leaves out read as the digits they look like (O→0, I/L→1)."""
    canonical = "".join(code.split()).replace("-", "").upper().translate(str.maketrans("OIL", "011"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _issue_enrolment_code(session: Session, identity: Identity, *, now: dt.datetime, actor: str,
                          ttl: dt.timedelta, reason: str) -> str:
    """A new single-use enrolment code for ``identity`` (replacing any earlier one); only its hash is kept."""
    raw = "".join(secrets.choice(_ENROLMENT_ALPHABET) for _ in range(_ENROLMENT_GROUPS * _ENROLMENT_GROUP))
    code = "-".join(raw[i:i + _ENROLMENT_GROUP] for i in range(0, len(raw), _ENROLMENT_GROUP))
    identity.enrolment_code_hash = enrolment_code_digest(code)
    identity.enrolment_code_expires_at = now + ttl
    trail.record(session, now=now, action=Action.ENROLMENT_CODE_ISSUED, actor=actor, subject=identity.username,
                 details={"expires_at": identity.enrolment_code_expires_at.isoformat(), "reason": reason})
    return code


def totp_purpose(username: str) -> str:
    return f"totp-secret:{username}"


def create_identity(
    session: Session,
    *,
    vault: Vault,
    now: dt.datetime,
    actor: str,
    username: str,
    role: str,
    kind: str = IdentityKind.HUMAN,
    site_names: list[str] | None = None,
    organisation: str | None = None,
    owner: str | None = None,
    purpose: str | None = None,
    email: str | None = None,
    enrolment_code_ttl: dt.timedelta = ENROLMENT_CODE_TTL,
    expires_at: dt.datetime | None = None,
    sponsor: str | None = None,
) -> NewCredentials | None:
    """Create an identity with one role (scoped to sites where given). Humans get a password and a TOTP
    secret, returned once; service and AI-agent identities get neither (they never sign in with a
    password: DESIGN invariant 5) and must name an owner.

    The TOTP secret starts unconfirmed: the first sign-in that gives the password, the one-time enrolment code
    (valid for ``enrolment_code_ttl``) and a code from the secret confirms it (the web enrolment page with its
    QR code, or `gatepass login --enrolment-code … --totp …`)."""
    check_name(username, what="user")
    if email is not None:
        email = check_email(email)
    if role not in ROLES:
        raise InvalidInput(f"role '{role}' does not exist: choose one of {', '.join(ROLES)}")
    if kind not in KINDS:
        raise InvalidInput(f"identity kind '{kind}' does not exist: choose one of {', '.join(KINDS)}")
    if session.scalar(select(Identity).where(Identity.username == username)) is not None:
        raise Conflict(f"a user named '{username}' already exists")
    owner_identity = None
    if kind != IdentityKind.HUMAN:
        if not owner:
            raise InvalidInput(f"a {kind} identity needs an owner: the person accountable for it")
        owner_identity = session.scalar(select(Identity).where(Identity.username == owner))
        if owner_identity is None or owner_identity.kind != IdentityKind.HUMAN:
            raise InvalidInput(f"owner '{owner}' is not an existing human user")
    # An AI agent acts only on delegation from its sponsor, an active person: it holds subsets of their grants.
    sponsor_identity = None
    if kind == IdentityKind.AI_AGENT:
        if not sponsor:
            raise InvalidInput("an AI agent needs a sponsor (--sponsor): the person whose grants it may be delegated")
        sponsor_identity = session.scalar(select(Identity).where(Identity.username == sponsor))
        if (sponsor_identity is None or sponsor_identity.kind != IdentityKind.HUMAN
                or sponsor_identity.status != IdentityStatus.ACTIVE):
            raise InvalidInput(f"sponsor '{sponsor}' is not an active human user")
    elif sponsor:
        raise InvalidInput(f"only an AI agent has a sponsor, not a {kind} identity")
    if role == "supervisor" and not site_names:
        raise InvalidInput("a supervisor approves for named sites: give at least one --site")
    sites = [_site_by_name(session, name) for name in site_names or []]

    if kind != IdentityKind.HUMAN and not (purpose or "").strip():
        raise InvalidInput(f"a {kind} identity needs a purpose (--purpose): what it does, for the reviewers")
    identity = Identity(
        username=username, kind=kind, organisation=organisation, purpose=purpose,
        owner_id=owner_identity.id if owner_identity else None, created_at=now,
        sponsor_id=sponsor_identity.id if sponsor_identity else None,
        totp_last_step=0, failed_logins=0, status=IdentityStatus.ACTIVE, email=email, totp_confirmed_at=None,
        expires_at=end_date(kind=kind, role=role, now=now, requested=expires_at),
        # Reviewed: what the plant does not employ itself (vendors, services, AI agents); its own staff are
        # governed by its own HR process.
        attestation_due_at=now + attestation_period(session, (site.id for site in sites))
        if kind != IdentityKind.HUMAN or role == Role.VENDOR else None,
        credential_changed_at=now if kind == IdentityKind.HUMAN else None,
    )
    password = secret = None
    if kind == IdentityKind.HUMAN:
        password, secret = passwords.generate_password(), totp.new_secret()
        identity.password_hash = passwords.hash_password(password)
        identity.totp_secret_ciphertext = vault.seal(secret.encode(), purpose=totp_purpose(username))
    identity.roles = [RoleAssignment(role=role, site_id=site.id) for site in sites] or [RoleAssignment(role=role)]
    session.add(identity)
    session.flush()  # assign identity.id for the audit subject and role rows
    trail.record(
        session, now=now, action=Action.IDENTITY_CREATED, actor=actor, subject=username,
        details={"role": role, "kind": kind, "sites": [s.name for s in sites], "organisation": organisation,
                 "expires_at": identity.expires_at.isoformat() if identity.expires_at else None,
                 **({"sponsor": sponsor} if sponsor_identity else {}),
                 **({"email": email} if email else {})},
    )
    if password is None or secret is None:
        return None
    code = _issue_enrolment_code(session, identity, now=now, actor=actor, ttl=enrolment_code_ttl, reason="created")
    return NewCredentials(username, password, secret, code)


def get_identity(session: Session, username: str) -> Identity:
    identity = session.scalar(select(Identity).where(Identity.username == username))
    if identity is None:
        raise NotFound(f"there is no user named '{username}'")
    return identity


def set_email(session: Session, *, now: dt.datetime, actor: str, username: str, email: str | None) -> Identity:
    """Set (or, with None or "", clear) where this person's notifications go."""
    identity = get_identity(session, username)
    new = check_email(email) if email else None
    old = identity.email
    identity.email = new
    trail.record(session, now=now, action=Action.IDENTITY_UPDATED, actor=actor, subject=username,
                 details={"email": {"old": old, "new": new}})
    return identity


def reset_totp(session: Session, *, vault: Vault, now: dt.datetime, actor: str, username: str,
               enrolment_code_ttl: dt.timedelta = ENROLMENT_CODE_TTL) -> NewFactor:
    """Issue a new TOTP secret (lost phone, suspected copy): it is unconfirmed until the person proves it
    with their password, the new enrolment code (issued here) and a code from it, and every API token and web
    session of theirs is revoked so that nothing signed in with the old factor stays in. Returns the new
    secret and enrolment code, shown once."""
    identity = get_identity(session, username)
    if identity.kind != IdentityKind.HUMAN or identity.password_hash is None:
        raise InvalidInput(f"'{username}' is a {identity.kind} identity: it has no one-time codes to reset")
    secret = totp.new_secret()
    identity.totp_secret_ciphertext = vault.seal(secret.encode(), purpose=totp_purpose(username))
    identity.totp_confirmed_at = None
    identity.credential_changed_at = now
    # Every token not yet revoked, whatever its expiry says: revoking "all of them" must not depend on a
    # clock (one that runs behind would leave a live token in; an expired one stays unusable either way).
    revoked = 0
    for token in session.scalars(select(ApiToken).where(ApiToken.identity_id == identity.id,
                                                        ApiToken.revoked_at.is_(None))):
        token.revoked_at = now
        revoked += 1
    trail.record(session, now=now, action=Action.TOTP_RESET, actor=actor, subject=username,
                 details={"tokens_revoked": revoked})
    code = _issue_enrolment_code(session, identity, now=now, actor=actor, ttl=enrolment_code_ttl,
                                 reason="totp reset")
    return NewFactor(username, secret, code)


def _site_by_name(session: Session, name: str) -> Site:
    site = session.scalar(select(Site).where(Site.name == name))
    if site is None:
        raise NotFound(f"there is no site named '{name}'")
    return site


def has_role(identity: Identity, role: str) -> bool:
    return any(assignment.role == role for assignment in identity.roles)


def site_ids_for_role(identity: Identity, role: str) -> set[int | None]:
    """Site scopes of a role; ``None`` in the set means the role applies to every site."""
    return {assignment.site_id for assignment in identity.roles if assignment.role == role}


def may_act_for_site(identity: Identity, role: str, site_id: int) -> bool:
    scopes = site_ids_for_role(identity, role)
    return None in scopes or site_id in scopes


def why_unusable(identity: Identity, now: dt.datetime) -> str | None:
    """Why this identity may not act right now, or None when it may."""
    if identity.status != IdentityStatus.ACTIVE:
        return f"the account '{identity.username}' is {_SHOWN_STATUS.get(identity.status, identity.status)}"
    if identity.expires_at is not None and identity.expires_at <= now:
        return f"the account '{identity.username}' expired on {identity.expires_at:%Y-%m-%d %H:%M} UTC"
    return None
