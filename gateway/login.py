"""Login to the gateway: grant certificates from the broker's user CA only, nothing else.

The login name is the asset name. asyncssh checks the certificate against a per-login
``cert-authority,principals="<asset>"`` line, so it refuses expired certificates, other CAs, other
principals and plain keys itself (FIELD-NOTES); certificates.py refuses certificates without principals.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import TYPE_CHECKING

import asyncssh

from gateway.certificates import CertificateWatch
from gateway.login_refusals import Attempt, LoginAttempts, describe_certificate, describe_key

if TYPE_CHECKING:
    from gateway.context import GatewayContext

logger = logging.getLogger("gatepass.gateway.login")

# Login name = asset name. It is pasted into an authorized_keys line, so it must never carry
# quotes, commas or spaces (an injected 'principals=' or 'permitopen=' option would be a bypass).
ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class CertificateLogin(asyncssh.SSHServer):
    """The authentication half of GatewayConnection: deny everything but a grant certificate, and note what
    was refused for the audit trail (gateway/login_refusals.py)."""

    ctx: GatewayContext
    peer: str
    _conn: asyncssh.SSHServerConnection | None
    _certs: CertificateWatch | None
    _asset: str
    _login_attempts: LoginAttempts | None = None

    def user_ca(self) -> str | None:
        raise NotImplementedError

    def begin_auth(self, username: str) -> bool:
        self._asset = username
        user_ca = self.user_ca()
        if self._conn is None or user_ca is None or not ASSET_NAME.fullmatch(username):
            # No authorized keys at all: every login attempt fails.
            logger.info("login as %r from %s refused before authentication", username, self.peer)
            self.note_attempt(Attempt(kind="login_name", reason="the login name is not an asset name"
                                      if user_ca is not None else "the gateway is not registered with the broker"))
            return True
        line = f'cert-authority,principals="{username}" {user_ca}\n'
        self._conn.set_authorized_keys(asyncssh.import_authorized_keys(line))
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:  # noqa: ARG002
        self.note_attempt(describe_key(key))
        return False  # plain keys are never a grant

    # -- refused logins, for the audit trail -----------------------------------------------------------

    def note_attempt(self, attempt: Attempt) -> None:
        if self._login_attempts is None:
            self._login_attempts = LoginAttempts()
        self._login_attempts.add(attempt)

    def certificate_refused(self, username: str, cert: asyncssh.SSHCertificate, why: str | None) -> None:
        attempt = describe_certificate(cert, username=username, user_ca=self.user_ca(),
                                       now=self.ctx.settings.clock())
        self.note_attempt(dataclasses.replace(attempt, reason=why) if why else attempt)

    def report_login_refusal(self, attempts: LoginAttempts | None = None) -> None:
        """Send what was refused to the broker in the background (one report; the broker caps per source)."""
        attempts = attempts or self._login_attempts
        if not attempts:
            return
        host = self.peer.rsplit(":", 1)[0]
        report = self.ctx.broker.login_refusal(peer=host, username=self._asset[:128],
                                               attempts=[a.as_json() for a in attempts.attempts],
                                               more=attempts.more)
        self.ctx.spawn(report, f"reporting a refused login from {host}")

    def report_failed_login(self) -> None:
        """At the end of a connection that never logged in: what it tried, in one report."""
        if self._certs is not None and self._certs.accepted is not None:
            return
        self.report_login_refusal()

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:  # noqa: ARG002
        return False  # only the broker's user CA, through authorized keys

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False
