"""The one approval rule, for access requests and grant extensions alike: who may decide, when, and what
one more approval does.

A request and an extension are both *ballots*: a requester, a status, a number of approvals required and a
list of decisions (``decisions`` and ``extension_decisions``, one shape, each with a unique constraint on
(ballot, approver) so "distinct approvers" is a schema fact). The workflow modules say what an approved ballot
does (create a grant, move a grant's end); this module says whether it may be decided at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import Conflict, Forbidden, InvalidInput, audited
from broker.identity.assurance import require_mfa
from broker.identity.identities import may_act_for_site
from broker.models import Identity, Site
from broker.vocabulary import Verdict

# Reasons and comments: long enough for a paragraph, short enough to read in a queue.
MAX_REASON = 1000


class Vote(Protocol):
    @property
    def approver_id(self) -> int: ...
    @property
    def verdict(self) -> str: ...


class Ballot(Protocol):
    """What a decision is taken on: an access request or a grant extension."""

    @property
    def id(self) -> str: ...
    @property
    def requester_id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def approvals_required(self) -> int: ...
    @property
    def decisions(self) -> Sequence[Vote]: ...


@dataclass(frozen=True)
class Wording:
    """How refusals name the ballot: "request"/"requests", and what a lockdown stops ("approving access")."""

    noun: str
    plural: str
    blocked_by_lockdown: str


REQUEST = Wording("request", "requests", "approving access")
EXTENSION = Wording("extension", "extensions", "extending access")


def approvals_so_far(ballot: Ballot) -> int:
    return sum(1 for decision in ballot.decisions if decision.verdict == Verdict.APPROVE)


def is_approved(ballot: Ballot) -> bool:
    """After one more distinct approver approved: enough approvals to act on."""
    return approvals_so_far(ballot) >= ballot.approvals_required


def has_decided(ballot: Ballot, approver: Identity) -> bool:
    return any(decision.approver_id == approver.id for decision in ballot.decisions)


def may_still_decide(ballot: Ballot, *, approver: Identity, site: Site) -> bool:
    """For queues: pending, at one of the approver's sites, not their own, not yet decided by them."""
    return (ballot.status == "pending" and ballot.requester_id != approver.id
            and may_act_for_site(approver, "supervisor", site.id) and not has_decided(ballot, approver))


def check_may_decide(session: Session, *, now: dt.datetime, approver: Identity, ballot: Ballot, site: Site,
                     asset_name: str, verb: str, wording: Wording, refused: Action,
                     details: dict[str, Any] | None = None) -> None:
    """Refuse unless ``approver`` may ``verb`` the ballot now. A refusal of authority (their own ballot, not an
    approver of the site) is audited as ``refused`` and kept; a refusal of state (already decided, already
    approved by them, site locked down) changes nothing and is answered as a conflict."""
    if ballot.requester_id == approver.id:
        raise _refuse(session, now=now, approver=approver, ballot=ballot, site=site, action=refused,
                      details=details, why=f"you cannot {verb} your own {wording.noun}: another approver of "
                                           f"{site.name} must decide")
    if not may_act_for_site(approver, "supervisor", site.id):
        raise _refuse(session, now=now, approver=approver, ballot=ballot, site=site, action=refused,
                      details=details, why=f"only approvers of site {site.name} can {verb} {wording.plural} for "
                                           f"{asset_name}")
    require_mfa(session, now=now, actor=approver, what=f"{verb} {wording.plural}", action=refused, subject=ballot.id,
                site=site.name)
    if ballot.status != "pending":
        raise Conflict(f"{wording.noun} {ballot.id} is already {ballot.status}; only pending {wording.plural} "
                       "can be decided")
    if has_decided(ballot, approver):
        raise Conflict(f"you already approved {wording.noun} {ballot.id}; it needs a different second approver")
    if site.locked_down:
        raise Conflict(f"site {site.name} is locked down: lift the lockdown before {wording.blocked_by_lockdown}")
    if site.read_only_mode and wording is REQUEST and not _read_only_ballot(ballot):
        raise Conflict(f"site {site.name} is in read-only mode: only read-only protocol access can be approved "
                       "until the plant switches it back")


def _read_only_ballot(ballot: Ballot) -> bool:
    """A request for read-only protocol access only (no SSH), the one kind a read-only site still approves."""
    return bool(getattr(ballot, "read_only", False)) and not getattr(ballot, "ssh", True)


def _refuse(session: Session, *, now: dt.datetime, approver: Identity, ballot: Ballot, site: Site,
            action: Action, why: str, details: dict[str, Any] | None) -> Forbidden:
    trail.record(session, now=now, action=action, outcome="refused", actor=approver.username, subject=ballot.id,
                 site=site.name, details={"reason": why, **(details or {})})
    return audited(Forbidden(why))


def clean_comment(comment: str | None) -> str | None:
    """An approver's comment, trimmed; None when empty."""
    comment = (comment or "").strip()
    if len(comment) > MAX_REASON:
        raise InvalidInput(f"the comment is too long ({len(comment)} characters, at most {MAX_REASON})")
    return comment or None


def denial_comment(comment: str | None) -> str:
    """A denial always says why: the vendor reads it."""
    cleaned = clean_comment(comment)
    if not cleaned:
        raise InvalidInput("a denial needs a comment: tell the vendor why")
    return cleaned
