"""Prometheus text exposition of what operators watch: pending requests, active grants, live sessions, identities
by kind and status, overdue reviews, open flags, playbook runs (the posture report's counters, for dashboards)."""

from __future__ import annotations

from sqlalchemy import func, select

from broker.api.state import BrokerState
from broker.audit.trail import Action
from broker.models import AccessRequest, AccessSession, AuditEvent, Flag, Grant, Identity, Site
from broker.vocabulary import FlagStatus, IdentityStatus, RequestStatus


def render_metrics(state: BrokerState) -> str:
    now = state.settings.clock.now()
    with state.sessions() as session:
        pending = session.scalar(select(func.count()).select_from(AccessRequest)
                                 .where(AccessRequest.status == RequestStatus.PENDING))
        active = session.scalar(select(func.count()).select_from(Grant).where(
            Grant.revoked_at.is_(None), Grant.starts_at <= now, Grant.ends_at > now))
        live = session.scalar(select(func.count()).select_from(AccessSession).where(AccessSession.ended_at.is_(None)))
        locked = session.scalar(select(func.count()).select_from(Site).where(Site.locked_down.is_(True)))
        identities = session.execute(select(Identity.kind, Identity.status, func.count())
                                     .group_by(Identity.kind, Identity.status)).all()
        overdue = session.scalar(select(func.count()).select_from(Identity).where(
            Identity.status == IdentityStatus.ACTIVE, Identity.attestation_due_at <= now))
        flags = session.execute(select(Flag.severity, func.count()).where(Flag.status == FlagStatus.OPEN)
                                .group_by(Flag.severity)).all()
        runs = session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == Action.PLAYBOOK_FINISHED))
    lines = [
        ("gatepass_requests_pending", "Access requests waiting for a decision", pending),
        ("gatepass_grants_active", "Grants inside their window and not revoked", active),
        ("gatepass_sessions_live", "Sessions reported started and not yet ended by a gateway", live),
        ("gatepass_sites_locked_down", "Sites under lockdown", locked),
        ("gatepass_gateway_streams", "Gateways holding the event stream open here", state.hub.subscriber_count),
    ]
    lines += [
        ("gatepass_access_reviews_overdue", "Active identities whose access review is overdue", overdue),
        ("gatepass_playbook_runs_total", "Playbook runs so far (drills that only planned not counted)", runs),
    ]
    out = []
    for name, help_text, value in lines:
        kind = "counter" if name.endswith("_total") else "gauge"
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {int(value or 0)}"]
    out += ["# HELP gatepass_identities Identities by kind and lifecycle status", "# TYPE gatepass_identities gauge"]
    out += [f'gatepass_identities{{kind="{kind}",status="{status}"}} {count}' for kind, status, count in identities]
    out += ["# HELP gatepass_flags_open Open flags by severity", "# TYPE gatepass_flags_open gauge"]
    out += [f'gatepass_flags_open{{severity="{severity}"}} {count}' for severity, count in flags]
    return "\n".join(out) + "\n"
