"""The identity lifecycle: ``active`` → ``suspended`` ⇄ ``active`` → ``retired`` (final: the name is never
reused), and ``expired`` once the end date passes. Every transition is audited with who and why, and
suspending, retiring or expiring cuts what the identity had open at once (containment.lockdown.cut_identity).

An identity whose owner is gone (suspended, retired, expired) is flagged at once and, after the grace period of
its sites (default 7 days) without a new owner, suspended.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.containment.lockdown import cut_identity
from broker.errors import Conflict, Forbidden, InvalidInput, audited
from broker.identity.identities import get_identity, has_role
from broker.identity.policy import end_date
from broker.inventory.gateway_events import EventPublisher
from broker.models import Identity, Site
from broker.vocabulary import IdentityKind, IdentityStatus, Role

DEFAULT_OWNER_GRACE = dt.timedelta(days=7)
MAX_REASON = 1000


@dataclass(frozen=True)
class Transition:
    username: str
    was: str
    now: str
    grants_revoked: list[str]


def _reason(reason: str | None, *, required: bool) -> str | None:
    reason = (reason or "").strip()
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"the reason is too long ({len(reason)} characters, at most {MAX_REASON})")
    if required and not reason:
        raise InvalidInput("give a reason (--reason): the audit trail says why an identity changed state")
    return reason or None


def _keep_an_admin(session: Session, identity: Identity) -> None:
    """Nobody could run the plant's Gatepass again: the last active admin is never stopped."""
    if identity.status != IdentityStatus.ACTIVE or not has_role(identity, Role.ADMIN):
        return
    others = session.scalars(select(Identity).where(Identity.status == IdentityStatus.ACTIVE,
                                                    Identity.id != identity.id)).all()
    if not any(has_role(other, Role.ADMIN) for other in others):
        raise Conflict(f"'{identity.username}' is the last active admin: add another admin first")


def _move(session: Session, *, now: dt.datetime, identity: Identity, to: IdentityStatus, actor: str,
          reason: str | None, action: Action) -> str:
    if to != IdentityStatus.ACTIVE:
        _keep_an_admin(session, identity)
    was = identity.status
    identity.status, identity.status_reason = to, reason
    identity.status_changed_at, identity.status_changed_by = now, actor
    trail.record(session, now=now, action=action, actor=actor, subject=identity.username,
                 details={"was": was, "status": str(to), "reason": reason, "kind": identity.kind})
    return was


def _stop(session: Session, *, now: dt.datetime, events: EventPublisher, identity: Identity, to: IdentityStatus,
          actor: str, reason: str | None, action: Action, cause: str, why: str) -> Transition:
    """Every way an identity stops (suspend, disable, retire, expire, orphaned): the move, the cut of what it had
    open (``cause`` is what the gateways tell its sessions), and the owner clock of what it owns or sponsors."""
    was = _move(session, now=now, identity=identity, to=to, actor=actor, reason=reason, action=action)
    revoked = cut_identity(session, now=now, events=events, identity=identity, actor=actor, cause=cause, why=why)
    _owner_gone(session, now=now, owner=identity)
    return Transition(identity.username, was, to, revoked)


def suspend(session: Session, *, now: dt.datetime, events: EventPublisher, actor: str, username: str,
            reason: str | None) -> Transition:
    """Stop an identity for now: signed out everywhere, its grants ended, its live sessions cut within a second.
    ``resume`` brings it back."""
    identity = get_identity(session, username)
    why = _reason(reason, required=True)
    if identity.status != IdentityStatus.ACTIVE:
        raise Conflict(f"'{username}' is {identity.status}; only an active identity can be suspended")
    return _stop(session, now=now, events=events, identity=identity, to=IdentityStatus.SUSPENDED, actor=actor,
                 reason=why, action=Action.IDENTITY_SUSPENDED, cause="identity_suspended",
                 why=f"the identity '{username}' was suspended: {why}")


def resume(session: Session, *, now: dt.datetime, actor: str, username: str, reason: str | None) -> Transition:
    identity = get_identity(session, username)
    why = _reason(reason, required=True)
    if identity.status != IdentityStatus.SUSPENDED:
        raise Conflict(f"'{username}' is {identity.status}; only a suspended identity can be resumed")
    if identity.expires_at is not None and identity.expires_at <= now:
        raise Conflict(f"'{username}' reached its end date on {identity.expires_at:%Y-%m-%d} UTC; give it a new "
                       "end date before resuming it")
    was = _move(session, now=now, identity=identity, to=IdentityStatus.ACTIVE, actor=actor, reason=why,
                action=Action.IDENTITY_RESUMED)
    _owner_back(session, now=now, owner=identity, actor=actor)
    return Transition(username, was, IdentityStatus.ACTIVE, [])


def retire(session: Session, *, now: dt.datetime, events: EventPublisher, actor: str, username: str,
           reason: str | None) -> Transition:
    """The end of an identity: final, and its name is never given to anyone else (the row stays, so the audit
    trail's references keep meaning one identity)."""
    identity = get_identity(session, username)
    why = _reason(reason, required=True)
    if identity.status == IdentityStatus.RETIRED:
        raise Conflict(f"'{username}' is already retired")
    return _stop(session, now=now, events=events, identity=identity, to=IdentityStatus.RETIRED, actor=actor,
                 reason=why, action=Action.IDENTITY_RETIRED, cause="identity_retired",
                 why=f"the identity '{username}' was retired: {why}")


def set_disabled(session: Session, *, now: dt.datetime, events: EventPublisher, actor: str, username: str,
                 disabled: bool) -> list[str]:
    """`gatepass admin user disable|enable`: suspend and resume by their first names, audited under their own
    codes (``admin:identity:disabled|enabled``: SIEM rules key on them). Returns the grants revoked."""
    identity = get_identity(session, username)
    if disabled:
        if identity.status != IdentityStatus.ACTIVE:
            raise Conflict(f"the account '{username}' is already disabled")
        return _stop(session, now=now, events=events, identity=identity, to=IdentityStatus.SUSPENDED, actor=actor,
                     reason="disabled by an admin", action=Action.IDENTITY_DISABLED, cause="identity_disabled",
                     why=f"the account '{username}' was disabled").grants_revoked
    if identity.status != IdentityStatus.SUSPENDED:
        raise Conflict(f"the account '{username}' is already enabled" if identity.status == IdentityStatus.ACTIVE
                       else f"the account '{username}' is {identity.status}; it cannot be enabled")
    _move(session, now=now, identity=identity, to=IdentityStatus.ACTIVE, actor=actor, reason="enabled by an admin",
          action=Action.IDENTITY_ENABLED)
    _owner_back(session, now=now, owner=identity, actor=actor)
    return []


def set_end_date(session: Session, *, now: dt.datetime, actor: str, username: str,
                 expires_at: dt.datetime | None) -> Identity:
    """Move an identity's end date (within its kind's limit; a person's may be removed). An expired identity
    given a later date is active again."""
    identity = get_identity(session, username)
    if identity.status == IdentityStatus.RETIRED:
        raise Conflict(f"'{username}' is retired; a retired identity does not come back")
    # A change, not a creation: no default term is given here, only the kind's limits checked (a person's
    # role does not matter once a date is asked for; a service or AI identity always keeps one).
    new = None if identity.kind == IdentityKind.HUMAN and expires_at is None else \
        end_date(kind=identity.kind, role="", now=now, requested=expires_at)
    old = identity.expires_at
    identity.expires_at = new
    if identity.status == IdentityStatus.EXPIRED and new is not None and new > now:
        _move(session, now=now, identity=identity, to=IdentityStatus.ACTIVE, actor=actor,
              reason="given a new end date", action=Action.IDENTITY_RESUMED)
    trail.record(session, now=now, action=Action.IDENTITY_UPDATED, actor=actor, subject=username,
                 details={"expires_at": {"old": old.isoformat() if old else None,
                                         "new": new.isoformat() if new else None}})
    return identity


def set_owner(session: Session, *, now: dt.datetime, actor: str, username: str, owner: str) -> Identity:
    """Give a service or AI identity a (new) owner: an active human. Clears the missing-owner clock."""
    identity = get_identity(session, username)
    if identity.kind == IdentityKind.HUMAN:
        raise InvalidInput(f"'{username}' is a person: only service and AI identities have an owner")
    new_owner = get_identity(session, owner)
    if new_owner.kind != IdentityKind.HUMAN or new_owner.status != IdentityStatus.ACTIVE:
        raise InvalidInput(f"owner '{owner}' must be an active human user")
    previous = session.get(Identity, identity.owner_id) if identity.owner_id else None
    identity.owner_id, identity.owner_lost_at = new_owner.id, None
    trail.record(session, now=now, action=Action.IDENTITY_OWNER_CHANGED, actor=actor, subject=username,
                 details={"old": previous.username if previous else None, "new": owner})
    return identity


def _owner_gone(session: Session, *, now: dt.datetime, owner: Identity) -> None:
    """What ``owner`` owns or sponsors is flagged now and suspended after its sites' grace period."""
    for owned in owned_or_sponsored(session, owner):
        if owned.owner_lost_at is None and owned.status == IdentityStatus.ACTIVE:
            owned.owner_lost_at = now
            trail.record(session, now=now, action=Action.IDENTITY_OWNER_LOST, actor="system", subject=owned.username,
                         details={"owner": owner.username, "owner_status": owner.status,
                                  "suspended_after": (now + owner_grace(session, owned)).isoformat()})


def _owner_back(session: Session, *, now: dt.datetime, owner: Identity, actor: str) -> None:
    for owned in owned_or_sponsored(session, owner):
        if owned.owner_lost_at is not None:
            owned.owner_lost_at = None
            trail.record(session, now=now, action=Action.IDENTITY_OWNER_CHANGED, actor=actor, subject=owned.username,
                         details={"old": owner.username, "new": owner.username, "reason": "owner resumed"})


def owned_or_sponsored(session: Session, owner: Identity) -> list[Identity]:
    """The service and AI identities ``owner`` owns or sponsors (any status)."""
    return list(session.scalars(select(Identity).where(
        (Identity.owner_id == owner.id) | (Identity.sponsor_id == owner.id)).order_by(Identity.id)))


def owner_grace(session: Session, identity: Identity) -> dt.timedelta:
    """The shortest grace among the sites the identity is scoped to (the default where it has none)."""
    site_ids = [a.site_id for a in identity.roles if a.site_id is not None]
    if not site_ids:
        return DEFAULT_OWNER_GRACE
    days = session.scalars(select(Site.owner_grace_days).where(Site.id.in_(site_ids))).all()
    return dt.timedelta(days=min(days)) if days else DEFAULT_OWNER_GRACE


def sweep(session: Session, *, now: dt.datetime, events: EventPublisher) -> list[Transition]:
    """The clock's part of the lifecycle, run periodically by the broker: identities past their end date
    expire (and are cut), and identities whose owner has been gone longer than the grace are suspended. One
    that may not stop (the last active admin) stays as it is and does not hold up the others."""
    done: list[Transition] = []
    due = session.scalars(select(Identity).where(
        Identity.status.in_([IdentityStatus.ACTIVE, IdentityStatus.SUSPENDED]),
        Identity.expires_at.is_not(None), Identity.expires_at <= now).order_by(Identity.id)).all()
    for identity in due:
        _stop_if_allowed(session, done, now=now, events=events, identity=identity, to=IdentityStatus.EXPIRED,
                         actor="system", reason=f"its end date {identity.expires_at:%Y-%m-%d %H:%M} UTC passed",
                         action=Action.IDENTITY_EXPIRED, cause="identity_expired",
                         why=f"the identity '{identity.username}' expired")
    orphans = session.scalars(select(Identity).where(
        Identity.status == IdentityStatus.ACTIVE, Identity.owner_lost_at.is_not(None)).order_by(Identity.id)).all()
    for identity in orphans:
        if identity.owner_lost_at is None or identity.owner_lost_at + owner_grace(session, identity) > now:
            continue
        # What it owns or sponsors starts its own clock too (a service or AI identity owns nothing today).
        _stop_if_allowed(session, done, now=now, events=events, identity=identity, to=IdentityStatus.SUSPENDED,
                         actor="system", reason="its owner left and nobody took it over within the grace period",
                         action=Action.IDENTITY_SUSPENDED, cause="owner_gone",
                         why=f"the identity '{identity.username}' lost its owner")
    return done


def _stop_if_allowed(session: Session, done: list[Transition], **stop: Any) -> None:
    try:
        with session.begin_nested():
            done.append(_stop(session, **stop))
    except Conflict:
        return


def check_authority(session: Session, *, now: dt.datetime, person: Identity, username: str, verb: str) -> None:
    """Who may change an identity's state through the API: admins anything; security may suspend anyone (the
    kill switch belongs to whoever watches); the owner or sponsor of a service or AI identity may suspend or
    retire it. Nobody changes their own state. Refusals are audited."""
    identity = get_identity(session, username)
    allowed = person.id != identity.id and (
        has_role(person, Role.ADMIN)
        or (verb == "suspend" and has_role(person, Role.SECURITY))
        or (verb in ("suspend", "retire") and identity.kind != IdentityKind.HUMAN
            and person.id in (identity.owner_id, identity.sponsor_id)))
    if allowed:
        return
    why = (f"you cannot {verb} yourself" if person.id == identity.id else
           f"only an admin{', security' if verb == 'suspend' else ''} or the owner of a service or AI identity "
           f"can {verb} '{username}'" if verb != "resume" else f"only an admin can resume '{username}'")
    trail.record(session, now=now, action=Action.IDENTITY_LIFECYCLE_REFUSED, outcome="refused",
                 actor=person.username, subject=username, details={"verb": verb, "reason": why})
    raise audited(Forbidden(why))
