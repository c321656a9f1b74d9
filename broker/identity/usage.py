"""When an identity was last used — a sign-in, a grant, a session — for "unused for 90 days" and the reviews."""

from __future__ import annotations

import datetime as dt

from broker.models import Identity


def touch(identity: Identity, now: dt.datetime) -> None:
    """Record a use; never moves the mark backwards (a late report of an older session)."""
    if identity.last_used_at is None or identity.last_used_at < now:
        identity.last_used_at = now
