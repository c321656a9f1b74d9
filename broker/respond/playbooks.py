"""The playbooks: what each does, step by step, as data. Three are built in; a site's admins may replace one
with an edited version (a new version number each time), never silently: every edit is audited."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import InvalidInput, NotFound
from broker.identity.identities import check_name
from broker.models import PlaybookVersion


class Step(StrEnum):
    """The actions a playbook may take, in the order it lists them."""

    LOCK_DOWN_SITE = "lock_down_site"
    REVOKE_SITE_GRANTS = "revoke_site_grants"
    SITE_READ_ONLY = "site_read_only"
    SUSPEND_RECENT_IDENTITIES = "suspend_recent_identities"
    SUSPEND_IDENTITY = "suspend_identity"
    RESET_SECOND_FACTOR = "reset_second_factor"
    PRESERVE_EVIDENCE = "preserve_evidence"
    NOTIFY = "notify"


STEP_TEXT = {
    Step.LOCK_DOWN_SITE: "lock the site down (every open grant there revoked, new access refused until lifted)",
    Step.REVOKE_SITE_GRANTS: "revoke every open grant at the site (no lockdown)",
    Step.SITE_READ_ONLY: "switch the site to read-only: grants that could change anything end, only read-only "
                         "protocol access (Modbus reads) stays possible",
    Step.SUSPEND_RECENT_IDENTITIES: "suspend every identity with a session at the site in the last 24 h, pending "
                                    "review",
    Step.SUSPEND_IDENTITY: "suspend the identity and everything it owns or sponsors (their sessions cut)",
    Step.RESET_SECOND_FACTOR: "reset the identity's second factor (signed out everywhere)",
    Step.PRESERVE_EVIDENCE: "keep the recordings concerned as evidence (their SHA-256 in the trail)",
    Step.NOTIFY: "notify the people concerned (webhook and e-mail)",
}
SITE_STEPS = {Step.LOCK_DOWN_SITE, Step.REVOKE_SITE_GRANTS, Step.SITE_READ_ONLY, Step.SUSPEND_RECENT_IDENTITIES}
IDENTITY_STEPS = {Step.SUSPEND_IDENTITY, Step.RESET_SECOND_FACTOR}


@dataclass(frozen=True)
class Playbook:
    name: str
    version: int
    description: str
    steps: tuple[Step, ...]

    @property
    def needs_site(self) -> bool:
        return any(step in SITE_STEPS for step in self.steps)

    @property
    def needs_identity(self) -> bool:
        return any(step in IDENTITY_STEPS for step in self.steps)


BUILT_IN = {
    playbook.name: playbook for playbook in (
        Playbook("ransomware-suspected", 1,
                 "Ransomware suspected at a site: lock it down, suspend everyone who was in it in the last 24 h "
                 "pending review, keep the recordings, tell the plant and security.",
                 (Step.LOCK_DOWN_SITE, Step.SUSPEND_RECENT_IDENTITIES, Step.PRESERVE_EVIDENCE, Step.NOTIFY)),
        Playbook("rogue-ai-agent", 1,
                 "An AI agent acts outside its delegation: suspend it (its delegated grants end, its sessions are "
                 "cut), keep its recordings, tell its sponsor and security.",
                 (Step.SUSPEND_IDENTITY, Step.PRESERVE_EVIDENCE, Step.NOTIFY)),
        Playbook("compromised-vendor-account", 1,
                 "A vendor's account is in the wrong hands: suspend it, reset its second factor, keep its "
                 "recordings, tell the supervisors of its sites and security.",
                 (Step.SUSPEND_IDENTITY, Step.RESET_SECOND_FACTOR, Step.PRESERVE_EVIDENCE, Step.NOTIFY)),
    )
}


def get_playbook(session: Session, name: str) -> Playbook:
    """The newest version of a playbook: the last edit if any, else the built-in one."""
    edited = session.scalar(select(PlaybookVersion).where(PlaybookVersion.name == name)
                            .order_by(PlaybookVersion.version.desc()).limit(1))
    if edited is not None:
        return Playbook(edited.name, edited.version, edited.description, tuple(Step(s) for s in edited.steps))
    if name in BUILT_IN:
        return BUILT_IN[name]
    raise NotFound(f"there is no playbook '{name[:64]}': choose one of {', '.join(list_names(session))}")


def list_names(session: Session) -> list[str]:
    edited = set(session.scalars(select(PlaybookVersion.name).distinct()))
    return sorted(set(BUILT_IN) | edited)


def list_playbooks(session: Session) -> list[Playbook]:
    return [get_playbook(session, name) for name in list_names(session)]


def edit_playbook(session: Session, *, now: dt.datetime, actor: str, name: str, steps: list[str],
                  description: str | None = None) -> Playbook:
    """A new version of a playbook (built-in or not) with these steps, in this order."""
    check_name(name, what="playbook")
    unknown = [s for s in steps if s not in tuple(Step)]
    if unknown:
        raise InvalidInput(f"unknown step(s) {', '.join(u[:40] for u in unknown)}: choose from "
                           f"{', '.join(Step)}")
    if not steps:
        raise InvalidInput("a playbook needs at least one step")
    if len(set(steps)) != len(steps):
        raise InvalidInput("a step may appear once in a playbook")
    current = None
    with contextlib.suppress(NotFound):
        current = get_playbook(session, name)
    text = (description or (current.description if current else "")).strip()
    if not text:
        raise InvalidInput("a new playbook needs a description (--description): when to run it")
    version = (current.version if current else 0) + 1
    session.add(PlaybookVersion(name=name, version=version, description=text, steps=list(steps), edited_by=actor,
                                edited_at=now))
    trail.record(session, now=now, action=Action.PLAYBOOK_EDITED, actor=actor, subject=name,
                 details={"version": version, "steps": list(steps),
                          "previous": list(current.steps) if current else None})
    return Playbook(name, version, text, tuple(Step(s) for s in steps))
