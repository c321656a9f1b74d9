"""What a login that never got in tried: collected per connection, told to the broker's audit trail once.

asyncssh refuses expired certificates, other CAs, other principals and plain keys itself (gateway/login.py), and
says nothing about it. IEC 62443-3-3 SR 2.8 wants those refusals audited, so the gateway notes each credential it
was offered and why it was refused, and when the connection ends without a login the broker hears one report
(``POST /gateway/login-refusals``): the presented keys' fingerprints, certificates' key ids and the reasons. The
broker caps these per source address and minute (broker/refusals.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncssh
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    SSHCertificate,
    load_ssh_public_identity,
)

# A client may offer many keys; the report keeps the first few (the rest are counted).
MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class Attempt:
    """One thing the client tried. ``identity`` is set only from a certificate this broker's CA signed."""

    kind: str  # certificate | key | login_name | remote_forward
    reason: str
    fingerprint: str | None = None
    key_id: str | None = None
    identity: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {"kind": self.kind, "reason": self.reason, "fingerprint": self.fingerprint, "key_id": self.key_id,
                "identity": self.identity}


class LoginAttempts:
    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.more = 0
        self._seen: set[tuple[str, str | None, str]] = set()

    def add(self, attempt: Attempt) -> None:
        # OpenSSH offers a key once without a signature and once with: note it once.
        key = (attempt.kind, attempt.fingerprint, attempt.reason)
        if key in self._seen:
            return
        self._seen.add(key)
        if len(self.attempts) < MAX_ATTEMPTS:
            self.attempts.append(attempt)
        else:
            self.more += 1

    def __bool__(self) -> bool:
        return bool(self.attempts)


def describe_certificate(cert: asyncssh.SSHCertificate, *, username: str, user_ca: str | None,
                         now: dt.datetime) -> Attempt:
    """Why asyncssh refused ``cert`` for the login ``username``, in words a reviewer understands (read with
    cryptography's public certificate parser, like gateway/certificates.py, not asyncssh's private fields)."""
    fingerprint = cert.key.get_fingerprint()
    try:
        parsed = load_ssh_public_identity(cert.export_certificate("openssh"))
    except (ValueError, TypeError, NotImplementedError):
        return Attempt(kind="certificate", reason="certificate cannot be read", fingerprint=fingerprint)
    if not isinstance(parsed, SSHCertificate):
        return Attempt(kind="certificate", reason="certificate cannot be read", fingerprint=fingerprint)
    signer = b" ".join(parsed.signature_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).split()[:2])
    ours = user_ca is not None and signer == b" ".join(user_ca.encode().split()[:2])
    key_id = parsed.key_id.decode("utf-8", "replace")[:200]
    identity = None
    if ours:
        # The key id of a certificate our CA signed names the grant's identity (docs/API.md).
        _, _, rest = key_id.partition(" identity=")
        identity = rest.split()[0][:64] if rest.strip() else None
    principals = [p.decode("utf-8", "replace") for p in parsed.valid_principals]
    if not ours:
        reason = "certificate signed by a CA this gateway does not trust"
    elif not principals:
        reason = "certificate names no principals"
    elif username not in principals:
        reason = f"certificate is for {', '.join(principals)[:120]}, not {username}"
    elif parsed.valid_before <= now.timestamp():
        ended = dt.datetime.fromtimestamp(parsed.valid_before, dt.UTC)
        reason = f"certificate expired at {ended:%Y-%m-%d %H:%M:%S} UTC"
    elif parsed.valid_after > now.timestamp():
        reason = "certificate is not valid yet"
    else:
        reason = "certificate refused"
    return Attempt(kind="certificate", reason=reason, fingerprint=fingerprint, key_id=key_id, identity=identity)


def describe_key(key: asyncssh.SSHKey) -> Attempt:
    return Attempt(kind="key", reason="a plain SSH key is not a grant certificate", fingerprint=key.get_fingerprint())
