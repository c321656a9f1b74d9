"""Containment: lock a plant down, cut what an identity has open — at once, delegations included."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import Conflict, Forbidden, NotFound, audited
from broker.identity.assurance import require_mfa
from broker.identity.identities import has_role, may_act_for_site
from broker.inventory.gateway_events import EventPublisher, announce
from broker.models import ApiToken, Asset, Grant, Identity, Site
from broker.vocabulary import GrantChangeStatus


def _open_grants(session: Session, now: dt.datetime, *conditions: object) -> list[Grant]:
    return list(session.scalars(
        select(Grant).join(Asset).where(Grant.revoked_at.is_(None), Grant.ends_at > now, *conditions)  # type: ignore[arg-type]
    ))


def _revoke_all(session: Session, *, now: dt.datetime, events: EventPublisher, grants: list[Grant], actor: str,
                reason: str, why: str) -> list[str]:
    roots = {grant.id for grant in grants}
    grants = _with_delegations(session, now, grants)
    for grant in grants:
        # An AI agent's grant ends because the grant it came from ended, not for its sponsor's reason (the
        # agent's screen must not say "your identity was suspended" when its sponsor was).
        cause = reason if grant.id in roots else "delegation_ended"
        grant.revoked_at, grant.revoked_by, grant.revoke_reason = now, actor, why
        trail.record(session, now=now, action=Action.GRANT_REVOKED, actor=actor, subject=grant.id,
                     site=grant.asset.site.name, details={"reason": why, "cause": cause})
        announce(session, now=now, events=events, grant=grant, status=GrantChangeStatus.REVOKED, reason=cause)
    return [grant.id for grant in grants]


def revoke_grants(session: Session, *, now: dt.datetime, events: EventPublisher, grants: list[Grant], actor: str,
                  reason: str, why: str) -> list[str]:
    """Revoke these grants (and what was delegated from them) and tell the gateways: a playbook's revoke step."""
    return _revoke_all(session, now=now, events=events, grants=grants, actor=actor, reason=reason, why=why)


def revoke_delegated(session: Session, *, now: dt.datetime, events: EventPublisher, grant: Grant, actor: str,
                     why: str) -> list[str]:
    """Every open grant delegated from ``grant`` (recursively) revoked with it, the gateways told: the revoke
    path of one grant (its grantee, a supervisor) ends its AI agents' grants the way a lockdown does."""
    children = [child for child in _with_delegations(session, now, [grant]) if child.id != grant.id]
    return _revoke_all(session, now=now, events=events, grants=children, actor=actor, reason="delegation_ended",
                       why=why)


def _with_delegations(session: Session, now: dt.datetime, grants: list[Grant]) -> list[Grant]:
    """The grants and every open grant delegated from them (an AI agent's grant ends with its sponsor's)."""
    found = {grant.id: grant for grant in grants}
    frontier = list(found)
    while frontier:
        children = _open_grants(session, now, Grant.parent_grant_id.in_(frontier))
        frontier = [child.id for child in children if child.id not in found]
        found.update((child.id, child) for child in children)
    return list(found.values())


def check_site_authority(session: Session, *, now: dt.datetime, actor: Identity, site_name: str) -> None:
    """Plant-local control: the site's own supervisors, security and admins may lock it down or lift it."""
    site = get_site(session, site_name)
    if has_role(actor, "security") or has_role(actor, "admin") or may_act_for_site(actor, "supervisor", site.id):
        return
    why = f"only supervisors of {site.name}, security or an admin can lock down or lift {site.name}"
    trail.record(session, now=now, action=Action.CONTAINMENT_REFUSED, outcome="refused", actor=actor.username,
                 subject=site.name, site=site.name, details={"reason": why})
    raise audited(Forbidden(why))


def get_site(session: Session, name: str) -> Site:
    site = session.scalar(select(Site).where(Site.name == name))
    if site is None:
        raise NotFound(f"there is no site named '{name}'")
    return site


@dataclass(frozen=True)
class LocalOperator:
    """Whoever runs `gatepass admin …` on the control-plane host itself, with the data directory's master key:
    trusted like the host's administrator, so no role is checked (the audit trail names them ``cli:<user>``)."""

    name: str


Actor = Identity | LocalOperator


def _checked_actor(session: Session, *, now: dt.datetime, actor: Actor, site_name: str) -> str:
    """The actor's name for the trail, once a signed-in person's authority over the site is checked."""
    if isinstance(actor, LocalOperator):
        return actor.name
    check_site_authority(session, now=now, actor=actor, site_name=site_name)
    require_mfa(session, now=now, actor=actor, what=f"lock down or lift {site_name}", action=Action.CONTAINMENT_REFUSED,
                subject=site_name, site=site_name)
    return actor.username


def lock_down_site(session: Session, *, now: dt.datetime, events: EventPublisher, actor: Actor, site_name: str,
                   reason: str | None) -> list[str]:
    """Cut all remote access into a plant (the ransomware playbook): every open grant at the site is revoked,
    its live sessions end within a second, and new requests and connections are refused until lifted. Only the
    site's supervisors, security and admins may (plant-local control), or a local operator."""
    name = _checked_actor(session, now=now, actor=actor, site_name=site_name)
    site = get_site(session, site_name)
    if site.locked_down:
        raise Conflict(f"site {site.name} is already locked down")
    site.locked_down = True
    trail.record(session, now=now, action=Action.SITE_LOCKED_DOWN, actor=name, subject=site.name, site=site.name,
                 details={"reason": reason})
    grants = _open_grants(session, now, Asset.site_id == site.id)
    why = f"site {site.name} locked down: {reason or 'no reason given'}"
    return _revoke_all(session, now=now, events=events, grants=grants, actor=name, reason="lockdown", why=why)


def lift_lockdown(session: Session, *, now: dt.datetime, actor: Actor, site_name: str) -> None:
    name = _checked_actor(session, now=now, actor=actor, site_name=site_name)
    site = get_site(session, site_name)
    if not site.locked_down:
        raise Conflict(f"site {site.name} is not locked down")
    site.locked_down = False
    trail.record(session, now=now, action=Action.SITE_LOCKDOWN_LIFTED, actor=name, subject=site.name,
                 site=site.name)


def cut_identity(session: Session, *, now: dt.datetime, events: EventPublisher, identity: Identity, actor: str,
                 cause: str, why: str) -> list[str]:
    """Everything an identity has open, ended at once: its API tokens and web sessions revoked, its grants (and
    any grant delegated from them) revoked, and the gateways told, so its live sessions end within a second."""
    session.execute(update(ApiToken).where(ApiToken.identity_id == identity.id, ApiToken.revoked_at.is_(None))
                    .values(revoked_at=now))
    return _revoke_all(session, now=now, events=events,
                       grants=_open_grants(session, now, Grant.identity_id == identity.id), actor=actor,
                       reason=cause, why=why)
