"""Many session starts reported by one gateway call: one transaction, a savepoint and an audit event each.

A burst of tunnel connections (1,000 opened at once through one `ssh -L`) used to cost one HTTP call and
one commit per connection; the gateway now sends the starts that are waiting together. Each start is
decided exactly as a call of its own would be (``gateways.start_session``): a start that is refused keeps
its refusal's audit event and changes nothing else, and does not stop the others in the same call.
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
    for start in starts:
        # A savepoint per start: what a refused start wrote is kept or undone as its own transaction would be
        # (broker.db.unit_of_work), without touching the starts recorded before it.
        savepoint = session.begin_nested()
        try:
            record = gateways.start_session(session, now=now, gateway=gateway, grant_id=start.grant_id,
                                            kind=start.kind, peer=start.peer, command=start.command,
                                            port=start.port)
        except BrokerError as error:
            if error.keep_changes:  # its audit event (a refusal is audited), and the domain changed nothing else
                savepoint.commit()
            else:
                savepoint.rollback()
            outcomes.append(StartOutcome(error=error))
        else:
            savepoint.commit()
            outcomes.append(StartOutcome(session_id=record.id))
    del held
    return outcomes


def _load_grants(session: Session, grant_ids: set[str]) -> list[Grant]:
    return list(session.scalars(
        select(Grant).where(Grant.id.in_(grant_ids))
        .options(joinedload(Grant.asset).joinedload(Asset.site), joinedload(Grant.identity))).unique())
