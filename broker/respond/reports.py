"""What happened in each playbook run and drill, read back from the audit trail, with the time from the
trigger to the last of its sessions ending (the gateways report those ends; the trail keeps the trigger)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.audit.trail import Action
from broker.models import AccessSession, AuditEvent


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    playbook: str
    version: int
    site: str | None
    identity: str | None
    actor: str | None
    reason: str
    drill: bool
    executed: bool
    at: str
    elapsed_ms: float | None
    grants_revoked: int
    sessions_cut: int
    sessions_still_open: int
    seconds_to_contain: float | None
    steps: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def recent_runs(session: Session, *, limit: int = 50) -> list[RunSummary]:
    """The newest runs and planned drills, newest first."""
    heads = session.scalars(select(AuditEvent).where(
        AuditEvent.action.in_([Action.PLAYBOOK_FINISHED, Action.PLAYBOOK_DRILL_PLANNED]))
        .order_by(AuditEvent.seq.desc()).limit(limit)).all()
    summaries = []
    for head in heads:
        details = json.loads(head.details)
        run_id = str(head.subject)
        steps = [json.loads(e.details) for e in session.scalars(select(AuditEvent).where(
            AuditEvent.action == Action.PLAYBOOK_STEP, AuditEvent.subject == run_id).order_by(AuditEvent.seq))]
        cut = list(details.get("sessions_cut", []))
        ended = session.scalar(select(func.max(AccessSession.ended_at)).where(AccessSession.id.in_(cut))) \
            if cut else None
        still_open = session.scalar(select(func.count()).select_from(AccessSession).where(
            AccessSession.id.in_(cut), AccessSession.ended_at.is_(None))) if cut else 0
        contain = (ended - head.occurred_at).total_seconds() if ended is not None and not still_open else None
        summaries.append(RunSummary(
            run_id=run_id, playbook=str(details.get("playbook")), version=int(details.get("version", 0)),
            site=head.site, identity=details.get("identity"), actor=head.actor, reason=str(details.get("reason")),
            drill=bool(details.get("drill")), executed=bool(details.get("executed")),
            at=head.occurred_at.isoformat(), elapsed_ms=details.get("elapsed_ms"),
            grants_revoked=len(details.get("grants_revoked", [])), sessions_cut=len(cut),
            sessions_still_open=int(still_open or 0), seconds_to_contain=contain, steps=steps))
    return summaries
