"""Open the gateway's SSH connection to a target, logged in with the vaulted credential, host key pinned."""

from __future__ import annotations

import asyncio

import asyncssh

from gateway.algorithms import target_algorithm_options
from gateway.errors import TargetNotPinned, TargetUnreachable
from gateway.models import Target
from gateway.packet_overhead import skip_empty_ignore_packets


def _pinned_key(target: Target, asset: str) -> asyncssh.SSHKey:
    if target.host_key is None:
        # Connecting without a pinned key would hand the vaulted credential to whoever answers.
        raise TargetNotPinned(
            f"{asset} has no pinned SSH host key, so the gateway will not connect to it; "
            "an admin must pin it (gatepass admin asset add … --host-key)"
        )
    try:
        return asyncssh.import_public_key(target.host_key)
    except (asyncssh.KeyImportError, ValueError):
        raise TargetNotPinned(f"the SSH host key pinned for {asset} cannot be read") from None


async def connect_target(target: Target, *, asset: str, timeout: float) -> asyncssh.SSHClientConnection:
    """Connect and log in to ``target``; TargetNotPinned or TargetUnreachable with a user-facing reason."""
    host_key = _pinned_key(target, asset)
    client_keys: list[asyncssh.SSHKey] = []
    if target.private_key:
        try:
            client_keys.append(asyncssh.import_private_key(target.private_key))
        except (asyncssh.KeyImportError, ValueError):
            # Never include the key material or the parser's message, which may quote it.
            raise TargetUnreachable(f"the vaulted SSH key for {asset} cannot be read") from None
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                target.host,
                target.ssh_port,
                username=target.username,
                password=target.password,
                client_keys=client_keys or None,
                known_hosts=([host_key], [], []),
                # Nothing from the gateway host's own ~/.ssh or agent may take part.
                config=None,
                agent_path=None,
                agent_forwarding=False,
                gss_auth=False,
                host_based_auth=False,
                kbdint_auth=False,
                password_auth=target.password is not None,
                encoding=None,
                connect_timeout=timeout,
                login_timeout=timeout,
                **target_algorithm_options(),
            ),
            timeout,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise TargetUnreachable(f"the SSH host key of {asset} does not match the key pinned for it") from None
    except asyncssh.PermissionDenied:
        raise TargetUnreachable(f"{asset} refused the gateway's login with the vaulted credential") from None
    except TimeoutError:
        raise TargetUnreachable(f"{asset} did not answer within {timeout:g} s") from None
    except (OSError, asyncssh.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TargetUnreachable(f"{asset} cannot be reached: {reason}") from None
    skip_empty_ignore_packets(conn)  # from the first packet after the login on; see gateway/packet_overhead.py
    return conn
