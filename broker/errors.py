"""The broker's error hierarchy; every message says what was refused and why, in plain words.

    BrokerError                      base; never shown as a 500
    ├── InvalidInput         400     the request itself is malformed or out of bounds
    │   └── InvalidLoginName 400     a user name with control characters at the sign-in door (audited)
    ├── NotAuthenticated     401     no valid token (missing, expired, revoked)
    ├── LoginFailed          401     wrong username, password or one-time code (audited)
    │   └── SignInRefused (oidc_provider)  a company sign-in whose answer proves nothing (audited)
    ├── Forbidden            403     authenticated, but not allowed to do this (audited)
    ├── NotFound             404     no such object, or not visible to the caller
    ├── Conflict             409     the object is in a state that does not allow this
    │   └── RotationFailed (asset_credentials)  a credential rotation that reached the machine and stopped (audited)
    ├── AccountLocked        423     (no longer raised: a sign-in refusal never tells a locked account apart)
    ├── LoginThrottled       429     too many failed sign-ins from this source (audited; Retry-After)
    ├── VaultError (vault)           the master key is missing or wrong, or a sealed value was tampered with
    ├── ProviderUnavailable (oidc_provider) 502  the plant's identity provider cannot be reached or makes no sense
    ├── TargetUnreachable (target_access) 502  an asset's SSH service, asked from the admin's machine, did not
    │   │                                          answer, or not as SSH, or not in time
    │   └── HostKeyMismatch              it presents another host key than the pinned one (nothing offered to it)
    ├── ForwardError (siem_forward)  the SIEM forwarder cannot deliver (bad destination, lease held, refused)
    └── RecordingFormatError (recordings)  a file that is not an asciicast v2 recording

The ones named with a module live beside the code that raises them; they join this tree so that
``except BrokerError`` means everything the broker refuses or fails on purpose.

Errors with ``keep_changes = True`` are refusals whose audit event (and failure counters) must be
committed even though the action itself is refused; the domain code guarantees that nothing else was
changed before it raises them.
"""

from __future__ import annotations

from typing import TypeVar


class BrokerError(Exception):
    status_code = 500
    code = "error"
    keep_changes = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # True once the domain wrote this refusal's audit event itself; the rest are audited by broker.refusals.
        self.audited = False


E = TypeVar("E", bound=BrokerError)


def audited(error: E) -> E:
    """Mark ``error`` as already in the audit trail (the domain recorded it in its own transaction)."""
    error.audited = True
    return error


class InvalidInput(BrokerError):
    status_code = 400
    code = "invalid_input"


class NotAuthenticated(BrokerError):
    status_code = 401
    code = "not_authenticated"


class GatewayRetired(NotAuthenticated):
    """A retired gateway's credential: refused as any unknown one, with a code of its own, on which the gateway
    cuts what it still carries (a 401 it cannot attribute, such as a proxy's, does not make it cut)."""

    code = "gateway_retired"


class LoginFailed(BrokerError):
    status_code = 401
    code = "login_failed"
    keep_changes = True


class Forbidden(BrokerError):
    status_code = 403
    code = "forbidden"
    keep_changes = True


class NotFound(BrokerError):
    status_code = 404
    code = "not_found"


class Conflict(BrokerError):
    status_code = 409
    code = "conflict"


class NotNow(BrokerError):
    """The broker cannot take this now (a gateway's upload while its previous one runs, a disk near full): a 503 the
    gateway takes for "try again later", not a refusal of what it sent."""

    status_code = 503
    code = "try_later"


class AccountLocked(BrokerError):
    status_code = 423
    code = "account_locked"
    keep_changes = True


class InvalidLoginName(InvalidInput):
    keep_changes = True  # the refusal's audit event and the source's failure count stay


class LoginThrottled(BrokerError):
    status_code = 429
    code = "rate_limited"  # docs/API.md: the stable code of a 429
    keep_changes = True

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
