"""A gateway's life after its credential was issued: what an operator sees of each (``gatepass admin gateway
list``) and its retirement (``gatepass admin gateway retire``).

A gateway is a machine identity holding the keys to its plant: it is handed the target credentials of every asset
it serves. One that is decommissioned, lost or suspected compromised is retired: from that commit on its credential
is refused on every gateway API call (authenticate_gateway), so it is handed nothing more; the sessions the broker
still has open on it are ended (``gateway_lost``, with the operator's reason; each audited as a session end, since
that gateway will never report them); its recordings not yet uploaded stay where they are, and `gatepass audit
verify` names it for each. Retiring is final: a gateway that comes back gets a new credential under a new name.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import Conflict, InvalidInput, NotFound
from broker.inventory.gateways import end_open_sessions
from broker.models import AccessSession, Gateway


@dataclass(frozen=True)
class GatewayRow:
    name: str
    sites: list[str]
    address: str | None
    registered_at: dt.datetime | None
    created_at: dt.datetime
    retired_at: dt.datetime | None
    open_sessions: int
    recordings_on_gateway: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sites": self.sites or "all", "address": self.address,
                "registered_at": self.registered_at.isoformat() if self.registered_at else None,
                "created_at": self.created_at.isoformat(),
                "retired_at": self.retired_at.isoformat() if self.retired_at else None,
                "open_sessions": self.open_sessions, "recordings_on_gateway": self.recordings_on_gateway}


def list_gateways(session: Session) -> list[GatewayRow]:
    """Every gateway credential issued, by name, with what the broker knows of it now."""
    open_sessions = dict(session.execute(select(AccessSession.gateway_id, func.count())
                                         .where(AccessSession.ended_at.is_(None)).group_by(AccessSession.gateway_id))
                         .tuples().all())
    waiting = dict(session.execute(select(AccessSession.gateway_id, func.count())
                                   .where(AccessSession.recording_on_gateway.is_(True))
                                   .group_by(AccessSession.gateway_id)).tuples().all())
    return [GatewayRow(name=gateway.name, sites=[site.name for site in gateway.sites],
                       address=f"{gateway.ssh_host}:{gateway.ssh_port}" if gateway.ssh_host else None,
                       registered_at=gateway.registered_at, created_at=gateway.created_at,
                       retired_at=gateway.retired_at, open_sessions=open_sessions.get(gateway.id, 0),
                       recordings_on_gateway=waiting.get(gateway.id, 0))
            for gateway in session.scalars(select(Gateway).order_by(Gateway.name))]


def retire_gateway(session: Session, *, now: dt.datetime, actor: str, name: str, reason: str) -> list[str]:
    """Retire gateway ``name``: its credential refused from this commit on, its open sessions ended
    (``gateway_lost``). Returns the ids of the sessions ended."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("say why the gateway is retired (--reason): the audit trail keeps it")
    gateway = session.scalar(select(Gateway).where(Gateway.name == name).with_for_update())
    if gateway is None:
        raise NotFound(f"there is no gateway {name[:64]}")
    if gateway.retired_at is not None:
        raise Conflict(f"gateway {gateway.name} was already retired on {gateway.retired_at:%Y-%m-%d %H:%M} UTC")
    gateway.retired_at = now
    ended = end_open_sessions(session, now=now, gateway=gateway, detail=f"gateway {gateway.name} retired: {reason}",
                              ended_by=actor)
    trail.record(session, now=now, action=Action.GATEWAY_RETIRED, actor=actor, subject=gateway.name,
                 details={"reason": reason, "sessions_ended": ended, "sites": [s.name for s in gateway.sites] or "all"})
    return ended
