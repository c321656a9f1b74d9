"""Grant extensions: the grantee asks to move an active grant's end; the site's approvers decide.

An approved extension moves ``grant.ends_at``, re-issues the grant's certificate (same serial, principals
and extensions, a later ``valid_before``) and announces the new end to the gateways, which move the cut-off
of live sessions without reconnecting them.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.access.approval import (
    EXTENSION,
    MAX_REASON,
    approvals_so_far,
    check_may_decide,
    clean_comment,
    denial_comment,
    is_approved,
    may_still_decide,
)
from broker.access.rules import grant_status
from broker.access.workflow import get_grant, restrict_to_viewer
from broker.audit import trail
from broker.audit.trail import Action
from broker.durations import format_duration, parse_duration
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound, audited
from broker.ids import new_id
from broker.inventory.gateway_events import EventPublisher, announce
from broker.inventory.sites import approvals_needed
from broker.keys.authorities import CertificateSpec, issue_user_certificate, load_signing_key
from broker.keys.vault import Vault
from broker.models import Asset, ExtensionDecision, Grant, GrantExtension, Identity
from broker.vocabulary import ExtensionStatus, GrantChangeStatus, IdentityKind, Verdict


def _refuse(session: Session, now: dt.datetime, actor: Identity, grant: Grant, action: Action, why: str,
            subject: str) -> Forbidden:
    """Audit a refusal to ask for an extension and return the error to raise (its audit event is kept)."""
    trail.record(session, now=now, action=action, outcome="refused", actor=actor.username, subject=subject,
                 site=grant.asset.site.name, details={"reason": why, "grant": grant.id})
    return audited(Forbidden(why))


def _window_limit(grant: Grant) -> dt.timedelta:
    return dt.timedelta(seconds=grant.asset.site.max_window_seconds)


def _check_window(grant: Grant, new_end: dt.datetime) -> None:
    """IEC 62443-3-3 SR 2.6: a session's total length stays bounded, so extensions cannot stack past the
    site's maximum window."""
    limit = _window_limit(grant)
    if new_end - grant.starts_at > limit:
        room = max(limit - (grant.ends_at - grant.starts_at), dt.timedelta(0))
        raise InvalidInput(f"grant {grant.id} would then last {format_duration(new_end - grant.starts_at)}, longer "
                           f"than {grant.asset.site.name} allows (at most {format_duration(limit)} in all; at most "
                           f"{format_duration(room) if room else 'nothing'} more)")


def request_extension(session: Session, *, now: dt.datetime, requester: Identity, grant_id: str, duration: str,
                      reason: str) -> GrantExtension:
    grant = get_grant(session, viewer=requester, grant_id=grant_id)
    # Lock the grant: two asks at the same moment must see each other (one pending extension per grant).
    session.refresh(grant, with_for_update=True)
    site = grant.asset.site
    if grant.identity_id != requester.id:
        raise _refuse(session, now, requester, grant, Action.EXTENSION_REFUSED,
                      f"only the grantee ({grant.identity.username}) can ask to extend grant {grant.id}",
                      subject=grant.id)
    if site.locked_down:
        raise _refuse(session, now, requester, grant, Action.EXTENSION_REFUSED,
                      f"site {site.name} is locked down: no extension until the plant lifts the lockdown",
                      subject=grant.id)
    status = grant_status(grant, now)
    if status != "active":
        raise Conflict(f"grant {grant.id} is {status}; only an active grant can be extended")
    extra = parse_duration(duration)
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("a reason is required: tell the plant why you need more time")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"the reason is too long ({len(reason)} characters, at most {MAX_REASON})")
    _check_window(grant, grant.ends_at + extra)
    pending = session.scalars(select(GrantExtension.id).where(
        GrantExtension.grant_id == grant.id, GrantExtension.status == ExtensionStatus.PENDING)).first()
    if pending is not None:
        raise Conflict(f"extension {pending} of grant {grant.id} is still waiting for a decision")
    extension = GrantExtension(
        id=new_id("ext"), grant_id=grant.id, grant=grant, requester_id=requester.id, requester=requester,
        duration_seconds=int(extra.total_seconds()), reason=reason, status=ExtensionStatus.PENDING,
        approvals_required=approvals_needed(grant.asset), previous_ends_at=grant.ends_at,
        created_at=now,
    )
    session.add(extension)
    trail.record(session, now=now, action=Action.EXTENSION_REQUESTED, actor=requester.username,
                 subject=extension.id, site=site.name,
                 details={"grant": grant.id, "duration": format_duration(extra), "reason": reason,
                          "ends_at": grant.ends_at.isoformat()})
    return extension


def lapse_stale(session: Session, *, now: dt.datetime) -> None:
    """Pending extensions of grants that ended or were revoked can no longer be decided: they lapse."""
    pending = session.scalars(select(GrantExtension).where(GrantExtension.status == ExtensionStatus.PENDING)).all()
    for extension in pending:
        status = grant_status(extension.grant, now)
        if status != "active":
            extension.status, extension.decided_at = ExtensionStatus.LAPSED, now
            trail.record(session, now=now, action=Action.EXTENSION_LAPSED, subject=extension.id,
                         site=extension.grant.asset.site.name,
                         details={"grant": extension.grant_id, "grant_status": status})


def visible_extensions(session: Session, *, viewer: Identity, pending_only: bool) -> list[GrantExtension]:
    """Security and admins see all; a supervisor those of their sites; everyone their own."""
    query = select(GrantExtension).join(Grant).join(Asset)
    query = restrict_to_viewer(query, viewer=viewer, owner=GrantExtension.requester_id)
    if pending_only:
        query = query.where(GrantExtension.status == ExtensionStatus.PENDING)
    return list(session.scalars(query.order_by(GrantExtension.created_at.desc()).limit(500)))


def _decidable(session: Session, *, now: dt.datetime, approver: Identity, extension_id: str,
               verb: str) -> GrantExtension:
    """Load an extension and check that ``approver`` may decide it now (the one approval rule)."""
    lapse_stale(session, now=now)
    extension = session.get(GrantExtension, extension_id, with_for_update=True)
    if extension is None:
        raise NotFound(f"there is no extension {extension_id}")
    grant = extension.grant
    check_may_decide(session, now=now, approver=approver, ballot=extension, site=grant.asset.site,
                     asset_name=grant.asset.name, verb=verb, wording=EXTENSION,
                     refused=Action.EXTENSION_DECISION_REFUSED, details={"grant": grant.id})
    return extension


def approve_extension(session: Session, *, vault: Vault, now: dt.datetime, events: EventPublisher,
                      approver: Identity, extension_id: str, comment: str | None) -> GrantExtension:
    extension = _decidable(session, now=now, approver=approver, extension_id=extension_id, verb="approve")
    comment = clean_comment(comment)
    grant = extension.grant
    site = grant.asset.site.name
    extension.decisions.append(ExtensionDecision(approver_id=approver.id, approver=approver, verdict=Verdict.APPROVE,
                                                 comment=comment, decided_at=now))
    trail.record(session, now=now, action=Action.EXTENSION_APPROVAL, actor=approver.username,
                 subject=extension.id, site=site,
                 details={"approvals": approvals_so_far(extension), "required": extension.approvals_required,
                          "comment": comment})
    if not is_approved(extension):
        return extension
    new_end = grant.ends_at + dt.timedelta(seconds=extension.duration_seconds)
    _check_window(grant, new_end)  # the site's limit may have shrunk since the ask
    extension.status, extension.decided_at, extension.new_ends_at = "approved", now, new_end
    previous = grant.ends_at
    grant.ends_at = new_end
    _reissue_certificate(session, vault=vault, grant=grant)
    trail.record(session, now=now, action=Action.EXTENSION_APPROVED, actor=approver.username,
                 subject=extension.id, site=site, details={"grant": grant.id})
    trail.record(session, now=now, action=Action.GRANT_EXTENDED, actor=approver.username, subject=grant.id,
                 site=site, details={"extension": extension.id, "previous_ends_at": previous.isoformat(),
                                     "ends_at": new_end.isoformat()})
    trail.record(session, now=now, action=Action.CERTIFICATE_ISSUED, actor=grant.identity.username,
                 subject=grant.id, site=site,
                 details={"serial": grant.serial, "principals": [grant.asset.name],
                          "valid_before": new_end.isoformat(), "reissued_for": extension.id})
    announce(session, now=now, events=events, grant=grant, status=GrantChangeStatus.ACTIVE, reason="extended")
    return extension


def _reissue_certificate(session: Session, *, vault: Vault, grant: Grant) -> None:
    """The same certificate as at grant time (serial, principals, extensions) with the new valid_before:
    the gateway recognises the grant by its serial, and a fresh connection after the old end still works."""
    spec = CertificateSpec(
        grant_id=grant.id, username=grant.identity.username, asset=grant.asset.name, serial=grant.serial,
        starts_at=grant.starts_at, ends_at=grant.ends_at,
        allow_pty=grant.ssh and grant.identity.kind == IdentityKind.HUMAN,
        allow_port_forwarding=bool(grant.ports),
    )
    grant.certificate = issue_user_certificate(load_signing_key(session, vault=vault), grant.request.public_key,
                                               spec)


def deny_extension(session: Session, *, now: dt.datetime, approver: Identity, extension_id: str,
                   comment: str) -> GrantExtension:
    # Authority first, so an outsider's attempt is audited whatever the comment says.
    extension = _decidable(session, now=now, approver=approver, extension_id=extension_id, verb="deny")
    comment = denial_comment(comment)
    extension.decisions.append(ExtensionDecision(approver_id=approver.id, approver=approver, verdict=Verdict.DENY,
                                                 comment=comment, decided_at=now))
    extension.status, extension.decided_at = ExtensionStatus.DENIED, now
    trail.record(session, now=now, action=Action.EXTENSION_DENIED, actor=approver.username, subject=extension.id,
                 site=extension.grant.asset.site.name, details={"grant": extension.grant_id, "comment": comment})
    return extension


def pending_for_approver(session: Session, *, approver: Identity, now: dt.datetime) -> list[GrantExtension]:
    """What this approver can still decide: pending, at their sites, not their own, not yet approved by them."""
    lapse_stale(session, now=now)
    return [e for e in visible_extensions(session, viewer=approver, pending_only=True)
            if may_still_decide(e, approver=approver, site=e.grant.asset.site)]


def latest_by_grant(session: Session, *, requester: Identity) -> dict[str, GrantExtension]:
    """The newest extension the requester asked for on each of their grants."""
    latest: dict[str, GrantExtension] = {}
    for extension in session.scalars(select(GrantExtension).where(GrantExtension.requester_id == requester.id)
                                     .order_by(GrantExtension.created_at)):
        latest[extension.grant_id] = extension
    return latest
