"""Secrets at rest (DESIGN invariant 7): target credentials, TOTP secrets and CA keys are sealed by the vault;
passwords and tokens are kept only as hashes; the master key and data directory are the operator's alone."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import MetaData, select

from broker.inventory.sites import credential_purpose
from broker.keys import authorities
from broker.keys.vault import VaultError
from tests.fixtures.broker import Api, Installation, Plant


def _secret_forms(secret: str) -> list[bytes]:
    """The secret, and for PEM keys each base64 line of the body (a key split across columns or pages) that
    carries private bytes. An OpenSSH private key holds its public key twice; a line made of those bytes alone is
    public (the user CA's is in every certificate the broker stores, and one time in a few its base64 there lines
    up with the key file's own line)."""
    forms = [secret.encode()]
    if "-----BEGIN" in secret:
        body = [line for line in secret.splitlines() if line and not line.startswith("-----")]
        decoded, public = base64.b64decode("".join(body)), _public_bytes(secret)
        position = 0  # in base64 characters
        for line in body:
            touched = decoded[position * 6 // 8 : -(-(position + len(line)) * 6 // 8)]  # bytes the line encodes
            position += len(line)
            if len(line) >= 40 and touched not in public:
                forms.append(line.encode())
    return forms


def _public_bytes(secret: str) -> bytes:
    """The key's public blob as the OpenSSH key format writes it (length-prefixed), or nothing for other keys."""
    try:
        blob = asyncssh.import_private_key(secret).public_data
    except (asyncssh.KeyImportError, ValueError):
        return b""
    return len(blob).to_bytes(4, "big") + blob


def _every_stored_value(plant: Plant) -> list[bytes]:
    metadata = MetaData()
    metadata.reflect(plant.engine)
    values: list[bytes] = []
    with plant.engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        values.append(bytes(value))
                    elif value is not None:
                        values.append(str(value).encode())
    return values


def test_no_secret_is_stored_in_plaintext(api: Api, plant: Plant) -> None:
    # Exercise everything that touches a secret: sign-ins, a grant (CA signing), an authorization.
    grant = api.grant("vendor1", "sup-a1")
    serial = plant.row("SELECT serial FROM grants")[0]
    assert api.gateway().post("/gateway/authorize", json={"grant_id": grant["id"], "serial": serial,
                                                          "asset": "hmi-01"}).status_code == 200
    api.as_user("admin")
    tokens = [api.token(name) for name in ("vendor1", "sup-a1", "admin")]
    with plant.session() as session:
        ca_private = authorities.load_signing_key(session, vault=plant.vault).export_private_key("openssh").decode()
    secrets: dict[str, str] = {
        **{f"target credential of {asset}": value for asset, value in plant.target_secrets.items()},
        **{f"TOTP secret of {name}": creds.totp_secret for name, creds in plant.users.items() if creds},
        **{f"password of {name}": creds.password for name, creds in plant.users.items() if creds},
        **{f"API token {index}": token for index, token in enumerate(tokens)},
        "gateway token": plant.gateway_token,
        "user CA private key": ca_private,
    }
    assert len(plant.target_secrets) == 3
    stored = _every_stored_value(plant)
    raw_files = b""
    sqlite = plant.settings.effective_database_url.removeprefix("sqlite:///")
    if plant.backend == "sqlite":
        raw_files = b"".join(Path(sqlite + suffix).read_bytes() for suffix in ("", "-wal")
                             if Path(sqlite + suffix).exists())

    leaks = [name for name, secret in secrets.items() for form in _secret_forms(secret)
             if any(form in value for value in stored) or form in raw_files]

    assert leaks == []
    assert not any(b"PRIVATE KEY" in value for value in stored)


def test_target_responses_to_users_never_carry_the_target_credential(api: Api, plant: Plant) -> None:
    grant = api.grant("vendor1", "sup-a1")
    answers = [
        api.as_user("vendor1").get("/grants").text,
        api.as_user("vendor1").get(f"/grants/{grant['id']}").text,
        api.as_user("sup-a1").get("/requests").text,
        api.as_user("admin").get("/audit/events").text,
    ]

    for secret in plant.target_secrets.values():
        assert not any(form.decode() in answer for answer in answers for form in _secret_forms(secret))


def test_a_sealed_credential_does_not_open_for_another_asset(plant: Plant) -> None:
    """The vault binds each ciphertext to its purpose: a credential copied onto another row stays shut."""
    sealed = plant.row("SELECT credential_ciphertext FROM assets WHERE name = 'hmi-01'")[0]

    assert plant.vault.open(bytes(sealed), purpose=credential_purpose("hmi-01")).decode() == \
        plant.target_secrets["hmi-01"]
    with pytest.raises(VaultError):
        plant.vault.open(bytes(sealed), purpose=credential_purpose("hmi-b1"))


def test_the_ca_private_key_in_the_database_is_sealed(plant: Plant) -> None:
    public, sealed = plant.row("SELECT public_key, private_key_ciphertext FROM authorities")

    assert bytes(sealed).startswith(b"gpv1")
    with plant.session() as session:
        key = authorities.load_signing_key(session, vault=plant.vault)
    assert key.export_public_key("openssh").decode().split()[:2] == public.split()[:2]
    assert asyncssh.import_public_key(public).algorithm == b"ssh-ed25519"


def test_init_makes_the_master_key_token_file_and_data_directory_private(tmp_path: Path, database_url: str) -> None:
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)  # an operator's pre-made, world-readable directory
    old_umask = os.umask(0o022)
    try:
        installation = Installation.create(data_dir, database_url)
    finally:
        os.umask(old_umask)
    installation.close()

    assert mode(data_dir) == 0o700
    assert mode(installation.settings.master_key_path) == 0o600
    assert mode(installation.settings.gateway_token_path) == 0o600
