"""One inventory of every identity — people, service accounts, AI agents — with the flags a reviewer acts on,
computed on every read (never stored, so never stale), and its CSV/JSON export."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.errors import InvalidInput
from broker.identity.identities import get_identity
from broker.models import AccessSession, Grant, Identity, Site, StandingPolicy, WorkloadInstance
from broker.vocabulary import IdentityKind, IdentityStatus, InstanceStatus

UNUSED_AFTER = dt.timedelta(days=90)
EXPIRING_WITHIN = dt.timedelta(days=14)
DEFAULT_CREDENTIAL_MAX_AGE = dt.timedelta(days=365)
# A person's grant longer than this is standing access, not just-in-time access.
STANDING_AFTER = dt.timedelta(hours=24)


class Flag(StrEnum):
    NO_OWNER = "no_owner"
    OWNER_INACTIVE = "owner_inactive"
    UNUSED = "unused_90_days"
    ATTESTATION_OVERDUE = "attestation_overdue"
    EXPIRING_SOON = "expiring_within_14_days"
    CREDENTIAL_OLD = "credential_older_than_policy"
    STANDING_ACCESS = "human_with_standing_access"


FLAG_TEXT = {
    Flag.NO_OWNER: "no owner",
    Flag.OWNER_INACTIVE: "owner disabled, retired or expired",
    Flag.UNUSED: "unused for 90 days",
    Flag.ATTESTATION_OVERDUE: "access review overdue",
    Flag.EXPIRING_SOON: "expires within 14 days",
    Flag.CREDENTIAL_OLD: "credential older than the site's limit",
    Flag.STANDING_ACCESS: "a person with standing access",
}


@dataclass(frozen=True)
class IdentityRecord:
    username: str
    kind: str
    status: str
    roles: list[str]
    organisation: str | None
    owner: str | None
    sponsor: str | None
    purpose: str | None
    sites: list[str]
    created_at: str
    last_used_at: str | None
    credential: str
    credential_age_days: int | None
    expires_at: str | None
    attestation_due_at: str | None
    status_reason: str | None
    flags: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _credential(identity: Identity, instances: list[WorkloadInstance]) -> tuple[str, dt.datetime | None]:
    """What the identity signs in with, and since when."""
    if identity.kind == IdentityKind.HUMAN and identity.oidc_issuer:
        # Signed in by the company's identity provider: its credential (and its age) is the provider's to govern.
        return f"company sign-in ({identity.oidc_issuer})", None
    if identity.kind == IdentityKind.HUMAN:
        return "password+totp", identity.credential_changed_at or identity.created_at
    active = [i for i in instances if i.status == InstanceStatus.ACTIVE]
    if not active:
        return "none (not joined)", None
    newest = max(active, key=lambda i: i.created_at)
    return f"key ({len(active)} instance{'s' if len(active) != 1 else ''})", newest.created_at


def _max_credential_age(sites: list[Site]) -> dt.timedelta:
    if not sites:
        return DEFAULT_CREDENTIAL_MAX_AGE
    return dt.timedelta(days=min(site.credential_max_age_days for site in sites))


class _Context:
    """What the flags need, read once for the whole inventory rather than once per identity."""

    def __init__(self, session: Session, now: dt.datetime) -> None:
        self.now = now
        self.by_id = {i.id: i for i in session.scalars(select(Identity))}
        self.sites = {s.id: s for s in session.scalars(select(Site))}
        self.instances: dict[int, list[WorkloadInstance]] = {}
        for instance in session.scalars(select(WorkloadInstance)):
            self.instances.setdefault(instance.identity_id, []).append(instance)
        self.standing_policies = set(session.scalars(
            select(StandingPolicy.identity_id).where(StandingPolicy.revoked_at.is_(None),
                                                     StandingPolicy.ends_at > now)))
        self.long_grants = {identity_id for identity_id, starts_at, ends_at in session.execute(
            select(Grant.identity_id, Grant.starts_at, Grant.ends_at).where(
                Grant.revoked_at.is_(None), Grant.ends_at > now)) if ends_at - starts_at > STANDING_AFTER}
        # Sessions count as use too (a gateway reports them; last_used_at is also kept, this is the backstop).
        self.last_session = dict(session.execute(
            select(Grant.identity_id, func.max(AccessSession.started_at)).join(Grant).group_by(Grant.identity_id)
        ).all())


def _record(identity: Identity, context: _Context) -> IdentityRecord:
    now = context.now
    owner = context.by_id.get(identity.owner_id) if identity.owner_id else None
    sponsor = context.by_id.get(identity.sponsor_id) if identity.sponsor_id else None
    sites = [context.sites[a.site_id] for a in identity.roles if a.site_id is not None and a.site_id in context.sites]
    instances = context.instances.get(identity.id, [])
    credential, credential_since = _credential(identity, instances)
    last_used = max((m for m in (identity.last_used_at, context.last_session.get(identity.id)) if m), default=None)
    flags: list[Flag] = []
    if identity.status in (IdentityStatus.ACTIVE, IdentityStatus.SUSPENDED):
        if identity.kind != IdentityKind.HUMAN and owner is None:
            flags.append(Flag.NO_OWNER)
        if owner is not None and owner.status != IdentityStatus.ACTIVE:
            flags.append(Flag.OWNER_INACTIVE)
        if (last_used or identity.created_at) <= now - UNUSED_AFTER:
            flags.append(Flag.UNUSED)
        if identity.attestation_due_at is not None and identity.attestation_due_at <= now:
            flags.append(Flag.ATTESTATION_OVERDUE)
        if identity.expires_at is not None and now < identity.expires_at <= now + EXPIRING_WITHIN:
            flags.append(Flag.EXPIRING_SOON)
        if credential_since is not None and credential_since <= now - _max_credential_age(sites):
            flags.append(Flag.CREDENTIAL_OLD)
        if identity.kind == IdentityKind.HUMAN and (identity.id in context.standing_policies
                                                    or identity.id in context.long_grants):
            flags.append(Flag.STANDING_ACCESS)
    return IdentityRecord(
        username=identity.username, kind=identity.kind, status=identity.status,
        roles=sorted({a.role for a in identity.roles}), organisation=identity.organisation,
        owner=owner.username if owner else None, sponsor=sponsor.username if sponsor else None,
        purpose=identity.purpose, sites=sorted({s.name for s in sites}), created_at=identity.created_at.isoformat(),
        last_used_at=_iso(last_used), credential=credential,
        credential_age_days=(now - credential_since).days if credential_since else None,
        expires_at=_iso(identity.expires_at), attestation_due_at=_iso(identity.attestation_due_at),
        status_reason=identity.status_reason, flags=[str(flag) for flag in flags])


def _check_filter(value: str | None, allowed: Iterable[str], what: str) -> None:
    allowed = list(allowed)
    if value is not None and value not in allowed:
        raise InvalidInput(f"{what} '{value[:40]}' does not exist: choose one of {', '.join(allowed)}")


def list_identities(session: Session, *, now: dt.datetime, kind: str | None = None, flag: str | None = None,
                    status: str | None = None) -> list[IdentityRecord]:
    """Every identity (retired ones too: the inventory is also the history), filtered by kind, flag, status."""
    _check_filter(kind, (str(k) for k in IdentityKind), "kind")
    _check_filter(flag, (str(f) for f in Flag), "flag")
    _check_filter(status, (str(s) for s in IdentityStatus), "status")
    context = _Context(session, now)
    records = [_record(identity, context) for identity in sorted(context.by_id.values(), key=lambda i: i.username)]
    return [r for r in records if (kind is None or r.kind == kind) and (flag is None or flag in r.flags)
            and (status is None or r.status == status)]


def show_identity(session: Session, *, now: dt.datetime, username: str) -> IdentityRecord:
    identity = get_identity(session, username)
    return _record(identity, _Context(session, now))


CSV_COLUMNS = ("username", "kind", "status", "roles", "organisation", "owner", "sponsor", "purpose", "sites",
               "created_at", "last_used_at", "credential", "credential_age_days", "expires_at",
               "attestation_due_at", "flags")


def as_csv(records: Iterable[IdentityRecord]) -> str:
    """RFC 4180 CSV, lists joined with ';'. A cell that a spreadsheet would run as a formula is prefixed with
    an apostrophe (OWASP CSV injection): names and purposes come from people."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for record in records:
        values = record.as_dict()
        writer.writerow([_cell(values[column]) for column in CSV_COLUMNS])
    return out.getvalue()


def _cell(value: Any) -> str:
    text = ";".join(value) if isinstance(value, list) else "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
