"""An asset's pinned host key and vaulted credential, checked against the machine and changed only once proven."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any

import asyncssh
from sqlalchemy.orm import Session

from broker.audit import trail
from broker.audit.trail import Action
from broker.clock import Clock
from broker.errors import Conflict, InvalidInput, audited
from broker.inventory import target_access
from broker.inventory.sites import credential_purpose, get_asset, normalise_public_key
from broker.inventory.target_access import Credential, Target
from broker.keys.vault import Vault
from broker.vocabulary import CredentialKind

# Relative to the login's home, where an SFTP session starts (OpenSSH's default AuthorizedKeysFile).
DEFAULT_AUTHORIZED_KEYS = ".ssh/authorized_keys"

# One transaction each time it is called (the admin commands' ``local_session``): the flows here take short ones
# between their steps on the network, never one held open while a plant machine is asked something.
Units = Callable[[], AbstractContextManager[Session]]


class RotationFailed(Conflict):
    """A rotation that was tried against the machine and did not complete; the vault keeps the old credential."""

    code = "rotation_failed"


def fingerprint(public_key: str) -> str:
    """SHA256 fingerprint of an OpenSSH public key line, as ``ssh-keygen -l`` prints it."""
    return str(asyncssh.import_public_key(public_key).get_fingerprint())


def key_type(public_key: str) -> str:
    return public_key.split()[0]


def public_line(private_key: str) -> str:
    """``type base64`` of a private key's public half."""
    exported = asyncssh.import_private_key(private_key).export_public_key("openssh").decode()
    return " ".join(exported.split()[:2])


def key_comment(*, asset: str, now: dt.datetime) -> str:
    """What the authorized_keys line of a generated key says: who put it there, for which asset, when."""
    return f"gatepass:{asset}:{now:%Y-%m-%d}"


def with_line_added(text: str, line: str) -> str:
    """``text`` (an authorized_keys file) with ``line`` appended; every other line kept as it was."""
    if text and not text.endswith("\n"):
        text += "\n"
    return f"{text}{line}\n"


def with_key_added(text: str, line: str, *, replacing: str) -> str:
    """``text`` with the new key ``line`` appended under the options of each line that authorises ``replacing`` (the
    key it takes over from), bare if none does. The plant may have bounded the old key (``from=``, ``restrict``,
    ``no-port-forwarding``: sshd(8) AUTHORIZED_KEYS FILE FORMAT); a new line without them would give the vault's
    next key more than the old one had."""
    blob = replacing.split()[1]
    found = (re.search(rf"(\S+)\s+{re.escape(blob)}(?:\s|$)", old)
             for old in text.splitlines() if not old.lstrip().startswith("#") and blob in old.split())
    options = list(dict.fromkeys(match.string[:match.start(1)].strip() for match in found if match is not None))
    for prefix in options or [""]:
        text = with_line_added(text, f"{prefix} {line}" if prefix else line)
    return text


def without_key(text: str, public_key: str) -> tuple[str, int]:
    """``text`` without the lines that authorise ``public_key`` (with or without options before it), and how many
    there were. A key is matched by its base64 blob as a word of the line; every other line is kept unchanged."""
    blob = public_key.split()[1]
    kept, removed = [], 0
    for line in text.splitlines(keepends=True):
        if not line.lstrip().startswith("#") and blob in line.split():
            removed += 1
        else:
            kept.append(line)
    return "".join(kept), removed


def supplied_credential(*, private_key: str | None = None, password: str | None = None) -> Credential:
    """The credential an admin hands over (already set on the machine), checked for form; refused with a reason."""
    if (private_key is None) == (password is None):
        raise InvalidInput("give exactly one new credential: --ssh-key-file or --ssh-password-file")
    if private_key is not None:
        try:
            asyncssh.import_private_key(private_key)
        except (asyncssh.KeyImportError, ValueError):
            # Never the parser's message: it may quote the key.
            raise InvalidInput("the SSH key file does not hold a usable, unencrypted OpenSSH or PEM private key") \
                from None
        return Credential(kind=CredentialKind.PRIVATE_KEY, secret=private_key)
    if not password:
        raise InvalidInput("the password file is empty")
    return Credential(kind=CredentialKind.PASSWORD, secret=password or "")


def credential_fingerprint(credential: Credential) -> str | None:
    return fingerprint(public_line(credential.secret)) if credential.kind == CredentialKind.PRIVATE_KEY else None


def same_credential(one: Credential, other: Credential) -> bool:
    if one.kind != other.kind:
        return False
    if one.kind == CredentialKind.PRIVATE_KEY:
        return public_line(one.secret) == public_line(other.secret)
    return one.secret == other.secret


@dataclass(frozen=True)
class VaultedTarget:
    """An asset's SSH service as the inventory holds it, with its credential opened and the sealed value it came
    from (what a later change compares with: nobody else changed it in between)."""

    target: Target
    credential: Credential
    sealed: bytes


def vaulted_target(session: Session, *, vault: Vault | None, name: str) -> VaultedTarget:
    """The asset's SSH service, refused if it has none; ``vault=None`` leaves the credential sealed (a scan)."""
    asset = get_asset(session, name)
    if asset.ssh_port is None or asset.ssh_user is None or asset.host_key is None \
            or asset.credential_ciphertext is None or asset.credential_kind is None:
        raise InvalidInput(f"asset {name} has no SSH service in the inventory (only TCP ports): there is no host key "
                           "or credential of it to check or change")
    target = Target(asset=name, host=asset.host, port=asset.ssh_port, username=asset.ssh_user,
                    host_key=asset.host_key)
    secret = "" if vault is None else vault.open(asset.credential_ciphertext,
                                                  purpose=credential_purpose(name)).decode()
    return VaultedTarget(target=target, credential=Credential(kind=asset.credential_kind, secret=secret),
                         sealed=asset.credential_ciphertext)


# --- changes, each in the caller's transaction with its audit event ------------------------------------------


def pin_host_key(session: Session, *, now: dt.datetime, actor: str, name: str, was: str, presented: str) -> bool:
    """Pin ``presented`` as the asset's host key, if the inventory still pins ``was`` (what the scan compared
    with); False, and no event, when it is already pinned."""
    asset = get_asset(session, name)
    presented = normalise_public_key(presented, what="presented host key")
    if asset.host_key == presented:
        return False
    if asset.host_key != was:
        raise Conflict(f"the host key pinned for {name} changed while it was being scanned: scan it again")
    asset.host_key = presented
    trail.record(session, now=now, action=Action.ASSET_HOST_KEY_PINNED, actor=actor, subject=name,
                 site=asset.site.name, details={"old_fingerprint": fingerprint(was), "old_type": key_type(was),
                                                "new_fingerprint": fingerprint(presented),
                                                "new_type": key_type(presented)})
    return True


def store_credential(session: Session, *, vault: Vault, now: dt.datetime, actor: str, name: str, was: bytes,
                     credential: Credential, details: dict[str, Any]) -> None:
    """Vault ``credential`` (already proven to log in) as the asset's, if the vault still holds ``was``; audited
    with ``details``, which never carry a secret."""
    asset = get_asset(session, name)
    if asset.credential_ciphertext != was:
        raise Conflict(f"the credential of {name} was changed by someone else during this rotation")
    asset.credential_kind = credential.kind
    asset.credential_ciphertext = vault.seal(credential.secret.encode(), purpose=credential_purpose(name))
    trail.record(session, now=now, action=Action.ASSET_CREDENTIAL_ROTATED, actor=actor, subject=name,
                 site=asset.site.name, details=details)


def record_rotation_failure(session: Session, *, now: dt.datetime, actor: str, name: str,
                            details: dict[str, Any]) -> None:
    asset = get_asset(session, name)
    trail.record(session, now=now, action=Action.ASSET_CREDENTIAL_ROTATION_FAILED, outcome="failure", actor=actor,
                 subject=name, site=asset.site.name, details=details)


def record_old_key_removal(session: Session, *, now: dt.datetime, actor: str, name: str,
                           details: dict[str, Any], removed: bool) -> None:
    asset = get_asset(session, name)
    trail.record(session, now=now, action=Action.ASSET_OLD_CREDENTIAL_REMOVED,
                 outcome="success" if removed else "failure", actor=actor, subject=name, site=asset.site.name,
                 details=details)


def failed(message: str) -> RotationFailed:
    """The refusal raised once its audit event is written (by the caller, in a transaction of its own)."""
    return audited(RotationFailed(message))


@dataclass(frozen=True)
class ScanResult:
    """What `gatepass admin asset scan` found: the pinned key and the presented one (``--json`` prints it)."""

    asset: str
    host: str
    port: int
    pinned: str
    presented: str
    pinned_now: bool

    @property
    def matches(self) -> bool:
        return self.pinned == self.presented

    def as_json(self) -> dict[str, Any]:
        return {"asset": self.asset, "host": self.host, "port": self.port,
                "pinned": {"key": self.pinned, "fingerprint": fingerprint(self.pinned)},
                "presented": {"key": self.presented, "fingerprint": fingerprint(self.presented)},
                "matches": self.matches, "pinned_now": self.pinned_now}


@dataclass(frozen=True)
class Rotation:
    """What a rotation did (``--json`` prints it); never a secret."""

    asset: str
    kind: str
    method: str  # generated | supplied
    fingerprint: str | None
    old_fingerprint: str | None
    old_key_still_logs_in: bool | None  # None: could not be told
    authorized_keys: str | None = None  # the file a generated key went into
    old_lines_removed: int | None = None
    warning: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# --- the scan: compare what the machine presents with what is pinned ---------------------------------------------


async def scan_host_key(*, units: Units, clock: Clock, actor: str, name: str, pin: bool,
                        timeout: float = target_access.TARGET_TIMEOUT) -> ScanResult:
    """Read the host key the asset presents now, from this machine; with ``pin``, pin it if it differs (audited).
    No transaction is held while the machine is asked (up to ``timeout`` per attempt)."""
    with units() as session:
        target = vaulted_target(session, vault=None, name=name).target
    presented = await target_access.presented_host_key(host=target.host, port=target.port, like=target.host_key,
                                                       timeout=timeout)
    pinned_now = False
    if pin and presented != target.host_key:
        with units() as session:
            pinned_now = pin_host_key(session, now=clock.now(), actor=actor, name=name, was=target.host_key,
                                      presented=presented)
    return ScanResult(asset=name, host=target.host, port=target.port, pinned=target.host_key, presented=presented,
                      pinned_now=pinned_now)
