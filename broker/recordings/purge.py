"""One purge of recordings past retention, for the broker's background job and `gatepass admin recording purge`:
the events commit first, the files go after (broker.recordings.retention says why), leftovers are retried."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from broker.db import read_only_unit, unit_of_work
from broker.recordings import retention
from broker.recordings.retention import Candidate

# The actor the purge job writes in the trail (the CLI writes its operator, cli:<user>).
JOB_ACTOR = "system:retention"


@dataclass
class PurgeReport:
    purged: list[Candidate] = field(default_factory=list)
    kept: list[Candidate] = field(default_factory=list)  # due, but the file is missing or changed
    problems: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def bytes_freed(self) -> int:
        return sum(item.size for item in self.purged)

    def as_dict(self) -> dict[str, object]:
        return {"dry_run": self.dry_run, "purged": [c.as_dict() for c in self.purged],
                "kept": [c.as_dict() for c in self.kept], "bytes": self.bytes_freed, "problems": self.problems}


def plan(sessions: sessionmaker[Session], *, now: dt.datetime, default_days: int, directory: Path) -> PurgeReport:
    """What a purge would delete now (``--dry-run``), changing nothing."""
    with read_only_unit(sessions) as session:
        found = retention.due(session, now=now, default_days=default_days, directory=directory)
    return PurgeReport(purged=[c for c in found if c.problem is None], kept=[c for c in found if c.problem],
                       dry_run=True)


def purge(sessions: sessionmaker[Session], *, now: dt.datetime, default_days: int, directory: Path,
          actor: str = JOB_ACTOR) -> PurgeReport:
    """Purge what is due (one batch): events and rows committed, then the files deleted. A default retention the
    trail does not show yet is recorded first (retention.record_default)."""
    with read_only_unit(sessions) as session:
        default_changed = retention.default_in_force(session) != default_days
    if default_changed:
        with unit_of_work(sessions) as session:
            retention.record_default(session, now=now, actor=actor, default_days=default_days)
    with read_only_unit(sessions) as session:
        # Read (and hash the files) outside the write transaction: hashing large files must not hold the lock.
        found = retention.due(session, now=now, default_days=default_days, directory=directory)
        leftover = retention.leftovers(session, directory=directory)
    report = PurgeReport(kept=[c for c in found if c.problem])
    intact = [c for c in found if c.problem is None]
    if intact:
        with unit_of_work(sessions) as session:
            report.purged = retention.mark_purged(session, now=now, actor=actor, candidates=intact)
    report.problems = retention.delete_files(directory, report.purged + leftover)
    return report
