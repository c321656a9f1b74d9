"""The PPK writer, read back by PuTTY's own puttygen: the key, the certificate inside it, the passphrase, the MAC."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.putty_key import ED25519_CERT_TYPE, ed25519_private_blob, fingerprint, ppk_v3
from tests.fixtures.putty import putty_tool


@pytest.fixture
def certified_key(tmp_path: Path) -> tuple[Path, Path]:
    """An OpenSSH Ed25519 key and a user certificate for principal hmi-01, signed by a CA made here."""
    for name in ("ca", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(tmp_path / name)],
                       check=True)
    subprocess.run(["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "grant=grt-1 identity=vendor1",
                    "-n", "hmi-01", "-V", "-5m:+1h", str(tmp_path / "user.pub")], check=True)
    return tmp_path / "user", tmp_path / "user-cert.pub"


def _export(key: Path, certificate: Path, *, passphrase: bytes | None = None, comment: str = "gatepass test") -> str:
    private = serialization.load_ssh_private_key(key.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    blob = base64.b64decode(certificate.read_text().split()[1])
    return ppk_v3(key_type=ED25519_CERT_TYPE, public_blob=blob, private_blob=ed25519_private_blob(
        private.private_bytes_raw()), comment=comment, passphrase=passphrase)


def _puttygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([putty_tool("puttygen"), *args], capture_output=True, text=True, timeout=30, check=False)


def test_puttygen_reads_the_certificate_and_the_same_private_key(certified_key: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    key, certificate = certified_key
    ppk = tmp_path / "hmi-01.ppk"
    ppk.write_text(_export(key, certificate))

    info = _puttygen(str(ppk), "-O", "cert-info")
    assert info.returncode == 0, info.stderr
    assert "Valid user names: hmi-01" in info.stdout
    assert "Certificate ID string: grant=grt-1 identity=vendor1" in info.stdout
    # Back to OpenSSH form: the private key PuTTY holds is ours, and the certificate is the one signed.
    back = tmp_path / "back"
    converted = _puttygen(str(ppk), "-O", "private-openssh-new", "-o", str(back))
    assert converted.returncode == 0, converted.stderr
    public = subprocess.run(["ssh-keygen", "-y", "-f", str(back)], capture_output=True, text=True, check=True)
    assert public.stdout.split()[:2] == (tmp_path / "user.pub").read_text().split()[:2]
    assert _puttygen(str(ppk), "-L").stdout.split()[:2] == certificate.read_text().split()[:2]


def test_a_passphrase_protects_the_file_and_puttygen_opens_it_with_that_passphrase_only(
        certified_key: tuple[Path, Path], tmp_path: Path) -> None:
    key, certificate = certified_key
    ppk = tmp_path / "hmi-01.ppk"
    ppk.write_text(_export(key, certificate, passphrase=b"correct horse battery"))
    text = ppk.read_text()
    assert "Encryption: aes256-cbc" in text
    assert "Key-Derivation: Argon2id" in text
    seed = serialization.load_ssh_private_key(key.read_bytes(), password=None)
    assert isinstance(seed, Ed25519PrivateKey)
    assert base64.b64encode(seed.private_bytes_raw()).decode()[:20] not in text

    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text("correct horse battery\n")
    wrong.write_text("incorrect horse\n")
    opened = _puttygen(str(ppk), "--old-passphrase", str(right), "-O", "private-openssh-new", "-o",
                       str(tmp_path / "back"))
    assert opened.returncode == 0, opened.stderr
    # puttygen keeps the passphrase on what it writes out
    public = subprocess.run(["ssh-keygen", "-y", "-P", "correct horse battery", "-f", str(tmp_path / "back")],
                            capture_output=True, text=True, check=True)
    assert public.stdout.split()[:2] == (tmp_path / "user.pub").read_text().split()[:2]
    refused = _puttygen(str(ppk), "--old-passphrase", str(wrong), "-O", "private-openssh-new", "-o",
                        str(tmp_path / "never"))
    assert refused.returncode != 0
    assert not (tmp_path / "never").exists()


def test_a_passphrase_file_saved_by_notepad_protects_the_key_with_the_passphrase_typed(
        certified_key: tuple[Path, Path], tmp_path: Path) -> None:
    from cli.client_keys import _read_passphrase

    # Windows Notepad's "UTF-8 with BOM", CRLF line ends: the engineer types "plant laptop" into PuTTY, never the mark.
    saved = tmp_path / "passphrase.txt"
    saved.write_bytes("\ufeffplant laptop\r\nnot this line\r\n".encode())
    key, certificate = certified_key
    ppk = tmp_path / "hmi-01.ppk"
    ppk.write_text(_export(key, certificate, passphrase=_read_passphrase(saved)))

    typed = tmp_path / "typed"
    typed.write_text("plant laptop\n")
    opened = _puttygen(str(ppk), "--old-passphrase", str(typed), "-O", "private-openssh-new", "-o",
                       str(tmp_path / "back"))
    assert opened.returncode == 0, opened.stderr


@pytest.mark.parametrize("passphrase", ["Schlüssel der Anlage", "tab\there", "caf\u00e9"])
def test_a_passphrase_putty_on_windows_might_read_otherwise_is_refused(passphrase: str, tmp_path: Path) -> None:
    from cli.client_keys import _read_passphrase
    from cli.errors import UsageError

    saved = tmp_path / "passphrase.txt"
    saved.write_text(passphrase + "\n", encoding="utf-8")
    with pytest.raises(UsageError, match="other than ASCII letters, digits, spaces and punctuation"):
        _read_passphrase(saved)


def test_puttygen_refuses_a_file_changed_after_it_was_written(certified_key: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    """The MAC covers the comment too: a file edited by hand (or damaged) is refused, not half-read."""
    key, certificate = certified_key
    ppk = tmp_path / "hmi-01.ppk"
    ppk.write_text(_export(key, certificate, comment="gatepass vendor1").replace("gatepass vendor1",
                                                                                 "gatepass mallory"))
    refused = _puttygen(str(ppk), "-O", "private-openssh-new", "-o", str(tmp_path / "never"))
    assert refused.returncode != 0
    assert "MAC" in refused.stderr or "corrupt" in refused.stderr.lower(), refused.stderr
    assert not (tmp_path / "never").exists()


def test_a_comment_is_one_line() -> None:
    with pytest.raises(ValueError, match="one line"):
        ppk_v3(key_type=ED25519_CERT_TYPE, public_blob=b"x", private_blob=b"y", comment="a\nPrivate-MAC: 00")


def test_fingerprints_are_written_as_ssh_keygen_writes_them(certified_key: tuple[Path, Path]) -> None:
    key, _ = certified_key
    line = Path(f"{key}.pub").read_text()
    listed = subprocess.run(["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True, check=True)
    assert fingerprint(line) == listed.stdout.split()[1]
