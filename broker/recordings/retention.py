"""Recording retention: how long a site keeps its sessions' recordings, which ones are due, and the purge that
deletes them — never one on hold, never one whose file no longer matches its reported hash (that is tampering
for `gatepass audit verify` to show, not a file to tidy away), one ``retention:recording:purged`` event each.

Order of a purge, so that the trail never lacks an event for a file that is gone: the event and the row's
``recording_purged_at`` commit first; the file is deleted after the commit. If the deletion fails (or the
process dies in between) the file stays with its event, and the next purge deletes it (``leftovers``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import ColumnElement, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import InvalidInput
from broker.models import AccessSession, Asset, AuditEvent, EvidenceHold, Grant, Identity, Site
from broker.recordings.store import file_digest, resolve
from broker.settings import MAX_RETENTION_DAYS
from broker.vocabulary import IdentityStatus

log = logging.getLogger("gatepass.broker.retention")
# One purge transaction handles at most this many recordings; the job comes back for the rest.
PURGE_BATCH = 200


@dataclass(frozen=True)
class Retention:
    """A site's retention in force: ``days`` (0: forever) and where it comes from ("site" or "default")."""

    days: int
    source: str

    @property
    def forever(self) -> bool:
        return self.days == 0

    def until(self, ended_at: dt.datetime | None) -> dt.datetime | None:
        """When a recording of a session that ended at ``ended_at`` may go (None: kept forever, or still live)."""
        if self.forever or ended_at is None:
            return None
        return ended_at + dt.timedelta(days=self.days)

    def describe(self) -> str:
        kept = "kept forever" if self.forever else f"{self.days} days"
        return f"{kept} ({'site policy' if self.source == 'site' else 'broker default'})"


def parse_retention(text: str) -> int | None:
    """``--recording-retention-days``: N days (1-36500), ``0``/``forever`` (keep forever), or ``default`` (None:
    follow the broker's default)."""
    value = text.strip().lower()
    if value == "default":
        return None
    if value == "forever":
        return 0
    if not value.isdigit() or int(value) > MAX_RETENTION_DAYS:
        raise InvalidInput(f"'{text[:20]}' is not a recording retention: give a number of days (1 to "
                           f"{MAX_RETENTION_DAYS}), 0 or 'forever' to keep recordings forever, or 'default' for the "
                           "broker's default")
    return int(value)


def site_retention(site: Site, default_days: int) -> Retention:
    if site.recording_retention_days is None:
        return Retention(days=default_days, source="default")
    return Retention(days=site.recording_retention_days, source="site")


def retention_of(record: AccessSession, default_days: int) -> Retention:
    return site_retention(record.grant.asset.site, default_days)


@dataclass(frozen=True)
class Candidate:
    """A recording past its site's retention, not on hold (what a purge would delete, or skip and say why)."""

    session_id: str
    site: str
    name: str
    sha256: str
    size: int
    ended_at: dt.datetime
    retention: Retention
    problem: str | None = None  # why it is kept after all (file missing or changed: for audit verify to report)

    def as_dict(self) -> dict[str, object]:
        return {"session": self.session_id, "site": self.site, "name": self.name, "sha256": self.sha256,
                "bytes": self.size, "ended_at": self.ended_at.isoformat(), "retention_days": self.retention.days,
                "policy": self.retention.source, "kept_because": self.problem}


def _not_held() -> object:
    return ~exists().where(EvidenceHold.session_id == AccessSession.id, EvidenceHold.released_at.is_(None))


def _not_under_incident() -> ColumnElement[bool]:
    """Not at a locked-down site, not of a suspended identity: while an incident is open (a lockdown or a
    suspension pending review, as a playbook leaves them) its recordings wait, whatever their retention. This
    also closes the gap between a playbook's containment, which it commits at once (broker.respond.runner), and
    its preserve_evidence step, which holds them."""
    # Aliases of their own: the purge's query joins these tables too, and must not correlate them away.
    grant, asset, site, identity = aliased(Grant), aliased(Asset), aliased(Site), aliased(Identity)
    suspended = select(identity.id).where(identity.status == IdentityStatus.SUSPENDED).scalar_subquery()
    locked = (select(asset.id).join(site, asset.site_id == site.id).where(site.locked_down.is_(True))
              .scalar_subquery())
    return ~exists(select(grant.id).where(grant.id == AccessSession.grant_id,
                                          or_(grant.identity_id.in_(suspended), grant.asset_id.in_(locked))))


def due(session: Session, *, now: dt.datetime, default_days: int, directory: Path,
        limit: int = PURGE_BATCH) -> list[Candidate]:
    """Recordings of ended sessions older than their site's retention and not on hold, oldest first, each with
    its file checked against the hash its gateway reported."""
    if not directory.is_dir():
        # Recordings live on a separate gateway's disk (`gatepass gateway --recordings DIR`), not here: nothing
        # this broker could delete, and listing every one as "missing" each round would only cost reads.
        return []
    retentions = {site.id: (site, site_retention(site, default_days)) for site in session.scalars(select(Site))}
    # One cut-off per site that does not keep forever (sites are few; a date expression would differ per dialect).
    cutoffs = [(Asset.site_id == site_id) & (AccessSession.ended_at <= now - dt.timedelta(days=kept.days))
               for site_id, (_site, kept) in retentions.items() if not kept.forever]
    if not cutoffs:
        return []
    query = (select(AccessSession, Asset.site_id)
             .join(Grant, AccessSession.grant_id == Grant.id).join(Asset, Grant.asset_id == Asset.id)
             .where(AccessSession.recording_sha256.is_not(None), AccessSession.recording_purged_at.is_(None),
                    AccessSession.ended_at.is_not(None), or_(*cutoffs), _not_held(),  # type: ignore[arg-type]
                    # Still on its separate gateway: purged here after it arrived (its gateway deletes its copy).
                    AccessSession.recording_on_gateway.is_(False), _not_under_incident())
             .order_by(AccessSession.ended_at, AccessSession.id).execution_options(yield_per=limit))
    found: list[Candidate] = []
    intact = kept = 0
    # Streamed (a server-side cursor on PostgreSQL), and closed when the batch is full before the rows end.
    with session.execute(query) as rows:
        for record, site_id in rows:
            site, retention = retentions[site_id]
            assert record.ended_at is not None  # noqa: S101 (the query's own condition; for the type checker)
            item = Candidate(session_id=record.id, site=site.name, name=str(record.recording_name),
                             sha256=str(record.recording_sha256), size=int(record.recording_bytes or 0),
                             ended_at=record.ended_at, retention=retention, problem=_file_problem(directory, record))
            # Changed or missing files stay due for ever (verify reports them): they must not fill the batch and
            # stop the purge of the intact ones behind them, so the scan goes on past them (listing ``limit``).
            if item.problem is None:
                intact += 1
                found.append(item)
            elif kept < limit:
                kept += 1
                found.append(item)
            if intact >= limit:
                break
    return found


def _file_problem(directory: Path, record: AccessSession) -> str | None:
    try:
        path = resolve(directory, str(record.recording_name))
    except InvalidInput:
        return "its name is not a recording name"
    if not path.is_file():
        return f"{path} is missing (not purged by retention: audit verify reports it)"
    digest, size = file_digest(path)
    if (digest, size) != (record.recording_sha256, record.recording_bytes):
        return f"{path} no longer matches the SHA-256 its gateway reported (kept for audit verify to report)"
    return None


def mark_purged(session: Session, *, now: dt.datetime, actor: str, candidates: list[Candidate]) -> list[Candidate]:
    """In the caller's transaction: mark each intact candidate purged and write its event. The row is claimed
    with a conditional UPDATE that also re-checks holds, so two purges (two replicas) never both claim one, and
    a hold committed since ``due`` read keeps its recording. Returns the ones claimed (their files go after the
    commit: ``delete_files``).

    Lock order (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises whole transactions): the audit chain's
    head first, then the recordings' rows, skipping any row another transaction holds. Whoever takes a hold
    locks the row, then writes its event (the head); a playbook run holds the head from its first step and
    locks rows in its preserve_evidence step. A purge that locked a row and then waited for the head would close
    a cycle with either, and PostgreSQL would abort one of the two (a hold refused, a whole run failed). Taken
    this way, the purge waits only while it holds nothing; a row locked by a hold in flight is left for the
    next round (the hold will keep it anyway)."""
    intact = [item for item in candidates if item.problem is None]
    if not intact:
        return []
    # Every audited write holds the head's row lock from its first event to its commit (trail.record bumps it): a
    # hold or a run that has written has committed before this returns, and none writes until this one commits.
    trail.lock_head(session)
    free = set(session.scalars(select(AccessSession.id)
                               .where(AccessSession.id.in_([item.session_id for item in intact]))
                               .order_by(AccessSession.id).with_for_update(skip_locked=True)))
    claimed = []
    for item in intact:
        if item.session_id not in free:
            continue  # locked by a hold (or a session's report) in flight: the next purge looks again
        # A statement of its own after the locks (READ COMMITTED: a fresh snapshot), so it sees every hold
        # committed before them; a later one would have had to lock this row first.
        result = session.execute(
            update(AccessSession)
            .where(AccessSession.id == item.session_id, AccessSession.recording_purged_at.is_(None),
                   _not_held(), _not_under_incident())  # type: ignore[arg-type]
            .values(recording_purged_at=now)
            .execution_options(synchronize_session=False))
        if getattr(result, "rowcount", 0) != 1:
            continue
        trail.record(session, now=now, action=Action.RECORDING_PURGED, actor=actor, subject=item.session_id,
                     site=item.site,
                     details={"recording": {"name": item.name, "sha256": item.sha256, "bytes": item.size},
                              "ended_at": item.ended_at.isoformat(), "retention_days": item.retention.days,
                              "policy": item.retention.source})
        claimed.append(item)
    return claimed


def delete_files(directory: Path, purged: list[Candidate]) -> list[str]:
    """After the commit: delete the purged files; returns problems (a file that could not be deleted stays, and
    the next purge retries it)."""
    problems = []
    for item in purged:
        try:
            resolve(directory, item.name).unlink(missing_ok=True)
        except (OSError, InvalidInput) as error:
            problems.append(f"could not delete {item.name}: {error}")
            log.warning("could not delete purged recording %s: %s", item.name, error.__class__.__name__)
    return problems


def leftovers(session: Session, *, directory: Path, limit: int = PURGE_BATCH) -> list[Candidate]:
    """Recordings marked purged whose file is still there, unchanged (a deletion that failed after its commit)."""
    query = (select(AccessSession).where(AccessSession.recording_purged_at.is_not(None))
             .order_by(AccessSession.recording_purged_at.desc()).limit(limit))
    found = []
    for record in session.scalars(query):
        try:
            path = resolve(directory, str(record.recording_name))
        except InvalidInput:
            continue
        if path.is_file() and _file_problem(directory, record) is None:
            found.append(Candidate(session_id=record.id, site="", name=str(record.recording_name),
                                   sha256=str(record.recording_sha256), size=int(record.recording_bytes or 0),
                                   ended_at=record.ended_at or record.started_at, retention=Retention(0, "site")))
    return found


def default_in_force(session: Session) -> int:
    """The broker default the trail last recorded (``retention:default:changed``); 0 (forever) before any."""
    details = session.scalar(select(AuditEvent.details).where(AuditEvent.action == Action.RETENTION_DEFAULT_CHANGED)
                             .order_by(AuditEvent.seq.desc()).limit(1))
    if details is None:
        return 0
    days = json.loads(details).get("to_days")
    return days if isinstance(days, int) else 0


def record_default(session: Session, *, now: dt.datetime, actor: str, default_days: int) -> bool:
    """Write ``retention:default:changed`` if the broker's default differs from the one in force; True if it did.

    The default comes from the deployment (GATEPASS_RECORDING_RETENTION_DAYS), so no command audits it; a purge
    calls this first, so no recording is deleted under a default the trail does not show."""
    before = default_in_force(session)
    if before == default_days:
        return False
    trail.record(session, now=now, action=Action.RETENTION_DEFAULT_CHANGED, actor=actor,
                 details={"from_days": before, "to_days": default_days, "setting": "GATEPASS_RECORDING_RETENTION_DAYS",
                          "summary": f"recordings at sites without a policy of their own: {_kept(before)} -> "
                                     f"{_kept(default_days)}"})
    return True


def _kept(days: int) -> str:
    return "kept forever" if days == 0 else f"kept {days} days"
