"""Notifications outbox: a new request reaches its site's approvers by webhook and e-mail (the addresses of
the site's supervisors, plus any per-site addresses configured for the deployment); so does the start of a session
under the grant, with the direct link to watch it live (issue 13).

Rows are made for every pending request that has none yet (whoever made it: API, web, CLI), claimed with a
lease so that one broker replica delivers each, and retried with exponential backoff; every delivery, failed
attempt and final give-up is audited. Delivery never blocks or rolls back the request itself.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import Select, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from broker.audit import trail
from broker.audit.trail import Action
from broker.durations import format_duration
from broker.identity import attestation
from broker.inventory.supervision_policy import effective_supervision, supervision_required_clause
from broker.live.supervision import WATCHABLE_KINDS
from broker.models import (
    AccessRequest,
    AccessSession,
    Asset,
    AuditEvent,
    Grant,
    Identity,
    Notification,
    RoleAssignment,
    Site,
)
from broker.vocabulary import IdentityStatus, NotificationStatus, RequestStatus

MAX_ATTEMPTS = 6
FIRST_RETRY = dt.timedelta(seconds=2)
# A claimed delivery is retried by any replica if its claimer did not report back within this time.
LEASE = dt.timedelta(seconds=60)
BATCH = 20
# Session starts announced with a watch link: a terminal someone can follow. A tunnel's connections only where the
# asset is supervised (each waits, held, for a supervisor to watch it); elsewhere each connection is a session of its
# own (hundreds a minute for engineering software), so they are not announced.
ANNOUNCED_SESSION_KINDS = WATCHABLE_KINDS & {"shell", "exec"}
HELD_TUNNEL_KINDS = WATCHABLE_KINDS & {"tcp"}
# A script running many commands (ansible: a session per task) must not flood the plant's inbox: at most this many
# session starts of one grant are announced per hour; the supervisor's page lists every live session anyway.
SESSION_NOTICES_PER_GRANT = 3
SESSION_NOTICE_WINDOW = dt.timedelta(hours=1)
# A start older than this is not announced any more (a notifier that was down does not send stale links).
SESSION_NOTICE_WITHIN = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Targets:
    """Where new requests are announced: one webhook for every site, e-mail addresses per site from the
    deployment's configuration, and (``approver_emails``, when a mail relay is configured) the e-mail
    address of each supervisor of the request's site."""

    webhook_url: str | None = None
    emails_by_site: dict[str, list[str]] = field(default_factory=dict)
    approver_emails: bool = False

    def for_site(self, site: str, approvers: Sequence[str] = ()) -> list[tuple[str, str]]:
        found = [("webhook", self.webhook_url)] if self.webhook_url else []
        addresses: list[str] = []
        for address in [*(approvers if self.approver_emails else []), *self.emails_by_site.get(site, [])]:
            if address.lower() not in (known.lower() for known in addresses):
                addresses.append(address)
        return found + [("email", address) for address in addresses]

    @property
    def any(self) -> bool:
        return bool(self.webhook_url or self.emails_by_site or self.approver_emails)


@dataclass(frozen=True)
class ApproverAddresses:
    """E-mail addresses of usable supervisors: per site, and of those who approve for every site."""

    by_site: dict[int, list[tuple[int, str]]]
    everywhere: list[tuple[int, str]]

    def for_request(self, request: AccessRequest) -> list[str]:
        """The site's approvers, never the requester (who cannot approve their own request)."""
        return self.for_site(request.asset.site_id, besides=request.requester_id)

    def for_site(self, site_id: int, *, besides: int) -> list[str]:
        """The site's approvers other than ``besides`` (the person the message is about)."""
        found = [*self.by_site.get(site_id, []), *self.everywhere]
        return [address for identity_id, address in found if identity_id != besides]


def approver_addresses(session: Session, *, now: dt.datetime) -> ApproverAddresses:
    rows = session.execute(
        select(RoleAssignment.site_id, Identity.id, Identity.email).join(Identity)
        .where(RoleAssignment.role == "supervisor", Identity.email.is_not(None),
               Identity.status == IdentityStatus.ACTIVE,
               (Identity.expires_at.is_(None)) | (Identity.expires_at > now))
        .order_by(Identity.username)
    ).all()
    by_site: dict[int, list[tuple[int, str]]] = {}
    everywhere: list[tuple[int, str]] = []
    for site_id, identity_id, email in rows:
        if not email:
            continue
        (everywhere if site_id is None else by_site.setdefault(site_id, [])).append((identity_id, email))
    return ApproverAddresses(by_site=by_site, everywhere=everywhere)


@dataclass(frozen=True)
class Delivery:
    id: int
    channel: str
    target: str
    attempt: int
    subject: str
    text: str
    payload: dict[str, Any]


def enqueue_new_requests(session: Session, *, now: dt.datetime, targets: Targets, within: dt.timedelta) -> int:
    """Make outbox rows for pending requests that have none yet; replicas racing here skip duplicates."""
    if not targets.any:
        return 0
    approvers = approver_addresses(session, now=now) if targets.approver_emails else ApproverAddresses({}, [])
    query = select(AccessRequest).join(Asset).join(Site).where(
        AccessRequest.status == RequestStatus.PENDING, AccessRequest.created_at >= now - within,
        ~exists().where(Notification.request_id == AccessRequest.id))
    query = _at_sites_with_a_target(query, targets, approvers)
    fresh = session.scalars(query.order_by(AccessRequest.created_at).limit(100)).all()
    return sum(_add_each(session, now=now, request_id=request.id,
                         channels=targets.for_site(request.asset.site.name, approvers.for_request(request)))
               for request in fresh)


def enqueue_session_starts(session: Session, *, now: dt.datetime, targets: Targets,
                           within: dt.timedelta = SESSION_NOTICE_WITHIN) -> int:
    """Make outbox rows for shell and exec sessions (and tunnel connections to supervised assets, held until watched)
    that started lately, are still running and have none yet: to the same targets as their request's announcement,
    with the link to watch the session. At most one row per
    session and target, and at most SESSION_NOTICES_PER_GRANT announced sessions per grant and hour."""
    if not targets.any:
        return 0
    approvers = approver_addresses(session, now=now) if targets.approver_emails else ApproverAddresses({}, [])
    query = (select(AccessSession).join(Grant, AccessSession.grant_id == Grant.id).join(Asset).join(Site)
             .where(AccessSession.started_at >= now - within, AccessSession.ended_at.is_(None),
                    AccessSession.kind.in_(sorted(ANNOUNCED_SESSION_KINDS))
                    | (AccessSession.kind.in_(sorted(HELD_TUNNEL_KINDS)) & supervision_required_clause()),
                    ~exists().where(Notification.session_id == AccessSession.id),
                    _announced(AccessSession.grant_id, now=now).correlate(AccessSession).scalar_subquery()
                    < SESSION_NOTICES_PER_GRANT))
    query = _at_sites_with_a_target(query, targets, approvers)
    fresh = session.scalars(query.order_by(AccessSession.started_at).limit(100)).all()
    counted: dict[str, int] = {}
    made = 0
    for record in fresh:
        grant = record.grant
        if grant.id not in counted:
            counted[grant.id] = session.scalar(_announced(grant.id, now=now)) or 0
        if counted[grant.id] >= SESSION_NOTICES_PER_GRANT:
            continue
        counted[grant.id] += 1
        asset = grant.asset
        made += _add_each(session, now=now, session_id=record.id, channels=targets.for_site(
            asset.site.name, approvers.for_site(asset.site_id, besides=grant.identity_id)))
    return made


def _announced(grant_id: Any, *, now: dt.datetime) -> Select[int]:
    """How many sessions of the grant (an id, or a column to correlate with) were announced within the window."""
    announced = aliased(AccessSession)
    return (select(func.count(func.distinct(Notification.session_id)))
            .join(announced, announced.id == Notification.session_id)
            .where(announced.grant_id == grant_id, Notification.created_at >= now - SESSION_NOTICE_WINDOW))


def enqueue_review_reminders(session: Session, *, now: dt.datetime, targets: Targets) -> int:
    """One reminder per identity and due date, from 14 days before its access review is due (issue 11): to the
    webhook, and by e-mail to the people accountable for it (when approver e-mails are on)."""
    if not targets.any:
        return 0
    due = session.scalars(select(Identity).where(
        Identity.status.in_([IdentityStatus.ACTIVE, IdentityStatus.SUSPENDED]),
        Identity.attestation_due_at.is_not(None), Identity.attestation_due_at <= now + attestation.DUE_SOON,
        ~exists().where(Notification.identity_id == Identity.id,
                        Notification.review_due_at == Identity.attestation_due_at)).order_by(Identity.id).limit(100))
    made = 0
    for identity in due:
        emails = [p.email for p in attestation.reviewers(session, identity) if p.email] \
            if targets.approver_emails else []
        made += _add_each(session, now=now, channels=_webhook_and(targets, emails), identity_id=identity.id,
                          review_due_at=identity.attestation_due_at)
    return made


def enqueue_playbook_messages(session: Session, *, now: dt.datetime, targets: Targets,
                               within: dt.timedelta = dt.timedelta(hours=1)) -> int:
    """A finished playbook run's message (issue 12), to the webhook and by e-mail to the people it names: read
    from the run's ``respond:playbook:finished`` event, once per run and target."""
    if not targets.any:
        return 0
    finished = session.scalars(select(AuditEvent).where(
        AuditEvent.action == Action.PLAYBOOK_FINISHED, AuditEvent.occurred_at >= now - within)
        .order_by(AuditEvent.seq).limit(100)).all()
    made = 0
    for event in finished:
        details = json.loads(event.details)
        run_id = str(event.subject)
        if session.scalar(select(Notification.id).where(Notification.run_id == run_id).limit(1)) is not None:
            continue
        emails = [x for x in details.get("notify", []) if "@" in x] if targets.approver_emails else []
        subject = f"Gatepass: playbook {details.get('playbook')} ran ({run_id})"
        made += _add_each(session, now=now, channels=_webhook_and(targets, emails), run_id=run_id,
                          message_subject=subject[:200], message_text=str(details.get("message", "")))
    return made


# A select of outbox subjects (requests, sessions) joined with their Site.
_Rows = TypeVar("_Rows", bound=Select[Any])


def _at_sites_with_a_target(query: _Rows, targets: Targets, approvers: ApproverAddresses) -> _Rows:
    """``query`` (joined with Site) kept to sites somebody would be told of: rows elsewhere would stay "new" and
    crowd out the ones that count."""
    if targets.webhook_url or approvers.everywhere:
        return query
    return query.where(Site.name.in_(sorted(targets.emails_by_site)) | Site.id.in_(sorted(approvers.by_site)))


def _webhook_and(targets: Targets, emails: list[str]) -> list[tuple[str, str]]:
    """The webhook (if configured) and each e-mail address once, as (channel, target)."""
    return ([("webhook", targets.webhook_url)] if targets.webhook_url else []) + \
        [("email", address) for address in dict.fromkeys(emails)]


def _add_each(session: Session, *, now: dt.datetime, channels: Sequence[tuple[str, str]], **about: Any) -> int:
    """One pending outbox row per (channel, target) about what ``about`` names (request_id, session_id, …); how
    many were made. Each in a savepoint: another replica may have made the same row (a unique constraint)."""
    made = 0
    for channel, target in channels:
        try:
            with session.begin_nested():
                session.add(Notification(**about, channel=channel, target=target, status=NotificationStatus.PENDING,
                                         attempts=0, next_attempt_at=now, created_at=now))
            made += 1
        except IntegrityError:
            continue
    return made


def claim_due(session: Session, *, now: dt.datetime, public_url: str) -> list[Delivery]:
    """Take up to BATCH due deliveries for this process (a lease, so a crashed claimer's rows come back)."""
    rows = session.scalars(
        select(Notification)
        .where(Notification.status == NotificationStatus.PENDING, Notification.next_attempt_at <= now)
        .order_by(Notification.id).limit(BATCH).with_for_update(skip_locked=True)
    ).all()
    deliveries = []
    for row in rows:
        row.next_attempt_at = now + LEASE
        if row.run_id is not None:
            text = row.message_text or ""
            deliveries.append(Delivery(row.id, row.channel, row.target, row.attempts + 1,
                                       row.message_subject or "Gatepass", text,
                                       {"text": text, "playbook_run": {"id": row.run_id}}))
            continue
        if row.identity_id is not None:
            identity = session.get(Identity, row.identity_id)
            if identity is None:
                continue
            subject, text, payload = describe_review(identity, public_url=public_url)
            deliveries.append(Delivery(row.id, row.channel, row.target, row.attempts + 1, subject, text, payload))
            continue
        if row.session_id is not None:
            record = session.get(AccessSession, row.session_id)
            if record is None:
                continue
            subject, text, payload = describe_session(record, public_url=public_url)
            deliveries.append(Delivery(row.id, row.channel, row.target, row.attempts + 1, subject, text, payload))
            continue
        request = session.get(AccessRequest, row.request_id)
        if request is None:
            continue
        subject, text, payload = describe(request, public_url=public_url)
        deliveries.append(Delivery(row.id, row.channel, row.target, row.attempts + 1, subject, text, payload))
    return deliveries


def describe(request: AccessRequest, *, public_url: str) -> tuple[str, str, dict[str, Any]]:
    """Subject, plain text (Slack's and Teams' ``text``) and the JSON body of one announcement."""
    site, asset = request.asset.site.name, request.asset.name
    services = ", ".join((["SSH"] if request.ssh else []) + [f"TCP {p}" for p in request.ports])
    organisation = request.requester.organisation
    who = request.requester.username + (f" ({organisation})" if organisation else "")
    link = f"{public_url.rstrip('/')}/approvals#{request.id}"
    window = format_duration(dt.timedelta(seconds=request.duration_seconds))
    subject = f"Gatepass: {who} asks for {asset} at {site}"
    text = (f"New access request {request.id} at {site}: {who} asks for {asset} ({services}"
            f"{', read-only' if request.read_only else ''}) for {window}. Reason: {request.reason}. "
            f"Approve or deny: {link}")
    payload = {"text": text, "request": {
        "id": request.id, "site": site, "asset": asset, "requester": request.requester.username,
        "organisation": request.requester.organisation, "ssh": request.ssh, "ports": list(request.ports),
        "read_only": request.read_only, "duration": window, "reason": request.reason,
        "decide_by": request.decide_by.isoformat(), "link": link}}
    return subject, text, payload


def watch_url(session_id: str, *, public_url: str) -> str:
    """The supervisor's watch view of a session (approvals/watch_routes.py)."""
    return f"{public_url.rstrip('/')}/approvals/sessions/{session_id}/watch"


def describe_session(record: AccessSession, *, public_url: str) -> tuple[str, str, dict[str, Any]]:
    """Subject, plain text and JSON body of a session start's announcement, with the link to watch it. Not the
    command line: a vendor may have put a secret in it (the audit trail has it)."""
    grant = record.grant
    asset, vendor = grant.asset, grant.identity
    site = asset.site.name
    who = vendor.username + (f" ({vendor.organisation})" if vendor.organisation else "")
    link = watch_url(record.id, public_url=public_url)
    supervised = effective_supervision(asset).required
    subject = f"Gatepass: {who} started a session on {asset.name} at {site}"
    text = (f"{who} started a {record.kind} session on {asset.name} at {site} (request {grant.request_id}). "
            + (f"It waits until a supervisor of {site} watches it. " if supervised else "")
            + f"Watch it live: {link}")
    payload = {"text": text, "watch_url": link, "session": {
        "id": record.id, "kind": record.kind, "site": site, "asset": asset.name, "vendor": vendor.username,
        "organisation": vendor.organisation, "request": grant.request_id, "grant": grant.id,
        "started_at": record.started_at.isoformat(), "supervision_required": supervised, "watch_url": link}}
    return subject, text, payload


def describe_review(identity: Identity, *, public_url: str) -> tuple[str, str, dict[str, Any]]:
    """Subject, plain text and JSON body of a review reminder."""
    due = identity.attestation_due_at
    when = f"{due:%Y-%m-%d}" if due else "now"
    link = f"{public_url.rstrip('/')}/reviews"
    subject = f"Gatepass: access review of {identity.username} due {when}"
    text = (f"The access of {identity.username} ({identity.kind}{', ' + identity.purpose if identity.purpose else ''}) "
            f"is due for review on {when} UTC. Keep or revoke it: {link}")
    payload = {"text": text, "review": {"identity": identity.username, "kind": identity.kind,
                                        "due_at": due.isoformat() if due else None, "link": link}}
    return subject, text, payload


def where(channel: str, target: str) -> str:
    """What the audit trail names: an e-mail address, or only the webhook's host (its path may hold a secret)."""
    return target if channel == "email" else (urlsplit(target).hostname or "webhook")


def record_result(session: Session, *, now: dt.datetime, delivery_id: int, error: str | None) -> None:
    row = session.get(Notification, delivery_id, with_for_update=True)
    if row is None or row.status != "pending":
        return
    row.attempts += 1
    request = session.get(AccessRequest, row.request_id) if row.request_id else None
    started = session.get(AccessSession, row.session_id) if row.session_id else None
    site = request.asset.site.name if request else started.grant.asset.site.name if started else None
    about = row.request_id or row.run_id or row.session_id
    if row.identity_id is not None:
        reviewed = session.get(Identity, row.identity_id)
        about = f"review:{reviewed.username}" if reviewed else None
    details: dict[str, Any] = {"channel": row.channel, "to": where(row.channel, row.target), "attempt": row.attempts}
    if error is None:
        row.status, row.sent_at, row.last_error = "sent", now, None
        trail.record(session, now=now, action=Action.NOTIFICATION_SENT, subject=about, site=site,
                     details=details)
        return
    row.last_error = error[:1000]
    if row.attempts >= MAX_ATTEMPTS:
        row.status = NotificationStatus.FAILED
        trail.record(session, now=now, action=Action.NOTIFICATION_GAVE_UP, outcome="failure",
                     subject=about, site=site, details={**details, "error": error[:300]})
        return
    row.next_attempt_at = now + FIRST_RETRY * (2 ** (row.attempts - 1))
    trail.record(session, now=now, action=Action.NOTIFICATION_FAILED, outcome="failure",
                 subject=about, site=site,
                 details={**details, "error": error[:300], "retry_at": row.next_attempt_at.isoformat()})
