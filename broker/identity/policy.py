"""Identity policy as plain rules: how long an identity may live, and how often it is reviewed. No database writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.errors import InvalidInput
from broker.models import Site
from broker.vocabulary import IdentityKind, Role

# Policy: a service or AI identity lives at most a year before someone renews its end date; vendors default to
# a year too (people at the plant's own staff have no default end).
MAX_NON_HUMAN_TERM = dt.timedelta(days=365)
DEFAULT_TERM = dt.timedelta(days=365)


def end_date(*, kind: str, role: str, now: dt.datetime, requested: dt.datetime | None) -> dt.datetime | None:
    """The end date a new identity gets: non-humans must have one (at most a year ahead; a year when none is
    given), vendors default to a year, the plant's own staff have none unless given."""
    if requested is not None and requested <= now:
        raise InvalidInput(f"the end date {requested:%Y-%m-%d %H:%M} UTC has already passed")
    if kind != IdentityKind.HUMAN:
        if requested is not None and requested - now > MAX_NON_HUMAN_TERM:
            raise InvalidInput(f"a {kind} identity may be given at most a year at a time (until "
                               f"{now + MAX_NON_HUMAN_TERM:%Y-%m-%d}); renew its end date before then")
        return requested or now + MAX_NON_HUMAN_TERM
    if requested is None and role == Role.VENDOR:
        return now + DEFAULT_TERM
    return requested


DEFAULT_ATTESTATION_PERIOD = dt.timedelta(days=90)


def attestation_period(session: Session, site_ids: Iterable[int | None]) -> dt.timedelta:
    """How often an identity is reviewed: the shortest period among its sites (90 days where it has none)."""
    scoped = [site_id for site_id in site_ids if site_id is not None]
    if not scoped:
        return DEFAULT_ATTESTATION_PERIOD
    days = session.scalars(select(Site.attestation_days).where(Site.id.in_(scoped))).all()
    return dt.timedelta(days=min(days)) if days else DEFAULT_ATTESTATION_PERIOD
