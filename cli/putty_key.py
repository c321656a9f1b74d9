"""PuTTY's private key file format, version 3 (``.ppk``): an Ed25519 key with its grant certificate built in.

Windows engineering laptops in plants mostly connect with PuTTY, WinSCP or plink. PuTTY 0.78 and later read a
certificate from the key file itself (its key type is then ``ssh-ed25519-cert-v01@openssh.com`` and the public
part is the certificate), so one file is all they need to be given. The layout follows PuTTY's manual, appendix C
("PPK file format"):

    PuTTY-User-Key-File-3: <key type>
    Encryption: none | aes256-cbc
    Comment: <text>
    Public-Lines: N         then the public blob, base64, 64 characters a line
    [Key-Derivation, Argon2-Memory, Argon2-Passes, Argon2-Parallelism, Argon2-Salt]   (encrypted files only)
    Private-Lines: N        then the private blob (for Ed25519: string(32-byte seed)), encrypted if asked
    Private-MAC: <hex HMAC-SHA-256 over the key type, encryption, comment, public blob and private blob>

Unencrypted, the MAC key is empty. With a passphrase, Argon2id turns it into 80 bytes: the AES-256 key, the CBC
IV and the MAC key; the private blob is padded to whole AES blocks with random bytes before the MAC and the
encryption, as PuTTY does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct

ED25519_CERT_TYPE = "ssh-ed25519-cert-v01@openssh.com"
ENCRYPTED = "aes256-cbc"

# PuTTY's own defaults for a new key (puttygen 0.78: 8 MiB, Argon2id, one lane), with a fixed number of passes
# instead of "about 100 ms on this machine", so a file does not depend on how fast the exporting laptop was.
ARGON2_MEMORY_KIB = 8192
ARGON2_PASSES = 16
ARGON2_PARALLELISM = 1
_SALT_BYTES = 16
_AES_BLOCK = 16


def _string(data: bytes) -> bytes:
    """An SSH wire ``string`` (RFC 4251 section 5): a 32-bit big-endian length, then the bytes."""
    return struct.pack(">I", len(data)) + data


def _base64_lines(blob: bytes) -> list[str]:
    text = base64.b64encode(blob).decode("ascii")
    return [text[i:i + 64] for i in range(0, len(text), 64)]


def ed25519_private_blob(seed: bytes) -> bytes:
    """PuTTY's private part of an Ed25519 key: the 32-byte seed as one string."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 private key is 32 bytes")
    return _string(seed)


def _argon2_keys(passphrase: bytes, salt: bytes) -> tuple[bytes, bytes, bytes]:
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    derived = Argon2id(salt=salt, length=80, iterations=ARGON2_PASSES, lanes=ARGON2_PARALLELISM,
                       memory_cost=ARGON2_MEMORY_KIB).derive(passphrase)
    return derived[:32], derived[32:48], derived[48:]


def _encrypt(plain: bytes, key: bytes, iv: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(plain) + encryptor.finalize()


def ppk_v3(*, key_type: str, public_blob: bytes, private_blob: bytes, comment: str,
           passphrase: bytes | None = None) -> str:
    """The text of a version 3 PPK file; encrypted (AES-256-CBC, Argon2id) when ``passphrase`` is given."""
    if any(ch in comment for ch in "\r\n"):
        raise ValueError("a key comment is one line")
    header = [f"PuTTY-User-Key-File-3: {key_type}"]
    if passphrase:
        salt = os.urandom(_SALT_BYTES)
        cipher_key, iv, mac_key = _argon2_keys(passphrase, salt)
        padding = -len(private_blob) % _AES_BLOCK
        private_plain = private_blob + os.urandom(padding)
        private_stored = _encrypt(private_plain, cipher_key, iv)
        encryption = ENCRYPTED
        derivation = ["Key-Derivation: Argon2id", f"Argon2-Memory: {ARGON2_MEMORY_KIB}",
                      f"Argon2-Passes: {ARGON2_PASSES}", f"Argon2-Parallelism: {ARGON2_PARALLELISM}",
                      f"Argon2-Salt: {salt.hex()}"]
    else:
        mac_key, private_plain, private_stored, encryption, derivation = b"", private_blob, private_blob, "none", []
    mac = hmac.new(mac_key, b"".join(_string(part) for part in (
        key_type.encode(), encryption.encode(), comment.encode(), public_blob, private_plain)), hashlib.sha256)
    public_lines, private_lines = _base64_lines(public_blob), _base64_lines(private_stored)
    lines = [
        *header,
        f"Encryption: {encryption}",
        f"Comment: {comment}",
        f"Public-Lines: {len(public_lines)}",
        *public_lines,
        *derivation,
        f"Private-Lines: {len(private_lines)}",
        *private_lines,
        f"Private-MAC: {mac.hexdigest()}",
    ]
    return "\n".join(lines) + "\n"


def fingerprint(public_key_line: str) -> str:
    """``SHA256:…`` of an OpenSSH public key line, as ssh-keygen -l, PuTTY and plink -hostkey write it."""
    blob = base64.b64decode(public_key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
