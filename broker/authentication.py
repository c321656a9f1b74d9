"""Sign-in with password + TOTP, lockout after repeated failures, and short-lived revocable API tokens;
TOTP enrolment (confirming a newly issued or reset secret) on the web and through the API."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
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
_ENROLMENT_EXPIRED = ("the enrolment step expired or was already used: sign in again with your username and "
                      "password to see the QR code")


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


@dataclass(frozen=True)
class PendingEnrolment:
    """Password verified, TOTP secret not yet confirmed: what the enrolment page shows. ``token`` is the
    signed pending state (kept in an HttpOnly cookie, never in a URL); ``secret`` is shown on the page only."""

    username: str
    secret: str
    token: str
    expires_at: dt.datetime


class EnrolmentCodeRefused(LoginFailed):
    """A wrong code on the enrolment page: counted like any failed sign-in. ``retry_token`` is a fresh pending
    state for another try (None when this failure locked the account)."""

    def __init__(self, message: str, *, retry_token: str | None) -> None:
        super().__init__(message)
        self.retry_token = retry_token


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
    counted, and the message never says which factor was wrong (that would help a guesser). A correct code
    from a not yet confirmed secret confirms it (so `gatepass login --totp` enrols CLI-only vendors)."""
    verified = _verify(session, vault=vault, now=now, policy=policy, username=username, password=password,
                       code=code, source=source, enrolment=None)
    if not isinstance(verified, IssuedToken):  # without an enrolment offer there is never a pending state
        raise LoginFailed(_GENERIC_FAILURE)
    return verified


def web_login(
    session: Session,
    *,
    vault: Vault,
    now: dt.datetime,
    policy: LoginPolicy,
    username: str,
    password: str,
    code: str,
    enrolment_key: bytes,
    enrolment_ttl: dt.timedelta,
    source: str | None = None,
) -> IssuedToken | PendingEnrolment:
    """``login`` for the sign-in form: a person whose TOTP secret is unconfirmed and whose password is right
    but whose code is empty or wrong gets the enrolment step (QR code) instead of a refusal."""
    return _verify(session, vault=vault, now=now, policy=policy, username=username, password=password, code=code,
                   source=source, enrolment=(enrolment_key, enrolment_ttl))


def _verify(
    session: Session, *, vault: Vault, now: dt.datetime, policy: LoginPolicy, username: str, password: str,
    code: str, source: str | None, enrolment: tuple[bytes, dt.timedelta] | None,
) -> IssuedToken | PendingEnrolment:
    identity = session.scalar(select(Identity).where(Identity.username == username))
    where = {"source": source} if source else {}
    if identity is None:
        passwords.verify_password(password, passwords.dummy_hash())  # same cost as a real check
        audit.record(session, now=now, action=Action.LOGIN_FAILED, outcome="failure", actor=username[:64],
                     details={"reason": "unknown user", **where})
        raise LoginFailed(_GENERIC_FAILURE)

    _refuse_if_locked(session, identity=identity, now=now, where=where)
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
    if password_ok and step is None and enrolment is not None and identity.totp_confirmed_at is None:
        _refuse_if_unusable(session, identity=identity, now=now, where=where)
        key, ttl = enrolment
        expires_at = now + ttl
        audit.record(session, now=now, action=Action.MFA_ENROLMENT_SHOWN, actor=username,
                     details={"expires_at": expires_at.isoformat(), **where})
        return PendingEnrolment(username=username, secret=secret, expires_at=expires_at,
                                token=_enrolment_token(key, identity, expires_at=expires_at))
    if not password_ok or step is None or step <= identity.totp_last_step:
        _count_failure(session, identity=identity, now=now, policy=policy, password_ok=password_ok,
                       replayed=step is not None, where=where)
        raise LoginFailed(_GENERIC_FAILURE)

    _refuse_if_unusable(session, identity=identity, now=now, where=where)
    return _issue(session, identity=identity, now=now, policy=policy, step=step, where=where)


def _refuse_if_locked(session: Session, *, identity: Identity, now: dt.datetime, where: dict[str, str]) -> None:
    if identity.locked_until is not None and identity.locked_until > now:
        audit.record(session, now=now, action=Action.LOGIN_FAILED, outcome="failure", actor=identity.username,
                     details={"reason": "account locked", **where})
        raise AccountLocked(
            f"sign-in refused: the account '{identity.username}' is locked after repeated failed sign-ins until "
            f"{identity.locked_until:%H:%M:%S} UTC"
        )


def _refuse_if_unusable(session: Session, *, identity: Identity, now: dt.datetime, where: dict[str, str]) -> None:
    unusable = is_usable(identity, now)
    if unusable:
        audit.record(session, now=now, action=Action.LOGIN_FAILED, outcome="failure", actor=identity.username,
                     details={"reason": unusable, **where})
        raise LoginFailed(f"sign-in refused: {unusable}")


def _issue(session: Session, *, identity: Identity, now: dt.datetime, policy: LoginPolicy, step: int,
           where: dict[str, str]) -> IssuedToken:
    identity.totp_last_step = step
    identity.failed_logins = 0
    identity.locked_until = None
    if identity.totp_confirmed_at is None:
        # The person proved they hold the new secret: it is enrolled from now on.
        identity.totp_confirmed_at = now
        audit.record(session, now=now, action=Action.MFA_ENROLLED, actor=identity.username, details=where)
    token = "gpt_" + secrets.token_urlsafe(32)
    expires_at = now + policy.token_ttl
    session.add(ApiToken(token_hash=token_digest(token), identity_id=identity.id, created_at=now,
                         expires_at=expires_at))
    audit.record(session, now=now, action=Action.LOGIN_SUCCEEDED, actor=identity.username, details=where)
    return IssuedToken(token, expires_at, identity)


# --- TOTP enrolment: the pending state between "password right" and "code from the new secret right" ------


def _state_fingerprint(identity: Identity) -> str:
    """Changes with every sign-in attempt's outcome (failure counter, lock, last step) and with a reset secret:
    a pending state made before any of these no longer matches, which makes each one single-use without
    keeping it on the server."""
    material = b"\x00".join([
        identity.totp_secret_ciphertext or b"", str(identity.failed_logins).encode(),
        (identity.locked_until.isoformat() if identity.locked_until else "").encode(),
        str(identity.totp_last_step).encode(), str(identity.totp_confirmed_at is None).encode(),
    ])
    return hashlib.sha256(material).hexdigest()[:32]


def _enrolment_token(key: bytes, identity: Identity, *, expires_at: dt.datetime) -> str:
    payload = f"{identity.id}.{int(expires_at.timestamp())}.{_state_fingerprint(identity)}"
    mac = hmac.new(key, b"totp-enrolment\x00" + payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{mac}"


def _pending_identity(session: Session, *, key: bytes, token: str, now: dt.datetime, lock: bool = False) -> Identity:
    """The identity a pending state names, if its signature, lifetime and state still hold."""
    parts = token.split(".")
    if len(parts) != 4 or not (parts[0].isdigit() and parts[1].isdigit()):
        raise NotAuthenticated(_ENROLMENT_EXPIRED)
    payload = ".".join(parts[:3])
    expected = hmac.new(key, b"totp-enrolment\x00" + payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts[3]) or int(parts[1]) <= now.timestamp():
        raise NotAuthenticated(_ENROLMENT_EXPIRED)
    # Locked when the state is about to be used: two posts of one pending state must not both succeed.
    identity = session.get(Identity, int(parts[0]), with_for_update=lock)
    if (identity is None or identity.totp_confirmed_at is not None or identity.totp_secret_ciphertext is None
            or not hmac.compare_digest(_state_fingerprint(identity), parts[2])):
        raise NotAuthenticated(_ENROLMENT_EXPIRED)
    return identity


def open_enrolment(session: Session, *, vault: Vault, key: bytes, token: str, now: dt.datetime) -> PendingEnrolment:
    """What the enrolment page shows for a valid pending state (reading it does not use it up)."""
    identity = _pending_identity(session, key=key, token=token, now=now)
    assert identity.totp_secret_ciphertext is not None  # noqa: S101 -- checked by _pending_identity
    secret = vault.open(identity.totp_secret_ciphertext, purpose=totp_purpose(identity.username)).decode()
    return PendingEnrolment(username=identity.username, secret=secret, token=token, expires_at=_deadline(token))


def complete_enrolment(
    session: Session, *, vault: Vault, now: dt.datetime, policy: LoginPolicy, key: bytes, token: str, code: str,
    source: str | None = None,
) -> IssuedToken:
    """Confirm the new secret with a code from it and sign in. A wrong or replayed code counts toward the
    lockout exactly like one on the sign-in form (DESIGN invariant 4)."""
    identity = _pending_identity(session, key=key, token=token, now=now, lock=True)
    where = {"source": source} if source else {}
    _refuse_if_locked(session, identity=identity, now=now, where=where)
    _refuse_if_unusable(session, identity=identity, now=now, where=where)
    assert identity.totp_secret_ciphertext is not None  # noqa: S101 -- checked by _pending_identity
    secret = vault.open(identity.totp_secret_ciphertext, purpose=totp_purpose(identity.username)).decode()
    step = totp.matching_step(secret, code, now=now)
    if step is None or step <= identity.totp_last_step:
        _count_failure(session, identity=identity, now=now, policy=policy, password_ok=True,
                       replayed=step is not None, where={**where, "step": "enrolment"})
        locked = identity.locked_until is not None and identity.locked_until > now
        # A retry keeps the original deadline: wrong codes never stretch the pending state's lifetime.
        retry = None if locked else _enrolment_token(key, identity, expires_at=_deadline(token))
        raise EnrolmentCodeRefused(
            "that code did not match: scan the QR code again (or type the secret) and enter the code your "
            "authenticator shows now" if not locked else
            f"enrolment refused: too many wrong codes; the account is locked until "
            f"{identity.locked_until:%H:%M:%S} UTC", retry_token=retry)
    return _issue(session, identity=identity, now=now, policy=policy, step=step, where=where)


def _deadline(token: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(token.split(".")[1]), tz=dt.UTC)


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
