"""The gateway's own SSH host key: load it, or create an ed25519 key with mode 0600 on first start."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """Read the private host key at ``path``; create it (ed25519, 0600, parent 0700) when missing."""
    if path.exists():
        return asyncssh.read_private_key(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="gatepass-gateway")
    # O_EXCL + mode at creation: the key is never readable by others, not even for an instant
    # (asyncssh's write_private_key would create it 0644 first, FIELD-NOTES).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(key.export_private_key("openssh"))
    return key


def public_key_line(key: asyncssh.SSHKey) -> str:
    """``ssh-ed25519 AAAA…`` without a comment, as the broker pins it."""
    algorithm, blob = key.export_public_key("openssh").decode("ascii").split()[:2]
    return f"{algorithm} {blob}"
