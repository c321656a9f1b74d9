"""Sign-in with password + TOTP (and, while the second factor is not yet bound, the one-time enrolment code),
throttled per source and account, and short-lived revocable API tokens; TOTP enrolment on the web and through
the API.

Every refused sign-in looks the same from outside — 401, one text, the same work (a password hash is always
checked) — whether the name is unknown, the password, the code or the enrolment code is wrong, or the account
is locked, disabled, expired or not a person's; the audit event keeps the real reason for the reviewer. The only
other answer is 429 from a throttle (broker.sign_in_throttles), which depends on the source and the name tried,
never on whether that name exists (DESIGN invariant 4)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import NoReturn

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.errors import InvalidLoginName, LoginFailed, LoginThrottled, NotAuthenticated
from broker.identity import assurance, passwords, sign_in_throttles, totp
from broker.identity.identities import enrolment_code_digest, totp_purpose, why_unusable
from broker.identity.usage import touch
from broker.keys.vault import Vault
from broker.models import ApiToken, Identity
from broker.settings import Settings, ThrottlePolicy
from broker.vocabulary import IdentityKind

_GENERIC_FAILURE = "sign-in refused: wrong username, password or one-time code"
_ENROLMENT_EXPIRED = ("the enrolment step expired or was already used: sign in again with your username, "
                      "password and enrolment code to see the QR code")
# C0, DEL, C1 and the Unicode line and paragraph separators: each can forge a line in a log or a terminal.
_CONTROL_IN_NAME = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Checked when there is no real secret (unknown name, a service identity) so the work is the same.
_DUMMY_TOTP_SECRET = totp.new_secret()
_NO_CODE = "0" * 64


@dataclass(frozen=True)
class LoginPolicy:
    token_ttl: dt.timedelta
    throttles: ThrottlePolicy = field(default_factory=ThrottlePolicy)

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginPolicy:
        return cls(token_ttl=settings.token_ttl, throttles=settings.sign_in)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: dt.datetime
    identity: Identity


@dataclass(frozen=True)
class PendingEnrolment:
    """Password and enrolment code verified, TOTP secret not yet confirmed: what the enrolment page shows.
    ``token`` is the signed pending state (kept in an HttpOnly cookie, never in a URL); ``secret`` is shown on
    the page only."""

    username: str
    secret: str
    token: str
    expires_at: dt.datetime


class EnrolmentCodeRefused(LoginFailed):
    """A wrong code on the enrolment page: counted like any failed sign-in. ``retry_token`` is a fresh pending
    state for another try (None when this failure started a throttle)."""

    def __init__(self, message: str, *, retry_token: str | None) -> None:
        super().__init__(message)
        self.retry_token = retry_token


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def escape_controls(text: str) -> str:
    """``text`` with backslashes and control characters written as escapes (``\\u000a``): safe in the trail."""
    return _CONTROL_IN_NAME.sub(lambda found: f"\\u{ord(found.group()):04x}", text.replace("\\", "\\\\"))


def login(
    session: Session,
    *,
    vault: Vault,
    now: dt.datetime,
    policy: LoginPolicy,
    username: str,
    password: str,
    code: str,
    enrolment_code: str | None = None,
    source: str | None = None,
) -> IssuedToken:
    """Check password and one-time code; on success issue a bearer token. Every failure is audited and
    throttled, and the answer never says what was wrong (that would help a guesser). An unconfirmed secret is
    bound by the password, the valid enrolment code and a right code from it (`gatepass login --enrolment-code
    … --totp …` enrols CLI-only vendors); for a confirmed one the enrolment code is ignored."""
    verified = _verify(session, vault=vault, now=now, policy=policy, username=username, password=password,
                       code=code, enrolment_code=enrolment_code, source=source, enrolment=None)
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
    enrolment_code: str | None = None,
    source: str | None = None,
) -> IssuedToken | PendingEnrolment:
    """``login`` for the sign-in form: a person whose TOTP secret is unconfirmed, whose password and enrolment
    code are right and whose one-time code is empty or wrong gets the enrolment step (QR code) instead of a
    refusal. The password alone never gets there."""
    return _verify(session, vault=vault, now=now, policy=policy, username=username, password=password, code=code,
                   enrolment_code=enrolment_code, source=source, enrolment=(enrolment_key, enrolment_ttl))


def _verify(
    session: Session, *, vault: Vault, now: dt.datetime, policy: LoginPolicy, username: str, password: str,
    code: str, enrolment_code: str | None, source: str | None, enrolment: tuple[bytes, dt.timedelta] | None,
) -> IssuedToken | PendingEnrolment:
    where = {"source": source} if source else {}
    refuse_control_characters(session, now=now, policy=policy, username=username, source=source)
    _refuse_if_throttled(session, now=now, policy=policy, username=username, source=source, where=where)

    identity = session.scalar(select(Identity).where(Identity.username == username))
    person = identity if (identity is not None and identity.kind == IdentityKind.HUMAN
                          and identity.password_hash is not None
                          and identity.totp_secret_ciphertext is not None) else None
    # The same work whatever the outcome — one scrypt check, one TOTP check, one comparison of enrolment code
    # hashes — so the answer's timing does not tell an unknown name, a service identity or a locked account.
    password_ok = passwords.verify_password(password, person.password_hash if person and person.password_hash
                                            else passwords.dummy_hash())
    secret = (vault.open(person.totp_secret_ciphertext, purpose=totp_purpose(username)).decode()
              if person and person.totp_secret_ciphertext else _DUMMY_TOTP_SECRET)
    step = totp.matching_step(secret, code, now=now)
    code_problem = _enrolment_code_problem(person, enrolment_code, now=now)

    if identity is None or person is None:
        reason = ("unknown user" if identity is None
                  # DESIGN invariant 5: service and AI-agent identities never sign in with a password.
                  else f"{identity.kind} identities cannot sign in with a password")
        _refuse(session, now=now, policy=policy, identity=identity, username=username, source=source,
                action=Action.LOGIN_FAILED, reason=reason, where=where)
    unusable = why_unusable(person, now)
    if person.locked_until is not None and person.locked_until > now:
        _refuse(session, now=now, policy=policy, identity=person, username=username, source=source,
                action=Action.LOGIN_FAILED, reason="account locked", where=where)
    if not password_ok:
        _refuse(session, now=now, policy=policy, identity=person, username=username, source=source,
                action=Action.LOGIN_FAILED, reason="wrong password", where=where)
    if unusable:
        _refuse(session, now=now, policy=policy, identity=person, username=username, source=source,
                action=Action.LOGIN_FAILED, reason=unusable, where=where)
    unconfirmed = person.totp_confirmed_at is None
    if unconfirmed and code_problem is not None:
        # Without the enrolment code a password never sees or binds the second factor (DESIGN invariant 4).
        _refuse(session, now=now, policy=policy, identity=person, username=username, source=source,
                action=Action.ENROLMENT_CODE_REFUSED, reason=code_problem, where=where)
    fresh = step is not None and step > person.totp_last_step
    if unconfirmed and not fresh and enrolment is not None:
        key, ttl = enrolment
        expires_at = now + ttl
        trail.record(session, now=now, action=Action.MFA_ENROLMENT_SHOWN, actor=username,
                     details={"expires_at": expires_at.isoformat(), **where})
        return PendingEnrolment(username=username, secret=secret, expires_at=expires_at,
                                token=_enrolment_token(key, person, expires_at=expires_at))
    if step is None or not fresh:
        _refuse(session, now=now, policy=policy, identity=person, username=username, source=source,
                action=Action.MFA_FAILED, reason="one-time code already used" if step is not None else
                "wrong one-time code", where=where)
    return _issue(session, identity=person, now=now, policy=policy, step=step, source=source, where=where)


def _enrolment_code_problem(person: Identity | None, supplied: str | None, *, now: dt.datetime) -> str | None:
    """Why ``supplied`` does not open this person's enrolment, or None. The hashes are compared in constant
    time, always (a dummy one when there is none), before any reason is picked."""
    stored = person.enrolment_code_hash if person is not None else None
    matches = hmac.compare_digest(enrolment_code_digest(supplied or ""), stored or _NO_CODE)
    if not supplied or not supplied.strip():
        return "no enrolment code given"
    if person is None or stored is None:
        return "no enrolment code is outstanding (it was used, or the account predates enrolment codes)"
    if not matches:
        return "wrong enrolment code"
    if person.enrolment_code_expires_at is None or person.enrolment_code_expires_at <= now:
        return "enrolment code expired"
    return None


def _refuse(
    session: Session, *, now: dt.datetime, policy: LoginPolicy, identity: Identity | None, username: str,
    source: str | None, action: Action, reason: str, where: dict[str, str],
) -> NoReturn:
    """Audit the real reason, count the failure, and raise the one answer everyone gets."""
    failures: dict[str, int] = {}
    if identity is not None:
        identity.failed_logins += 1  # also changes the pending enrolment state's fingerprint: it is used up
        failures = {"failures": identity.failed_logins}
    trail.record(session, now=now, action=action, outcome="failure", actor=username[:64],
                 details={"reason": reason, **failures, **where})
    sign_in_throttles.record_failure(session, policy=policy.throttles, now=now, username=username, source=source)
    raise LoginFailed(_GENERIC_FAILURE)


def _refuse_if_throttled(session: Session, *, now: dt.datetime, policy: LoginPolicy, username: str,
                         source: str | None, where: dict[str, str]) -> None:
    block = sign_in_throttles.current_block(session, policy=policy.throttles, now=now, username=username,
                                            source=source)
    if block is None:
        return
    retry_after = block.retry_after(now)
    trail.record(session, now=now, action=Action.LOGIN_THROTTLED, outcome="failure", actor=username[:64],
                 details={"reason": "blocked", "scope": block.scope, "retry_after": retry_after, **where})
    raise LoginThrottled(f"sign-in refused: too many failed sign-ins from here; try again in {retry_after} "
                         "seconds", retry_after=retry_after)


def refuse_control_characters(session: Session, *, now: dt.datetime, policy: LoginPolicy, username: str,
                              source: str | None) -> None:
    """A user name never holds a control character: one that does is a forged log line or a pasted mistake.
    Refused with a reason, audited with the name escaped, and counted against the source; never stored raw.
    (Also called by the sign-in page for names its form reader refused before any sign-in could run.)"""
    if not _CONTROL_IN_NAME.search(username):
        return
    where = {"source": source} if source else {}
    shown = escape_controls(username)[:128]
    _refuse_if_throttled(session, now=now, policy=policy, username=shown, source=source, where=where)
    trail.record(session, now=now, action=Action.LOGIN_FAILED, outcome="failure", actor=shown[:64],
                 details={"reason": "user name holds control characters", "name": shown, **where})
    sign_in_throttles.record_failure(session, policy=policy.throttles, now=now, username=shown, source=source)
    raise InvalidLoginName("sign-in refused: user names contain no control characters (a line break, tab or "
                           "other invisible character was typed or pasted into the user name)")


def _issue(session: Session, *, identity: Identity, now: dt.datetime, policy: LoginPolicy, step: int,
           source: str | None, where: dict[str, str]) -> IssuedToken:
    identity.totp_last_step = step
    identity.failed_logins = 0
    identity.locked_until = None
    if identity.totp_confirmed_at is None:
        # Password, enrolment code and a code from the new secret: it is bound from now on, and the enrolment
        # code is used up in the same transaction.
        identity.totp_confirmed_at = now
        identity.enrolment_code_hash = None
        identity.enrolment_code_expires_at = None
        trail.record(session, now=now, action=Action.ENROLMENT_CODE_USED, actor=identity.username, details=where)
        trail.record(session, now=now, action=Action.MFA_ENROLLED, actor=identity.username, details=where)
    token = "gpt_" + secrets.token_urlsafe(32)
    expires_at = now + policy.token_ttl
    session.add(ApiToken(token_hash=token_digest(token), identity_id=identity.id, created_at=now,
                         expires_at=expires_at))
    touch(identity, now)
    trail.record(session, now=now, action=Action.LOGIN_SUCCEEDED, actor=identity.username, details=where)
    # Last, like a failure's count: every sign-in takes its locks in one order (identity, audit head, throttle
    # rows), so a success and a failure at once on PostgreSQL never deadlock.
    sign_in_throttles.record_success(session, username=identity.username, source=source)
    return IssuedToken(token, expires_at, identity)


# --- TOTP enrolment: the pending state between "password and enrolment code right" and "code from the new
# secret right" ----------------------------------------------------------------------------------------------


def _state_fingerprint(identity: Identity) -> str:
    """Changes with every sign-in attempt's outcome (failure counter, lock, last step), with a reset secret and
    with a new or used-up enrolment code: a pending state made before any of these no longer matches, which
    makes each one single-use without keeping it on the server."""
    material = b"\x00".join([
        identity.totp_secret_ciphertext or b"", str(identity.failed_logins).encode(),
        (identity.locked_until.isoformat() if identity.locked_until else "").encode(),
        str(identity.totp_last_step).encode(), str(identity.totp_confirmed_at is None).encode(),
        (identity.enrolment_code_hash or "").encode(),
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
            or identity.enrolment_code_hash is None or identity.enrolment_code_expires_at is None
            or identity.enrolment_code_expires_at <= now
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
    """Confirm the new secret with a code from it and sign in (binding it uses up the enrolment code). A wrong
    or replayed code is throttled exactly like one on the sign-in form (DESIGN invariant 4)."""
    identity = _pending_identity(session, key=key, token=token, now=now, lock=True)
    where = {"source": source} if source else {}
    username = identity.username
    _refuse_if_throttled(session, now=now, policy=policy, username=username, source=source, where=where)
    problem = ("account locked" if identity.locked_until is not None and identity.locked_until > now
               else why_unusable(identity, now))
    if problem:
        _refuse(session, now=now, policy=policy, identity=identity, username=username, source=source,
                action=Action.LOGIN_FAILED, reason=problem, where={**where, "step": "enrolment"})
    assert identity.totp_secret_ciphertext is not None  # noqa: S101 -- checked by _pending_identity
    secret = vault.open(identity.totp_secret_ciphertext, purpose=totp_purpose(username)).decode()
    step = totp.matching_step(secret, code, now=now)
    if step is None or step <= identity.totp_last_step:
        identity.failed_logins += 1
        trail.record(session, now=now, action=Action.MFA_FAILED, outcome="failure", actor=username,
                     details={"reason": "one-time code already used" if step is not None else "wrong one-time code",
                              "failures": identity.failed_logins, "step": "enrolment", **where})
        sign_in_throttles.record_failure(session, policy=policy.throttles, now=now, username=username,
                                         source=source)
        block = sign_in_throttles.current_block(session, policy=policy.throttles, now=now, username=username,
                                                source=source)
        # A retry keeps the original deadline: wrong codes never stretch the pending state's lifetime.
        retry = None if block else _enrolment_token(key, identity, expires_at=_deadline(token))
        raise EnrolmentCodeRefused(
            "that code did not match: scan the QR code again (or type the secret) and enter the code your "
            "authenticator shows now" if block is None else
            f"enrolment refused: too many wrong codes from here; sign in again in {block.retry_after(now)} "
            "seconds", retry_token=retry)
    return _issue(session, identity=identity, now=now, policy=policy, step=step, source=source, where=where)


def _deadline(token: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(token.split(".")[1]), tz=dt.UTC)


def authenticate_token(session: Session, *, now: dt.datetime, token: str) -> Identity:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None:
        raise NotAuthenticated("not signed in: the token is unknown or was signed out; sign in again")
    if row.expires_at <= now:
        raise NotAuthenticated("not signed in: the session expired; sign in again")
    unusable = why_unusable(row.identity, now)
    if unusable:
        raise NotAuthenticated(f"not signed in: {unusable}")
    assurance.note_session(session, row)  # whether this session may decide (a second factor), for this request
    return row.identity


def logout(session: Session, *, now: dt.datetime, token: str) -> None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise NotAuthenticated("not signed in: the token is unknown, expired or already signed out")
    row.revoked_at = now
    trail.record(session, now=now, action=Action.LOGOUT, actor=row.identity.username)
