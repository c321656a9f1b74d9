"""Sign-in with password + TOTP, lockout after repeated failures, and short-lived revocable API tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker import audit, passwords, totp
from broker.audit import Action
from broker.errors import AccountLocked, LoginFailed, NotAuthenticated
from broker.identities import is_usable, totp_purpose
from broker.models import ApiToken, Identity
from broker.vault import Vault

_GENERIC_FAILURE = "sign-in refused: wrong username, password or one-time code"


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int
    lockout: dt.timedelta
    token_ttl: dt.timedelta


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: dt.datetime
    identity: Identity


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def login(
    session: Session,
    *,
    vault: Vault,
    now: dt.datetime,
    policy: LoginPolicy,
    username: str,
    password: str,
    code: str,
    source: str | None = None,
) -> IssuedToken:
    """Check password and one-time code; on success issue a bearer token. Every failure is audited and
    counted, and the message never says which factor was wrong (that would help a guesser)."""
    identity = session.scalar(select(Identity).where(Identity.username == username))
    where = {"source": source} if source else {}
    if identity is None:
        passwords.verify_password(password, passwords.dummy_hash())  # same cost as a real check
        audit.record(session, now=now, action=Action.LOGIN_FAILED, outcome="failure", actor=username[:64],
                     details={"reason": "unknown user", **where})
        raise LoginFailed(_GENERIC_FAILURE)

    if identity.locked_until is not None and identity.locked_until > now:
        audit.record(session, now=now, action=Action.LOGIN_FAILED, outcome="failure", actor=username,
                     details={"reason": "account locked", **where})
        raise AccountLocked(
            f"sign-in refused: the account '{username}' is locked after repeated failed sign-ins until "
            f"{identity.locked_until:%H:%M:%S} UTC"
        )
    if identity.kind != "human" or identity.password_hash is None or identity.totp_secret_ciphertext is None:
        # DESIGN invariant 5: service and AI-agent identities never sign in with a password.
        passwords.verify_password(password, passwords.dummy_hash())
        audit.record(session, now=now, action=Action.LOGIN_FAILED, outcome="failure", actor=username,
                     details={"reason": f"{identity.kind} identities cannot sign in with a password", **where})
        raise LoginFailed(f"sign-in refused: '{username}' is a {identity.kind} identity, which cannot sign "
                          "in with a password")

    password_ok = passwords.verify_password(password, identity.password_hash)
    secret = vault.open(identity.totp_secret_ciphertext, purpose=totp_purpose(username)).decode()
    step = totp.matching_step(secret, code, now=now)
    if not password_ok or step is None or step <= identity.totp_last_step:
        _count_failure(session, identity=identity, now=now, policy=policy, password_ok=password_ok,
                       replayed=step is not None, where=where)
        raise LoginFailed(_GENERIC_FAILURE)

    unusable = is_usable(identity, now)
    if unusable:
        audit.record(session, now=now, action=Action.LOGIN_FAILED, outcome="failure", actor=username,
                     details={"reason": unusable, **where})
        raise LoginFailed(f"sign-in refused: {unusable}")

    identity.totp_last_step = step
    identity.failed_logins = 0
    identity.locked_until = None
    token = "gpt_" + secrets.token_urlsafe(32)
    expires_at = now + policy.token_ttl
    session.add(ApiToken(token_hash=token_digest(token), identity_id=identity.id, created_at=now,
                         expires_at=expires_at))
    audit.record(session, now=now, action=Action.LOGIN_SUCCEEDED, actor=username, details=where)
    return IssuedToken(token, expires_at, identity)


def _count_failure(
    session: Session, *, identity: Identity, now: dt.datetime, policy: LoginPolicy, password_ok: bool,
    replayed: bool, where: dict[str, str],
) -> None:
    identity.failed_logins += 1
    if password_ok:
        reason = "one-time code already used" if replayed else "wrong one-time code"
        audit.record(session, now=now, action=Action.MFA_FAILED, outcome="failure", actor=identity.username,
                     details={"reason": reason, "failures": identity.failed_logins, **where})
    else:
        audit.record(session, now=now, action=Action.LOGIN_FAILED, outcome="failure", actor=identity.username,
                     details={"reason": "wrong password", "failures": identity.failed_logins, **where})
    if identity.failed_logins >= policy.max_failures:
        identity.locked_until = now + policy.lockout
        identity.failed_logins = 0
        audit.record(session, now=now, action=Action.ACCOUNT_LOCKED, outcome="failure", actor=identity.username,
                     details={"until": identity.locked_until.isoformat(), **where})


def authenticate_token(session: Session, *, now: dt.datetime, token: str) -> Identity:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None:
        raise NotAuthenticated("not signed in: the token is unknown or was signed out; sign in again")
    if row.expires_at <= now:
        raise NotAuthenticated("not signed in: the session expired; sign in again")
    unusable = is_usable(row.identity, now)
    if unusable:
        raise NotAuthenticated(f"not signed in: {unusable}")
    return row.identity


def logout(session: Session, *, now: dt.datetime, token: str) -> None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise NotAuthenticated("not signed in: the token is unknown, expired or already signed out")
    row.revoked_at = now
    audit.record(session, now=now, action=Action.LOGOUT, actor=row.identity.username)
