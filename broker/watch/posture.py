"""The posture report: a period's figures for security and plant management, each beside the previous period's,
read from the database and the audit trail (nothing is stored for it): identities by kind and owner status,
reviews on time, second-factor coverage, grants per site and their length, sessions outside maintenance
windows, flags by signal and outcome, the time from a revoke to the cut, and the playbook runs and drills."""

from __future__ import annotations

import datetime as dt
import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.audit.trail import Action
from broker.errors import InvalidInput
from broker.inventory.sites import within_maintenance_windows
from broker.models import AccessSession, Asset, AuditEvent, Flag, Grant, Identity
from broker.respond import reports
from broker.vocabulary import IdentityKind, IdentityStatus

MAX_DAYS = 366


@dataclass
class Figures:
    """One period's figures (the report holds this period's and the previous one's)."""

    start: str
    end: str
    identities_by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    reviews_on_time: int = 0
    reviews_overdue: int = 0
    people: int = 0
    people_with_second_factor: int = 0
    grants_by_site: dict[str, int] = field(default_factory=dict)
    mean_grant_hours_by_site: dict[str, float] = field(default_factory=dict)
    sessions: int = 0
    sessions_outside_windows: int = 0
    flags_by_signal: dict[str, int] = field(default_factory=dict)
    flags_by_outcome: dict[str, int] = field(default_factory=dict)
    revoke_to_cut_ms: dict[str, float | None] = field(default_factory=dict)
    playbook_runs: int = 0
    drills: int = 0
    seconds_to_contain: list[float] = field(default_factory=list)


@dataclass
class Report:
    days: int
    generated_at: str
    current: Figures
    previous: Figures

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _identities(session: Session, figures: Figures, now: dt.datetime) -> None:
    people = session.scalars(select(Identity)).all()
    by_id = {p.id: p for p in people}
    for identity in people:
        if identity.status == IdentityStatus.RETIRED:
            continue
        owner = by_id.get(identity.owner_id) if identity.owner_id else None
        owner_state = ("not needed" if identity.kind == IdentityKind.HUMAN and owner is None else
                       "no owner" if owner is None else
                       "owner active" if owner.status == IdentityStatus.ACTIVE else "owner gone")
        kind = figures.identities_by_kind.setdefault(identity.kind, {})
        kind[owner_state] = kind.get(owner_state, 0) + 1
        if identity.attestation_due_at is not None and identity.status == IdentityStatus.ACTIVE:
            if identity.attestation_due_at > now:
                figures.reviews_on_time += 1
            else:
                figures.reviews_overdue += 1
        if identity.kind == IdentityKind.HUMAN and identity.status == IdentityStatus.ACTIVE:
            figures.people += 1
            # A confirmed TOTP, or the company's provider (which says per sign-in whether it asked a second factor).
            if identity.totp_confirmed_at is not None or identity.oidc_issuer:
                figures.people_with_second_factor += 1


def _access(session: Session, figures: Figures, start: dt.datetime, end: dt.datetime) -> None:
    lengths: dict[str, list[float]] = {}
    for grant in session.scalars(select(Grant).where(Grant.created_at >= start, Grant.created_at < end)):
        site = grant.asset.site.name
        figures.grants_by_site[site] = figures.grants_by_site.get(site, 0) + 1
        lengths.setdefault(site, []).append((grant.ends_at - grant.starts_at).total_seconds() / 3600)
    figures.mean_grant_hours_by_site = {site: round(statistics.fmean(hours), 2) for site, hours in lengths.items()}
    for record in session.scalars(select(AccessSession).join(Grant).join(Asset)
                                  .where(AccessSession.started_at >= start, AccessSession.started_at < end)):
        figures.sessions += 1
        windows = record.grant.asset.site.maintenance_windows
        ended = record.ended_at or record.started_at
        if windows and not within_maintenance_windows(windows, start=record.started_at, end=ended):
            figures.sessions_outside_windows += 1


def _flags(session: Session, figures: Figures, start: dt.datetime, end: dt.datetime) -> None:
    for flag in session.scalars(select(Flag).where(Flag.created_at >= start, Flag.created_at < end)):
        figures.flags_by_outcome[flag.status] = figures.flags_by_outcome.get(flag.status, 0) + 1
        for signal in {s["signal"] for s in flag.signals}:
            figures.flags_by_signal[signal] = figures.flags_by_signal.get(signal, 0) + 1


def _revoke_to_cut(session: Session, figures: Figures, start: dt.datetime, end: dt.datetime) -> None:
    """From each revocation's audit event to the end the gateway reported for each session it cut."""
    revoked = {event.subject: event.occurred_at for event in session.scalars(select(AuditEvent).where(
        AuditEvent.action == Action.GRANT_REVOKED, AuditEvent.occurred_at >= start, AuditEvent.occurred_at < end))}
    delays = []
    if revoked:
        cut = session.execute(select(AccessSession.grant_id, AccessSession.ended_at).where(
            AccessSession.grant_id.in_(list(revoked)), AccessSession.ended_at.is_not(None),
            AccessSession.end_reason.in_(["revoked", "lockdown"]))).all()
        delays = [(ended - revoked[grant_id]).total_seconds() * 1000 for grant_id, ended in cut
                  if ended is not None and ended >= revoked[grant_id]]
    figures.revoke_to_cut_ms = {
        "count": float(len(delays)),
        "median": round(statistics.median(delays), 1) if delays else None,
        "p95": round(sorted(delays)[max(0, int(len(delays) * 0.95) - 1)], 1) if delays else None,
    }


def _runs(session: Session, figures: Figures, start: dt.datetime, end: dt.datetime) -> None:
    for run in reports.recent_runs(session, limit=500):
        at = dt.datetime.fromisoformat(run.at)
        if not start <= at < end:
            continue
        if run.drill:
            figures.drills += 1
        else:
            figures.playbook_runs += 1
        if run.seconds_to_contain is not None:
            figures.seconds_to_contain.append(run.seconds_to_contain)


def _period(session: Session, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> Figures:
    figures = Figures(start=start.isoformat(), end=end.isoformat())
    _identities(session, figures, now)
    _access(session, figures, start, end)
    _flags(session, figures, start, end)
    _revoke_to_cut(session, figures, start, end)
    _runs(session, figures, start, end)
    return figures


def posture(session: Session, *, now: dt.datetime, days: int = 30) -> Report:
    """This period (the last ``days`` days) and the one before it. Identity figures are as of now for both:
    the database keeps the present state of identities, not its history."""
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"a report covers 1 to {MAX_DAYS} days, not {days}")
    span = dt.timedelta(days=days)
    return Report(days=days, generated_at=now.isoformat(), current=_period(session, now - span, now, now),
                  previous=_period(session, now - 2 * span, now - span, now))


def as_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2, sort_keys=True)
