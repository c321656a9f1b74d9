"""Access reviews (attestation): each identity is re-confirmed every N days (its sites' policy, default 90) by
someone accountable for it — its owner or sponsor, for a vendor the supervisors of the sites it uses, and admins
for anyone — who sees what it did since the last review and keeps it or revokes it. Overdue reviews suspend the
identity (the default) or only flag it, by site policy. Nobody reviews themselves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import Conflict, Forbidden, InvalidInput, audited
from broker.identity import lifecycle
from broker.identity.identities import get_identity, has_role, may_act_for_site
from broker.identity.policy import attestation_period
from broker.identity.usage import sites_granted
from broker.inventory.gateway_events import EventPublisher
from broker.models import AccessSession, Asset, Attestation, Grant, Identity, Site, StandingPolicy
from broker.vocabulary import AttestationOutcome, IdentityStatus, OverdueAttestation, Role

# Reviews show up in a reviewer's list from this long before they are due (and the reminder goes out).
DUE_SOON = dt.timedelta(days=14)
MAX_COMMENT = 1000


@dataclass(frozen=True)
class Usage:
    """What an identity did since its last review: what the reviewer decides on."""

    since: str
    grants: int
    sessions: int
    assets: list[str]
    last_used_at: str | None
    # Standing access for automation is part of the review: kept with the identity, or ended with a revoke.
    standing_policies: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Review:
    username: str
    kind: str
    status: str
    owner: str | None
    purpose: str | None
    due_at: str | None
    overdue: bool
    usage: Usage
    why_you: str
    flags: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sites_used(session: Session, identity: Identity) -> set[int]:
    """The sites an identity is scoped to or has held grants at."""
    return {a.site_id for a in identity.roles if a.site_id is not None} | sites_granted(session, identity)


def reviewers(session: Session, identity: Identity) -> list[Identity]:
    """Who is reminded of a review: the owner and sponsor, and for a vendor the supervisors of the sites it uses
    (admins may review anyone, but are not reminded of everyone)."""
    found = [session.get(Identity, person_id) for person_id in (identity.owner_id, identity.sponsor_id) if person_id]
    if has_role(identity, Role.VENDOR):
        site_ids = _sites_used(session, identity)
        for person in session.scalars(select(Identity).where(Identity.status == IdentityStatus.ACTIVE)):
            if person.id != identity.id and any(may_act_for_site(person, Role.SUPERVISOR, site_id)
                                                for site_id in site_ids):
                found.append(person)
    unique = {person.id: person for person in found if person is not None and person.status == IdentityStatus.ACTIVE}
    return [unique[key] for key in sorted(unique)]


def why_reviewer(session: Session, reviewer: Identity, identity: Identity) -> str | None:
    """Why ``reviewer`` is accountable for ``identity`` (shown on the review), or None when they are not."""
    if reviewer.id == identity.id:
        return None
    if identity.owner_id == reviewer.id:
        return "you own it"
    if identity.sponsor_id == reviewer.id:
        return "you sponsor it"
    if has_role(identity, Role.VENDOR) and any(may_act_for_site(reviewer, Role.SUPERVISOR, site_id)
                                               for site_id in _sites_used(session, identity)):
        return "it uses a site you supervise"
    if has_role(reviewer, Role.ADMIN):
        return "you are an admin"
    return None


def _usage(session: Session, identity: Identity) -> Usage:
    since = identity.attested_at or identity.created_at
    grants = session.scalar(select(func.count()).select_from(Grant).where(
        Grant.identity_id == identity.id, Grant.created_at >= since)) or 0
    sessions = session.scalar(select(func.count()).select_from(AccessSession).join(Grant).where(
        Grant.identity_id == identity.id, AccessSession.started_at >= since)) or 0
    assets = sorted(set(session.scalars(select(Asset.name).join(Grant, Grant.asset_id == Asset.id).where(
        Grant.identity_id == identity.id, Grant.created_at >= since))))
    standing = [f"{p.id} ({p.asset.name}, until {p.ends_at:%Y-%m-%d})" for p in session.scalars(
        select(StandingPolicy).where(StandingPolicy.identity_id == identity.id, StandingPolicy.revoked_at.is_(None),
                                     StandingPolicy.ends_at > since).order_by(StandingPolicy.id))]
    return Usage(since=since.isoformat(), grants=grants, sessions=sessions, assets=assets,
                 last_used_at=identity.last_used_at.isoformat() if identity.last_used_at else None,
                 standing_policies=standing)


def pending_reviews(session: Session, *, now: dt.datetime, reviewer: Identity,
                    everything: bool = False) -> list[Review]:
    """The reviews this person owes: due within 14 days or overdue (``everything``: all they may review)."""
    reviews = []
    candidates = session.scalars(select(Identity).where(
        Identity.status.in_([IdentityStatus.ACTIVE, IdentityStatus.SUSPENDED])).order_by(Identity.username))
    for identity in candidates:
        why = why_reviewer(session, reviewer, identity)
        if why is None:
            continue
        due = identity.attestation_due_at
        if not everything and (due is None or due > now + DUE_SOON):
            continue
        owner = session.get(Identity, identity.owner_id) if identity.owner_id else None
        reviews.append(Review(
            username=identity.username, kind=identity.kind, status=identity.status,
            owner=owner.username if owner else None, purpose=identity.purpose,
            due_at=due.isoformat() if due else None, overdue=due is not None and due <= now,
            usage=_usage(session, identity), why_you=why))
    return reviews


def attest(session: Session, *, now: dt.datetime, events: EventPublisher, reviewer: Identity, username: str,
           outcome: str, comment: str | None) -> Attestation:
    """Keep (the next review is due one period from now) or revoke (the identity is suspended, its grants end
    and its sessions are cut). Refused, and audited, for anyone not accountable for the identity."""
    identity = get_identity(session, username)
    if outcome not in tuple(AttestationOutcome):
        raise InvalidInput(f"'{outcome[:20]}' is not a review outcome: keep or revoke")
    why = why_reviewer(session, reviewer, identity)
    if why is None:
        reason = ("nobody reviews their own access" if reviewer.id == identity.id else
                  f"you are not accountable for '{username}': its owner or sponsor, the supervisors of the sites "
                  "it uses (for a vendor) or an admin review it")
        trail.record(session, now=now, action=Action.ATTESTATION_REFUSED, outcome="refused",
                     actor=reviewer.username, subject=username, details={"reason": reason, "outcome": outcome})
        raise audited(Forbidden(reason))
    text = (comment or "").strip()
    if not text:
        raise InvalidInput("a review needs a comment: say what you checked (--comment)")
    if len(text) > MAX_COMMENT:
        raise InvalidInput(f"the comment is too long ({len(text)} characters, at most {MAX_COMMENT})")
    if identity.status not in (IdentityStatus.ACTIVE, IdentityStatus.SUSPENDED):
        raise InvalidInput(f"'{username}' is {identity.status}: there is nothing left to review")
    usage = _usage(session, identity)
    record = Attestation(identity_id=identity.id, reviewer_id=reviewer.id, outcome=outcome, comment=text,
                         decided_at=now)
    session.add(record)
    trail.record(session, now=now, action=Action.IDENTITY_ATTESTED, actor=reviewer.username, subject=username,
                 details={"outcome": outcome, "comment": text, "why_reviewer": why, "usage": asdict(usage)})
    if outcome == AttestationOutcome.KEEP:
        identity.attested_at = now
        identity.attestation_due_at = now + attestation_period(session, _sites_used(session, identity))
    else:
        from broker.access.standing import revoke_policy  # access builds on identity, not the reverse

        for policy in session.scalars(select(StandingPolicy).where(StandingPolicy.identity_id == identity.id,
                                                                   StandingPolicy.revoked_at.is_(None))):
            revoke_policy(session, now=now, events=events, actor=reviewer.username, policy_id=policy.id,
                          reason=f"access review of {username}: revoked ({text})")
        if identity.status == IdentityStatus.ACTIVE:
            lifecycle.suspend(session, now=now, events=events, actor=reviewer.username, username=username,
                              reason=f"access review: revoked ({text})")
    return record


def _overdue_policy(session: Session, identity: Identity) -> str:
    """Suspend unless every site the identity uses says only flag (the strictest site wins)."""
    site_ids = _sites_used(session, identity)
    if not site_ids:
        return OverdueAttestation.SUSPEND
    policies = set(session.scalars(select(Site.attestation_overdue).where(Site.id.in_(site_ids))))
    return OverdueAttestation.SUSPEND if OverdueAttestation.SUSPEND in policies or not policies \
        else OverdueAttestation.FLAG


def sweep_overdue(session: Session, *, now: dt.datetime, events: EventPublisher) -> list[str]:
    """Active identities whose review is overdue are suspended where their sites' policy says so (otherwise the
    inventory only flags them). Returns the names suspended."""
    suspended = []
    overdue = session.scalars(select(Identity).where(
        Identity.status == IdentityStatus.ACTIVE, Identity.attestation_due_at.is_not(None),
        Identity.attestation_due_at <= now).order_by(Identity.id)).all()
    for identity in overdue:
        if _overdue_policy(session, identity) != OverdueAttestation.SUSPEND:
            continue
        due = identity.attestation_due_at
        trail.record(session, now=now, action=Action.IDENTITY_ATTESTATION_OVERDUE, actor="system",
                     subject=identity.username, details={"due_at": due.isoformat() if due else None,
                                                         "policy": str(OverdueAttestation.SUSPEND)})
        try:
            with session.begin_nested():  # one identity that cannot be suspended must not stop the others
                lifecycle.suspend(session, now=now, events=events, actor="system", username=identity.username,
                                  reason=f"access review overdue since {due:%Y-%m-%d} UTC")
        except Conflict:
            continue
        suspended.append(identity.username)
    return suspended


def report(session: Session) -> list[dict[str, Any]]:
    """Every review: who reviewed what, when, and the outcome (for security, exported like the audit trail)."""
    rows = session.scalars(select(Attestation).order_by(Attestation.decided_at, Attestation.id))
    return [{"identity": row.identity.username, "kind": row.identity.kind, "reviewer": row.reviewer.username,
             "outcome": row.outcome, "comment": row.comment, "decided_at": row.decided_at.isoformat()}
            for row in rows]
