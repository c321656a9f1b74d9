"""Read-side views for the web pages: a supervisor's queue (with history and flags), live sessions and open
grants at their sites, a vendor's assets and requests, and the security reviewer's filtered listings."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from broker.access.approval import approvals_so_far
from broker.access.workflow import expire_overdue
from broker.errors import InvalidInput
from broker.identity.identities import has_role, site_ids_for_role
from broker.inventory.sites import within_maintenance_windows
from broker.models import AccessRequest, AccessSession, Asset, AuditEvent, Flag, Grant, Identity, Site
from broker.recordings import asciicast, store, verification
from broker.vocabulary import FlagStatus, RequestStatus, SessionKind

T = TypeVar("T")

HISTORY_LENGTH = 5
MAX_WATCH_FLAGS = 5
REVIEW_LIMIT = 200


def scoped_site_ids(identity: Identity, role: str) -> set[int] | None:
    """Sites where ``identity`` holds ``role``; None means every site (a role without a site scope)."""
    scopes = site_ids_for_role(identity, role)
    if None in scopes:
        return None
    return {s for s in scopes if s is not None}


def sites_for(session: Session, identity: Identity, role: str) -> list[Site]:
    scope = scoped_site_ids(identity, role)
    query = select(Site).order_by(Site.name)
    if scope is not None:
        query = query.where(Site.id.in_(scope))
    return list(session.scalars(query))


@dataclass(frozen=True)
class QueueItem:
    request: AccessRequest
    history: list[AccessRequest] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    # Why this supervisor cannot decide it (own request, already approved, lockdown), or None.
    blocked: str | None = None
    # The watcher's open flags on the requester at this plant (or on the identity itself): asked while flagged.
    watch_flags: list[Flag] = field(default_factory=list)


def pending_queue(session: Session, *, supervisor: Identity, now: dt.datetime) -> list[QueueItem]:
    """Pending requests at the supervisor's sites only, oldest first, each with the vendor's recent history
    at the same plant and the flags an approver should weigh (``now`` stands for the approval time of a
    request that starts at approval). Overdue requests have expired first: they are no longer in the queue."""
    expire_overdue(session, now=now)
    scope = scoped_site_ids(supervisor, "supervisor")
    if scope is not None and not scope:
        return []
    query = select(AccessRequest).join(Asset).where(AccessRequest.status == RequestStatus.PENDING)
    if scope is not None:
        query = query.where(Asset.site_id.in_(scope))
    items = []
    for request in session.scalars(query.order_by(AccessRequest.created_at).limit(200)):
        items.append(_queue_item(session, request, supervisor, now))
    return items


def _queue_item(session: Session, request: AccessRequest, supervisor: Identity, now: dt.datetime) -> QueueItem:
    asset = request.asset
    history = list(session.scalars(
        select(AccessRequest).join(Asset)
        .where(AccessRequest.requester_id == request.requester_id, Asset.site_id == asset.site_id,
               AccessRequest.id != request.id)
        .order_by(AccessRequest.created_at.desc()).limit(HISTORY_LENGTH)
    ))
    earlier_grants = list(session.scalars(
        select(Grant).join(Asset).where(Grant.identity_id == request.requester_id, Asset.site_id == asset.site_id)
    ))
    flags = []
    if not any(g.asset_id == asset.id for g in earlier_grants):
        flags.append("first access to this asset")
    if not earlier_grants:
        flags.append("first access at this plant")
    if asset.criticality == "high":
        flags.append("high-criticality asset")
    if request.approvals_required > 1:
        flags.append(f"needs {request.approvals_required} distinct approvers "
                     f"({approvals_so_far(request)} so far)")
    if any(h.status == "denied" for h in history):
        flags.append("denied here before")
    if request.read_only:
        flags.append("read-only (Modbus writes refused)")
    starts = request.start_at if request.start_at is not None and request.start_at > now else now
    if not within_maintenance_windows(asset.site.maintenance_windows, start=starts,
                                      end=starts + dt.timedelta(seconds=request.duration_seconds)):
        flags.append("outside the site's maintenance window")
    blocked = None
    if request.requester_id == supervisor.id:
        blocked = "this is your own request: another approver must decide"
    elif any(d.approver_id == supervisor.id for d in request.decisions):
        blocked = "you already approved it: a different second approver must decide"
    elif asset.site.locked_down:
        blocked = f"{asset.site.name} is locked down: lift the lockdown before approving"
    watch_flags = list(session.scalars(select(Flag).where(
        Flag.identity_id == request.requester_id, Flag.status == FlagStatus.OPEN,
        (Flag.site_id == asset.site_id) | Flag.site_id.is_(None)).order_by(Flag.created_at).limit(MAX_WATCH_FLAGS)))
    return QueueItem(request=request, history=history, flags=flags, blocked=blocked, watch_flags=watch_flags)


def live_sessions(session: Session, *, supervisor: Identity, now: dt.datetime) -> list[AccessSession]:
    """Connections the gateways report as open under a grant that still runs, at the supervisor's sites."""
    scope = scoped_site_ids(supervisor, "supervisor")
    query = (select(AccessSession).join(Grant, AccessSession.grant_id == Grant.id).join(Asset)
             .where(AccessSession.ended_at.is_(None), Grant.revoked_at.is_(None), Grant.ends_at > now))
    if scope is not None:
        query = query.where(Asset.site_id.in_(scope))
    return list(session.scalars(query.order_by(AccessSession.started_at.desc()).limit(200)))


def open_grants(session: Session, *, supervisor: Identity, now: dt.datetime) -> list[Grant]:
    scope = scoped_site_ids(supervisor, "supervisor")
    query = select(Grant).join(Asset).where(Grant.revoked_at.is_(None), Grant.ends_at > now)
    if scope is not None:
        query = query.where(Asset.site_id.in_(scope))
    return list(session.scalars(query.order_by(Grant.ends_at).limit(200)))


def requestable_assets(session: Session, *, vendor: Identity, role: str = "vendor") -> list[Asset]:
    """Assets at the sites where ``vendor`` holds ``role`` (a supervisor's own sites for "Grant access now")."""
    scope = scoped_site_ids(vendor, role)
    query = select(Asset).join(Site).order_by(Site.name, Asset.name)
    if scope is not None:
        query = query.where(Asset.site_id.in_(scope))
    return list(session.scalars(query))


def own_requests(session: Session, *, now: dt.datetime, identity: Identity, limit: int = 50) -> list[AccessRequest]:
    """The vendor's own requests, newest first; overdue ones have expired first."""
    expire_overdue(session, now=now)
    return list(session.scalars(
        select(AccessRequest).where(AccessRequest.requester_id == identity.id)
        .order_by(AccessRequest.created_at.desc()).limit(limit)
    ))


def last_public_key(session: Session, *, identity: Identity) -> str | None:
    """The SSH public key of the vendor's latest request, offered again on the request form."""
    return session.scalar(
        select(AccessRequest.public_key).where(AccessRequest.requester_id == identity.id)
        .order_by(AccessRequest.created_at.desc()).limit(1)
    )


# --- security review -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewFilter:
    identity: str | None = None
    site: str | None = None
    asset: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    action: str | None = None


def may_review(identity: Identity) -> bool:
    return has_role(identity, "security") or has_role(identity, "admin")


def _where_site_asset_identity(query: Select[T], flt: ReviewFilter) -> Select[T]:
    """The filters every review list shares (the query must join Site, Asset and the owning Identity)."""
    if flt.site:
        query = query.where(Site.name == flt.site)
    if flt.asset:
        query = query.where(Asset.name == flt.asset)
    if flt.identity:
        query = query.where(Identity.username == flt.identity)
    return query


def review_requests(session: Session, flt: ReviewFilter) -> list[AccessRequest]:
    query = select(AccessRequest).join(Asset).join(Site).join(Identity, AccessRequest.requester_id == Identity.id)
    query = _where_site_asset_identity(query, flt)
    if flt.since:
        query = query.where(AccessRequest.created_at >= flt.since)
    if flt.until:
        query = query.where(AccessRequest.created_at < flt.until)
    return list(session.scalars(query.order_by(AccessRequest.created_at.desc()).limit(REVIEW_LIMIT)))


def review_grants(session: Session, flt: ReviewFilter) -> list[Grant]:
    query = select(Grant).join(Asset).join(Site).join(Identity, Grant.identity_id == Identity.id)
    query = _where_site_asset_identity(query, flt)
    if flt.since:
        query = query.where(Grant.ends_at >= flt.since)
    if flt.until:
        query = query.where(Grant.starts_at < flt.until)
    return list(session.scalars(query.order_by(Grant.created_at.desc()).limit(REVIEW_LIMIT)))


def review_sessions(session: Session, flt: ReviewFilter) -> list[AccessSession]:
    return list(session.scalars(_session_query(flt, None).limit(REVIEW_LIMIT)))


def review_events(session: Session, flt: ReviewFilter) -> list[AuditEvent]:
    """Audit events, newest first. The asset filter matches the event's subject or its details text."""
    query = select(AuditEvent)
    if flt.identity:
        query = query.where(AuditEvent.actor == flt.identity)
    if flt.site:
        query = query.where(AuditEvent.site == flt.site)
    if flt.asset:
        # The asset appears as the subject (refusals) or inside the details JSON (requests, grants).
        query = query.where((AuditEvent.subject == flt.asset)
                            | AuditEvent.details.contains(f'"asset":"{flt.asset}"', autoescape=True))
    if flt.action:
        query = query.where(AuditEvent.action.startswith(flt.action, autoescape=True))
    if flt.since:
        query = query.where(AuditEvent.occurred_at >= flt.since)
    if flt.until:
        query = query.where(AuditEvent.occurred_at < flt.until)
    return list(session.scalars(query.order_by(AuditEvent.seq.desc()).limit(REVIEW_LIMIT)))


# --- security review: sessions and their recordings ------------------------------------------------------

# A transcript search reads recording files: it looks at this many sessions (newest first) at most.
TRANSCRIPT_SCAN_LIMIT = 200
SESSION_KINDS = tuple(SessionKind)


@dataclass(frozen=True)
class SessionSearch:
    sessions: list[AccessSession]
    # Sessions whose recordings were read for the text (0 when no text was asked for).
    scanned: int = 0
    # More sessions matched the other filters than were scanned: narrow the filters to search them all.
    bound_hit: bool = False


def _session_query(flt: ReviewFilter, kind: str | None) -> Select[AccessSession]:
    query = (select(AccessSession).join(Grant, AccessSession.grant_id == Grant.id).join(Asset).join(Site)
             .join(Identity, Grant.identity_id == Identity.id))
    query = _where_site_asset_identity(query, flt)
    if kind:
        query = query.where(AccessSession.kind == kind)
    if flt.since:
        query = query.where(AccessSession.started_at >= flt.since)
    if flt.until:
        query = query.where(AccessSession.started_at < flt.until)
    return query.order_by(AccessSession.started_at.desc(), AccessSession.id.desc())


def search_sessions(session: Session, flt: ReviewFilter, *, kind: str | None, text: str | None,
                    recordings_dir: Path) -> SessionSearch:
    """Sessions by identity, asset, site, time and kind, newest first; with ``text``, only those whose
    recording (output as plain text) or command contains it, case-insensitively, among the newest
    ``TRANSCRIPT_SCAN_LIMIT`` matching the other filters."""
    query = _session_query(flt, kind)
    if not text:
        return SessionSearch(sessions=list(session.scalars(query.limit(REVIEW_LIMIT))))
    candidates = list(session.scalars(query.limit(TRANSCRIPT_SCAN_LIMIT + 1)))
    bound_hit = len(candidates) > TRANSCRIPT_SCAN_LIMIT
    candidates = candidates[:TRANSCRIPT_SCAN_LIMIT]
    wanted = text.casefold()
    found = [record for record in candidates
             if (record.command and wanted in record.command.casefold())
             or _recording_contains(record, recordings_dir, wanted)]
    return SessionSearch(sessions=found, scanned=len(candidates), bound_hit=bound_hit)


def _recording_contains(record: AccessSession, recordings_dir: Path, wanted: str) -> bool:
    if not record.recording_name:
        return False
    try:
        path = store.resolve(recordings_dir, record.recording_name)
        return path.is_file() and asciicast.contains_text(path, wanted)
    except (InvalidInput, asciicast.RecordingFormatError, OSError):
        return False  # an unreadable recording is shown as such on the session's page, not here


@dataclass(frozen=True)
class SessionReview:
    record: AccessSession
    recording_status: str  # intact | edited | missing | none
    events: list[AuditEvent]

    @property
    def transfers(self) -> list[AuditEvent]:
        return [e for e in self.events if e.action.startswith("gateway:file:")]

    @property
    def commands(self) -> list[str]:
        """The exec command, and every command the gateway reported at the session's start."""
        found = [self.record.command] if self.record.command else []
        for event in self.events:
            if event.action == "gateway:session:started":
                command = json.loads(event.details).get("command")
                if isinstance(command, str) and command and command not in found:
                    found.append(command)
        return found


def review_session(session: Session, *, session_id: str, recordings_dir: Path) -> SessionReview:
    """One session for the reviewer: its row, the live state of its recording, and its audit events."""
    record = store.load(session, session_id)
    events = list(session.scalars(select(AuditEvent).where(AuditEvent.subject == record.id)
                                  .order_by(AuditEvent.seq).limit(5000)))
    return SessionReview(record=record, recording_status=verification.status(record, recordings_dir), events=events)
