"""Run a playbook, or plan it without changing anything (a drill): who may, what each step touches, and the
audit trail of the run — ``respond:playbook:started``, one ``respond:playbook:step`` per action with its targets
and its time, ``respond:playbook:finished`` with the message for the people concerned — all under one run id.

Local personnel stay in control: a site's supervisors may run a site playbook for their own site; security and
admins anywhere; the owner or sponsor of a service or AI identity may run an identity playbook on it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.containment import lockdown
from broker.errors import Conflict, Forbidden, InvalidInput, audited
from broker.identity import identities, lifecycle
from broker.identity.assurance import require_mfa
from broker.identity.identities import has_role, may_act_for_site
from broker.identity.usage import sites_granted
from broker.ids import new_id
from broker.inventory.gateway_events import EventPublisher
from broker.keys.vault import Vault
from broker.models import AccessSession, Asset, Grant, Identity, Site
from broker.recordings import holds
from broker.respond.playbooks import STEP_TEXT, Playbook, Step
from broker.vocabulary import IdentityKind, IdentityStatus, Role

RECENT = dt.timedelta(hours=24)
MAX_REASON = 1000


@dataclass(frozen=True)
class Target:
    """Where a run starts: a site, an identity, or both."""

    site: Site | None
    identity: Identity | None


@dataclass
class StepPlan:
    step: str
    text: str
    grants: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)
    recordings: list[dict[str, Any]] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    skipped: str | None = None
    elapsed_ms: float | None = None


@dataclass
class RunReport:
    run_id: str
    playbook: str
    version: int
    site: str | None
    identity: str | None
    reason: str
    actor: str
    drill: bool
    executed: bool
    started_at: str
    steps: list[StepPlan]
    elapsed_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- who may ----------------------------------------------------------------------------------------------


def _resolve(session: Session, playbook: Playbook, site_name: str | None, username: str | None) -> Target:
    if playbook.needs_site and not site_name:
        raise InvalidInput(f"playbook {playbook.name} acts on a site: give --site")
    if playbook.needs_identity and not username:
        raise InvalidInput(f"playbook {playbook.name} acts on an identity: give --identity")
    site = lockdown.get_site(session, site_name) if site_name else None
    identity = identities.get_identity(session, username) if username else None
    if identity is not None and playbook.name == "rogue-ai-agent" and identity.kind != IdentityKind.AI_AGENT:
        raise InvalidInput(f"'{identity.username}' is a {identity.kind} identity, not an AI agent: choose another "
                           "playbook (compromised-vendor-account, for a person)")
    return Target(site, identity)


def check_editor(session: Session, *, now: dt.datetime, person: Identity, name: str) -> None:
    """Who may change a playbook: security and admins, with a second factor. Refusals are audited."""
    require_mfa(session, now=now, actor=person, what=f"edit {name[:60]}", action=Action.PLAYBOOK_REFUSED,
                subject=name[:128], site=None)
    if has_role(person, Role.SECURITY) or has_role(person, Role.ADMIN):
        return
    why = "only security reviewers and admins can change a playbook"
    trail.record(session, now=now, action=Action.PLAYBOOK_REFUSED, outcome="refused", actor=person.username,
                 subject=name[:128], details={"reason": why, "edit": True})
    raise audited(Forbidden(why))


def check_authority(session: Session, *, now: dt.datetime, person: Identity, playbook: Playbook,
                    site_name: str | None, username: str | None) -> None:
    """Security and admins anywhere. A site's supervisors for their site — and, for an identity, when it has
    held access at one of their sites. The owner or sponsor of a service or AI identity for that identity.
    Refusals are audited."""
    # A playbook acts at once on a whole site or identity: like approving, it needs a second factor at sign-in.
    require_mfa(session, now=now, actor=person, what=f"run {playbook.name}", action=Action.PLAYBOOK_REFUSED,
                subject=playbook.name, site=site_name)
    if has_role(person, Role.SECURITY) or has_role(person, Role.ADMIN):
        return
    target = _resolve(session, playbook, site_name, username)
    allowed = True
    if target.site is not None:
        allowed = may_act_for_site(person, Role.SUPERVISOR, target.site.id)
    if allowed and target.identity is not None:
        owned = target.identity.kind != IdentityKind.HUMAN and person.id in (target.identity.owner_id,
                                                                            target.identity.sponsor_id)
        at_my_site = any(may_act_for_site(person, Role.SUPERVISOR, site_id)
                         for site_id in sites_granted(session, target.identity))
        allowed = owned or at_my_site
    if allowed:
        return
    why = (f"only security, an admin{', the supervisors of ' + target.site.name if target.site else ''}"
           f"{' or those accountable for ' + target.identity.username if target.identity else ''} may run "
           f"{playbook.name} here")
    trail.record(session, now=now, action=Action.PLAYBOOK_REFUSED, outcome="refused", actor=person.username,
                 subject=playbook.name, site=target.site.name if target.site else None,
                 details={"reason": why, "identity": username})
    raise audited(Forbidden(why))


# --- what each step touches -------------------------------------------------------------------------------


def _open_grants_at(session: Session, now: dt.datetime, site: Site) -> list[Grant]:
    return list(session.scalars(select(Grant).join(Asset).where(
        Asset.site_id == site.id, Grant.revoked_at.is_(None), Grant.ends_at > now).order_by(Grant.id)))


def _live_sessions(session: Session, grants: list[Grant]) -> list[str]:
    if not grants:
        return []
    return list(session.scalars(select(AccessSession.id).where(
        AccessSession.grant_id.in_([g.id for g in grants]), AccessSession.ended_at.is_(None))
        .order_by(AccessSession.id)))


def _recent_identities(session: Session, now: dt.datetime, site: Site) -> list[Identity]:
    ids = set(session.scalars(select(Grant.identity_id).join(AccessSession, AccessSession.grant_id == Grant.id)
                              .join(Asset).where(Asset.site_id == site.id, AccessSession.started_at >= now - RECENT)))
    return list(session.scalars(select(Identity).where(Identity.id.in_(ids)).order_by(Identity.username))) \
        if ids else []


def _owned(session: Session, identity: Identity) -> list[Identity]:
    """What the identity owns or sponsors that is still active, by name (the suspension takes it along)."""
    return sorted((owned for owned in lifecycle.owned_or_sponsored(session, identity)
                   if owned.status == IdentityStatus.ACTIVE), key=lambda owned: owned.username)


def _recordings(session: Session, now: dt.datetime, target: Target) -> list[dict[str, Any]]:
    query = select(AccessSession).join(Grant).join(Asset).where(AccessSession.recording_name.is_not(None))
    if target.identity is not None:
        query = query.where(Grant.identity_id == target.identity.id)
    if target.site is not None:
        query = query.where(Asset.site_id == target.site.id, AccessSession.started_at >= now - RECENT)
    return [{"session": r.id, "name": r.recording_name, "sha256": r.recording_sha256, "bytes": r.recording_bytes}
            for r in session.scalars(query.order_by(AccessSession.started_at).limit(1000))]


def _recipients(session: Session, target: Target) -> list[Identity]:
    """Security, the site's supervisors, and the identity's owner and sponsor (people with an address)."""
    people = {p.id: p for p in session.scalars(select(Identity).where(Identity.status == IdentityStatus.ACTIVE))
              if has_role(p, Role.SECURITY)
              or (target.site is not None and may_act_for_site(p, Role.SUPERVISOR, target.site.id)
                  and any(a.site_id == target.site.id for a in p.roles))}
    if target.identity is not None:
        for person_id in (target.identity.owner_id, target.identity.sponsor_id):
            person = session.get(Identity, person_id) if person_id else None
            if person is not None:
                people[person.id] = person
    return sorted(people.values(), key=lambda p: p.username)


def plan(session: Session, *, now: dt.datetime, playbook: Playbook, target: Target, actor: str) -> list[StepPlan]:
    """What each step would touch, read now, changing nothing."""
    planned = []
    for step in playbook.steps:
        item = StepPlan(step=str(step), text=STEP_TEXT[step])
        if step in (Step.LOCK_DOWN_SITE, Step.REVOKE_SITE_GRANTS) and target.site is not None:
            grants = _open_grants_at(session, now, target.site)
            item.grants, item.sessions = [g.id for g in grants], _live_sessions(session, grants)
            if step == Step.LOCK_DOWN_SITE and target.site.locked_down:
                item.skipped = f"site {target.site.name} is already locked down"
        elif step == Step.SITE_READ_ONLY and target.site is not None:
            grants = [g for g in _open_grants_at(session, now, target.site) if g.ssh or not g.read_only]
            item.grants, item.sessions = [g.id for g in grants], _live_sessions(session, grants)
            if target.site.read_only_mode:
                item.skipped = f"site {target.site.name} is already in read-only mode"
        elif step == Step.SUSPEND_RECENT_IDENTITIES and target.site is not None:
            people = [p for p in _recent_identities(session, now, target.site)
                      if p.status == IdentityStatus.ACTIVE and p.username != actor]
            item.identities = [p.username for p in people]
        elif step == Step.SUSPEND_IDENTITY and target.identity is not None:
            item.identities = [target.identity.username, *(p.username for p in _owned(session, target.identity))]
            grants = list(session.scalars(select(Grant).where(
                Grant.identity_id == target.identity.id, Grant.revoked_at.is_(None), Grant.ends_at > now)))
            item.grants, item.sessions = [g.id for g in grants], _live_sessions(session, grants)
            if target.identity.status != IdentityStatus.ACTIVE:
                item.skipped = f"'{target.identity.username}' is already {target.identity.status}"
        elif step == Step.RESET_SECOND_FACTOR and target.identity is not None:
            item.identities = [target.identity.username]
            if target.identity.kind != IdentityKind.HUMAN:
                item.skipped = f"'{target.identity.username}' has no second factor (a {target.identity.kind})"
        elif step == Step.PRESERVE_EVIDENCE:
            item.recordings = _recordings(session, now, target)
        elif step == Step.NOTIFY:
            item.recipients = [p.email or p.username for p in _recipients(session, target)]
        planned.append(item)
    return planned


# --- run ----------------------------------------------------------------------------------------------------


# The steps that cut access: committed one by one when the caller allows it (see ``run``).
CONTAINMENT = frozenset({Step.LOCK_DOWN_SITE, Step.REVOKE_SITE_GRANTS, Step.SITE_READ_ONLY,
                         Step.SUSPEND_RECENT_IDENTITIES, Step.SUSPEND_IDENTITY, Step.RESET_SECOND_FACTOR})


def _suspend(session: Session, *, now: dt.datetime, events: EventPublisher, actor: str, username: str,
             reason: str) -> str | None:
    """Suspend, or say why not (already stopped, the last admin): a playbook goes on with its other steps."""
    try:
        with session.begin_nested():
            lifecycle.suspend(session, now=now, events=events, actor=actor, username=username, reason=reason)
    except Conflict as refusal:
        return refusal.message
    return None


def _execute(session: Session, *, now: dt.datetime, vault: Vault, events: EventPublisher, actor: str,
             run_id: str, why: str, target: Target, item: StepPlan) -> None:
    step = Step(item.step)
    if item.skipped:
        return
    if step == Step.LOCK_DOWN_SITE and target.site is not None:
        lockdown.lock_down_site(session, now=now, events=events, actor=lockdown.LocalOperator(actor),
                                site_name=target.site.name, reason=why)
    elif step == Step.REVOKE_SITE_GRANTS and target.site is not None:
        lockdown.revoke_grants(session, now=now, events=events, grants=_open_grants_at(session, now, target.site),
                               actor=actor, reason="playbook", why=why)
    elif step == Step.SITE_READ_ONLY and target.site is not None:
        target.site.read_only_mode = True
        trail.record(session, now=now, action=Action.SITE_UPDATED, actor=actor, subject=target.site.name,
                     site=target.site.name, details={"read_only_mode": {"old": False, "new": True}, "run": run_id})
        writable = [g for g in _open_grants_at(session, now, target.site) if g.ssh or not g.read_only]
        lockdown.revoke_grants(session, now=now, events=events, grants=writable, actor=actor,
                               reason="read_only_mode", why=why)
    elif step in (Step.SUSPEND_RECENT_IDENTITIES, Step.SUSPEND_IDENTITY):
        notes = [f"{name}: {note}" for name in item.identities
                 if (note := _suspend(session, now=now, events=events, actor=actor, username=name,
                                      reason=f"{why} (pending review)"))]
        item.skipped = "; ".join(notes) or None
    elif step == Step.RESET_SECOND_FACTOR and target.identity is not None:
        identities.reset_totp(session, vault=vault, now=now, actor=actor, username=target.identity.username)
    elif step == Step.PRESERVE_EVIDENCE:
        # On hold under the run's id: never purged by retention until security releases them. Live sessions
        # (being cut by this run) are held too: their recordings arrive when their gateway reports the end.
        concerned = [r["session"] for r in item.recordings] + holds.sessions_of_target(
            session, site_id=target.site.id if target.site else None,
            identity_id=target.identity.id if target.identity else None, since=now - RECENT)
        held = holds.hold_for_run(session, now=now, actor=actor, run_id=run_id, session_ids=concerned, reason=why)
        trail.record(session, now=now, action=Action.EVIDENCE_PRESERVED, actor=actor, subject=run_id,
                     site=target.site.name if target.site else None,
                     details={"recordings": item.recordings, "held": held})


def run(session: Session, *, now: dt.datetime, vault: Vault, events: EventPublisher, actor: str,
        playbook: Playbook, site_name: str | None, username: str | None, reason: str | None,
        drill: bool = False, execute: bool = True, commit: Callable[[], None] | None = None) -> RunReport:
    """Run ``playbook`` (the caller checked authority, see ``check_authority``); with ``drill``, plan only —
    unless ``execute`` and the site is a drill site, where the drill really runs and is timed.

    With ``commit`` (the caller's transaction's commit), each step that cuts access (a lockdown, revocations,
    suspensions, a reset second factor) is committed, with its audit events, as soon as it is done: the gateways
    act on committed changes only, so they cut the sessions then, not after the evidence of a busy site (a hold
    and an event per recording of the last 24 h) is written too; and a later step that fails leaves the
    containment in place. Without it (the watcher's automatic response, inside its own transaction), the run
    commits as one."""
    why_given = (reason or "").strip()
    if not why_given:
        raise InvalidInput("give a reason (--reason): it is what the people cut off and the trail will read")
    if len(why_given) > MAX_REASON:
        raise InvalidInput(f"the reason is too long ({len(why_given)} characters, at most {MAX_REASON})")
    target = _resolve(session, playbook, site_name, username)
    if drill and execute and (target.site is None or not target.site.drill_site):
        raise Conflict("a drill runs for real only on a site marked as a drill site "
                       "(`gatepass admin site set NAME --drill-site on`); without --execute-on-drill-site it only "
                       "plans")
    executed = not drill or execute
    run_id = new_id("run")
    started = time.monotonic()
    steps = plan(session, now=now, playbook=playbook, target=target, actor=actor)
    report = RunReport(run_id=run_id, playbook=playbook.name, version=playbook.version,
                       site=target.site.name if target.site else None,
                       identity=target.identity.username if target.identity else None, reason=why_given,
                       actor=actor, drill=drill, executed=executed, started_at=now.isoformat(), steps=steps)
    header = {"run": run_id, "playbook": playbook.name, "version": playbook.version, "identity": report.identity,
              "reason": why_given, "drill": drill, "executed": executed}
    trail.record(session, now=now, action=Action.PLAYBOOK_STARTED if executed else Action.PLAYBOOK_DRILL_PLANNED,
                 actor=actor, subject=run_id, site=report.site, details=header)
    if executed:
        why = f"playbook {playbook.name} ({run_id}): {why_given}"
        for item in steps:
            step_started = time.monotonic()
            _execute(session, now=now, vault=vault, events=events, actor=actor, run_id=run_id, why=why,
                     target=target, item=item)
            item.elapsed_ms = round((time.monotonic() - step_started) * 1000, 1)
            trail.record(session, now=now, action=Action.PLAYBOOK_STEP, actor=actor, subject=run_id,
                         site=report.site, details={k: v for k, v in asdict(item).items() if k != "recordings"}
                         | {"recordings": len(item.recordings)})
            if commit is not None and Step(item.step) in CONTAINMENT and not item.skipped:
                commit()
    report.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    notify = next((s for s in steps if s.step == Step.NOTIFY), None)
    if executed:
        trail.record(session, now=now, action=Action.PLAYBOOK_FINISHED, actor=actor, subject=run_id,
                     site=report.site, details={**header, "elapsed_ms": report.elapsed_ms,
                                                "grants_revoked": sorted({g for s in steps for g in s.grants}),
                                                "sessions_cut": sorted({x for s in steps for x in s.sessions}),
                                                "notify": notify.recipients if notify else [],
                                                "message": message(report)})
    return report


def message(report: RunReport) -> str:
    """The one paragraph the people concerned receive."""
    where = " ".join(part for part in (f"at {report.site}" if report.site else "",
                                       f"on {report.identity}" if report.identity else "") if part)
    done = "; ".join(s.text + (f" — {len(s.sessions)} live session(s)" if s.sessions else "")
                     for s in report.steps if s.step != Step.NOTIFY and not s.skipped)
    return (f"Gatepass ran playbook {report.playbook} (v{report.version}) {where} ({report.run_id}), by "
            f"{report.actor}: {report.reason}. Done: {done or 'nothing left to do'}.")
