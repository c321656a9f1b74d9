"""Check recordings against the hashes their gateway reported: on the session row and in the hash-chained
``gateway:session:ended`` audit event (``gatepass audit verify``, and a session page's live status).

A recording deleted by the retention purge is fine only when the trail proves it: a hash-chained
``retention:recording:purged`` event for that session naming the same file, SHA-256 and size. A file missing
without one is reported as missing (deleted by hand, or tampering), whatever the session row says.

A recording still on the separate gateway that wrote it (it uploads the file after the session's end,
broker.recordings.intake) is not here yet: fine while both the session-end event in the trail (``"uploads":
true``) and the session row say so, for ``UPLOAD_EXPECTED_WITHIN`` after the session's end; after that it is a
problem (a gateway that keeps a recording from the broker), and without the trail's word it is simply missing."""

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

# How long after its session's end a separate gateway's recording may still be on its way (a plant's link down
# for a weekend shift is longer: verify then says which gateway holds which recording, so nobody has to guess).
UPLOAD_EXPECTED_WITHIN = dt.timedelta(hours=24)

SESSION_ENDED = "gateway:session:ended"
RECORDING_PURGED = "retention:recording:purged"


@dataclass(frozen=True)
class RecordingsCheck:
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    # Recordings deleted under retention, each proved by its hash-chained purge event (not problems).
    purged: int = 0
    # Recordings still on the separate gateways that wrote them, within UPLOAD_EXPECTED_WITHIN (not problems), by
    # gateway name.
    on_gateways_by: dict[str, int] = field(default_factory=dict)

    @property
    def on_gateways(self) -> int:
        return sum(self.on_gateways_by.values())

    @property
    def ok(self) -> bool:
        return not self.problems


def status(record: AccessSession, directory: Path) -> str:
    """"intact", "edited", "missing", "purged" (under retention, as its row says; audit verify checks the trail's
    proof), "on_gateway" (a separate gateway has yet to upload it) or "none" (no recording reported) for one
    session, checked now."""
    if not record.recording_name or not record.recording_sha256:
        return "none"
    try:
        path = resolve(directory, record.recording_name)
    except InvalidInput:
        return "edited"
    if not path.is_file():
        if record.recording_purged_at is not None:
            return "purged"
        return "on_gateway" if record.recording_on_gateway else "missing"
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


def verify_recordings(session: Session, directory: Path, *, now: dt.datetime) -> RecordingsCheck:
    """Check every recording a gateway reported: the file exists, and its size and SHA-256 match both the
    session row and the hash-chained audit event. One problem line per failing session (two when the row was
    changed as well)."""
    audited = _reported_in_audit(session)
    purges = _purged_in_audit(session)
    problems: list[str] = []
    checked = purged = 0
    on_gateways: dict[str, int] = {}
    query = (select(AccessSession).where(AccessSession.recording_sha256.is_not(None))
             .order_by(AccessSession.started_at, AccessSession.id))
    for record in session.scalars(query):
        checked += 1
        found, state = _check(record, audited.pop(record.id, None), directory, purges.get(record.id), now)
        problems.extend(found)
        purged += state == "purged"
        if state == "on_gateway":
            on_gateways[record.gateway.name] = on_gateways.get(record.gateway.name, 0) + 1
    # What is left: the audit trail records a recording, but the row no longer says so (or is gone).
    for session_id, expected in audited.items():
        checked += 1
        cleared = session.get(AccessSession, session_id)
        if cleared is None:
            problems.append(f"recording of session {session_id}: the audit trail records {expected.get('name')}, "
                            "but the session is gone from the database")
        else:
            found, state = _check(cleared, expected, directory, purges.get(session_id), now)
            problems.extend(found)
            purged += state == "purged"
            if state == "on_gateway":
                on_gateways[cleared.gateway.name] = on_gateways.get(cleared.gateway.name, 0) + 1
    return RecordingsCheck(checked=checked, problems=problems, purged=purged, on_gateways_by=on_gateways)


def _check(record: AccessSession, expected: dict[str, Any] | None, directory: Path,
           purge: dict[str, Any] | None, now: dt.datetime) -> tuple[list[str], str]:
    """Problems of one session's recording, and where it is: "purged" under retention (proved by ``purge``, its
    purge event), "on_gateway" (still to be uploaded, in time) or "" (here, or a problem); ``expected`` is what
    its session-end audit event says."""
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
        return [*problems, f"recording of {who}: '{name[:60]}' is not a valid recording name"], ""
    proved = purge is not None and {k: purge.get(k) for k in ("name", "sha256", "bytes")} == \
        {"name": name, "sha256": sha256, "bytes": size}
    if purge is not None and not proved:
        problems.append(f"recording of {who}: its retention purge event names another file or hash than the "
                        "gateway reported")
    if not path.is_file():
        if proved:
            return problems, "purged"
        if record.recording_on_gateway and expected is not None and expected.get("uploads") is True:
            return _on_gateway(record, who, problems, now)
        why = " (the session row says it was purged, but no purge event in the audit trail proves it)" \
            if record.recording_purged_at is not None else ""
        return [*problems, f"recording of {who} is MISSING: {path} does not exist{why}"], ""
    digest, actual = file_digest(path)
    if actual != size:
        problems.append(f"recording of {who} was EDITED: {path} has {actual} bytes, the gateway recorded {size}")
    elif digest != sha256:
        problems.append(f"recording of {who} was EDITED: the SHA-256 of {path} is {digest}, the gateway "
                        f"recorded {sha256}")
    return problems, ""


def _on_gateway(record: AccessSession, who: str, problems: list[str], now: dt.datetime) -> tuple[list[str], str]:
    """A recording its separate gateway has yet to upload: fine for UPLOAD_EXPECTED_WITHIN after the end."""
    ended = record.ended_at or record.started_at
    if now - ended <= UPLOAD_EXPECTED_WITHIN:
        return problems, "on_gateway"
    hours = int((now - ended).total_seconds() // 3600)
    return [*problems, f"recording of {who} was NOT RECEIVED: gateway {record.gateway.name} reported it at the "
                       f"session's end {hours} h ago and has not uploaded it"], ""
