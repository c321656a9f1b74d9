"""Check recordings against the hashes their gateway reported: on the session row and in the hash-chained
``gateway:session:ended`` audit event (``gatepass audit verify``, and a session page's live status).

A recording deleted by the retention purge is fine only when the trail proves it: a hash-chained
``retention:recording:purged`` event for that session naming the same file, SHA-256 and size. A file missing
without one is reported as missing (deleted by hand, or tampering), whatever the session row says."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.errors import InvalidInput
from broker.models import AccessSession, AuditEvent
from broker.recordings.store import file_digest, resolve

SESSION_ENDED = "gateway:session:ended"
RECORDING_PURGED = "retention:recording:purged"


@dataclass(frozen=True)
class RecordingsCheck:
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    # Recordings deleted under retention, each proved by its hash-chained purge event (not problems).
    purged: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def status(record: AccessSession, directory: Path) -> str:
    """"intact", "edited", "missing", "purged" (under retention, as its row says; audit verify checks the trail's
    proof) or "none" (no recording reported) for one session, checked now."""
    if not record.recording_name or not record.recording_sha256:
        return "none"
    try:
        path = resolve(directory, record.recording_name)
    except InvalidInput:
        return "edited"
    if not path.is_file():
        return "purged" if record.recording_purged_at is not None else "missing"
    digest, size = file_digest(path)
    return "intact" if (digest, size) == (record.recording_sha256, record.recording_bytes) else "edited"


def _who(record: AccessSession) -> str:
    grant = record.grant
    started = record.started_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"session {record.id} ({grant.identity.username} on {grant.asset.name} at {grant.asset.site.name}, "
            f"started {started})")


def _reported_in_audit(session: Session) -> dict[str, dict[str, Any]]:
    """Recording hashes from the hash-chained session-end events, by session id."""
    reported: dict[str, dict[str, Any]] = {}
    query = (select(AuditEvent.subject, AuditEvent.details)
             .where(AuditEvent.action == SESSION_ENDED, AuditEvent.details.contains('"recording":{')))
    for subject, details in session.execute(query):
        recording = json.loads(details).get("recording")
        if subject and isinstance(recording, dict):
            reported[subject] = recording
    return reported


def _purged_in_audit(session: Session) -> dict[str, dict[str, Any]]:
    """What the retention purge deleted, from its hash-chained events, by session id."""
    purged: dict[str, dict[str, Any]] = {}
    for subject, details in session.execute(select(AuditEvent.subject, AuditEvent.details)
                                            .where(AuditEvent.action == RECORDING_PURGED)):
        recording = json.loads(details).get("recording")
        if subject and isinstance(recording, dict):
            purged[subject] = recording
    return purged


def verify_recordings(session: Session, directory: Path) -> RecordingsCheck:
    """Check every recording a gateway reported: the file exists, and its size and SHA-256 match both the
    session row and the hash-chained audit event. One problem line per failing session (two when the row was
    changed as well)."""
    audited = _reported_in_audit(session)
    purges = _purged_in_audit(session)
    problems: list[str] = []
    checked = purged = 0
    query = (select(AccessSession).where(AccessSession.recording_sha256.is_not(None))
             .order_by(AccessSession.started_at, AccessSession.id))
    for record in session.scalars(query):
        checked += 1
        found, gone = _check(record, audited.pop(record.id, None), directory, purges.get(record.id))
        problems.extend(found)
        purged += gone
    # What is left: the audit trail records a recording, but the row no longer says so (or is gone).
    for session_id, expected in audited.items():
        checked += 1
        cleared = session.get(AccessSession, session_id)
        if cleared is None:
            problems.append(f"recording of session {session_id}: the audit trail records {expected.get('name')}, "
                            "but the session is gone from the database")
        else:
            found, gone = _check(cleared, expected, directory, purges.get(session_id))
            problems.extend(found)
            purged += gone
    return RecordingsCheck(checked=checked, problems=problems, purged=purged)


def _check(record: AccessSession, expected: dict[str, Any] | None, directory: Path,
           purge: dict[str, Any] | None) -> tuple[list[str], int]:
    """Problems of one session's recording, and 1 if it was purged under retention (proved by ``purge``, its
    purge event); ``expected`` is what its session-end audit event says."""
    who = _who(record)
    problems = []
    row = {"name": record.recording_name, "sha256": record.recording_sha256, "bytes": record.recording_bytes}
    if expected is not None and {k: expected.get(k) for k in row} != row:
        problems.append(f"recording of {who}: the session's stored hash differs from the one in the audit "
                        "trail (the database row was changed); checking against the audit trail")
    reference = expected if expected is not None else row
    name, sha256, size = str(reference.get("name")), reference.get("sha256"), reference.get("bytes")
    try:
        path = resolve(directory, name)
    except InvalidInput:
        return [*problems, f"recording of {who}: '{name[:60]}' is not a valid recording name"], 0
    proved = purge is not None and {k: purge.get(k) for k in ("name", "sha256", "bytes")} == \
        {"name": name, "sha256": sha256, "bytes": size}
    if purge is not None and not proved:
        problems.append(f"recording of {who}: its retention purge event names another file or hash than the "
                        "gateway reported")
    if not path.is_file():
        if proved:
            return problems, 1
        why = " (the session row says it was purged, but no purge event in the audit trail proves it)" \
            if record.recording_purged_at is not None else ""
        return [*problems, f"recording of {who} is MISSING: {path} does not exist{why}"], 0
    digest, actual = file_digest(path)
    if actual != size:
        problems.append(f"recording of {who} was EDITED: {path} has {actual} bytes, the gateway recorded {size}")
    elif digest != sha256:
        problems.append(f"recording of {who} was EDITED: the SHA-256 of {path} is {digest}, the gateway "
                        f"recorded {sha256}")
    return problems, 0
