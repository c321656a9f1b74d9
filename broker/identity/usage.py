"""How an identity has been used: when last (a sign-in, a grant, a session), for "unused for 90 days" and the
reviews, and at which sites it has held grants."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.models import Asset, Grant, Identity


def touch(identity: Identity, now: dt.datetime) -> None:
    """Record a use; never moves the mark backwards (a late report of an older session)."""
    if identity.last_used_at is None or identity.last_used_at < now:
        identity.last_used_at = now


def sites_granted(session: Session, identity: Identity) -> set[int]:
    """The sites where the identity has held a grant (any time)."""
    return set(session.scalars(select(Asset.site_id).join(Grant, Grant.asset_id == Asset.id)
                               .where(Grant.identity_id == identity.id).distinct()))
