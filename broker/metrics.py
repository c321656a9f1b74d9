"""Prometheus text exposition of what operators watch: pending requests, active grants, live sessions."""

from __future__ import annotations

from sqlalchemy import func, select

from broker.api.state import BrokerState
from broker.models import AccessRequest, AccessSession, Grant, Site
from broker.vocabulary import RequestStatus


def render_metrics(state: BrokerState) -> str:
    now = state.settings.clock.now()
    with state.sessions() as session:
        pending = session.scalar(select(func.count()).select_from(AccessRequest)
                                 .where(AccessRequest.status == RequestStatus.PENDING))
        active = session.scalar(select(func.count()).select_from(Grant).where(
            Grant.revoked_at.is_(None), Grant.starts_at <= now, Grant.ends_at > now))
        live = session.scalar(select(func.count()).select_from(AccessSession).where(AccessSession.ended_at.is_(None)))
        locked = session.scalar(select(func.count()).select_from(Site).where(Site.locked_down.is_(True)))
    lines = [
        ("gatepass_requests_pending", "Access requests waiting for a decision", pending),
        ("gatepass_grants_active", "Grants inside their window and not revoked", active),
        ("gatepass_sessions_live", "Sessions reported started and not yet ended by a gateway", live),
        ("gatepass_sites_locked_down", "Sites under lockdown", locked),
        ("gatepass_gateway_streams", "Gateways holding the event stream open here", state.hub.subscriber_count),
    ]
    out = []
    for name, help_text, value in lines:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {int(value or 0)}"]
    return "\n".join(out) + "\n"
