"""TOTP (RFC 6238) verification that accepts each code once and reports which time step it matched."""

from __future__ import annotations

import datetime as dt
import hmac

import pyotp

# RFC 6238 §5.2 recommends allowing at most one step of clock drift either way.
_DRIFT_STEPS = 1


def new_secret() -> str:
    return pyotp.random_base32()


def matching_step(secret: str, code: str, *, now: dt.datetime) -> int | None:
    """Return the time step ``code`` belongs to (within the allowed drift), or None."""
    code = code.strip()
    if not (code.isascii() and code.isdigit()) or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    found = None
    # Check every candidate step (no early return) so timing does not reveal which one matched.
    for step in range(current - _DRIFT_STEPS, current + _DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def provisioning_uri(secret: str, *, username: str, issuer: str = "Gatepass") -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)
