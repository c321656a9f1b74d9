"""`gatepass admin asset rotate`: give an asset a new credential, proven to log in before the vault holds it.

The order keeps one rule: at every moment the vault holds a credential that logs in to the machine.

- supplied (the admin changed it on the machine): log in with the new one; then vault it.
- generated (key credentials only): log in with the vaulted key; append a new key's line to authorized_keys;
  log in with the new key (if it does not, take its line out again and stop); vault it; only then take the old
  key's lines out and check that the old key is refused. The old key goes last, after the vault holds the new
  one: were it removed first, an interruption before the vault's commit (Ctrl-C, a database down) would leave
  the machine accepting only a key that nothing holds any more. Its removal is audited as its own event.
"""

from __future__ import annotations

import asyncssh

from broker.clock import Clock
from broker.errors import Conflict, InvalidInput
from broker.inventory import asset_credentials as creds
from broker.inventory.asset_credentials import Rotation, Units, failed
from broker.inventory.target_access import (
    TARGET_TIMEOUT,
    Credential,
    Target,
    TargetUnreachable,
    logged_in,
    logs_in,
    read_text,
    replace_text,
)
from broker.keys.vault import Vault
from broker.vocabulary import CredentialKind

# Errors an SFTP step can end with: the server's refusal, the connection lost, the socket.
_SFTP_ERRORS = (asyncssh.Error, OSError)


async def rotate_credential(*, units: Units, vault: Vault, clock: Clock, actor: str, name: str,
                            supplied: Credential | None = None,
                            authorized_keys: str = creds.DEFAULT_AUTHORIZED_KEYS,
                            timeout: float = TARGET_TIMEOUT) -> Rotation:
    """Rotate ``name``'s credential: vault ``supplied`` once it logs in, or (None) generate an Ed25519 key and swap
    it for the vaulted one in ``authorized_keys`` (relative to the login's home). A failure once the machine was
    reached is audited and raised as RotationFailed, saying what state the machine was left in."""
    with units() as session:
        held = creds.vaulted_target(session, vault=vault, name=name)
    if supplied is None and held.credential.kind != CredentialKind.PRIVATE_KEY:
        raise InvalidInput(
            f"the vault holds a password for {name}: Gatepass rotates key credentials itself, but changing a "
            "password over SSH differs from one system to the next. Change it on the machine, then give the new "
            f"one with `gatepass admin asset rotate {name} --ssh-password-file FILE`")
    if supplied is not None and creds.same_credential(supplied, held.credential):
        raise InvalidInput(f"that is the credential the vault already holds for {name}: nothing to rotate")
    flow = _Flow(units=units, vault=vault, clock=clock, actor=actor, held=held, timeout=timeout)
    if supplied is not None:
        return await flow.supplied(supplied)
    return await flow.generated(authorized_keys)


class _Flow:
    """One rotation's steps, with what they share: the target, the old credential, the audit's who and when."""

    def __init__(self, *, units: Units, vault: Vault, clock: Clock, actor: str, held: creds.VaultedTarget,
                 timeout: float) -> None:
        self.units, self.vault, self.clock, self.actor, self.timeout = units, vault, clock, actor, timeout
        self.target: Target = held.target
        self.old: Credential = held.credential
        self.sealed = held.sealed
        self.old_fingerprint = creds.credential_fingerprint(held.credential)

    @property
    def name(self) -> str:
        return self.target.asset

    @property
    def login(self) -> str:
        return f"{self.target.where} as {self.target.username}"

    def _fail(self, *, method: str, reason: str, machine: str, **details: object) -> Exception:
        """Audit a rotation that reached the machine and stopped; return the refusal to raise."""
        with self.units() as session:
            creds.record_rotation_failure(session, now=self.clock.now(), actor=self.actor, name=self.name, details={
                "method": method, "reason": reason, "machine": machine, "old_fingerprint": self.old_fingerprint,
                **details})
        return failed(f"rotation of {self.name}'s credential failed: {reason}. {machine} "
                      "The vault still holds the old credential.")

    def _store(self, new: Credential, details: dict[str, object]) -> None:
        with self.units() as session:
            creds.store_credential(session, vault=self.vault, now=self.clock.now(), actor=self.actor, name=self.name,
                                   was=self.sealed, credential=new, details=details)

    # --- supplied: the admin set it on the machine ------------------------------------------------------------

    async def supplied(self, new: Credential) -> Rotation:
        method, machine = "supplied", "Gatepass changed nothing on the machine."
        try:
            works = await logs_in(self.target, new, timeout=self.timeout)
        except TargetUnreachable as error:
            raise self._fail(method=method, reason=error.message, machine=machine, kind=new.kind) from None
        if not works:
            raise self._fail(method=method, machine=machine, kind=new.kind,
                             reason=f"the new {_kind_words(new)} does not log in to {self.login}")
        try:
            old_works: bool | None = await logs_in(self.target, self.old, timeout=self.timeout)
        except TargetUnreachable:
            old_works = None
        new_fingerprint = creds.credential_fingerprint(new)
        self._store(new, {"kind": new.kind, "method": method, "fingerprint": new_fingerprint,
                          "old_kind": self.old.kind, "old_fingerprint": self.old_fingerprint,
                          "old_still_logs_in": old_works})
        warning = None
        if old_works:
            warning = (f"the old {_kind_words(self.old)} still logs in to {self.login}: "
                       "withdraw it on the machine")
        return Rotation(asset=self.name, kind=new.kind, method=method, fingerprint=new_fingerprint,
                        old_fingerprint=self.old_fingerprint, old_key_still_logs_in=old_works, warning=warning)

    # --- generated: Gatepass swaps a new key for the vaulted one -----------------------------------------------

    async def generated(self, path: str) -> Rotation:
        method = "generated"
        key = asyncssh.generate_private_key("ssh-ed25519", comment=creds.key_comment(asset=self.name,
                                                                                     now=self.clock.now()))
        # Held in memory and in the vault only: never written to a file unencrypted.
        new = Credential(kind=CredentialKind.PRIVATE_KEY, secret=key.export_private_key("openssh").decode())
        line = key.export_public_key("openssh").decode().strip()
        new_fingerprint = creds.fingerprint(line)
        details: dict[str, object] = {"kind": new.kind, "fingerprint": new_fingerprint, "authorized_keys": path}
        try:
            async with logged_in(self.target, self.old, timeout=self.timeout) as connection, \
                    connection.start_sftp_client() as sftp:
                path = await _shown_path(sftp, path)
                details["authorized_keys"] = path
                existed = await read_text(sftp, path) is not None
                try:
                    await replace_text(sftp, path, lambda text: creds.with_key_added(
                        text, line, replacing=creds.public_line(self.old.secret)))
                except _SFTP_ERRORS as error:
                    raise self._fail(method=method, reason=f"{path} could not be written ({_said(error)})",
                                     machine="The machine was left as it was.", **details) from None
                try:
                    works = await logs_in(self.target, new, timeout=self.timeout)
                    why = f" (is {path} a file sshd reads for this login? see AuthorizedKeysFile in its sshd_config)"
                except TargetUnreachable as error:
                    works, why = False, f" ({error.message})"
                if not works:
                    machine = await self._take_out(sftp, path, line, existed=existed)
                    raise self._fail(method=method, machine=machine, **details,
                                     reason=f"the new key was added to {path} but did not log in to "
                                            f"{self.login}{why}")
        except asyncssh.PermissionDenied:
            raise self._fail(method=method, machine="Gatepass changed nothing on the machine.", **details,
                             reason=f"the key in the vault no longer logs in to {self.login}; set a new credential "
                                    "on the machine and give it with --ssh-key-file or --ssh-password-file") from None
        except TargetUnreachable as error:
            raise self._fail(method=method, reason=error.message, machine="Gatepass changed nothing on the machine.",
                             **details) from None
        except _SFTP_ERRORS as error:  # the SFTP session could not start, or the connection broke
            raise self._fail(method=method, reason=f"the SFTP session with {self.target.where} failed ({_said(error)})",
                             machine=f"The new key's line ending '{line.split()[-1]}' may be in {path}: if it is, "
                                     "remove it by hand.", **details) from None
        try:
            self._store(new, {**details, "method": method, "old_fingerprint": self.old_fingerprint,
                              "old_key": "removed next (admin:asset:old_credential_removed)"})
        except Conflict:
            machine = await self._take_out_again(new, path, line)
            raise self._fail(method=method, machine=machine, **details,
                             reason=f"the credential of {self.name} was changed by someone else meanwhile") from None
        removed, still, warning = await self._remove_old(new, path)
        return Rotation(asset=self.name, kind=new.kind, method=method, fingerprint=new_fingerprint,
                        old_fingerprint=self.old_fingerprint, old_key_still_logs_in=still, authorized_keys=path,
                        old_lines_removed=removed, warning=warning)

    async def _take_out(self, sftp: asyncssh.SFTPClient, path: str, line: str, *, existed: bool = True) -> str:
        """Remove the new key's line again (the file too, if this rotation made it); say what the machine was left
        with."""
        try:
            found = await read_text(sftp, path)
            if not existed and found is not None and creds.without_key(found[0], line)[0] == "":
                await sftp.remove(path)
            else:
                await replace_text(sftp, path, lambda text: creds.without_key(text, line)[0])
        except _SFTP_ERRORS as error:
            return (f"Its line could NOT be removed again ({_said(error)}): remove the line ending "
                    f"'{line.split()[-1]}' from {path} on the machine by hand.")
        return f"Its line was removed again: {path} is as it was."

    async def _take_out_again(self, new: Credential, path: str, line: str) -> str:
        try:
            async with logged_in(self.target, new, timeout=self.timeout) as connection, \
                    connection.start_sftp_client() as sftp:
                return await self._take_out(sftp, path, line)
        except (asyncssh.PermissionDenied, TargetUnreachable, *_SFTP_ERRORS) as error:
            return (f"The new key's line could NOT be removed again ({_said(error)}): remove the line ending "
                    f"'{line.split()[-1]}' from {path} on the machine by hand.")

    async def _remove_old(self, new: Credential, path: str) -> tuple[int | None, bool | None, str | None]:
        """Take the old key's lines out of ``path`` (logged in with the new key), then check the old key is refused.
        Audited either way; returns (lines removed, whether the old key still logs in, a warning)."""
        old_line = creds.public_line(self.old.secret)
        removed: int | None = None
        problem = None
        try:
            async with logged_in(self.target, new, timeout=self.timeout) as connection, \
                    connection.start_sftp_client() as sftp:
                found = await read_text(sftp, path)
                removed = creds.without_key(found[0], old_line)[1] if found else 0
                if removed:
                    await replace_text(sftp, path, lambda text: creds.without_key(text, old_line)[0])
        except (asyncssh.PermissionDenied, TargetUnreachable, *_SFTP_ERRORS) as error:
            removed, problem = None, f"its line could not be removed from {path} ({_said(error)})"
        try:
            still: bool | None = await logs_in(self.target, self.old, timeout=self.timeout)
        except TargetUnreachable as error:
            still = None
            problem = problem or f"whether it still logs in could not be checked ({error.message})"
        if still and not problem:
            problem = (f"it still logs in to {self.login}" + (
                f" although its {removed} line(s) were removed from {path}" if removed else
                f"; {path} had no line of it") + ": it is authorised somewhere else too (another authorized_keys "
                "file, a certificate): withdraw it there")
        warning = f"the old key {self.old_fingerprint}: {problem}" if problem else None
        with self.units() as session:
            creds.record_old_key_removal(session, now=self.clock.now(), actor=self.actor, name=self.name,
                                         removed=still is False and removed is not None, details={
                                             "old_fingerprint": self.old_fingerprint, "authorized_keys": path,
                                             "lines_removed": removed, "old_still_logs_in": still,
                                             "warning": warning})
        return removed, still, warning


async def _shown_path(sftp: asyncssh.SFTPClient, path: str) -> str:
    """``path`` made absolute by the server (a relative one is under the login's home), for messages and audit."""
    try:
        return str(await sftp.realpath(path))
    except _SFTP_ERRORS:
        return path


def _said(error: BaseException) -> str:
    message = getattr(error, "message", None) or getattr(error, "reason", None) or str(error)
    return str(message) or type(error).__name__


def _kind_words(credential: Credential) -> str:
    return "key" if credential.kind == CredentialKind.PRIVATE_KEY else "password"
