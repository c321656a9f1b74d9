"""``gatepass delegate``: give your AI agent a narrower part of one of your live grants."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from cli.context import Context
from cli.durations import format_duration, parse_api_time
from cli.errors import UsageError
from cli.output import to_json
from cli.sshargs import format_time


def parse_command(text: str) -> list[str]:
    """One ``--command`` as the argv the gateway will compare exactly (POSIX shell words, like ssh's remote
    command once the target's shell has split it)."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"--command {text!r} cannot be split into words: {exc}") from None
    if not argv:
        raise UsageError("--command needs a program to run, e.g. --command 'systemctl status plc-bridge'")
    return argv


def _scope(grant: dict[str, Any]) -> str:
    parts = ["read-only" if grant.get("read_only") else "with writes"]
    if grant.get("ssh"):
        commands = grant.get("allowed_commands") or []
        parts.append("may run " + ", ".join(f"`{shlex.join(argv)}`" for argv in commands) if commands
                     else "may run no command (SFTP downloads only)")
    if grant.get("ports"):
        parts.append("ports " + ", ".join(str(port) for port in grant["ports"]))
    return "; ".join(parts)


def run_delegate(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    if args.read_only and args.allow_writes:
        raise UsageError("give either --read-only or --allow-writes, not both")
    body: dict[str, Any] = {
        "agent": args.agent, "duration": format_duration(args.duration), "allow_writes": args.allow_writes,
        "commands": args.commands, "reason": args.reason,
    }
    if args.ssh or args.ports is not None:
        body["ssh"], body["ports"] = args.ssh, args.ports or []
    if args.key is not None:
        try:
            body["public_key"] = args.key.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the agent's public key {args.key}: {exc.strerror}") from None
    with ctx.api() as api:
        grant: dict[str, Any] = api.post(f"/grants/{args.grant_id}/delegate", body)
    if args.json:
        ctx.say(to_json(grant))
        return 0
    ends = format_time(parse_api_time(str(grant.get("ends_at"))))
    ctx.say(f"Delegated grant {grant.get('id')} on {grant.get('asset')} to {grant.get('identity')} until {ends}, "
            f"from your grant {args.grant_id}: {_scope(grant)}. It ends when yours ends or is revoked.")
    return 0
