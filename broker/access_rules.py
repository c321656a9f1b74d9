"""Pure rules of the access workflow: who may decide, and what a decision does. No database, no clock."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from broker.models import AccessRequest, Grant


def grant_status(grant: Grant, now: dt.datetime) -> str:
    """scheduled → active → expired, or revoked at any point."""
    if grant.revoked_at is not None:
        return "revoked"
    if now < grant.starts_at:
        return "scheduled"
    if now < grant.ends_at:
        return "active"
    return "expired"


def approvals_so_far(request: AccessRequest) -> int:
    return sum(1 for decision in request.decisions if decision.verdict == "approve")


@dataclass(frozen=True)
class DecisionOutcome:
    """What a decision leads to: the request's new status and whether a grant must be created."""

    status: str
    creates_grant: bool


def apply_approval(request: AccessRequest) -> DecisionOutcome:
    """Called after one more distinct approver approved; the grant exists once enough have."""
    if approvals_so_far(request) >= request.approvals_required:
        return DecisionOutcome("approved", True)
    return DecisionOutcome("pending", False)


def grant_window(request: AccessRequest, *, now: dt.datetime, shorten_to: dt.timedelta | None) -> tuple[
    dt.datetime, dt.datetime
]:
    """Without a requested start, the window begins at approval (the contract); an approver may shorten it."""
    starts_at = request.start_at if request.start_at is not None and request.start_at > now else now
    duration = dt.timedelta(seconds=request.duration_seconds)
    if shorten_to is not None and shorten_to < duration:
        duration = shorten_to
    return starts_at, starts_at + duration
