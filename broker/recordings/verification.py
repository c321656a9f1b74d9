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

import contextlib
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from broker.errors import InvalidInput
from broker.models import AccessSession, AuditEvent
from broker.recordings.store import file_digest, resolve

# How long after its session's end a separate gateway's recording may still be on its way (a plant's link down
# for a weekend shift is longer: verify then says which gateway holds which recording, so nobody has to guess).
UPLOAD_EXPECTED_WITHIN = dt.timedelta(hours=24)

SESSION_ENDED = "gateway:session:ended"
RECORDING_PURGED = "retention:recording:purged"
RECORDING_RECEIVED = "gateway:recording:received"
# The key under which _reported_in_audit gives a session's end time, as the trail says it.
ENDED = "_ended_at"


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
        return "on_gateway" if record.recording_on_gateway and not _arrived(record) else "missing"
    digest, size = file_digest(path)
    return "intact" if (digest, size) == (record.recording_sha256, record.recording_bytes) else "edited"


def _arrived(record: AccessSession) -> bool:
    """The trail says this session's recording arrived from its gateway (then a missing file is missing, whatever
    the row's flag says)."""
    session = object_session(record)
    return session is not None and session.scalar(
        select(AuditEvent.seq).where(AuditEvent.action == RECORDING_RECEIVED, AuditEvent.subject == record.id)
        .limit(1)) is not None


def _who(record: AccessSession) -> str:
    grant = record.grant
    started = record.started_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"session {record.id} ({grant.identity.username} on {grant.asset.name} at {grant.asset.site.name}, "
            f"started {started})")


def _reported_in_audit(session: Session) -> dict[str, dict[str, Any]]:
    """Recording hashes from the hash-chained session-end events, by session id; each with ``ENDED``, when the
    session ended as the trail says (its ``ended_at`` when reported late, else the event's time), not as the
    session row says (a row is not hash-chained)."""
    reported: dict[str, dict[str, Any]] = {}
    query = (select(AuditEvent.subject, AuditEvent.details, AuditEvent.occurred_at)
             .where(AuditEvent.action == SESSION_ENDED, AuditEvent.details.contains('"recording":{')))
    for subject, details, occurred_at in session.execute(query):
        loaded = json.loads(details)
        recording = loaded.get("recording")
        if subject and isinstance(recording, dict):
            reported[subject] = {**recording, ENDED: _ended(loaded.get("ended_at"), occurred_at)}
    return reported


def _ended(reported: object, occurred_at: dt.datetime) -> dt.datetime:
    with contextlib.suppress(TypeError, ValueError):
        return dt.datetime.fromisoformat(str(reported)).astimezone(dt.UTC) if reported else occurred_at
    return occurred_at


def _received_in_audit(session: Session) -> set[str]:
    """Sessions whose recording the trail says arrived from its separate gateway (gateway:recording:received)."""
    return {subject for subject in session.scalars(select(AuditEvent.subject)
                                                  .where(AuditEvent.action == RECORDING_RECEIVED)) if subject}


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
    received = _received_in_audit(session)
    problems: list[str] = []
    checked = purged = 0
    on_gateways: dict[str, int] = {}
    query = (select(AccessSession).where(AccessSession.recording_sha256.is_not(None))
             .order_by(AccessSession.started_at, AccessSession.id))
    for record in session.scalars(query):
        checked += 1
        found, state = _check(record, audited.pop(record.id, None), directory, purges.get(record.id), now,
                              received=record.id in received)
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
            found, state = _check(cleared, expected, directory, purges.get(session_id), now,
                                  received=session_id in received)
            problems.extend(found)
            purged += state == "purged"
            if state == "on_gateway":
                on_gateways[cleared.gateway.name] = on_gateways.get(cleared.gateway.name, 0) + 1
    return RecordingsCheck(checked=checked, problems=problems, purged=purged, on_gateways_by=on_gateways)


def _check(record: AccessSession, expected: dict[str, Any] | None, directory: Path,
           purge: dict[str, Any] | None, now: dt.datetime, *, received: bool) -> tuple[list[str], str]:
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
        # Still on its way only while the trail says it will come (the end event's "uploads") and has not come
        # (no received event), whatever the row says; the day allowed counts from the trail's end time.
        if record.recording_on_gateway and expected is not None and expected.get("uploads") is True \
                and not received:
            return _on_gateway(record, who, problems, now, ended=expected[ENDED])
        if received:
            return [*problems, f"recording of {who} is MISSING: {path} does not exist, though it arrived from its "
                               "gateway (gateway:recording:received)"], ""
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


def _on_gateway(record: AccessSession, who: str, problems: list[str], now: dt.datetime, *,
                ended: dt.datetime) -> tuple[list[str], str]:
    """A recording its separate gateway has yet to upload: fine for UPLOAD_EXPECTED_WITHIN after the end."""
    if now - ended <= UPLOAD_EXPECTED_WITHIN:
        return problems, "on_gateway"
    hours = int((now - ended).total_seconds() // 3600)
    return [*problems, f"recording of {who} was NOT RECEIVED: gateway {record.gateway.name} reported it at the "
                       f"session's end {hours} h ago and has not uploaded it"], ""
