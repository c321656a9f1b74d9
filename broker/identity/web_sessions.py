"""Web sign-in support: the CSRF key derived from the master key, CSRF tokens bound to a session, and the
audit of forged form posts.

The web session itself is an ordinary API token from ``authentication.login`` (same lockout, TOTP replay
guard and audit), kept in an HttpOnly cookie; nothing here stores state, so any broker replica that
shares the data directory's master key accepts the same forms.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action

# HKDF "info" names what the derived key is for (RFC 5869 §3.2): a CSRF key can never double as the vault key.
_CSRF_KEY_INFO = b"gatepass web csrf-token key v1"




def derive_csrf_key(master_key_path: Path) -> bytes:
    """A 32-byte HMAC key derived from the master key: every replica of one installation derives the same
    key (a form served by one replica is accepted by another), and it changes when the master key does."""
    master = base64.b64decode(master_key_path.read_bytes().strip(), validate=True)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CSRF_KEY_INFO).derive(master)


def csrf_token(key: bytes, bound_to: str) -> str:
    """The form token for one session (or one sign-in attempt): HMAC-SHA256 of its secret."""
    return hmac.new(key, b"csrf\x00" + bound_to.encode(), hashlib.sha256).hexdigest()


def csrf_matches(key: bytes, bound_to: str, presented: str | None) -> bool:
    """Constant-time check (hmac.compare_digest) so the token cannot be guessed byte by byte."""
    if not presented or not bound_to:
        return False
    return hmac.compare_digest(csrf_token(key, bound_to), presented)


def record_csrf_refusal(session: Session, *, now: dt.datetime, actor: str | None, path: str,
                        source: str | None) -> None:
    """A form post without a valid CSRF token is a forgery attempt (or a stale page): audit it."""
    trail.record(session, now=now, action=Action.CSRF_REFUSED, outcome="refused", actor=actor,
                 subject=path[:128], details={"reason": "form posted without a valid CSRF token",
                                              **({"source": source} if source else {})})
