"""``gatepass ssh``, ``tunnel`` and ``ssh-config``: connect with stock OpenSSH using a grant's certificate."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from cli import quick_http
from cli.context import Context
from cli.errors import ClientError, LocalSetupError, NoUsableGrant
from cli.sshargs import (
    SshFiles,
    UsableGrant,
    certificate_key_matches,
    choose_grant,
    format_time,
    keepalive_options,
    pick_per_asset,
    render_ssh_config,
    ssh_binary,
    ssh_command,
    tunnel_options,
    usable_grants,
)

if TYPE_CHECKING:
    # Imported by `gatepass tunnel` alone: `gatepass ssh` becomes ssh with as little imported as it can.
    from cli.tunnel_keeper import GrantEnd


def fetch_usable_grants(ctx: Context, *, asset: str | None) -> tuple[list[UsableGrant], str, str]:
    session = ctx.session()
    params = {"usable": "true"} | ({"asset": asset} if asset else {})
    if ctx.transport is None and quick_http.usable(session.server, ctx.environ):
        # The one call before ssh starts does not wait for httpx to load (~70 ms; cli/quick_http.py).
        grants = quick_http.get(session.server, "/grants", params, token=session.token, username=session.username)
    else:
        with ctx.api(session) as api:
            grants = api.get("/grants", params=params)
    return usable_grants(grants, username=session.username, now=ctx.clock()), session.username, session.server


def prepare_files(ctx: Context, grants: Sequence[UsableGrant]) -> dict[str, SshFiles]:
    """Write each grant's certificate and pin its gateway's host key; check the certificate fits our key."""
    state = ctx.state
    if not state.key_path.exists():
        raise LocalSetupError(
            f"there is no SSH key at {state.key_path}, so no grant certificate can be used: "
            "request access again from this machine"
        )
    public_key = state.ensure_key()
    files = {}
    for grant in grants:
        certificate = grant.certificate or ""
        if certificate_key_matches(certificate, public_key) is False:
            raise NoUsableGrant(
                f"the certificate of grant {grant.id} for {grant.asset} was issued for another key than "
                f"{state.key_path} (was the key replaced?): request access again from this machine"
            )
        files[grant.id] = SshFiles(
            key=state.key_path,
            certificate=state.write_certificate(grant.asset, certificate),
            known_hosts=state.known_hosts_path,
        )
    state.pin_host_keys((g.gateway.host, g.gateway.port, g.gateway.host_key) for g in grants)
    return files


@contextlib.contextmanager
def _interrupts_go_to_child() -> Iterator[None]:
    """While ssh runs, Ctrl-C is ssh's to handle; a no-op handler (unlike SIG_IGN) is reset by exec."""
    try:
        previous = signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_ssh_process(argv: list[str], *, replace_process: bool = False) -> int:
    """Run ssh attached to this terminal and return its exit code (128+N when killed by signal N), or,
    with ``replace_process``, become ssh (``exec``) and never return."""
    if replace_process:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execvp(argv[0], argv)  # noqa: S606 (argv is built by ssh_command, never by a shell)
        except FileNotFoundError as exc:
            raise LocalSetupError(
                f"{argv[0]} was not found: install the OpenSSH client (or set GATEPASS_SSH_BIN)"
            ) from exc
    try:
        with _interrupts_go_to_child():
            done = subprocess.run(argv, check=False)
    except FileNotFoundError as exc:
        raise LocalSetupError(
            f"{argv[0]} was not found: install the OpenSSH client (or set GATEPASS_SSH_BIN)"
        ) from exc
    return 128 - done.returncode if done.returncode < 0 else done.returncode


def run_ssh(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    grants, _, _ = fetch_usable_grants(ctx, asset=args.asset)
    grant = choose_grant(grants, asset=args.asset, now=ctx.clock())
    files = prepare_files(ctx, [grant])[grant.id]
    argv = ssh_command(ssh=ssh_binary(ctx.environ), grant=grant, files=files, command=command)
    return run_ssh_process(argv, replace_process=ctx.replace_process_with_ssh)


def _free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_tunnel(args: argparse.Namespace) -> int:
    from cli.tunnel_keeper import TunnelKeeper, check_local_port, grant_end

    ctx: Context = args.client_context
    grants, _, _ = fetch_usable_grants(ctx, asset=args.asset)
    grant = choose_grant(grants, asset=args.asset, now=ctx.clock(), port=args.remote_port)
    files = prepare_files(ctx, [grant])[grant.id]
    local_port = args.local_port or (args.remote_port if args.remote_port >= 1024 else _free_local_port())
    check_local_port(local_port)
    # stdout: the one line a script or a person needs (where to point the engineering tool).
    ctx.say(f"{grant.asset} port {args.remote_port} is at 127.0.0.1:{local_port}")
    ctx.note(
        f"Forwarding 127.0.0.1:{local_port} to {grant.asset}:{args.remote_port} through {grant.gateway.host}:"
        f"{grant.gateway.port} until {format_time(grant.ends_at)}: point the engineering tool at "
        f"127.0.0.1:{local_port} (Ctrl-C to stop)"
    )
    if grant.supervision_required:
        # The gateway cannot say so on a tunnel: the engineering tool would just get no answer.
        ctx.note(f"{grant.asset} requires a supervisor of its site to watch every session: each connection waits, "
                 "with nothing reaching the machine, until one watches it (the plant is told), and is cut if "
                 "nobody watches any more")
    extra = [
        *keepalive_options(),
        *tunnel_options(asset=grant.asset, remote_port=args.remote_port, local_port=local_port),
    ]
    argv = ssh_command(ssh=ssh_binary(ctx.environ), grant=grant, files=files, extra=extra)

    def check_grant() -> GrantEnd | None:
        try:
            with ctx.api(ctx.session()) as api:
                current = api.get(f"/grants/{grant.id}")
        except ClientError:  # the broker is out of reach too (the same network drop?): decide on the clock
            current = None
        return grant_end(grant, current if isinstance(current, dict) else None, ctx.clock())

    ctx.out.flush()
    keeper = TunnelKeeper(argv=argv, grant=grant, check_grant=check_grant, note=ctx.note, clock=ctx.clock)
    return keeper.run()


def run_ssh_config(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    config, hosts = _current_config(ctx, again="gatepass ssh-config --write" if args.write else "gatepass ssh-config")
    if not args.write:
        ctx.out.write(config)
        return 0
    _write_included_config(ctx, config, hosts=hosts)
    return 0


def _current_config(ctx: Context, *, again: str) -> tuple[str, list[str]]:
    """The config of the caller's usable grants now (their certificates written, gateways pinned), and its hosts."""
    grants, username, server = fetch_usable_grants(ctx, asset=None)
    now = ctx.clock()
    chosen = pick_per_asset([g for g in grants if g.certificate], now=now)
    files = prepare_files(ctx, chosen) if chosen else {}
    header = (
        f"Gatepass grants of {username} on {server} at {format_time(now)}; "
        f"certificates end with their grants: run `{again}` again after each approval"
    )
    config = render_ssh_config(
        [(g, files[g.id].certificate) for g in chosen],
        key=ctx.state.key_path,
        known_hosts=ctx.state.known_hosts_path,
        header=header,
    )
    return config, [f"{g.asset}.gatepass" for g in chosen]


def refresh_written_config(ctx: Context) -> list[str] | None:
    """After an approval (`request --wait`): if `ssh-config --write` was used on this machine, rewrite the state
    directory's ssh_config that ~/.ssh/config includes, so `ssh ASSET.gatepass` works at once. ~/.ssh/config itself
    is not touched. Returns the hosts written, or None when there was nothing to refresh."""
    from cli.state import write_private_file

    target = ctx.state.ssh_config_path
    if not target.is_file():
        return None
    config, hosts = _current_config(ctx, again="gatepass ssh-config --write")
    try:
        write_private_file(target, config)
    except OSError as exc:
        raise LocalSetupError(f"cannot write {target}: {exc.strerror or exc}") from None
    return hosts


def _write_included_config(ctx: Context, config: str, *, hosts: list[str]) -> None:
    """``--write``: the config in the state directory, included by ~/.ssh/config (where ssh and editors read)."""
    from pathlib import Path

    from cli.ssh_include import ensure_included
    from cli.state import write_private_file

    target = ctx.state.ssh_config_path
    try:
        ctx.state.ensure_home()
        write_private_file(target, config)
    except OSError as exc:  # a full or read-only disk, a folder in the file's place: said, never a traceback
        raise LocalSetupError(f"cannot write {target}: {exc.strerror or exc}; ~/.ssh/config was left as it was") \
            from None
    home = Path(ctx.environ.get("HOME") or Path.home())
    if not home.is_absolute():  # ssh reads ~/.ssh/config from the password database's home, never from here
        raise LocalSetupError(f"HOME is {str(home)!r}, not an absolute path, so ~/.ssh/config cannot be found: wrote "
                              f"{target}; add `Include {target}` at the top of your ~/.ssh/config yourself")
    included, added = ensure_included(target, home=home)
    ctx.say(f"Wrote {len(hosts)} host{'s' if len(hosts) != 1 else ''} to {target}"
            + (f": {', '.join(hosts)}" if hosts else " (no usable grant yet)"))
    ctx.say(f"{included} {'now includes' if added else 'already includes'} it"
            + (" (one line added at its top)" if added else ""))
    if hosts:
        ctx.note(f"Connect with `ssh {hosts[0]}` (also scp, sftp, rsync and editors' Remote-SSH); "
                 "`gatepass request --wait` keeps these entries up to date; after an approval it did not wait for, run "
                 "`gatepass ssh-config --write` again")
