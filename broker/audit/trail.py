"""The audit trail: append-only, hash-chained events written in the caller's transaction, and their check."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Connection, String, Table, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from broker.db import GROUP_COMMIT, defer_to_group
from broker.models import AuditEvent, AuditHead

GENESIS_HASH = "0" * 64


class Action(StrEnum):
    """Stable audit codes, ``source:subject:action``; SIEM rules key on these, so never rename one."""

    SYSTEM_INITIALISED = "system:data:initialised"
    SITE_CREATED = "admin:site:created"
    ASSET_CREATED = "admin:asset:created"
    ASSET_UPDATED = "admin:asset:updated"
    # `gatepass admin asset scan --pin`: the host key the machine presents now replaced the pinned one.
    ASSET_HOST_KEY_PINNED = "admin:asset:host_key_pinned"
    # `gatepass admin asset rotate`: a new credential, proven to log in, vaulted; or a rotation that reached the
    # machine and did not complete (the vault kept the old credential); then the old key taken off the machine.
    ASSET_CREDENTIAL_ROTATED = "admin:asset:credential_rotated"
    ASSET_CREDENTIAL_ROTATION_FAILED = "admin:asset:credential_rotation_failed"
    ASSET_OLD_CREDENTIAL_REMOVED = "admin:asset:old_credential_removed"
    IDENTITY_CREATED = "admin:identity:created"
    GATEWAY_CREATED = "admin:gateway:created"
    # A gateway's credential withdrawn for good (decommissioned, lost, suspected): its open sessions ended with it.
    GATEWAY_RETIRED = "admin:gateway:retired"
    IDENTITY_DISABLED = "admin:identity:disabled"
    IDENTITY_ENABLED = "admin:identity:enabled"
    IDENTITY_UPDATED = "admin:identity:updated"
    # Identity lifecycle and governance (issue 11).
    IDENTITY_SUSPENDED = "identity:lifecycle:suspended"
    IDENTITY_RESUMED = "identity:lifecycle:resumed"
    IDENTITY_RETIRED = "identity:lifecycle:retired"
    IDENTITY_EXPIRED = "identity:lifecycle:expired"
    IDENTITY_LIFECYCLE_REFUSED = "identity:lifecycle:refused"
    IDENTITY_OWNER_LOST = "identity:owner:lost"
    IDENTITY_OWNER_CHANGED = "identity:owner:changed"
    IDENTITY_ATTESTED = "identity:attestation:decided"
    IDENTITY_ATTESTATION_OVERDUE = "identity:attestation:overdue"
    ATTESTATION_REFUSED = "identity:attestation:refused"
    WORKLOAD_JOIN_TOKEN_ISSUED = "workload:join_token:issued"  # noqa: S105 (an audit code, not a secret)
    WORKLOAD_JOINED = "workload:instance:joined"
    WORKLOAD_JOIN_REFUSED = "workload:instance:join_refused"
    WORKLOAD_RENEWED = "workload:credential:renewed"
    WORKLOAD_RENEWAL_REFUSED = "workload:credential:renewal_refused"
    WORKLOAD_INSTANCE_LOCKED = "workload:instance:locked"
    GRANT_DELEGATED = "access:grant:delegated"
    DELEGATION_REFUSED = "access:delegation:refused"
    STANDING_POLICY_APPROVED = "access:standing_policy:approved"
    STANDING_POLICY_REVOKED = "access:standing_policy:revoked"
    STANDING_POLICY_USED = "access:standing_policy:used"
    # Respond: containment playbooks (issue 12).
    PLAYBOOK_EDITED = "respond:playbook:edited"
    PLAYBOOK_STARTED = "respond:playbook:started"
    PLAYBOOK_STEP = "respond:playbook:step"
    PLAYBOOK_FINISHED = "respond:playbook:finished"
    PLAYBOOK_REFUSED = "respond:playbook:refused"
    PLAYBOOK_DRILL_PLANNED = "respond:drill:planned"
    EVIDENCE_PRESERVED = "respond:evidence:preserved"
    # Watch (issue 12).
    FLAG_RAISED = "watch:flag:raised"
    FLAG_DECIDED = "watch:flag:decided"
    FLAG_REFUSED = "watch:flag:refused"
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
    # Issue 9: one-time enrolment codes (a password alone never sees or binds a second factor) and sign-in throttles.
    ENROLMENT_CODE_ISSUED = "admin:enrolment_code:issued"
    ENROLMENT_CODE_USED = "auth:enrolment_code:used"
    ENROLMENT_CODE_REFUSED = "auth:enrolment_code:refused"
    LOGIN_THROTTLED = "auth:login:throttled"
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
    # What a Modbus/TCP connection asked (function codes and register ranges), once at its end: the baselines.
    MODBUS_ACTIVITY = "gateway:modbus:activity"
    FILE_TRANSFERRED = "gateway:file:transferred"
    FILE_CHANGED = "gateway:file:changed"
    FILE_REFUSED = "gateway:file:refused"
    RECORDING_FAILED = "gateway:recording:failed"
    # A separate gateway uploaded a recording that matches its reported hash (broker.recordings.intake), or one that
    # was refused: not the session's reported file, another gateway's session, a different size or SHA-256.
    RECORDING_RECEIVED = "gateway:recording:received"
    RECORDING_UPLOAD_REFUSED = "gateway:recording:refused"
    # A reviewer opened a session's recording or transcript (who watched whom is itself worth a trail).
    RECORDING_VIEWED = "review:recording:viewed"
    # Live supervision (issue 13): who watched a session as it ran, who was refused, what they told the vendor.
    LIVE_WATCH_JOINED = "live:watch:joined"
    LIVE_WATCH_LEFT = "live:watch:left"
    LIVE_WATCH_REFUSED = "live:watch:refused"
    LIVE_MESSAGE_SENT = "live:message:sent"
    # Retention and evidence holds (issue 12): a recording kept as evidence, let go, or purged under retention
    # (one event per file, with its SHA-256 and size, so the trail still says what existed).
    RECORDING_HELD = "review:recording:held"
    RECORDING_RELEASED = "review:recording:released"
    RECORDING_HOLD_REFUSED = "review:recording:hold_refused"
    RECORDING_PURGED = "retention:recording:purged"
    # The broker's default retention (GATEPASS_RECORDING_RETENTION_DAYS) differs from the one last in force: a
    # deployment setting, not a command, so the purge writes it down before it deletes anything under it.
    RETENTION_DEFAULT_CHANGED = "retention:default:changed"

    CSRF_REFUSED = "web:form:csrf_refused"
    # Refusals that changed nothing, written by broker.refusals in a transaction of their own (SR 2.8, SR 6.2).
    API_REFUSED = "api:request:refused"
    WEB_REFUSED = "web:page:refused"
    GATEWAY_AUTH_REFUSED = "gateway:auth:refused"
    REFUSALS_SUMMARISED = "audit:refusals:summarised"
    REQUEST_MADE_BY_APPROVER = "access:request:made_by_approver"
    NOTIFICATION_SENT = "notify:delivery:sent"
    NOTIFICATION_FAILED = "notify:delivery:failed"
    NOTIFICATION_GAVE_UP = "notify:delivery:gave_up"
    # A company sign-in (OpenID Connect) changed the person's roles to what their directory groups give now.
    OIDC_ROLES_CHANGED = "auth:oidc:roles_changed"


# Canonical form of an event, the input of its hash. The definition is the JSON text of
#   json.dumps({"seq", "occurred_at", "action", "outcome", "actor", "subject", "site", "details"},
#              sort_keys=True, separators=(",", ":"))
# with occurred_at as UTC ISO 8601 with microseconds; every stored chain is hashed over exactly that, so it must
# never change. Writing the keys in their sorted order by hand, with the encoder json.dumps itself uses for
# strings (ASCII-only escaping, its default), gives the same text about three times faster than building a dict
# and a JSONEncoder per event; `audit verify` runs this a million times. Any value json.dumps would render other
# than as a string or null (an integer put into a text column of a tampered SQLite file, say) takes the
# reference path, so the text stays the definition's in every case.
_json_string = json.encoder.encode_basestring_ascii


def _canonical_reference(*, seq: int, when: str, action: str, outcome: str, actor: str | None,
                         subject: str | None, site: str | None, details: str) -> str:
    body = {"seq": seq, "occurred_at": when, "action": action, "outcome": outcome, "actor": actor,
            "subject": subject, "site": site, "details": details}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _canonical_text(seq: int, when: str, action: str, outcome: str, actor: str | None, subject: str | None,
                    site: str | None, details: str) -> str:
    if type(seq) is int:  # not bool, not float: json.dumps writes those otherwise
        try:
            return "".join((
                '{"action":', _json_string(action),
                ',"actor":', "null" if actor is None else _json_string(actor),
                ',"details":', _json_string(details),
                ',"occurred_at":', _json_string(when),
                ',"outcome":', _json_string(outcome),
                ',"seq":', str(seq),
                ',"site":', "null" if site is None else _json_string(site),
                ',"subject":', "null" if subject is None else _json_string(subject),
                "}",
            ))
        except TypeError:  # a value that is not a string: only the reference path renders it right
            pass
    return _canonical_reference(seq=seq, when=when, action=action, outcome=outcome, actor=actor, subject=subject,
                                site=site, details=details)


def _utc_iso(occurred_at: dt.datetime) -> str:
    return occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _chain_hash(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256(b"".join((prev_hash.encode(), b"\n", canonical.encode()))).hexdigest()


def _canonical(event: AuditEvent) -> bytes:
    return _canonical_text(event.seq, _utc_iso(event.occurred_at), event.action, event.outcome, event.actor,
                           event.subject, event.site, event.details).encode()


def compute_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(event)).hexdigest()


def event_hash(prev_hash: str, *, seq: int, occurred_at: dt.datetime, action: str, outcome: str, actor: str | None,
               subject: str | None, site: str | None, details: str) -> str:
    """The chain hash of an event given as plain values (``details`` as stored: canonical JSON text); the
    same as ``compute_hash`` on an ``AuditEvent`` holding them."""
    return _chain_hash(prev_hash, _canonical_text(seq, _utc_iso(occurred_at), action, outcome, actor, subject, site,
                                                  details))


_events = cast(Table, AuditEvent.__table__)
_head = cast(Table, AuditHead.__table__)
_READ_HEAD = select(_head.c.seq, _head.c.last_hash).where(_head.c.id == 1)
_PARAMETER_MARKERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # sqlite3; psycopg
_EVENT_FIELDS = ("seq", "occurred_at", "action", "outcome", "actor", "subject", "site", "details", "prev_hash", "hash")


@dataclass(frozen=True)
class _Appender:
    """The statements of an append as driver SQL, for one dialect.

    Each audited API call appends an event in its own transaction, so these run once per call: through the
    driver's cursor they cost ~5 us each here, through SQLAlchemy's execution layer ~30 us (with ORM-enabled
    statements, as before, ~150 us). Values are bound the way SQLAlchemy binds them (the column types' own bind
    processing) and driver errors are raised as SQLAlchemy's, so callers see what they saw before."""

    dialect: Dialect
    bump_head: str
    reserve_seqs: str
    insert_event: str
    set_head_hash: str
    bind_occurred_at: Callable[[Any], Any] | None
    driver_error: type[Exception]
    data_error: type[Exception]
    # What the database refuses in a row that SQLite would take: texts longer than their column, NUL characters.
    checks_rows: bool

    def execute(self, cursor: Any, statement: str, parameters: tuple[Any, ...] = ()) -> None:
        try:
            cursor.execute(statement, parameters)
        except self.driver_error as error:
            raise DBAPIError.instance(statement, parameters, error, self.driver_error,
                                      dialect=self.dialect) from error

    def execute_many(self, cursor: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
        try:
            cursor.executemany(statement, rows)
        except self.driver_error as error:
            raise DBAPIError.instance(statement, rows, error, self.driver_error, dialect=self.dialect) from error


@functools.lru_cache(maxsize=8)
def _appender(dialect: Dialect) -> _Appender:
    marker = _PARAMETER_MARKERS.get(dialect.paramstyle)
    if marker is None:
        raise RuntimeError(f"the audit trail does not support the {dialect.name} driver's parameter style")
    return _Appender(
        dialect=dialect,
        # Bumping the head first takes the write lock; RETURNING gives the new seq and the *previous* hash.
        bump_head="UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, last_hash",
        # The same for a group's N events at once: the last of their seqs, and the hash they chain from.
        reserve_seqs=f"UPDATE audit_head SET seq = seq + {marker} WHERE id = 1 RETURNING seq, last_hash",  # noqa: S608
        # Only constants and the driver's parameter marker go into these texts; values are bound.
        insert_event=f"INSERT INTO audit_events ({', '.join(_EVENT_FIELDS)}) "  # noqa: S608
                     f"VALUES ({', '.join([marker] * len(_EVENT_FIELDS))})",
        set_head_hash=f"UPDATE audit_head SET last_hash = {marker} WHERE id = 1",  # noqa: S608
        bind_occurred_at=_events.c.occurred_at.type.dialect_impl(dialect).bind_processor(dialect),
        driver_error=dialect.loaded_dbapi.Error,
        data_error=dialect.loaded_dbapi.DataError,
        checks_rows=dialect.name != "sqlite",
    )


# The text columns with a length: PostgreSQL refuses a longer value (SQLite stores it).
_LIMITED = tuple((name, cast(int, cast(String, _events.c[name].type).length))
                 for name in ("action", "outcome", "actor", "subject", "site"))


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
) -> None:
    """Append one event to the chain inside the caller's transaction (so it commits or rolls back with
    the change it describes). Never put a secret in ``details``.

    The row is written at once, except in a unit of a group commit (``broker.db.GroupCommit``): there it is
    written with the rest of its group just before the group's COMMIT, in the same transaction as the unit's
    changes (``broker.db.defer_to_group``), so the chain's head is taken once per group instead of once per
    event, and a value the database would refuse is refused here, so that the unit fails alone. (Nothing is
    returned: in a group the event's seq and hash are not known until its group is written.)"""
    if session.autoflush:
        # What an ORM statement here would do first (and record() used them): callers read relationships of
        # objects they added just before, which the flush loads.
        session.flush()
    # Microsecond precision is what every backend stores; hash what will be read back.
    occurred_at = now.astimezone(dt.UTC)
    details_text = json.dumps(details or {}, sort_keys=True, separators=(",", ":"), default=str)
    values = (str(action), outcome, actor, subject, site)
    appender = _appender(session.get_bind().dialect)
    bound_at = appender.bind_occurred_at(occurred_at) if appender.bind_occurred_at else occurred_at
    if GROUP_COMMIT in session.info:
        if appender.checks_rows:
            _refuse_what_the_database_would(appender, values)
        defer_to_group(session, _append_group, (_utc_iso(occurred_at), bound_at, *values, details_text))
        return
    connection = session.connection()  # the session's transaction (begun here if it was not yet)
    cursor = connection.connection.cursor()
    try:
        appender.execute(cursor, appender.bump_head)
        row = cursor.fetchone()
        if row is None:
            raise RuntimeError("the audit chain head is missing: the database was not set up by `gatepass init`")
        seq, prev_hash = int(row[0]), str(row[1])
        digest = _chain_hash(prev_hash, _canonical_text(seq, _utc_iso(occurred_at), *values, details_text))
        appender.execute(cursor, appender.insert_event, (seq, bound_at, *values, details_text, prev_hash, digest))
        appender.execute(cursor, appender.set_head_hash, (digest,))
    finally:
        cursor.close()


def _refuse_what_the_database_would(appender: _Appender, values: tuple[str | None, ...]) -> None:
    """Raise here, in the unit, what inserting the row would raise: written with its group, the row's refusal
    would fail every unit of the group instead of this one. The same error class (``sqlalchemy.exc.DataError``)
    and message as PostgreSQL's and psycopg's own. (The details are JSON with non-ASCII escaped: no NUL.)"""
    for (column, limit), value in zip(_LIMITED, values, strict=True):
        problem = None
        if isinstance(value, str):
            if len(value) > limit:  # PostgreSQL counts characters, as len() does (UTF-8 database)
                problem = f"value too long for type character varying({limit}) (audit_events.{column})"
            elif "\x00" in value:
                problem = f"PostgreSQL text fields cannot contain NUL (0x00) bytes (audit_events.{column})"
        if problem is not None:
            raise DBAPIError.instance(appender.insert_event, values, appender.data_error(problem),
                                      appender.driver_error, dialect=appender.dialect)


def _append_group(connection: Connection, pending: list[tuple[Any, ...]]) -> None:
    """A group's events (``record``'s tuples: the time as hashed, then the row's values from occurred_at to
    details), in the order their units were released, on the group's connection just before its COMMIT: the
    head moved on by all of them at once (which takes the write lock, as ``record``'s bump does), the events
    chained from it in memory and inserted with one ``executemany``, the head's hash set once."""
    appender = _appender(connection.dialect)
    cursor = connection.connection.cursor()
    try:
        appender.execute(cursor, appender.reserve_seqs, (len(pending),))
        head = cursor.fetchone()
        if head is None:
            raise RuntimeError("the audit chain head is missing: the database was not set up by `gatepass init`")
        seq, prev_hash = int(head[0]) - len(pending), str(head[1])
        rows = []
        for when, bound_at, action, outcome, actor, subject, site, details in pending:
            seq += 1
            digest = _chain_hash(prev_hash, _canonical_text(seq, when, action, outcome, actor, subject, site, details))
            rows.append((seq, bound_at, action, outcome, actor, subject, site, details, prev_hash, digest))
            prev_hash = digest
        appender.execute_many(cursor, appender.insert_event, rows)
        appender.execute(cursor, appender.set_head_hash, (prev_hash,))
    finally:
        cursor.close()


def lock_head(session: Session) -> None:
    """Take the chain head's row lock in the caller's transaction now, as the first ``record()`` outside a group
    would: for a writer that must take it before other rows, so two writers never wait on each other in a cycle
    (broker.recordings.retention.mark_purged). Released at commit or rollback."""
    session.execute(select(AuditHead.id).where(AuditHead.id == 1).with_for_update())


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
    anchors recorded earlier outside the database can: each must still match its event.

    `gatepass audit verify` must get through a million events in seconds, so this loop avoids per-row
    overhead: rows come from the driver as plain tuples (ORM objects cost most of the time), ``batch`` at a
    time by key, and each event's time is turned into its canonical text by ``_occurred_at_reader``'s function."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    wanted = {anchor.seq: anchor.hash for anchor in anchors}
    sha256 = hashlib.sha256
    canonical = _canonical_text
    occurred_at_text = _occurred_at_reader(session)
    for seq, occurred_at, action, outcome, actor, subject, site, details, prev_hash, digest in _iter_rows(
            session, batch=batch):
        if seq != expected_seq:
            missing = f"event {expected_seq}" if seq > expected_seq else "an event"
            return VerifyResult(False, expected_seq - 1, f"{missing} is missing or out of order "
                                f"(found event {seq} where {expected_seq} belongs)", expected_seq)
        if prev_hash != expected_prev:
            return VerifyResult(False, expected_seq - 1, f"event {seq} does not link to the event before it "
                                "(an earlier event was changed, removed or reordered)", seq)
        text = canonical(seq, occurred_at_text(occurred_at), action, outcome, actor, subject, site, details)
        # prev_hash + "\n" + canonical, UTF-8: the same bytes as compute_hash's (UTF-8 encodes piecewise).
        if sha256(f"{prev_hash}\n{text}".encode()).hexdigest() != digest:
            return VerifyResult(False, expected_seq - 1, f"event {seq} ({action}) was altered after it "
                                "was written: its content no longer matches its hash", seq)
        if seq in wanted and not hmac.compare_digest(wanted.pop(seq), digest):
            return VerifyResult(False, expected_seq - 1, f"event {seq} no longer matches the anchor recorded for "
                                "it: the chain was rewritten from that event or earlier", seq)
        expected_prev = digest
        expected_seq += 1
    checked = expected_seq - 1
    # Read afresh, not through the session's identity map: an AuditHead loaded earlier in this session would
    # not show appends made since with Core statements.
    head = session.connection().execute(_READ_HEAD).first()
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


# How SQLite stores a UTCDateTime (SQLAlchemy's default SQLite DATETIME format, always with microseconds).
_SQLITE_UTC_TEXT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", re.ASCII).fullmatch


def _occurred_at_reader(session: Session) -> Callable[[Any], str]:
    """A function from a stored ``occurred_at`` as the driver returns it to ``_utc_iso`` of the value the ORM
    would load: the column type's own result processing (UTCDateTime on this dialect), then ``_utc_iso``.

    SQLite returns text; for text in the exact stored form that processing is ``datetime.fromisoformat`` (naive)
    then UTC, whose ISO form is the same digits with "T" and "+00:00" — four times cheaper to write as such,
    once ``fromisoformat`` has accepted the digits as a real date and time. Anything else (PostgreSQL's
    datetimes, text in another form) goes the full way, so tampered values are read exactly as the ORM reads
    them. The shortcut is checked against the full way before use and dropped if they ever disagree."""
    dialect = session.connection().dialect
    process = _events.c.occurred_at.type.dialect_impl(dialect).result_processor(dialect, None)
    from_iso = dt.datetime.fromisoformat

    def full_way(stored: Any) -> str:
        value: Any = process(stored) if process is not None else stored
        return _utc_iso(value)

    def shortcut(stored: Any) -> str:
        if type(stored) is str and _SQLITE_UTC_TEXT(stored):
            from_iso(stored)  # raises for a date or time that does not exist, as the full way does
            return f"{stored[:10]}T{stored[11:]}+00:00"
        return full_way(stored)

    samples = ("2026-11-27 06:00:01.371000", "0001-01-01 00:00:00.000000", "9999-12-31 23:59:59.999999")
    if dialect.name == "sqlite" and all(shortcut(text) == full_way(text) for text in samples):
        return shortcut
    return full_way


_EVENT_PAGE_SQL = ("SELECT seq, occurred_at, action, outcome, actor, subject, site, details, prev_hash, hash "
                   "FROM audit_events WHERE seq > {marker} ORDER BY seq LIMIT {batch}")


def _iter_rows(session: Session, *, batch: int) -> Iterator[tuple[Any, ...]]:
    """Every event as a raw driver row (columns as in ``_EVENT_PAGE_SQL``) in seq order, read by key in pages of
    ``batch`` in the session's transaction: bounded memory, no long-lived server cursor, on every backend. The
    driver's own cursor, not SQLAlchemy's result rows: a third of the read time over a million rows."""
    connection = session.connection()
    marker = _PARAMETER_MARKERS.get(connection.dialect.paramstyle)
    if marker is None:
        raise RuntimeError(f"audit verify does not support the {connection.dialect.name} driver's parameter style")
    query = _EVENT_PAGE_SQL.format(marker=marker, batch=int(batch))
    cursor = connection.connection.cursor()
    try:
        last = 0
        while True:
            cursor.execute(query, (last,))
            rows = cursor.fetchall()
            if not rows:
                return
            yield from rows
            last = rows[-1][0]
    finally:
        cursor.close()


def list_events(session: Session, *, since: dt.datetime | None, after_seq: int, limit: int) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.seq > after_seq)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    return list(session.scalars(query.order_by(AuditEvent.seq).limit(limit)))
