"""``gatepass delegate``: give your AI agent a narrower part of one of your live grants."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from cli.client_access import _argument, object_id, parse_port
from cli.context import Context
from cli.durations import format_duration, parse_api_time, parse_duration
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


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    delegate = subparsers.add_parser(
        "delegate",
        help="give your AI agent a narrower part of one of your live grants",
        description="Delegate part of GRANT_ID to AGENT (an AI agent you sponsor): the same asset, the same or "
        "fewer services, a window that ends no later than yours. It is read-only by default (Modbus reads, SFTP "
        "downloads) and may exec only the --command lines given, word for word; it ends when your grant ends or "
        "is revoked. Without --ssh or --port: SSH if your grant has it, else its ports.",
    )
    delegate.add_argument("grant_id", metavar="GRANT_ID", type=_argument(object_id))
    delegate.add_argument("--to", dest="agent", required=True, metavar="AGENT", help="the AI agent's identity")
    delegate.add_argument("--for", dest="duration", metavar="DURATION", required=True,
                          type=_argument(parse_duration), help="how long: 30s, 10m, 2h (at most what your grant has "
                          "left)")
    delegate.add_argument("--ssh", action="store_true", help="delegate SSH (commands, SFTP downloads)")
    delegate.add_argument("--port", "--ports", dest="ports", metavar="N", type=_argument(parse_port), nargs="+",
                          action="extend", default=None, help="TCP port(s) of your grant to delegate")
    delegate.add_argument("--command", dest="commands", metavar="ARGV", type=_argument(parse_command),
                          action="append", default=[],
                          help="a command the agent may run, matched exactly on its words (repeat for several), "
                          "e.g. --command 'systemctl status plc-bridge'")
    delegate.add_argument("--read-only", action="store_true",
                          help="read-only (the default): Modbus reads only, SFTP downloads only")
    delegate.add_argument("--allow-writes", action="store_true",
                          help="let the agent write (Modbus writes, uploads); only where the site's policy allows "
                          "AI agents to write")
    delegate.add_argument("--key", metavar="FILE", type=Path,
                          help="the agent's public key (.pub) when it has not joined with `gatepass join` yet; "
                          "the certificate is then in the --json answer, to hand to the agent")
    delegate.add_argument("--reason", metavar="TEXT", help="what the agent is to do (recorded with the grant)")
    delegate.add_argument("--json", action="store_true", help="print the delegated Grant object from the API")
    delegate.set_defaults(func=run_delegate)


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
