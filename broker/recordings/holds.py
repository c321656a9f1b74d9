"""Evidence holds: a session's recording kept past any retention, by a playbook run or by security by hand, until
released (by security or an admin, with a reason). Every hold and release is in the audit trail.

A hold is taken on the session, not the file: a session still live when a playbook cuts it has no recording yet,
and the one its gateway reports at the end is kept all the same.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import Conflict, Forbidden, InvalidInput, NotFound, audited
from broker.identity.assurance import require_mfa
from broker.identity.identities import has_role
from broker.models import AccessSession, Asset, EvidenceHold, Grant, Identity
from broker.recordings.retention import retention_of
from broker.vocabulary import Role

MAX_REASON = 1000
# One run or one call holds at most this many sessions (a ransomware playbook at a busy site).
MAX_SESSIONS = 5000


@dataclass(frozen=True)
class Actor:
    """Who holds or releases: a signed-in person (checked), or the operator on the control-plane host
    (``gatepass admin``, who has the data directory and so every right already)."""

    name: str
    person: Identity | None = None


def _reason(text: str | None, what: str) -> str:
    given = (text or "").strip()
    if not given:
        raise InvalidInput(f"say why the recording is {what} (--reason): it is kept with the hold and in the trail")
    if len(given) > MAX_REASON:
        raise InvalidInput(f"the reason is too long ({len(given)} characters, at most {MAX_REASON})")
    return given


def _site_of(record: AccessSession) -> str:
    return record.grant.asset.site.name


def _locked(session: Session, session_id: str) -> AccessSession | None:
    """The session's row, locked, as committed now: a purge of this recording that has not committed yet either
    skips it or is waited for and seen (broker.recordings.retention.mark_purged). Read afresh even if this
    transaction loaded it before (a playbook run's plan does): the identity map would keep the old
    ``recording_purged_at`` and the hold would claim a file that is gone."""
    return session.get(AccessSession, session_id, with_for_update=True, populate_existing=True)


def _load(session: Session, session_id: str) -> AccessSession:
    record = _locked(session, session_id)
    if record is None:
        raise NotFound(f"there is no session {session_id[:40]}: give a session id as the review page or "
                       "`gatepass reviews` shows it (ses-…)")
    return record


def check_authority(session: Session, *, now: dt.datetime, actor: Actor, verb: str, subject: str,
                    site: str | None) -> None:
    """Only security reviewers and admins hold or release evidence; a release also needs a second factor.
    Refusals are audited (``review:recording:hold_refused``)."""
    person = actor.person
    if person is None:
        return
    if verb == "release":
        require_mfa(session, now=now, actor=person, what="release a recording held as evidence",
                    action=Action.RECORDING_HOLD_REFUSED, subject=subject, site=site)
    if has_role(person, Role.SECURITY) or has_role(person, Role.ADMIN):
        return
    why = f"only security reviewers and admins can {verb} a recording held as evidence"
    trail.record(session, now=now, action=Action.RECORDING_HOLD_REFUSED, outcome="refused", actor=person.username,
                 subject=subject, site=site, details={"reason": why, "verb": verb})
    raise audited(Forbidden(why))


def active_holds(session: Session, session_id: str) -> list[EvidenceHold]:
    return list(session.scalars(select(EvidenceHold).where(EvidenceHold.session_id == session_id,
                                                           EvidenceHold.released_at.is_(None))
                                .order_by(EvidenceHold.id)))


def _hold_one(session: Session, *, now: dt.datetime, actor: Actor, record: AccessSession, reason: str,
              run_id: str | None) -> EvidenceHold:
    hold = EvidenceHold(session_id=record.id, run_id=run_id, reason=reason, held_by=actor.name, held_at=now)
    session.add(hold)
    trail.record(session, now=now, action=Action.RECORDING_HELD, actor=actor.name, subject=record.id,
                 site=_site_of(record),
                 details={"run": run_id, "reason": reason, "recording": record.recording_name,
                          "sha256": record.recording_sha256, "bytes": record.recording_bytes})
    return hold


def hold(session: Session, *, now: dt.datetime, actor: Actor, session_id: str, reason: str | None) -> EvidenceHold:
    """Put one session's recording on hold by hand. Refused if it was already purged (nothing left to keep)."""
    record = _load(session, session_id)
    check_authority(session, now=now, actor=actor, verb="hold", subject=record.id, site=_site_of(record))
    why = _reason(reason, "held")
    if record.recording_purged_at is not None:
        raise Conflict(f"the recording of session {record.id} was purged under retention on "
                       f"{record.recording_purged_at:%Y-%m-%d}: there is no file left to hold (its SHA-256 stays in "
                       "the audit trail)")
    return _hold_one(session, now=now, actor=actor, record=record, reason=why, run_id=None)


def hold_for_run(session: Session, *, now: dt.datetime, actor: str, run_id: str, session_ids: list[str],
                 reason: str) -> list[str]:
    """A playbook run's PRESERVE_EVIDENCE step: hold each session (the run's authority was checked by the runner);
    a session already held by this run, or whose recording was purged, is passed over. Returns the held ids."""
    held = []
    for session_id in sorted(set(session_ids))[:MAX_SESSIONS]:
        record = _locked(session, session_id)
        if record is None or record.recording_purged_at is not None:
            continue
        if any(h.run_id == run_id for h in active_holds(session, session_id)):
            continue
        _hold_one(session, now=now, actor=Actor(actor), record=record, reason=reason, run_id=run_id)
        held.append(session_id)
    return held


def _release(session: Session, *, now: dt.datetime, actor: Actor, record: AccessSession, holds: list[EvidenceHold],
             reason: str) -> None:
    for item in holds:
        item.released_at, item.released_by, item.release_reason = now, actor.name, reason
    trail.record(session, now=now, action=Action.RECORDING_RELEASED, actor=actor.name, subject=record.id,
                 site=_site_of(record),
                 details={"reason": reason, "holds": [{"run": h.run_id, "held_by": h.held_by, "reason": h.reason}
                                                      for h in holds],
                          "recording": record.recording_name, "sha256": record.recording_sha256})


def release(session: Session, *, now: dt.datetime, actor: Actor, session_id: str,
            reason: str | None) -> list[EvidenceHold]:
    """Release every hold on one session's recording (it then follows its site's retention again)."""
    record = _load(session, session_id)
    check_authority(session, now=now, actor=actor, verb="release", subject=record.id, site=_site_of(record))
    why = _reason(reason, "released")
    holds = active_holds(session, record.id)
    if not holds:
        raise Conflict(f"the recording of session {record.id} is not on hold: nothing to release")
    _release(session, now=now, actor=actor, record=record, holds=holds, reason=why)
    return holds


def release_run(session: Session, *, now: dt.datetime, actor: Actor, run_id: str,
                reason: str | None) -> list[str]:
    """Release the holds a playbook run took (other holds on the same recordings stay). Returns the session ids."""
    check_authority(session, now=now, actor=actor, verb="release", subject=run_id[:128], site=None)
    why = _reason(reason, "released")
    holds = list(session.scalars(select(EvidenceHold).where(EvidenceHold.run_id == run_id,
                                                            EvidenceHold.released_at.is_(None))
                                 .order_by(EvidenceHold.session_id)))
    if not holds:
        raise NotFound(f"playbook run {run_id[:40]} holds no recording (unknown run, or its holds were released)")
    released = []
    for item in holds:
        record = _load(session, item.session_id)
        _release(session, now=now, actor=actor, record=record, holds=[item], reason=why)
        released.append(record.id)
    return released


def sessions_of_target(session: Session, *, site_id: int | None, identity_id: int | None,
                       since: dt.datetime | None) -> list[str]:
    """Sessions a playbook's evidence step keeps: at the site (since ``since``) and/or of the identity, live ones
    included (their recording arrives when the gateway reports their end)."""
    query = select(AccessSession.id).join(Grant).join(Asset)
    if identity_id is not None:
        query = query.where(Grant.identity_id == identity_id)
    if site_id is not None:
        query = query.where(Asset.site_id == site_id)
        if since is not None:
            query = query.where((AccessSession.started_at >= since) | AccessSession.ended_at.is_(None))
    return list(session.scalars(query.order_by(AccessSession.started_at).limit(MAX_SESSIONS)))


def all_holds(session: Session, session_id: str) -> list[EvidenceHold]:
    """Every hold on one session's recording, released ones included, oldest first."""
    return list(session.scalars(select(EvidenceHold).where(EvidenceHold.session_id == session_id)
                                .order_by(EvidenceHold.id)))


def hold_line(item: EvidenceHold) -> str:
    """How a hold reads on the review page and the command line: "run X / by Y: reason"."""
    source = f"run {item.run_id} / by {item.held_by}" if item.run_id else f"by {item.held_by}"
    return f"{source}: {item.reason}"


def evidence_state(session: Session, *, now: dt.datetime, actor: Actor, session_id: str,
                   default_days: int) -> dict[str, object]:
    """A session's recording as retention sees it: its retention and the date it may go, whether it went, and its
    holds (security and admins only, like the recordings themselves; refusals audited)."""
    record = session.get(AccessSession, session_id)
    if record is None:
        raise NotFound(f"there is no session {session_id[:40]}: give a session id as the review page or "
                       "`gatepass reviews` shows it (ses-…)")
    check_authority(session, now=now, actor=actor, verb="see", subject=record.id, site=_site_of(record))
    kept = retention_of(record, default_days)
    until = kept.until(record.ended_at)
    items = all_holds(session, record.id)
    return {
        "session": record.id, "site": _site_of(record),
        "recording": {"name": record.recording_name, "sha256": record.recording_sha256,
                      "bytes": record.recording_bytes} if record.recording_name else None,
        "retention": {"days": kept.days, "policy": kept.source, "forever": kept.forever,
                      "purge_after": until.isoformat() if until else None},
        "purged_at": record.recording_purged_at.isoformat() if record.recording_purged_at else None,
        "on_hold": any(h.released_at is None for h in items),
        "holds": [{"run": h.run_id, "held_by": h.held_by, "reason": h.reason, "held_at": h.held_at.isoformat(),
                   "released_at": h.released_at.isoformat() if h.released_at else None,
                   "released_by": h.released_by, "release_reason": h.release_reason, "text": hold_line(h)}
                  for h in items],
    }
