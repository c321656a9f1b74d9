"""Many session starts reported by one gateway call: one transaction, and a session row and an audit event each.

A burst of tunnel connections (1,000 opened at once through one `ssh -L`) used to cost one HTTP call and
one commit per connection; the gateway now sends the starts that are waiting together. Each start is
decided exactly as a call of its own would be (``gateways.start_session``): a start that is refused keeps
its refusal's audit event and changes nothing else (as ``broker.db.unit_of_work`` keeps a refusal's event),
and does not stop the others in the same call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from broker.errors import BrokerError
from broker.inventory import gateways
from broker.models import Asset, Gateway, Grant

# More than a gateway ever has waiting at once in practice (it sends what piled up during one call).
MAX_STARTS_PER_CALL = 500


@dataclass(frozen=True)
class StartRequest:
    grant_id: str
    kind: str
    peer: str | None
    command: str | None
    port: int | None


@dataclass(frozen=True)
class StartOutcome:
    """A recorded session's id, or the refusal that stands for this start alone."""

    session_id: str | None = None
    error: BrokerError | None = None


def start_sessions(session: Session, *, now: dt.datetime, gateway: Gateway,
                   starts: Sequence[StartRequest]) -> list[StartOutcome]:
    """Record every start it may, in the caller's transaction; one outcome per start, in order."""
    # The grants (with asset, site and identity) in one query, held here for the whole call: the session's
    # identity map keeps only weak references, so an unchanged grant would otherwise be loaded again, in four
    # queries, for every start under it (1,000 starts under one grant: 4,000 queries).
    held = _load_grants(session, {start.grant_id for start in starts})
    outcomes: list[StartOutcome] = []
    # One flush for the whole call, at its end (the caller's commit), instead of one per start: a flush per start
    # was most of the batch's cost. start_session refuses before it adds anything (a refused start writes only
    # its audit event, which goes straight to the database), so no start needs a savepoint to be undone.
    with session.no_autoflush:
        for start in starts:
            added = len(session.new)
            try:
                record = gateways.start_session(session, now=now, gateway=gateway, grant_id=start.grant_id,
                                                kind=start.kind, peer=start.peer, command=start.command,
                                                port=start.port)
            except BrokerError as error:
                if len(session.new) != added:
                    # Not the refusal this call relies on: fail the whole call (the gateway refuses every start
                    # in it) rather than keep half of one.
                    raise RuntimeError(f"a refused session start left changes behind: {error.message}") from error
                outcomes.append(StartOutcome(error=error))
            else:
                outcomes.append(StartOutcome(session_id=record.id))
        session.flush()
    del held
    return outcomes


def _load_grants(session: Session, grant_ids: set[str]) -> list[Grant]:
    return list(session.scalars(
        select(Grant).where(Grant.id.in_(grant_ids))
        .options(joinedload(Grant.asset).joinedload(Asset.site), joinedload(Grant.identity))).unique())
