"""The SSH algorithms the gateway speaks, on both hops: modern ones only, fastest first.

Legacy ciphers, SHA-1 and CBC modes are never offered (IEC 62443-3-3 SR 4.3 "use of cryptography";
NIST SP 800-131A). AES-GCM leads: with AES-NI, asyncssh's AES-GCM moves bulk data markedly faster than
ChaCha20-Poly1305, which builds a new cipher object per packet (bench/README.md). The
hybrid ML-KEM key exchange is offered first where both ends support it (OpenSSH 9.9+).
"""

from __future__ import annotations

KEX_ALGS = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
)
# Towards vendors: only AES-GCM. Every OpenSSH since 6.2 (2013) has it, and since the client's preference
# order decides, offering anything else would let stock OpenSSH pick ChaCha20 or CTR first.
CLIENT_FACING_ENCRYPTION_ALGS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# Towards plant machines, which are often old: AES-GCM first, then the still-sound alternatives.
TARGET_FACING_ENCRYPTION_ALGS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
    "chacha20-poly1305@openssh.com",
)
MAC_ALGS = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
)


def server_algorithm_options() -> dict[str, list[str]]:
    """Keyword arguments for asyncssh's create_server (the vendor-facing side)."""
    return {"kex_algs": list(KEX_ALGS), "encryption_algs": list(CLIENT_FACING_ENCRYPTION_ALGS),
            "mac_algs": list(MAC_ALGS)}


def target_algorithm_options() -> dict[str, list[str]]:
    """Keyword arguments for asyncssh's connect (the plant-facing side)."""
    return {"kex_algs": list(KEX_ALGS), "encryption_algs": list(TARGET_FACING_ENCRYPTION_ALGS),
            "mac_algs": list(MAC_ALGS)}
