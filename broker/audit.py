"""The audit trail: append-only, hash-chained events written in the caller's transaction, and their check."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from broker.models import AuditEvent, AuditHead

GENESIS_HASH = "0" * 64


class Action(StrEnum):
    """Stable audit codes, ``source:subject:action``; SIEM rules key on these, so never rename one."""

    SYSTEM_INITIALISED = "system:data:initialised"
    SITE_CREATED = "admin:site:created"
    ASSET_CREATED = "admin:asset:created"
    ASSET_UPDATED = "admin:asset:updated"
    IDENTITY_CREATED = "admin:identity:created"
    GATEWAY_CREATED = "admin:gateway:created"
    IDENTITY_DISABLED = "admin:identity:disabled"
    IDENTITY_ENABLED = "admin:identity:enabled"
    IDENTITY_UPDATED = "admin:identity:updated"
    TOTP_RESET = "admin:identity:totp_reset"
    SITE_UPDATED = "admin:site:updated"
    SITE_LOCKED_DOWN = "containment:site:locked_down"
    SITE_LOCKDOWN_LIFTED = "containment:site:lockdown_lifted"
    CONTAINMENT_REFUSED = "containment:site:refused"

    LOGIN_SUCCEEDED = "auth:login:succeeded"
    LOGIN_FAILED = "auth:login:failed"
    MFA_FAILED = "auth:mfa:failed"
    MFA_ENROLMENT_SHOWN = "auth:mfa:enrolment_shown"
    MFA_ENROLLED = "auth:mfa:enrolled"
    ACCOUNT_LOCKED = "auth:account:locked"
    LOGOUT = "auth:token:revoked"

    REQUEST_CREATED = "access:request:created"
    REQUEST_REFUSED = "access:request:refused"
    REQUEST_APPROVAL = "access:request:approval"
    REQUEST_APPROVED = "access:request:approved"
    REQUEST_DENIED = "access:request:denied"
    REQUEST_CANCELLED = "access:request:cancelled"
    REQUEST_EXPIRED = "access:request:expired"
    DECISION_REFUSED = "access:decision:refused"

    GRANT_CREATED = "access:grant:created"
    GRANT_REVOKED = "access:grant:revoked"
    REVOKE_REFUSED = "access:revoke:refused"
    CERTIFICATE_ISSUED = "ca:certificate:issued"

    EXTENSION_REQUESTED = "access:extension:requested"
    EXTENSION_REFUSED = "access:extension:refused"
    EXTENSION_APPROVAL = "access:extension:approval"
    EXTENSION_APPROVED = "access:extension:approved"
    EXTENSION_DENIED = "access:extension:denied"
    EXTENSION_LAPSED = "access:extension:lapsed"
    EXTENSION_DECISION_REFUSED = "access:extension_decision:refused"
    GRANT_EXTENDED = "access:grant:extended"

    GATEWAY_REGISTERED = "gateway:gateway:registered"
    GATEWAY_AUTHORIZED = "gateway:connection:authorized"
    GATEWAY_REFUSED = "gateway:connection:refused"
    SESSION_STARTED = "gateway:session:started"
    SESSION_ENDED = "gateway:session:ended"
    MODBUS_WRITE_REFUSED = "gateway:modbus:write_refused"
    FILE_TRANSFERRED = "gateway:file:transferred"
    FILE_CHANGED = "gateway:file:changed"
    FILE_REFUSED = "gateway:file:refused"
    RECORDING_FAILED = "gateway:recording:failed"

    CSRF_REFUSED = "web:form:csrf_refused"
    REQUEST_MADE_BY_APPROVER = "access:request:made_by_approver"
    NOTIFICATION_SENT = "notify:delivery:sent"
    NOTIFICATION_FAILED = "notify:delivery:failed"
    NOTIFICATION_GAVE_UP = "notify:delivery:gave_up"


def _canonical(event: AuditEvent) -> bytes:
    body = {
        "seq": event.seq,
        "occurred_at": event.occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "action": event.action,
        "outcome": event.outcome,
        "actor": event.actor,
        "subject": event.subject,
        "site": event.site,
        "details": event.details,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def compute_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(event)).hexdigest()


def record(
    session: Session,
    *,
    now: dt.datetime,
    action: Action,
    outcome: str = "success",
    actor: str | None = None,
    subject: str | None = None,
    site: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction (so it commits or rolls back with
    the change it describes). Never put a secret in ``details``."""
    # Bumping the head first takes the write lock; RETURNING gives the new seq and the *previous* hash.
    row = session.execute(
        update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1)
        .returning(AuditHead.seq, AuditHead.last_hash)
    ).one()
    seq, prev_hash = int(row[0]), str(row[1])
    event = AuditEvent(
        seq=seq,
        # Microsecond precision is what every backend stores; hash what will be read back.
        occurred_at=now.astimezone(dt.UTC),
        action=str(action),
        outcome=outcome,
        actor=actor,
        subject=subject,
        site=site,
        details=json.dumps(details or {}, sort_keys=True, separators=(",", ":"), default=str),
        prev_hash=prev_hash,
        hash="",
    )
    event.hash = compute_hash(prev_hash, event)
    session.add(event)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=event.hash))
    return event


def ensure_head(session: Session) -> None:
    if session.get(AuditHead, 1) is None:
        session.add(AuditHead(id=1, seq=0, last_hash=GENESIS_HASH))
        session.flush()  # the first record() in this transaction updates this row


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events_checked: int
    problem: str | None = None
    first_bad_seq: int | None = None
    head_hash: str | None = None

    @property
    def anchor(self) -> str | None:
        """``SEQ:HASH`` of the last event: record it somewhere the database's owner cannot write (a ticket,
        the SIEM) and pass it to a later ``verify --anchor`` to catch a chain rewritten from an edit onward."""
        return f"{self.events_checked}:{self.head_hash}" if self.ok and self.head_hash else None


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or int(seq) < 1 or len(digest) != 64 or not all(
                c in "0123456789abcdef" for c in digest):
            raise ValueError(f"'{text}' is not an anchor: write SEQ:HASH as `gatepass audit verify` printed it")
        return cls(int(seq), digest)


def verify_chain(session: Session, *, batch: int = 5000, anchors: tuple[Anchor, ...] = ()) -> VerifyResult:
    """Walk the whole chain: sequence without gaps, each prev_hash linking to the previous event, each
    hash matching the event's content, and the head matching the last event (catches a cut tail).

    The chain alone cannot catch someone with database rights who rewrites every hash from an edit onward;
    anchors recorded earlier outside the database can: each must still match its event."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    wanted = {anchor.seq: anchor.hash for anchor in anchors}
    for event in _iter_events(session, batch=batch):
        if event.seq != expected_seq:
            missing = f"event {expected_seq}" if event.seq > expected_seq else "an event"
            return VerifyResult(False, checked, f"{missing} is missing or out of order "
                                f"(found event {event.seq} where {expected_seq} belongs)", expected_seq)
        if event.prev_hash != expected_prev:
            return VerifyResult(False, checked, f"event {event.seq} does not link to the event before it "
                                "(an earlier event was changed, removed or reordered)", event.seq)
        if compute_hash(event.prev_hash, event) != event.hash:
            return VerifyResult(False, checked, f"event {event.seq} ({event.action}) was altered after it "
                                "was written: its content no longer matches its hash", event.seq)
        if event.seq in wanted and not hmac.compare_digest(wanted.pop(event.seq), event.hash):
            return VerifyResult(False, checked, f"event {event.seq} no longer matches the anchor recorded for it: "
                                "the chain was rewritten from that event or earlier", event.seq)
        expected_prev = event.hash
        expected_seq += 1
        checked += 1
    head = session.get(AuditHead, 1)
    if head is None:
        return VerifyResult(False, checked, "the audit chain head is missing", None)
    if head.seq != checked or head.last_hash != expected_prev:
        return VerifyResult(False, checked, f"the chain ends at event {checked} but its head records "
                            f"event {head.seq}: events were removed from the end", checked + 1)
    if wanted:
        lost_seq = min(wanted)
        return VerifyResult(False, checked, f"event {lost_seq} named by an anchor is not in the trail: events "
                            "were removed", lost_seq)
    return VerifyResult(True, checked, head_hash=expected_prev)


def _iter_events(session: Session, *, batch: int) -> Iterator[AuditEvent]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()  # keep memory flat over a million events


def list_events(session: Session, *, since: dt.datetime | None, after_seq: int, limit: int) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.seq > after_seq)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    return list(session.scalars(query.order_by(AuditEvent.seq).limit(limit)))
