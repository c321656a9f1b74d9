"""The vault: seals target credentials, TOTP secrets and CA private keys with the data directory's master key.

AES-256-GCM with a random 96-bit nonce (NIST SP 800-38D); the associated data names what the secret is
for (``asset-credential:hmi-01``), so a ciphertext copied onto another row does not decrypt there.
The master key lives in ``DATA/master.key`` (mode 0600), owned by whoever runs the broker.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.errors import BrokerError

_VERSION = b"gpv1"


class VaultError(BrokerError):
    """The master key is missing or wrong, or a sealed value was tampered with."""


class Vault:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise VaultError("the master key must be 32 bytes")
        self._key = key
        self._aead = AESGCM(key)

    @classmethod
    def generate(cls) -> Vault:
        return cls(secrets.token_bytes(32))

    def write_key_file(self, path: Path) -> None:
        """Write the master key, readable by its owner only; never overwrite an existing one."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64encode(self._key) + b"\n")

    @classmethod
    def from_key_file(cls, path: Path) -> Vault:
        try:
            key = base64.b64decode(path.read_bytes().strip(), validate=True)
        except FileNotFoundError as error:
            raise VaultError(f"the master key {path} is missing: run `gatepass init` first") from error
        except ValueError as error:
            raise VaultError(f"the master key {path} is not valid base64") from error
        return cls(key)

    def seal(self, plaintext: bytes, *, purpose: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, purpose.encode())

    def open(self, sealed: bytes, *, purpose: str) -> bytes:
        if not sealed.startswith(_VERSION) or len(sealed) < len(_VERSION) + 12 + 16:
            raise VaultError(f"sealed value for {purpose} is not in a format this broker understands")
        nonce = sealed[len(_VERSION) : len(_VERSION) + 12]
        try:
            return self._aead.decrypt(nonce, sealed[len(_VERSION) + 12 :], purpose.encode())
        except InvalidTag as error:
            raise VaultError(f"sealed value for {purpose} does not open with this master key") from error
