"""Flags as reviewers see and decide them: supervisors those at their sites, security and admins all; a flag
marked benign feeds the identity's baseline with what it held back, a confirmed one never does."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound, audited
from broker.identity.identities import has_role, may_act_for_site, site_ids_for_role
from broker.models import Flag, Identity
from broker.vocabulary import FlagStatus, Role
from broker.watch import profile
from broker.watch.watcher import find_baseline, learn_into

MAX_COMMENT = 1000


def _sees_all(viewer: Identity) -> bool:
    return has_role(viewer, Role.SECURITY) or has_role(viewer, Role.ADMIN)


def visible_flags(session: Session, *, viewer: Identity, status: str | None = FlagStatus.OPEN,
                  limit: int = 200) -> list[Flag]:
    """Newest first: everything for security and admins; a supervisor's sites for a supervisor; none else."""
    query = select(Flag)
    if status is not None:
        if status not in tuple(FlagStatus):
            raise InvalidInput(f"'{status[:20]}' is not a flag status: open, benign or confirmed")
        query = query.where(Flag.status == status)
    if not _sees_all(viewer):
        sites = site_ids_for_role(viewer, Role.SUPERVISOR)
        if not sites:
            return []
        if None not in sites:
            query = query.where(Flag.site_id.in_([s for s in sites if s is not None]))
    return list(session.scalars(query.order_by(Flag.created_at.desc(), Flag.id).limit(limit)))


def flags_by_session(session: Session, session_ids: list[str]) -> dict[str, list[Flag]]:
    """Open flags of these live sessions (for the supervisor's page, next to each session)."""
    if not session_ids:
        return {}
    found: dict[str, list[Flag]] = {}
    for flag in session.scalars(select(Flag).where(Flag.session_id.in_(session_ids), Flag.status == FlagStatus.OPEN)
                                .order_by(Flag.created_at)):
        found.setdefault(str(flag.session_id), []).append(flag)
    return found


def decide(session: Session, *, now: dt.datetime, reviewer: Identity, flag_id: str, verdict: str,
           comment: str | None) -> Flag:
    flag = session.get(Flag, flag_id, with_for_update=True)
    if flag is None:
        raise NotFound(f"there is no flag {flag_id[:40]}")
    if verdict not in (FlagStatus.BENIGN, FlagStatus.CONFIRMED):
        raise InvalidInput(f"'{verdict[:20]}' is not a decision on a flag: benign or confirmed")
    allowed = _sees_all(reviewer) or (flag.site_id is not None
                                      and may_act_for_site(reviewer, Role.SUPERVISOR, flag.site_id))
    if not allowed:
        why = "only security, an admin or a supervisor of the flag's site can decide it"
        trail.record(session, now=now, action=Action.FLAG_REFUSED, outcome="refused", actor=reviewer.username,
                     subject=flag.id, details={"reason": why, "verdict": verdict})
        raise audited(Forbidden(why))
    if flag.status != FlagStatus.OPEN:
        raise Conflict(f"flag {flag.id} is already {flag.status}")
    text = (comment or "").strip()
    if not text:
        raise InvalidInput("say why (--comment): the decision is kept with the flag")
    if len(text) > MAX_COMMENT:
        raise InvalidInput(f"the comment is too long ({len(text)} characters, at most {MAX_COMMENT})")
    flag.status, flag.decided_by, flag.decided_at, flag.comment = verdict, reviewer.username, now, text
    flag.updated_at = now
    learned = 0
    if verdict == FlagStatus.BENIGN and flag.observations:
        baseline = find_baseline(session, flag.identity_id, flag.site_id)
        if baseline is not None:
            learn_into(baseline, [profile.Observation.from_dict(data) for data in flag.observations], at=now)
            learned = len(flag.observations)
    trail.record(session, now=now, action=Action.FLAG_DECIDED, actor=reviewer.username, subject=flag.id,
                 site=flag.site.name if flag.site else None,
                 details={"verdict": verdict, "comment": text, "identity": flag.identity.username,
                          "learned": learned})
    return flag


def shown(flag: Flag) -> dict[str, Any]:
    return {"id": flag.id, "identity": flag.identity.username, "site": flag.site.name if flag.site else None,
            "session": flag.session_id, "severity": flag.severity, "status": flag.status, "learning": flag.learning,
            "summary": flag.summary, "signals": flag.signals, "created_at": flag.created_at.isoformat(),
            "decided_by": flag.decided_by, "comment": flag.comment}
