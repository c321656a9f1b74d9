"""The ``gatepass`` command: parse the command line, run one subcommand, turn its errors into exit codes.

Exit codes: 0 success; 1 refused or failed (``gatepass: <message>`` on stderr); 2 usage error; for
``gatepass ssh``/``tunnel``, whatever ssh exits with.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn, cast

from cli import (
    client_access,
    client_audit,
    client_connect,
    client_delegate,
    client_extensions,
    client_flags,
    client_join,
    client_playbooks,
    client_reviews,
    client_session,
    server_commands,
)
from cli.context import Context
from cli.errors import ClientError


class Parser(argparse.ArgumentParser):
    """argparse with errors in the house format: the usage, then ``gatepass: <message>``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"gatepass: {message}\n")


def _version() -> str:
    try:
        return metadata.version("gatepass")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _subparsers_of(
    parser: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _audit_subparsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """``audit verify`` is server-side and ``audit export`` client-side: share one ``audit`` command."""
    audit = subparsers.choices.get("audit")
    if audit is None:
        audit = subparsers.add_parser("audit", help="verify or export the audit trail")
    nested = _subparsers_of(audit)
    if nested is None:
        nested = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    return nested


class _VersionAction(argparse.Action):
    """Look the version up only when asked: importlib.metadata costs tens of ms on every command."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help=str(kwargs.get("help", "")))

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        parser.exit(0, f"gatepass {_version()}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gatepass",
        description="Just-in-time, time-bound remote access to plant machines, approved by the plant.",
        epilog="State (session, SSH key, certificates) lives in $GATEPASS_HOME or ~/.gatepass.",
    )
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    # Subparsers are built with the parent's class (Parser); the cast matches server_commands' signature.
    subparsers = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND", required=True),
    )
    server_commands.add_subcommands(subparsers)
    client_session.add_subcommands(subparsers)
    client_join.add_subcommands(subparsers)
    client_access.add_subcommands(subparsers)
    client_extensions.add_subcommands(subparsers)
    client_delegate.add_subcommands(subparsers)
    client_reviews.add_subcommands(subparsers)
    client_playbooks.add_subcommands(subparsers)
    client_flags.add_subcommands(subparsers)
    client_connect.add_subcommands(subparsers)
    client_audit.add_export(_audit_subparsers(subparsers))
    return parser


def main(argv: Sequence[str] | None = None, *, context: Context | None = None) -> int:
    """Run one ``gatepass`` command and return its exit code (the console script exits with it)."""
    args = build_parser().parse_args(argv)
    ctx = context or Context.from_process()
    args.client_context = ctx
    try:
        client_join.renew_if_due(args)  # a workload's credential, past its half-life
        return int(args.func(args))
    except ClientError as exc:
        print(f"gatepass: {exc.message}", file=ctx.err)
        return exc.exit_code
    except KeyboardInterrupt:
        print(file=ctx.err)
        return 130
    except BrokenPipeError:
        # The reader went away (`gatepass audit export | head`); silence the flush at interpreter exit.
        if ctx.out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
