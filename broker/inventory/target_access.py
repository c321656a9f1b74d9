"""Reach an asset's SSH service from the machine the admin runs Gatepass on: read its host key, try a login with the
pinned host key enforced, rewrite one authorized_keys file over SFTP."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import asyncssh

from broker.errors import BrokerError

# What every step waits at most for the target (connect and login alike): a plant machine that does not answer
# within this is reported, not waited on.
TARGET_TIMEOUT = 10.0
# A new authorized_keys file (the login had none): only its owner may read or change it (sshd's StrictModes).
NEW_FILE_MODE = 0o600


class TargetUnreachable(BrokerError):
    """The asset's SSH service could not be reached, did not speak SSH, or did not finish in time."""

    status_code = 502
    code = "target_unreachable"


class HostKeyMismatch(TargetUnreachable):
    """The asset presents another host key than the pinned one: no credential is offered to it."""

    code = "host_key_mismatch"


@dataclass(frozen=True)
class Target:
    """Where an asset's SSH service is, the login, and the host key pinned for it."""

    asset: str
    host: str
    port: int
    username: str
    host_key: str

    @property
    def where(self) -> str:
        return f"{self.asset} ({self.host}:{self.port})"


@dataclass(frozen=True)
class Credential:
    """A login secret: an OpenSSH private key or a password. repr=False: never in a log line or a traceback."""

    kind: str  # vocabulary.CredentialKind
    secret: str = field(repr=False)


def _unreachable(target_where: str, error: BaseException, timeout: float) -> TargetUnreachable:
    if isinstance(error, TimeoutError):
        return TargetUnreachable(f"{target_where} did not answer within {timeout:g} s")
    if isinstance(error, OSError) and not isinstance(error, ConnectionResetError | BrokenPipeError):
        return TargetUnreachable(f"{target_where} cannot be reached: {error.strerror or error}")
    # Something answered, then broke off or spoke another protocol: a web server, a PLC's port, a proxy.
    reason = error.strerror if isinstance(error, OSError) else str(error)
    return TargetUnreachable(f"{target_where} answered but did not complete an SSH handshake ({reason}): is an SSH "
                             "service listening on that port?")


async def presented_host_key(*, host: str, port: int, like: str | None = None, timeout: float = TARGET_TIMEOUT) -> str:
    """The host key ``host:port`` presents now (``type base64``). With ``like`` (the pinned key), the key of that
    type is asked for first: a server holds several host keys and offers the one the client prefers, so without
    this a machine that kept its keys could seem re-keyed. If it has none of that type, whatever it offers."""
    where = f"{host}:{port}"
    algorithms: list[bytes] = []
    if like is not None:
        algorithms = list(asyncssh.import_public_key(like).sig_algorithms)
    for wanted in ([algorithms, []] if algorithms else [[]]):
        try:
            key = await asyncio.wait_for(asyncssh.get_server_host_key(
                host, port, config=None, server_host_key_algs=[a.decode() for a in wanted] if wanted else ()),
                timeout)
        except TimeoutError as error:
            raise _unreachable(where, error, timeout) from None
        except (OSError, asyncssh.Error) as error:
            # A server with no host key of the pinned type ends the handshake (OpenSSH resets the connection):
            # ask again for any key; if that fails too, it is what the admin is told.
            if wanted:
                continue
            raise _unreachable(where, error, timeout) from None
        if key is None:
            raise TargetUnreachable(f"{where} did not present an SSH host key")
        return str(key.export_public_key("openssh").decode().strip())
    raise AssertionError("unreachable")  # pragma: no cover (the last attempt returns or raises)


@asynccontextmanager
async def logged_in(target: Target, credential: Credential, *,
                    timeout: float = TARGET_TIMEOUT) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An SSH connection to ``target`` logged in with ``credential``, the pinned host key enforced (never trust on
    first use: a credential offered to whoever answers is a credential given away). asyncssh.PermissionDenied
    when the target refuses the credential; TargetUnreachable (HostKeyMismatch) for everything else."""
    is_key = credential.kind == "private_key"
    client_keys = [asyncssh.import_private_key(credential.secret)] if is_key else []
    try:
        connection = await asyncio.wait_for(asyncssh.connect(
            target.host, target.port, username=target.username,
            known_hosts=([asyncssh.import_public_key(target.host_key)], [], []),
            client_keys=client_keys, password=None if is_key else credential.secret,
            public_key_auth=is_key, password_auth=not is_key, kbdint_auth=False, gss_auth=False,
            host_based_auth=False, agent_path=None, agent_forwarding=False,
            # Nothing from this host's own ~/.ssh (config, keys, known_hosts) may take part.
            config=None, connect_timeout=timeout, login_timeout=timeout,
        ), timeout)
    except asyncssh.PermissionDenied:
        raise
    except asyncssh.HostKeyNotVerifiable:
        raise HostKeyMismatch(
            f"{target.where} presents another SSH host key than the one pinned for it, so Gatepass offered it no "
            f"credential: check it with `gatepass admin asset scan {target.asset}`") from None
    except (TimeoutError, OSError, asyncssh.Error) as error:
        raise _unreachable(target.where, error, timeout) from None
    try:
        yield connection
    finally:
        connection.close()
        await connection.wait_closed()


async def logs_in(target: Target, credential: Credential, *, timeout: float = TARGET_TIMEOUT) -> bool:
    """Whether ``credential`` logs in to ``target`` (pinned host key); TargetUnreachable if that cannot be told."""
    try:
        async with logged_in(target, credential, timeout=timeout):
            return True
    except asyncssh.PermissionDenied:
        return False


async def read_text(sftp: asyncssh.SFTPClient, path: str) -> tuple[str, int] | None:
    """A text file's content and permission bits, or None if it does not exist. Bytes that are not UTF-8 survive
    a read and a write unchanged (surrogateescape): other people's lines are never ours to alter."""
    try:
        attrs = await sftp.stat(path)
    except asyncssh.SFTPNoSuchFile:
        return None
    async with sftp.open(path, "rb", encoding=None) as file:
        data = await file.read()
    mode = (attrs.permissions or NEW_FILE_MODE) & 0o7777
    return cast(bytes, data).decode("utf-8", errors="surrogateescape"), mode


async def replace_text(sftp: asyncssh.SFTPClient, path: str, edit: Callable[[str], str]) -> None:
    """Rewrite ``path`` as ``edit(current text)``: a temporary file beside it, given the file's mode, renamed over
    it (POSIX rename: readers, sshd among them, see the old file or the new one, never half of one)."""
    found = await read_text(sftp, path)
    text, mode = found if found is not None else ("", NEW_FILE_MODE)
    temporary = f"{path}.gatepass-{secrets.token_hex(4)}"
    pflags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
    try:
        async with sftp.open(temporary, pflags, attrs=asyncssh.SFTPAttrs(permissions=mode), encoding=None) as file:
            await file.write(edit(text).encode("utf-8", errors="surrogateescape"))
        await sftp.chmod(temporary, mode)  # the server's umask may have narrowed what open asked for
        await sftp.posix_rename(temporary, path)
    except BaseException:
        # Never written, or the connection is gone: the original error says more.
        with contextlib.suppress(OSError, asyncssh.Error):
            await sftp.remove(temporary)
        raise
