"""Login to the gateway: grant certificates from the broker's user CA only, nothing else.

The login name is the asset name. asyncssh checks the certificate against a per-login
``cert-authority,principals="<asset>"`` line, so it refuses expired certificates, other CAs, other
principals and plain keys itself (FIELD-NOTES); certificates.py refuses certificates without principals.
"""

from __future__ import annotations

import logging
import re

import asyncssh

from gateway.certificates import CertificateWatch

logger = logging.getLogger("gatepass.gateway.login")

# Login name = asset name. It is pasted into an authorized_keys line, so it must never carry
# quotes, commas or spaces (an injected 'principals=' or 'permitopen=' option would be a bypass).
ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class CertificateLogin(asyncssh.SSHServer):
    """The authentication half of GatewayConnection: deny everything but a grant certificate."""

    peer: str
    _conn: asyncssh.SSHServerConnection | None
    _certs: CertificateWatch | None
    _asset: str

    def user_ca(self) -> str | None:
        raise NotImplementedError

    def begin_auth(self, username: str) -> bool:
        self._asset = username
        user_ca = self.user_ca()
        if self._conn is None or user_ca is None or not ASSET_NAME.fullmatch(username):
            # No authorized keys at all: every login attempt fails.
            logger.info("login as %r from %s refused before authentication", username, self.peer)
            return True
        line = f'cert-authority,principals="{username}" {user_ca}\n'
        self._conn.set_authorized_keys(asyncssh.import_authorized_keys(line))
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:  # noqa: ARG002
        return False  # plain keys are never a grant

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:  # noqa: ARG002
        return False  # only the broker's user CA, through authorized keys

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False
