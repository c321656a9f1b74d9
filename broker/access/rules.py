"""Pure rules of a grant's life: its status at a moment, and the window an approval gives it. No database."""

from __future__ import annotations

import datetime as dt

from broker.models import AccessRequest, Grant
from broker.vocabulary import GrantStatus


def grant_status(grant: Grant, now: dt.datetime) -> GrantStatus:
    """scheduled → active → expired, or revoked at any point."""
    if grant.revoked_at is not None:
        return GrantStatus.REVOKED
    if now < grant.starts_at:
        return GrantStatus.SCHEDULED
    if now < grant.ends_at:
        return GrantStatus.ACTIVE
    return GrantStatus.EXPIRED


def grant_window(request: AccessRequest, *, now: dt.datetime, shorten_to: dt.timedelta | None) -> tuple[
    dt.datetime, dt.datetime
]:
    """Without a requested start, the window begins at approval (the contract). A requested window is never
    exceeded: approved late, it starts now and still ends when the vendor asked. An approver may shorten it."""
    duration = dt.timedelta(seconds=request.duration_seconds)
    if request.start_at is None:
        starts_at, ends_at = now, now + duration
    else:
        starts_at, ends_at = max(request.start_at, now), request.start_at + duration
    if shorten_to is not None and starts_at + shorten_to < ends_at:
        ends_at = starts_at + shorten_to
    return starts_at, ends_at
