"""Service and AI identities on their machines: a single-use join token, a key made on the machine and proved by
signature, short-lived credentials renewed at half-life with the same key, and a second copy caught and locked.

The protocol (docs/API.md, "Workloads"), with Ed25519 signatures (RFC 8032) over UTF-8 text:

    join   POST /workloads/join   {token, public_key, signature}
           signature over  "gatepass-workload-join-v1\\n<sha256(token) hex>\\n<ssh-ed25519 AAAA…>"
    renew  POST /workloads/renew  Authorization: Bearer <current credential>, {counter, timestamp, signature}
           signature over  "gatepass-workload-renew-v1\\n<instance id>\\n<counter>\\n<unix time>\\n<sha256(credential)>"

The join token is single use, so the join needs no server challenge: the signature proves that whoever joins
holds the private key of the public key it registers. A renewal must carry the instance's next counter
(renewals + 1) and the credential it replaces; a second copy of the machine's state (key, credential, counter)
shows itself the moment both copies renew, because one of them presents a counter or a credential the broker
has already moved past. That instance is then locked (IEC 62443-3-3 SR 1.5: a compromised authenticator is
revoked); the identity's other instances are left alone.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import Conflict, Forbidden, InvalidInput, NotAuthenticated, NotFound, audited
from broker.identity.authentication import token_digest
from broker.identity.identities import get_identity, why_unusable
from broker.identity.usage import touch
from broker.ids import new_id
from broker.inventory.gateway_events import EventPublisher, announce
from broker.models import AccessRequest, ApiToken, Grant, Identity, JoinToken, Site, WorkloadInstance
from broker.vocabulary import GrantChangeStatus, IdentityKind, IdentityStatus, InstanceStatus

JOIN_TOKEN_TTL = dt.timedelta(hours=1)
DEFAULT_CREDENTIAL_LIFETIME = dt.timedelta(seconds=3600)
# How far the renewing machine's clock may be from the broker's: NTP keeps plant hosts within seconds; minutes of
# slack spare a machine with a drifting clock, and the counter (not the time) is what stops a replay.
RENEWAL_CLOCK_SKEW = dt.timedelta(minutes=5)
MAX_REASON = 1000
JOIN_TOKEN_PREFIX = "gpj_"  # noqa: S105 (a prefix, not a secret)
CREDENTIAL_PREFIX = "gpt_"  # the prefix of every user API token: a workload's credential is one of them
_JOIN_CONTEXT = "gatepass-workload-join-v1"
_RENEW_CONTEXT = "gatepass-workload-renew-v1"
_KEY_TYPE = "ssh-ed25519"


# --- the signed messages (cli/client_join.py builds the same bytes; a test holds the two together) -------------


def join_message(*, token_hash: str, public_key: str) -> bytes:
    return "\n".join((_JOIN_CONTEXT, token_hash, public_key)).encode()


def renewal_message(*, instance_id: str, counter: int, timestamp: int, token_hash: str) -> bytes:
    return "\n".join((_RENEW_CONTEXT, instance_id, str(counter), str(timestamp), token_hash)).encode()


def fingerprint(public_key: str) -> str:
    """SHA-256 (hex) of the key's wire-format blob: what `ssh-keygen -l -E sha256` hashes."""
    return hashlib.sha256(base64.b64decode(public_key.split()[1])).hexdigest()


def _parse_public_key(text: str) -> tuple[str, Ed25519PublicKey]:
    """One ``ssh-ed25519 AAAA… [comment]`` line, as the canonical ``type base64`` text and the key."""
    parts = (text or "").strip().split()
    if "\n" in (text or "").strip() or len(parts) < 2 or parts[0] != _KEY_TYPE:
        raise InvalidInput("the workload's public key must be one line like \"ssh-ed25519 AAAA…\" (an Ed25519 key "
                           "made on the machine by `gatepass join`; never send a private key)")
    line = f"{parts[0]} {parts[1]}"
    try:
        key = serialization.load_ssh_public_key(line.encode())
    except (ValueError, UnsupportedAlgorithm, binascii.Error):
        raise InvalidInput("the workload's public key is not an OpenSSH Ed25519 public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput("the workload's public key must be an Ed25519 key")
    return line, key


def _signature_bytes(signature: str) -> bytes | None:
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 64 else None  # RFC 8032 §5.1.6: an Ed25519 signature is 64 bytes


def _signed_by(key: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    raw = _signature_bytes(signature)
    if raw is None:
        return False
    try:
        key.verify(raw, message)
    except InvalidSignature:
        return False
    return True


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("give a reason (--reason): the audit trail says why an instance was locked")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"the reason is too long ({len(reason)} characters, at most {MAX_REASON})")
    return reason


# --- what the functions hand back ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedJoinToken:
    """Shown once, to the admin who made it; the broker keeps only its SHA-256."""

    username: str
    token: str
    expires_at: dt.datetime

    def as_dict(self) -> dict[str, str]:
        return {"username": self.username, "token": self.token, "expires_at": self.expires_at.isoformat()}


@dataclass(frozen=True)
class Credential:
    """A workload's short-lived API credential (a bearer token: only its SHA-256 is kept)."""

    token: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    identity: Identity
    instance: WorkloadInstance


def instance_record(instance: WorkloadInstance) -> dict[str, Any]:
    """An instance as the API and `gatepass admin identity instances` show it."""
    def when(moment: dt.datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {"id": instance.id, "identity": instance.identity.username, "fingerprint": instance.fingerprint,
            "public_key": instance.public_key, "status": instance.status, "renewals": instance.renewals,
            "created_at": when(instance.created_at), "last_renewed_at": when(instance.last_renewed_at),
            "locked_at": when(instance.locked_at), "locked_reason": instance.locked_reason}


# --- join tokens -----------------------------------------------------------------------------------------------


def _check_may_join(identity: Identity, now: dt.datetime) -> str | None:
    if identity.kind == IdentityKind.HUMAN:
        return (f"'{identity.username}' is a person: people sign in with a password and a one-time code, "
                "only service and AI identities join with a key")
    return why_unusable(identity, now)


def issue_join_token(session: Session, *, now: dt.datetime, actor: str, username: str,
                     ttl: dt.timedelta = JOIN_TOKEN_TTL) -> IssuedJoinToken:
    """A single-use token (valid for ``ttl``) with which one machine of a service or AI identity joins."""
    identity = get_identity(session, username)
    problem = _check_may_join(identity, now)
    if problem is None and identity.status != IdentityStatus.ACTIVE:
        problem = f"the account '{username}' is {identity.status}"
    if problem:
        raise Conflict(f"no join token for '{username}': {problem}")
    token = JOIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = now + ttl
    session.add(JoinToken(identity_id=identity.id, token_hash=token_digest(token), created_by=actor, created_at=now,
                          expires_at=expires_at))
    trail.record(session, now=now, action=Action.WORKLOAD_JOIN_TOKEN_ISSUED, actor=actor, subject=username,
                 details={"expires_at": expires_at.isoformat(), "kind": identity.kind})
    return IssuedJoinToken(username, token, expires_at)


# --- join ------------------------------------------------------------------------------------------------------


def join(session: Session, *, now: dt.datetime, token: str, public_key: str, signature: str,
         source: str | None = None) -> Credential:
    """Register the machine's public key as a new instance of the token's identity, once the signature shows the
    joiner holds its private key; use the token up and issue the first short-lived credential."""
    token_hash = token_digest(token.strip())
    # Locked: two joins with one token at the same moment must not both get through.
    row = session.scalar(select(JoinToken).where(JoinToken.token_hash == token_hash).with_for_update())
    if row is None:
        # Nobody to name, nothing to lock: the API's refusal recorder writes it, capped per source.
        raise Forbidden("join refused: the broker never issued this join token (was it copied whole?); ask an admin "
                        "for one with `gatepass admin identity join-token NAME`")
    identity = row.identity
    where = {"source": source} if source else {}
    if row.used_at is not None:
        raise _refuse_join(session, now=now, identity=identity, where=where, why=(
            f"this join token was already used, at {row.used_at:%Y-%m-%d %H:%M:%S} UTC; a join token joins one "
            "machine once (if that was not you, tell the identity's owner): ask for a new one"))
    if row.expires_at <= now:
        raise _refuse_join(session, now=now, identity=identity, where=where, why=(
            f"this join token expired at {row.expires_at:%Y-%m-%d %H:%M} UTC: ask for a new one"))
    problem = _check_may_join(identity, now)
    if problem:
        raise _refuse_join(session, now=now, identity=identity, where=where, why=problem)
    line, key = _parse_public_key(public_key)
    if not _signed_by(key, signature, join_message(token_hash=token_hash, public_key=line)):
        raise _refuse_join(session, now=now, identity=identity, where=where, why=(
            "the signature was not made with the private key of the public key sent: the machine proves it "
            "holds the key it registers"))
    key_print = fingerprint(line)
    taken = session.scalar(select(WorkloadInstance.id).where(WorkloadInstance.fingerprint == key_print))
    if taken is not None:
        raise Conflict(f"join refused: this key already belongs to instance {taken}; every machine joins with a key "
                       "of its own (run `gatepass join` in a fresh state directory)")

    row.used_at = now
    instance = WorkloadInstance(id=new_id("wki"), identity_id=identity.id, public_key=line, fingerprint=key_print,
                                status=InstanceStatus.ACTIVE, renewals=0, created_at=now)
    session.add(instance)
    session.flush()  # the credential's row refers to the instance
    identity.credential_changed_at = now
    touch(identity, now)
    credential = _issue(session, now=now, identity=identity, instance=instance)
    trail.record(session, now=now, action=Action.WORKLOAD_JOINED, actor=identity.username, subject=instance.id,
                 details={"identity": identity.username, "fingerprint": key_print, "join_token_by": row.created_by,
                          "expires_at": credential.expires_at.isoformat(), **where})
    return credential


def _refuse_join(session: Session, *, now: dt.datetime, identity: Identity, where: dict[str, str],
                 why: str) -> Forbidden:
    trail.record(session, now=now, action=Action.WORKLOAD_JOIN_REFUSED, outcome="refused", actor=identity.username,
                 subject=identity.username, details={"reason": why, **where})
    return audited(Forbidden(f"join refused: {why}"))


def credential_lifetime(session: Session, identity: Identity) -> dt.timedelta:
    """The shortest ``workload_credential_seconds`` of the sites the identity may act at (an hour when there are
    none). A role without a site scope reaches every site, so every site's limit applies to it."""
    query = select(Site.workload_credential_seconds)
    scoped = {a.site_id for a in identity.roles}
    if None not in scoped:
        query = query.where(Site.id.in_(scoped))
    seconds = session.scalars(query).all()
    return dt.timedelta(seconds=min(seconds)) if seconds else DEFAULT_CREDENTIAL_LIFETIME


def _issue(session: Session, *, now: dt.datetime, identity: Identity, instance: WorkloadInstance) -> Credential:
    expires_at = now + credential_lifetime(session, identity)
    if identity.expires_at is not None:
        expires_at = min(expires_at, identity.expires_at)  # never outlives the identity itself
    token = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(token_hash=token_digest(token), identity_id=identity.id, instance_id=instance.id,
                         created_at=now, expires_at=expires_at))
    return Credential(token=token, issued_at=now, expires_at=expires_at, identity=identity, instance=instance)


# --- renewal ---------------------------------------------------------------------------------------------------


def renew(session: Session, *, now: dt.datetime, events: EventPublisher, token: str, counter: int, timestamp: int,
          signature: str, public_key: str | None = None, source: str | None = None) -> Credential:
    """Replace the instance's current credential with a new one, once the instance's key has signed its next
    counter. A stale counter, a credential already replaced, or a signature from another key is a second copy
    of the machine's credential: the instance is locked. ``public_key`` (optional) is what the caller says it
    signed with; it is only recorded."""
    token_hash = token_digest(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))
    if row is None:
        raise NotAuthenticated("renewal refused: the broker does not know this credential: join again with a new "
                               "join token")
    if row.instance_id is None:
        raise Forbidden("renewal refused: only a service or AI identity's key-bound credential is renewed; people "
                        "sign in again with `gatepass login`")
    # Locked first, so that two renewals of one instance (two copies racing) are decided one after the other.
    instance = session.scalars(select(WorkloadInstance).where(WorkloadInstance.id == row.instance_id)
                               .with_for_update().execution_options(populate_existing=True)).one()
    identity = row.identity
    where = {"source": source} if source else {}
    unusable = why_unusable(identity, now)
    if unusable:
        raise _refuse_renewal(session, now=now, instance=instance, where=where, why=unusable)
    if instance.status == InstanceStatus.LOCKED:
        locked_at = f"{instance.locked_at:%Y-%m-%d %H:%M} UTC" if instance.locked_at else "earlier"
        raise _refuse_renewal(session, now=now, instance=instance, where=where, why=(
            f"instance {instance.id} was locked at {locked_at} ({instance.locked_reason}); ask the owner of "
            f"'{identity.username}' for a new join token and join again"))

    seen = {"presented_counter": counter, "renewals": instance.renewals, **where}
    if public_key:
        seen["presented_fingerprint"] = _presented_fingerprint(public_key)
    _, key = _parse_public_key(instance.public_key)
    message = renewal_message(instance_id=instance.id, counter=counter, timestamp=timestamp, token_hash=token_hash)
    if not _signed_by(key, signature, message):
        raise _lock_detected(session, now=now, events=events, instance=instance, cause="wrong_key", seen=seen, why=(
            "its credential was presented with a signature that its key did not make (a copy of the credential "
            "on another machine)"))
    if counter <= instance.renewals:
        raise _lock_detected(session, now=now, events=events, instance=instance, cause="stale_counter", seen=seen,
                             why=(f"a renewal came with counter {counter}, but the instance was already renewed "
                                  f"{instance.renewals} time(s) (a second copy of its credential, or a replay)"))
    if counter != instance.renewals + 1:
        raise _refuse_renewal(session, now=now, instance=instance, where=where, why=(
            f"the renewal counter {counter} is not the next one ({instance.renewals + 1})"))
    current = session.scalars(select(ApiToken).where(ApiToken.instance_id == instance.id)
                              .order_by(ApiToken.created_at.desc(), ApiToken.id.desc()).limit(1)).one()
    if current.id != row.id:
        raise _lock_detected(session, now=now, events=events, instance=instance, cause="replaced_credential",
                             seen=seen, why=("a credential that an earlier renewal had already replaced was "
                                             "presented again (a second copy of the credential)"))
    if row.revoked_at is not None:
        raise _refuse_renewal(session, now=now, instance=instance, where=where, why=(
            "this credential was revoked (signed out, or the identity was suspended since): join again with a new "
            "join token"))
    if row.expires_at <= now:
        raise _refuse_renewal(session, now=now, instance=instance, where=where, why=(
            f"this credential expired at {row.expires_at:%Y-%m-%d %H:%M} UTC; it is renewed at half its life, "
            "before it ends: join again with a new join token"))
    skew = abs(now.timestamp() - timestamp)
    if skew > RENEWAL_CLOCK_SKEW.total_seconds():
        raise _refuse_renewal(session, now=now, instance=instance, where=where, why=(
            f"the renewal is dated {int(skew)} s away from the broker's clock (at most "
            f"{int(RENEWAL_CLOCK_SKEW.total_seconds())} s): set this machine's clock (NTP) and renew again"))

    row.revoked_at = now
    instance.renewals = counter
    instance.last_renewed_at = now
    touch(identity, now)
    credential = _issue(session, now=now, identity=identity, instance=instance)
    trail.record(session, now=now, action=Action.WORKLOAD_RENEWED, actor=identity.username, subject=instance.id,
                 details={"identity": identity.username, "renewals": counter,
                          "expires_at": credential.expires_at.isoformat(), **where})
    return credential


def _presented_fingerprint(public_key: str) -> str:
    try:
        return fingerprint(_parse_public_key(public_key)[0])
    except InvalidInput:
        return "not an Ed25519 public key"


def _refuse_renewal(session: Session, *, now: dt.datetime, instance: WorkloadInstance, where: dict[str, Any],
                    why: str) -> Forbidden:
    trail.record(session, now=now, action=Action.WORKLOAD_RENEWAL_REFUSED, outcome="refused",
                 actor=instance.identity.username, subject=instance.id, details={"reason": why, **where})
    return audited(Forbidden(f"renewal refused: {why}"))


def _lock_detected(session: Session, *, now: dt.datetime, events: EventPublisher, instance: WorkloadInstance,
                   cause: str, seen: dict[str, Any], why: str) -> Forbidden:
    """The alert: a second copy of this instance's credential. Locked with everything it holds; refused."""
    _lock(session, now=now, events=events, instance=instance, actor="system", outcome="refused", cause=cause,
          reason=f"second copy detected: {why}", details=seen)
    return audited(Forbidden(
        f"renewal refused: instance {instance.id} of '{instance.identity.username}' is now locked: {why}. Its "
        "credentials are revoked; the owner joins the machine again with a new join token after finding out "
        "where the copy came from"))


# --- locking by hand, listing ----------------------------------------------------------------------------------


def lock_instance(session: Session, *, now: dt.datetime, events: EventPublisher, actor: str, instance_id: str,
                  reason: str | None) -> WorkloadInstance:
    """Lock one instance (a machine retired, a key suspected): its credentials end, its other siblings go on."""
    why = _reason(reason)
    instance = session.scalars(select(WorkloadInstance).where(WorkloadInstance.id == instance_id)
                               .with_for_update().execution_options(populate_existing=True)).one_or_none()
    if instance is None:
        raise NotFound(f"there is no workload instance {instance_id}")
    if instance.status == InstanceStatus.LOCKED:
        raise Conflict(f"instance {instance_id} is already locked ({instance.locked_reason})")
    _lock(session, now=now, events=events, instance=instance, actor=actor, outcome="success", cause="by_hand",
          reason=why, details={})
    return instance


def _lock(session: Session, *, now: dt.datetime, events: EventPublisher, instance: WorkloadInstance, actor: str,
          outcome: str, cause: str, reason: str, details: dict[str, Any]) -> None:
    """Lock the instance, revoke its credentials and the grants whose certificates were issued for its key (a
    copied state directory carries them too); the identity's other instances keep theirs."""
    instance.status, instance.locked_at, instance.locked_reason = InstanceStatus.LOCKED, now, reason
    tokens = session.scalars(select(ApiToken).where(ApiToken.instance_id == instance.id,
                                                    ApiToken.revoked_at.is_(None))).all()
    for token in tokens:
        token.revoked_at = now
    grants = _grants_for_key(session, now=now, instance=instance)
    why = f"instance {instance.id} of '{instance.identity.username}' was locked: {reason}"
    trail.record(session, now=now, action=Action.WORKLOAD_INSTANCE_LOCKED, outcome=outcome, actor=actor,
                 subject=instance.id, details={"identity": instance.identity.username, "cause": cause,
                                               "reason": reason, "fingerprint": instance.fingerprint,
                                               "credentials_revoked": len(tokens),
                                               "grants_revoked": [grant.id for grant in grants], **details})
    for grant in grants:
        grant.revoked_at, grant.revoked_by, grant.revoke_reason = now, actor, why
        trail.record(session, now=now, action=Action.GRANT_REVOKED, actor=actor, subject=grant.id,
                     site=grant.asset.site.name, details={"reason": why, "cause": "instance_locked"})
        # "revoked": a reason every gateway already names ("the grant was revoked by the plant").
        announce(session, now=now, events=events, grant=grant, status=GrantChangeStatus.REVOKED, reason="revoked")


def _grants_for_key(session: Session, *, now: dt.datetime, instance: WorkloadInstance) -> list[Grant]:
    """The identity's open grants whose certificate was issued for this instance's public key."""
    grants = session.scalars(select(Grant).join(AccessRequest, Grant.request_id == AccessRequest.id).where(
        Grant.identity_id == instance.identity_id, Grant.revoked_at.is_(None), Grant.ends_at > now)
        .order_by(Grant.id)).all()
    return [grant for grant in grants if _same_key(grant.request.public_key, instance.public_key)]


def _same_key(one: str, other: str) -> bool:
    return one.split()[:2] == other.split()[:2]  # type and key; a comment does not make another key


def instances_of(session: Session, *, username: str) -> list[WorkloadInstance]:
    identity = get_identity(session, username)
    return list(session.scalars(select(WorkloadInstance).where(WorkloadInstance.identity_id == identity.id)
                                .order_by(WorkloadInstance.created_at, WorkloadInstance.id)))
