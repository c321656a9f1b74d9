"""Read the grant certificate a client logged in with, through asyncssh's private validation hook.

asyncssh (2.24) validates OpenSSH user certificates against the ``cert-authority`` line we give it
in ``begin_auth`` but offers no public way to see which certificate it accepted. We wrap the
connection's private ``_validate_openssh_certificate``: it is called for every certificate a client
offers, and the call that also verifies the signature is the last one before the login succeeds, so
the last certificate it accepted is the one the user authenticated with. pyproject.toml pins
asyncssh <2.25 for this; tests/gateway/test_certificates.py fails loudly if the hook moves.

The fields are read back with ``cryptography``'s public SSH certificate parser rather than
asyncssh's private attributes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncssh
from cryptography.hazmat.primitives.serialization import SSHCertificate, load_ssh_public_identity

from gateway.errors import CertificateRefused

logger = logging.getLogger("gatepass.gateway.certificates")

# docs/API.md, "The grant certificate": key_id = "gatepass grant=<grant id> identity=<username>".
_KEY_ID = re.compile(r"gatepass grant=(?P<grant>\S+) identity=(?P<identity>\S+)")
_HOOK = "_validate_openssh_certificate"

_Validator = Callable[[str, asyncssh.SSHCertificate], Awaitable[asyncssh.SSHKey | None]]
_Refused = Callable[[str, asyncssh.SSHCertificate, str | None], None]


@dataclass(frozen=True)
class GrantCertificate:
    """What the gateway needs from an accepted grant certificate."""

    grant_id: str
    identity: str
    serial: int
    principals: tuple[str, ...]
    valid_before: datetime


def parse_key_id(key_id: str) -> tuple[str, str]:
    """(grant id, identity) from a grant certificate's key id, or CertificateRefused."""
    match = _KEY_ID.fullmatch(key_id)
    if match is None:
        raise CertificateRefused(f"certificate key id {key_id!r} is not a Gatepass grant certificate")
    return match["grant"], match["identity"]


def read_grant_certificate(openssh_line: bytes) -> GrantCertificate:
    """Parse ``ssh-…-cert-v01@openssh.com AAAA…`` into a GrantCertificate, or CertificateRefused."""
    try:
        cert = load_ssh_public_identity(openssh_line)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise CertificateRefused(f"the certificate cannot be read: {exc}") from None
    if not isinstance(cert, SSHCertificate):
        raise CertificateRefused("a plain public key is not a grant certificate")
    principals = tuple(p.decode("utf-8", "replace") for p in cert.valid_principals)
    if not principals:
        # An OpenSSH certificate without principals is valid for every login name (FIELD-NOTES).
        raise CertificateRefused("the certificate names no principals, so it is not bound to an asset")
    grant_id, identity = parse_key_id(cert.key_id.decode("utf-8", "replace"))
    return GrantCertificate(
        grant_id=grant_id,
        identity=identity,
        serial=cert.serial,
        principals=principals,
        valid_before=_timestamp(cert.valid_before),
    )


def _timestamp(seconds: int) -> datetime:
    # OpenSSH writes "forever" as 2**64-1, far beyond what datetime can hold.
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.max.replace(tzinfo=UTC)


class CertificateWatch:
    """Records the grant certificate asyncssh accepted on one server connection."""

    def __init__(self, conn: asyncssh.SSHServerConnection, on_refused: _Refused | None = None) -> None:
        original: _Validator | None = getattr(conn, _HOOK, None)
        if original is None:  # pragma: no cover - only when asyncssh changes under the pin
            raise RuntimeError(f"asyncssh {asyncssh.__version__} has no {_HOOK}: see gateway/certificates.py")
        self._original = original
        self._on_refused = on_refused
        self.accepted: GrantCertificate | None = None
        setattr(conn, _HOOK, self._validate)

    async def _validate(self, username: str, cert: asyncssh.SSHCertificate) -> asyncssh.SSHKey | None:
        key = await self._original(username, cert)
        if key is None:
            if self._on_refused is not None:  # for the audit trail (gateway/login_refusals.py)
                self._on_refused(username, cert, None)
            return None
        try:
            grant_cert = read_grant_certificate(cert.export_certificate("openssh"))
        except CertificateRefused as exc:
            logger.info("login as %r refused: %s", username, exc)
            if self._on_refused is not None:
                self._on_refused(username, cert, str(exc))
            return None
        if username not in grant_cert.principals:  # asyncssh checked this too; refuse twice rather than never
            return None
        self.accepted = grant_cert
        return key


def watch_certificates(conn: asyncssh.SSHServerConnection, on_refused: _Refused | None = None) -> CertificateWatch:
    """Start recording accepted certificates on ``conn``; call from ``SSHServer.connection_made``. ``on_refused``
    hears each certificate refused, with our own reason when asyncssh accepted it but we did not."""
    return CertificateWatch(conn, on_refused)
